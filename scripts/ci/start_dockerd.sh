#!/usr/bin/env bash
# Start (idempotently) a Docker daemon for the tests, separate from any system Docker.
#
# Prints the daemon's URL (unix:///...) as the last line of stdout once `docker info` answers;
# progress and errors go to stderr. Exits non-zero with a one-line reason when dockerd cannot run.
# Chooses the storage driver by probing the data root's file system: overlay2 where it can stack
# (not on overlayfs, as in a container), else fuse-overlayfs when installed; vfs as the last resort.
#
# Environment (all optional):
#   CDSW_TEST_DOCKER_RUN    run directory: socket, pid file, exec root  (default /var/run/cdsw-test)
#   CDSW_TEST_DOCKER_DATA   data root                                   (default /var/lib/cdsw-test/docker)
#   CDSW_TEST_DOCKER_LOG    daemon log file                             (default $RUN/dockerd.log)
#   CDSW_TEST_DOCKER_DRIVER storage driver to use instead of probing
#   CDSW_TEST_DOCKER_WAIT   seconds to wait for the daemon to answer    (default 60)
#   DOCKERD                 dockerd executable                          (default dockerd)
set -euo pipefail

RUN="${CDSW_TEST_DOCKER_RUN:-/var/run/cdsw-test}"
DATA="${CDSW_TEST_DOCKER_DATA:-/var/lib/cdsw-test/docker}"
LOG="${CDSW_TEST_DOCKER_LOG:-$RUN/dockerd.log}"
WAIT="${CDSW_TEST_DOCKER_WAIT:-60}"
DOCKERD="${DOCKERD:-dockerd}"
SOCK="$RUN/docker.sock"
URL="unix://$SOCK"
PIDFILE="$RUN/dockerd.pid"

say() { echo "start_dockerd: $*" >&2; }
die() { say "$*"; exit 1; }

answers() {
  # The docker CLI may be newer than the daemon; it negotiates the API version by itself.
  docker -H "$URL" info --format '{{.ServerVersion}} {{.Driver}}' >/dev/null 2>&1
}

running_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

command -v "$DOCKERD" >/dev/null 2>&1 || die "dockerd not found; install it with: apt-get install docker.io"
command -v docker >/dev/null 2>&1 || die "docker CLI not found; install it with: apt-get install docker.io"
[ "$(id -u)" -eq 0 ] || die "dockerd needs root; run this script as root"

mkdir -p "$RUN" "$DATA" "$RUN/exec" "$(dirname "$LOG")"

if answers; then
  say "dockerd already answers on $URL"
  echo "$URL"
  exit 0
fi

if pid="$(running_pid)"; then
  # Started by an earlier call and still coming up: wait for it rather than start a second one.
  say "dockerd (pid $pid) is starting; waiting"
  for _ in $(seq 1 "$WAIT"); do
    answers && { echo "$URL"; exit 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  kill -0 "$pid" 2>/dev/null && die "dockerd (pid $pid) does not answer on $URL after ${WAIT}s; see $LOG"
fi
rm -f "$PIDFILE" "$SOCK"

try_driver() {
  local driver="$1" pid
  say "starting dockerd with storage driver $driver (log: $LOG)"
  echo "=== $(date -u +%FT%TZ) starting dockerd --storage-driver $driver" >>"$LOG"
  setsid "$DOCKERD" \
    --host "$URL" \
    --data-root "$DATA" \
    --exec-root "$RUN/exec" \
    --pidfile "$PIDFILE" \
    --storage-driver "$driver" \
    </dev/null >>"$LOG" 2>&1 &
  pid=$!
  for _ in $(seq 1 "$WAIT"); do
    if answers; then
      say "dockerd (pid $pid) answers on $URL with storage driver $driver"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "dockerd with $driver exited: $(grep -E 'level=(fatal|error)|failed' "$LOG" | tail -1 | cut -c1-300)"
      rm -f "$PIDFILE" "$SOCK"
      return 1
    fi
    sleep 1
  done
  say "dockerd with $driver did not answer within ${WAIT}s; stopping it"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE" "$SOCK"
  return 1
}

if [ -n "${CDSW_TEST_DOCKER_DRIVER:-}" ]; then
  drivers=("$CDSW_TEST_DOCKER_DRIVER")
else
  fstype="$(stat -f -c %T "$DATA" 2>/dev/null || echo unknown)"
  case "$fstype" in
    overlay*|aufs|ecryptfs)
      if command -v fuse-overlayfs >/dev/null 2>&1 && [ -e /dev/fuse ]; then
        drivers=(fuse-overlayfs vfs)
      else
        drivers=(vfs)
      fi
      say "data root $DATA is on $fstype, where overlay2 cannot stack: using ${drivers[*]}" ;;
    *)
      drivers=(overlay2 vfs) ;;
  esac
fi
for driver in "${drivers[@]}"; do
  if try_driver "$driver"; then
    echo "$URL"
    exit 0
  fi
done
die "dockerd could not start with storage driver(s) ${drivers[*]}; see $LOG"
