"""A servo bus on a pseudo-terminal: virtual Feetech / Dynamixel servos, byte for byte.

    servos = [VirtualServo(i, "sts3215") for i in range(1, 7)]
    emu = ServoBusEmulator("feetech", servos, faults=BusFaults(drop_reply=0.01), seed=0)
    port = emu.start()                      # e.g. /dev/pts/7 -- open it like /dev/ttyACM0
    ...
    emu.close()

The emulator owns the master side of a pty; a client (our ``ServoBus``, the vendor SDKs,
LeRobot) opens the slave path with pyserial like a USB adapter. A thread parses
instruction packets with the protocol codec and answers them from each servo's register
file with the firmware's rules:

- Feetech: Present_Position = (raw - Homing_Offset) mod 4096, raw goal = (Goal_Position +
  Homing_Offset) mod 4096, Goal_Position clamped to [Min, Max]_Position_Limit; EEPROM
  registers writable only while Lock == 0; writes to read-only registers ignored.
- Dynamixel 2.0: Present_Position = raw + Homing_Offset, raw goal = Goal - Homing_Offset;
  writing EEPROM while Torque_Enable == 1, or a read-only register, fails with an access
  error; a goal outside the position limits (position mode) with a range error; hardware
  alarms set Hardware_Error_Status and the alert bit (0x80) of every status packet.
- ID and Baud_Rate changes take effect after the reply; a broadcast PING is answered by
  every servo; a SYNC_READ is answered servo after servo in the order of the request's ids;
  SYNC_WRITE and broadcast writes get no reply.
- A servo answers only when the port's baud (read from the pty's termios) equals its own
  Baud_Rate; otherwise it hears noise and stays silent (counted as ``baud_mismatch``).
- Turning torque on makes the servo hold where it is (Goal_Position := Present_Position).

Before a read the servo's ``plant`` (``ServoPlant``) is sensed for the Present_* registers;
Torque_Enable / Goal_Position writes are passed to ``plant.command``. Without a plant a
servo is a static register file whose position follows the goal while torque is on
(``servo.state["position"]`` is the raw encoder, settable to "move the arm by hand").

Replies are timed like a real bus: request wire time + Return_Delay_Time (2 us units) +
reply wire time at the port's baud (10 bits per byte): slept (the emulator thread's timer
slack is set to 1 ns), then busy-waited for the last 100 microseconds. Faults (``BusFaults``) are drawn from one seeded RNG.
``unplug()`` closes the master side: the client's next read/write fails like a pulled USB
adapter, and the pty path disappears.
"""
from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import random
import select
import termios
import threading
import time
import tty
import typing
from dataclasses import dataclass, field

from robot_rl.drivers.servo.protocol import Packet, Protocol
from robot_rl.drivers.servo.protocols import get_protocol, get_table, protocol_key, protocol_of_model
from robot_rl.drivers.servo.table import Register

log = logging.getLogger(__name__)

BITS_PER_BYTE = 10
RETURN_DELAY_UNIT_S = 2e-6  # Return_Delay_Time unit (Feetech STS and Dynamixel 2.0)
BUSY_WAIT_S = 0.0001  # the last part of a wait is spun, not slept (the thread's timer slack is 1 us)
TCGETS2 = 0x802C542A  # asm-generic; x86_64 and aarch64

# Dynamixel 2.0 status error numbers (bits 0..6) and the alert bit
DXL_ERRORS = {"result_fail": 1, "instruction": 2, "checksum": 3, "range": 4, "data_length": 5, "data_limit": 6,
              "access": 7}
DXL_ALERT = 0x80
DXL_HARDWARE_BITS = {"voltage": 0, "overheat": 2, "encoder": 3, "electrical_shock": 4, "overload": 5}
# Feetech STS status error bits (contract; used when the codec cannot tell)
FEETECH_BITS = {"voltage": 0, "angle": 1, "overheat": 2, "overcurrent": 3, "overload": 5}

# sensor key -> (register names (first that exists), scale: register units per sensor unit)
_VELOCITY_DXL = 60.0 / (0.229 * 4096)  # 0.229 rpm per unit
_SENSE_REGS = {
    "velocity": (("Present_Velocity",), {"feetech": 1.0, "dynamixel": _VELOCITY_DXL}),
    "load": (("Present_Load",), {"feetech": 1.0, "dynamixel": 1.0}),
    "current": (("Present_Current",), {"feetech": 1 / 6.5, "dynamixel": 1.0}),
    "temperature": (("Present_Temperature",), {"feetech": 1.0, "dynamixel": 1.0}),
    "voltage": (("Present_Voltage", "Present_Input_Voltage"), {"feetech": 1.0, "dynamixel": 1.0}),
    "moving": (("Moving",), {"feetech": 1.0, "dynamixel": 1.0}),
}


class ServoPlant(typing.Protocol):
    def sense(self, servo: "VirtualServo") -> dict[str, int]:
        """Raw (pre-homing) readings: position (0..4095 raw encoder ticks), velocity
        (signed ticks/s), load (signed, 0.1% of max torque), current (mA), temperature (C),
        voltage (0.1 V), moving (0/1). Missing keys keep their last value."""

    def command(self, servo: "VirtualServo", torque: bool, goal_raw: int | None) -> None:
        """Torque on/off and the raw encoder goal (homing offset already removed)."""


def _clamp_to(reg: Register, value: int) -> int:
    """`value` limited to what `reg` can hold."""
    bits = 8 * reg.size
    if reg.sign_bit is not None:
        lim = (1 << reg.sign_bit) - 1
        return max(-lim, min(lim, value))
    if reg.signed:
        return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, value))
    return max(0, min((1 << bits) - 1, value))


class VirtualServo:
    """One servo: a register file with firmware rules, optionally driven by a plant."""

    def __init__(self, servo_id: int, model: str, plant: ServoPlant | None = None, *, name: str = "",
                 baudrate: int = 1_000_000):
        self.model = model
        self.table = get_table(model)
        self.protocol_name = protocol_of_model(model)
        self.plant = plant
        self.name = name
        self.lock = threading.RLock()
        size = max([self.table.size] + [r.addr + r.size for r in self.table.registers.values()])
        self.regs = bytearray(size)
        for r in self.table.registers.values():
            try:
                self._put(r, r.default)
            except ValueError:
                pass
        if "Model_Number" in self.table.registers:
            self._put(self.table["Model_Number"], self.table.model_number)
        self._put(self.table["ID"], int(servo_id))
        self.baudrate = baudrate  # property: writes Baud_Rate
        voltage = 74 if self.protocol_name == "feetech" else 50
        if "Min_Voltage_Limit" in self.table.registers and "Max_Voltage_Limit" in self.table.registers:
            lo, hi = self.get("Min_Voltage_Limit"), self.get("Max_Voltage_Limit")
            if 0 < lo < hi:
                voltage = (lo + hi) // 2
        # the physical state: raw encoder ticks etc. (the plant's last reading)
        self.state: dict[str, int] = {"position": 2048, "velocity": 0, "load": 0, "current": 0,
                                      "temperature": 28, "voltage": voltage, "moving": 0}
        self.errors: set[str] = set()  # injected alarm flags
        self._refresh_present()

    # -- register access (emulator side, no firmware rules) ------------------------------------
    def _put(self, r: Register, value: int) -> None:
        self.regs[r.addr:r.addr + r.size] = self.table.encode(r.name, value)

    def get(self, reg: str) -> int:
        r = self.table[reg]
        with self.lock:
            return self.table.decode(reg, bytes(self.regs[r.addr:r.addr + r.size]))

    def set(self, reg: str, value: int) -> None:
        with self.lock:
            self._put(self.table[reg], int(value))

    def has(self, reg: str) -> bool:
        return reg in self.table.registers

    @property
    def id(self) -> int:
        return self.get("ID")

    @property
    def baudrate(self) -> int:
        value = self.get("Baud_Rate")
        return self.table.baudrates.get(value, -1)

    @baudrate.setter
    def baudrate(self, baud: int) -> None:
        for value, b in self.table.baudrates.items():
            if b == int(baud):
                self.set("Baud_Rate", value)
                return
        raise ValueError(f"{self.model} cannot run at {baud} baud (rates: {sorted(self.table.baudrates.values())})")

    @property
    def return_delay_s(self) -> float:
        return self.get("Return_Delay_Time") * RETURN_DELAY_UNIT_S if self.has("Return_Delay_Time") else 0.0

    @property
    def torque(self) -> bool:
        return bool(self.get("Torque_Enable"))

    # -- position conventions ---------------------------------------------------------------
    def _homing(self) -> int:
        return self.get("Homing_Offset") if self.has("Homing_Offset") else 0

    def present_from_raw(self, raw: int) -> int:
        if self.protocol_name == "feetech":
            return (int(raw) - self._homing()) % self.table.resolution
        return int(raw) + self._homing()

    def goal_to_raw(self, goal: int) -> int:
        if self.protocol_name == "feetech":
            return (int(goal) + self._homing()) % self.table.resolution
        return int(goal) - self._homing()

    # -- firmware ------------------------------------------------------------------------------
    def _sense(self) -> None:
        if self.plant is not None:
            readings = self.plant.sense(self)
            for k, v in readings.items():
                self.state[k] = int(round(v))
        self._refresh_present()

    def _refresh_present(self) -> None:
        t = self.table
        if "Present_Position" in t.registers:
            self._put(t["Present_Position"], _clamp_to(t["Present_Position"],
                                                       self.present_from_raw(self.state["position"])))
        for key, (names, scale) in _SENSE_REGS.items():
            for name in names:
                if name in t.registers:
                    value = int(round(self.state.get(key, 0) * scale[self.protocol_name]))
                    self._put(t[name], _clamp_to(t[name], value))
                    break

    def _command(self) -> None:
        torque = self.torque
        goal_raw = self.goal_to_raw(self.get("Goal_Position")) if torque else None
        if self.plant is not None:
            self.plant.command(self, torque, goal_raw)
        elif torque:
            self.state["position"] = goal_raw
            self._refresh_present()

    def __repr__(self) -> str:
        return f"VirtualServo(id={self.id}, model={self.model!r}, name={self.name!r}, baud={self.baudrate})"


@dataclass
class BusFaults:
    drop_reply: float = 0.0  # probability a reply is not sent
    corrupt_reply: float = 0.0  # probability one byte of a reply is flipped
    garbage: float = 0.0  # probability of junk bytes before a reply
    error_bits: dict[int, tuple[str, float]] = field(default_factory=dict)  # id -> (flag, at_s after start)
    unplug_at_s: float | None = None


def _pty_baud(fd: int) -> int:
    """The baud a pty was set to (pyserial sets it on the slave; the master reports the same)."""
    try:
        buf = array.array("I", [0] * 16)
        fcntl.ioctl(fd, TCGETS2, buf)
        if buf[10]:
            return int(buf[10])  # c_ospeed
    except OSError:
        pass
    speed = termios.tcgetattr(fd)[5]
    for name in dir(termios):
        if name.startswith("B") and name[1:].isdigit() and getattr(termios, name) == speed:
            return int(name[1:])
    return 0


def _precise_timers() -> None:
    """Linux: this thread's timer slack to 1 ns, so a short sleep ends within tens of
    microseconds instead of ~80 us (the default 50 us slack plus wake-up); then the spin
    at the end of a wait stays short and leaves the GIL to the client thread."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def wait_until(t: float) -> None:
    """Sleep until perf_counter() reaches `t`, spinning the last few hundred microseconds."""
    while True:
        rem = t - time.perf_counter()
        if rem <= 0:
            return
        if rem > BUSY_WAIT_S:
            time.sleep(rem - BUSY_WAIT_S)


class ServoBusEmulator:
    """Virtual servos on a pty (see the module docstring)."""

    def __init__(self, protocol: str | Protocol, servos: list[VirtualServo], *, faults: BusFaults | None = None,
                 seed: int = 0, link: str | None = None):
        self.protocol = get_protocol(protocol)
        self.protocol_name = protocol_key(self.protocol)
        self.faults = faults or BusFaults()
        self.link = link
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self.servos: list[VirtualServo] = []
        for s in servos:
            self.attach(s)
        self._names = {code: name for name, code in self.protocol.instructions.items()}
        self._addr_bytes = 2 if self.protocol_name == "dynamixel" else 1
        self._master = self._slave = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = False
        self._unplug = False
        self.unplugged = False
        self.port: str | None = None
        self._t0 = 0.0
        self._bus_free = 0.0
        self._errors_applied: set[int] = set()
        self._stats = {"requests": 0, "replies": 0, "dropped": 0, "corrupted": 0, "faulty_requests": 0, "garbage_sent": 0,
                       "baud_mismatch": 0, "collisions": 0, "unknown_id": 0, "bad_request_bytes": 0,
                       "overflow": 0, "sync_read_ids": 0, "instructions": {}}
        self._error_codes = self._find_error_codes()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> str:
        """Open the pty and start answering; returns the port path (with ``link``, that
        symlink points at it too)."""
        if self._thread is not None:
            return self.port
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        attrs = termios.tcgetattr(self._slave)
        attrs[4] = attrs[5] = termios.B1000000 if hasattr(termios, "B1000000") else termios.B115200
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        if self.link:
            if os.path.islink(self.link):
                os.unlink(self.link)
            elif os.path.exists(self.link):
                raise FileExistsError(f"cannot create the port link {self.link}: a file is in the way")
            os.symlink(self.port, self.link)
        self._t0 = time.perf_counter()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"servo-emu-{self.protocol_name}", daemon=True)
        self._thread.start()
        return self.port

    def close(self) -> None:
        """Stop the thread and release the pty (idempotent, callable from any thread)."""
        with self._lock:
            self._stop = True
            self._wake()
            th, self._thread = self._thread, None
        if th is not None and th is not threading.current_thread():
            th.join(timeout=5)
        self._close_fds()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1
        if self.link and os.path.islink(self.link):
            try:
                os.unlink(self.link)
            except OSError:
                pass

    def __enter__(self) -> "ServoBusEmulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def unplug(self) -> None:
        """The USB adapter is pulled: the pty goes away, the client's I/O fails."""
        with self._lock:
            self._unplug = True
            self._wake()
        th = self._thread
        if th is not None and th is not threading.current_thread():
            th.join(timeout=5)
        if not self.unplugged:  # thread not running
            self.unplugged = True
            self._close_fds()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _close_fds(self) -> None:
        with self._lock:
            for name in ("_master", "_slave"):
                fd = getattr(self, name)
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                    setattr(self, name, -1)

    # -- servos ----------------------------------------------------------------------------------
    def attach(self, servo: VirtualServo) -> VirtualServo:
        """Plug a servo into the bus (e.g. one motor at a time during setup)."""
        if servo.protocol_name != protocol_key(self.protocol):
            raise ValueError(f"{servo.model} speaks {servo.protocol_name}, not {protocol_key(self.protocol)}")
        with self._lock:
            if servo not in self.servos:
                self.servos.append(servo)
        return servo

    def detach(self, servo_id: int | VirtualServo) -> VirtualServo | None:
        """Unplug a servo (by its current id or the object); returns it."""
        with self._lock:
            for s in self.servos:
                if s is servo_id or (not isinstance(servo_id, VirtualServo) and s.id == int(servo_id)):
                    self.servos.remove(s)
                    return s
        return None

    def servo(self, servo_id: int) -> VirtualServo:
        with self._lock:
            for s in self.servos:
                if s.id == servo_id:
                    return s
        raise KeyError(f"no servo with id {servo_id} on the virtual bus (ids: {[s.id for s in self.servos]})")

    def inject_error(self, servo_id: int, names) -> None:
        """Raise alarm flags on a servo (e.g. ``["overload"]``): every status packet reports
        them (Dynamixel: the alert bit + Hardware_Error_Status). A flag the servo's shutdown
        mask (Dynamixel Shutdown, Feetech Unloading_Condition) covers turns its torque off
        until the flag is cleared (Dynamixel: REBOOT)."""
        if isinstance(names, str):
            names = [names]
        s = self.servo(servo_id)
        with s.lock:
            valid = self._hw_bits if self.protocol_name == "dynamixel" else self._error_codes
            unknown = [n for n in names if n not in valid]
            if unknown:
                known = sorted(self._hw_bits if self.protocol_name == "dynamixel" else self._error_codes)
                raise ValueError(f"unknown {self.protocol_name} alarm flag(s) {unknown} (known: {known})")
            s.errors |= set(names)
            self._sync_error_regs(s)
            if self._shutdown(s) and s.torque:
                s.set("Torque_Enable", 0)
                s._command()

    def clear_error(self, servo_id: int) -> None:
        s = self.servo(servo_id)
        with s.lock:
            s.errors.clear()
            self._sync_error_regs(s)

    def _shutdown(self, s: VirtualServo) -> bool:
        """Whether an active alarm is one the servo cuts its torque for."""
        if self.protocol_name == "dynamixel":
            mask = s.get("Shutdown") if s.has("Shutdown") else 0xFF
            return bool(mask & self._hw_value(s.errors))
        mask = s.get("Unloading_Condition") if s.has("Unloading_Condition") else 0
        return bool(mask & self._feetech_bits(s.errors))

    def _hw_value(self, names) -> int:
        return sum(1 << b for n, b in self._hw_bits.items() if n in names)

    def _sync_error_regs(self, s: VirtualServo) -> None:
        if self.protocol_name == "dynamixel" and s.has("Hardware_Error_Status"):
            s.set("Hardware_Error_Status", self._hw_value(s.errors))
        elif self.protocol_name == "feetech" and s.has("Status"):
            s.set("Status", self._feetech_bits(s.errors))

    # -- error codes -------------------------------------------------------------------------------
    def _find_error_codes(self) -> dict[str, int]:
        """flag name -> status byte value, read off the codec's ``error_names``."""
        codes: dict[str, int] = {}
        if self.protocol_name == "dynamixel":
            for v in range(1, 0x80):
                names = tuple(self.protocol.error_names(v))
                if len(names) == 1 and names[0] not in codes:
                    codes[names[0]] = v
            for k, v in DXL_ERRORS.items():
                codes.setdefault(k, v)
            # Hardware_Error_Status bits, from the codec when it can name them
            self._hw_bits = {}
            names_of = getattr(self.protocol, "hardware_error_names", None)
            for b in range(8):
                found = tuple(names_of(1 << b)) if names_of else ()
                if len(found) == 1:
                    self._hw_bits.setdefault(found[0], b)
            if not self._hw_bits:
                self._hw_bits = dict(DXL_HARDWARE_BITS)
        else:
            self._hw_bits = {}
            for b in range(8):
                names = tuple(self.protocol.error_names(1 << b))
                if len(names) == 1:
                    codes.setdefault(names[0], 1 << b)
            for k, b in FEETECH_BITS.items():
                codes.setdefault(k, 1 << b)
        return codes

    def _feetech_bits(self, names) -> int:
        return sum(self._error_codes.get(n, 0) for n in set(names))

    def _status_byte(self, s: VirtualServo, error: str | None = None) -> int:
        if self.protocol_name == "dynamixel":
            code = self._error_codes.get(error, 0) if error else 0
            if self._hw_value(s.errors):
                code |= DXL_ALERT
            return code
        return self._feetech_bits(s.errors) | (self._error_codes.get(error, 0) if error else 0)

    # -- stats ---------------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            out = dict(self._stats)
            out["instructions"] = dict(self._stats["instructions"])
            out["servos"] = [s.id for s in self.servos]
            out["port"] = self.port
            return out

    # -- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        _precise_timers()
        buf = bytearray()
        try:
            while True:
                with self._lock:
                    if self._stop:
                        return
                    if self._unplug:
                        break
                timeout = 0.5
                if self.faults.unplug_at_s is not None:
                    left = self._t0 + self.faults.unplug_at_s - time.perf_counter()
                    if left <= 0:
                        break
                    timeout = min(timeout, left)
                try:
                    r, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
                except (OSError, ValueError):
                    return
                if self._wake_r in r:
                    try:
                        os.read(self._wake_r, 64)
                    except OSError:
                        pass
                    continue
                if self._master not in r:
                    continue
                try:
                    data = os.read(self._master, 4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    if e.errno == errno.EIO:  # no slave open right now
                        time.sleep(0.01)
                        continue
                    raise
                t_rx = time.perf_counter()
                buf += data
                while buf:
                    pkt, consumed, garbage = self.protocol.find_packet(buf, False)
                    if consumed:
                        del buf[:consumed]
                    if garbage:
                        self._stats["bad_request_bytes"] += garbage
                    if pkt is None:
                        if consumed:
                            continue
                        break
                    try:
                        self._handle(pkt, t_rx)
                    except Exception:  # noqa: BLE001 - a firmware bug must not kill the bus
                        log.exception("virtual servo bus: error handling %r", pkt)
        except Exception:  # noqa: BLE001
            log.exception("virtual servo bus thread died")
            return
        # unplugged
        self.unplugged = True
        self._close_fds()

    def _send(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except BlockingIOError:
            self._stats["overflow"] += 1
        except OSError:
            pass

    # -- instruction handling -----------------------------------------------------------------------------
    def _apply_scheduled_errors(self) -> None:
        if not self.faults.error_bits:
            return
        now = time.perf_counter() - self._t0
        for sid, (flag, at) in self.faults.error_bits.items():
            if sid not in self._errors_applied and now >= at:
                try:
                    self.inject_error(sid, [flag])
                    self._errors_applied.add(sid)
                except KeyError:
                    pass

    def _u(self, b: bytes) -> int:
        return int.from_bytes(b, "little")

    def _handle(self, pkt: Packet, t_rx: float) -> None:
        self._apply_scheduled_errors()
        st = self._stats
        st["requests"] += 1
        instr = self._names.get(pkt.code, f"0x{pkt.code:02x}")
        st["instructions"][instr] = st["instructions"].get(instr, 0) + 1
        baud = _pty_baud(self._master) or 1
        bc = self.protocol.broadcast_id
        a = self._addr_bytes
        p = pkt.params
        with self._lock:
            servos = list(self.servos)

        def hearing(ids_order: list[int] | None, sid: int | None = None) -> list[VirtualServo]:
            """Servos that hear the request (right baud), in reply order."""
            if sid is not None:
                match = [s for s in servos if sid == bc or s.id == sid]
                if sid == bc:
                    match.sort(key=lambda s: s.id)
            else:
                match = [s for i in ids_order for s in servos if s.id == i]
            ok = [s for s in match if s.baudrate == baud]
            st["baud_mismatch"] += len(match) - len(ok)
            if not match:
                st["unknown_id"] += 1
            return ok

        replies: list[tuple[VirtualServo, bytes]] = []
        if instr == "ping":
            for s in hearing(None, pkt.id):
                with s.lock:
                    replies.append((s, self.protocol.status(s.id, self._status_byte(s), self._ping_params(s))))
        elif instr == "read":
            addr, n = self._u(p[:a]), self._u(p[a:2 * a])
            if pkt.id != bc:
                for s in hearing(None, pkt.id):
                    if self._replies_to(s, "read"):
                        replies.append((s, self._read_reply(s, pkt.id, addr, n)))
        elif instr == "write":
            addr, data = self._u(p[:a]), bytes(p[a:])
            for s in hearing(None, pkt.id):
                with s.lock:
                    err = self._write(s, addr, data)
                    if pkt.id != bc and self._replies_to(s, "write"):
                        replies.append((s, self.protocol.status(pkt.id, self._status_byte(s, err))))
        elif instr == "sync_read":
            addr, n = self._u(p[:a]), self._u(p[a:2 * a])
            ids = list(p[2 * a:])
            st["sync_read_ids"] += len(ids)
            for s in hearing(ids):
                replies.append((s, self._read_reply(s, s.id, addr, n)))
        elif instr == "sync_write":
            addr, n = self._u(p[:a]), self._u(p[a:2 * a])
            body = p[2 * a:]
            for k in range(0, len(body) - n, n + 1):
                sid, data = body[k], bytes(body[k + 1:k + 1 + n])
                for s in hearing([sid]):
                    with s.lock:
                        self._write(s, addr, data)
        elif instr == "reboot":
            for s in hearing(None, pkt.id):
                with s.lock:
                    if pkt.id != bc:
                        replies.append((s, self.protocol.status(pkt.id, self._status_byte(s))))
                    s.errors.clear()
                    self._sync_error_regs(s)
                    s.set("Torque_Enable", 0)
                    s._command()
        else:
            if self.protocol_name == "dynamixel" and pkt.id != bc:
                for s in hearing(None, pkt.id):
                    replies.append((s, self.protocol.status(pkt.id, self._status_byte(s, "instruction"))))
        if len(replies) > 1 and instr in ("read", "write") or (instr == "ping" and pkt.id != bc and len(replies) > 1):
            replies = self._collide(replies)
        self._reply(replies, t_rx + len(pkt.raw) * BITS_PER_BYTE / baud, baud)

    def _collide(self, replies: list[tuple[VirtualServo, bytes]]) -> list[tuple[VirtualServo, bytes]]:
        """Two servos with the same id answer at once: their bits AND on the wire."""
        self._stats["collisions"] += 1
        n = max(len(r) for _, r in replies)
        out = bytearray(b"\xff" * n)
        for _, r in replies:
            for i, byte in enumerate(r):
                out[i] &= byte
        return [(replies[0][0], bytes(out))]

    def _replies_to(self, s: VirtualServo, instr: str) -> bool:
        for name in ("Status_Return_Level", "Response_Status_Level"):
            if s.has(name):
                level = s.get(name)
                if self.protocol_name == "dynamixel":
                    return level >= 2 or (level == 1 and instr == "read")
                return level >= 1 or instr == "read"
        return True

    def _ping_params(self, s: VirtualServo) -> bytes:
        if self.protocol_name != "dynamixel":
            return b""
        fw = s.get("Firmware_Version") if s.has("Firmware_Version") else 0
        return int(s.table.model_number).to_bytes(2, "little") + bytes([fw & 0xFF])

    def _read_reply(self, s: VirtualServo, reply_id: int, addr: int, n: int) -> bytes:
        with s.lock:
            s._sense()
            if addr + n > len(s.regs) or n == 0:
                if self.protocol_name == "dynamixel":
                    return self.protocol.status(reply_id, self._status_byte(s, "range"))
                data = bytes(s.regs[addr:addr + n]).ljust(n, b"\0")
            else:
                data = bytes(s.regs[addr:addr + n])
            return self.protocol.status(reply_id, self._status_byte(s), data)

    def _write(self, s: VirtualServo, addr: int, data: bytes) -> str | None:
        """Apply a WRITE with the firmware's rules; returns an error flag name (Dynamixel) or None."""
        t = s.table
        end = addr + len(data)
        touched = [r for r in t.registers.values() if r.addr < end and addr < r.addr + r.size]
        dxl = self.protocol_name == "dynamixel"
        if end > len(s.regs):
            return "range" if dxl else None
        if dxl:
            if any(r.access == "R" for r in touched):
                return "access"
            if s.torque and any(r.eeprom for r in touched):
                return "access"
        before = {r.name: s.get(r.name) for r in touched}
        new = bytearray(s.regs)
        new[addr:end] = data
        if dxl:
            allowed = touched
        else:
            locked = s.has("Lock") and s.get("Lock") != 0
            allowed = [r for r in touched if r.access != "R" and not (r.eeprom and locked)]
        if dxl and "Goal_Position" in (r.name for r in allowed):
            g = t["Goal_Position"]
            goal = t.decode("Goal_Position", bytes(new[g.addr:g.addr + g.size]))
            mode = s.get("Operating_Mode") if s.has("Operating_Mode") else 3
            if mode == 3 and s.has("Min_Position_Limit") and s.has("Max_Position_Limit"):
                lo, hi = s.get("Min_Position_Limit"), s.get("Max_Position_Limit")
                if not lo <= goal <= hi:
                    return "range"
        for r in allowed:
            s.regs[r.addr:r.addr + r.size] = new[r.addr:r.addr + r.size]
        names = {r.name for r in allowed}
        if "Torque_Enable" in names and s.torque and s.errors and self._shutdown(s):
            s.set("Torque_Enable", 0)  # an alarm that cut the torque holds it off
        if not dxl and "Goal_Position" in names and s.has("Min_Position_Limit"):
            lo, hi = s.get("Min_Position_Limit"), s.get("Max_Position_Limit")
            mode = s.get("Operating_Mode") if s.has("Operating_Mode") else 0
            if mode == 0 and hi > lo:
                s.set("Goal_Position", max(lo, min(hi, s.get("Goal_Position"))))
        torque_on = "Torque_Enable" in names and not before.get("Torque_Enable") and s.torque
        if torque_on and "Goal_Position" not in names:  # hold where it is
            s._sense()
            s.set("Goal_Position", _clamp_to(t["Goal_Position"], s.present_from_raw(s.state["position"])))
        if names & {"Torque_Enable", "Goal_Position"}:
            s._command()
        if "Homing_Offset" in names:
            s._refresh_present()
        return None

    def _reply(self, replies: list[tuple[VirtualServo, bytes]], t_req_end: float, baud: int) -> None:
        if not replies:
            self._bus_free = max(self._bus_free, t_req_end)
            return
        t = max(t_req_end, self._bus_free)
        f, rng, st = self.faults, self._rng, self._stats
        faulty = False  # one request answered with at least one dropped / corrupt reply: the client sees one failed attempt
        for s, data in replies:
            if f.drop_reply and rng.random() < f.drop_reply:
                st["dropped"] += 1
                if not faulty:
                    st["faulty_requests"] += 1
                faulty = True
                continue
            if f.corrupt_reply and rng.random() < f.corrupt_reply:
                if not faulty:
                    st["faulty_requests"] += 1
                faulty = True
                buf = bytearray(data)
                i = rng.randrange(len(buf))
                buf[i] ^= rng.randrange(1, 256)
                data = bytes(buf)
                st["corrupted"] += 1
            if f.garbage and rng.random() < f.garbage:
                junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
                data = junk + data
                st["garbage_sent"] += len(junk)
            t += s.return_delay_s + len(data) * BITS_PER_BYTE / baud
            wait_until(t)
            st["replies"] += 1  # before the write: a client that got the reply sees it counted
            self._send(data)
        self._bus_free = t
