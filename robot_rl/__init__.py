"""robot_rl: ROS 2-native real-robot learning (see README.md)."""
import os as _os

# OpenMP threads that spin-wait turn two torch processes sharing a few cores (training next
# to evaluation, tests, a recorder...) into a 30-60x slowdown: measured 6.0 s instead of
# 0.2 s per diffusion training step on 2 cores. Sleeping waits cost ~8% when alone. Takes
# effect when robot_rl is imported before torch (our CLI, demo, tests and nodes do); set
# OMP_WAIT_POLICY yourself to choose otherwise.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):
    # robot_rl.__version__: the installed distribution's version, looked up only when asked
    # (importing robot_rl stays cheap for every node and worker process)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("robot-rl")
        except PackageNotFoundError:  # a source tree on sys.path, not installed: its pyproject.toml
            try:
                import tomllib
                with open(_os.path.join(_os.path.dirname(__file__), _os.pardir, "pyproject.toml"), "rb") as f:
                    project = tomllib.load(f)["project"]
                if project["name"] == "robot-rl":
                    return project["version"]
            except (ImportError, OSError, KeyError, ValueError):
                pass
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
