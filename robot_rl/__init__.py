"""robot_rl: ROS 2-native real-robot learning (see README.md)."""
import os as _os

# OpenMP threads that spin-wait turn two torch processes sharing a few cores (training next
# to evaluation, tests, a recorder...) into a 30-60x slowdown: measured 6.0 s instead of
# 0.2 s per diffusion training step on 2 cores. Sleeping waits cost ~8% when alone. Takes
# effect when robot_rl is imported before torch (our CLI, demo, tests and nodes do); set
# OMP_WAIT_POLICY yourself to choose otherwise.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
