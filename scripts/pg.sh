#!/usr/bin/env bash
# Starts (or reuses) a project-local PostgreSQL cluster from the machine's Debian packages in
# .local/pg (LOCAL_PG_DIR overrides the folder, LOCAL_PG_PORT the port, default 55432) and
# prints its DATABASE_URL. PostgreSQL refuses to run as root, so as root the
# cluster belongs to the `postgres` user.
#   scripts/pg.sh          start/reuse, print the URL of database `control_plane`
#   scripts/pg.sh --test   same, tuned for throw-away test databases (no fsync)
#   scripts/pg.sh --stop   stop the cluster
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base="${LOCAL_PG_DIR:-$root/.local/pg}"
data="$base/data"
port="${LOCAL_PG_PORT:-55432}"

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL from Debian's packages..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 || {
      apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  else
    echo "PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
  fi
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = "--stop" ]; then
  [ -f "$data/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$data" -m fast stop >&2 || true
  exit 0
fi

mkdir -p "$base/run"
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$base"; fi
if [ ! -f "$data/PG_VERSION" ]; then
  as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 \
    || { cat "$base/initdb.log" >&2; exit 1; }
  cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$base/run'
max_connections = 400
shared_buffers = 256MB
CONF
  if [ "${1:-}" = "--test" ]; then
    cat >>"$data/postgresql.conf" <<CONF
# throw-away test cluster: durability traded for speed
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  fi
fi
if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  as_owner "$bindir/pg_ctl" -D "$data" -l "$base/server.log" -w -t 60 start >&2 \
    || { tail -n 30 "$base/server.log" >&2; exit 1; }
fi
psql_() { "$bindir/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres "$@"; }
if ! psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'control_plane'" | grep -q 1; then
  psql_ -d postgres -c "CREATE DATABASE control_plane" >&2
fi
echo "postgres://postgres@127.0.0.1:$port/control_plane"
