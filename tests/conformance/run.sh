#!/usr/bin/env bash
# API conformance: schemathesis generates requests from /api/openapi.json and fails on any
# 5xx, any status the document does not list for the operation, and any response body or
# content type that does not match it. Runs against `outreach demo` (SQLite, a small county)
# with a village cadre's and then the county office's token, each bounded in time.
#
#   tests/conformance/run.sh            # the debug binary `cargo test` built
#   TEST_OUTREACH_BIN=target/release/outreach CONFORMANCE_SECONDS=300 tests/conformance/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

target="${CARGO_TARGET_DIR:-target}"
bin="${TEST_OUTREACH_BIN:-$target/debug/outreach}"
seconds="${CONFORMANCE_SECONDS:-60}"
venv="$target/conformance-venv"

if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
"$bin" demo --dir "$work/demo" --residents 500 --bind "127.0.0.1:$port" >"$work/demo.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 1 120); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/demo.log" >&2; exit 1; }
  sleep 1
done

token() {
  local password
  password="$(awk -v user="$1" '$2 == user { print $3 }' "$work/demo/logins.txt")"
  curl -fsS -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"$1\",\"password\":\"$password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

# One worker: parallel generation raised internal errors in schemathesis itself here.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
run() {
  local who="$1" bearer
  shift
  bearer="$(token "$who")"
  printf '\n== conformance as %s (%s s)\n' "$who" "$seconds"
  "$venv/bin/schemathesis" run "$base/api/openapi.json" \
    --header "Authorization: Bearer $bearer" \
    --checks "$checks" --phases examples,coverage,fuzzing \
    --max-time "$seconds" --workers 1 --request-timeout 30 --seed 20261207 \
    --warnings off "$@"
  # The run tested as that user throughout only if its token still works.
  if ! curl -fsS -o /dev/null -H "Authorization: Bearer $bearer" "$base/api/v1/me"; then
    echo "the token of $who stopped working during the run" >&2
    return 1
  fi
}

# Operations that would end the caller's own session or the demo's campaign are left to
# the API tests: a run that signed itself out would test nothing but 401s after that.
keep_session=(
  --exclude-name 'POST /api/v1/auth/logout'
  --exclude-name 'PUT /api/v1/me/password'
  --exclude-name 'PATCH /api/v1/users/{id}'
  --exclude-name 'POST /api/v1/users/{id}/reset-password'
  --exclude-name 'POST /api/v1/campaigns/{id}/close'
)
run cadre.almale "${keep_session[@]}"
run admin "${keep_session[@]}"
