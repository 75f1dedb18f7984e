#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a real PostgreSQL (started here
# when DATABASE_URL is unset), a real SMTP server (aiosmtpd) and the real Docker engine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh --test)
  export DATABASE_URL
fi
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m pip install -q aiosmtpd
fi
if [ -x scripts/build-runtime-image.sh ]; then
  scripts/build-runtime-image.sh --if-missing
fi
if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast --test-threads "${TEST_THREADS:-6}" "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
