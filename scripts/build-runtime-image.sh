#!/usr/bin/env bash
# Builds the reference runtime (runtime-sim/) as a static binary and imports it as the local
# Docker image agent-runtime-sim:latest (FROM-scratch style: nothing is pulled).
#   scripts/build-runtime-image.sh              build and import
#   scripts/build-runtime-image.sh --if-missing skip when the image exists and was built from
#                                               the same sources (label io.controlplane.sim.source)
# IMAGE overrides the tag. Safe to run concurrently (a lock serialises builds).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
image="${IMAGE:-agent-runtime-sim:latest}"
target=x86_64-unknown-linux-gnu

source_hash() {
  { find runtime-sim -type f \( -name '*.rs' -o -name Cargo.toml \) -print0 | sort -z | xargs -0 sha256sum
    sha256sum Cargo.lock Cargo.toml; } | sha256sum | cut -c1-16
}

mkdir -p .local
exec 9>.local/build-runtime-image.lock
flock 9

hash=$(source_hash)
if [ "${1:-}" = "--if-missing" ]; then
  have=$(docker image inspect "$image" --format '{{ index .Config.Labels "io.controlplane.sim.source" }}' 2>/dev/null || true)
  if [ "$have" = "$hash" ]; then
    echo "$image is up to date (sources $hash)" >&2
    exit 0
  fi
fi

echo "building runtime-sim (static, $target)..." >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p runtime-sim --target "$target"
bin="target/$target/release/runtime-sim"
if ldd "$bin" 2>/dev/null | grep -q '=>'; then
  echo "error: $bin is dynamically linked" >&2
  exit 1
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/runtime-sim"
strip "$stage/runtime-sim" 2>/dev/null || true
tar -C "$stage" --owner=0 --group=0 -cf - runtime-sim | docker import \
  -c 'ENTRYPOINT ["/runtime-sim"]' \
  -c 'ENV PORT=8080' \
  -c 'EXPOSE 8080' \
  -c "LABEL io.controlplane.sim.source=$hash" \
  - "$image" >/dev/null
echo "imported $image (sources $hash)" >&2
