#!/usr/bin/env bash
# Run a command in a network namespace of its own that holds only loopback (with a
# multicast route on lo), so no DDS / ROS 2 packet can leave this machine, with
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST. Every test, demo and benchmark goes through this.
#   scripts/isolated.sh CMD [ARGS...]
set -euo pipefail
if [ "${ROBOT_RL_ISOLATED:-}" = 1 ]; then exec "$@"; fi
export ROBOT_RL_ISOLATED=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see robot_rl/__init__.py
# ROS 2 from the project venv (PyPI wheels) unless a system ROS is already sourced
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if [ -z "${AMENT_PREFIX_PATH:-}" ] && [ -d "$venv/share/ament_index" ]; then export AMENT_PREFIX_PATH="$venv"; fi
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}
setup='ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo'
if [ "$(id -u)" = 0 ]; then
  exec unshare -n -- bash -c "$setup && exec \"\$@\"" isolated "$@"
else
  # unprivileged: a user namespace maps us to root inside, just for the network setup
  exec unshare -rn -- bash -c "$setup && exec \"\$@\"" isolated "$@"
fi
