"""Servo-bus arms behind the robot interface: the SO-101 follower (Feetech STS3215) and any
arm described by a hardware file (``robot_rl/conf/hardware``), plus leader arms read as
teleop devices.

    robot = ServoArm("so101", port="/dev/ttyACM0", calibration="~/.cache/robot_rl/calibration/so101_follower/arm1.yaml")
    robot.connect(); obs = robot.observe(); robot.act(q_and_gripper, "joint_pos"); robot.disconnect()

Every control step reads Present_Position of all motors in one SYNC_READ (the measurement,
stamped at read time), runs the command through the safety filter, clips it to
``max_relative_target`` rad from the measured position (LeRobot's guard against a jump),
and writes Goal_Position of all motors in one SYNC_WRITE.

Safe states:
- e-stop: hold the measured position, then torque off after ``estop_hold_s`` (a stop of
  category 1); released: torque on at the measured position, nothing moves until a fresh
  command.
- a servo alarm (overload, overheat, voltage, ...): the same hold then torque off, one
  message, and a latched fault until ``clear_fault`` (the robot node's reset service).
- the bus goes away (adapter unplugged): RobotDisconnected; the servos keep their last goal
  on their own (nothing can reach them).
- disconnect, or an unhandled error: torque off.
"""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.runtime.robot import ActResult, Robot, RobotDisconnected, RobotFault, make_safety_filter
from robot_rl.spec import RobotSpec, load_spec, resolve_spec

log = logging.getLogger("robot_rl.drivers.servo_arm")

# a SYNC_READ that fails this many control steps in a row is a lost link, not a glitch
MAX_FAILED_READS = 10
SETUP_TIMEOUT_S = 0.05  # per reply while connecting


class ArmSetupError(RuntimeError):
    """The arm cannot be used as configured: the message names the cause and the fix."""


class _Bus:
    """The bus + calibration + hardware checks that follower and leader share."""

    def __init__(self, spec: RobotSpec, port: str, calibration: Any, hardware: str | None, role: str,
                 baudrate: int | None, timeout_s: float, retries: int):
        from robot_rl.calibration.motors import MotorCalibration
        from robot_rl.drivers.hardware import load_hardware
        if not port:
            raise ArmSetupError(f"the {role} arm needs port=... (the serial port: `robot-rl find-port`, or the port "
                                f"`robot-rl virtual so101` printed)")
        if calibration is None or calibration == "":
            raise ArmSetupError(f"the {role} arm on {port} is not calibrated: run `robot-rl calibrate robot={spec.name} "
                                f"arm={role} port={port} id=NAME` and pass calibration=FILE")
        if isinstance(calibration, (str, Path)):
            path = Path(calibration).expanduser()
            if not path.is_file():
                raise ArmSetupError(f"calibration file {path} does not exist: run `robot-rl calibrate robot={spec.name} "
                                    f"arm={role} port={port} id=NAME`")
            calibration = MotorCalibration.load(path)
        self.cal = calibration
        self.hw = load_hardware(hardware or self.cal.hardware)
        if self.hw.role != role:
            raise ArmSetupError(f"hardware {self.hw.name!r} is a {self.hw.role} arm, not a {role}")
        try:
            self.hw.check_spec(spec)
            self.cal.check(self.hw, spec)
        except ValueError as e:
            raise ArmSetupError(str(e)) from None
        self.spec, self.port, self.role = spec, port, role
        self.baudrate = int(baudrate or self.hw.baudrate)
        self.timeout_s, self.retries = timeout_s, retries
        self.names = list(spec.joint_names) + (["gripper"] if spec.gripper else [])
        self.ids = [self.hw.motor(n).id for n in self.names]
        self.bus = None

    def open(self):
        from robot_rl.drivers.servo.bus import ServoBus
        from robot_rl.drivers.servo.errors import PortError
        from robot_rl.drivers.servo.protocols import get_table
        models = {m.id: m.model for m in self.hw.motors}
        # setup (ping, model and offset checks) with a patient timeout: a loaded machine or a
        # USB adapter's latency timer can hold a reply for several ms; the control loop then
        # uses the short one, where a late reply is a retry, not a missed period
        bus = ServoBus(self.port, self.hw.protocol, self.baudrate, timeout_s=max(self.timeout_s, SETUP_TIMEOUT_S),
                       retries=max(self.retries, 3), models=models)
        try:
            bus.open()
        except PortError as e:
            raise ArmSetupError(str(e)) from None
        self.bus = bus
        try:
            found = self._ping_all()
            missing = [(n, i) for n, i in zip(self.names, self.ids) if i not in found]
            if len(missing) == len(self.ids):
                raise ArmSetupError(self._nobody_answers())
            if missing:
                raise ArmSetupError(f"{self.role} arm on {self.port}: motor(s) "
                                    f"{', '.join(f'{n} (id {i})' for n, i in missing)} do not answer at "
                                    f"{self.baudrate} baud; check the cable daisy chain, or run `robot-rl setup-motors` "
                                    f"for a new motor")
            for n, i in zip(self.names, self.ids):
                want = get_table(self.hw.motor(n).model)
                if found[i] != want.model_number:
                    raise ArmSetupError(f"{self.role} arm on {self.port}: motor {n} (id {i}) is model number "
                                        f"{found[i]}, expected {want.model_number} ({want.model}); wrong arm, or wrong "
                                        f"hardware= description")
            try:
                self.cal.check_servos(bus)  # uncalibrated, recalibrated since, or another arm's file
            except ValueError as e:
                raise ArmSetupError(f"{self.role} arm on {self.port}: {e}") from None
        except BaseException:
            bus.close()
            self.bus = None
            raise
        bus.timeout_s, bus.retries = self.timeout_s, self.retries
        return bus

    def _ping_all(self) -> dict[int, int]:
        from robot_rl.drivers.servo.errors import ServoError
        found = {}
        for i in self.ids:
            try:
                found[i] = self.bus.ping(i)
            except ServoError:
                pass
        return found

    def _nobody_answers(self) -> str:
        """No motor answers: say whether another baud rate would have worked."""
        from robot_rl.drivers.servo.protocols import get_table
        table = get_table(self.hw.motors[0].model)
        hits = []
        for baud in sorted(set(table.baudrates.values())):
            if baud == self.baudrate:
                continue
            try:
                self.bus.set_baudrate(baud)
                if self.bus.scan(self.ids, timeout_s=0.005):
                    hits.append(baud)
                    break
            except Exception:  # noqa: BLE001
                continue
        self.bus.set_baudrate(self.baudrate)
        if hits:
            return (f"no motor answers on {self.port} at {self.baudrate} baud, but they answer at {hits[0]} baud: "
                    f"pass baudrate={hits[0]} or run `robot-rl setup-motors` to set {self.baudrate}")
        return (f"no motor answers on {self.port} at any baud rate ({self.hw.protocol}): wrong port (try "
                f"`robot-rl find-port`), the arm is not powered, or it is another protocol's arm")

    def read_q(self) -> tuple[np.ndarray, float | None, float]:
        """One SYNC_READ of Present_Position -> (q rad, gripper closure, wall stamp)."""
        ticks = self.bus.sync_read("Present_Position", self.ids)
        stamp = time.time()
        q, g = self.cal.ticks_to_q(ticks)
        return np.asarray(q, float), g, stamp

    def torque(self, on: bool) -> None:
        self.bus.sync_write("Torque_Enable", {i: int(on) for i in self.ids})

    def close(self) -> None:
        if self.bus is not None:
            try:
                self.bus.close()
            finally:
                self.bus = None


class ServoArm(Robot):
    """A follower arm on a servo bus (SO-101: Feetech STS3215) as a Robot."""

    simulated = False

    def __init__(self, robot: str | RobotSpec = "so101", action_mode: str = "joint_pos", safety: dict | None = None,
                 control_hz: float | None = None, *, port: str = "", calibration: Any = None,
                 hardware: str | None = None, baudrate: int | None = None, max_relative_target: float | None = 0.5,
                 estop_hold_s: float = 0.5, bus_timeout_s: float = 0.01, bus_retries: int = 2):
        # no cameras: on hardware they are camera nodes of their own
        self.spec = resolve_spec(robot, action_mode, (), None, control_hz or None)
        self.action_mode = action_mode
        self._safety_kwargs = dict(safety or {})
        self.max_relative_target = max_relative_target
        self.estop_hold_s = float(estop_hold_s)
        self.arm = _Bus(self.spec, port, calibration, hardware, "follower", baudrate, bus_timeout_s, bus_retries)
        self.safety = None
        self._kin = None
        self._q = np.zeros(self.spec.dof)
        self._qd = np.zeros(self.spec.dof)
        self._g: float | None = None
        self._torque = False
        self._fault: str | None = None
        self._limp_at: float | None = None  # monotonic time the torque goes off (e-stop / alarm hold)
        self._failed_reads = 0
        self.counts = {"reads": 0, "read_failures": 0, "writes": 0, "write_failures": 0, "relative_clamps": 0,
                       "alarms": 0}

    # -- interface -----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.arm.bus is not None

    @property
    def control_dt(self) -> float:
        return 1.0 / self.spec.control_hz

    def connect(self) -> None:
        if self.is_connected:
            return
        from robot_rl.sim.twin import Twin
        self.arm.open()
        try:
            self._kin = Twin(self.spec)  # kinematics only (FK for ee pose, IK for ee_delta)
            self.safety = make_safety_filter(self.spec, self.control_dt, fk=lambda q: self._kin.fk(q)[0],
                                             **self._safety_kwargs)
            self._read()
            # goal = where the arm is, then torque on: connecting never moves the arm
            self.arm.bus.sync_write("Goal_Position", self.arm.cal.q_to_ticks(self._q, self._g))
            self.arm.torque(True)
            self._torque = True
            self.safety.reset(self._q, self._g)
        except BaseException:
            self.arm.close()
            raise

    def disconnect(self) -> None:
        if not self.is_connected:
            return
        try:
            self.arm.torque(False)  # a stopped program leaves a limp arm, never a stiff one
        except Exception as e:  # noqa: BLE001  (an unplugged bus cannot be told)
            log.warning(f"torque off on disconnect failed: {e}")
        finally:
            self._torque = False
            self.arm.close()

    def observe(self) -> dict[str, np.ndarray]:
        if self.measured_at is None or not self.is_connected:
            self._read()
        pos, mat = self._kin.fk(self._q)
        from robot_rl.sim.twin import mat_to_quat
        obs = {"joint_pos": self._q.astype(np.float32), "joint_vel": self._qd.astype(np.float32),
               "ee_pos": pos.astype(np.float32), "ee_quat": mat_to_quat(mat).astype(np.float32)}
        if self.spec.gripper is not None:
            obs["gripper"] = np.array([self._g or 0.0], np.float32)
        return obs

    def act(self, action: Any = None, mode: str | None = None, *, command_time: float | None = None,
            now: float | None = None) -> ActResult:
        from robot_rl.drivers.servo.errors import ServoError
        mode = mode or self.action_mode
        self._need()
        self._read()
        self._check_limp()
        res, q_meas = self._filter(mode, action, command_time, now)
        q = np.asarray(res.q, float)
        events = list(res.events)
        if self.max_relative_target is not None and not res.held:
            lo, hi = q_meas - self.max_relative_target, q_meas + self.max_relative_target
            if np.any(q < lo) or np.any(q > hi):
                q = np.clip(q, lo, hi)
                events.append("relative_clamp")
                self.counts["relative_clamps"] += 1
        if self._torque and self._fault is None:
            try:
                self.arm.bus.sync_write("Goal_Position", self.arm.cal.q_to_ticks(q, res.gripper))
                self.counts["writes"] += 1
            except ServoError as e:
                self._bus_error(e)
                self.counts["write_failures"] += 1
        applied = self._applied_action(mode, action, res, q_meas)
        return ActResult(q, res.gripper, applied, mode, events, res.held or self._fault is not None, res.rejected)

    def estop(self, engage: bool) -> None:
        self._need()
        super().estop(engage)
        if engage:
            self._hold_then_limp()
        else:
            self._limp_at = None
            if self._fault is None:
                self._torque_on_here()

    @property
    def fault(self) -> str | None:
        return self._fault

    def clear_fault(self) -> str:
        from robot_rl.drivers.servo.errors import ServoError
        if self._fault is None:
            return "no fault"
        if not self.is_connected:
            raise RobotFault(f"cannot clear {self._fault!r}: the arm is disconnected")
        if self.arm.hw.protocol == "dynamixel":
            self._reboot_alarmed()  # a Dynamixel keeps its alarm (and torque off) until REBOOT
        try:
            self._read(raise_alarm=True)
        except ServoError as e:
            raise RobotFault(f"the fault persists: {e}") from None
        was, self._fault = self._fault, None
        self._failed_reads = 0
        if not self.safety.estopped:
            self._torque_on_here()
        return f"cleared {was!r}; torque on at the measured position"

    def status(self) -> dict[str, str]:
        out = {"torque": str(int(self._torque)), "fault": self._fault or "", **{k: str(v) for k, v in self.counts.items()}}
        if self.is_connected:
            st = self.arm.bus.stats()
            for k in ("transactions", "timeouts", "corrupt", "retries", "garbage_bytes", "status_errors"):
                if k in st:
                    out[f"bus_{k}"] = str(st[k])
            lat = st.get("latency", {}).get("sync_read")
            if lat:
                out["sync_read_ms_p50"] = f"{lat['p50_ms']:.3f}"
                out["sync_read_ms_p99"] = f"{lat['p99_ms']:.3f}"
        return out

    # -- internals ---------------------------------------------------------------------------------
    def _need(self) -> None:
        if not self.is_connected:
            raise RobotDisconnected("the arm is not connected")

    def _read(self, raise_alarm: bool = False) -> None:
        """Measure (one SYNC_READ); alarms latch a fault, a vanished port raises."""
        from robot_rl.drivers.servo.errors import PortError, ServoError, ServoStatusError
        try:
            q, g, stamp = self.arm.read_q()
        except PortError as e:
            self.arm.close()
            self._torque = False
            self._fault = f"disconnected: {e}"
            raise RobotDisconnected(f"{self.spec.name} follower on {self.arm.port} disconnected ({e}); the servos keep "
                                    f"their last goal, nothing can reach them") from None
        except ServoStatusError as e:
            if raise_alarm:
                raise
            self._alarm(e)
            vals = getattr(e, "values", None)
            if vals and len(vals) == len(self.arm.ids):
                q, g = self.arm.cal.ticks_to_q(vals)
                stamp = time.time()
            else:
                return
        except ServoError as e:
            self._bus_error(e)
            return
        q = np.asarray(q, float)
        if self.measured_at is not None:
            dt = stamp - self.measured_at
            if dt > 1e-4:
                self._qd = (q - self._q) / dt
        self._q, self._g, self.measured_at = q, g, stamp
        self._failed_reads = 0
        self.counts["reads"] += 1

    def _reboot_alarmed(self) -> None:
        """REBOOT the Dynamixel servos whose Hardware_Error_Status is set; they come back with
        torque off after about half a second."""
        from robot_rl.drivers.servo.errors import ServoError, ServoStatusError
        rebooted = []
        for i in self.arm.ids:
            try:
                try:
                    alarmed = bool(self.arm.bus.read(i, "Hardware_Error_Status"))
                except ServoStatusError:  # the reply itself carries the alert bit
                    alarmed = True
                if alarmed:
                    self.arm.bus.reboot(i)
                    rebooted.append(i)
            except ServoError as e:
                raise RobotFault(f"servo {i}: cannot read or reboot it ({e})") from None
        if rebooted:
            log.warning(f"{self.spec.name} follower: rebooted servo(s) {rebooted} to clear their alarm")
            time.sleep(0.5)

    def _bus_error(self, e: Exception) -> None:
        """A read/write that failed after its retries (dropped or corrupt replies): counted;
        the servos keep their goals. Too many in a row is a lost link: fault, hold."""
        self.counts["read_failures"] += 1
        self._failed_reads += 1
        if self._failed_reads >= MAX_FAILED_READS and self._fault is None:
            self._fault = f"lost communication: {self._failed_reads} bus transactions failed in a row ({e})"
            log.error(f"{self.spec.name} follower: {self._fault}; holding")

    def _alarm(self, e: Exception) -> None:
        if self._fault is None:
            self.counts["alarms"] += 1
            self._fault = f"servo alarm: {e}"
            log.error(f"{self.spec.name} follower: {e}: holding, torque off in {self.estop_hold_s:g} s; "
                      f"it takes no command until reset (/robot/reset)")
            self._hold_then_limp()

    def _hold_then_limp(self) -> None:
        from robot_rl.drivers.servo.errors import ServoError
        try:
            if self._torque:
                self.arm.bus.sync_write("Goal_Position", self.arm.cal.q_to_ticks(self._q, self._g))
        except ServoError:
            pass
        self._limp_at = time.monotonic() + self.estop_hold_s
        self._check_limp()

    def _check_limp(self) -> None:
        from robot_rl.drivers.servo.errors import ServoError
        if self._limp_at is not None and time.monotonic() >= self._limp_at and self._torque:
            try:
                self.arm.torque(False)
                self._torque = False
                self._limp_at = None
            except ServoError as e:
                log.warning(f"torque off failed, retrying next step: {e}")

    def _torque_on_here(self) -> None:
        self._read()
        self.arm.bus.sync_write("Goal_Position", self.arm.cal.q_to_ticks(self._q, self._g))
        self.arm.torque(True)
        self._torque = True
        if not self.safety.estopped:
            self.safety.reset(self._q, self._g)  # targets = where the arm is: nothing moves

    # kinematic hooks
    def _measured_q(self) -> np.ndarray:
        return self._q.copy()

    def _targets(self, mode: str, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        if mode == "joint_pos":
            return action[: self.spec.dof].copy(), (float(action[-1]) if self.spec.gripper else None)
        kin = self._kin
        kin.data.qpos[kin.qadr] = self._q
        import mujoco
        mujoco.mj_kinematics(kin.model, kin.data)
        return kin.action_to_targets(mode, action)

    def _fk(self, q: np.ndarray):
        return self._kin.fk(q)

    def _ee_pose(self):
        return self._kin.fk(self._q)


class LeaderArm:
    """A leader arm (torque off, moved by hand) read as absolute joint positions."""

    def __init__(self, robot: str | RobotSpec = "so101", *, port: str = "", calibration: Any = None,
                 hardware: str | None = None, baudrate: int | None = None, bus_timeout_s: float = 0.01,
                 bus_retries: int = 2):
        self.spec = load_spec(robot).with_cameras([])
        self.arm = _Bus(self.spec, port, calibration, hardware, "leader", baudrate, bus_timeout_s, bus_retries)
        self.names = self.arm.names
        self.read_at: float | None = None

    def connect(self) -> None:
        if self.arm.bus is None:
            self.arm.open()
            self.arm.torque(False)

    def read(self) -> tuple[np.ndarray, float | None]:
        """Joint positions (rad, spec order) and gripper closure, one SYNC_READ."""
        from robot_rl.drivers.servo.errors import PortError
        if self.arm.bus is None:
            raise RobotDisconnected("the leader arm is not connected")
        try:
            q, g, self.read_at = self.arm.read_q()
        except PortError as e:
            self.arm.close()
            raise RobotDisconnected(f"leader arm on {self.arm.port} disconnected ({e})") from None
        return q, g

    def close(self) -> None:
        self.arm.close()


def _arm(protocol: str, robot: str = "so101", action_mode: str = "joint_pos", safety: dict | None = None,
         control_hz: float | None = None, *, port: str = "", calibration: Any = None, hardware: str | None = None,
         baudrate: int | None = None, max_relative_target: float | None = 0.5, estop_hold_s: float = 0.5,
         bus_timeout_s: float = 0.01, bus_retries: int = 2):
    arm = ServoArm(robot, action_mode, safety, control_hz, port=port, calibration=calibration, hardware=hardware,
                   baudrate=baudrate, max_relative_target=max_relative_target, estop_hold_s=estop_hold_s,
                   bus_timeout_s=bus_timeout_s, bus_retries=bus_retries)
    if arm.arm.hw.protocol != protocol:
        raise ArmSetupError(f"driver {protocol!r} with hardware {arm.arm.hw.name!r}, a {arm.arm.hw.protocol} arm: "
                            f"use --driver {arm.arm.hw.protocol}")
    return arm


feetech_arm = functools.partial(_arm, "feetech")
dynamixel_arm = functools.partial(_arm, "dynamixel")


__all__ = ["ArmSetupError", "LeaderArm", "ServoArm", "feetech_arm", "dynamixel_arm"]
