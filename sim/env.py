"""gymnasium environment: a robot spec's twin + a task, behind the robot's action modes."""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.sim.tasks import TASKS
from robot_rl.sim.twin import Twin, TwinParams
from robot_rl.spec import RobotSpec, resolve_spec

STATE_KEYS = ("joint_pos", "joint_vel", "ee_pos", "ee_quat", "gripper", "object_state")


class RobotEnv(gym.Env):
    """One robot, one task.

    Observations (a dict): ``joint_pos``, ``joint_vel``, ``ee_pos`` (m, base frame),
    ``ee_quat`` (wxyz), ``gripper`` (0 open .. 1 closed), ``object_state`` (privileged,
    for experts and critics) and ``image_<camera>`` (HxWx3 uint8) for each camera asked for.
    Actions follow ``action_mode`` (see ``RobotSpec.action_dim``); the last entry is the
    gripper command in [0, 1].
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str = "pick_cube", robot: str | RobotSpec = "so101",
                 action_mode: str = "ee_delta", cameras: Sequence[str] | None = (),
                 image_size: int | tuple[int, int] | None = None, reward_type: str = "dense",
                 max_episode_steps: int | None = None, terminate_on_success: bool = True,
                 render_mode: str | None = "rgb_array", render_size: int = 256,
                 params: TwinParams | None = None, timestep: float = 0.002, safety: bool = True,
                 randomization: Any = None, calibration: Any = None):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; available: {sorted(TASKS)}")
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"reward_type must be 'dense' or 'sparse', got {reward_type!r}")
        self.robot_spec = resolve_spec(robot, action_mode, cameras, image_size)
        self.task = TASKS[task](self.robot_spec)
        self.twin = Twin(self.robot_spec, self.task.objects_xml(), timestep=timestep,
                         offscreen=max([render_size] + [max(c.width, c.height) for c in self.robot_spec.cameras]),
                         params=params)
        self.task.bind(self.twin)
        # a calibration folder (calibration/twin.py: fitted dynamics, camera intrinsics and
        # hand-eye poses) becomes the twin's nominal values before anything caches them, so
        # randomization is centred on the calibrated twin
        self.calibration = None
        if calibration is not None:
            from robot_rl.calibration.twin import apply_calibration
            self.calibration = apply_calibration(self.twin, calibration)
        # domain randomization (sim/randomization.py): a name in robot_rl/conf/randomization, a
        # YAML file, a mapping; drawn from a generator of its own, seeded from the reset seed, so
        # a seed gives the same scene (object placement) with and without randomization
        self.randomizer = None
        if randomization is not None:
            from robot_rl.sim.randomization import Randomizer
            self.randomizer = Randomizer(self.twin, randomization)
        self._dr_rng: np.random.Generator | None = None
        if safety:
            # joint limits, velocity clamps and the workspace box of the spec, exactly as the
            # robot node applies them: sim demos obey the limits a real arm would
            from robot_rl.runtime.robot import make_safety_filter
            self.twin.safety = make_safety_filter(self.robot_spec, self.twin.control_dt,
                                                  fk=lambda q: self.twin.fk(q)[0])
        self.action_mode = action_mode
        self.reward_type = reward_type
        self.max_episode_steps = max_episode_steps or self.task.max_steps
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.render_size = render_size
        self.camera_names = [c.name for c in self.robot_spec.cameras]
        self._steps = 0

        s = self.robot_spec
        g = 1 if s.gripper else 0
        if action_mode == "joint_pos":
            lo = np.array(s.lower + [0.0] * g, dtype=np.float32)
            hi = np.array(s.upper + [1.0] * g, dtype=np.float32)
        else:
            n = s.action_dim(action_mode) - g
            lo = np.array([-1.0] * n + [0.0] * g, dtype=np.float32)
            hi = np.array([1.0] * n + [1.0] * g, dtype=np.float32)
        self.action_space = spaces.Box(lo, hi, dtype=np.float32)
        inf = np.inf
        obs = {
            "joint_pos": spaces.Box(np.array(s.lower, np.float32) - 0.1, np.array(s.upper, np.float32) + 0.1,
                                    dtype=np.float32),
            "joint_vel": spaces.Box(-inf, inf, (s.dof,), np.float32),
            "ee_pos": spaces.Box(-inf, inf, (3,), np.float32),
            "ee_quat": spaces.Box(-1.0, 1.0, (4,), np.float32),
            "gripper": spaces.Box(-0.1, 1.1, (1,), np.float32),
            "object_state": spaces.Box(-inf, inf, (self.task.object_dim,), np.float32),
        }
        for c in self.robot_spec.cameras:
            obs[f"image_{c.name}"] = spaces.Box(0, 255, (c.height, c.width, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)

    # -- gym API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.randomizer is not None:
            if self._dr_rng is None or seed is not None:
                first = self._dr_rng is None
                self._dr_rng = np.random.default_rng(None if seed is None else [int(seed), 0xD12])
                if first:
                    self.randomizer.startup(self._dr_rng)
            self.randomizer.reset(self._dr_rng)
        self.twin.seed(int(self.np_random.integers(2**31)))
        q = np.clip(self.twin.home + self.np_random.normal(0, 0.02, self.robot_spec.dof),
                    self.twin.lower, self.twin.upper)
        self.twin.reset(q, gripper=0.0)
        self.task.reset(self.np_random)
        import mujoco
        mujoco.mj_forward(self.twin.model, self.twin.data)
        self._steps = 0
        return self._obs(), self._info()

    def step(self, action):
        self.twin.step(self.action_mode, action)
        if self.randomizer is not None:
            self.randomizer.step(self._dr_rng)
        reward, terminated, truncated, info = self.after_physics_step()
        return self._obs(), reward, terminated, truncated, info

    def after_physics_step(self) -> tuple[float, bool, bool, dict[str, Any]]:
        """Count the step and score it: (reward, terminated, truncated, info). Shared with
        robot_rl.runtime.robot.SimRobot, which drives the physics itself."""
        self._steps += 1
        success = self.task.success()
        if self.reward_type == "sparse":
            reward = float(success)
        else:
            reward = 1.0 if success else self.task.dense_reward()
        terminated = bool(success and self.terminate_on_success)
        truncated = self._steps >= self.max_episode_steps and not terminated
        return reward, terminated, truncated, self._info(success)

    def render(self):
        cam = "front" if "front" in self.camera_names or self._has_camera("front") else None
        return self.twin.render(cam or -1, self.render_size, self.render_size)

    def close(self):
        self.twin.close()

    # -- helpers ------------------------------------------------------------------
    def _has_camera(self, name: str) -> bool:
        try:
            self.twin.model.camera(name)
            return True
        except KeyError:
            return False

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self.twin.observe()
        obs["object_state"] = self.task.object_state()
        for c in self.robot_spec.cameras:
            obs[f"image_{c.name}"] = self.twin.render(c.name, c.width, c.height)
        if self.randomizer is not None:
            obs = self.randomizer.observe(obs, self._dr_rng)
        return obs

    def _info(self, success: bool | None = None) -> dict[str, Any]:
        if success is None:
            success = self.task.success()
        return {"success": bool(success), "is_success": bool(success), "step": self._steps}

    def make_expert(self, seed: int | None = None):
        """The task's scripted expert, driving this env through ``ee_delta`` actions."""
        if self.action_mode != "ee_delta":
            raise ValueError("scripted experts act in the 'ee_delta' action mode; "
                             f"this env uses {self.action_mode!r}")
        return self.task.make_expert(np.random.default_rng(seed))
