#!/usr/bin/env bash
# Create the project venv and install everything robot_rl needs on a fresh machine.
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."

# --- system packages for offscreen MuJoCo rendering (EGL + Mesa software rasteriser) ---
need_apt=()
ldconfig -p | grep -q 'libEGL.so.1 ' || need_apt+=(libegl1)
ldconfig -p | grep -q 'libEGL_mesa.so.0 ' || need_apt+=(libegl-mesa0)
compgen -G '/usr/lib/*/dri/swrast_dri.so' >/dev/null || compgen -G '/usr/lib/*/dri/llvmpipe_dri.so' >/dev/null \
  || need_apt+=(libgl1-mesa-dri)
ldconfig -p | grep -q 'libGL.so.1 ' || need_apt+=(libgl1)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  echo "bootstrap: installing system packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: please install: ${need_apt[*]} (needed for offscreen rendering)" >&2
    exit 1
  fi
fi

# --- python venv ---
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for p in python3.11 python3.12 python3.10 python3; do command -v "$p" >/dev/null && PYTHON=$p && break; done
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# torch first, pinned: on these machines it is a local CPU build; anything later that
# depends on torch then finds it satisfied instead of pulling CUDA wheels.
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -c 'import torch' 2>/dev/null || "${PIP[@]}" "torch==2.13.0" 2>&1 | quiet
"${PIP[@]}" -e ".[dev,ros,torch,bench,sysid]" 2>&1 | quiet
"$VENV/bin/python" -c 'import robot_rl.sim, robot_rl.data, torch, diffusers, mujoco, zarr, rosbags' \
  || { echo "bootstrap: the install is incomplete" >&2; exit 1; }
echo "bootstrap: ready ($("$VENV/bin/python" --version), venv $VENV)"
