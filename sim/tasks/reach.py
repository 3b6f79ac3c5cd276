"""reach: bring the tool centre point to a random target in the workspace."""
from __future__ import annotations

import numpy as np

from robot_rl.sim.tasks.base import Expert, Task, target_marker_xml


class Reach(Task):
    name = "reach"
    max_steps = 100
    object_dim = 3
    tolerance = 0.02

    def objects_xml(self) -> str:
        return target_marker_xml("target", 'type="sphere" size="0.012"', "0.1 0.8 0.2 0.6")

    def reset(self, rng: np.random.Generator) -> None:
        xy = self.sample_xy(rng, margin=-0.02)
        self.goal = np.array([xy[0], xy[1], rng.uniform(0.04, 0.16)])
        self.set_mocap("target", self.goal)

    def object_state(self) -> np.ndarray:
        return self.goal.astype(np.float32)

    def _dist(self) -> float:
        return float(np.linalg.norm(self.twin.ee_pose()[0] - self.goal))

    def success(self) -> bool:
        return self._dist() < self.tolerance

    def dense_reward(self) -> float:
        return float(1.0 - np.tanh(10.0 * self._dist()))

    def make_expert(self, rng):
        return ReachExpert(self, rng)


class ReachExpert(Expert):
    def act(self, obs):
        goal = obs["object_state"][:3].astype(np.float64)
        # a via point above the straight line, drawn per episode, makes paths differ
        if self.phase == 0:
            self.via = (obs["ee_pos"] + goal) / 2 + self.rng.normal(0, 0.015, 3) * [1, 1, 0.5]
            self.phase = 1
        if self.phase == 1:
            if np.linalg.norm(obs["ee_pos"] - self.via) < 0.015:
                self.phase = 2
            return self.goto(obs, self.via, None, 0.0)
        return self.goto(obs, goal, None, 0.0)
