"""``IsaacVecEnv``: `num_envs` worlds of a robot_rl task on Isaac Lab 3.0 (Newton, MuJoCo-Warp).

Physics runs in Isaac Lab: a ``DirectRLEnv`` whose scene is the twin's MJCF as USD
(sim/isaac/assets.py), cloned into `num_envs` worlds, stepped by MuJoCo-Warp at the MuJoCo
twin's physics step (17 x 1.96 ms per 30 Hz control step on the SO-101), with Isaac Lab's
event manager applying the randomization file's terms (sim/isaac/events.py).

Everything a task *defines* stays the MuJoCo twin's own code, so the two backends cannot
drift apart: each world has a *mirror* -- a ``RobotEnv`` of the same task whose MjData is
overwritten with the Isaac world's state after every step (joints, free bodies; kinematics
and contacts recomputed with ``mj_forward``, nothing integrated). The mirror turns actions
into joint targets (the action modes, IK, latency and the safety filter), and computes the
observations (same keys), rewards, success tests and episode ends; task resets (object
placement) are drawn in the mirror and written into the Isaac world. Scripted experts act on
those observations unchanged.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from robot_rl.sim.isaac import IsaacUnavailable, require_runtime
from robot_rl.sim.isaac.assets import asset_root, scene_usd

GIB = 1024 ** 3
# benchmarks/bench_isaac.py measured peak RSS of 1.18 GiB at 1 world and 1.51 GiB at 256
# (so101/pick_cube on CPU, mirrors included): ~1.3 MiB per world. The check below allows
# 2 MiB per world + 1.5 GiB: an estimate for "does num_envs fit", not a promise
BYTES_PER_WORLD = 2 * 1024 ** 2
BYTES_BASE = GIB * 3 // 2


def available_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch
        return int(torch.cuda.mem_get_info()[0])
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def check_fits(num_envs: int, device: str) -> None:
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    need = BYTES_BASE + num_envs * BYTES_PER_WORLD
    have = available_memory(device)
    if need > have:
        fit = max(1, int((have - BYTES_BASE) // BYTES_PER_WORLD))
        raise IsaacUnavailable(
            f"num_envs={num_envs} needs about {need / GIB:.1f} GiB on {device} "
            f"({BYTES_PER_WORLD / 1024 ** 2:.0f} MiB per world + {BYTES_BASE / GIB:.1f} GiB), but only "
            f"{have / GIB:.1f} GiB is available: use num_envs<={fit}, or a device with more memory")


def _xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return q[..., [3, 0, 1, 2]]


def _wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return q[..., [1, 2, 3, 0]]


def _build_direct_env(usd: str, mirror, num_envs: int, seed: int, device: str, events, spacing: float,
                      njmax: int, nconmax: int, state_fields: Sequence[str] = ()):
    """The Isaac Lab DirectRLEnv (cfg built here: the objects are the task's free bodies)."""
    import torch
    import isaaclab.sim as sim_utils
    from isaaclab.actuators import ImplicitActuatorCfg
    from isaaclab.assets import ArticulationCfg, RigidObjectCfg
    from isaaclab.envs import DirectRLEnv, DirectRLEnvCfg
    from isaaclab.scene import InteractiveSceneCfg
    from isaaclab.sim import SimulationCfg
    from isaaclab.utils import configclass
    from isaaclab_newton.physics import MJWarpSolverCfg, NewtonCfg

    twin = mirror.twin
    m = twin.model
    objects = [m.body(b).name for b in twin._free_bodies]
    kinematic = [m.body(b).name for b in range(m.nbody) if m.body_mocapid[b] >= 0 and _has_collider(m, b)]
    attrs: dict[str, Any] = {"robot": ArticulationCfg(
        prim_path="{ENV_REGEX_NS}/Scene", spawn=sim_utils.UsdFileCfg(usd_path=usd),
        articulation_root_prim_path="/Geometry/base",
        # the MJCF's position servos (kp, kv, force range) come through the USD's MuJoCo schema
        actuators={"servos": ImplicitActuatorCfg(joint_names_expr=[".*"], stiffness=None, damping=None)})}
    for name in objects:
        attrs[name] = RigidObjectCfg(prim_path=f"{{ENV_REGEX_NS}}/Scene/Geometry/{name}", spawn=None)
    attrs["__annotations__"] = {k: type(v) for k, v in attrs.items()}
    SceneCfg = configclass(type("RobotRLSceneCfg", (InteractiveSceneCfg,), attrs))

    ev_attrs = dict(events or {})
    EventsCfg = None
    if ev_attrs:
        ev_attrs["__annotations__"] = {k: type(v) for k, v in ev_attrs.items()}
        EventsCfg = configclass(type("RobotRLEventsCfg", (), ev_attrs))

    nj = len(twin.spec.joint_names) + (2 if twin.has_gripper else 0)

    @configclass
    class Cfg(DirectRLEnvCfg):
        decimation = int(twin.n_substeps)
        episode_length_s = 1e6  # episodes end in the wrapper (the task's success / step limit)
        action_space = nj
        observation_space = nj
        state_space = 0
        sim: SimulationCfg = SimulationCfg(
            dt=float(m.opt.timestep), device=device, render_interval=int(twin.n_substeps),
            physics=NewtonCfg(solver_cfg=MJWarpSolverCfg(
                integrator="implicitfast", cone="elliptic", impratio=float(m.opt.impratio),
                njmax=njmax, nconmax=nconmax, iterations=int(m.opt.iterations),
                ls_iterations=int(m.opt.ls_iterations), tolerance=float(m.opt.tolerance)),
                num_substeps=1, use_cuda_graph=device.startswith("cuda")))
        scene: InteractiveSceneCfg = SceneCfg(num_envs=num_envs, env_spacing=spacing, replicate_physics=True)

    cfg = Cfg()
    cfg.seed = int(seed)
    if EventsCfg is not None:
        cfg.events = EventsCfg()

    class TwinDirectEnv(DirectRLEnv):
        """Joint position targets in, physics out; the wrapper does the rest."""

        def __init__(self, cfg, **kw):
            # the wrapper's per-world draws (events.set_state_term); startup events run in super()
            ndof = len(twin.spec.joint_names)
            self.robot_rl_state = {f: torch.zeros((num_envs, ndof) if f == "joint_offset" else (num_envs,),
                                                  device=device) for f in state_fields}
            super().__init__(cfg, **kw)
            self.robot = self.scene["robot"]
            self.targets = self.robot.data.joint_pos.torch.clone()

        def _pre_physics_step(self, actions):
            self.targets = actions

        def _apply_action(self):
            self.robot.actuators.target_command.set_position_index(value=self.targets)

        def _get_observations(self):
            return {"policy": self.robot.data.joint_pos.torch}

        def _get_rewards(self):
            return torch.zeros(self.num_envs, device=self.device)

        def _get_dones(self):
            z = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            return z, z

    return TwinDirectEnv, cfg, objects, kinematic


def _has_collider(m, b: int) -> bool:
    return any(m.geom_bodyid[g] == b and (m.geom_contype[g] or m.geom_conaffinity[g]) for g in range(m.ngeom))


class IsaacVecEnv:
    """`num_envs` worlds of one task, batched: observations are dicts of arrays with a leading
    env axis, actions are (num_envs, action_dim). Episodes end per world; reset the ones that
    ended with ``reset(env_ids=..., seeds=...)``.

    ``mirrors[i]`` is world i's ``RobotEnv`` (see the module docstring); ``make_expert(i, seed)``
    is the task's scripted expert for world i.
    """

    def __init__(self, task: str = "pick_cube", robot: "str | Any" = "so101", num_envs: int = 1,
                 action_mode: str = "ee_delta", *, seed: int = 0, randomization: Any = None,
                 reward_type: str = "dense", max_episode_steps: int | None = None,
                 terminate_on_success: bool = True, safety: bool = True, device: str | None = None,
                 env_spacing: float = 2.0, njmax: int = 200, nconmax: int = 48, calibration: Any = None):
        require_runtime()
        import torch
        from robot_rl.sim.env import RobotEnv
        if IsaacVecEnv._open is not None:
            raise IsaacUnavailable("an Isaac twin is already open in this process (Isaac Lab keeps one simulation "
                                   "per process): close() it first, or give it more worlds (num_envs)")
        os.environ.setdefault("ISAACSIM_ASSET_ROOT", str(asset_root()))
        os.environ.setdefault("WARP_CACHE_PATH", str(asset_root().parent / "warp"))
        self.device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
        check_fits(num_envs, self.device)
        self.num_envs = int(num_envs)
        self.task_name, self.action_mode = task, action_mode
        if calibration is not None:
            raise IsaacUnavailable("calibration= is not carried to the Isaac twin yet: its fitted dynamics would "
                                   "have to be written into the USD asset; use backend=mujoco for a calibrated twin")
        self.mirrors = [RobotEnv(task=task, robot=robot, action_mode=action_mode, cameras=(), render_mode=None,
                                 reward_type=reward_type, max_episode_steps=max_episode_steps,
                                 terminate_on_success=terminate_on_success, safety=safety)
                        for _ in range(self.num_envs)]
        m0 = self.mirrors[0]
        self.robot_spec = m0.robot_spec
        self.action_space = m0.action_space
        self.observation_space = m0.observation_space
        self.max_episode_steps = m0.max_episode_steps
        twin = m0.twin
        self.control_dt = float(twin.control_dt)
        self.usd = scene_usd(self.robot_spec, task)

        self.event_plan = None
        events = None
        if randomization is not None:
            from robot_rl.sim.isaac.events import plan_events
            mm = twin.model
            objs = {mm.body(b).name: float(mm.geom_friction[[g for g in range(mm.ngeom) if mm.geom_bodyid[g] == b][0], 0])
                    for b in twin._free_bodies}
            bodies = [mm.body(b).name for b in range(1, mm.nbody)]
            self.event_plan = plan_events(randomization, arm_joints=list(self.robot_spec.joint_names),
                                          robot_bodies=bodies, objects=objs, control_dt=self.control_dt)
            events = self.event_plan.terms
            for name, why in self.event_plan.skipped.items():
                print(f"isaac twin: randomization term {name} not applied: {why}")

        Env, cfg, self.objects, self.kinematic = _build_direct_env(
            str(self.usd), m0, self.num_envs, seed, self.device, events, env_spacing, njmax, nconmax,
            self.event_plan.state_fields if self.event_plan is not None else ())
        self.cfg = cfg
        self.env = Env(cfg)
        IsaacVecEnv._open = self
        try:
            self._start(twin, seed)
        except BaseException:
            self.close()
            raise

    def _start(self, twin, seed: int) -> None:
        n = self.num_envs
        self.env.reset(seed=int(seed))
        robot = self.env.scene["robot"]
        names = list(robot.joint_names)
        try:
            self.arm_idx = [names.index(j) for j in self.robot_spec.joint_names]
        except ValueError as e:
            raise IsaacUnavailable(f"the Isaac asset's joints {names} do not match the spec's "
                                   f"{self.robot_spec.joint_names}: regenerate the assets (`make isaac`)") from e
        self.finger_idx = [next(i for i, j in enumerate(names) if j.startswith(f"finger_{s}"))
                           for s in ("left", "right")] if twin.has_gripper else []
        self.nj = len(names)
        # mirror addresses, the same in every mirror (one model): looked up once, not per step
        m = twin.model
        self._finger_dof = [int(m.jnt_dofadr[m.joint(f"finger_{s}").id]) for s in ("left", "right")] \
            if twin.has_gripper else []
        self._obj_adr = {name: (int(m.jnt_qposadr[m.body(name).jntadr[0]]), int(m.jnt_dofadr[m.body(name).jntadr[0]]))
                         for name in self.objects}
        self._targets = robot.data.joint_pos.torch.clone()
        self.origins = self.env.scene.env_origins.cpu().numpy().astype(np.float64)
        self._obs: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        self._obs_state = [{"joint_offset": None, "obs_delay": 0} for _ in range(n)]
        self._obs_hist: list[list] = [[] for _ in range(n)]
        self._mocap_joints: dict | None = None
        self.reset(seed=int(seed))  # every world starts from a task reset (seeds seed + i)

    # -- state transfer --------------------------------------------------------------
    def _pull(self, env_ids: Sequence[int] | None = None, advance: bool = True) -> None:
        """Isaac worlds -> mirrors: joints, free bodies; then kinematics and contacts."""
        import mujoco
        ids = range(self.num_envs) if env_ids is None else env_ids
        robot = self.env.scene["robot"]
        jp = robot.data.joint_pos.torch.cpu().numpy().astype(np.float64)
        jv = robot.data.joint_vel.torch.cpu().numpy().astype(np.float64)
        objs = {}
        for name in self.objects:
            d = self.env.scene[name].data
            objs[name] = (d.root_pos_w.torch.cpu().numpy().astype(np.float64),
                          _xyzw_to_wxyz(d.root_quat_w.torch.cpu().numpy().astype(np.float64)),
                          d.root_lin_vel_w.torch.cpu().numpy().astype(np.float64),
                          d.root_ang_vel_w.torch.cpu().numpy().astype(np.float64))
        for i in ids:
            tw = self.mirrors[i].twin
            m, d = tw.model, tw.data
            d.qpos[tw.qadr] = jp[i, self.arm_idx]
            d.qvel[tw.dadr] = jv[i, self.arm_idx]
            if tw.has_gripper:
                d.qpos[tw.finger_qadr] = jp[i, self.finger_idx]
                d.qvel[self._finger_dof] = jv[i, self.finger_idx]
            for name, (p, q, v, w) in objs.items():
                a, dv = self._obj_adr[name]
                d.qpos[a:a + 3] = p[i] - self.origins[i]
                d.qpos[a + 3:a + 7] = q[i] / np.linalg.norm(q[i])
                d.qvel[dv:dv + 3] = v[i]
                rot = np.empty(9)
                mujoco.mju_quat2Mat(rot, d.qpos[a + 3:a + 7])
                d.qvel[dv + 3:dv + 6] = rot.reshape(3, 3).T @ w[i]  # MuJoCo: body-frame angular velocity
            if advance:
                d.time += tw.control_dt
            mujoco.mj_forward(m, d)

    def _push(self, ids: list[int]) -> None:
        """Mirrors -> Isaac worlds, for worlds just reset: joints, targets, free and kinematic bodies."""
        import torch
        dev = self.env.device
        robot = self.env.scene["robot"]
        q = np.zeros((len(ids), self.nj))
        targets = self._targets.cpu().numpy().astype(np.float64)
        for k, i in enumerate(ids):
            tw = self.mirrors[i].twin
            q[k, self.arm_idx] = tw.data.qpos[tw.qadr]
            if tw.has_gripper:
                q[k, self.finger_idx] = tw.data.qpos[tw.finger_qadr]
            targets[i] = self._targets_of(i, q[k])
        tid = torch.as_tensor(ids, device=dev, dtype=torch.long)
        robot.write_joint_position_to_sim_index(position=torch.as_tensor(q, dtype=torch.float32, device=dev), env_ids=tid)
        robot.write_joint_velocity_to_sim_index(velocity=torch.zeros(len(ids), self.nj, device=dev), env_ids=tid)
        self._targets = torch.as_tensor(targets, dtype=torch.float32, device=dev)
        self.env.targets = self._targets
        robot.actuators.target_command.set_position_index(value=self._targets)
        if self.kinematic:
            self._place_mocap(ids)
        for name in self.objects:
            pose = np.zeros((len(ids), 7))
            for k, i in enumerate(ids):
                b = self.mirrors[i].twin.data.body(name)
                pose[k, :3] = b.xpos + self.origins[i]
                pose[k, 3:] = _wxyz_to_xyzw(b.xquat)
            obj = self.env.scene[name]
            obj.write_root_pose_to_sim_index(root_pose=torch.as_tensor(pose, dtype=torch.float32, device=dev), env_ids=tid)
            obj.write_root_velocity_to_sim_index(root_velocity=torch.zeros(len(ids), 6, device=dev), env_ids=tid)

    def _place_mocap(self, ids: list[int]) -> None:
        """Mocap bodies with colliders (insert's hole) where the mirrors put them. The converter
        writes such a body as a kinematic body welded to the world; Newton hands it to MuJoCo as a
        mocap body whose pose is its weld's parent frame (``joint_X_p``), so that is what moves."""
        from isaaclab_newton.physics import NewtonManager
        from newton import ModelFlags
        model = NewtonManager.get_model()
        if self._mocap_joints is None:
            labels = list(model.joint_label)
            self._mocap_joints = {}
            for name in self.kinematic:
                for w in range(self.num_envs):
                    tag = f"/env_{w}/Scene/Geometry/{name}/"
                    j = [k for k, lab in enumerate(labels) if tag in lab]
                    if len(j) != 1:
                        raise IsaacUnavailable(f"cannot find the weld of mocap body {name!r} in world {w}")
                    self._mocap_joints[(name, w)] = j[0]
        xp = model.joint_X_p.numpy()
        for name in self.kinematic:
            for i in ids:
                b = self.mirrors[i].twin.data.body(name)
                xp[self._mocap_joints[(name, i)]] = np.concatenate([b.xpos + self.origins[i], _wxyz_to_xyzw(b.xquat)])
        model.joint_X_p.assign(xp)
        NewtonManager.add_model_change(ModelFlags.JOINT_PROPERTIES)

    def _targets_of(self, i: int, fallback: np.ndarray) -> np.ndarray:
        tw = self.mirrors[i].twin
        t = np.array(fallback, dtype=np.float64)
        t[self.arm_idx] = tw.data.ctrl[tw.act]
        if tw.has_gripper:
            t[self.finger_idx] = tw.data.ctrl[tw.grip_act]  # the right finger follows by the equality
        return t

    def _apply_state_terms(self, ids: list[int]) -> None:
        st = self.env.robot_rl_state
        if not st:
            return
        import dataclasses
        vals = {k: v.cpu().numpy() for k, v in st.items()}
        for i in ids:
            mir = self.mirrors[i]
            p = mir.twin.params
            kw = {}
            if "action_delay" in vals:
                kw["action_latency_steps"] = int(round(float(vals["action_delay"][i])))
            if "obs_noise" in vals:
                kw["obs_noise_std"] = float(vals["obs_noise"][i])
            if kw:
                mir.twin.params = dataclasses.replace(p, **kw)
            self._obs_state[i] = {
                "joint_offset": vals["joint_offset"][i].astype(np.float64) if "joint_offset" in vals else None,
                "obs_delay": int(round(float(vals["obs_delay"][i]))) if "obs_delay" in vals else 0}

    # -- API ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None, env_ids: Sequence[int] | None = None,
              seeds: Sequence[int | None] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Reset worlds `env_ids` (all by default). World i gets ``seeds[k]``, or ``seed + i``
        when only `seed` is given: the same seeds give the same scenes and trajectories."""
        import torch
        ids = list(range(self.num_envs)) if env_ids is None else [int(i) for i in env_ids]
        if seeds is None:
            seeds = [None if seed is None else int(seed) + i for i in ids]
        if len(seeds) != len(ids):
            raise ValueError(f"{len(ids)} envs to reset but {len(seeds)} seeds")
        if any(s is not None for s in seeds):
            torch.manual_seed(int(next(s for s in seeds if s is not None)))  # Isaac's event draws
        self.env._reset_idx(torch.as_tensor(ids, device=self.env.device, dtype=torch.long))
        for i, s in zip(ids, seeds):
            self.mirrors[i].reset(seed=s)
            self._obs_hist[i] = []
        self._apply_state_terms(ids)
        self._push(ids)
        self.env.sim.forward()
        self.env.scene.update(dt=0.0)
        self._pull(ids, advance=False)
        for i in ids:
            self._obs[i] = self._observe(i)
        return self._stack(), {"success": np.array([self.mirrors[i]._info()["success"] for i in range(self.num_envs)])}

    def step(self, actions, active: Sequence[bool] | None = None
             ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One control step of every world. Worlds outside `active` (all by default) ignore their
        action and hold their joint targets; their episode clock does not run."""
        import torch
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (self.num_envs,) + self.action_space.shape:
            raise ValueError(f"actions must have shape {(self.num_envs,) + self.action_space.shape}, got {a.shape}")
        act = np.ones(self.num_envs, bool) if active is None else np.asarray(active, bool)
        targets = self._targets.cpu().numpy().astype(np.float64)
        for i in np.flatnonzero(act):
            self.mirrors[i].twin.apply_action(self.action_mode, a[i])
            targets[i] = self._targets_of(i, targets[i])
        self._targets = torch.as_tensor(targets, dtype=torch.float32, device=self.env.device)
        self.env.step(self._targets)
        self._pull()
        n = self.num_envs
        rew, term, trunc = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        succ = np.zeros(n, bool)
        for i, mir in enumerate(self.mirrors):
            if not act[i]:
                self._obs[i] = self._observe(i)
                continue
            r, te, tr, info = mir.after_physics_step()
            rew[i], term[i], trunc[i], succ[i] = r, te, tr, info["success"]
            self._obs[i] = self._observe(i)
        return self._stack(), rew, term, trunc, {"success": succ}

    def _observe(self, i: int) -> dict[str, np.ndarray]:
        mir = self.mirrors[i]
        obs = mir.twin.observe()
        obs["object_state"] = mir.task.object_state()
        st = self._obs_state[i]
        off = st["joint_offset"]
        if off is not None and np.any(off):  # encoder bias: the pose a controller computes from its encoders
            from robot_rl.sim.twin import mat_to_quat
            q = obs["joint_pos"].astype(np.float64) + off
            obs["joint_pos"] = q.astype(np.float32)
            pos, mat = mir.twin.fk(q)
            obs["ee_pos"], obs["ee_quat"] = pos.astype(np.float32), mat_to_quat(mat).astype(np.float32)
        k = st["obs_delay"]
        if k > 0:  # sensing latency: the world as it was k control steps ago
            h = self._obs_hist[i]
            h.append(obs)
            del h[:-(k + 1)]
            obs = dict(h[0])
        return obs

    def _stack(self) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in self._obs]) for k in self._obs[0]}

    def obs_of(self, i: int) -> dict[str, np.ndarray]:
        """World i's latest observation (what the scripted expert reads)."""
        return self._obs[i]

    def make_expert(self, i: int, seed: int | None = None):
        return self.mirrors[i].make_expert(seed)

    def physics_params(self) -> dict[str, np.ndarray]:
        """The per-world physical parameters Isaac Lab simulates (what randomization changes)."""
        robot = self.env.scene["robot"]
        out = {"joint_stiffness": robot.data.joint_stiffness.torch.cpu().numpy()[:, self.arm_idx],
               "joint_damping_gain": robot.data.joint_damping.torch.cpu().numpy()[:, self.arm_idx],
               "joint_armature": robot.data.joint_armature.torch.cpu().numpy()[:, self.arm_idx],
               "joint_friction": robot.data.joint_friction_coeff.torch.cpu().numpy()[:, self.arm_idx]}
        for name in self.objects:
            out[f"{name}_mass"] = self.env.scene[name].data.body_mass.torch.cpu().numpy().reshape(self.num_envs, -1)[:, 0]
        return out

    _open: "IsaacVecEnv | None" = None

    def close(self) -> None:
        try:
            if IsaacVecEnv._open is self:
                self.env.close()
        finally:
            if IsaacVecEnv._open is self:
                IsaacVecEnv._open = None
            for m in self.mirrors:
                m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class IsaacEnvList:
    """The evaluator's env pool (robot_rl.learn.evaluate) on one Isaac Lab env of `n` worlds:
    ``reset(i, seed)``, ``step(actions, active)``; idle worlds hold their joint targets."""

    def __init__(self, n: int, resize=None, *, task: str, robot, action_mode: str = "ee_delta", cameras=(),
                 randomization: Any = None, calibration: Any = None, max_episode_steps: int | None = None,
                 render_size: int = 160, seed: int = 0):
        if cameras:
            raise IsaacUnavailable(f"the Isaac twin renders no cameras (this policy reads {list(cameras)}): "
                                   "evaluate camera policies on backend=mujoco")
        self.vec = IsaacVecEnv(task=task, robot=robot, num_envs=n, action_mode=action_mode, seed=seed,
                               randomization=randomization, calibration=calibration,
                               max_episode_steps=max_episode_steps)
        self.envs = self.vec.mirrors

    def reset(self, i: int, seed: int) -> dict[str, np.ndarray]:
        self.vec.reset(env_ids=[i], seeds=[seed])
        return self.vec.obs_of(i)

    def step(self, actions: np.ndarray, active: np.ndarray) -> dict[int, tuple]:
        obs, r, te, tr, info = self.vec.step(actions, active=active)
        return {int(i): (self.vec.obs_of(int(i)), float(r[i]), bool(te[i]), bool(tr[i]),
                         {"success": bool(info["success"][i])}) for i in np.flatnonzero(active)}

    def render(self, i: int) -> np.ndarray:
        raise IsaacUnavailable("the Isaac twin renders no cameras: pass videos=0, or evaluate on backend=mujoco")

    def close(self) -> None:
        self.vec.close()


class IsaacWorldEnv:
    """World `i` of an ``IsaacVecEnv`` behind the gymnasium API of ``RobotEnv`` (what the
    single-stream RL loop steps). Worlds of one Isaac env step together: while this one
    steps, the others hold (and ``disturbed`` is set on them: their episode must restart)."""

    metadata = {"render_modes": []}

    def __init__(self, vec: "IsaacVecEnv", i: int, siblings: "list[IsaacWorldEnv]"):
        self.vec, self.i, self.siblings = vec, i, siblings
        m = vec.mirrors[i]
        self.robot_spec, self.task, self.twin = m.robot_spec, m.task, m.twin
        self.action_space, self.observation_space = vec.action_space, vec.observation_space
        self.max_episode_steps, self.action_mode = m.max_episode_steps, m.action_mode
        self.disturbed = False

    @property
    def unwrapped(self):
        return self

    def reset(self, *, seed=None, options=None):
        self.vec.reset(env_ids=[self.i], seeds=[seed])
        self.disturbed = False
        return self.vec.obs_of(self.i), {"success": False}

    def step(self, action):
        a = np.zeros((self.vec.num_envs,) + self.action_space.shape, np.float32)
        a[self.i] = action
        _, r, te, tr, info = self.vec.step(a, active=np.arange(self.vec.num_envs) == self.i)
        for s in self.siblings:
            if s is not self:
                s.disturbed = True
        return self.vec.obs_of(self.i), float(r[self.i]), bool(te[self.i]), bool(tr[self.i]), \
            {"success": bool(info["success"][self.i])}

    def make_expert(self, seed=None):
        return self.vec.make_expert(self.i, seed)

    def close(self):
        if all(s.closed for s in self.siblings if s is not self):
            self.vec.close()
        self.closed = True

    closed = False


def make_isaac_world_envs(task: str, robot, n: int = 1, **kwargs) -> "list[IsaacWorldEnv]":
    """`n` single-world envs sharing one Isaac Lab env (Isaac Lab keeps one simulation per
    process): the RL loop's training and evaluation envs."""
    vec = IsaacVecEnv(task=task, robot=robot, num_envs=n, **kwargs)
    worlds: list[IsaacWorldEnv] = []
    worlds.extend(IsaacWorldEnv(vec, i, worlds) for i in range(n))
    return worlds
