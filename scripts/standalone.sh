#!/usr/bin/env bash
# Set up and start the workbench on this host with its embedded defaults: Debian packages
# (Docker engine, debootstrap, git), a virtualenv with the cdsw command (and what engines need to
# run as local processes when Docker cannot run here), `cdsw` on PATH, then `cdsw standalone`
# (the CDSW_DOCKER role, the engine image, the master on Docker Swarm).
# Every slow step prints a line before it starts and how long it took.
# Usage: scripts/standalone.sh [cdsw standalone options, e.g. --port 8080 --bind 0.0.0.0]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${CDSW_VENV:-$ROOT/.venv}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

step_start=0
updated=""
step() { step_start=$SECONDS; echo "==> $*"; }
step_done() { echo "    done in $((SECONDS - step_start)) s"; }

missing=()
for pkg in git docker.io debootstrap debian-archive-keyring iptables; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm for the web UI's editor, from Debian only when no node brings its own
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # the workbench runs its own dockerd (the CDSW_DOCKER role): keep the package from starting one
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  step "updating the Debian package lists (apt-get update)"
  $SUDO apt-get update -qq && updated=1
  step_done
  step "installing Debian packages (a minute or two): ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    $SUDO rm -f /usr/sbin/policy-rc.d
    echo "!!! could not install ${missing[*]}; the workbench will run engines as local processes" >&2
  }
  $SUDO rm -f /usr/sbin/policy-rc.d
  step_done
fi
if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtualenv $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  step_done
fi
# the 'local' extra: jupyter_server, ipykernel, terminado... for sessions run as local processes
step "installing cdsw_agent and the local engine's packages into $VENV (pip; a minute or two the first time)"
"$VENV/bin/pip" install -q -e "$ROOT[local]"
step_done

# `cdsw` on PATH, as the README's commands use it
if [ "$(id -u)" -eq 0 ]; then BIN=/usr/local/bin; else BIN="$HOME/.local/bin"; fi
mkdir -p "$BIN"
if [ "$(readlink -f "$BIN/cdsw" 2>/dev/null)" != "$(readlink -f "$VENV/bin/cdsw")" ]; then
  if [ -e "$BIN/cdsw" ] && [ ! -L "$BIN/cdsw" ]; then
    echo "!!! $BIN/cdsw exists and is not a link; left alone: run $VENV/bin/cdsw" >&2
  else
    ln -sfn "$VENV/bin/cdsw" "$BIN/cdsw"
    echo "==> linked $BIN/cdsw -> $VENV/bin/cdsw"
  fi
fi
case ":$PATH:" in
  *":$BIN:"*) echo "==> \`cdsw\` is on PATH ($BIN/cdsw); \`cdsw status\` finds this instance" ;;
  *) echo "!!! $BIN is not on PATH: add it (export PATH=\"$BIN:\$PATH\") or run $BIN/cdsw" >&2 ;;
esac

# the web UI's browser libraries (code editor); without them the pages still work and say so
if ! command -v npm >/dev/null 2>&1; then
  step "installing Node.js and npm from Debian for the web UI's editor (about 100 s)"
  [ -n "$updated" ] || $SUDO apt-get update -qq || true
  if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; then
    step_done
  else
    echo "!!! could not install npm; the file editor falls back to plain text" >&2
  fi
fi
if command -v npm >/dev/null 2>&1; then
  step "installing the web UI's browser libraries (npm ci in cdsw_agent/web)"
  if (cd "$ROOT/cdsw_agent/web" && npm ci --no-audit --no-fund --loglevel=error); then
    step_done
  else
    echo "!!! npm ci failed in cdsw_agent/web; the file editor falls back to plain text" >&2
  fi
fi
echo "==> starting the workbench: cdsw standalone $*"
exec "$VENV/bin/cdsw" standalone "$@"
