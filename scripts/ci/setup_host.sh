#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian/Ubuntu machine (idempotent).
# Every slow step prints a line before it starts and how long it took.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

step_start=0
step() { step_start=$SECONDS; echo "==> $*"; }
step_done() { echo "    done in $((SECONDS - step_start)) s"; }

missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="${pkg// /}"
  [ -z "$pkg" ] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$HERE/apt-packages.txt"
# npm for the web UI's libraries, from Debian only when no node brings its own (a NodeSource
# nodejs conflicts with Debian's npm package)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # do not let package scripts start services; the tests start their own
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  step "updating the Debian package lists (apt-get update)"
  $SUDO apt-get update -qq
  step_done
  step "installing ${#missing[@]} Debian packages (a few minutes on a fresh machine): ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
  step_done
fi

VENV="${CDSW_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtualenv $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  step_done
fi
step "installing cdsw_agent and test dependencies into $VENV (pip; a minute or two the first time)"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e "$ROOT[test]"
step_done

# the web UI's browser libraries (cdsw_agent/web/package-lock.json) into its git-ignored node_modules
step "installing the web UI's browser libraries (npm ci in cdsw_agent/web)"
(cd "$ROOT/cdsw_agent/web" && npm ci --no-audit --no-fund --loglevel=error)
step_done
