#!/usr/bin/env bash
# The README's walkthrough, command for command, against a RUNNING control plane: log in as the
# bootstrap admin, create an establishment, an agent and a published version, route an inbound
# number to it, provision and start the reference runtime, play a simulated call through it,
# follow the live transcript with the cursor, read the summary and sentiment, stop the runtime.
# Between the README's commands it checks each answer, and stops at the first unexpected one
# with the step's name; every wait is bounded and polls the system.
#
#   scripts/walkthrough.sh                 against $BASE (default http://127.0.0.1:8080)
#   scripts/walkthrough.sh --check-readme  only checks that README.md's walkthrough commands
#                                          are this script's, in the same order
#
# Environment: BASE (the server's URL), BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD
# (default: read from .local/dev.env, which scripts/run.sh writes). The runtime container must
# reach the server (RUNTIME_CONTROL_PLANE_URL, docs/runtimes.md), as scripts/run.sh arranges.
set -euo pipefail
cd "$(dirname "$0")/.."

# README.md's walkthrough: the lines of its ```sh blocks between the walkthrough markers,
# comments and blank lines aside, must be lines of this script in the same order.
check_readme() {
  local -a want have
  local w i=0
  mapfile -t want < <(sed -n '/<!-- walkthrough:begin -->/,/<!-- walkthrough:end -->/p' README.md \
    | awk '/^```/ { inside = !inside; next } inside' | sed 's/^[[:space:]]*//' | grep -v -e '^#' -e '^$')
  mapfile -t have < <(sed 's/^[[:space:]]*//' "$0")
  [ "${#want[@]}" -gt 20 ] || { echo "README.md: no walkthrough between the markers" >&2; return 1; }
  for w in "${want[@]}"; do
    while [ "$i" -lt "${#have[@]}" ] && [ "${have[$i]}" != "$w" ]; do i=$((i + 1)); done
    if [ "$i" -ge "${#have[@]}" ]; then
      echo "README.md's walkthrough line is not in scripts/walkthrough.sh (in this order): $w" >&2
      return 1
    fi
    i=$((i + 1))
  done
  echo "README.md's walkthrough: ${#want[@]} command lines, all in scripts/walkthrough.sh in order" >&2
}
if [ "${1:-}" = "--check-readme" ]; then
  check_readme
  exit
fi

STEP="0. preflight" HINT=""
on_error() {
  trap - ERR
  echo >&2
  echo "WALKTHROUGH FAILED at step ${STEP}${HINT:+: $HINT}" >&2
  exit 1
}
trap on_error ERR
step() {  # step NAME [HINT]: announces the next step; a failure names it (and the hint)
  STEP=$1 HINT=${2:-}
  echo
  echo "== $STEP"
}
fail() {  # fail MESSAGE: stops the walkthrough at this step
  echo "unexpected answer: $1" >&2
  on_error
}
expect() {  # expect WHAT 'condition': the step's answer must satisfy the shell condition
  eval "$2" >/dev/null 2>&1 || fail "$1 (checked: $2)"
}
for tool in curl jq shuf; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
HINT="start it with scripts/run.sh, or set BASE"
curl -fsS "${BASE:-http://127.0.0.1:8080}/readyz" >/dev/null \
  || fail "no ready control plane at ${BASE:-http://127.0.0.1:8080}"
if [ -z "${BOOTSTRAP_ADMIN_PASSWORD:-}" ] && [ ! -f .local/dev.env ]; then
  HINT="set BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD, or run scripts/run.sh once"
  fail "no credentials: BOOTSTRAP_ADMIN_PASSWORD is unset and .local/dev.env is missing"
fi

# ---- the README's walkthrough, with checks between its commands -----------------------------
step "0. server, credentials, helpers"
echo "control plane at ${BASE:-http://127.0.0.1:8080}"
BASE=${BASE:-http://127.0.0.1:8080}
[ -n "${BOOTSTRAP_ADMIN_PASSWORD:-}" ] || . .local/dev.env
api() {  # api METHOD PATH [JSON]: prints the answer; an error answer is shown and fails
  local out code
  out=$(curl -sS -X "$1" "$BASE$2" -H "authorization: Bearer ${TOKEN:-}" \
    -H 'content-type: application/json' ${3:+--data "$3"} -w '\n%{http_code}') || return 1
  code=${out##*$'\n'} out=${out%$'\n'*}
  case $code in 2??) printf '%s\n' "$out" ;; *) echo "$1 $2 answered $code: $out" >&2; return 1 ;; esac
}
wait_for() {  # wait_for SECONDS 'condition': polls the condition every half second
  local deadline=$((SECONDS + $1))
  until eval "$2" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out after $1 s waiting for: $2" >&2; return 1; }
    sleep 0.5
  done
}

step "1. log in as the bootstrap admin" "the e-mail and password of BOOTSTRAP_ADMIN_* or .local/dev.env"
TOKEN=$(api POST /auth/login "{\"email\":\"$BOOTSTRAP_ADMIN_EMAIL\",\"password\":\"$BOOTSTRAP_ADMIN_PASSWORD\"}" | jq -r .access_token)
expect "an access token" '[ "${#TOKEN}" -gt 20 ] && [ "$TOKEN" != null ]'
echo "logged in as $BOOTSTRAP_ADMIN_EMAIL"

step "2. create an establishment"
EST=$(api POST /establishments '{"name":"Walkthrough Dental","timezone":"America/Los_Angeles","locale":"en-US"}' | jq -r .id)
expect "an establishment id (est_…)" '[[ $EST == est_* ]]'
echo "establishment $EST"

step "3. create an agent and a version, and publish it"
AGENT=$(api POST "/establishments/$EST/agents" '{"name":"Front desk","description":"Answers the phone"}' | jq -r .id)
expect "an agent id (agt_…)" '[[ $AGENT == agt_* ]]'
VERSION=$(api POST "/agents/$AGENT/versions" '{"name":"v1","prompt":"You are the front desk of a dental practice. Be brief and kind.","model":{"provider":"openai","model":"gpt-4.1-mini","temperature":0.7,"max_tokens":1024},"tools":{"calendar":{"enabled":true}}}' | jq -r .id)
expect "a version id (agv_…)" '[[ $VERSION == agv_* ]]'
PUBLISHED=$(
api POST "/agents/$AGENT/versions/$VERSION/publish" '{}' | jq .
)
echo "$PUBLISHED"
expect "the version is the agent's active one" 'jq -e --arg v "$VERSION" ".active_version_id == \$v" <<<"$PUBLISHED"'

step "4. route an inbound number to the agent"
NUMBER="+1415523$(shuf -i 1000-9999 -n 1)"
ROUTED=$(
api PATCH "/establishments/$EST/telephony" "{\"inbound_numbers\":[{\"provider\":\"twilio\",\"e164\":\"$NUMBER\",\"routing_agent_id\":\"$AGENT\"}]}" | jq .inbound_numbers
)
echo "$ROUTED"
expect "$NUMBER routed to $AGENT" 'jq -e --arg n "$NUMBER" --arg a "$AGENT" "any(.[]; .[\"e164\"] == \$n and .routing_agent_id == \$a)" <<<"$ROUTED"'

step "5. provision the runtime (agent-runtime-sim:latest), start it, wait until ready" \
  "is the Docker engine running, and does the runtime answer its /readyz?"
scripts/build-runtime-image.sh --if-missing
RUNTIME=$(api POST "/establishments/$EST/runtime" '{"image":"agent-runtime-sim:latest","media_stream_url":"wss://media.example.com/media-stream"}')
RT=$(echo "$RUNTIME" | jq -r .id) RT_URL=$(echo "$RUNTIME" | jq -r .base_url)
expect "a runtime id (rt_…) and its base_url" '[[ $RT == rt_* && $RT_URL == http://* ]]'
echo "runtime $RT at $RT_URL"
api POST "/runtimes/$RT/start" '{}' | jq .status
wait_for 60 'api GET "/runtimes/$RT/status" | jq -e .ready'
expect "the runtime running and ready" 'api GET "/runtimes/$RT/status" | jq -e ".status == \"running\" and .ready"'

step "6. start a simulated inbound call on the runtime (POST /sim/calls)"
SIM=$(
curl -sS --fail-with-body "$RT_URL/sim/calls" -H 'content-type: application/json' -d "{\"from\":\"+16175238110\",\"to\":\"$NUMBER\",\"agent_id\":\"$AGENT\",\"agent_version_id\":\"$VERSION\",\"segments\":8,\"pace_ms\":1500}" | jq '{call_sid, scenario, status}'
)
echo "$SIM"
expect "the runtime playing the call" 'jq -e ".status == \"active\" and (.call_sid | startswith(\"CA\"))" <<<"$SIM"'

step "7. find the call (GET /calls, GET /calls/active)" \
  "no call reported: can the runtime container reach the control plane (RUNTIME_CONTROL_PLANE_URL, see scripts/run.sh)?"
wait_for 30 'CALL=$(api GET "/calls?establishment_id=$EST" | jq -er ".items[0].call_id")'
expect "a call id (call_…) for the runtime's CallSid" 'api GET "/calls/$CALL" | jq -e --argjson s "$SIM" ".provider_call_sid == \$s.call_sid and .agent_id == \"$AGENT\""'
echo "call $CALL"
api GET "/calls/active?establishment_id=$EST" | jq '.items[] | {call_id, status, from_e164, to_e164, duration_seconds}'

step "8. poll the live transcript with its cursor until it is complete"
SEGMENTS=0 POLLS_WITH_NEWS=0 IDS=""
CURSOR=
for _ in $(seq 240); do
  PAGE=$(api GET "/calls/$CALL/transcript${CURSOR:+?cursor=$CURSOR}")
  echo "$PAGE" | jq -r '.items[] | "\(.speaker): \(.text)"'
  NEW=$(echo "$PAGE" | jq '.items | length') SEGMENTS=$((SEGMENTS + NEW)) POLLS_WITH_NEWS=$((POLLS_WITH_NEWS + (NEW > 0)))
  IDS="$IDS$(echo "$PAGE" | jq -r '.items[].segment_id')"$'\n'
  CURSOR=$(echo "$PAGE" | jq -r .cursor)
  if echo "$PAGE" | jq -e .is_complete >/dev/null; then break; fi
  sleep 0.5
done
expect "the transcript complete" 'echo "$PAGE" | jq -e .is_complete'
expect "8 segments, each once (got $SEGMENTS)" '[ "$SEGMENTS" -eq 8 ] && [ "$(grep -c . <<<"$IDS")" -eq "$(grep . <<<"$IDS" | sort -u | wc -l)" ]'
expect "a live transcript: new segments over several polls (got $POLLS_WITH_NEWS)" '[ "$POLLS_WITH_NEWS" -ge 2 ]'

step "9. after the call: its summary and sentiment"
wait_for 30 'api GET "/calls/$CALL" | jq -e ".summary and .sentiment"'
DETAILS=$(
api GET "/calls/$CALL" | jq '{status, duration_seconds, sentiment, summary: .summary.text}'
)
echo "$DETAILS"
expect "a completed call with a summary and a sentiment label" 'jq -e ".status == \"completed\" and (.summary | length > 0) and (.sentiment.label | IN(\"positive\", \"neutral\", \"negative\"))" <<<"$DETAILS"'

step "10. stop the runtime"
api POST "/runtimes/$RT/stop" '{}' | jq .status
wait_for 60 'api GET "/runtimes/$RT/status" | jq -e ".status == \"stopped\""'
# ---- end of the README's walkthrough ---------------------------------------------------------

echo
echo "walkthrough passed: establishment $EST, call $CALL"
