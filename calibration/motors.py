"""Motor calibration of a servo-bus arm: encoder ticks <-> the robot spec's joint angles.

One YAML file per arm (``robot-rl calibrate`` writes it)::

    format: robot_rl.motor_calibration/1
    robot: so101                 # the robot spec the angles belong to
    hardware: so101_follower     # robot_rl/conf/hardware/<name>.yaml
    role: follower
    protocol: feetech
    arm_id: my_follower          # the name given to this unit (id=...)
    resolution: 4096             # ticks per turn
    gripper_travel: 1.75         # rad of servo rotation from open (0) to closed (1)
    motors:                      # spec joint order, then the gripper
      shoulder_pan: {id: 1, model: sts3215, direction: -1, homing_offset: 1187,
                     zero_ticks: 2047.21, range_min: 810, range_max: 3286}
      ...

``homing_offset`` is the value in the servo's Homing_Offset register (the calibration
moved the zero pose to mid-range, 2047), ``zero_ticks`` the Present_Position at spec
angle 0 (for the gripper: at closure 0, open), ``range_min/max`` the Present_Position
range the sweep covered (also written to Min/Max_Position_Limit). Then, per motor::

    q       = direction * (ticks - zero_ticks) * 2*pi / 4096            (rad, the spec's zero)
    closure = direction * (ticks - zero_ticks) * 2*pi / 4096 / gripper_travel

the twin's convention, so a calibrated real arm and the twin agree joint for joint.
``ticks - zero_ticks`` is taken modulo a turn into [-2048, 2048): no joint of a spec
turns half a turn away from its zero, and readings that wrapped past 0/4095 still map
to the right angle.

LeRobot JSON (``{"shoulder_pan": {"id", "drive_mode", "homing_offset", "range_min",
"range_max"}, ...}``) both ways: :meth:`MotorCalibration.to_lerobot`,
:meth:`MotorCalibration.from_lerobot`. LeRobot's calibration holds no spec zero (its
degrees are ``(ticks - mid_range) * 360 / 4095``) and no spec direction; see
``from_lerobot`` for what the import assumes.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

FORMAT = "robot_rl.motor_calibration/1"
RESOLUTION = 4096
HALF_TURN = 2047  # the reading the zero pose is homed to (LeRobot: int(4095 / 2))
FEETECH_HOMING_MAX = 2047  # Homing_Offset is sign-magnitude with the sign in bit 11
GRIPPER = "gripper"


class MotorCalibrationError(ValueError):
    """A motor calibration file is missing, malformed, or belongs to other hardware."""


# -- the math ------------------------------------------------------------------------------

def wrap_ticks(d: float | np.ndarray, resolution: int = RESOLUTION) -> float | np.ndarray:
    """A tick difference modulo one turn, into [-resolution/2, resolution/2)."""
    half = resolution / 2
    return (np.asarray(d, dtype=float) + half) % resolution - half if isinstance(d, np.ndarray) \
        else (float(d) + half) % resolution - half


def circular_mean(samples: Sequence[float], resolution: int = RESOLUTION) -> float:
    """Mean of position readings that may straddle the 4095 -> 0 wrap, in [0, resolution)."""
    if not len(samples):
        raise ValueError("no samples to average")
    ref = float(samples[0])
    return (ref + float(np.mean([wrap_ticks(s - ref, resolution) for s in samples]))) % resolution


def homing_shift(protocol: str, homing_offset: int) -> int:
    """How much writing ``homing_offset`` (from 0) adds to Present_Position.

    Feetech: Present = raw - Homing_Offset; Dynamixel: Present = raw + Homing_Offset."""
    if protocol == "feetech":
        return -int(homing_offset)
    if protocol == "dynamixel":
        return int(homing_offset)
    raise ValueError(f"unknown protocol {protocol!r} (feetech | dynamixel)")


def half_turn_homing(protocol: str, raw: float, resolution: int = RESOLUTION) -> int:
    """The Homing_Offset that makes a raw reading (Homing_Offset = 0) read mid-range (2047).

    Feetech: ``raw - 2047`` taken modulo a turn into the register's ±2047; the one
    residue the register cannot hold (raw = 4095) becomes 2047, which reads 2048.
    Dynamixel (4-byte signed register): ``2047 - raw``."""
    r = int(round(raw)) % resolution
    if protocol == "feetech":
        h = (r - HALF_TURN + resolution // 2) % resolution - resolution // 2  # [-2048, 2047]
        return max(-FEETECH_HOMING_MAX, min(FEETECH_HOMING_MAX, h)) if h != -resolution // 2 else FEETECH_HOMING_MAX
    if protocol == "dynamixel":
        return HALF_TURN - r
    raise ValueError(f"unknown protocol {protocol!r} (feetech | dynamixel)")


def homed_reading(protocol: str, raw: float, homing_offset: int, resolution: int = RESOLUTION) -> float:
    """What a raw (Homing_Offset = 0) reading reads once ``homing_offset`` is written,
    in [0, resolution) (fractional averages stay fractional)."""
    return (float(raw) + homing_shift(protocol, homing_offset)) % resolution


# -- the file ------------------------------------------------------------------------------

@dataclass(frozen=True)
class JointCalibration:
    """One motor: which servo, how its ticks map to the spec joint (or gripper closure)."""
    name: str
    id: int
    model: str
    direction: int  # +1: ticks grow with the spec angle; -1: they shrink
    homing_offset: int  # the servo's Homing_Offset register
    zero_ticks: float  # Present_Position at spec angle 0 (gripper: closure 0, open)
    range_min: int  # Present_Position range recorded by the sweep
    range_max: int

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise MotorCalibrationError(f"motor {self.name!r}: direction must be 1 or -1, got {self.direction!r}")
        if not self.range_min < self.range_max:
            raise MotorCalibrationError(f"motor {self.name!r}: range_min {self.range_min} must be < range_max "
                                        f"{self.range_max} (did the joint move during the sweep?)")


@dataclass(frozen=True)
class MotorCalibration:
    robot: str
    hardware: str
    role: str
    protocol: str
    joints: tuple[JointCalibration, ...]  # the spec's joint order
    gripper: JointCalibration | None = None
    gripper_travel: float = 1.75
    arm_id: str = ""
    resolution: int = RESOLUTION
    created: str = ""
    source: str = "robot-rl calibrate"  # or "lerobot import (...)"
    path: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        ids = [m.id for m in self.motors]
        if len(set(ids)) != len(ids):
            raise MotorCalibrationError(f"motor calibration {self.arm_id or self.hardware!r}: duplicate motor ids {ids}")
        if not self.gripper_travel > 0:
            raise MotorCalibrationError(f"gripper_travel must be > 0, got {self.gripper_travel}")

    # -- lookups ---------------------------------------------------------------------------
    @property
    def motors(self) -> tuple[JointCalibration, ...]:
        return self.joints + ((self.gripper,) if self.gripper else ())

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def ids(self) -> list[int]:
        """Servo ids: the spec's joints in order, then the gripper (the order to sync_read)."""
        return [m.id for m in self.motors]

    def motor(self, name: str) -> JointCalibration:
        for m in self.motors:
            if m.name == name:
                return m
        raise MotorCalibrationError(f"motor calibration has no motor {name!r} (motors: {[m.name for m in self.motors]})")

    def ticks_per_unit(self, m: JointCalibration) -> float:
        """Ticks per rad (joints) or per unit closure (gripper)."""
        per_rad = self.resolution / (2 * math.pi)
        return per_rad * self.gripper_travel if self.gripper is not None and m.name == self.gripper.name else per_rad

    # -- the mapping -----------------------------------------------------------------------
    def angle(self, m: JointCalibration, ticks: float) -> float:
        return m.direction * float(wrap_ticks(float(ticks) - m.zero_ticks, self.resolution)) / self.ticks_per_unit(m)

    def ticks(self, m: JointCalibration, value: float, clamp: bool = True) -> int:
        """Present/Goal_Position of angle (closure) ``value``; clamped to the recorded range."""
        t = m.zero_ticks + m.direction * float(value) * self.ticks_per_unit(m)
        if clamp:
            t = min(max(t, m.range_min), m.range_max)
        return int(round(t))

    def ticks_to_q(self, ticks: Mapping[int, float]) -> tuple[np.ndarray, float | None]:
        """Present_Position per servo id -> (spec joint angles in rad, in spec order;
        gripper closure, 0 open .. 1 closed, or None without a gripper)."""
        try:
            q = np.array([self.angle(j, ticks[j.id]) for j in self.joints])
            g = self.angle(self.gripper, ticks[self.gripper.id]) if self.gripper else None
        except KeyError as e:
            raise MotorCalibrationError(f"no reading for servo id {e.args[0]} (calibrated ids: {self.ids})") from None
        return q, g

    def q_to_ticks(self, q: Sequence[float] | np.ndarray, gripper: float | None = None) -> dict[int, int]:
        """Spec joint angles (+ gripper closure) -> Goal_Position per servo id, clamped to
        each motor's recorded range."""
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape[0] != len(self.joints):
            raise MotorCalibrationError(f"expected {len(self.joints)} joint angles ({self.joint_names}), got {q.shape[0]}")
        out = {j.id: self.ticks(j, v) for j, v in zip(self.joints, q)}
        if self.gripper is not None and gripper is not None:
            out[self.gripper.id] = self.ticks(self.gripper, gripper)
        return out

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """The joint-angle range the sweep recorded, per spec joint (rad, lower <= upper)."""
        lo, hi = [], []
        for j in self.joints:
            a, b = self.angle(j, j.range_min), self.angle(j, j.range_max)
            lo.append(min(a, b))
            hi.append(max(a, b))
        return np.array(lo), np.array(hi)

    # -- checks ----------------------------------------------------------------------------
    def check(self, hardware=None, spec=None) -> "MotorCalibration":
        """Raise MotorCalibrationError naming the mismatch if this file does not belong to
        ``hardware`` (a Hardware) / ``spec`` (a RobotSpec). Returns self."""
        where = f"calibration {self.path or self.arm_id or '(unsaved)'}"
        if hardware is not None:
            if self.hardware != hardware.name:
                raise MotorCalibrationError(
                    f"{where} is for hardware {self.hardware!r}, not {hardware.name!r}: use this arm's own file or "
                    f"calibrate it: robot-rl calibrate robot={hardware.robot} hardware={hardware.name} port=PORT id=NAME")
            if self.protocol != hardware.protocol:
                raise MotorCalibrationError(f"{where} was made over {self.protocol}, but {hardware.name} speaks "
                                            f"{hardware.protocol}: recalibrate the arm")
            have = {m.name: (m.id, m.model) for m in self.motors}
            want = {m.name: (m.id, m.model) for m in hardware.motors}
            if have != want:
                diff = sorted(n for n in set(have) | set(want) if have.get(n) != want.get(n))
                raise MotorCalibrationError(
                    f"{where}: motors {', '.join(f'{n} {have.get(n)} vs {want.get(n)}' for n in diff)} "
                    f"((id, model) in the file vs {hardware.name}); recalibrate the arm")
        if spec is not None:
            if self.robot != spec.name:
                raise MotorCalibrationError(f"{where} maps to robot {self.robot!r}, not {spec.name!r}: "
                                            "calibrate the arm for this robot spec")
            if self.joint_names != list(spec.joint_names):
                raise MotorCalibrationError(f"{where}: joints {self.joint_names} do not match robot {spec.name!r}'s "
                                            f"joints {list(spec.joint_names)} (in order); recalibrate the arm")
            if (self.gripper is None) != (spec.gripper is None):
                raise MotorCalibrationError(f"{where}: gripper {'missing' if self.gripper is None else 'present'} but "
                                            f"robot {spec.name!r} {'has' if spec.gripper else 'has no'} gripper")
        return self

    def check_servos(self, bus) -> None:
        """Compare the servos' Homing_Offset registers with the file (a ServoBus, open):
        an arm recalibrated or reset since this file was written reads other angles."""
        bad = []
        for m in self.motors:
            h = bus.read(m.id, "Homing_Offset")
            if int(h) != m.homing_offset:
                bad.append(f"{m.name} (id {m.id}): servo {h}, file {m.homing_offset}")
        if bad:
            raise MotorCalibrationError(
                f"the servos' Homing_Offset does not match calibration {self.path or self.arm_id!r}: {'; '.join(bad)}. "
                f"The arm was recalibrated or reset since: recalibrate (robot-rl calibrate hardware={self.hardware} ...) "
                "or use the file written by the last calibration")

    # -- YAML ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        motors = {}
        for m in self.motors:
            d = asdict(m)
            d.pop("name")
            d["zero_ticks"] = float(m.zero_ticks)
            motors[m.name] = d
        return {"format": FORMAT, "robot": self.robot, "hardware": self.hardware, "role": self.role,
                "protocol": self.protocol, "arm_id": self.arm_id, "resolution": self.resolution,
                "gripper_travel": self.gripper_travel, "created": self.created, "source": self.source,
                "motors": motors}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "") -> "MotorCalibration":
        where = path or "motor calibration"
        if not isinstance(d, Mapping):
            raise MotorCalibrationError(f"{where}: not a motor calibration (expected a mapping)")
        if d.get("format") != FORMAT:
            if d and all(isinstance(v, Mapping) and "drive_mode" in v for v in d.values()):
                raise MotorCalibrationError(
                    f"{where} is a LeRobot calibration: convert it first: robot-rl calibrate robot=ROBOT "
                    f"hardware=HARDWARE id=NAME import_lerobot={path or 'FILE.json'}")
            raise MotorCalibrationError(f"{where}: not a robot_rl motor calibration (format {d.get('format')!r}, "
                                        f"expected {FORMAT!r})")
        try:
            motors = [JointCalibration(name=str(n), id=int(m["id"]), model=str(m["model"]),
                                       direction=int(m["direction"]), homing_offset=int(m["homing_offset"]),
                                       zero_ticks=float(m["zero_ticks"]), range_min=int(m["range_min"]),
                                       range_max=int(m["range_max"]))
                      for n, m in dict(d["motors"]).items()]
            return cls(robot=str(d["robot"]), hardware=str(d["hardware"]), role=str(d.get("role", "follower")),
                       protocol=str(d["protocol"]), joints=tuple(m for m in motors if m.name != GRIPPER),
                       gripper=next((m for m in motors if m.name == GRIPPER), None),
                       gripper_travel=float(d.get("gripper_travel", 1.75)), arm_id=str(d.get("arm_id", "")),
                       resolution=int(d.get("resolution", RESOLUTION)), created=str(d.get("created", "")),
                       source=str(d.get("source", "")), path=path)
        except MotorCalibrationError as e:
            raise MotorCalibrationError(f"{where}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MotorCalibrationError(f"{where}: malformed motor calibration ({type(e).__name__}: {e}); "
                                        "recalibrate the arm or fix the file") from None

    def save(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text("# robot_rl motor calibration: ticks <-> the robot spec's joint angles (robot-rl calibrate)\n"
                       + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | Path, hardware=None, spec=None) -> "MotorCalibration":
        """Read a calibration file; with ``hardware`` / ``spec`` also :meth:`check` it."""
        p = Path(path).expanduser()
        if not p.is_file():
            hw = getattr(hardware, "name", None) or "HARDWARE"
            robot = getattr(spec, "name", None) or getattr(hardware, "robot", None) or "ROBOT"
            raise MotorCalibrationError(
                f"no motor calibration at {p}: this arm is not calibrated (or the path is wrong); run "
                f"robot-rl calibrate robot={robot} hardware={hw} port=PORT id={p.stem} [out={p}]")
        try:
            text = p.read_text()
            d = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MotorCalibrationError(f"{p}: not a readable calibration file ({type(e).__name__}: "
                                        f"{str(e).splitlines()[0]})") from None
        cal = cls.from_dict(d if d is not None else {}, path=str(p))
        return cal.check(hardware, spec)

    # -- LeRobot ---------------------------------------------------------------------------
    def to_lerobot(self) -> dict[str, dict[str, int]]:
        """LeRobot's calibration JSON for this arm (``lerobot/calibration/.../<id>.json``).

        ``homing_offset`` / ``range_min`` / ``range_max`` are the register values this
        calibration wrote, so LeRobot writing them back leaves the arm as it is.
        ``drive_mode`` is 0: LeRobot's Feetech bus ignores it, and on Dynamixel it is the
        servo's Drive_Mode register (1 would reverse the readings these offsets were
        measured with). Our directions (the spec's sign convention) have no place in
        LeRobot's file; LeRobot's degrees are (ticks - mid_range) * 360 / 4095."""
        return {m.name: {"id": m.id, "drive_mode": 0, "homing_offset": int(m.homing_offset),
                         "range_min": int(m.range_min), "range_max": int(m.range_max)} for m in self.motors}

    def save_lerobot(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_lerobot(), indent=4) + "\n")
        return p

    @classmethod
    def from_lerobot(cls, data: Mapping[str, Any] | str | Path, hardware, spec=None, *, arm_id: str = "",
                     zero_ticks: Mapping[str, float] | None = None,
                     directions: Mapping[str, int] | None = None) -> "MotorCalibration":
        """Our calibration from a LeRobot calibration JSON (a dict or a path).

        LeRobot's file says where each servo's range is, not where the spec's zero lies
        nor which way the spec's angle grows. Unless given, the import assumes:

        - ``zero_ticks``: the middle of the range (LeRobot's 0 degrees) is the spec's
          zero for each joint; for the gripper, the open end (closure 0).
        - ``directions``: for the joints +1, or -1 where LeRobot's ``drive_mode`` is 1. For
          the gripper, LeRobot's convention: its ``gripper.pos`` (``(ticks - range_min) /
          (range_max - range_min) * 100``, inverted by ``drive_mode`` 1) reads 0 closed and
          100 open, so with ``drive_mode`` 0 the ticks shrink as it closes: direction -1,
          open at ``range_max`` (``drive_mode`` 1: +1, open at ``range_min``).

        The spec's zero of an SO-101 is not LeRobot's mid-range pose in general: the
        angles are then off by a constant per joint. Give the Present_Position readings at
        the spec's zero pose (``zero_ticks``) and the directions, or import with a port
        (``robot-rl calibrate ... import_lerobot=FILE port=PORT``), which measures both
        with the zero and check poses and keeps LeRobot's offsets and ranges."""
        where = "LeRobot calibration"
        if isinstance(data, (str, Path)):
            where = str(data)
            try:
                data = json.loads(Path(data).expanduser().read_text())
            except FileNotFoundError:
                raise MotorCalibrationError(f"no LeRobot calibration at {data}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise MotorCalibrationError(f"{where}: not JSON ({e})") from None
        if not isinstance(data, Mapping) or not data:
            raise MotorCalibrationError(f"{where}: expected {{motor: {{id, drive_mode, homing_offset, range_min, "
                                        "range_max}}}}")
        names = {m.name for m in hardware.motors}
        if set(data) != names:
            raise MotorCalibrationError(f"{where}: motors {sorted(data)} do not match {hardware.name}'s motors "
                                        f"{sorted(names)}; pick the hardware= this file was made for")
        zero_ticks = dict(zero_ticks or {})
        directions = dict(directions or {})
        order = [m.name for m in hardware.motors]
        if spec is not None:
            order = list(spec.joint_names) + ([spec.gripper.name] if spec.gripper else [])
        motors = []
        for name in order:
            hm = hardware.motor(name)
            e = data[name]
            try:
                mid, lo, hi = int(e["id"]), int(e["range_min"]), int(e["range_max"])
                drive, h = int(e.get("drive_mode", 0)), int(e["homing_offset"])
            except (KeyError, TypeError, ValueError) as err:
                raise MotorCalibrationError(f"{where}: motor {name!r}: malformed entry {e!r} ({err!r})") from None
            if mid != hm.id:
                raise MotorCalibrationError(f"{where}: motor {name!r} has id {mid}, but {hardware.name} gives it id "
                                            f"{hm.id}; run robot-rl setup-motors or pick the right hardware=")
            d = int(directions.get(name, (1 if drive else -1) if name == GRIPPER else (-1 if drive else 1)))
            if name in zero_ticks:
                z = float(zero_ticks[name])
            elif name == GRIPPER:
                z = float(lo if d > 0 else hi)
            else:
                z = (lo + hi) / 2
            motors.append(JointCalibration(name, hm.id, hm.model, d, h, z, lo, hi))
        assumed = [n for n in order if n not in zero_ticks]
        source = "lerobot import" + (f" (spec zero assumed at mid-range for {assumed})" if assumed else "")
        return cls(robot=hardware.robot, hardware=hardware.name, role=hardware.role, protocol=hardware.protocol,
                   joints=tuple(m for m in motors if m.name != GRIPPER),
                   gripper=next((m for m in motors if m.name == GRIPPER), None),
                   gripper_travel=hardware.gripper_travel, arm_id=arm_id, created=_now(), source=source)

    def with_path(self, path: str | Path) -> "MotorCalibration":
        return replace(self, path=str(path))


# -- where files live ----------------------------------------------------------------------

def calibration_dir() -> Path:
    """``$ROBOT_RL_CALIBRATION_DIR`` or ``~/.cache/robot_rl/calibration``."""
    env = os.environ.get("ROBOT_RL_CALIBRATION_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robot_rl" / "calibration"


def default_path(hardware: str, arm_id: str) -> Path:
    """``<calibration_dir>/<hardware>/<arm_id>.yaml``."""
    if not arm_id or "/" in arm_id or arm_id.startswith("."):
        raise MotorCalibrationError(f"arm id must be a plain name (e.g. my_follower), got {arm_id!r}")
    return calibration_dir() / hardware / f"{arm_id}.yaml"


def load_calibration(calibration: str | Path | None, hardware, spec=None, arm_id: str | None = None
                     ) -> MotorCalibration:
    """A driver's way in: an explicit file, else the default file of ``arm_id``."""
    if calibration:
        return MotorCalibration.load(calibration, hardware, spec)
    if not arm_id:
        raise MotorCalibrationError(f"no calibration given for {hardware.name}: pass calibration=FILE or id=NAME "
                                    f"(files live in {calibration_dir()}/{hardware.name}/)")
    return MotorCalibration.load(default_path(hardware.name, arm_id), hardware, spec)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def build(hardware, spec, *, arm_id: str, homing: Mapping[str, int], zero_ticks: Mapping[str, float],
          directions: Mapping[str, int], ranges: Mapping[str, tuple[int, int]], source: str = "robot-rl calibrate"
          ) -> MotorCalibration:
    """Assemble a calibration from per-motor results (names -> values), in spec order."""
    hardware.check_spec(spec)
    order = list(spec.joint_names) + ([spec.gripper.name] if spec.gripper else [])
    motors = [JointCalibration(n, hardware.motor(n).id, hardware.motor(n).model, int(directions[n]), int(homing[n]),
                               float(zero_ticks[n]), int(ranges[n][0]), int(ranges[n][1])) for n in order]
    return MotorCalibration(robot=spec.name, hardware=hardware.name, role=hardware.role, protocol=hardware.protocol,
                            joints=tuple(m for m in motors if m.name != GRIPPER),
                            gripper=next((m for m in motors if m.name == GRIPPER), None),
                            gripper_travel=hardware.gripper_travel, arm_id=arm_id, created=_now(), source=source)
