"""pick_cube: grasp a randomly placed cube and lift it above a height."""
from __future__ import annotations

import numpy as np

from robot_rl.sim.tasks.base import Expert, Task, free_body_xml, quat_yaw


class PickCube(Task):
    name = "pick_cube"
    max_steps = 150
    object_dim = 10
    half = 0.015  # cube half size (m)
    lift_height = 0.05  # success: cube bottom this far above the table

    def objects_xml(self) -> str:
        h = self.half
        return free_body_xml("cube", f'type="box" size="{h} {h} {h}"', 0.05, "0.85 0.15 0.15 1")

    def reset(self, rng):
        xy = self.sample_xy(rng)
        self.set_free_body("cube", [xy[0], xy[1], self.half], rng.uniform(-np.pi, np.pi))

    def object_state(self):
        pos, quat = self.body_pose("cube")
        return np.concatenate([pos, quat, pos - self.twin.ee_pose()[0]]).astype(np.float32)

    def _height(self) -> float:
        return float(self.twin.data.body("cube").xpos[2] - self.half)

    def grasped(self) -> bool:
        return self.touching("finger_left", "cube") and self.touching("finger_right", "cube")

    def success(self):
        return self._height() > self.lift_height

    def dense_reward(self):
        d = np.linalg.norm(self.twin.data.body("cube").xpos - self.twin.ee_pose()[0])
        reach = 1.0 - np.tanh(10.0 * d)
        lift = np.clip(self._height() / self.lift_height, 0.0, 1.0)
        return float(0.3 * reach + 0.2 * self.grasped() + 0.5 * lift)

    def make_expert(self, rng):
        return PickExpert(self, rng)


class PickExpert(Expert):
    """hover above the cube, align the fingers with a face, descend, close, lift."""

    def reset(self):
        super().reset()
        self.hover = self.rng.uniform(0.04, 0.07)
        self.grasp_dz = self.rng.uniform(-0.003, 0.002)
        self.close_steps = int(self.rng.integers(3, 7))
        self.lift_to = self.task.lift_height + self.task.half + self.rng.uniform(0.03, 0.05)

    def act(self, obs):
        if self.timer == 0 and self.phase == 0:
            self.reset()
        self.timer += 1
        cube = obs["object_state"][:3].astype(np.float64)
        yaw = self.nearest_yaw(obs, quat_yaw(obs["object_state"][3:7]), np.pi / 2)
        ee = obs["ee_pos"]
        if self.phase == 0:  # hover
            tgt = cube + [0, 0, self.hover]
            if np.linalg.norm((ee - tgt)[:2]) < 0.006 and abs(ee[2] - tgt[2]) < 0.02:
                self.phase = 1
            return self.goto(obs, tgt, yaw, 0.0)
        if self.phase == 1:  # descend
            tgt = cube + [0, 0, self.grasp_dz]
            if np.linalg.norm(ee - tgt) < 0.005:
                self.phase, self.timer = 2, 0
            return self.goto(obs, tgt, yaw, 0.0, speed=0.6 * self.speed + 0.2)
        if self.phase == 2:  # close
            if self.timer >= self.close_steps:
                self.phase = 3
            return self.goto(obs, ee, yaw, 1.0)
        # lift; if the cube slipped out (it stays low while the hand rises), start again
        if cube[2] < self.task.half + 0.01 and ee[2] > cube[2] + 0.04:
            self.phase, self.timer = 0, 1
            return self.goto(obs, ee, yaw, 0.0)
        return self.goto(obs, [ee[0], ee[1], self.lift_to], None, 1.0)
