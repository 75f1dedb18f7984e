#!/usr/bin/env bash
# The API contract, checked from the outside (CI runs this after the tests):
#  1. a client generated from /openapi.json by a standard generator (openapi-python-client)
#     covers every operation, and no operation declares a query parameter as a path parameter;
#  2. schemathesis (from PyPI) fuzzes the running server from its own document, authenticated as
#     a platform admin and as a viewer, following the document's links so ids are real, and
#     fails on any 5xx, any status the document does not declare, any response that breaks its
#     schema or content type.
# Needs DATABASE_URL (a cluster where it may create the database `fuzz_ci`) and a built
# target/debug/control-plane. FUZZ_BUDGET_SECONDS bounds each schemathesis run (default 150).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${DATABASE_URL:?DATABASE_URL is required}"
budget=${FUZZ_BUDGET_SECONDS:-150}
port=${FUZZ_PORT:-17390}
bin=target/debug/control-plane
cargo build --workspace --bin control-plane 2>&1 | grep -v "^ *Finished" || true
mkdir -p .local/fuzz

venv=.local/venv-contract
if [ ! -x "$venv/bin/schemathesis" ] || [ ! -x "$venv/bin/openapi-python-client" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5' 'openapi-python-client==0.29.1'
fi

echo "-- the document and a generated client"
"$bin" openapi > .local/fuzz/openapi.json
python3 - .local/fuzz/openapi.json <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
bad = [(path, m, p["name"]) for path, item in doc["paths"].items() for m, op in item.items()
       for p in op.get("parameters", []) if p["in"] == "path" and "{%s}" % p["name"] not in path]
if bad:
    sys.exit(f"parameters declared in the path that are not in it: {bad}")
PY
rm -rf .local/fuzz/client
(cd .local/fuzz && "$root/$venv/bin/openapi-python-client" generate --path openapi.json \
  --meta none --output-path client >generate.log 2>&1) || { cat .local/fuzz/generate.log; exit 1; }
ops=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(len(v) for v in d["paths"].values()))' .local/fuzz/openapi.json)
generated=$(find .local/fuzz/client/api -name '*.py' ! -name '__init__.py' | wc -l)
echo "operations in the document: $ops; operations in the generated client: $generated"
if [ "$generated" != "$ops" ]; then
  grep -i -E 'skip|warn|error' .local/fuzz/generate.log || true
  echo "the generated client leaves out $((ops - generated)) operation(s)" >&2
  exit 1
fi

echo "-- a server to fuzz"
db=fuzz_ci
url="${DATABASE_URL%/*}/$db"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGOPTIONS='-c client_min_messages=warning' "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
admin_email=fuzz-admin@example.com
admin_password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
env DATABASE_URL="$url" LISTEN_ADDR="127.0.0.1:$port" \
  BOOTSTRAP_ADMIN_EMAIL="$admin_email" BOOTSTRAP_ADMIN_PASSWORD="$admin_password" \
  JWT_SECRET="$(head -c 48 /dev/urandom | base64 | tr -d '\n')" \
  SECRETS_KEY="$(head -c 32 /dev/urandom | base64 | tr -d '\n')" \
  TWILIO_ACCOUNT_SID=AC00000000000000000000000000000000 TWILIO_AUTH_TOKEN=fuzz-token \
  TWILIO_API_BASE_URL=http://127.0.0.1:9 GOOGLE_CLIENT_ID=fuzz-client GOOGLE_CLIENT_SECRET=fuzz-secret \
  GOOGLE_OAUTH_TOKEN_URL=http://127.0.0.1:9/token GOOGLE_CALENDAR_API_BASE_URL=http://127.0.0.1:9 \
  WHATSAPP_API_BASE_URL=http://127.0.0.1:9 LOG_FORMAT=json RUST_LOG=warn \
  "$bin" serve >.local/fuzz/server.log 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap cleanup EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat .local/fuzz/server.log; echo "the server exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { echo "the server did not get ready" >&2; exit 1; }
login() {
  curl -fsS -XPOST "$base/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$2\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
admin=$(login "$admin_email" "$admin_password")
est=$(curl -fsS -XPOST "$base/establishments" -H "authorization: Bearer $admin" \
  -H 'content-type: application/json' \
  -d '{"name":"Fuzz","timezone":"America/Sao_Paulo","locale":"pt-BR"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
viewer_password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
DATABASE_URL="$url" MEMBER_PASSWORD="$viewer_password" "$bin" add-member \
  --email fuzz-viewer@example.com --establishment "$est" --role viewer >/dev/null
# The server projects the new member from the log on its next poll.
for _ in $(seq 1 100); do
  viewer=$(login fuzz-viewer@example.com "$viewer_password" 2>/dev/null) && break
  sleep 0.1
done
[ -n "${viewer:-}" ] || { echo "the viewer cannot log in" >&2; exit 1; }

run() {
  local who=$1 token=$2
  echo "-- schemathesis as $who (budget ${budget}s)"
  # Logging out would end the very session the run uses.
  "$venv/bin/schemathesis" run "$base/openapi.json" \
    -H "Authorization: Bearer $token" \
    --exclude-operation-id logout \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --max-time "$budget" --workers 1 --seed 20261202 \
    --report junit --report-dir ".local/fuzz/$who" | tee ".local/fuzz/$who.log" | tail -n 25
}
status=0
run admin "$admin" || status=1
run viewer "$viewer" || status=1
if grep -q '"status": *5[0-9][0-9]\|"level":"ERROR"' .local/fuzz/server.log; then
  echo "the server logged errors during the fuzz run:" >&2
  grep '"level":"ERROR"' .local/fuzz/server.log | tail -n 20 >&2
  status=1
fi
exit $status
