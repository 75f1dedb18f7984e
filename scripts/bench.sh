#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md on this machine, end to end, and saves the figures:
#   1. builds the release binaries (control-plane, control-plane-loadgen) and the reference
#      runtime image;
#   2. starts a dedicated PostgreSQL cluster (scripts/pg.sh in .local/pg-bench, port 55499,
#      durable settings) with fresh databases: `bench_store` for the in-process benches,
#      `bench` for the server (empty, so the bootstrap admin is created), `pgbench_bench`;
#   3. event store: `bench append-cost` (cached and --no-cache), `bench projection-lag`;
#      runtimes: `bench runtime-ready`;
#   4. pgbench: single-row idempotent inserts (INSERT ... ON CONFLICT DO NOTHING, random keys)
#      with BENCH_CLIENTS clients, the reference rate for ingest throughput;
#   5. starts `control-plane serve` (release) and runs `control-plane-loadgen calls` twice, a
#      throughput run (BENCH_CLIENTS calls sending back to back, one event per request, with
#      UI clients polling `/calls/active` and transcripts meanwhile), the batch throughput run
#      (BENCH_BATCH events per request), the paced run with UI pollers (BENCH_CALLS calls)
#      with the incoming-call webhook open loop (BENCH_WEBHOOK_RATE per second) running during
#      it, then `control-plane-loadgen webhooks` closed loop (BENCH_WEBHOOK_CONCURRENCY always
#      in flight);
#   6. prints a summary (also in $BENCH_OUT/summary.md) and cleans up: server stopped, the
#      bench control plane's containers removed, the cluster stopped (its data folder stays).
#
# Settings (environment), defaults = the full benchmark:
#   BENCH_CALLS=1000 BENCH_DURATION=60 BENCH_SEGMENTS=20 BENCH_PACE_MS=1000 BENCH_RAMP_UP=20
#   BENCH_UI_CLIENTS=20 BENCH_LAG_PROBES=50 BENCH_POLL_INTERVAL_MS=1500
#   BENCH_CLIENTS=32 BENCH_THROUGHPUT_SECONDS=20 BENCH_BATCH=20 BENCH_TP_POLL_MS=250
#   BENCH_WEBHOOK_CONCURRENCY=32 BENCH_WEBHOOK_REQUESTS=20000 BENCH_WEBHOOK_RATE=100
#   BENCH_WEBHOOK_RATE_SECONDS=30
#   BENCH_APPEND_EVENTS=10000 BENCH_LAG_EVENTS=2000 BENCH_LAG_WRITERS=16 BENCH_RUNTIME_READY_RUNS=5
#   BENCH_PG_PORT=55499 BENCH_PORT=18480 BENCH_RUNTIME_PORTS=31000-31099
#   BENCH_OUT=.local/bench/<UTC timestamp>   BENCH_SKIP_BUILD=1 (use the existing binaries)
#   BENCH_IMAGE=agent-runtime-sim:bench (a tag of its own, so the shared :latest is left alone)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

calls=${BENCH_CALLS:-1000}
duration=${BENCH_DURATION:-60}
segments=${BENCH_SEGMENTS:-20}
pace=${BENCH_PACE_MS:-1000}
ramp=${BENCH_RAMP_UP:-20}
ui_clients=${BENCH_UI_CLIENTS:-20}
probes=${BENCH_LAG_PROBES:-50}
poll_ms=${BENCH_POLL_INTERVAL_MS:-1500}
clients=${BENCH_CLIENTS:-32}
tp_seconds=${BENCH_THROUGHPUT_SECONDS:-20}
batch=${BENCH_BATCH:-20}
tp_poll_ms=${BENCH_TP_POLL_MS:-250}
wh_concurrency=${BENCH_WEBHOOK_CONCURRENCY:-32}
wh_requests=${BENCH_WEBHOOK_REQUESTS:-20000}
wh_rate=${BENCH_WEBHOOK_RATE:-100}
wh_rate_seconds=${BENCH_WEBHOOK_RATE_SECONDS:-30}
append_events=${BENCH_APPEND_EVENTS:-10000}
lag_events=${BENCH_LAG_EVENTS:-2000}
lag_writers=${BENCH_LAG_WRITERS:-16}
ready_runs=${BENCH_RUNTIME_READY_RUNS:-5}
pg_port=${BENCH_PG_PORT:-55499}
port=${BENCH_PORT:-18480}
runtime_ports=${BENCH_RUNTIME_PORTS:-31000-31099}
image=${BENCH_IMAGE:-agent-runtime-sim:bench}
out=${BENCH_OUT:-.local/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }
for tool in docker jq curl pgbench; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool" >&2; exit 1; }
done

# --- 1. build --------------------------------------------------------------------------------
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building release binaries and the runtime image"
  cargo build --release -q -p api --bin control-plane -p loadgen --bin control-plane-loadgen
  IMAGE="$image" scripts/build-runtime-image.sh --if-missing
fi
bin="$root/target/release/control-plane"
loadgen_bin="$root/target/release/control-plane-loadgen"
for b in "$bin" "$loadgen_bin"; do
  [ -x "$b" ] || { echo "$b is missing (unset BENCH_SKIP_BUILD)" >&2; exit 1; }
done

# --- 2. PostgreSQL ---------------------------------------------------------------------------
export LOCAL_PG_PORT=$pg_port LOCAL_PG_DIR="$root/.local/pg-bench"
log "starting the bench PostgreSQL cluster ($LOCAL_PG_DIR, port $pg_port)"
scripts/pg.sh >/dev/null
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
psql_() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }

server_pid=""
cleanup() {
  set +e
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    log "stopping the control plane (pid $server_pid)"
    kill -TERM "$server_pid"
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null
  fi
  local d instance ids
  for d in bench bench_store; do
    instance=$(psql_ -d "$d" -tAc "SELECT instance_id FROM runtime_host" 2>/dev/null)
    [ -n "$instance" ] || continue
    ids=$(docker ps -aq --filter "label=io.controlplane.instance=$instance")
    if [ -n "$ids" ]; then
      log "removing $(echo "$ids" | wc -w) runtime container(s) of this bench ($d)"
      # shellcheck disable=SC2086
      docker rm -f $ids >/dev/null
    fi
    # ... and their networks (one per establishment).
    ids=$(docker network ls -q --filter "label=io.controlplane.instance=$instance")
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1
  done
  log "stopping the bench PostgreSQL cluster"
  scripts/pg.sh --stop >/dev/null 2>&1
}
trap cleanup EXIT

for d in bench bench_store pgbench_bench; do
  PGOPTIONS='-c client_min_messages=warning' psql_ -d postgres \
    -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" -c "CREATE DATABASE $d"
done
db="postgres://postgres@127.0.0.1:$pg_port/bench"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "kernel: $(uname -r)"
  echo "postgresql: $(psql_ -d postgres -tAc 'SHOW server_version')"
  echo "postgresql settings: $(psql_ -d postgres -tAc "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings WHERE name IN ('fsync','synchronous_commit','shared_buffers','max_connections')")"
  echo "docker: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt"

# --- 3. event store and runtimes (no server running) -----------------------------------------
# The bench's own image tag must be allowed (RUNTIME_IMAGE_ALLOWLIST, docs/runtimes.md).
export RUNTIME_IMAGE_ALLOWLIST="$image"
bench_env=(env DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/bench_store" RUST_LOG=error LOG_FORMAT=json RUNTIME_PORT_RANGE="$runtime_ports")
log "bench append-cost ($append_events events, cached)"
"${bench_env[@]}" "$bin" bench append-cost --events "$append_events" | grep -v '^{' | tee "$out/append-cost.txt"
log "bench append-cost ($append_events events, --no-cache: snapshot + tail per command)"
psql_ -d postgres -c "DROP DATABASE IF EXISTS bench_store WITH (FORCE)" -c "CREATE DATABASE bench_store" >/dev/null
"${bench_env[@]}" "$bin" bench append-cost --events "$append_events" --no-cache | grep -v '^{' | tee "$out/append-cost-no-cache.txt"
log "bench projection-lag ($lag_events events, $lag_writers writers)"
"${bench_env[@]}" "$bin" bench projection-lag --events "$lag_events" --writers "$lag_writers" | grep -v '^{' | tee "$out/projection-lag.txt"
if [ "$ready_runs" -gt 0 ]; then
  log "bench runtime-ready ($ready_runs runs)"
  "${bench_env[@]}" "$bin" bench runtime-ready --runs "$ready_runs" --image "$image" | grep -v '^{' | tee "$out/runtime-ready.txt"
fi

# --- 4. pgbench ------------------------------------------------------------------------------
log "pgbench: single-row idempotent inserts, $clients clients, ${tp_seconds}s"
psql_ -d pgbench_bench -c "CREATE TABLE t (k bigint PRIMARY KEY)"
cat >"$out/pgbench-insert.sql" <<'SQL'
\set k random(1, 1000000000000)
INSERT INTO t (k) VALUES (:k) ON CONFLICT DO NOTHING;
SQL
"$pgbin/pgbench" -n -h 127.0.0.1 -p "$pg_port" -U postgres -c "$clients" -j 2 -T "$tp_seconds" \
  -M prepared -f "$out/pgbench-insert.sql" pgbench_bench 2>&1 | tee "$out/pgbench.txt"
pg_tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out/pgbench.txt" | head -n 1)

# --- 5. the control plane under load ---------------------------------------------------------
bridge=$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n 1)
export DATABASE_URL="$db"
export LISTEN_ADDR="0.0.0.0:$port"
export PUBLIC_BASE_URL="http://127.0.0.1:$port"
export RUNTIME_CONTROL_PLANE_URL="http://${bridge:-127.0.0.1}:$port"
export RUNTIME_PORT_RANGE="$runtime_ports"
export BOOTSTRAP_ADMIN_EMAIL="bench-admin@example.com"
BOOTSTRAP_ADMIN_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
JWT_SECRET="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
SECRETS_KEY="$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
TWILIO_AUTH_TOKEN="$(head -c 16 /dev/urandom | xxd -p)"
TWILIO_ACCOUNT_SID="AC$(head -c 16 /dev/urandom | xxd -p)"
export BOOTSTRAP_ADMIN_PASSWORD JWT_SECRET SECRETS_KEY TWILIO_AUTH_TOKEN TWILIO_ACCOUNT_SID
export APP_ENV=development LOG_FORMAT=json RUST_LOG="${BENCH_SERVER_LOG:-warn}"
log "starting control-plane serve on $LISTEN_ADDR (runtimes reach it at $RUNTIME_CONTROL_PLANE_URL)"
"$bin" serve >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { tail -n 30 "$out/server.log" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null

loadgen=("$loadgen_bin")
pg_pid=$(head -n 1 "$LOCAL_PG_DIR/data/postmaster.pid")
common=(--url "http://127.0.0.1:$port" --server-pid "$server_pid" --db-pid "$pg_pid" --image "$image")
log "loadgen calls, throughput run: $clients calls sending back to back for ${tp_seconds}s, polled every ${tp_poll_ms}ms"
"${loadgen[@]}" calls "${common[@]}" --calls "$clients" --segments 50 --pace-ms 0 \
  --duration "$tp_seconds" --ramp-up 0 --ui-clients 4 --active-interval-ms "$tp_poll_ms" \
  --pollers 8 --poll-interval-ms "$tp_poll_ms" --lag-probes 0 \
  --report "$out/ingest-throughput.json" 2>&1 | grep -v '^{' | tee "$out/ingest-throughput.txt"
log "loadgen calls, batch throughput run: $clients slots of $batch calls, $batch events per request, ${tp_seconds}s"
"${loadgen[@]}" calls "${common[@]}" --calls "$clients" --batch "$batch" --segments 50 --pace-ms 0 \
  --duration "$tp_seconds" --ramp-up 0 --ui-clients 0 --pollers 0 --lag-probes 0 \
  --report "$out/ingest-batch.json" 2>&1 | grep -v '^{' | tee "$out/ingest-batch.txt"
# The throughput runs leave the projectors a backlog: the paced run starts once every projector
# has been quiet (no checkpoint written) for 3 s, so its lag is its own.
log "waiting for the projectors to catch up with the throughput runs"
for _ in $(seq 1 600); do
  quiet=$(psql_ -d bench -tAc "SELECT coalesce(max(updated_at) < now() - interval '3 seconds', true) FROM projector_checkpoints")
  [ "$quiet" = t ] && break
  sleep 1
done
log "loadgen calls, paced run: $calls calls, $segments segments every ${pace}ms, ${duration}s; webhooks at $wh_rate/s during it"
(
  # The webhook open loop starts once the calls have ramped up, and ends before they do.
  sleep "$ramp"
  "${loadgen[@]}" webhooks "${common[@]}" --concurrency "$wh_concurrency" --rate "$wh_rate" \
    --requests "$(( wh_rate * wh_rate_seconds ))" --report "$out/webhooks-rate.json" \
    >"$out/webhooks-rate.txt" 2>&1
) &
wh_during=$!
"${loadgen[@]}" calls "${common[@]}" --calls "$calls" --segments "$segments" --pace-ms "$pace" \
  --duration "$duration" --ramp-up "$ramp" --ui-clients "$ui_clients" --lag-probes "$probes" \
  --poll-interval-ms "$poll_ms" --report "$out/loadgen-calls.json" 2>&1 | grep -v '^{' | tee "$out/loadgen-calls.txt"
wait "$wh_during" || log "the webhook run during the paced run failed (see $out/webhooks-rate.txt)"
grep -v '^{' "$out/webhooks-rate.txt" || true
log "loadgen webhooks, closed loop: $wh_requests requests, $wh_concurrency in flight"
"${loadgen[@]}" webhooks "${common[@]}" --concurrency "$wh_concurrency" --requests "$wh_requests" \
  --report "$out/webhooks.json" 2>&1 | grep -v '^{' | tee "$out/webhooks.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"

# --- 6. summary ------------------------------------------------------------------------------
line() { grep -m1 "$1" "$2" 2>/dev/null || echo "n/a"; }
# jq: round to 2 decimals
r2='def r2: if . == null then "n/a" else (. * 100 | round / 100) end;'
tp=$(jq -r '.ingest.events_per_s | floor' "$out/ingest-throughput.json")
tp_steady=$(jq -r '.ingest.steady_events_per_s_median // "n/a"' "$out/ingest-throughput.json")
tb=$(jq -r '.ingest.events_per_s | floor' "$out/ingest-batch.json")
{
  echo "# Benchmark run $(basename "$out")"
  echo
  echo '```'
  cat "$out/machine.txt"
  echo '```'
  echo
  echo "## Event store"
  echo "- append-cost (cached): $(line 'ratio' "$out/append-cost.txt")"
  echo "- append-cost (--no-cache): $(line 'ratio' "$out/append-cost-no-cache.txt")"
  echo "- projection-lag: $(line 'append-to-visible' "$out/projection-lag.txt")"
  [ -f "$out/runtime-ready.txt" ] && echo "- runtime-ready: $(line 'provision-to-ready' "$out/runtime-ready.txt")"
  echo
  echo "## Ingestion"
  echo "- pgbench idempotent single-row inserts, $clients clients: $(printf '%.0f' "$pg_tps") tps"
  echo "- ingest throughput, $clients calls back to back: $tp events/s (median of busy seconds $tp_steady/s) = $(jq -n --arg a "$tp" --arg b "$pg_tps" "$r2"' ($a|tonumber) / ($b|tonumber) | r2') x pgbench"
  jq -r "$r2"'"  (CPU: server \(.usage.server_cpu_cores|r2), PostgreSQL \(.usage.db_cpu_cores|r2), loadgen \(.usage.loadgen_cpu_cores|r2) cores; machine \(.usage.machine_cpu_busy*100|floor)% busy; errors \(.error_total))",
         "- meanwhile, transcript poll: p50 \(.transcript_poll.p50_ms|r2) ms, p99 \(.transcript_poll.p99_ms|r2) ms (n=\(.transcript_poll.count)); GET /calls/active: p50 \(.active_calls_poll.p50_ms|r2) ms, p99 \(.active_calls_poll.p99_ms|r2) ms (n=\(.active_calls_poll.count))"' \
    "$out/ingest-throughput.json"
  echo "- batch form, $batch events per request, $clients senders: $tb events/s = $(jq -n --arg a "$tb" --arg b "$pg_tps" "$r2"' ($a|tonumber) / ($b|tonumber) | r2') x pgbench"
  jq -r "$r2"'"  (POST p50 \(.ingest.post_latency.p50_ms|r2) ms, p99 \(.ingest.post_latency.p99_ms|r2) ms; CPU: server \(.usage.server_cpu_cores|r2), PostgreSQL \(.usage.db_cpu_cores|r2) cores; errors \(.error_total))"' \
    "$out/ingest-batch.json"
  jq -r "$r2"'"- paced run: \(.options.calls) calls, \(.calls.played) played, \(.calls.transcripts_checked_complete) transcripts checked complete, \(.ingest.events_accepted) events in \(.ingest.window_s|floor) s = \(.ingest.events_per_s|floor) events/s (offered ~\(.ingest.offered_events_per_s // 0|floor)/s)",
         "- append-to-visible lag: p50 \(.append_to_visible_lag.p50_ms|r2) ms, p99 \(.append_to_visible_lag.p99_ms|r2) ms (n=\(.append_to_visible_lag.count))",
         "- transcript poll: p50 \(.transcript_poll.p50_ms|r2) ms, p99 \(.transcript_poll.p99_ms|r2) ms (n=\(.transcript_poll.count))",
         "- GET /calls/active: p50 \(.active_calls_poll.p50_ms|r2) ms, p99 \(.active_calls_poll.p99_ms|r2) ms (n=\(.active_calls_poll.count), up to \(.active_calls_items_max) items)",
         "- ingest POST: p50 \(.ingest.post_latency.p50_ms|r2) ms, p99 \(.ingest.post_latency.p99_ms|r2) ms",
         "- errors: \(.error_total) \(.errors)",
         "- server peak memory (VmHWM): \((.usage.server_peak_memory_kb // 0) / 1024 | floor) MiB; CPU: server \(.usage.server_cpu_cores|r2), PostgreSQL \(.usage.db_cpu_cores|r2), loadgen \(.usage.loadgen_cpu_cores|r2) cores; machine \(.usage.machine_cpu_busy*100|floor)% busy"' \
    "$out/loadgen-calls.json"
  echo
  echo "## Incoming-call webhook"
  echo "(the open loop ran during the paced run)"
  for f in webhooks-rate webhooks; do
    jq -r "$r2"'"- \(.requests_ok) requests, \(if .options.rate > 0 then "open loop at \(.options.rate)/s" else "closed loop" end), at most \(.options.concurrency) in flight: p50 \(.latency.p50_ms|r2) ms, p99 \(.latency.p99_ms|r2) ms, max \(.latency.max_ms|r2) ms, \(.requests_per_s|floor)/s; errors \(.error_total); CPU: server \(.usage.server_cpu_cores|r2), PostgreSQL \(.usage.db_cpu_cores|r2) cores"' \
      "$out/$f.json"
  done
} | tee "$out/summary.md"
log "figures saved in $out"
