"""insert: a square peg, held in the gripper, into a square hole with small clearance."""
from __future__ import annotations

import numpy as np

from robot_rl.sim.tasks.base import Expert, Task, quat_yaw, wrap
from robot_rl.sim.twin import down_mat


class Insert(Task):
    name = "insert"
    max_steps = 200
    object_dim = 12
    peg_half = 0.01  # square peg 20 mm
    peg_len = 0.06
    clearance = 0.0015  # per side: hole is 23 mm for a 20 mm peg
    depth = 0.03  # hole depth
    wall = 0.012
    insert_depth = 0.02  # success: peg bottom this far below the hole's rim

    def objects_xml(self) -> str:
        ph, pl = self.peg_half, self.peg_len / 2
        hole = self.peg_half + self.clearance
        w, dz = self.wall / 2, self.depth / 2
        off = hole + w
        walls = "".join(
            f'<geom type="box" size="{sx} {sy} {dz}" pos="{px} {py} {dz}" class="fixture" rgba="0.45 0.45 0.5 1"/>'
            for sx, sy, px, py in [(w, off + w, off, 0), (w, off + w, -off, 0),
                                   (hole, w, 0, off), (hole, w, 0, -off)])
        return (f'<body name="hole" mocap="true" pos="0 0 0">{walls}</body>'
                f'<body name="peg" pos="0 0 0.5"><freejoint name="peg"/>'
                f'<geom name="peg" type="box" size="{ph} {ph} {pl}" mass="0.04" rgba="0.9 0.7 0.1 1" '
                f'class="object"/></body>')

    def reset(self, rng):
        tw = self.twin
        for _ in range(100):
            hole = self.sample_xy(rng, margin=0.01)
            start = self.sample_xy(rng)
            if np.linalg.norm(hole - start) > 0.07:
                break
        self.hole_yaw = float(rng.uniform(-0.6, 0.6))
        self.hole_pos = np.array([hole[0], hole[1], 0.0])
        # the arm holds the peg above the table: solve IK for the start pose
        yaw = self.home_yaw() + rng.uniform(-0.4, 0.4)
        tcp = np.array([start[0], start[1], rng.uniform(0.07, 0.10)])
        q = tw.ik(tcp, down_mat(yaw), tw.home, iters=100)
        tw.reset(q, gripper=1.0)
        # after tw.reset: mj_resetData puts every mocap body back at its model position, so a
        # hole placed before it stayed at the origin (the peg then went down into thin air)
        self.set_mocap("hole", self.hole_pos, self.hole_yaw)
        pos, mat = tw.fk(q)
        k_palm_gap = self._tcp_to_palm()
        peg_top = pos[2] + k_palm_gap - 0.004 - rng.uniform(0.0, 0.008)
        self.set_free_body("peg", [pos[0], pos[1], peg_top - self.peg_len / 2], yaw)
        tw.data.qpos[tw.finger_qadr] = self.peg_half
        tw.data.ctrl[tw.grip_act] = 0.0
        import mujoco
        mujoco.mj_forward(tw.model, tw.data)

    def _tcp_to_palm(self) -> float:
        m = self.twin.model
        # distance from the tcp site to the palm (finger roots) along the approach axis
        return float(m.site_pos[self.twin.tcp][2] - m.body_pos[m.body("finger_left").id][2])

    def object_state(self):
        pos, quat = self.body_pose("peg")
        return np.concatenate([pos, quat, self.hole_pos, [np.cos(self.hole_yaw), np.sin(self.hole_yaw)]]
                              ).astype(np.float32)

    def _peg_local(self) -> tuple[np.ndarray, float]:
        p = self.twin.data.body("peg").xpos
        c, s = np.cos(self.hole_yaw), np.sin(self.hole_yaw)
        dx, dy = p[0] - self.hole_pos[0], p[1] - self.hole_pos[1]
        local = np.array([c * dx + s * dy, -s * dx + c * dy])
        bottom = p[2] - self.peg_len / 2
        return local, float(bottom)

    def success(self):
        local, bottom = self._peg_local()
        inside = np.all(np.abs(local) < self.peg_half + self.clearance)
        return bool(inside and bottom < self.depth - self.insert_depth)

    def dense_reward(self):
        local, bottom = self._peg_local()
        align = 1 - np.tanh(30 * np.linalg.norm(local))
        down = np.clip((self.depth + 0.02 - bottom) / (0.02 + self.insert_depth), 0, 1)
        return float(0.4 * align + 0.6 * align * down)

    def make_expert(self, rng):
        return InsertExpert(self, rng)


class InsertExpert(Expert):
    """Carry the peg over the hole, square it with the hole, and lower it in, servoing
    on the peg's own position (the grasp is never exactly centred)."""

    tcp_to_tip = 0.012  # the tcp site sits this far above the fingertips (sim/mjcf.py)

    def reset(self):
        super().reset()
        self.hover = self.rng.uniform(0.015, 0.03)

    def act(self, obs):
        if self.timer == 0 and self.phase == 0:
            self.reset()
        self.timer += 1
        t = self.task
        os_ = obs["object_state"].astype(np.float64)
        peg, peg_q, hole = os_[:3], os_[3:7], os_[7:10]
        hole_yaw = float(np.arctan2(os_[11], os_[10]))
        ee = obs["ee_pos"].astype(np.float64)
        # hand yaw that squares the peg with the hole (square: 90 degree symmetry)
        from robot_rl.sim.twin import quat_to_mat, yaw_of
        hand_yaw = yaw_of(quat_to_mat(obs["ee_quat"].astype(np.float64)))
        yaw = hand_yaw + wrap(hole_yaw - quat_yaw(peg_q), np.pi / 2)
        off = ee - peg  # hand relative to the peg centre
        bottom = peg[2] - t.peg_len / 2
        xy_err = np.linalg.norm(peg[:2] - hole[:2])
        rim = hole[2] + t.depth
        if self.phase == 0:  # bring the peg above the hole
            tgt = np.array([hole[0], hole[1], rim + self.hover + t.peg_len / 2]) + off
            if xy_err < 0.0015 and abs(wrap(yaw - hand_yaw)) < 0.03 and abs(bottom - rim - self.hover) < 0.01:
                self.phase = 1
            return self.goto(obs, tgt, yaw, 1.0)
        if self.phase == 2:  # let go: the peg slides down the hole under its own weight
            return self.goto(obs, ee, None, 0.0)
        # lower, still centring; back off if the peg is caught on the rim off-centre
        if xy_err > 0.004 and bottom > rim - 0.002:
            self.phase = 0
        # the fingers land on the walls when the peg sits high in the grasp: once the peg is in
        # the hole's mouth and centred, and the fingertips are about to reach the rim, release
        # it (a test on this observation alone, so that a policy can learn when)
        fingertips = ee[2] - self.tcp_to_tip
        if bottom < rim - 0.003 and xy_err < 0.0025 and fingertips < rim + 0.002:
            self.phase = 2
        tgt = np.array([hole[0], hole[1], peg[2] - 0.01]) + off
        return self.goto(obs, tgt, yaw, 1.0, speed=0.35)
