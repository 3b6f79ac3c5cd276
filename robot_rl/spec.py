"""The robot spec: one contract for the twin, the drivers, the recorder, the dataset,
the policies and the inference node.

A spec is plain data (loaded from ``robot_rl/conf/robot/<name>.yaml`` or any YAML /
dict), validated on construction, and carries a fingerprint so that a dataset recorded
with one robot is never silently mixed with another.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

CONF_DIR = Path(__file__).parent / "conf"
ACTION_MODES = ("joint_pos", "joint_delta", "ee_delta")


class SpecError(ValueError):
    """A robot spec is malformed or does not match what it is used with."""


@dataclass(frozen=True)
class JointSpec:
    name: str
    lower: float  # rad (or m for prismatic)
    upper: float
    max_velocity: float  # rad/s
    home: float = 0.0

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise SpecError(f"joint {self.name!r}: lower {self.lower} must be < upper {self.upper}")
        if not self.lower <= self.home <= self.upper:
            raise SpecError(f"joint {self.name!r}: home {self.home} outside [{self.lower}, {self.upper}]")
        if self.max_velocity <= 0:
            raise SpecError(f"joint {self.name!r}: max_velocity must be > 0")


@dataclass(frozen=True)
class GripperSpec:
    """A gripper commanded by one scalar in [0, 1]: 0 = open, 1 = closed."""

    name: str
    open_width: float  # m between the fingers when open
    closed_width: float = 0.0
    max_force: float = 20.0  # N

    def __post_init__(self) -> None:
        if not self.open_width > self.closed_width >= 0:
            raise SpecError(f"gripper {self.name!r}: need open_width > closed_width >= 0")


@dataclass(frozen=True)
class CameraSpec:
    name: str
    width: int
    height: int
    fovy: float  # vertical field of view, degrees
    mount: str = "world"  # "world" (fixed) or "wrist" (on the end effector)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise SpecError(f"camera {self.name!r}: resolution must be positive")
        if not 0 < self.fovy < 180:
            raise SpecError(f"camera {self.name!r}: fovy must be in (0, 180) degrees")
        if self.mount not in ("world", "wrist"):
            raise SpecError(f"camera {self.name!r}: mount must be 'world' or 'wrist'")

    @property
    def intrinsics(self) -> list[list[float]]:
        """Pinhole K matrix (square pixels, principal point at the image centre)."""
        f = 0.5 * self.height / math.tan(math.radians(self.fovy) / 2)
        return [[f, 0.0, (self.width - 1) / 2], [0.0, f, (self.height - 1) / 2], [0.0, 0.0, 1.0]]


@dataclass(frozen=True)
class RobotSpec:
    name: str
    joints: tuple[JointSpec, ...]
    control_hz: float
    gripper: GripperSpec | None = None
    cameras: tuple[CameraSpec, ...] = ()
    action_modes: tuple[str, ...] = ACTION_MODES
    # limits for delta actions: per control step, at |action| = 1
    max_delta_joint: float = 0.1  # rad
    max_delta_pos: float = 0.02  # m
    max_delta_rot: float = 0.1  # rad
    # end-effector workspace in the base frame: [[xmin, ymin, zmin], [xmax, ymax, zmax]]
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-1, -1, 0), (1, 1, 1))
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.joints:
            raise SpecError(f"robot {self.name!r}: no joints")
        names = [j.name for j in self.joints]
        if len(set(names)) != len(names):
            raise SpecError(f"robot {self.name!r}: duplicate joint names {names}")
        if self.control_hz <= 0:
            raise SpecError(f"robot {self.name!r}: control_hz must be > 0")
        bad = [m for m in self.action_modes if m not in ACTION_MODES]
        if bad:
            raise SpecError(f"robot {self.name!r}: unknown action modes {bad}; known: {list(ACTION_MODES)}")
        cams = [c.name for c in self.cameras]
        if len(set(cams)) != len(cams):
            raise SpecError(f"robot {self.name!r}: duplicate camera names {cams}")
        lo, hi = self.workspace
        if not all(a < b for a, b in zip(lo, hi)):
            raise SpecError(f"robot {self.name!r}: workspace min must be < max, got {self.workspace}")

    # -- convenience -------------------------------------------------------------
    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def home(self) -> list[float]:
        return [j.home for j in self.joints]

    @property
    def lower(self) -> list[float]:
        return [j.lower for j in self.joints]

    @property
    def upper(self) -> list[float]:
        return [j.upper for j in self.joints]

    @property
    def max_velocity(self) -> list[float]:
        return [j.max_velocity for j in self.joints]

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise SpecError(f"robot {self.name!r} has no camera {name!r}; it has {[c.name for c in self.cameras]}")

    def action_dim(self, mode: str) -> int:
        if mode not in self.action_modes:
            raise SpecError(f"robot {self.name!r} does not support action mode {mode!r}; it supports {list(self.action_modes)}")
        g = 1 if self.gripper else 0
        return (6 if mode == "ee_delta" else self.dof) + g

    def with_cameras(self, names: list[str] | tuple[str, ...] | None, width: int | None = None,
                     height: int | None = None) -> "RobotSpec":
        """A copy keeping only the named cameras (None = all), optionally resized."""
        import dataclasses
        cams = self.cameras if names is None else tuple(self.camera(n) for n in names)
        if width or height:
            cams = tuple(dataclasses.replace(c, width=width or c.width, height=height or c.height) for c in cams)
        return dataclasses.replace(self, cameras=cams)

    # -- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["joints"] = [asdict(j) for j in self.joints]
        d["cameras"] = [asdict(c) for c in self.cameras]
        d["action_modes"] = list(self.action_modes)
        d["workspace"] = [list(self.workspace[0]), list(self.workspace[1])]
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RobotSpec":
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"robot spec: unknown keys {sorted(unknown)}; known keys: {sorted(known)}")
        for req in ("name", "joints", "control_hz"):
            if req not in d:
                raise SpecError(f"robot spec: missing required key {req!r}")
        try:
            d["joints"] = tuple(JointSpec(**j) for j in d["joints"])
            d["cameras"] = tuple(CameraSpec(**c) for c in d.get("cameras") or ())
            if d.get("gripper") is not None:
                d["gripper"] = GripperSpec(**d["gripper"])
        except TypeError as e:
            raise SpecError(f"robot spec {d.get('name')!r}: {e}") from None
        if "action_modes" in d:
            d["action_modes"] = tuple(d["action_modes"])
        if "workspace" in d:
            lo, hi = d["workspace"]
            d["workspace"] = (tuple(float(x) for x in lo), tuple(float(x) for x in hi))
        d["extra"] = dict(d.get("extra") or {})
        return cls(**d)

    def fingerprint(self) -> str:
        """Hash of what makes data compatible: joints, their order and limits, gripper,
        control rate. Cameras are not in it (a dataset may keep a subset)."""
        key = {
            "name": self.name,
            "joints": [(j.name, round(j.lower, 6), round(j.upper, 6)) for j in self.joints],
            "gripper": None if self.gripper is None else self.gripper.name,
            "control_hz": round(float(self.control_hz), 6),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def check_compatible(self, other: "RobotSpec", what: str = "data") -> None:
        """Raise SpecError naming the difference if `other` cannot share data with self."""
        if self.fingerprint() == other.fingerprint():
            return
        diffs = []
        if self.name != other.name:
            diffs.append(f"robot {other.name!r} vs {self.name!r}")
        if self.joint_names != other.joint_names:
            diffs.append(f"joints {other.joint_names} vs {self.joint_names}")
        if self.control_hz != other.control_hz:
            diffs.append(f"control_hz {other.control_hz} vs {self.control_hz}")
        if (self.gripper is None) != (other.gripper is None):
            diffs.append("gripper presence differs")
        if not diffs:
            diffs.append("joint limits differ")
        raise SpecError(f"{what} was recorded with robot spec {self.name!r} "
                        f"(fingerprint {self.fingerprint()}), which does not match {other.name!r} "
                        f"(fingerprint {other.fingerprint()}): " + "; ".join(diffs))


def conf_file(folder: str, name_or_path: str | Path, what: str, error: type[Exception] = ValueError) -> Path:
    """A config file by name (``robot_rl/conf/<folder>/<name>.yaml``) or path; a missing one is
    `error` naming what is available."""
    p = Path(name_or_path)
    if not p.suffix:
        p = CONF_DIR / folder / f"{name_or_path}.yaml"
    if not p.is_file():
        avail = sorted(f.stem for f in (CONF_DIR / folder).glob("*.yaml"))
        raise error(f"no {what} {str(name_or_path)!r} (available: {avail}, or a YAML path)")
    return p


def available_robots() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "robot").glob("*.yaml"))


def load_spec(name_or_path: str | Path | Mapping[str, Any] | RobotSpec) -> RobotSpec:
    """Load a spec by robot name (``so101``), YAML path, dict, or pass one through."""
    if isinstance(name_or_path, RobotSpec):
        return name_or_path
    if isinstance(name_or_path, Mapping):
        return RobotSpec.from_dict(name_or_path)
    p = Path(name_or_path)
    if not p.suffix:
        p = CONF_DIR / "robot" / f"{name_or_path}.yaml"
        if not p.exists():
            raise SpecError(f"unknown robot {str(name_or_path)!r}; available: {available_robots()}")
    if not p.exists():
        raise SpecError(f"robot spec file not found: {p}")
    with open(p) as f:
        d = yaml.safe_load(f)
    if not isinstance(d, Mapping):
        raise SpecError(f"robot spec file {p} does not hold a mapping")
    return RobotSpec.from_dict(d)


def resolve_spec(robot: "str | Path | Mapping[str, Any] | RobotSpec", action_mode: str,
                 cameras: "list[str] | tuple[str, ...] | None" = None,
                 image_size: "int | tuple[int, int] | None" = None,
                 control_hz: float | None = None) -> RobotSpec:
    """The spec an env or robot runs with: loaded, rate overridden, action mode checked,
    cameras selected (None = all) and resized (an int = square)."""
    import dataclasses
    spec = load_spec(robot)
    if control_hz is not None:
        if not control_hz > 0:
            raise SpecError(f"control_hz must be > 0, got {control_hz}")
        spec = dataclasses.replace(spec, control_hz=float(control_hz))
    if action_mode not in spec.action_modes:
        raise SpecError(f"robot {spec.name!r} does not support action mode {action_mode!r}; "
                        f"it supports {list(spec.action_modes)}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    cams = [c.name for c in spec.cameras] if cameras is None else list(cameras)
    return spec.with_cameras(cams, *(image_size or (None, None)))
