#!/usr/bin/env bash
# Runs the control plane. With DATABASE_URL unset it starts a project-local PostgreSQL
# (scripts/pg.sh), and on first use creates a bootstrap platform admin whose credentials it
# prints (kept in .local/dev.env with the development JWT and secrets keys).
#
# It builds the dev profile with the workspace's feature set (`--workspace`), exactly what
# scripts/test.sh builds, so running one after the other rebuilds no dependency (README.md).
#
# Runtime containers report to the control plane (RUNTIME_CONTROL_PLANE_URL, docs/runtimes.md):
# when LISTEN_ADDR is unset and the Docker engine has its default bridge, the server listens on
# 0.0.0.0:8080 and gives runtimes the bridge's gateway address (e.g. http://172.17.0.1:8080);
# PUBLIC_BASE_URL stays http://127.0.0.1:8080. LISTEN_ADDR=127.0.0.1:8080 keeps it local (then
# runtimes cannot report calls).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .local
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh)
  export DATABASE_URL
fi
if [ ! -f .local/dev.env ]; then
  umask 077
  {
    echo "BOOTSTRAP_ADMIN_EMAIL=admin@example.com"
    echo "BOOTSTRAP_ADMIN_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | cut -c1-20)"
    echo "JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
    echo "SECRETS_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
  } > .local/dev.env
fi
set -a
# shellcheck disable=SC1091
. .local/dev.env
set +a
export BOOTSTRAP_ADMIN_EMAIL="${BOOTSTRAP_ADMIN_EMAIL}" BOOTSTRAP_ADMIN_PASSWORD="${BOOTSTRAP_ADMIN_PASSWORD}"

# Where runtime containers reach this server: the default bridge's gateway is this machine.
# Docker does not always record the gateway; it is then the bridge interface's address, which
# Docker takes as the first address of the bridge's subnet.
bridge_gateway() {
  command -v docker >/dev/null 2>&1 || return 0
  local gw iface subnet
  gw=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null) || return 0
  if [ -z "$gw" ] && command -v ip >/dev/null 2>&1; then
    iface=$(docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null || true)
    gw=$(ip -4 -o addr show "${iface:-docker0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n 1)
  fi
  if [ -z "$gw" ]; then
    subnet=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}' 2>/dev/null || true)
    case "$subnet" in *.0/*) gw="${subnet%.0/*}.1" ;; esac
  fi
  echo "$gw"
}
gateway=$(bridge_gateway)
if [ -z "${LISTEN_ADDR:-}" ] && [ -n "$gateway" ]; then
  export LISTEN_ADDR=0.0.0.0:8080
fi
listen="${LISTEN_ADDR:-127.0.0.1:8080}"
port="${listen##*:}"
host="${listen%:*}"
if [ "$host" = 0.0.0.0 ] && [ -z "${PUBLIC_BASE_URL:-}" ]; then
  export PUBLIC_BASE_URL="http://127.0.0.1:$port"
fi
if [ -z "${RUNTIME_CONTROL_PLANE_URL:-}" ] && [ -n "$gateway" ] \
  && { [ "$host" = 0.0.0.0 ] || [ "$host" = "$gateway" ]; }; then
  export RUNTIME_CONTROL_PLANE_URL="http://$gateway:$port"
fi
public="${PUBLIC_BASE_URL:-http://$listen}"

# Cargo's progress goes to stderr: a first build takes minutes.
echo "building the control plane (cargo build --workspace --bin control-plane)..." >&2
cargo build --workspace --bin control-plane
runtimes="runtimes reach it at ${RUNTIME_CONTROL_PLANE_URL:-$public}"
if [ -z "${RUNTIME_CONTROL_PLANE_URL:-}" ]; then
  runtimes="$runtimes: not from a container (no Docker bridge, or listening on $listen only)"
fi
cat >&2 <<MSG
------------------------------------------------------------------
 control plane on ${public}   (API docs: /docs; listening on ${listen})
 ${runtimes}
 bootstrap admin: ${BOOTSTRAP_ADMIN_EMAIL} / ${BOOTSTRAP_ADMIN_PASSWORD}
 database: ${DATABASE_URL}
 walkthrough (README.md): scripts/walkthrough.sh
------------------------------------------------------------------
MSG
exec "${CARGO_TARGET_DIR:-target}/debug/control-plane" serve "$@"
