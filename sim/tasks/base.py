"""Task interface and the helpers scripted experts share.

A task owns its objects (MJCF), samples their initial state, defines a success check
and a dense and a sparse reward, and builds a scripted expert. Experts see only the
observation dict (privileged ``object_state`` included) and answer with ``ee_delta``
actions -- the interface a teleoperator's device uses.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import mujoco
import numpy as np

from robot_rl.sim.twin import Twin, down_mat, quat_to_mat, rot_error, yaw_of
from robot_rl.spec import RobotSpec


def wrap(a: float, period: float = 2 * np.pi) -> float:
    """Wrap an angle into [-period/2, period/2)."""
    return float((a + period / 2) % period - period / 2)


class Task(ABC):
    name: str = ""
    max_steps: int = 200
    object_dim: int = 0

    def __init__(self, spec: RobotSpec):
        self.spec = spec
        region = spec.extra.get("object_region", [[0.15, -0.1], [0.25, 0.1]])
        self.region = np.asarray(region, dtype=np.float64)
        self.twin: Twin | None = None

    @abstractmethod
    def objects_xml(self) -> str: ...

    def bind(self, twin: Twin) -> None:
        self.twin = twin

    @abstractmethod
    def reset(self, rng: np.random.Generator) -> None:
        """Place robot and objects (the twin is already reset to home)."""

    @abstractmethod
    def object_state(self) -> np.ndarray: ...

    @abstractmethod
    def success(self) -> bool: ...

    @abstractmethod
    def dense_reward(self) -> float: ...

    @abstractmethod
    def make_expert(self, rng: np.random.Generator) -> "Expert": ...

    # helpers ---------------------------------------------------------------------
    def sample_xy(self, rng: np.random.Generator, margin: float = 0.0) -> np.ndarray:
        lo, hi = self.region[0] + margin, self.region[1] - margin
        return rng.uniform(lo, hi)

    def home_yaw(self) -> float:
        return yaw_of(self.twin.fk(self.twin.home)[1])

    def set_free_body(self, name: str, pos, yaw: float = 0.0) -> None:
        m, d = self.twin.model, self.twin.data
        j = m.body(name).jntadr[0]
        a = m.jnt_qposadr[j]
        d.qpos[a:a + 3] = pos
        d.qpos[a + 3:a + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        d.qvel[m.jnt_dofadr[j]:m.jnt_dofadr[j] + 6] = 0

    def body_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        b = self.twin.data.body(name)
        return b.xpos.copy(), b.xquat.copy()

    def set_mocap(self, name: str, pos, yaw: float = 0.0) -> None:
        m, d = self.twin.model, self.twin.data
        mid = m.body_mocapid[m.body(name).id]
        d.mocap_pos[mid] = pos
        d.mocap_quat[mid] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]

    def touching(self, geom_a: str, geom_b: str) -> bool:
        m, d = self.twin.model, self.twin.data
        a, b = m.geom(geom_a).id, m.geom(geom_b).id
        for i in range(d.ncon):
            c = d.contact[i]
            if (c.geom1 == a and c.geom2 == b) or (c.geom1 == b and c.geom2 == a):
                return True
        return False


def quat_yaw(q: np.ndarray) -> float:
    return yaw_of(quat_to_mat(q))


class Expert:
    """Base scripted expert: servo the tcp to waypoints through ``ee_delta`` actions.

    Each episode draws its own speed, pauses and offsets (``rng``), and actions get
    gaussian noise, so demonstrations vary the way a person's do.
    """

    def __init__(self, task: Task, rng: np.random.Generator, noise: float = 0.05):
        self.task = task
        self.spec = task.spec
        self.rng = rng
        self.noise = noise
        self.speed = float(rng.uniform(0.55, 1.0))  # fraction of the max delta per step
        self.phase = 0
        self.timer = 0

    def reset(self) -> None:
        self.phase = 0
        self.timer = 0

    def goto(self, obs: dict, pos: np.ndarray, yaw: float | None, grip: float,
             speed: float | None = None) -> np.ndarray:
        s = self.spec
        ee = obs["ee_pos"].astype(np.float64)
        mat = quat_to_mat(obs["ee_quat"].astype(np.float64))
        dp = (np.asarray(pos) - ee) / s.max_delta_pos
        sp = self.speed if speed is None else speed
        n = np.linalg.norm(dp)
        if n > sp:
            dp *= sp / n
        target = down_mat(yaw_of(mat) if yaw is None else yaw)
        dr = rot_error(target, mat) / s.max_delta_rot
        a = np.concatenate([dp, np.clip(dr, -1, 1)])
        a[:3] += self.rng.normal(0, self.noise * min(1.0, n), 3)
        return np.concatenate([np.clip(a, -1, 1), [grip]]).astype(np.float32)

    def nearest_yaw(self, obs: dict, yaw: float, symmetry: float) -> float:
        """Of the yaws equivalent to `yaw` under the object's symmetry, the one closest to
        the current hand yaw (so the wrist never spins needlessly)."""
        cur = yaw_of(quat_to_mat(obs["ee_quat"].astype(np.float64)))
        return cur + wrap(yaw - cur, symmetry)

    def act(self, obs: dict) -> np.ndarray:
        raise NotImplementedError


def free_body_xml(name: str, geom: str, mass: float, rgba: str) -> str:
    return (f'<body name="{name}" pos="0 0 0.5"><freejoint name="{name}"/>'
            f'<geom name="{name}" {geom} mass="{mass}" rgba="{rgba}" class="object"/></body>')


def target_marker_xml(name: str, geom: str, rgba: str) -> str:
    return (f'<body name="{name}" mocap="true" pos="0 0 -1">'
            f'<geom name="{name}" {geom} rgba="{rgba}" contype="0" conaffinity="0" group="2"/></body>')


__all__ = ["Task", "Expert", "wrap", "quat_yaw", "free_body_xml", "target_marker_xml", "mujoco"]
