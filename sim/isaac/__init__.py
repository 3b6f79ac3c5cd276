"""The Isaac Lab twin: the MuJoCo twin's robots, tasks, experts and randomization on Isaac Lab
3.0 (Newton physics, MuJoCo-Warp solver), ``num_envs`` worlds in one process.

Isaac Lab needs Python 3.12 with mujoco 3.12 and torch 2.11, so it lives in a venv of its
own (``make isaac`` builds it; ``.venv-isaac`` links to it). The core venv never imports it:
``robot-rl ... backend=isaac`` started from the core venv runs itself again in the Isaac venv
(a process boundary, nothing shared but the command line and the files it writes).

    from robot_rl.sim.isaac import make_isaac_env       # inside .venv-isaac
    env = make_isaac_env("pick_cube", robot="so101", num_envs=64)
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the clone (sim/isaac/__init__.py)
# what `make isaac` installs: the key of the cached venv is a hash of this file
REQUIREMENTS = REPO / "scripts" / "isaac-requirements.txt"
MIN_PYTHON = (3, 12)


class IsaacUnavailable(RuntimeError):
    """The Isaac Lab twin cannot start here; the message names the fix."""


def cache_root() -> Path:
    return Path(os.environ.get("ROBOT_RL_CACHE", Path.home() / ".cache" / "robot_rl"))


def requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]


def venv_dir() -> Path:
    """Where the Isaac venv is: $ROBOT_RL_ISAAC_VENV, else the clone's ``.venv-isaac`` link."""
    env = os.environ.get("ROBOT_RL_ISAAC_VENV")
    return Path(env) if env else REPO / ".venv-isaac"


def in_isaac_runtime() -> bool:
    if sys.version_info[:2] < MIN_PYTHON:
        return False
    try:
        import importlib.util
        return importlib.util.find_spec("isaaclab") is not None
    except (ImportError, ValueError):
        return False


def require_runtime() -> None:
    """Raise one clear error unless this process can run Isaac Lab."""
    if sys.version_info[:2] < MIN_PYTHON:
        raise IsaacUnavailable(
            f"the Isaac Lab twin needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} (Isaac Lab 3.0 pins it); this is "
            f"Python {sys.version_info[0]}.{sys.version_info[1]} ({sys.executable}). Build the Isaac venv with "
            "`make isaac` and run `.venv-isaac/bin/robot-rl ...`, or pass backend=isaac to `robot-rl` "
            "from the core venv, which runs the command in .venv-isaac for you.")
    if not in_isaac_runtime():
        raise IsaacUnavailable(
            f"isaaclab is not installed in {sys.prefix}. Build the Isaac venv with `make isaac` "
            "(Python 3.12, isaaclab==3.0.0; about 3 min and 8 GB, cached outside the clone).")


def isaac_python() -> Path:
    """The Isaac venv's interpreter, or one clear error saying how to build it."""
    v = venv_dir()
    py = v / "bin" / "python"
    if not py.exists():
        raise IsaacUnavailable(
            f"no Isaac Lab venv at {v}: run `make isaac` in {REPO} (builds it with pyenv's Python 3.12 "
            "in ~/.cache/robot_rl, about 3 min and 8 GB the first time), or point ROBOT_RL_ISAAC_VENV at one.")
    return py


def reexec_argv(argv: list[str]) -> list[str]:
    """The command line that runs ``robot-rl argv...`` in the Isaac venv."""
    return [str(isaac_python()), "-m", "robot_rl.cli.main", *argv]


def make_isaac_env(task: str = "pick_cube", robot: str = "so101", num_envs: int = 1, **kwargs):
    """``IsaacVecEnv`` (sim/isaac/env.py): `num_envs` worlds of `task` on `robot`."""
    require_runtime()
    from robot_rl.sim.isaac.env import IsaacVecEnv
    return IsaacVecEnv(task=task, robot=robot, num_envs=num_envs, **kwargs)


__all__ = ["IsaacUnavailable", "make_isaac_env", "require_runtime", "isaac_python", "reexec_argv",
           "venv_dir", "cache_root", "requirements_hash", "in_isaac_runtime"]
