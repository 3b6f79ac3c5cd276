"""MuJoCo twin of the robot specs: tasks, scripted experts, gymnasium envs.

Importing this package registers ``robot_rl/Reach-v0``, ``robot_rl/PickCube-v0``,
``robot_rl/Push-v0`` and ``robot_rl/Insert-v0``.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

ENV_IDS = {
    "reach": "robot_rl/Reach-v0",
    "pick_cube": "robot_rl/PickCube-v0",
    "push": "robot_rl/Push-v0",
    "insert": "robot_rl/Insert-v0",
}

for _task, _id in ENV_IDS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point="robot_rl.sim.env:RobotEnv", kwargs={"task": _task},
                     disable_env_checker=True)


def make_env(task: str = "pick_cube", robot: str = "so101", **kwargs):
    """The twin env for `task` on `robot` (same as ``gym.make(ENV_IDS[task], robot=...)``)."""
    from robot_rl.sim.env import RobotEnv
    return RobotEnv(task=task, robot=robot, **kwargs)


def make_vec_env(task: str = "pick_cube", num_envs: int = 4, robot: str = "so101",
                 vectorization_mode: str = "sync", **kwargs):
    """A gymnasium vector env of `num_envs` twins ('sync' in-process, 'async' one process each)."""
    if task not in ENV_IDS:
        raise ValueError(f"unknown task {task!r}; available: {sorted(ENV_IDS)}")
    return gym.make_vec(ENV_IDS[task], num_envs=num_envs, vectorization_mode=vectorization_mode,
                        robot=robot, **kwargs)


__all__ = ["ENV_IDS", "make_env", "make_vec_env"]
