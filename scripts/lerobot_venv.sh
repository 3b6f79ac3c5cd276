#!/usr/bin/env bash
# Build (once) the venv that holds the real `lerobot` package and link it as .venv-lerobot:
#   make lerobot
# It exists only for the LeRobot interop tests (make test-lerobot, tests/lerobot/): they run in the
# core venv and start this venv's python on small scripts that talk to our code through files on
# disk, so this venv holds lerobot and its dataset stack only, not robot_rl.
# The venv is GBs, so it lives outside the clone in ~/.cache/robot_rl/venv-lerobot-<hash of
# scripts/lerobot-requirements.txt, this script and venv_lib.sh> (ROBOT_RL_CACHE moves the cache) and is reused
# by every clone and CI run on this machine. A `.complete` marker is written last: an interrupted or
# failed build is never taken for a finished one.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ROBOT_RL_CACHE:-$HOME/.cache/robot_rl}
REQ=scripts/lerobot-requirements.txt
HASH=$(cat "$REQ" scripts/lerobot_venv.sh scripts/venv_lib.sh | sha256sum | cut -c1-12)
VENV=$CACHE/venv-lerobot-$HASH

# --- FFmpeg's shared libraries: torchcodec (lerobot's video decoder) loads them at run time ---
if ! ldconfig -p | grep -q 'libavcodec\.so\.' || ! ldconfig -p | grep -q 'libavdevice\.so\.'; then
  echo "make lerobot: installing FFmpeg (Debian's ffmpeg package; torchcodec needs its shared libraries)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "make lerobot: please install FFmpeg's shared libraries (apt-get install ffmpeg): torchcodec needs them" >&2
    exit 1
  fi
fi

# --- Python 3.11 (the core venv's, else one on PATH; LEROBOT_PYTHON overrides) ---
PY=${LEROBOT_PYTHON:-}
if [ -z "$PY" ] && [ -x .venv/bin/python ]; then
  PY=$(.venv/bin/python -c 'import sys; print(getattr(sys, "_base_executable", "") or sys.executable)')
fi
[ -n "$PY" ] || PY=$(command -v python3.11 || command -v python3 || true)
if [ -z "$PY" ] || ! "$PY" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12)' 2>/dev/null; then
  echo "make lerobot: lerobot 0.4.4 needs Python 3.10-3.12; none found. Set LEROBOT_PYTHON=/path/to/python3.11" >&2
  exit 1
fi

# pipq, fresh_venv
source scripts/venv_lib.sh

if [ ! -f "$VENV/.complete" ]; then
  fresh_venv "$PY" "$VENV" "make lerobot" "about 80 s and 6 GB"
  tmp=$(mktemp -d)
  grep -v -- '# no-deps' "$REQ" >"$tmp/deps.txt"
  grep -- '# no-deps' "$REQ" | sed 's/#.*//' >"$tmp/nodeps.txt"
  pipq "$VENV/bin/python" -r "$tmp/deps.txt"
  pipq "$VENV/bin/python" --no-deps -r "$tmp/nodeps.txt"
  rm -rf "$tmp"
  # everything resolved normally must be consistent; lerobot's own declared requirements are not
  # installed on purpose (see the requirements file), so only its lines are let through
  bad=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -E '^lerobot [0-9.]+ (requires|has requirement)' | grep -v '^No broken requirements' || true)
  if [ -n "$bad" ]; then echo "make lerobot: pip check: $bad" >&2; exit 1; fi
  HF_HUB_OFFLINE=1 "$VENV/bin/python" -c '
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401
from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads the FFmpeg libraries)
' || { echo "make lerobot: the install is incomplete (lerobot's dataset module or torchcodec does not load)" >&2; exit 1; }
  touch "$VENV/.complete"
fi
ln -sfn "$VENV" .venv-lerobot
echo "make lerobot: ready ($(.venv-lerobot/bin/python --version), lerobot $(.venv-lerobot/bin/python -c 'import importlib.metadata as m; print(m.version("lerobot"))'), $(readlink .venv-lerobot))"
