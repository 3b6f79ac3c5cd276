"""push: push a block across the table until it sits on a target."""
from __future__ import annotations

import numpy as np

from robot_rl.sim.tasks.base import Expert, Task, free_body_xml, target_marker_xml


class Push(Task):
    name = "push"
    max_steps = 200
    object_dim = 9
    half = (0.02, 0.02, 0.015)
    tolerance = 0.02  # block centre within this of the target (xy)

    def objects_xml(self) -> str:
        hx, hy, hz = self.half
        return (free_body_xml("block", f'type="box" size="{hx} {hy} {hz}"', 0.08, "0.2 0.35 0.85 1")
                + target_marker_xml("goal", 'type="cylinder" size="0.025 0.0005"', "0.1 0.8 0.2 0.5"))

    def reset(self, rng):
        for _ in range(100):
            b = self.sample_xy(rng)
            ang = rng.uniform(-np.pi, np.pi)
            g = b + rng.uniform(0.06, 0.10) * np.array([np.cos(ang), np.sin(ang)])
            if np.all(g >= self.region[0] - 0.02) and np.all(g <= self.region[1] + 0.02):
                break
        self.goal = g
        self.set_free_body("block", [b[0], b[1], self.half[2]], rng.uniform(-np.pi, np.pi))
        self.set_mocap("goal", [g[0], g[1], 0.0005])

    def object_state(self):
        pos, quat = self.body_pose("block")
        return np.concatenate([pos, quat, self.goal]).astype(np.float32)

    def _dist(self) -> float:
        return float(np.linalg.norm(self.twin.data.body("block").xpos[:2] - self.goal))

    def success(self):
        return self._dist() < self.tolerance

    def dense_reward(self):
        ee = self.twin.ee_pose()[0]
        d_hand = np.linalg.norm(self.twin.data.body("block").xpos - ee)
        return float(0.3 * (1 - np.tanh(10 * d_hand)) + 0.7 * (1 - np.tanh(10 * self._dist())))

    def make_expert(self, rng):
        return PushExpert(self, rng)


class PushExpert(Expert):
    """Go behind the block (as seen from the goal), lower the closed fingers, push along
    the block-to-goal line; lift off and re-approach when the block turns away."""

    def reset(self):
        super().reset()
        self.push_z = self.rng.uniform(0.014, 0.022)
        self.standoff = self.task.half[0] * 1.42 + self.rng.uniform(0.015, 0.025)
        self.hover = self.rng.uniform(0.05, 0.08)

    def act(self, obs):
        if self.timer == 0 and self.phase == 0:
            self.reset()
        self.timer += 1
        block = obs["object_state"][:3].astype(np.float64)
        goal = obs["object_state"][7:9].astype(np.float64)
        ee = obs["ee_pos"].astype(np.float64)
        to_goal = goal - block[:2]
        dist = np.linalg.norm(to_goal)
        d = to_goal / max(dist, 1e-6)
        behind = block[:2] - d * self.standoff
        rel = ee[:2] - block[:2]
        along, lateral = rel @ d, rel @ np.array([-d[1], d[0]])
        if self.phase == 0:  # above the pre-push point
            tgt = np.array([behind[0], behind[1], self.hover])
            if np.linalg.norm(ee[:2] - behind) < 0.008:
                self.phase = 1
            return self.goto(obs, tgt, None, 1.0)
        if self.phase == 1:  # lower behind the block
            tgt = np.array([behind[0], behind[1], self.push_z])
            if abs(ee[2] - self.push_z) < 0.006:
                self.phase = 2
            return self.goto(obs, tgt, None, 1.0)
        # push; re-approach if the hand has drifted off the line or ahead of the block
        if abs(lateral) > 0.02 or along > -self.task.half[0]:
            self.phase = 0
            return self.goto(obs, [ee[0], ee[1], self.hover], None, 1.0, speed=1.0)
        step = min(dist, 0.02)
        tgt2 = block[:2] - d * (self.standoff - 0.012) + d * step
        return self.goto(obs, [tgt2[0], tgt2[1], self.push_z], None, 1.0, speed=0.5 * self.speed + 0.15)
