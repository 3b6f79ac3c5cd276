"""The small robot interface every node uses, and ``SimRobot`` over the MuJoCo twin.

LeRobot-like: ``connect()``, ``observe() -> dict``, ``act(action, mode)``, ``disconnect()``,
``spec``. One ``act`` call applies one command for one control period; on the twin it also
advances physics by that period, on hardware time passes by itself. Every command goes
through the robot's :class:`~robot_rl.runtime.safety.SafetyFilter` before it reaches the
actuators -- for ``ee_delta`` that is the IK result, for ``act(None)`` ("no fresh command")
the filter's hold.

Observations are the env's dict (``joint_pos``, ``joint_vel``, ``ee_pos``, ``ee_quat``,
``gripper``, and on the twin ``object_state`` + ``image_<camera>``).
"""
from __future__ import annotations

import abc
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from robot_rl.runtime.safety import BAD_SHAPE, JOINT_LIMIT, NONFINITE, WORKSPACE, SafetyFilter, SafetyResult
from robot_rl.spec import RobotSpec, resolve_spec


class RobotFault(RuntimeError):
    """The robot stopped itself (a servo alarm, lost communication): it holds or has its
    torque off, and takes no command until the fault is cleared (``clear_fault``)."""


class RobotDisconnected(RobotFault):
    """The robot's link went away (USB adapter unplugged, driver process gone)."""


@dataclass
class ActResult:
    """What one ``act`` call did."""
    q: np.ndarray  # joint targets sent to the actuators (after the safety filter)
    gripper: float | None  # gripper command sent, 0 open .. 1 closed
    action: np.ndarray  # the action applied, expressed in the robot's action mode (float32)
    mode: str  # the action mode of the request
    events: list[str] = field(default_factory=list)  # safety events (clamped / rejected / held)
    held: bool = False
    rejected: bool = False


class Robot(abc.ABC):
    """A robot: spec, connection, observations and safety-filtered actions."""

    spec: RobotSpec
    action_mode: str
    safety: SafetyFilter
    simulated: bool = False  # True for the twin (sim time, reset, reward/success)
    measured_at: float | None = None  # hardware: wall time (time.time()) of the latest measurement

    # -- the interface -------------------------------------------------------------------
    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @abc.abstractmethod
    def observe(self) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def act(self, action: Any = None, mode: str | None = None, *, command_time: float | None = None,
            now: float | None = None) -> ActResult:
        """Apply `action` (in `mode`, default the robot's action mode) for one control period.
        ``action=None`` means "no fresh command": the safety filter holds. `command_time`
        (same clock as `now`, default ``time.monotonic()``) feeds the watchdog."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @property
    def time(self) -> float:
        """The robot's clock for measurement stamps (wall time on hardware)."""
        return time.time()

    def estop(self, engage: bool) -> None:
        """Latch (True) or release (False) the e-stop: hold position, ignore commands."""
        q = self._measured_q()
        if engage:
            self.safety.engage_estop(q)
        else:
            self.safety.release_estop(q)

    @property
    def fault(self) -> str | None:
        """A latched fault (servo alarm, lost link), or None. While set the robot holds or is
        limp and takes no command."""
        return None

    def clear_fault(self) -> str:
        """Clear a latched fault once its cause is gone (the reset service on hardware);
        returns what was done. Raises RobotFault when it cannot be cleared."""
        return "no fault"

    def status(self) -> dict[str, str]:
        """Driver key/values for /diagnostics (bus statistics, torque, fault)."""
        return {}

    # a robot whose controller runs whole trajectories (ros2_control's JointTrajectoryController)
    # takes an action chunk as one message; the robot node then forwards /joint_trajectory
    supports_trajectory: bool = False

    def send_trajectory(self, times_from_start, q, gripper=None):
        """Hand a whole trajectory (action chunk) to the robot's own controller, through the
        safety filter's limits; afterwards ``act(None)`` leaves it running."""
        raise NotImplementedError(f"{type(self).__name__} does not run trajectories itself")

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()

    # -- kinematic hooks a driver provides (used by the shared filtering code) -------------
    @abc.abstractmethod
    def _measured_q(self) -> np.ndarray: ...

    @abc.abstractmethod
    def _targets(self, mode: str, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Unfiltered joint targets + gripper for a finite, well-shaped action."""

    @abc.abstractmethod
    def _fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool position and rotation matrix for joint positions q."""

    @abc.abstractmethod
    def _ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured tool position and rotation matrix."""

    # -- shared: action -> targets -> safety filter ------------------------------------------
    def _filter(self, mode: str, action, command_time: float | None, now: float | None) -> tuple[SafetyResult, np.ndarray]:
        q_meas = self._measured_q()
        if action is None:
            return self.safety(None, None, q_meas, now=now, command_time=command_time), q_meas
        try:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
            dim = self.spec.action_dim(mode)
        except (TypeError, ValueError):
            a, dim = None, -1
        if a is None or a.shape != (dim,):
            req = np.zeros(self.spec.dof + 1)  # wrong shape: the filter rejects it
        elif not np.all(np.isfinite(a)):
            req = np.full(self.spec.dof, np.nan)  # the filter rejects it
        else:
            q, g = self._targets(mode, a)
            return self.safety(q, g, q_meas, now=now, command_time=command_time), q_meas
        return self.safety(req, None, q_meas, now=now, command_time=command_time), q_meas

    def _applied_action(self, mode: str, action, res: SafetyResult, q_meas: np.ndarray) -> np.ndarray:
        """The action to record, in the robot's action mode: the request itself when it is in
        that mode and was applied with at most rate clamps (velocity / acceleration: the same
        filter reproduces them at deployment, and a direct RobotEnv recording stores requests
        too); derived from the applied targets when it was rejected, held (watchdog / e-stop),
        clamped to the joint limits or the workspace (a request of 9 rad is no training
        target), or given in another mode."""
        s, g = self.spec, ([res.gripper] if res.gripper is not None else [])
        position_clamped = JOINT_LIMIT in res.events or WORKSPACE in res.events
        if action is not None and mode == self.action_mode and not (res.rejected or res.held or position_clamped):
            return np.asarray(action, dtype=np.float32).reshape(-1).copy()
        if self.action_mode == "joint_pos":
            a = np.r_[res.q, g]
        elif self.action_mode == "joint_delta":
            a = np.r_[np.clip((res.q - q_meas) / s.max_delta_joint, -1, 1), g]
        else:  # ee_delta
            from robot_rl.sim.twin import rot_error  # pure numpy + mujoco math helpers
            pos, mat = self._fk(res.q)
            cur, cmat = self._ee_pose()
            dp = np.clip((pos - cur) / s.max_delta_pos, -1, 1)
            dr = np.clip(rot_error(mat, cmat) / s.max_delta_rot, -1, 1)
            a = np.r_[dp, dr, g]
        return a.astype(np.float32)


def copy_mjdata(model, data):
    import mujoco
    d = mujoco.MjData(model)
    mujoco.mj_copyData(d, model, data)
    return d


def make_safety_filter(spec: RobotSpec, dt: float, fk=None, **kwargs) -> SafetyFilter:
    """A SafetyFilter with the workspace check on when an fk is given (``workspace=False``
    switches it off)."""
    if kwargs.pop("workspace", True) is False:
        fk = None
    return SafetyFilter(spec, dt, fk=fk, **kwargs)


class SimRobot(Robot):
    """The twin of a task (``RobotEnv``) behind the robot interface.

    Observations, reward, success, termination are exactly ``RobotEnv``'s; the difference is
    that every action's joint targets go through the safety filter before they reach
    ``data.ctrl``. For commands the filter leaves alone (in limits, in rate) a SimRobot run is
    bit-identical to a ``RobotEnv`` run with the same seed and actions.

    ``control_hz`` overrides the spec's control rate (the twin's control period becomes
    ``1 / control_hz``). ``safety`` holds SafetyFilter keyword arguments (``margin``,
    ``velocity_scale``, ``max_acceleration``, ``timeout_s``, ``workspace`` (bool), ...).

    ``randomization=NAME|FILE`` and ``calibration=DIR`` (``RobotEnv``'s) make it the
    calibrated, randomized twin behind the robot interface: every reset draws physics and
    visuals; action delay, observation noise, encoder offsets, observation delay (joint
    state) and camera noise apply to what the robot reports, as on ``RobotEnv``. Camera images
    are rendered when asked for, so an observation delay does not hold them back.
    """

    simulated = True

    def __init__(self, robot: str | RobotSpec = "so101", task: str = "pick_cube", action_mode: str = "ee_delta",
                 *, cameras: Sequence[str] | None = (), image_size: int | tuple[int, int] | None = None,
                 control_hz: float | None = None, reward_type: str = "dense", seed: int | None = None,
                 safety: Mapping[str, Any] | None = None, **env_kwargs):
        self.spec = resolve_spec(robot, action_mode, cameras, image_size, control_hz)
        self.task_name = task
        self.action_mode = action_mode
        self._env_kwargs = dict(reward_type=reward_type, **env_kwargs)
        self._seed = seed
        self._safety_kwargs = dict(safety or {})
        self.env = None
        self.twin = None
        self.safety = None  # built on connect (needs the twin's FK and control period)
        self._time_offset = 0.0
        self._pending: deque = deque()
        self._obs: dict[str, np.ndarray] | None = None
        self.reward = 0.0
        self.success = False
        self.terminated = False
        self.truncated = False
        self.info: dict[str, Any] = {}

    # -- interface -----------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.env is not None

    def connect(self) -> None:
        if self.env is not None:
            return
        from robot_rl.sim.env import RobotEnv
        self.env = RobotEnv(task=self.task_name, robot=self.spec, action_mode=self.action_mode,
                            cameras=[c.name for c in self.spec.cameras], **self._env_kwargs)
        self.twin = self.env.twin
        self.safety = make_safety_filter(self.spec, self.twin.control_dt, fk=lambda q: self.twin.fk(q)[0],
                                         **self._safety_kwargs)
        self.reset(self._seed)

    def disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = self.twin = None

    @property
    def control_dt(self) -> float:
        return self._need().twin.control_dt

    @property
    def sim_time(self) -> float:
        """Simulated seconds since connect; keeps increasing across resets."""
        return self._time_offset + float(self._need().twin.data.time)

    @property
    def time(self) -> float:
        return self.sim_time

    @property
    def steps(self) -> int:
        return self._need().env._steps

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Reset the task (``RobotEnv.reset(seed=seed)``); returns the step-0 observation."""
        env = self._need()
        if self._obs is not None:  # not the first reset: move the clock past the last stamp
            self._time_offset += float(self.twin.data.time) + self.twin.control_dt
        obs, info = env.reset(seed=seed)
        self._image_rng = np.random.default_rng(None if seed is None else [int(seed), 0x1A6E])
        if not hasattr(self, "_render_rng"):  # camera noise in the render thread (render_state): its own generator
            self._render_rng = np.random.default_rng(None if seed is None else [int(seed), 0x2A6E])
        self._pending.clear()
        self.safety.reset(self.twin.q, gripper=0.0)
        self._set_obs(obs)
        self.reward, self.success = 0.0, bool(info["success"])
        self.terminated = self.truncated = False
        self.info = info
        return self.observe()

    def observe(self, images: bool = True) -> dict[str, np.ndarray]:
        """The latest observation (the env's dict). Camera images are rendered on first
        request after each step (``images=False`` skips them)."""
        self._need()
        obs = dict(self._obs)
        if images:
            for c in self.spec.cameras:
                k = f"image_{c.name}"
                if k not in self._obs:
                    img = self.twin.render(c.name, c.width, c.height)
                    rz = self.env.randomizer
                    self._obs[k] = img if rz is None else rz.noisy_image(img, self._image_rng)
                obs[k] = self._obs[k]
        return obs

    def act(self, action: Any = None, mode: str | None = None, *, command_time: float | None = None,
            now: float | None = None) -> ActResult:
        env = self._need()
        mode = mode or self.action_mode
        tw = self.twin
        res: ActResult | None = None
        if self.safety.estopped:  # an e-stop acts at once, whatever the latency
            self._pending.clear()
        self._pending.append((mode, None if action is None else np.array(action, copy=True), command_time))
        if self.safety.estopped or len(self._pending) > tw.params.action_latency_steps:
            m, a, ct = self._pending.popleft()
            r, q_meas = self._filter(m, a, ct, now)
            tw.data.ctrl[tw.act] = r.q
            if r.gripper is not None and tw.has_gripper:
                tw.data.ctrl[tw.grip_act] = (1.0 - r.gripper) * tw.half_open
            res = ActResult(r.q, r.gripper, self._applied_action(m, a, r, q_meas), m, r.events, r.held, r.rejected)
        t0 = time.perf_counter()
        import mujoco
        mujoco.mj_step(tw.model, tw.data, nstep=tw.n_substeps)
        tw.physics_seconds += time.perf_counter() - t0
        if env.randomizer is not None:  # interval terms, as RobotEnv.step
            env.randomizer.step(env._dr_rng)
        reward, self.terminated, self.truncated, self.info = env.after_physics_step()  # as RobotEnv.step
        self.success, self.reward = bool(self.info["success"]), float(reward)
        self._set_obs(None)
        if res is None:  # still inside the action latency: nothing new applied yet
            q = tw.data.ctrl[tw.act].copy()
            res = ActResult(q, self.safety.last_gripper, np.zeros(self.spec.action_dim(self.action_mode), np.float32),
                            mode, ["latency"], held=True)
        return res

    # -- rendering off the control path (realtime nodes) ----------------------------------------
    def copy_state(self, into=None):
        """A copy of the twin's state (MjData) to render from in another thread; `into` reuses
        an earlier copy's buffers. Cheap (a memcpy): call it from the thread that steps."""
        import mujoco
        tw = self._need().twin
        if into is None:
            return copy_mjdata(tw.model, tw.data)
        mujoco.mj_copyData(into, tw.model, tw.data)
        return into

    def render_state(self, data, renderers: dict) -> dict[str, np.ndarray]:
        """Camera images of a copied state, with renderers owned by the calling thread
        (``renderers`` is that thread's cache; an EGL context is current in one thread only).
        Same scene settings as the twin, so the images equal ``observe()``'s."""
        import mujoco

        from robot_rl.sim.twin import sync_textures
        tw_env = self._need()
        tw = tw_env.twin
        out = {}
        for c in self.spec.cameras:
            r = renderers.get((c.width, c.height))
            if r is None:
                r = mujoco.Renderer(tw.model, c.height, c.width)
                for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                             mujoco.mjtRndFlag.mjRND_SKYBOX):
                    r.scene.flags[flag] = False
                r.texture_version = tw.texture_version  # a new context uploads the model's textures
                renderers[(c.width, c.height)] = r
            sync_textures(tw.model, r, tw.texture_version)  # randomized texels since the last frame
            r.update_scene(data, camera=c.name)
            img = r.render().copy()
            rz = tw_env.randomizer
            out[f"image_{c.name}"] = img if rz is None else rz.noisy_image(img, self._render_rng)
        return out

    # -- hooks -------------------------------------------------------------------------------
    def _need(self):
        if self.env is None:
            raise RuntimeError("SimRobot is not connected: call connect() first")
        return self.env

    def _set_obs(self, obs: dict | None) -> None:
        if obs is None:  # after a step: state now, images on demand (same RNG use as the env)
            obs = self.twin.observe()
            obs["object_state"] = self.env.task.object_state()
            if self.env.randomizer is not None:  # encoder offsets, observation delay (state only)
                obs = self.env.randomizer.observe(obs, self.env._dr_rng)
        else:  # from env.reset: randomized there already
            obs = {k: v for k, v in obs.items()}
        self._obs = obs

    def _measured_q(self) -> np.ndarray:
        return self.twin.q

    def _targets(self, mode: str, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        if mode == "joint_pos":  # raw: out-of-limit targets are the filter's business (and counted)
            return action[: self.spec.dof].copy(), (float(action[-1]) if self.twin.has_gripper else None)
        q, g = self.twin.action_to_targets(mode, action)
        return q, g

    def _fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.twin.fk(q)

    def _ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.twin.ee_pose()


__all__ = ["ActResult", "Robot", "RobotFault", "RobotDisconnected", "SimRobot", "make_safety_filter", "BAD_SHAPE", "NONFINITE"]
