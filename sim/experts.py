"""Run a task's scripted expert in an env (the expert is the stand-in teleoperator)."""
from __future__ import annotations

from typing import Callable

import numpy as np


def rollout_expert(env, seed: int, on_step: Callable[[dict, np.ndarray, float, dict], None] | None = None,
                   extra_steps: int = 0) -> dict:
    """One expert episode on `env` (a RobotEnv in ee_delta mode) from `seed`.

    `on_step(obs, action, reward, info)` sees every (observation, action) pair -- the
    observation the action was chosen from -- which is what a recorder stores.
    `extra_steps` keeps the episode running that many steps after success (a hold).
    Returns {"success", "length", "return"}.
    """
    obs, info = env.reset(seed=seed)
    expert = env.make_expert(seed)
    total, hold, steps = 0.0, 0, 0
    success = False
    for steps in range(1, env.max_episode_steps + 1):
        action = expert.act(obs)
        nobs, reward, terminated, truncated, info = env.step(action)
        if on_step is not None:
            on_step(obs, action, reward, info)
        total += reward
        obs = nobs
        success = success or info["success"]
        if success:
            hold += 1
        if (terminated and hold > extra_steps) or truncated or (success and hold > extra_steps):
            break
    return {"success": bool(success), "length": steps, "return": total}


def failure_rollout(env, seed: int, kind: str, on_step: Callable[[dict, np.ndarray, float, dict], None],
                    steps: int) -> bool:
    """A failed attempt, for labelled negatives (reward classifiers): ``open_gripper`` is the
    expert's motion with the fingers never closing (the arm lifts an empty hand), ``random``
    uniform random actions. ``on_step`` as in :func:`rollout_expert`. Returns whether the
    episode succeeded anyway (the twin's true success when a wrapper replaced ``success``)."""
    obs, _ = env.reset(seed=seed)
    expert, rng = env.unwrapped.make_expert(seed), np.random.default_rng(seed)
    success = False
    for _ in range(steps):
        if kind == "open_gripper":
            action = expert.act(obs).astype(np.float32)
            action[-1] = 0.0
        else:
            action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        nobs, reward, terminated, truncated, info = env.step(action)
        on_step(obs, action, reward, info)
        obs, success = nobs, success or bool(info.get("true_success", info["success"]))
        if terminated or truncated:
            break
    return success
