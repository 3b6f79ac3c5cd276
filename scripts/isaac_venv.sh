#!/usr/bin/env bash
# Build (once) the Isaac Lab twin's venv and link it as .venv-isaac; generate the local USD assets.
#   make isaac
# The venv is GBs, so it lives outside the clone in ~/.cache/robot_rl/venv-isaac-<hash of
# scripts/isaac-requirements.txt> (ROBOT_RL_CACHE moves the cache) and is reused by every clone
# and CI run on this machine; each `make isaac` re-points its editable robot_rl at this clone.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ROBOT_RL_CACHE:-$HOME/.cache/robot_rl}
REQ=scripts/isaac-requirements.txt
HASH=$(sha256sum "$REQ" | cut -c1-12)
VENV=$CACHE/venv-isaac-$HASH

# --- Python 3.12: Isaac Lab 3.0 needs it (pyenv's, else one on PATH) ---
PY312=${ISAAC_PYTHON:-}
if [ -z "$PY312" ] && command -v pyenv >/dev/null; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' | sort -rV); do
    PY312=$(PYENV_VERSION=$v pyenv which python3.12 2>/dev/null) && break
  done
fi
[ -n "$PY312" ] || PY312=$(command -v python3.12 || true)
if [ -z "$PY312" ] || ! "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  echo "make isaac: Isaac Lab 3.0 needs Python 3.12; none found. Install one (pyenv install 3.12) or set ISAAC_PYTHON=/path/to/python3.12" >&2
  exit 1
fi

# pipq, fresh_venv
source scripts/venv_lib.sh

if [ ! -f "$VENV/.complete" ]; then
  fresh_venv "$PY312" "$VENV" "make isaac" "about 3 min and 8 GB"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  pipq "$VENV/bin/python" -r "$REQ" pytest pytest-timeout
  "$VENV/bin/python" -c 'import isaaclab, isaaclab_newton, mujoco_usd_converter, newton' \
    || { echo "make isaac: the install is incomplete" >&2; exit 1; }
  touch "$VENV/.complete"
fi
ln -sfn "$VENV" .venv-isaac
# robot_rl itself, editable from this clone (its deps are already satisfied or small); torch
# stays Isaac Lab's 2.11
pipq .venv-isaac/bin/python -e ".[torch]"
.venv-isaac/bin/python -m pip check >/dev/null || { .venv-isaac/bin/python -m pip check >&2; exit 1; }
.venv-isaac/bin/python -m robot_rl.sim.isaac.assets | tail -n 8
echo "make isaac: ready ($(.venv-isaac/bin/python --version), $(readlink .venv-isaac))"
