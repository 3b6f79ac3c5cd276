"""The virtual SO-101: a follower and a leader arm on servo-bus emulators, the follower's
physics the MuJoCo twin of a task scene in real time, two cameras of the live scene and a
scripted person, all on this machine.

    unit = load_unit("so101_default")            # or random_unit(seed), or a YAML path
    with VirtualSO101(unit) as rig:
        info = rig.start()   # {"follower_port": "/dev/pts/7", "leader_port": ..., "cameras": {...}, "person": url}

The code under test (drivers, calibration, teleop) meets it only through the two ports,
the camera URLs and the person's HTTP endpoint (``robot_rl.drivers.virtual.person``), as it
would a robot on the desk; the unit's offsets, directions and physics are never told.

A unit file (``robot_rl/conf/units/<name>.yaml``) describes one physical unit: per motor its
factory encoder offset and direction, the encoder's noise and backlash, how the servos are
configured (baud rate, return delay, or ``factory_new``), the twin's physical parameters,
bus faults and the cameras. Raw encoder ticks of a motor:

    raw = (offset + direction * angle * 4096 / (2*pi)) mod 4096     (+ backlash, noise, rounding)

``angle`` is the spec joint angle (rad); for the gripper ``closure * gripper_travel``.
"""
from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robot_rl.drivers.hardware import Hardware, load_hardware
from robot_rl.spec import CONF_DIR

log = logging.getLogger(__name__)

UNITS_DIR = CONF_DIR / "units"
TICKS = 4096
TICKS_PER_RAD = TICKS / (2 * math.pi)
ARMS = ("follower", "leader")
FAULT_KEYS = ("drop_reply", "corrupt_reply", "garbage", "error_bits", "unplug_at_s")


class UnitError(ValueError):
    """A unit file is malformed or does not match its hardware descriptions."""


# -- unit description ---------------------------------------------------------------------
@dataclass
class MotorUnit:
    offset: int  # raw encoder ticks at angle 0 (0..4095)
    direction: int  # +1 / -1: sign of raw ticks per positive spec angle


@dataclass
class ArmUnit:
    hardware: str  # hardware description name (robot_rl/conf/hardware) or YAML path
    motors: dict[str, MotorUnit]
    baudrate: int | None = 1_000_000  # what the servos are set to; None = the model's factory baud
    factory_new: bool = False  # every servo ID 1 at its factory baud, off the bus until plugged
    link: str | None = None  # optional symlink path for the port
    encoder_noise_ticks: float = 0.3  # gaussian std of Present_Position
    backlash_ticks: float = 1.0  # hysteresis width of the reading
    return_delay_us: int | None = 0  # None = the model's factory Return_Delay_Time


@dataclass
class TwinUnit:
    """The follower's physics relative to the nominal twin (all nominal by default): what
    system identification has to find out through the port."""
    friction_scale: float = 1.0  # geom sliding friction
    damping_scale: float = 1.0  # joint damping
    actuator_gain_scale: float = 1.0  # servo kp (and kv with it: the twin's position actuators)
    object_mass_scale: float = 1.0
    latency_ms: float = 0.0  # from a bus write to the actuator
    armature_scale: float = 1.0  # arm joint armature (reflected rotor inertia)
    frictionloss: float = 0.0  # N m of dry friction on every arm joint (nominal: none)
    forcerange_scale: float = 1.0  # servo torque limit


@dataclass
class CameraUnit:
    name: str
    width: int = 640
    height: int = 480
    fps: float = 30.0
    port: int = 0  # 0 = a free port
    quality: int = 90


@dataclass
class Unit:
    follower: ArmUnit
    leader: ArmUnit
    robot: str = "so101"
    task: str = "pick_cube"
    seed: int = 0  # scene, encoder noise and fault randomness
    twin: TwinUnit = field(default_factory=TwinUnit)
    faults: dict[str, dict[str, Any]] = field(default_factory=lambda: {a: {} for a in ARMS})
    cameras: list[CameraUnit] = field(default_factory=lambda: [CameraUnit("front"), CameraUnit("wrist")])
    path: str = ""

    def arm(self, name: str) -> ArmUnit:
        if name not in ARMS:
            raise UnitError(f"arm must be 'follower' or 'leader', got {name!r}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"robot": self.robot, "task": self.task, "seed": self.seed}
        for a in ARMS:
            au = asdict(self.arm(a))
            au["motors"] = {n: {"offset": int(m.offset), "direction": int(m.direction)}
                            for n, m in self.arm(a).motors.items()}
            d[a] = au
        d["twin"] = asdict(self.twin)
        d["faults"] = {a: dict(self.faults.get(a, {})) for a in ARMS}
        d["cameras"] = [asdict(c) for c in self.cameras]
        return d

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)
        p.write_text("# virtual SO-101 unit (robot_rl.drivers.virtual.so101): what the code under test "
                     "must find out\n" + text)
        self.path = str(p)
        return p

    def with_cameras(self, width: int, height: int, fps: float) -> "Unit":
        """A copy whose cameras all render at `width` x `height` @ `fps` (tests, small machines)."""
        import copy
        u = copy.deepcopy(self)
        for c in u.cameras:
            c.width, c.height, c.fps = int(width), int(height), float(fps)
        return u


def _build(cls, d: Any, where: str, **fixed):
    if not isinstance(d, dict):
        raise UnitError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(cls)} - set(fixed)
    unknown = set(d) - known
    if unknown:
        raise UnitError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {sorted(known)}")
    try:
        return cls(**d, **fixed)
    except TypeError as e:
        raise UnitError(f"{where}: {e}") from None


def _arm_from_dict(d: Any, where: str) -> ArmUnit:
    if not isinstance(d, dict) or "motors" not in d or "hardware" not in d:
        raise UnitError(f"{where}: needs 'hardware' and 'motors'")
    motors = {}
    for name, m in (d["motors"] or {}).items():
        mu = _build(MotorUnit, m, f"{where}.motors.{name}")
        try:
            mu.offset, mu.direction = int(mu.offset), int(mu.direction)
        except (TypeError, ValueError):
            raise UnitError(f"{where}.motors.{name}: offset and direction must be integers") from None
        if not 0 <= mu.offset < TICKS:
            raise UnitError(f"{where}.motors.{name}: offset {mu.offset} outside 0..{TICKS - 1}")
        if mu.direction not in (1, -1):
            raise UnitError(f"{where}.motors.{name}: direction must be 1 or -1, got {mu.direction}")
        motors[str(name)] = mu
    rest = {k: v for k, v in d.items() if k != "motors"}
    arm = _build(ArmUnit, rest, where, motors=motors)
    arm.hardware = str(arm.hardware)
    for k in ("encoder_noise_ticks", "backlash_ticks"):
        v = float(getattr(arm, k))
        if not v >= 0:
            raise UnitError(f"{where}.{k} must be >= 0, got {v}")
        setattr(arm, k, v)
    if arm.baudrate is not None:
        arm.baudrate = int(arm.baudrate)
    if arm.return_delay_us is not None:
        arm.return_delay_us = int(arm.return_delay_us)
        if not 0 <= arm.return_delay_us <= 508:
            raise UnitError(f"{where}.return_delay_us must be in 0..508 (2 us per register unit)")
    arm.factory_new = bool(arm.factory_new)
    return arm


def unit_from_dict(d: dict[str, Any], where: str = "unit") -> Unit:
    if not isinstance(d, dict):
        raise UnitError(f"{where}: expected a mapping")
    d = dict(d)
    for a in ARMS:
        if a not in d:
            raise UnitError(f"{where}: needs a '{a}' section")
    follower = _arm_from_dict(d.pop("follower"), f"{where}: follower")
    leader = _arm_from_dict(d.pop("leader"), f"{where}: leader")
    twin = _build(TwinUnit, d.pop("twin", None) or {}, f"{where}: twin")
    for f in fields(TwinUnit):
        try:
            setattr(twin, f.name, float(getattr(twin, f.name)))
        except (TypeError, ValueError):
            raise UnitError(f"{where}: twin.{f.name} must be a number, got {getattr(twin, f.name)!r}") from None
    if not all(np.isfinite(float(getattr(twin, f.name))) for f in fields(TwinUnit)):
        raise UnitError(f"{where}: twin values must be finite numbers, got {twin}")
    if twin.latency_ms < 0 or twin.frictionloss < 0 or min(
            twin.friction_scale, twin.damping_scale, twin.actuator_gain_scale, twin.object_mass_scale,
            twin.armature_scale, twin.forcerange_scale) <= 0:
        raise UnitError(f"{where}: twin scales must be > 0, latency_ms and frictionloss >= 0, got {twin}")
    faults_in = d.pop("faults", None) or {}
    if not isinstance(faults_in, dict) or set(faults_in) - set(ARMS):
        raise UnitError(f"{where}: faults must map 'follower' / 'leader' to fault settings")
    faults = {}
    for a in ARMS:
        fd = dict(faults_in.get(a) or {})
        bad = set(fd) - set(FAULT_KEYS)
        if bad:
            raise UnitError(f"{where}: faults.{a}: unknown keys {sorted(bad)}; valid keys: {list(FAULT_KEYS)}")
        faults[a] = fd
    cams_in = d.pop("cameras", None)
    cams = [CameraUnit("front"), CameraUnit("wrist")] if cams_in is None else \
        [_build(CameraUnit, c, f"{where}: cameras[{i}]") for i, c in enumerate(cams_in)]
    for c in cams:
        c.name, c.width, c.height, c.fps, c.port, c.quality = (str(c.name), int(c.width), int(c.height),
                                                              float(c.fps), int(c.port), int(c.quality))
        if c.width <= 0 or c.height <= 0 or c.fps <= 0 or not 1 <= c.quality <= 100:
            raise UnitError(f"{where}: camera {c.name!r}: width, height, fps must be > 0 and quality 1..100")
    if len({c.name for c in cams}) != len(cams):
        raise UnitError(f"{where}: duplicate camera names {[c.name for c in cams]}")
    unit = _build(Unit, d, where, follower=follower, leader=leader, twin=twin, faults=faults, cameras=cams)
    unit.seed = int(unit.seed)
    check_unit(unit)
    return unit


def check_unit(unit: Unit) -> tuple[Hardware, Hardware]:
    """The unit's arms against their hardware descriptions; returns (follower, leader) hardware."""
    from robot_rl.drivers.hardware import HardwareError
    out = []
    for a in ARMS:
        au = unit.arm(a)
        try:
            hw = load_hardware(au.hardware)
        except HardwareError as e:
            raise UnitError(f"{unit.path or 'unit'}: {a}: {e}") from None
        if hw.robot != unit.robot:
            raise UnitError(f"{unit.path or 'unit'}: {a} hardware {hw.name!r} is for robot {hw.robot!r}, "
                            f"the unit is a {unit.robot!r}")
        want, have = sorted(m.name for m in hw.motors), sorted(au.motors)
        if want != have:
            raise UnitError(f"{unit.path or 'unit'}: {a} motors {have} do not match hardware {hw.name!r}'s {want}")
        out.append(hw)
    return out[0], out[1]


def load_unit(name_or_path: str | Path) -> Unit:
    """A unit by name (``robot_rl/conf/units/<name>.yaml``) or YAML path."""
    from robot_rl.spec import conf_file
    p = conf_file("units", name_or_path, "unit file", UnitError)
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UnitError(f"{p}: not valid YAML ({e})") from None
    unit = unit_from_dict(d, str(p))
    unit.path = str(p)
    return unit


def random_unit(seed: int, leader: str = "so101_leader", *, follower: str = "so101_follower",
                task: str = "pick_cube", factory_new: bool = False,
                cameras: list[CameraUnit] | None = None) -> Unit:
    """A unit with random factory offsets (0..4095) and directions (+-1) per motor, both arms;
    everything else nominal (1 Mbaud, return delay 0, 0.3 tick noise, 1 tick backlash).
    `cameras`: default front + wrist at 640x480 @ 30 (``[]``: none; tests: small ones)."""
    rng = np.random.default_rng(seed)

    def arm(hw_name: str) -> ArmUnit:
        hw = load_hardware(hw_name)
        motors = {m.name: MotorUnit(int(rng.integers(0, TICKS)), int(rng.choice([-1, 1]))) for m in hw.motors}
        return ArmUnit(hardware=hw_name, motors=motors, factory_new=factory_new)

    unit = Unit(follower=arm(follower), leader=arm(leader), task=task, seed=int(seed))
    if cameras is not None:
        unit.cameras = list(cameras)
    return unit


# -- encoder model ------------------------------------------------------------------------
class Encoder:
    """One motor's magnetic encoder: the true angle -> raw ticks (offset, direction,
    backlash hysteresis, gaussian noise, quantisation); and a raw goal back to an angle."""

    def __init__(self, motor: MotorUnit, noise: float, backlash: float, rng: np.random.Generator):
        self.offset, self.direction = int(motor.offset), int(motor.direction)
        self.noise, self.backlash, self.rng = float(noise), float(backlash), rng
        self._b: float | None = None

    def exact(self, angle: float) -> float:
        """Continuous (unwrapped) raw ticks of `angle`: no backlash, noise or rounding."""
        return self.offset + self.direction * angle * TICKS_PER_RAD

    def ticks(self, angle: float) -> int:
        x = self.exact(angle)
        h = self.backlash / 2
        if self._b is None or abs(x - self._b) > TICKS / 2:
            self._b = x
        elif x > self._b + h:
            self._b = x - h
        elif x < self._b - h:
            self._b = x + h
        v = self._b + (self.rng.normal(0.0, self.noise) if self.noise > 0 else 0.0)
        return int(round(v)) % TICKS

    def angle(self, raw: int, lower: float, upper: float) -> float:
        """The angle a raw goal means: of the turns it could be, the one in (or nearest to)
        [lower, upper], clipped to it."""
        a = self.direction * (int(raw) - self.offset) / TICKS_PER_RAD
        a = (a + math.pi) % (2 * math.pi) - math.pi
        best, dist = a, math.inf
        for k in (-2, -1, 0, 1, 2):
            c = a + 2 * math.pi * k
            d = max(lower - c, 0.0, c - upper)
            if d < dist - 1e-12:
                best, dist = c, d
        return float(min(max(best, lower), upper))


def _readings(enc: Encoder, angle: float, velocity: float, tau: float, torque: bool, *,
              max_torque: float, volts: int, temperature: int) -> dict[str, int]:
    vel = int(round(enc.direction * velocity * TICKS_PER_RAD))
    load = int(round(np.clip(1000.0 * enc.direction * tau / max_torque, -1000, 1000))) if torque else 0
    return {"position": enc.ticks(angle), "velocity": vel, "load": load,
            "current": int(abs(load) * 2.0) + (5 if torque else 0), "temperature": temperature,
            "voltage": volts, "moving": int(abs(vel) > 20)}


# -- plants ---------------------------------------------------------------------------------
class _ArmPlant:
    """What both arms share: motors by name, encoders, and the person's grip."""

    def __init__(self, hw: Hardware, arm: ArmUnit, spec, rng: np.random.Generator):
        self.hw, self.arm, self.spec = hw, arm, spec
        self.lock = threading.RLock()
        self.motor_names = [m.name for m in hw.motors]
        self.joint_index = {n: i for i, n in enumerate(spec.joint_names)}
        self.enc = {n: Encoder(arm.motors[n], arm.encoder_noise_ticks, arm.backlash_ticks, rng)
                    for n in self.motor_names}
        self.travel = float(hw.gripper_travel)
        self.torque = {n: False for n in self.motor_names}
        self.held: dict[str, float] = {}  # motor -> angle (joints) / closure (gripper) the person holds

    def limits(self, motor: str) -> tuple[float, float]:
        """Range of the motor's value: spec joint limits (rad), gripper closure 0..1."""
        if motor == "gripper":
            return 0.0, 1.0
        i = self.joint_index[motor]
        return float(self.spec.lower[i]), float(self.spec.upper[i])

    def _servo_motor(self, servo) -> str:
        name = getattr(servo, "name", "")
        if name not in self.enc:
            raise KeyError(f"{self.hw.name}: no motor named {name!r} (servo id {getattr(servo, 'id', '?')})")
        return name

    def _goal_value(self, motor: str, goal_raw: int) -> float:
        enc = self.enc[motor]
        if motor == "gripper":
            return enc.angle(goal_raw, 0.0, self.travel) / self.travel
        return enc.angle(goal_raw, *self.limits(motor))

    def values(self) -> dict[str, float]:
        """True joint angles (rad) and gripper closure, by motor."""
        raise NotImplementedError

    def torque_on(self) -> list[str]:
        with self.lock:
            return [n for n in self.motor_names if self.torque[n]]


class LeaderPlant(_ArmPlant):
    """A leader arm: no physics; the person sets its joint angles (``hold``). A motor with
    torque on and a goal moves there at 3 rad/s unless the person holds it."""

    speed = 3.0  # rad/s (closure/s for the gripper) towards a torque-on goal

    def __init__(self, hw: Hardware, arm: ArmUnit, spec, rng: np.random.Generator,
                 initial: dict[str, float] | None = None, volts: int = 74):
        super().__init__(hw, arm, spec, rng)
        self.volts = volts
        self.q = {n: float(np.clip((initial or {}).get(n, 0.0), *self.limits(n))) for n in self.motor_names}
        self.goal: dict[str, float | None] = {n: None for n in self.motor_names}
        self._vel = {n: 0.0 for n in self.motor_names}
        self._t = {n: time.monotonic() for n in self.motor_names}

    def _advance(self, now: float) -> None:
        for n in self.motor_names:
            g = self.goal[n]
            if self.torque[n] and g is not None and n not in self.held:
                dt = now - self._t[n]
                step = self.speed * dt
                d = g - self.q[n]
                move = float(np.clip(d, -step, step))
                self.q[n] += move
                self._vel[n] = move / dt if dt > 0 else 0.0
                self._t[n] = now
            elif now - self._t[n] > 0.1:
                self._vel[n] = 0.0

    def sense(self, servo) -> dict[str, int]:
        n = self._servo_motor(servo)
        with self.lock:
            self._advance(time.monotonic())
            scale = self.travel if n == "gripper" else 1.0
            return _readings(self.enc[n], self.q[n] * scale, self._vel[n] * scale, 0.0, self.torque[n],
                             max_torque=1.0, volts=self.volts, temperature=28)

    def command(self, servo, torque: bool, goal_raw: int | None) -> None:
        n = self._servo_motor(servo)
        with self.lock:
            now = time.monotonic()
            self._advance(now)
            self.torque[n] = bool(torque)
            self.goal[n] = self._goal_value(n, goal_raw) if goal_raw is not None else None
            self._t[n] = now

    def hold(self, values: dict[str, float]) -> None:
        """The person moves the named motors to `values` (angle rad / gripper closure)."""
        now = time.monotonic()
        with self.lock:
            for n, v in values.items():
                v = float(np.clip(v, *self.limits(n)))
                dt = now - self._t[n]
                self._vel[n] = (v - self.q[n]) / dt if 1e-4 < dt < 0.1 else 0.0
                self.q[n], self._t[n] = v, now
                self.held[n] = v

    def release(self) -> None:
        with self.lock:
            self.held.clear()

    def values(self) -> dict[str, float]:
        with self.lock:
            self._advance(time.monotonic())
            return dict(self.q)


class FollowerPlant(_ArmPlant):
    """The follower arm: the twin of the task scene (``RobotEnv``) stepping in real time.

    A motor's goal (raw ticks) becomes its position actuator's target; torque off zeroes the
    actuator (gain and bias) and takes away the gravity compensation its joint gave, so an
    unheld torque-off arm sags. The person holds joints kinematically (qpos set every step).
    Everything is guarded by ``lock`` (the physics thread, the bus emulator, the person and
    the cameras).
    """

    tick_s = 0.01  # physics thread period (substeps of the twin's timestep per tick)
    max_torque = 3.0  # N m: 100 % load (an STS3215 at 12 V stalls near 3 N m)

    def __init__(self, env, hw: Hardware, arm: ArmUnit, twin_unit: TwinUnit, rng: np.random.Generator,
                 volts: int = 120):
        super().__init__(hw, arm, env.robot_spec, rng)
        import mujoco
        self._mj = mujoco
        self.env, self.twin, self.task = env, env.twin, env.task
        self.model, self.data = self.twin.model, self.twin.data
        self.volts = volts
        self.latency_s = twin_unit.latency_ms / 1000.0
        tw, m = self.twin, self.model
        self.act = {n: int(tw.act[i]) for n, i in self.joint_index.items()}
        self.dof = {n: int(tw.dadr[i]) for n, i in self.joint_index.items()}
        self.qadr = {n: int(tw.qadr[i]) for n, i in self.joint_index.items()}
        if "gripper" in self.motor_names:
            self.act["gripper"] = int(tw.grip_act)
            self.finger_dof = [int(m.jnt_dofadr[m.joint(f"finger_{s}").id]) for s in ("left", "right")]
        self._arm_motors = [n for n in self.motor_names if n != "gripper"]
        self._arm_dofs = np.array([self.dof[n] for n in self._arm_motors], dtype=int)
        self._unpowered = np.ones(len(self._arm_motors), dtype=bool)  # torque off, per arm motor
        self._gain = {n: m.actuator_gainprm[a].copy() for n, a in self.act.items()}
        self._bias = {n: m.actuator_biasprm[a].copy() for n, a in self.act.items()}
        self._pending: deque = deque()  # (apply_at, motor, torque, target)
        self._target: dict[str, float | None] = {n: None for n in self.motor_names}
        self._hold_prev: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0, self._tick, self._done = time.monotonic(), 0, 0  # physics clock (start() resets)
        self._sim_now: float | None = None  # the wall time the physics stands at (None: not running)
        self.applied: deque = deque(maxlen=64)  # (motor, wall time it took effect in the physics)
        self.steps = 0
        self.overruns = 0
        self._arm_on_table()
        for n in self.motor_names:
            self._apply(n, False, None)

    # -- model set-up -----------------------------------------------------------------------
    def _arm_on_table(self) -> None:
        """The arm's links rest on the table instead of passing through it (they touch
        nothing else: contype 2 meets only the table)."""
        m = self.model
        arm_bodies = {m.body(f"link{i + 1}").id for i in range(len(self.spec.joint_names))} | {m.body("hand").id}
        table = m.geom("table").id
        for g in range(m.ngeom):
            if m.geom_bodyid[g] in arm_bodies and m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0:
                m.geom_contype[g] = 2
                m.body_contype[m.geom_bodyid[g]] |= 2
        m.geom_conaffinity[table] |= 2
        m.body_conaffinity[m.geom_bodyid[table]] |= 2

    def settle(self, seconds: float = 1.5) -> None:
        """Let the powered-down arm come to rest before real time starts."""
        with self.lock:
            for _ in range(int(seconds / self.model.opt.timestep)):
                self._substep()

    # -- physics thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._t0, self._tick, self._done = time.monotonic(), 0, 0
        self._thread = threading.Thread(target=self._run, name="so101-physics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                self._catch_up()
            self._tick += 1
            deadline = self._t0 + self._tick * self.tick_s
            delay = deadline - time.monotonic()
            if delay < -self.tick_s:  # far behind: skip the missed ticks
                self._tick = int((time.monotonic() - self._t0) / self.tick_s) + 1
                delay = self._t0 + self._tick * self.tick_s - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def _catch_up(self) -> None:
        """``_advance_to`` now: the state a read, a camera or the person sees is the present one."""
        self._advance_to(time.monotonic())

    def _advance_to(self, now: float) -> None:
        """Step the physics up to wall time `now` (call with ``lock`` held; nothing while the
        physics thread is not running). The thread calls it every ``tick_s``; a read
        (``sense``) and a write (``command``) call it too, so a reading is the state of the
        last physics step (<= one timestep old) and a command takes effect at the physics
        step nearest its arrival + the unit's latency -- as on a servo, whose own loop runs
        at kHz, not at this thread's period. At most 100 ms is caught up at once; then
        simulated time slips (an overrun)."""
        if self._thread is None:
            return
        dt = float(self.model.opt.timestep)
        n = int((now - self._t0) / dt) - self._done
        if n <= 0:
            return
        max_steps = int(round(0.1 / dt))
        if n > max_steps:
            self.overruns += 1
            self._done += n - max_steps
            n = max_steps
        for _ in range(n):
            # a command due before the middle of this step acts from its start
            self._sim_now = self._t0 + self._done * dt
            self._apply_pending(self._sim_now + 0.5 * dt)
            self._substep()
            self._done += 1
        self._pin_holds()
        self.steps += n
        self._sim_now = self._t0 + self._done * dt

    def _substep(self) -> None:
        d = self.data
        # torque off: nothing holds the joint up (the twin's gravity compensation stands in
        # for the servo holding its link), so take it away again
        dofs = self._arm_dofs
        d.qfrc_applied[dofs] = np.where(self._unpowered, -d.qfrc_gravcomp[dofs], 0.0)
        self._pin_holds(velocity=True)
        self._mj.mj_step(self.model, d)

    def _pin_holds(self, velocity: bool = False) -> None:
        if not self.held:
            return
        d, dt = self.data, float(self.model.opt.timestep)
        for n, v in self.held.items():
            if n == "gripper":
                w = (1.0 - v) * self.twin.half_open
                d.qpos[self.twin.finger_qadr] = w
                d.qvel[self.finger_dof] = 0.0
            else:
                a = self.qadr[n]
                if velocity:
                    prev = self._hold_prev.get(n, v)
                    d.qvel[self.dof[n]] = (v - prev) / dt if abs(v - prev) < 0.5 else 0.0
                    self._hold_prev[n] = v
                d.qpos[a] = v

    # -- bus side -------------------------------------------------------------------------------
    def _apply_pending(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, n, torque, target = self._pending.popleft()
            self._apply(n, torque, target)

    def _apply(self, n: str, torque: bool, target: float | None) -> None:
        m, d, a = self.model, self.data, self.act[n]
        if self._thread is not None:
            self.applied.append((n, self._sim_now if self._sim_now is not None else time.monotonic()))
        was = self.torque[n]
        self.torque[n] = bool(torque)
        if n in self._arm_motors:
            self._unpowered[self._arm_motors.index(n)] = not torque
        if target is not None:
            self._target[n] = target
        elif torque and not was:
            self._target[n] = self._true(n)  # powered without a goal: hold where it is
        if torque:
            # a powered joint holds itself: the person's hand lets go of it
            self.held.pop(n, None)
            self._hold_prev.pop(n, None)
            m.actuator_gainprm[a] = self._gain[n]
            m.actuator_biasprm[a] = self._bias[n]
            t = self._target[n] if self._target[n] is not None else self._true(n)
            d.ctrl[a] = (1.0 - t) * self.twin.half_open if n == "gripper" else t
        else:
            m.actuator_gainprm[a] = 0.0
            m.actuator_biasprm[a] = 0.0

    def command(self, servo, torque: bool, goal_raw: int | None) -> None:
        n = self._servo_motor(servo)
        target = self._goal_value(n, goal_raw) if goal_raw is not None else None
        with self.lock:
            now = time.monotonic()
            if self.latency_s > 0:
                self._pending.append((now + self.latency_s, n, bool(torque), target))
            else:
                self._advance_to(now)  # the physics up to the moment it arrives, then the command
                self._apply(n, bool(torque), target)

    def _true(self, n: str) -> float:
        if n == "gripper":
            return self.twin.gripper_closure()
        return float(self.data.qpos[self.qadr[n]])

    def sense(self, servo) -> dict[str, int]:
        n = self._servo_motor(servo)
        with self.lock:
            self._catch_up()  # the state now, not at the last thread tick
            d = self.data
            if n == "gripper":
                closure = self.twin.gripper_closure()
                angle = closure * self.travel
                vel = -d.qvel[self.finger_dof[0]] / self.twin.half_open * self.travel
                # finger force (N) -> servo torque through a ~1 cm lever
                tau = -float(d.actuator_force[self.act[n]]) * 0.01 * self.travel
            else:
                angle, vel = float(d.qpos[self.qadr[n]]), float(d.qvel[self.dof[n]])
                tau = float(d.actuator_force[self.act[n]] + d.qfrc_gravcomp[self.dof[n]])
            return _readings(self.enc[n], angle, vel, tau, self.torque[n], max_torque=self.max_torque,
                             volts=self.volts, temperature=32)

    # -- the person's side -----------------------------------------------------------------------
    def hold(self, values: dict[str, float]) -> None:
        """The person moves the named motors to `values` and holds them there (kinematically)."""
        with self.lock:
            for n, v in values.items():
                self.held[n] = float(np.clip(v, *self.limits(n)))
            self._pin_holds()

    def release(self) -> None:
        with self.lock:
            self.held.clear()
            self._hold_prev.clear()

    def values(self) -> dict[str, float]:
        with self.lock:
            self._catch_up()
            return {n: self._true(n) for n in self.motor_names}

    def copy_state(self, data) -> None:
        """Copy the scene's state into another MjData of the same model (cameras)."""
        with self.lock:
            self._catch_up()
            data.qpos[:] = self.data.qpos
            data.mocap_pos[:] = self.data.mocap_pos
            data.mocap_quat[:] = self.data.mocap_quat
            data.time = self.data.time

    def observe(self) -> dict[str, np.ndarray]:
        """What the scripted person sees: the twin's observation + the objects' state."""
        with self.lock:
            self._catch_up()
            obs = self.twin.observe()
            obs["object_state"] = self.task.object_state()
            return obs

    def success(self) -> bool:
        with self.lock:
            self._catch_up()
            return bool(self.task.success())

    def place_objects(self, seed: int) -> None:
        """Put the task's objects where ``RobotEnv.reset(seed=seed)`` would, leaving the arm
        where it is (a person setting up the next episode)."""
        from gymnasium.utils import seeding
        rng, _ = seeding.np_random(seed)
        rng.integers(2 ** 31)  # the draws RobotEnv.reset makes before the task's
        rng.normal(0, 0.02, self.spec.dof)
        with self.lock:
            d = self.data
            keep = {k: getattr(d, k).copy() for k in ("qpos", "qvel", "ctrl", "qfrc_applied")}
            t = float(d.time)
            arm_q = [self.qadr[n] for n in self.joint_index] + list(self.twin.finger_qadr)
            arm_v = [self.dof[n] for n in self.joint_index] + list(self.finger_dof)
            self.task.reset(rng)
            d.qpos[arm_q] = keep["qpos"][arm_q]
            d.qvel[arm_v] = keep["qvel"][arm_v]
            d.ctrl[:] = keep["ctrl"]
            d.qfrc_applied[:] = keep["qfrc_applied"]
            d.time = t
            self._mj.mj_forward(self.model, d)

    def action_to_targets(self, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The twin's ee_delta action -> joint targets, from the follower's current state."""
        with self.lock:
            return self.twin.action_to_targets("ee_delta", action)


def _reset_scene(env, seed: int) -> None:
    """``RobotEnv.reset(seed=seed)`` without rendering its image observations: the arm at
    home (+ the same jitter), the task's objects placed."""
    import mujoco
    from gymnasium.utils import seeding
    rng, _ = seeding.np_random(seed)
    tw = env.twin
    tw.seed(int(rng.integers(2 ** 31)))
    tw.reset(np.clip(tw.home + rng.normal(0, 0.02, env.robot_spec.dof), tw.lower, tw.upper), gripper=0.0)
    env.task.reset(rng)
    mujoco.mj_forward(tw.model, tw.data)


# -- the rig --------------------------------------------------------------------------------------
class VirtualSO101:
    """A virtual SO-101 on this machine: two servo buses on pseudo-terminals, cameras as
    HTTP MJPEG, the person over HTTP. ``start()`` returns where to find them::

        {"follower_port": "/dev/pts/7", "leader_port": "/dev/pts/8",
         "cameras": {"front": "http://127.0.0.1:PORT/stream.mjpg", ...},
         "person": "http://127.0.0.1:PORT/person"}

    Attributes for tests and benchmarks (never for the code under test): ``follower`` /
    ``leader`` (the plants), ``buses`` (the emulators), ``servos`` (arm -> motor ->
    VirtualServo), ``person``, ``env`` (the follower's RobotEnv).
    """

    def __init__(self, unit: Unit | str | Path = "so101_default", *, host: str = "127.0.0.1",
                 person_port: int = 0, settle_s: float = 1.5, switch_interval_s: float | None = 0.001):
        self.unit = unit if isinstance(unit, Unit) else load_unit(unit)
        self.host, self.person_port, self.settle_s = host, int(person_port), float(settle_s)
        # the buses answer within a millisecond only if their threads get the GIL that soon:
        # Python's default switch interval (5 ms) lets the physics / camera threads hold it
        # longer; lowered while the rig runs (never raised), restored on close
        self.switch_interval_s = switch_interval_s
        self._old_switch: float | None = None
        self.hardware: dict[str, Hardware] = {}
        self.plants: dict[str, _ArmPlant] = {}
        self.buses: dict[str, Any] = {}
        self.servos: dict[str, dict[str, Any]] = {}
        self.cameras: dict[str, Any] = {}  # name -> MJPEGServer
        self.env = None
        self.spec = None
        self.follower: FollowerPlant | None = None
        self.leader: LeaderPlant | None = None
        self.person = None
        self._person_server = None
        self._plug_lock = threading.Lock()
        self._info: dict[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        if self._info is not None:
            return self._info
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> dict[str, Any]:
        from robot_rl.drivers.virtual.camera import LiveSceneSource, MJPEGServer
        from robot_rl.drivers.virtual.person import Person, PersonServer
        from robot_rl.sim.env import RobotEnv
        from robot_rl.sim.tasks import TASKS
        from robot_rl.sim.twin import TwinParams
        from robot_rl.spec import load_spec

        u = self.unit
        if self.switch_interval_s is not None and sys.getswitchinterval() > self.switch_interval_s:
            self._old_switch = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval_s)
        hw_f, hw_l = check_unit(u)
        self.hardware = {"follower": hw_f, "leader": hw_l}
        spec = load_spec(u.robot)
        for hw in (hw_f, hw_l):
            hw.check_spec(spec)
        if u.task not in TASKS:
            raise UnitError(f"{u.path or 'unit'}: unknown task {u.task!r}; available: {sorted(TASKS)}")
        spec_cams = [c.name for c in spec.cameras]
        for c in u.cameras:
            if c.name not in spec_cams:
                raise UnitError(f"{u.path or 'unit'}: camera {c.name!r} is not one of robot {spec.name!r}'s "
                                f"cameras {spec_cams}")
        t = u.twin
        params = TwinParams(friction_scale=t.friction_scale, object_mass_scale=t.object_mass_scale,
                            damping_scale=t.damping_scale, actuator_gain_scale=t.actuator_gain_scale,
                            armature_scale=t.armature_scale, frictionloss=t.frictionloss,
                            forcerange_scale=t.forcerange_scale)
        render = max([64] + [max(c.width, c.height) for c in u.cameras])
        self.env = RobotEnv(task=u.task, robot=spec, action_mode="ee_delta", cameras=spec_cams,
                            render_size=render, params=params, safety=False)
        self.spec = self.env.robot_spec
        _reset_scene(self.env, u.seed)
        ss = np.random.SeedSequence(u.seed)
        rng_f, rng_l = (np.random.default_rng(s) for s in ss.spawn(2))
        self.follower = FollowerPlant(self.env, hw_f, u.follower, u.twin, rng_f, volts=120)
        self.follower.settle(self.settle_s)
        self.leader = LeaderPlant(hw_l, u.leader, self.spec, rng_l, initial=self.follower.values(),
                                  volts=74 if hw_l.protocol == "feetech" else 50)
        self.plants = {"follower": self.follower, "leader": self.leader}

        from robot_rl.drivers.virtual.servo_bus import BusFaults, ServoBusEmulator
        ports = {}
        for i, arm in enumerate(ARMS):
            au, hw = u.arm(arm), self.hardware[arm]
            self.servos[arm] = {m.name: self._make_servo(arm, m) for m in hw.motors}
            fd = dict(u.faults.get(arm) or {})
            if "error_bits" in fd:
                fd["error_bits"] = {int(k): (str(v[0]), float(v[1])) for k, v in (fd["error_bits"] or {}).items()}
            try:
                faults = BusFaults(**fd)
            except TypeError as e:
                raise UnitError(f"{u.path or 'unit'}: faults.{arm}: {e}") from None
            on_bus = [] if au.factory_new else list(self.servos[arm].values())
            emu = ServoBusEmulator(hw.protocol, on_bus, faults=faults, seed=u.seed * 2 + i, link=au.link)
            self.buses[arm] = emu
            ports[arm] = emu.start()
        self.follower.start()
        cams = {}
        for c in u.cameras:
            src = LiveSceneSource(self.follower.model, self.follower.copy_state, c.name, c.width, c.height)
            server = MJPEGServer(src, host=self.host, port=c.port, fps=c.fps, quality=c.quality, lookahead=1)
            # with no stream client, render only every 0.5 s (the first frame a new client gets
            # may be that old; every later one is live)
            src.watched = (lambda sv: lambda: sv.stats()["clients"] > 0)(server)
            self.cameras[c.name] = server
            server.start()
            cams[c.name] = server.url
        self.person = Person(self)
        self._person_server = PersonServer(self.person, self.host, self.person_port).start()
        self._info = {"follower_port": ports["follower"], "leader_port": ports["leader"], "cameras": cams,
                      "person": self._person_server.url,
                      "follower": {"hardware": hw_f.name, "protocol": hw_f.protocol},
                      "leader": {"hardware": hw_l.name, "protocol": hw_l.protocol},
                      "factory_new": {a: u.arm(a).factory_new for a in ARMS}}
        return self._info

    def _make_servo(self, arm: str, motor):
        from robot_rl.drivers.servo.protocols import get_table
        from robot_rl.drivers.virtual.servo_bus import VirtualServo
        au = self.unit.arm(arm)
        table = get_table(motor.model)
        factory_baud = table.baudrates[table["Baud_Rate"].default]
        if au.factory_new:
            return VirtualServo(1, motor.model, self.plants[arm], name=motor.name, baudrate=factory_baud)
        baud = au.baudrate if au.baudrate is not None else factory_baud
        try:
            s = VirtualServo(motor.id, motor.model, self.plants[arm], name=motor.name, baudrate=baud)
        except ValueError as e:
            raise UnitError(f"{self.unit.path or 'unit'}: {arm}.baudrate: {e}") from None
        if au.return_delay_us is not None and s.has("Return_Delay_Time"):
            s.set("Return_Delay_Time", au.return_delay_us // 2)
        return s

    @property
    def info(self) -> dict[str, Any]:
        if self._info is None:
            raise RuntimeError("VirtualSO101 is not started")
        return self._info

    def close(self) -> None:
        """Stop the person, cameras, buses and physics (idempotent)."""
        def quietly(fn, what):
            try:
                fn()
            except Exception:
                log.exception("virtual so101: closing %s failed", what)

        if self.person is not None:
            quietly(self.person.close, "the person")
        if self._person_server is not None:
            quietly(self._person_server.close, "the person server")
            self._person_server = None
        for name, server in list(self.cameras.items()):
            quietly(server.close, f"camera {name}")
            quietly(server.source.close, f"camera {name}'s renderer")
        self.cameras.clear()
        for arm, emu in list(self.buses.items()):
            quietly(emu.close, f"the {arm} bus")
        self.buses.clear()
        if self.follower is not None:
            quietly(self.follower.close, "the physics thread")
        if self.env is not None:
            quietly(self.env.close, "the twin")
            self.env = None
        if self._old_switch is not None:
            sys.setswitchinterval(self._old_switch)
            self._old_switch = None
        self._info = None

    def __enter__(self) -> "VirtualSO101":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- cables (the person's hands) -------------------------------------------------------------------
    def plug(self, arm: str, motor: str, only: bool = False) -> dict[str, Any]:
        emu, servo = self.buses[arm], self.servos[arm][motor]
        if getattr(emu, "unplugged", False):
            raise UnitError(f"the {arm}'s USB adapter is unplugged; start the rig again")
        with self._plug_lock:
            if only:
                for other in list(emu.servos):
                    if other is not servo:
                        emu.detach(other)
            emu.attach(servo)
        return {"plugged": self.plugged(arm)}

    def unplug(self, arm: str, motor: str | None = None) -> None:
        emu = self.buses[arm]
        with self._plug_lock:
            if motor is None:
                emu.unplug()
            else:
                emu.detach(self.servos[arm][motor])

    def plugged(self, arm: str) -> list[str]:
        emu = self.buses.get(arm)
        if emu is None or getattr(emu, "unplugged", False):
            return []
        return [s.name for s in list(emu.servos)]
