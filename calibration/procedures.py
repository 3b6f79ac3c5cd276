"""The procedures a person runs once per arm, through its serial port (LeRobot's flow):

- :func:`find_port`: list serial ports, the person unplugs the arm, the port that went
  away is the arm's.
- :func:`setup_motors`: one motor at a time (gripper first), find the lone servo at
  whatever baud rate it speaks, check its model, give it the hardware description's ID
  and baud rate, check it answers there.
- :func:`calibrate`: torque off; zero pose -> Homing_Offset so it reads mid-range
  (2047); sweep -> each motor's range; check pose -> each joint's direction; configure
  the servos; write the range as position limits; a :class:`MotorCalibration`.
- :func:`adopt_lerobot`: a LeRobot calibration (offsets, ranges) kept on the servos,
  the spec's zero and directions measured with the zero and check poses.
- :func:`configure`: the hardware description's register settings.

Every instruction to the person goes through a :class:`~robot_rl.calibration.prompter.Prompter`.
Register rules: Feetech EEPROM (ID, Baud_Rate, Homing_Offset, limits, PID ...) is
written with ``Lock`` = 0 and locked again after; Dynamixel EEPROM with torque off.
"""
from __future__ import annotations

import glob as _glob
import math
import os
import time
from typing import Callable, Iterable, Mapping

import numpy as np

from robot_rl.calibration.motors import (GRIPPER, HALF_TURN, MotorCalibration, build, half_turn_homing,
                                         homed_reading, wrap_ticks)
from robot_rl.calibration.prompter import Prompter

PORT_GLOBS = ("/dev/ttyACM*", "/dev/ttyUSB*", "/dev/tty.usbmodem*", "/dev/tty.usbserial*", "/dev/cu.usbmodem*")
MIN_MOVE_TICKS = 30  # a joint that moved less between the zero and check poses did not move (2.6 deg)
Log = Callable[[str], None]


class ProcedureError(RuntimeError):
    """A procedure cannot go on: the message names the cause and what to do."""


# -- find-port -------------------------------------------------------------------------------

def find_ports(globs: Iterable[str] = ()) -> list[str]:
    """Serial ports: pyserial's list plus /dev/ttyACM*, /dev/ttyUSB* (and macOS'
    usbmodem/usbserial) and any extra ``globs`` (e.g. a virtual arm's symlink folder)."""
    ports: set[str] = set()
    try:
        from serial.tools import list_ports
        ports.update(p.device for p in list_ports.comports())
    except Exception:  # noqa: BLE001 - no pyserial list on this platform: the globs still work
        pass
    for pattern in (*PORT_GLOBS, *globs):
        # os.path.exists follows links: a virtual arm's link to a pty that went away is gone too
        ports.update(p for p in _glob.glob(pattern) if os.path.exists(p) and not p.endswith("/ptmx"))
    return sorted(ports)


def find_port(prompter: Prompter, *, globs: Iterable[str] = (), arm: str | None = None,
              wait_s: float = 3.0) -> str:
    """The port that disappears when the person unplugs the arm's USB cable."""
    globs = tuple(globs)
    before = find_ports(globs)
    if not before:
        raise ProcedureError("no serial ports found: plug in the arm's USB cable (and power), then run find-port "
                             "again" + ("" if globs else "; a virtual arm's port: pass glob=PATTERN"))
    prompter.ask("unplug", "Remove the USB cable from the arm's controller board.", arm=arm)
    gone: list[str] = []
    end = time.monotonic() + wait_s
    while True:  # the device node goes a moment after the cable
        gone = sorted(set(before) - set(find_ports(globs)))
        if gone or time.monotonic() > end:
            break
        time.sleep(0.05)
    if not gone:
        raise ProcedureError(f"no port disappeared (ports: {', '.join(before)}): was the arm's USB cable unplugged? "
                             "Plug it back in and run find-port again")
    if len(gone) > 1:
        raise ProcedureError(f"several ports disappeared ({', '.join(gone)}): unplug only one arm's cable at a time")
    return gone[0]


# -- helpers -----------------------------------------------------------------------------------

def _bus(port: str, hardware, baudrate: int | None = None):
    from robot_rl.drivers.servo.bus import ServoBus
    # generous: calibration is not latency-bound, and a busy machine must not abort a person's sweep
    return ServoBus(port, hardware.protocol, int(baudrate or hardware.baudrate), timeout_s=0.05, retries=3,
                    models={m.id: m.model for m in hardware.motors})


def _read_positions(bus, ids: list[int], misses: list[int], max_misses: int = 20) -> dict[int, int] | None:
    """One SYNC_READ of Present_Position; a lost reply is skipped (None) unless they keep
    being lost (``max_misses`` in a row: the error)."""
    from robot_rl.drivers.servo.errors import ServoCorrupt, ServoTimeout
    try:
        vals = bus.sync_read("Present_Position", ids)
    except (ServoTimeout, ServoCorrupt):  # an unplugged port (PortError) is no glitch: it raises
        misses[0] += 1
        if misses[0] >= max_misses:
            raise
        return None
    misses[0] = 0
    return vals


def _table(model: str):
    from robot_rl.drivers.servo.protocols import get_table
    return get_table(model)


def _model_name(protocol: str, number: int) -> str:
    from robot_rl.drivers.servo.protocols import table_for_model_number
    t = table_for_model_number(protocol, number)
    return t.model if t else "unknown model"


def _unlock(bus, ids: Iterable[int], protocol: str) -> None:
    """Torque off (and Feetech: Lock = 0) so EEPROM registers can be written."""
    for i in ids:
        bus.write(i, "Torque_Enable", 0)
        if protocol == "feetech":
            bus.write(i, "Lock", 0)


def _lock(bus, ids: Iterable[int], protocol: str) -> None:
    if protocol == "feetech":
        for i in ids:
            bus.write(i, "Lock", 1)


def check_motors(bus, hardware) -> dict[int, int]:
    """Every motor of ``hardware`` answers at its id with the right model, or a clear error."""
    from robot_rl.drivers.servo.errors import ServoError
    found, missing = {}, []
    for m in hardware.motors:
        try:
            found[m.id] = bus.ping(m.id)
        except ServoError:
            missing.append(m)
    if len(missing) == len(hardware.motors):
        raise ProcedureError(
            f"no servo of {hardware.name} answers on {bus.port} at {bus.baudrate} baud: is the arm powered and on "
            f"this port (robot-rl find-port)? New or reset servos need robot-rl setup-motors robot={hardware.robot} "
            f"hardware={hardware.name} port={bus.port} first")
    if missing:
        raise ProcedureError(f"{', '.join(f'{m.name} (id {m.id})' for m in missing)} of {hardware.name} do(es) not "
                             f"answer on {bus.port} at {bus.baudrate} baud: check the daisy-chain cables; a replaced "
                             f"motor needs robot-rl setup-motors first")
    for m in hardware.motors:
        want = _table(m.model).model_number
        if found[m.id] != want:
            raise ProcedureError(f"motor {m.name} (id {m.id}) is model number {found[m.id]} "
                                 f"({_model_name(hardware.protocol, found[m.id])}), but {hardware.name} expects "
                                 f"{m.model} ({want}): wrong arm on this port, or wrong hardware=")
    return found


def _position_mode(bus, hardware) -> None:
    for m in hardware.motors:
        mode = bus.read(m.id, "Operating_Mode")
        if hardware.protocol == "feetech" and mode != 0:
            bus.write(m.id, "Operating_Mode", 0)
        elif hardware.protocol == "dynamixel" and mode not in (3, 4, 5):  # (extended / current-based) position
            bus.write(m.id, "Operating_Mode", 3)


def average_positions(bus, ids: list[int], seconds: float = 0.2, min_samples: int = 5) -> dict[int, float]:
    """Present_Position per id averaged over ``seconds`` (fractional; readings that
    straddle the 4095/0 wrap are unwrapped around the first)."""
    samples: dict[int, list[float]] = {i: [] for i in ids}
    end = time.monotonic() + seconds
    misses = [0]
    while time.monotonic() < end or len(samples[ids[0]]) < min_samples:
        vals = _read_positions(bus, ids, misses)
        if vals is None:
            continue
        for i in ids:
            samples[i].append(float(vals[i]))
    out = {}
    for i, s in samples.items():
        ref = s[0]
        out[i] = ref + float(np.mean([wrap_ticks(v - ref) for v in s]))
    return out


def _pose_text(hardware, pose: str) -> str:
    p = hardware.pose(pose)
    parts = [f"{n} {math.degrees(v):+.0f} deg" if n != GRIPPER else f"gripper {'closed' if v >= 0.5 else 'open'}"
             for n, v in p.items()]
    return f"Move the {hardware.role} arm to the '{pose}' pose ({', '.join(parts)}) and hold it still."


def _scale(hardware, name: str) -> float:
    """Ticks per unit of a calibration pose value (rad; gripper: closure)."""
    per_rad = 4096 / (2 * math.pi)
    return per_rad * hardware.gripper_travel if name == GRIPPER else per_rad


def _directions_and_zero(hardware, names: list[str], ids: dict[str, int], zero: Mapping[int, float],
                         check: Mapping[int, float], log: Log) -> tuple[dict[str, int], dict[str, float]]:
    """Each motor's direction from the zero -> check change, and its zero_ticks."""
    pz, pc = hardware.pose("zero"), hardware.pose("check")
    directions, zero_ticks, still = {}, {}, []
    for n in names:
        i = ids[n]
        moved = float(wrap_ticks(check[i] - zero[i]))
        want = (pc[n] - pz[n]) * _scale(hardware, n)
        if abs(want) < MIN_MOVE_TICKS:
            raise ProcedureError(f"{hardware.name}: the 'zero' and 'check' poses give {n} (almost) the same angle, "
                                 "so its direction cannot be told: fix the calibration poses in the hardware description")
        if abs(moved) < MIN_MOVE_TICKS:
            still.append(f"{n} (moved {moved:+.0f} ticks, expected {abs(want):.0f})")
            continue
        directions[n] = 1 if (moved > 0) == (want > 0) else -1
        ratio = abs(moved) / abs(want)
        if not 0.6 < ratio < 1.6:
            log(f"warning: {n} moved {abs(moved):.0f} ticks between the zero and check poses, expected about "
                f"{abs(want):.0f}: was the pose right?")
        zero_ticks[n] = zero[i] - directions[n] * pz[n] * _scale(hardware, n)
    if still:
        raise ProcedureError(f"joint(s) did not move between the 'zero' and 'check' poses: {', '.join(still)}. "
                             "Hold the arm in each pose as described and run calibrate again")
    return directions, zero_ticks


# -- setup-motors ------------------------------------------------------------------------------

def _bauds(hardware) -> list[int]:
    """The bauds to look for a servo at: the arm's own first, then the model's table."""
    table = _table(hardware.motors[0].model)
    rest = [b for b in table.baudrates.values() if b != hardware.baudrate]
    return [hardware.baudrate] + rest


def find_single_servo(bus, hardware, motor, exclude: Iterable[tuple[int, int]] = (),
                      bauds: list[int] | None = None, timeout_s: float = 0.03, log: Log = print
                      ) -> tuple[int, int, int]:
    """The one servo on the bus: ``(id, baud, model_number)``. Servos at ``exclude``
    ((id, baud) pairs set up earlier in this run) are ignored if they still answer."""
    from robot_rl.drivers.servo.bus import wire_time_s
    from robot_rl.drivers.servo.errors import PortError, ServoError
    exclude = set(exclude)
    found: dict[tuple[int, int], int] = {}
    bauds = bauds or _bauds(hardware)
    quick = sorted({1, *(m.id for m in hardware.motors)})
    skipped: list[int] = []

    def look(ask) -> None:
        for baud in bauds:
            if baud in skipped:
                continue
            try:
                bus.set_baudrate(baud)
            except PortError:
                skipped.append(baud)
                continue
            try:
                got = ask(timeout_s + wire_time_s(48, baud))
            except ServoError:
                got = {}
            for sid, num in got.items():
                if (sid, baud) not in exclude:
                    found[(sid, baud)] = num

    look(lambda t: bus.broadcast_ping(timeout_s=t))
    if not found:  # a servo that ignores the broadcast (or replies that collided): ask the usual ids
        look(lambda t: bus.scan(quick, timeout_s=t))
    if not found:
        raise ProcedureError(
            f"no servo answers on {bus.port} at any baud rate ({', '.join(str(b) for b in bauds if b not in skipped)})"
            f": is the '{motor.name}' motor connected to the controller board, and the board powered?"
            + (f" (the port refused {skipped} baud)" if skipped else ""))
    if len(found) > 1:
        listing = ", ".join(f"id {i} at {b} baud" for (i, b) in sorted(found))
        raise ProcedureError(f"{len(found)} servos answer on {bus.port} ({listing}) but only the '{motor.name}' motor "
                             "may be connected: disconnect the others and try again")
    (sid, baud), number = next(iter(found.items()))
    want = _table(motor.model)
    if number != want.model_number:
        raise ProcedureError(f"the servo connected for '{motor.name}' is model number {number} "
                             f"({_model_name(hardware.protocol, number)}) at id {sid}, {baud} baud, but "
                             f"{hardware.name} expects {motor.model} (model number {want.model_number}): connect the "
                             "right motor, or pick the right hardware=")
    return sid, baud, number


def setup_motor(bus, hardware, motor, sid: int, baud: int, log: Log = print) -> None:
    """Give the lone servo at (sid, baud) the motor's id and the arm's baud rate, then
    check it answers there."""
    from robot_rl.drivers.servo.errors import ServoError
    table = _table(motor.model)
    codes = {b: code for code, b in table.baudrates.items()}
    if hardware.baudrate not in codes:
        raise ProcedureError(f"{hardware.name}: {motor.model} cannot run at {hardware.baudrate} baud "
                             f"(it supports {sorted(codes)})")
    bus.set_baudrate(baud)
    bus.set_model(sid, motor.model)
    _unlock(bus, [sid], hardware.protocol)
    if sid != motor.id:
        bus.write(sid, "ID", motor.id)  # takes effect after the reply
        bus.set_model(motor.id, motor.model)
    if baud != hardware.baudrate:
        bus.write(motor.id, "Baud_Rate", codes[hardware.baudrate])
    bus.set_baudrate(hardware.baudrate)
    time.sleep(0.02)  # EEPROM write + baud switch on a real servo
    try:
        number = bus.ping(motor.id, retries=5)
    except ServoError as e:
        raise ProcedureError(f"'{motor.name}' does not answer at its new id {motor.id}, {hardware.baudrate} baud ({e}): "
                             "power-cycle the motor and run setup-motors again") from None
    if number != table.model_number:
        raise ProcedureError(f"after setup, id {motor.id} answers as model number {number}, not {motor.model}: "
                             "is another servo connected?")
    _lock(bus, [motor.id], hardware.protocol)
    log(f"'{motor.name}' motor: id {sid} @ {baud} baud -> id {motor.id} @ {hardware.baudrate} baud")


def setup_motors(port: str, hardware, prompter: Prompter, *, motors: list[str] | None = None,
                 log: Log = print) -> dict[str, dict[str, int]]:
    """Set each motor's id and baud rate, one motor connected at a time, gripper first
    (LeRobot's order: a factory-new servo has id 1, the last one set up)."""
    todo = [m for m in reversed(hardware.motors) if motors is None or m.name in motors]
    if motors is not None and len(todo) != len(motors):
        unknown = sorted(set(motors) - {m.name for m in hardware.motors})
        raise ProcedureError(f"unknown motor(s) {unknown} for {hardware.name} (motors: "
                             f"{[m.name for m in hardware.motors]})")
    done: list[tuple[int, int]] = []
    report = {}
    bus = _bus(port, hardware)
    with bus:
        for m in todo:
            prompter.ask("plug", f"Connect the controller board to the '{m.name}' motor ONLY (id {m.id}).",
                         arm=hardware.role, motor=m.name, only=True)
            sid, baud, _ = find_single_servo(bus, hardware, m, exclude=done, log=log)
            setup_motor(bus, hardware, m, sid, baud, log=log)
            done.append((m.id, hardware.baudrate))
            report[m.name] = {"found_id": sid, "found_baud": baud, "id": m.id, "baud": hardware.baudrate}
        if motors is None:  # the whole arm: chained, every motor must answer at its new id
            prompter.ask("plug_all", "Connect all the motors in a daisy chain, as they sit on the arm.",
                         arm=hardware.role, motors=[m.name for m in hardware.motors])
            check_motors(bus, hardware)
            log(f"all {len(hardware.motors)} motors answer at their ids at {hardware.baudrate} baud")
    return report


# -- calibrate -----------------------------------------------------------------------------------

def configure(bus, hardware, log: Log = print) -> dict[str, dict[str, int]]:
    """Write the description's ``configure`` registers (``all`` + per motor), read them
    back. Torque must be off (it is turned off here); Feetech is unlocked and relocked."""
    written: dict[str, dict[str, int]] = {}
    ids = [m.id for m in hardware.motors]
    _unlock(bus, ids, hardware.protocol)
    for m in hardware.motors:
        regs = {**hardware.configure.get("all", {}), **hardware.configure.get(m.name, {})}
        table = _table(m.model)
        for reg, value in regs.items():
            if reg not in table.registers:
                raise ProcedureError(f"{hardware.name}: configure sets {reg!r}, which a {m.model} does not have "
                                     f"(motor {m.name}); fix the hardware description")
            bus.write(m.id, reg, int(value))
        back = {reg: bus.read(m.id, reg) for reg in regs}
        bad = {r: (v, regs[r]) for r, v in back.items() if v != int(regs[r])}
        if bad:
            kept = ", ".join(f"{r}={w} (reads {v})" for r, (v, w) in bad.items())
            raise ProcedureError(f"{m.name} (id {m.id}) did not keep {kept}: is the servo's EEPROM locked?")
        written[m.name] = back
    _lock(bus, ids, hardware.protocol)
    return written


def _open_checked(port: str, hardware):
    bus = _bus(port, hardware)
    bus.open()
    try:
        check_motors(bus, hardware)
    except BaseException:
        bus.close()
        raise
    return bus


def _sweep(bus, hardware, prompter: Prompter, ids: list[int], zero: Mapping[int, float],
           seconds: float | None = None, timeout_s: float = 600.0) -> tuple[dict[int, float], dict[int, float]]:
    """Track each motor's extreme readings (relative to the zero reading) while the
    person sweeps every joint; until the person is done."""
    lo = {i: 0.0 for i in ids}
    hi = {i: 0.0 for i in ids}
    task = prompter.start("sweep", f"Move every joint of the {hardware.role} arm (and the gripper) slowly through "
                                   "its whole range of motion, and back.", arm=hardware.role, seconds=seconds)
    end = time.monotonic() + timeout_s
    misses = [0]
    while True:
        finished = task.done()
        vals = _read_positions(bus, ids, misses)
        for i in ids if vals is not None else ():
            d = float(wrap_ticks(vals[i] - zero[i]))
            lo[i], hi[i] = min(lo[i], d), max(hi[i], d)
        if finished:
            break
        if time.monotonic() > end:
            raise ProcedureError(f"the sweep did not finish in {timeout_s:.0f} s")
    return lo, hi


def calibrate(port: str, hardware, spec, prompter: Prompter, *, arm_id: str, average_s: float = 0.2,
              sweep_s: float | None = None, log: Log = print) -> MotorCalibration:
    """Calibrate one arm through its port (see the module docstring); the servos keep the
    homing offsets, configuration and limits; the returned calibration is not saved.
    ``sweep_s``: how long the (virtual) person takes for the sweep (a human takes their time)."""
    hardware.check_spec(spec)
    names = list(spec.joint_names) + ([spec.gripper.name] if spec.gripper else [])
    idn = {n: hardware.motor(n).id for n in names}
    ids = [idn[n] for n in names]
    proto = hardware.protocol
    bus = _open_checked(port, hardware)
    with bus:
        _unlock(bus, ids, proto)
        _position_mode(bus, hardware)
        log(f"torque is off: the {hardware.role} arm is limp (hold it)")
        for m in hardware.motors:  # LeRobot's reset: no offset, full range (Dynamixel: normal direction)
            if "Drive_Mode" in _table(m.model).registers:
                bus.write(m.id, "Drive_Mode", 0)
            bus.write(m.id, "Homing_Offset", 0)
            bus.write(m.id, "Min_Position_Limit", 0)
            bus.write(m.id, "Max_Position_Limit", _table(m.model).resolution - 1)

        prompter.ask("pose", _pose_text(hardware, "zero"), arm=hardware.role, pose="zero")
        raw = average_positions(bus, ids, average_s)
        homing = {i: half_turn_homing(proto, raw[i]) for i in ids}
        for i in ids:
            bus.write(i, "Homing_Offset", homing[i])
        zero = {i: homed_reading(proto, raw[i], homing[i]) for i in ids}
        now = bus.sync_read("Present_Position", ids)
        off = {n: now[idn[n]] for n in names if abs(wrap_ticks(now[idn[n]] - zero[idn[n]])) > MIN_MOVE_TICKS}
        if off:
            raise ProcedureError(f"after writing Homing_Offset the zero pose reads {off}, expected about {HALF_TURN}: "
                                 "the arm moved, or the servos did not take the offset (EEPROM locked?)")
        log("zero pose: " + ", ".join(f"{n} raw {raw[idn[n]]:.1f} -> Homing_Offset {homing[idn[n]]}" for n in names))

        lo, hi = _sweep(bus, hardware, prompter, ids, zero, sweep_s)

        prompter.ask("pose", _pose_text(hardware, "check"), arm=hardware.role, pose="check")
        check = average_positions(bus, ids, average_s)
        directions, zero_ticks = _directions_and_zero(hardware, names, idn, zero, check, log)
        ranges = {}
        for n in names:
            i = idn[n]
            d = float(wrap_ticks(check[i] - zero[i]))
            a, b = min(lo[i], d), max(hi[i], d)
            res = _table(hardware.motor(n).model).resolution
            ranges[n] = (max(0, math.floor(zero[i] + a)), min(res - 1, math.ceil(zero[i] + b)))
        flat = [n for n in names if ranges[n][1] - ranges[n][0] < 2 * MIN_MOVE_TICKS]
        if flat:
            raise ProcedureError(f"joint(s) {flat} hardly moved during the sweep: move every joint through its whole "
                                 "range and run calibrate again")

        configure(bus, hardware, log)
        _unlock(bus, ids, proto)
        for n in names:
            bus.write(idn[n], "Min_Position_Limit", ranges[n][0])
            bus.write(idn[n], "Max_Position_Limit", ranges[n][1])
        _lock(bus, ids, proto)
        prompter.tell("release", f"Done: you can let go of the {hardware.role} arm.", arm=hardware.role)
    return build(hardware, spec, arm_id=arm_id, homing={n: homing[idn[n]] for n in names}, zero_ticks=zero_ticks,
                 directions=directions, ranges=ranges)


def adopt_lerobot(port: str, hardware, spec, prompter: Prompter, lerobot: Mapping | str, *, arm_id: str,
                  average_s: float = 0.2, log: Log = print) -> MotorCalibration:
    """Keep a LeRobot calibration (its Homing_Offset and range are written to the servos,
    as LeRobot does on connect) and measure what it lacks, the spec's zero and each
    joint's direction, with the zero and check poses."""
    assumed = MotorCalibration.from_lerobot(lerobot, hardware, spec, arm_id=arm_id)
    names = [m.name for m in assumed.motors]
    idn = {m.name: m.id for m in assumed.motors}
    ids = [idn[n] for n in names]
    bus = _open_checked(port, hardware)
    with bus:
        _unlock(bus, ids, hardware.protocol)
        for m in assumed.motors:
            bus.write(m.id, "Homing_Offset", m.homing_offset)
            bus.write(m.id, "Min_Position_Limit", m.range_min)
            bus.write(m.id, "Max_Position_Limit", m.range_max)
        _lock(bus, ids, hardware.protocol)
        prompter.ask("pose", _pose_text(hardware, "zero"), arm=hardware.role, pose="zero")
        zero = average_positions(bus, ids, average_s)
        prompter.ask("pose", _pose_text(hardware, "check"), arm=hardware.role, pose="check")
        check = average_positions(bus, ids, average_s)
        directions, zero_ticks = _directions_and_zero(hardware, names, idn, zero, check, log)
        prompter.tell("release", f"Done: you can let go of the {hardware.role} arm.", arm=hardware.role)
    ranges = {m.name: (m.range_min, m.range_max) for m in assumed.motors}
    return build(hardware, spec, arm_id=arm_id, homing={m.name: m.homing_offset for m in assumed.motors},
                 zero_ticks=zero_ticks, directions=directions, ranges=ranges,
                 source="lerobot import (offsets and ranges from LeRobot; zero and directions measured)")
