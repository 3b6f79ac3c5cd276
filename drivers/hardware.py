"""Hardware descriptions: which servos an arm has (``robot_rl/conf/hardware/<name>.yaml``).

A description names the robot spec it serves, the bus protocol and baud rate, one motor
per spec joint (+ the gripper) with its id and model, the two calibration poses and the
settings the configure step writes. It holds nothing unit-specific: offsets, directions
and ranges are found by ``robot-rl calibrate`` and live in the calibration file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robot_rl.spec import CONF_DIR, conf_file

HW_DIR = CONF_DIR / "hardware"


class HardwareError(ValueError):
    """A hardware description is malformed or does not match the robot spec."""


@dataclass(frozen=True)
class Motor:
    name: str
    id: int
    model: str


@dataclass(frozen=True)
class Hardware:
    name: str
    robot: str
    role: str  # "follower" | "leader"
    protocol: str  # "feetech" | "dynamixel"
    baudrate: int
    motors: tuple[Motor, ...]
    gripper_travel: float = 1.75  # rad of servo rotation from open to closed
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)  # pose name -> {motor: value}
    configure: dict[str, dict[str, int]] = field(default_factory=dict)  # "all" | motor name -> {register: value}
    path: str = ""

    @property
    def ids(self) -> dict[str, int]:
        return {m.name: m.id for m in self.motors}

    def motor(self, name: str) -> Motor:
        for m in self.motors:
            if m.name == name:
                return m
        raise HardwareError(f"{self.name}: no motor {name!r} (motors: {[m.name for m in self.motors]})")

    def pose(self, name: str) -> dict[str, float]:
        try:
            return dict(self.calibration[name])
        except KeyError:
            raise HardwareError(f"{self.name}: no calibration pose {name!r}") from None

    def check_spec(self, spec) -> None:
        """The motors must be exactly the spec's joints (+ its gripper), in any order."""
        want = list(spec.joint_names) + ([spec.gripper.name] if spec.gripper else [])
        have = [m.name for m in self.motors]
        if sorted(want) != sorted(have):
            raise HardwareError(f"{self.name}: motors {have} do not match robot {spec.name!r}'s joints {want}")

    @property
    def arm_motors(self) -> tuple[Motor, ...]:
        return tuple(m for m in self.motors if m.name != "gripper")


def load_hardware(name_or_path: str | Path) -> Hardware:
    p = conf_file("hardware", name_or_path, "hardware description", HardwareError)
    with open(p) as f:
        d: dict[str, Any] = yaml.safe_load(f) or {}
    try:
        motors = tuple(Motor(n, int(m["id"]), str(m["model"]).lower()) for n, m in d["motors"].items())
        hw = Hardware(name=str(d.get("name", p.stem)), robot=str(d["robot"]), role=str(d.get("role", "follower")),
                      protocol=str(d["protocol"]).lower(), baudrate=int(d.get("baudrate", 1_000_000)), motors=motors,
                      gripper_travel=float(d.get("gripper_travel", 1.75)),
                      calibration={k: {n: float(v) for n, v in pose.items()} for k, pose in
                                   (d.get("calibration") or {}).items()},
                      configure={k: {r: int(v) for r, v in regs.items()} for k, regs in (d.get("configure") or {}).items()},
                      path=str(p))
    except (KeyError, TypeError, ValueError) as e:
        raise HardwareError(f"{p}: malformed hardware description ({e!r})") from None
    if hw.role not in ("follower", "leader"):
        raise HardwareError(f"{p}: role must be follower or leader, got {hw.role!r}")
    if hw.protocol not in ("feetech", "dynamixel"):
        raise HardwareError(f"{p}: protocol must be feetech or dynamixel, got {hw.protocol!r}")
    ids = [m.id for m in motors]
    if len(set(ids)) != len(ids):
        raise HardwareError(f"{p}: duplicate motor ids {ids}")
    return hw
