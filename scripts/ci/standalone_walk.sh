#!/usr/bin/env bash
# The README's first command, checked end to end: runs scripts/standalone.sh in the background,
# waits for the workbench, checks that `cdsw` is on PATH and `cdsw status` reports the instance,
# walks through it (scripts/ci/standalone_walk.py: sign in, project, session `1+1`, job, stop),
# stops it with SIGTERM and prints the time of each phase.
# Usage: scripts/ci/standalone_walk.sh [--port 8080] [--allow-local]
#   --allow-local  accept engines running as local processes (default: require Docker Swarm)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PORT=8080; ALLOW_LOCAL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --allow-local) ALLOW_LOCAL=1; shift ;;
    *) echo "usage: $0 [--port N] [--allow-local]" >&2; exit 64 ;;
  esac
done
LOG="${CDSW_WALK_LOG:-/tmp/cdsw-standalone-walk.log}"
START_WAIT="${CDSW_WALK_START_SECONDS:-1800}"  # first start: packages, virtualenv, engine image
t0=$SECONDS
say() { echo "standalone_walk: $*"; }
fail() { say "FAILED: $*"; tail -40 "$LOG" | sed 's/^/    | /' >&2; exit 1; }

: >"$LOG"
"$ROOT/scripts/standalone.sh" --port "$PORT" >"$LOG" 2>&1 &
PID=$!
cleanup() { kill -TERM "$PID" 2>/dev/null || true; }
trap cleanup EXIT
say "started scripts/standalone.sh --port $PORT (pid $PID, log $LOG)"

up=""
for _ in $(seq 1 "$START_WAIT"); do
  kill -0 "$PID" 2>/dev/null || fail "scripts/standalone.sh exited ($(wait "$PID"; echo $?))"
  if grep -q "Application startup complete" "$LOG" &&
     curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then up=1; break; fi
  sleep 1
done
[ -n "$up" ] || fail "no answer on port $PORT after $START_WAIT s"
t_up=$((SECONDS - t0))
grep -E "^==> |^    done in|^    storage driver|^!!! " "$LOG" | sed 's/^/    | /'
say "workbench answers after $t_up s"
password="$(sed -n 's/^ *password: *\([^ ]*\).*/\1/p' "$LOG" | head -1)"
[ -n "$password" ] || fail "no administrator password in the log (a reused data dir?)"
if grep -q "engines run in containers on Docker Swarm" "$LOG"; then
  backend=swarm
else
  backend=local
  [ -n "$ALLOW_LOCAL" ] || fail "engines run as local processes, not on Docker Swarm"
fi

command -v cdsw >/dev/null || fail "cdsw is not on PATH ($PATH)"
status="$(cd / && cdsw status 2>&1)" || fail "cdsw status exited non-zero: $status"
echo "$status" | sed 's/^/    | /'
echo "$status" | grep -q "^Orchestrator: $backend\$" || fail "cdsw status does not report $backend"
echo "$status" | grep -q "^Instance: http://localhost:$PORT " || fail "cdsw status did not find the instance"
health_rc=0; health="$(cd / && cdsw health 2>&1)" || health_rc=$?
echo "$health" | grep -v '^OK' | sed 's/^/    | /' || true
[ "$health_rc" -le 1 ] || fail "cdsw health exited $health_rc (2 critical, 3 unknown)"

t1=$SECONDS
"$ROOT/.venv/bin/python" "$ROOT/scripts/ci/standalone_walk.py" --base "http://127.0.0.1:$PORT" \
  --password "$password" || fail "the walk failed"
t_walk=$((SECONDS - t1))

t2=$SECONDS
kill -TERM "$PID"
for _ in $(seq 1 120); do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
kill -0 "$PID" 2>/dev/null && fail "the workbench did not stop within 120 s of SIGTERM"
rc=0; wait "$PID" || rc=$?
trap - EXIT
[ "$rc" -eq 0 ] || fail "the workbench exited $rc after SIGTERM"
t_stop=$((SECONDS - t2))
say "ok: engines on $backend; up in $t_up s, walk $t_walk s, stop $t_stop s, total $((SECONDS - t0)) s"
