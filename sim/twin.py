"""The MuJoCo twin of a robot spec: physics, action modes, IK, observations, cameras.

``Twin`` is deliberately task-agnostic: tasks add objects to the scene and read /
write their state; the gym env in ``robot_rl.sim.env`` glues both together. The same
action interface (absolute / delta joint positions, delta end-effector pose, gripper)
is what a teleop device, a scripted expert and a policy use.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, fields

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robot_rl.sim import mjcf  # noqa: E402
from robot_rl.spec import RobotSpec  # noqa: E402


@dataclass
class TwinParams:
    """Physical and sensing parameters of the twin, all at their nominal value by default.

    Domain randomisation (a later stage) samples these; ``Twin.set_params`` applies them
    to the live model without rebuilding it.
    """
    friction_scale: float = 1.0  # all geom sliding friction
    object_mass_scale: float = 1.0  # free bodies (task objects)
    damping_scale: float = 1.0  # joint damping
    actuator_gain_scale: float = 1.0  # arm position-actuator kp (and kv)
    armature_scale: float = 1.0  # arm joint armature (reflected rotor inertia)
    frictionloss: float = 0.0  # N m of dry friction added to each arm joint's nominal frictionloss
    forcerange_scale: float = 1.0  # arm position-actuator force limits
    action_latency_steps: int = 0  # control steps between a command and its application
    obs_noise_std: float = 0.0  # gaussian noise on joint_pos / joint_vel / ee_pos observations
    camera_pos_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # front camera shift (m)
    light_scale: float = 1.0  # diffuse light intensity


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    m = np.empty(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, dtype=np.float64))
    return m.reshape(3, 3)


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(m, dtype=np.float64).reshape(9))
    return q


def rotvec_to_mat(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    q = np.empty(4)
    mujoco.mju_axisAngle2Quat(q, v / angle, angle)
    return quat_to_mat(q)


def rot_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking `current` to `target` (3x3 matrices)."""
    q = mat_to_quat(target @ current.T)
    if q[0] < 0:
        q = -q
    s = np.linalg.norm(q[1:])
    if s < 1e-12:
        return np.zeros(3)
    return 2.0 * np.arctan2(s, q[0]) * q[1:] / s


def down_mat(yaw: float) -> np.ndarray:
    """Hand orientation pointing its approach axis straight down, rotated by `yaw` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    # columns: hand x, y, z in world; z = -world z
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def yaw_of(mat: np.ndarray) -> float:
    """Yaw of a (roughly downward-pointing) hand: angle of its x axis in the world xy plane."""
    return float(np.arctan2(mat[1, 0], mat[0, 0]))


class Twin:
    """Physics for one robot spec plus task objects."""

    def __init__(self, spec: RobotSpec, objects_xml: str = "", *, timestep: float = 0.002,
                 offscreen: int = 256, params: TwinParams | None = None):
        self.spec = spec
        self.model = mujoco.MjModel.from_xml_string(
            mjcf.scene_xml(spec, objects_xml, timestep=timestep, offscreen=offscreen))
        self.data = mujoco.MjData(self.model)
        self._ik_data = mujoco.MjData(self.model)
        m = self.model
        jid = [m.joint(n).id for n in spec.joint_names]
        self.qadr = np.array([m.jnt_qposadr[j] for j in jid])
        self.dadr = np.array([m.jnt_dofadr[j] for j in jid])
        self.act = np.array([m.actuator(n).id for n in spec.joint_names])
        self.lower = np.array(spec.lower)
        self.upper = np.array(spec.upper)
        self.home = np.array(spec.home)
        self.has_gripper = spec.gripper is not None
        if self.has_gripper:
            self.grip_act = m.actuator("gripper").id
            self.finger_qadr = np.array([m.jnt_qposadr[m.joint(f"finger_{s}").id] for s in ("left", "right")])
            self.half_open = spec.gripper.open_width / 2
        self.tcp = m.site("tcp").id
        self.physics_seconds = 0.0  # time spent in mj_step (for overhead measurements)
        self.ik_reject = 0.01  # m: IK results missing the target by more are not applied
        # whole substeps per control period, with the physics step shrunk so that the control
        # period is exact (30 Hz: 17 x 1.96 ms, not 17 x 2 ms = 29.4 Hz)
        self.n_substeps = max(1, int(np.ceil(1.0 / (spec.control_hz * timestep) - 1e-9)))
        self.model.opt.timestep = 1.0 / (spec.control_hz * self.n_substeps)
        self.control_dt = self.n_substeps * self.model.opt.timestep
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.texture_version = 0  # bumped when texture pixels change (randomization): renderers re-upload
        self._nominal = {
            "geom_friction": m.geom_friction.copy(), "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(), "dof_damping": m.dof_damping.copy(),
            "actuator_gainprm": m.actuator_gainprm.copy(), "actuator_biasprm": m.actuator_biasprm.copy(),
            "dof_armature": m.dof_armature.copy(), "dof_frictionloss": m.dof_frictionloss.copy(),
            "actuator_forcerange": m.actuator_forcerange.copy(),
            "cam_pos": m.cam_pos.copy(), "light_diffuse": m.light_diffuse.copy(),
        }
        self._free_bodies = [b for b in range(m.nbody) if m.body_jntnum[b] == 1
                             and m.jnt_type[m.body_jntadr[b]] == mujoco.mjtJoint.mjJNT_FREE]
        self.params = TwinParams()
        self.safety = None  # optional robot_rl.runtime.safety.SafetyFilter between actions and actuators
        self._pending: deque = deque()
        self._rng = np.random.default_rng(0)
        self.set_params(params or TwinParams())

    # -- parameters (domain randomisation hooks) ---------------------------------
    def set_params(self, p: TwinParams) -> None:
        m, n = self.model, self._nominal
        m.geom_friction[:, 0] = n["geom_friction"][:, 0] * p.friction_scale
        for b in self._free_bodies:
            m.body_mass[b] = n["body_mass"][b] * p.object_mass_scale
            m.body_inertia[b] = n["body_inertia"][b] * p.object_mass_scale
        m.dof_damping[:] = n["dof_damping"] * p.damping_scale
        for a in self.act:
            m.actuator_gainprm[a, 0] = n["actuator_gainprm"][a, 0] * p.actuator_gain_scale
            m.actuator_biasprm[a, 1:3] = n["actuator_biasprm"][a, 1:3] * p.actuator_gain_scale
            m.actuator_forcerange[a] = n["actuator_forcerange"][a] * p.forcerange_scale
        m.dof_armature[self.dadr] = n["dof_armature"][self.dadr] * p.armature_scale
        m.dof_frictionloss[self.dadr] = n["dof_frictionloss"][self.dadr] + p.frictionloss
        if m.ncam:
            front = [i for i in range(m.ncam) if m.cam(i).name == "front"]
            for i in front:
                m.cam_pos[i] = n["cam_pos"][i] + np.asarray(p.camera_pos_offset)
        m.light_diffuse[:] = n["light_diffuse"] * p.light_scale
        self.params = p
        self._pending = deque(maxlen=None)

    def seed(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    # -- state --------------------------------------------------------------------
    def reset(self, q: np.ndarray | None = None, gripper: float = 0.0) -> None:
        mujoco.mj_resetData(self.model, self.data)
        q = self.home if q is None else np.asarray(q, dtype=np.float64)
        self.data.qpos[self.qadr] = q
        self.data.ctrl[self.act] = q
        if self.has_gripper:
            w = (1.0 - gripper) * self.half_open
            self.data.qpos[self.finger_qadr] = w
            self.data.ctrl[self.grip_act] = w
        self._pending.clear()
        mujoco.mj_forward(self.model, self.data)
        if self.safety is not None:
            self.safety.reset(q, gripper if self.has_gripper else None)

    @property
    def q(self) -> np.ndarray:
        return self.data.qpos[self.qadr].copy()

    @property
    def qd(self) -> np.ndarray:
        return self.data.qvel[self.dadr].copy()

    def gripper_closure(self) -> float:
        """0 = fully open, 1 = fully closed (measured from the finger joints)."""
        if not self.has_gripper:
            return 0.0
        return float(1.0 - self.data.qpos[self.finger_qadr[0]] / self.half_open)

    def ee_pose(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        d = data or self.data
        return d.site_xpos[self.tcp].copy(), d.site_xmat[self.tcp].reshape(3, 3).copy()

    # -- kinematics -------------------------------------------------------------------
    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self._ik_data
        d.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, d)
        return self.ee_pose(d)

    def ik(self, pos: np.ndarray, mat: np.ndarray | None, q0: np.ndarray, *, iters: int = 6,
           tol: float = 2e-4, damping: float = 1e-3, return_error: bool = False):
        """Damped least squares IK for the tcp site. Position is the primary task; the
        orientation is solved in the null space of the position task, so a 5-DoF arm
        reaches positions exactly and matches the orientation as well as it can.
        Stops when the position is within `tol` and the joint update has become small."""
        m, d = self.model, self._ik_data
        q = np.array(q0, dtype=np.float64)
        eye3 = np.eye(3)
        lam2 = damping ** 2
        err = np.inf
        for _ in range(iters):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            ep = pos - d.site_xpos[self.tcp]
            err = float(np.sqrt(ep @ ep))
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.tcp)
            jp = self._jacp[:, self.dadr]
            jp_pinv = jp.T @ np.linalg.solve(jp @ jp.T + lam2 * eye3, eye3)
            dq = jp_pinv @ ep
            if mat is not None:
                eo = rot_error(mat, d.site_xmat[self.tcp].reshape(3, 3))
                jo = self._jacr[:, self.dadr]
                null = np.eye(len(q)) - jp_pinv @ jp
                jon = jo @ null
                dq = dq + null @ (jon.T @ np.linalg.solve(jon @ jon.T + 1e-2 * eye3, eo - jo @ dq))
            step = np.abs(dq).max()
            if err < tol and step < 2e-3:
                break
            if step > 0.4:
                dq *= 0.4 / step
            q = np.clip(q + dq, self.lower, self.upper)
        else:
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            ep = pos - d.site_xpos[self.tcp]
            err = float(np.sqrt(ep @ ep))
        return (q, err) if return_error else q

    # -- actions ------------------------------------------------------------------------
    def action_to_targets(self, mode: str, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Joint targets and gripper command (0 open .. 1 closed) for an action in `mode`."""
        s = self.spec
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (s.action_dim(mode),):
            raise ValueError(f"action for mode {mode!r} must have shape ({s.action_dim(mode)},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {a}")
        grip = float(np.clip(a[-1], 0.0, 1.0)) if self.has_gripper else None
        if mode == "joint_pos":
            q = a[: s.dof]
        elif mode == "joint_delta":
            q = self.q + np.clip(a[: s.dof], -1, 1) * s.max_delta_joint
        elif mode == "ee_delta":
            pos, mat = self.ee_pose()
            lo, hi = np.asarray(s.workspace[0]), np.asarray(s.workspace[1])
            tgt = np.clip(pos + np.clip(a[:3], -1, 1) * s.max_delta_pos, lo, hi)
            tmat = rotvec_to_mat(np.clip(a[3:6], -1, 1) * s.max_delta_rot) @ mat
            q, err = self.ik(tgt, tmat, self.q, return_error=True)
            if err > self.ik_reject:
                q = self.q  # unreachable target: hold rather than fold the arm somewhere else
        else:
            raise ValueError(f"unknown action mode {mode!r}")
        return np.clip(q, self.lower, self.upper), grip

    def step(self, mode: str, action: np.ndarray) -> None:
        """Apply one control step's action (after the configured latency) and integrate."""
        self.apply_action(mode, action)
        t0 = time.perf_counter()
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.physics_seconds += time.perf_counter() - t0

    def apply_action(self, mode: str, action: np.ndarray) -> None:
        """Queue one control step's action; the one due after the configured latency becomes
        the actuators' targets (``data.ctrl``), through the safety filter. The Isaac twin
        (sim/isaac/env.py) reads the targets from here and integrates them in Isaac Lab."""
        self._pending.append((mode, np.array(action, dtype=np.float64)))
        if len(self._pending) > self.params.action_latency_steps:
            q, grip = self.action_to_targets(*self._pending.popleft())
            if self.safety is not None:  # the same limits the robot node enforces
                t = float(self.data.time)
                r = self.safety(q, grip, self.q, now=t, command_time=t)
                q, grip = r.q, r.gripper
            self.data.ctrl[self.act] = q
            if grip is not None:
                self.data.ctrl[self.grip_act] = (1.0 - grip) * self.half_open

    # -- observations -----------------------------------------------------------------
    def observe(self) -> dict[str, np.ndarray]:
        pos, mat = self.ee_pose()
        obs = {
            "joint_pos": self.q.astype(np.float32),
            "joint_vel": self.qd.astype(np.float32),
            "ee_pos": pos.astype(np.float32),
            "ee_quat": mat_to_quat(mat).astype(np.float32),
            "gripper": np.array([self.gripper_closure()], dtype=np.float32),
        }
        sd = self.params.obs_noise_std
        if sd > 0:
            for k in ("joint_pos", "joint_vel", "ee_pos"):
                obs[k] = obs[k] + self._rng.normal(0, sd, obs[k].shape).astype(np.float32)
        return obs

    def render(self, camera: str, width: int, height: int) -> np.ndarray:
        key = (width, height)
        r = self._renderers.get(key)
        if r is None:
            try:
                r = mujoco.Renderer(self.model, height, width)
            except Exception as e:  # no GL: say which backend and how to fix it
                raise RuntimeError(
                    f"offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {e}. "
                    "Set MUJOCO_GL=egl (or osmesa) before mujoco is first imported, and install "
                    "libegl1 + libgl1-mesa-dri (Debian) for CPU rendering.") from e
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
            self._renderers[key] = r
            r.texture_version = self.texture_version  # a new context uploads the model's textures
        sync_textures(self.model, r, self.texture_version)
        r.update_scene(self.data, camera=camera)
        return r.render().copy()

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def sync_textures(model, renderer, version: int) -> None:
    """Send the model's texture pixels (``tex_data``, changed by texture randomization) to a
    ``mujoco.Renderer``'s GL context when they changed since it last got them (`version`:
    ``Twin.texture_version``); a context reads them only when it is made."""
    if getattr(renderer, "texture_version", None) == version:
        return
    ctx = getattr(renderer, "_gl_context", None)
    if ctx is not None:
        ctx.make_current()
    for i in range(model.ntex):
        mujoco.mjr_uploadTexture(model, renderer._mjr_context, i)
    renderer.texture_version = version


def params_fields() -> list[str]:
    return [f.name for f in fields(TwinParams)]
