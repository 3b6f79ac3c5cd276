"""Units of a LeRobot export: the store's joint angles (rad) and gripper closure (0 open ..
1 closed) <-> the numbers a LeRobot dataset holds.

Every mapping is linear per element, ``lerobot = float32(float64(x) * scale + offset)``:

- ``lerobot`` units, calibrated (``calibration=`` our motor calibration YAML, or a LeRobot
  calibration JSON + hardware): spec angle -> Present_Position ticks through the
  calibration (``zero_ticks + direction * q * 4096 / 2pi``, no rounding, no clamping) ->
  LeRobot's normalisation (lerobot ``MotorsBus._normalize``): joints in DEGREES mode
  ``(ticks - (range_min + range_max) / 2) * 360 / 4095``; the gripper in RANGE_0_100 mode
  ``(ticks - range_min) / (range_max - range_min) * 100`` (``100 - that`` when drive_mode
  is 1, as Feetech buses apply it).
- ``lerobot`` units, default (SO-101 without a calibration): degrees = the spec angle in
  degrees (``q * 180 / pi``: LeRobot's 0 deg is the calibrated mid-range, ours the spec
  zero; for an arm calibrated with ``robot-rl calibrate`` they coincide up to 4096/4095);
  ``gripper.pos = 100 * (1 - closure)``: LeRobot's SO-101 gripper reads 0 closed .. 100
  open (its gripper processors move towards 0 to close), our closure is 0 open .. 1 closed.
- ``spec`` units (robots LeRobot has no driver for, or ``units=spec``): the spec's radians
  and closure as they are (scale 1, offset 0).

float32 -> float32 through a scale is neither one-to-one nor onto: 57.3 x a float32 lands
on a coarser grid above 64 deg (about 9% of random angles share their degree value with a
neighbour; 31% of gripper closures), and about 7% of float32 degrees (32% of percentages)
are no float32's image. So no float32 inverse is exact both ways, and bitwise round trips
carry the other side's numbers:

- store -> LeRobot -> store: the export also writes the store's own values
  (``robot_rl.joint_pos`` / ``robot_rl.gripper`` / ``robot_rl.action`` columns), which the
  import takes wherever they still map onto the LeRobot values;
- LeRobot -> store -> LeRobot: importing a dataset robot_rl did not write keeps the LeRobot
  numbers in the store (``lerobot_state`` / ``lerobot_action``), which the export takes
  wherever the store's value is still the one the import derived from them.

:meth:`Linear.inverse` itself returns, among the float32 neighbours of the exact inverse,
one whose forward image is the LeRobot value when there is one (else the nearest): the
store's radians are always within a float32 step of the LeRobot numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from robot_rl.spec import RobotSpec

# robot spec name -> LeRobot's motor names (the spec's joints, then the gripper), read as "<motor>.pos"
LEROBOT_MOTORS: dict[str, tuple[str, ...]] = {
    "so101": ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"),
}
UNITS = ("auto", "lerobot", "spec")
NEIGHBOURS = 3  # float32 steps searched on each side of the float64 inverse


class UnitsError(ValueError):
    """The unit mapping cannot be built (unknown robot, mismatching calibration...)."""


@dataclass(frozen=True)
class Linear:
    """``lerobot = float32(float64(x) * scale + offset)`` and its float32-exact inverse."""

    scale: float
    offset: float

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.identity:
            return x.copy()
        return (x.astype(np.float64) * self.scale + self.offset).astype(np.float32)

    def inverse(self, v: np.ndarray) -> np.ndarray:
        """A float32 ``x`` with ``forward(x) == v`` where one exists within NEIGHBOURS steps of
        the exact inverse, else the candidate whose image is nearest to ``v``."""
        v = np.asarray(v, np.float32)
        if self.identity:
            return v.copy()
        x0 = ((v.astype(np.float64) - self.offset) / self.scale).astype(np.float32)
        best = x0.copy()
        f0 = self.forward(x0)
        found = f0 == v
        err = np.abs(f0.astype(np.float64) - v)
        lo = hi = x0
        for _ in range(NEIGHBOURS):
            if found.all():
                break
            lo, hi = np.nextafter(lo, np.float32(-np.inf)), np.nextafter(hi, np.float32(np.inf))
            for c in (lo, hi):
                fc = self.forward(c)
                hit = fc == v
                e = np.abs(fc.astype(np.float64) - v)
                take = ~found & (hit | (e < err))
                best[take] = c[take]
                err[take] = e[take]
                found |= hit
        return best


@dataclass(frozen=True)
class UnitMap:
    """How the spec's joints (+ gripper) map onto the elements of a LeRobot vector."""

    mode: str  # "lerobot" | "spec"
    source: str  # "default", "calibration <path>", "lerobot calibration <path>", "spec"
    names: tuple[str, ...]  # LeRobot element names, e.g. "shoulder_pan.pos"
    units: tuple[str, ...]  # per element: "deg", "percent_open", "rad", "closure"
    maps: tuple[Linear, ...]

    @property
    def identity(self) -> bool:
        return all(m.identity for m in self.maps)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return np.stack([m.forward(x[..., i]) for i, m in enumerate(self.maps)], -1).astype(np.float32)

    def inverse(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float32)
        return np.stack([m.inverse(v[..., i]) for i, m in enumerate(self.maps)], -1).astype(np.float32)

    def describe(self) -> str:
        if self.mode == "spec":
            return "spec units (rad, gripper closure 0 open..1 closed)"
        grip = {"percent_open": ", gripper 0 closed..100 open", "percent_closed": ", gripper 0 open..100 closed"}
        g = next((grip[u] for u in self.units if u in grip), "")
        return f"LeRobot units (deg about mid-range{g}) from {self.source}"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "source": self.source, "names": list(self.names), "units": list(self.units),
                "scale": [m.scale for m in self.maps], "offset": [m.offset for m in self.maps]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "UnitMap":
        try:
            maps = tuple(Linear(float(s), float(o)) for s, o in zip(d["scale"], d["offset"], strict=True))
            return cls(str(d["mode"]), str(d["source"]), tuple(d["names"]), tuple(d["units"]), maps)
        except (KeyError, TypeError, ValueError) as e:
            raise UnitsError(f"malformed unit mapping {dict(d)!r}: {e}") from None


def motor_names(spec: RobotSpec) -> list[str]:
    """The spec's joints, then its gripper (the order of our state and joint actions)."""
    return list(spec.joint_names) + ([spec.gripper.name] if spec.gripper else [])


def _spec_map(spec: RobotSpec) -> UnitMap:
    names = motor_names(spec)
    units = ["rad"] * spec.dof + (["closure"] if spec.gripper else [])
    return UnitMap("spec", "spec", tuple(f"{n}.pos" for n in names), tuple(units),
                   tuple(Linear(1.0, 0.0) for _ in names))


def _default_lerobot_map(spec: RobotSpec) -> UnitMap:
    names = motor_names(spec)
    maps = [Linear(180.0 / math.pi, 0.0)] * spec.dof + ([Linear(-100.0, 100.0)] if spec.gripper else [])
    units = ["deg"] * spec.dof + (["percent_open"] if spec.gripper else [])
    return UnitMap("lerobot", "default", tuple(f"{n}.pos" for n in names), tuple(units), tuple(maps))


def calibrated_map(cal, drive_modes: Mapping[str, int] | None = None, source: str = "") -> UnitMap:
    """LeRobot units through a MotorCalibration (``calibration/motors.py``): see the module text."""
    drive_modes = dict(drive_modes or {})
    res = int(cal.resolution)
    names, units, maps = [], [], []
    for m in cal.joints:
        tpu = cal.ticks_per_unit(m)
        mid = (m.range_min + m.range_max) / 2
        k = 360.0 / (res - 1)
        maps.append(Linear(m.direction * tpu * k, (m.zero_ticks - mid) * k))
        names.append(f"{m.name}.pos")
        units.append("deg")
    if cal.gripper is not None:
        g = cal.gripper
        tpu = cal.ticks_per_unit(g)
        span = float(g.range_max - g.range_min)
        scale, offset = g.direction * tpu * 100.0 / span, (g.zero_ticks - g.range_min) * 100.0 / span
        if drive_modes.get(g.name, 0):
            scale, offset = -scale, 100.0 - offset
        maps.append(Linear(scale, offset))
        names.append(f"{g.name}.pos")
        units.append("percent_open" if scale < 0 else "percent_closed")
    return UnitMap("lerobot", source or f"calibration {cal.path or cal.arm_id}", tuple(names), tuple(units),
                   tuple(maps))


def load_calibration_map(calibration: Any, spec: RobotSpec, hardware: str | None = None) -> UnitMap:
    """A unit map from our motor calibration (YAML path or MotorCalibration) or a LeRobot
    calibration JSON (with ``hardware``, default ``<robot>_follower``)."""
    from robot_rl.calibration.motors import MotorCalibration, MotorCalibrationError

    if isinstance(calibration, MotorCalibration):
        try:
            return calibrated_map(calibration.check(spec=spec))
        except MotorCalibrationError as e:
            raise UnitsError(str(e)) from None
    p = Path(str(calibration)).expanduser()
    try:
        if p.suffix == ".json":
            import json
            from robot_rl.drivers.hardware import HardwareError, load_hardware
            try:
                hw = load_hardware(hardware or f"{spec.name}_follower")
            except HardwareError as e:
                raise UnitsError(f"a LeRobot calibration JSON needs the hardware it was made for (hardware=NAME): "
                                 f"{e}") from None
            try:
                data = json.loads(p.read_text())
            except FileNotFoundError:
                raise UnitsError(f"no calibration file at {p}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UnitsError(f"{p}: not JSON ({e})") from None
            drive = {n: int(e.get("drive_mode", 0)) for n, e in data.items() if isinstance(e, Mapping)}
            # from_lerobot takes LeRobot's gripper convention (0 closed .. 100 open) for the direction
            cal = MotorCalibration.from_lerobot(data, hw, spec)
            return calibrated_map(cal, drive, source=f"lerobot calibration {p} (spec zero at mid-range)")
        if hardware:
            from robot_rl.drivers.hardware import load_hardware
            cal = MotorCalibration.load(p, hardware=load_hardware(hardware), spec=spec)
        else:
            cal = MotorCalibration.load(p, spec=spec)
        return calibrated_map(cal, source=f"calibration {p}")
    except MotorCalibrationError as e:
        raise UnitsError(str(e)) from None


def unit_map(spec: RobotSpec, units: str = "auto", calibration: Any = None,
             hardware: str | None = None) -> UnitMap:
    """The mapping for ``spec``: ``auto`` = LeRobot units for robots LeRobot drives (SO-101)
    or when a calibration is given, else the spec's units."""
    if units not in UNITS:
        raise UnitsError(f"units must be one of {list(UNITS)}, got {units!r}")
    if calibration is not None and units == "spec":
        raise UnitsError("calibration= converts to LeRobot units; drop it or use units=lerobot")
    if calibration is not None:
        return load_calibration_map(calibration, spec, hardware)
    known = LEROBOT_MOTORS.get(spec.name) == tuple(motor_names(spec))
    if units == "lerobot" and not known:
        raise UnitsError(f"robot {spec.name!r} has no LeRobot counterpart (known: {sorted(LEROBOT_MOTORS)}); "
                         "use units=spec (radians, gripper closure) or give calibration=FILE")
    return _default_lerobot_map(spec) if (units == "lerobot" or (units == "auto" and known)) else _spec_map(spec)


def check_names(umap: UnitMap, names: Sequence[str]) -> None:
    if list(umap.names) != list(names):
        raise UnitsError(f"unit mapping names {list(umap.names)} do not match {list(names)}")
