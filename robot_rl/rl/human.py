"""Who may take over the robot during online RL.

:class:`SimulatedHuman` is the stand-in for a person on the twin: the task's scripted
expert watches every step and takes over when the policy's action drifts from its own
beyond ``threshold`` for ``patience`` steps in a row; it then keeps control for
``takeover_steps`` steps (or until the episode ends), and never spends more than
``budget`` of all steps so far. With a real robot the same role is played by a teleop
device through the actor node (``/teleop/intervention`` + the device's commands).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HumanConfig:
    threshold: float = 0.8  # |translation difference| + |gripper difference|, in action units
    patience: int = 5  # consecutive drifting steps before taking over
    takeover_steps: int = 25  # steps per intervention
    budget: float = 0.1  # at most this fraction of all steps are intervened
    warmup_steps: int = 0  # no interventions before this many env steps


class SimulatedHuman:
    def __init__(self, env, cfg: HumanConfig | None = None):
        self.env = env
        self.cfg = cfg or HumanConfig()
        self.expert = None
        self.drift = 0
        self.left = 0  # steps left in the current takeover
        self.steps = 0  # all steps seen
        self.intervened_steps = 0
        self.interventions = 0

    def reset(self, seed: int) -> None:
        self.expert = self.env.make_expert(seed)
        self.drift = 0
        self.left = 0

    def distance(self, a_policy: np.ndarray, a_expert: np.ndarray) -> float:
        return float(np.linalg.norm(a_policy[:3] - a_expert[:3]) + abs(a_policy[-1] - a_expert[-1]))

    def step(self, obs: dict, a_policy: np.ndarray) -> tuple[np.ndarray, bool]:
        """The action to execute and whether the human is in control."""
        if self.expert is None:
            raise RuntimeError("SimulatedHuman.reset(seed) must be called at each episode start")
        a_expert = self.expert.act(obs)  # every step: the expert's phase follows the scene
        self.steps += 1
        cfg = self.cfg
        if self.left == 0:
            self.drift = self.drift + 1 if self.distance(a_policy, a_expert) > cfg.threshold else 0
            affordable = self.intervened_steps + 1 <= cfg.budget * max(self.steps, 1)
            if self.drift >= cfg.patience and affordable and self.steps > cfg.warmup_steps:
                self.left = cfg.takeover_steps
                self.interventions += 1
                self.drift = 0
        if self.left > 0 and self.intervened_steps + 1 > cfg.budget * self.steps:
            self.left = 0  # out of budget: hand control back
        if self.left > 0:
            self.left -= 1
            self.intervened_steps += 1
            return a_expert, True
        return a_policy, False

    @property
    def rate(self) -> float:
        return self.intervened_steps / max(self.steps, 1)
