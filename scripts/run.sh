#!/usr/bin/env bash
# Runs the control plane. With DATABASE_URL unset it starts a project-local PostgreSQL
# (scripts/pg.sh), and on first use creates a bootstrap platform admin whose credentials it
# prints (kept in .local/dev.env with the development JWT and secrets keys).
#
# It builds the dev profile with the workspace's feature set (`--workspace`), exactly what
# scripts/test.sh builds, so running one after the other rebuilds no dependency (README.md).
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
# Cargo's progress goes to stderr: a first build takes minutes.
echo "building the control plane (cargo build --workspace --bin control-plane)..." >&2
cargo build --workspace --bin control-plane
cat >&2 <<MSG
------------------------------------------------------------------
 control plane on http://${LISTEN_ADDR:-127.0.0.1:8080}   (API docs: /docs)
 bootstrap admin: ${BOOTSTRAP_ADMIN_EMAIL} / ${BOOTSTRAP_ADMIN_PASSWORD}
 database: ${DATABASE_URL}
------------------------------------------------------------------
MSG
exec "${CARGO_TARGET_DIR:-target}/debug/control-plane" serve "$@"
