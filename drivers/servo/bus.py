"""The servo bus client: one serial port, one protocol, transactions with retries.

    with ServoBus("/dev/ttyACM0", "feetech", 1_000_000, models={1: "sts3215", ...}) as bus:
        bus.ping(1)                                   # -> model number
        bus.write(1, "Torque_Enable", 0)
        pos = bus.sync_read("Present_Position", [1, 2, 3, 4, 5, 6])   # {id: ticks}
        bus.sync_write("Goal_Position", {1: 2048, 2: 1900})

A transaction clears the input buffer, writes the instruction packet and reads status
packets until every expected servo answered. Each reply gets ``timeout_s`` plus its own
wire time at the baud rate (the first one also the request's). Bytes that are not part of
a valid status packet (line noise, a packet that failed its checksum) are skipped and
counted; replies from servos nobody asked are ignored. A failed attempt is retried
``retries`` times (a SYNC_READ retries only the servos still missing), then ends in
``ServoTimeout`` (nothing valid arrived) or ``ServoCorrupt`` (bytes arrived, none valid),
naming the ids. Status error bits become typed exceptions (``errors.status_error``)
raised once the whole reply is consumed; they carry ``.values`` (what was read).

The port is opened with pyserial (``timeout=0``, exclusive) and read with ``select`` on
its file descriptor: no polling sleeps, so a reply is picked up microseconds after it
lands. A port that vanishes (USB adapter pulled) raises ``PortError``.
"""
from __future__ import annotations

import collections
import errno
import os
import select
import threading
import time
from typing import Callable

from robot_rl.drivers.servo.errors import (PortError, ServoCorrupt, ServoError, ServoStatusError, ServoTimeout,
                                           status_error)
from robot_rl.drivers.servo.protocol import PING, READ, SYNC_READ, SYNC_WRITE, WRITE, Packet, Protocol
from robot_rl.drivers.servo.protocols import get_protocol, get_table, models as protocol_models, protocol_key
from robot_rl.drivers.servo.table import ControlTable

BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop
LATENCY_WINDOW = 4096  # transactions kept per instruction for the latency percentiles

# Dynamixel Hardware_Error_Status bits -> flag names (the status byte's bit 7 "alert" says
# "read this register"); see the contract / ROBOTIS e-manual.
DXL_HARDWARE_ERROR_BITS = {0: "voltage", 2: "overheat", 3: "encoder", 4: "electrical_shock", 5: "overload"}
DXL_ALERT = 0x80

FIND_PORT_HINT = "is the arm plugged in and powered? `robot-rl find-port` lists ports"


def wire_time_s(n_bytes: int, baudrate: int) -> float:
    """Seconds `n_bytes` take on the wire at `baudrate` (8N1)."""
    return n_bytes * BITS_PER_BYTE / float(baudrate)


class _Latency:
    """A ring buffer of transaction times (seconds) for one instruction."""

    def __init__(self, size: int = LATENCY_WINDOW):
        self.buf: collections.deque[float] = collections.deque(maxlen=size)
        self.n = 0
        self.max = 0.0

    def add(self, dt: float) -> None:
        self.buf.append(dt)
        self.n += 1
        self.max = max(self.max, dt)

    def summary(self) -> dict:
        xs = sorted(self.buf)
        if not xs:
            return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}

        def pct(q: float) -> float:
            return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1e3

        return {"n": self.n, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": self.max * 1e3}


class ServoBus:
    """A half-duplex servo bus on a serial port (see the module docstring)."""

    def __init__(self, port: str, protocol: str | Protocol = "feetech", baudrate: int = 1_000_000, *,
                 timeout_s: float = 0.01, retries: int = 2, models: dict[int, str] | None = None,
                 exclusive: bool = True):
        self.port = str(port)
        self.protocol: Protocol = get_protocol(protocol)
        self.protocol_name = protocol_key(self.protocol)
        self.baudrate = int(baudrate)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.exclusive = exclusive
        self._models: dict[int, str] = {int(k): v for k, v in (models or {}).items()}
        self._tables: dict[int, ControlTable] = {}
        self._ser = None
        self._fd = -1
        self._rx = bytearray()
        self._lock = threading.RLock()  # one transaction at a time
        self._reply_len_cache: dict[int, int] = {}
        self.reset_stats()

    # -- port ------------------------------------------------------------------------------
    def open(self) -> "ServoBus":
        import serial  # pyserial

        if self.is_open:
            return self
        try:
            ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=None,
                                exclusive=self.exclusive)
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortError(self._open_message(e)) from None
        try:  # real USB-serial adapters (FTDI): 1 ms latency timer; ptys and some drivers don't support it
            ser.set_low_latency_mode(True)
        except (ValueError, OSError, AttributeError, NotImplementedError):
            pass
        self._ser = ser
        self._fd = ser.fileno()
        self._rx.clear()
        return self

    def _open_message(self, e: Exception) -> str:
        text = str(e)
        err = getattr(e, "errno", None)
        if err is None and getattr(e, "args", None) and isinstance(e.args[0], int):
            err = e.args[0]
        if "exclusively lock" in text or err in (errno.EBUSY, errno.EAGAIN):
            why = "the port is in use by another program (another robot-rl process, LeRobot, a vendor tool?)"
        elif err == errno.ENOENT or "No such file" in text:
            why = "no such port"
        elif err == errno.EACCES or "Permission denied" in text:
            why = ("permission denied (add yourself to the `dialout` group: "
                   "`sudo usermod -aG dialout $USER`, then log in again)")
        else:
            why = text
        return f"cannot open {self.port}: {why}. {FIND_PORT_HINT[0].upper()}{FIND_PORT_HINT[1:]}"

    def close(self) -> None:
        with self._lock:
            ser, self._ser, self._fd = self._ser, None, -1
            if ser is not None:
                try:
                    ser.close()
                except Exception:  # noqa: BLE001 - a vanished port may fail to close; it is gone either way
                    pass

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def __enter__(self) -> "ServoBus":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def set_baudrate(self, baud: int) -> None:
        """Switch the port's baud rate (servos answer only at their own Baud_Rate)."""
        with self._lock:
            self.baudrate = int(baud)
            if self._ser is not None:
                try:
                    self._ser.baudrate = self.baudrate
                except (OSError, ValueError) as e:
                    raise PortError(f"cannot set {self.port} to {baud} baud: {e}") from None

    def _disconnected(self, e: BaseException | str) -> PortError:
        self.close()
        return PortError(f"servo bus {self.port} disconnected ({e}): is the USB adapter still plugged in "
                         f"and the arm powered? Reconnect it and open the bus again "
                         f"(`robot-rl find-port` lists ports)")

    def _require_open(self) -> None:
        if self._ser is None:
            raise PortError(f"servo bus {self.port} is not open (call open() or use `with ServoBus(...)`)")

    # -- stats -----------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self._latency: dict[str, _Latency] = {}
        self._counters = {"transactions": 0, "timeouts": 0, "corrupt": 0, "retries": 0, "garbage_bytes": 0,
                          "status_errors": 0, "unexpected_replies": 0}

    def stats(self) -> dict:
        """``{"latency": {instruction: {n, p50_ms, p99_ms, max_ms}}, "transactions", "timeouts",
        "corrupt", "retries", "garbage_bytes", "status_errors", "unexpected_replies"}``.
        ``timeouts`` / ``corrupt`` count failed attempts (each retried or raised)."""
        return {"latency": {k: v.summary() for k, v in self._latency.items()}, **self._counters}

    def _record(self, instr: str, dt: float) -> None:
        lat = self._latency.get(instr)
        if lat is None:
            lat = self._latency[instr] = _Latency()
        lat.add(dt)

    # -- low level I/O -----------------------------------------------------------------------
    def _flush_input(self) -> None:
        self._rx.clear()
        try:
            self._ser.reset_input_buffer()
        except Exception as e:  # noqa: BLE001 - termios.error / OSError on a vanished port
            raise self._disconnected(e) from None

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                select.select([], [self._fd], [], 0.01)
                continue
            except OSError as e:
                raise self._disconnected(e) from None
            view = view[n:]

    def _receive(self, timeout: float) -> bool:
        """Wait up to `timeout` s for bytes; append them to the buffer. False on timeout."""
        try:
            r, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        except (OSError, ValueError) as e:
            raise self._disconnected(e) from None
        if not r:
            return False
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return True
        except OSError as e:
            raise self._disconnected(e) from None
        if not chunk:  # readable but no data: the device is gone (pty master closed, USB unplugged)
            raise self._disconnected("the port reports readable but returns no data")
        self._rx += chunk
        return True

    def _reply_len(self, n_data: int) -> int:
        n = self._reply_len_cache.get(n_data)
        if n is None:
            n = self._reply_len_cache[n_data] = len(self.protocol.status(1, 0, bytes(n_data)))
        return n

    # -- transactions ----------------------------------------------------------------------------
    def _transact(self, instr: str, build: Callable[[list[int]], bytes], ids: list[int], n_data: int | None,
                  context: str, retries: int | None = None, timeout_s: float | None = None,
                  check_status: bool = True) -> dict[int, Packet]:
        """Send `build(pending_ids)`, collect one status packet from each id in `ids`
        (`n_data` data bytes each; None: any length). Retries the missing ids."""
        self._require_open()
        retries = self.retries if retries is None else retries
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        proto = self.protocol
        scan = getattr(proto, "scan", None)  # Feetech: also says whether a checksum failed
        with self._lock:
            t_start = time.perf_counter()
            self._counters["transactions"] += 1
            got: dict[int, Packet] = {}
            pending = list(dict.fromkeys(ids))
            reply_len = self._reply_len(n_data if n_data is not None else 0)
            per_reply = timeout_s + wire_time_s(reply_len, self.baudrate)
            attempt = 0
            any_corrupt = False
            while True:
                pkt = build(pending)
                self._flush_input()
                t0 = time.perf_counter()
                self._send(pkt)
                deadline = t0 + wire_time_s(len(pkt), self.baudrate) + per_reply
                garbage = 0
                corrupt = False
                rx = self._rx
                while pending:
                    # parse what is buffered first
                    if scan is not None:
                        packet, consumed, g, bad = scan(rx, True)
                        corrupt = corrupt or bad
                    else:
                        packet, consumed, g = proto.find_packet(rx, True)
                        corrupt = corrupt or bool(g)
                    if consumed:
                        del rx[:consumed]
                    if g:
                        garbage += g
                    if packet is None:
                        if consumed:
                            continue
                        remaining = deadline - time.perf_counter()
                        if remaining <= 0 or not self._receive(remaining):
                            break
                        continue
                    sid = packet.id
                    if sid in pending and (n_data is None or len(packet.params) == n_data or packet.code):
                        got[sid] = packet
                        pending.remove(sid)
                        deadline = time.perf_counter() + per_reply
                    else:
                        self._counters["unexpected_replies"] += 1
                self._counters["garbage_bytes"] += garbage
                if not pending:
                    break
                if rx:  # bytes that never completed a packet (e.g. a corrupted length field)
                    corrupt = True
                    self._counters["garbage_bytes"] += len(rx)
                    garbage += len(rx)
                    rx.clear()
                any_corrupt = any_corrupt or corrupt
                self._counters["corrupt" if corrupt else "timeouts"] += 1
                if attempt >= retries:
                    missing = tuple(pending)
                    where = f"{self.port} at {self.baudrate} baud"
                    if any_corrupt:
                        raise ServoCorrupt(
                            f"corrupt replies from servo(s) {list(missing)} on {where} ({context}) after "
                            f"{attempt + 1} attempt(s): {garbage} bytes did not form a valid packet -- check the "
                            f"cabling, the power supply and that only one program uses the port", missing)
                    raise ServoTimeout(
                        f"no reply from servo(s) {list(missing)} on {where} ({context}) after {attempt + 1} "
                        f"attempt(s): check the id, the baud rate (a servo answers only at its own "
                        f"Baud_Rate), power and cabling", missing)
                attempt += 1
                self._counters["retries"] += 1
            self._record(instr, time.perf_counter() - t_start)
            if check_status:
                self._check_status(got, ids, context)
            return got

    def _check_status(self, got: dict[int, Packet], ids: list[int], context: str, values: dict | None = None):
        for sid in ids:
            p = got.get(sid)
            if p is None or not p.code:
                continue
            self._counters["status_errors"] += 1
            names = tuple(self.protocol.error_names(p.code))
            if self.protocol_name == "dynamixel" and p.code & DXL_ALERT:
                names = tuple(n for n in names if n not in ("alert", "hardware")) + self._hardware_flags(sid)
                names = tuple(dict.fromkeys(names)) or ("hardware",)
            exc = status_error(sid, p.code, names, f"{context} on {self.port}")
            exc.values = values if values is not None else {}
            raise exc

    def _hardware_flags(self, sid: int) -> tuple[str, ...]:
        """Dynamixel: the status byte's alert bit says 'read Hardware_Error_Status'."""
        try:
            table = self._tables.get(sid) or next(
                t for t in protocol_models(self.protocol_name).values() if "Hardware_Error_Status" in t.registers)
            reg = table["Hardware_Error_Status"]
            pkts = self._transact(READ, lambda _: self.protocol.read(sid, reg.addr, reg.size), [sid], reg.size,
                                  f"read Hardware_Error_Status of servo {sid}", check_status=False)
            value = table.decode("Hardware_Error_Status", pkts[sid].params)
        except (ServoError, KeyError, ValueError, StopIteration):
            return ("hardware",)
        names_of = getattr(self.protocol, "hardware_error_names", None)
        if names_of is not None:
            flags = tuple(names_of(value))
        else:
            flags = tuple(name for bit, name in DXL_HARDWARE_ERROR_BITS.items() if value & (1 << bit))
        return flags or ("hardware",)

    # -- raw access --------------------------------------------------------------------------
    def _is_broadcast(self, servo_id: int) -> bool:
        return int(servo_id) == self.protocol.broadcast_id

    def read_raw(self, servo_id: int, addr: int, n: int) -> bytes:
        servo_id = int(servo_id)
        ctx = f"read {n} bytes at {addr} from servo {servo_id}"
        got = self._transact(READ, lambda _: self.protocol.read(servo_id, addr, n), [servo_id], n, ctx,
                             check_status=False)
        data = bytes(got[servo_id].params)
        self._check_status(got, [servo_id], ctx, {servo_id: data} if len(data) == n else {})
        return data

    def write_raw(self, servo_id: int, addr: int, data: bytes) -> None:
        servo_id = int(servo_id)
        pkt = self.protocol.write(servo_id, addr, bytes(data))
        if self._is_broadcast(servo_id):  # nobody answers a broadcast write
            self._send_only(WRITE, pkt)
            return
        self._transact(WRITE, lambda _: pkt, [servo_id], None,
                       f"write {len(data)} bytes at {addr} to servo {servo_id}")

    def reboot(self, servo_id: int) -> None:
        """Dynamixel REBOOT: clears a hardware alarm; the servo comes back with torque off."""
        servo_id = int(servo_id)
        make = getattr(self.protocol, "reboot", None)
        if make is None:
            raise ServoError(f"the {self.protocol_name} protocol has no REBOOT instruction (power-cycle the servo)")
        self._transact("reboot", lambda _: make(servo_id), [servo_id], None, f"reboot servo {servo_id}",
                       check_status=False)

    def _send_only(self, instr: str, pkt: bytes) -> None:
        self._require_open()
        with self._lock:
            t0 = time.perf_counter()
            self._counters["transactions"] += 1
            self._flush_input()
            self._send(pkt)
            self._record(instr, time.perf_counter() - t0)

    # -- discovery -------------------------------------------------------------------------------
    def ping(self, servo_id: int, *, timeout_s: float | None = None, retries: int | None = None) -> int:
        """The servo's model number; ``ServoTimeout`` when nobody answers."""
        servo_id = int(servo_id)
        number, got = self._ping(servo_id, timeout_s, retries)
        self._check_status(got, [servo_id], f"ping servo {servo_id}", {servo_id: number})
        return number

    def _ping(self, servo_id: int, timeout_s=None, retries=None) -> tuple[int, dict[int, Packet]]:
        """(model number, the status packets) without raising on status error bits."""
        got = self._transact(PING, lambda _: self.protocol.ping(servo_id), [servo_id], None,
                             f"ping servo {servo_id}", retries=retries, timeout_s=timeout_s, check_status=False)
        params = got[servo_id].params
        if len(params) >= 2:  # Dynamixel 2.0: model number (+ firmware) in the ping reply
            return int.from_bytes(params[:2], "little"), got
        # Feetech: ping carries no data; read Model_Number
        return self._read_model_number(servo_id, timeout_s, retries), got

    def _read_model_number(self, servo_id: int, timeout_s, retries) -> int:
        reg = None
        for table in protocol_models(self.protocol_name).values():
            if "Model_Number" in table.registers:
                reg, order = table["Model_Number"], table.byteorder
                break
        if reg is None:
            raise ServoError(f"no {self.protocol_name} control table defines Model_Number")
        ctx = f"read Model_Number of servo {servo_id}"
        got = self._transact(READ, lambda _: self.protocol.read(servo_id, reg.addr, reg.size), [servo_id],
                             reg.size, ctx, retries=retries, timeout_s=timeout_s, check_status=False)
        return int.from_bytes(got[servo_id].params, order)

    def scan(self, ids=range(0, 253), timeout_s: float = 0.002) -> dict[int, int]:
        """Ping every id (no retries): ``{id: model_number}`` of those that answer (a servo
        reporting an error flag is listed too)."""
        found: dict[int, int] = {}
        for sid in ids:
            try:
                found[int(sid)] = self.ping(sid, timeout_s=timeout_s, retries=0)
            except ServoStatusError as e:
                found[int(sid)] = e.values.get(int(sid), -1)
            except (ServoTimeout, ServoCorrupt):
                continue
        return found

    def broadcast_ping(self, timeout_s: float = 0.05) -> dict[int, int]:
        """One PING to the broadcast id; every servo answers (Dynamixel 2.0: with its model
        number; Feetech: the model number is read afterwards). ``{id: model_number}``."""
        self._require_open()
        proto = self.protocol
        found: dict[int, bytes] = {}
        with self._lock:
            t0 = time.perf_counter()
            self._counters["transactions"] += 1
            self._flush_input()
            self._send(proto.ping(proto.broadcast_id))
            deadline = t0 + timeout_s + wire_time_s(256 * self._reply_len(3), self.baudrate)
            quiet = time.perf_counter() + timeout_s
            while time.perf_counter() < min(deadline, quiet):
                packet, consumed, g = proto.find_packet(self._rx, True)
                if consumed:
                    del self._rx[:consumed]
                self._counters["garbage_bytes"] += g
                if packet is not None:
                    found[packet.id] = bytes(packet.params)
                    quiet = time.perf_counter() + timeout_s
                elif not consumed:
                    self._receive(min(deadline, quiet) - time.perf_counter())
            self._record(PING, time.perf_counter() - t0)
        out = {}
        for sid in sorted(found):
            params = found[sid]
            out[sid] = (int.from_bytes(params[:2], "little") if len(params) >= 2
                        else self._read_model_number(sid, None, None))
        return out

    def table(self, servo_id: int) -> ControlTable:
        """The servo's control table: from `models`, else found by its model number."""
        servo_id = int(servo_id)
        t = self._tables.get(servo_id)
        if t is not None:
            return t
        if servo_id in self._models:
            t = get_table(self._models[servo_id])
        else:
            number, _ = self._ping(servo_id)
            t = None
            for table in protocol_models(self.protocol_name).values():
                if table.model_number == number:
                    t = table
                    break
            if t is None:
                known = {tb.model: tb.model_number for tb in protocol_models(self.protocol_name).values()}
                raise ServoError(f"servo {servo_id} on {self.port} is model number {number}, which no "
                                 f"{self.protocol_name} control table describes (known: {known}); pass "
                                 f"models={{id: name}} to ServoBus")
        self._tables[servo_id] = t
        return t

    def set_model(self, servo_id: int, model: str) -> None:
        """Tell the bus which model answers at `servo_id` (e.g. after an ID change)."""
        self._models[int(servo_id)] = model
        self._tables.pop(int(servo_id), None)

    # -- registers by name -----------------------------------------------------------------
    def read(self, servo_id: int, reg: str) -> int:
        table = self.table(servo_id)
        r = table[reg]
        try:
            data = self.read_raw(servo_id, r.addr, r.size)
        except ServoStatusError as e:
            e.values = {k: table.decode(reg, v) for k, v in e.values.items()}
            raise
        return table.decode(reg, data)

    def write(self, servo_id: int, reg: str, value: int) -> None:
        table = self.table(servo_id) if not self._is_broadcast(servo_id) else self._any_table()
        r = table[reg]
        self.write_raw(servo_id, r.addr, table.encode(reg, value))

    def _any_table(self) -> ControlTable:
        if self._models:
            return get_table(next(iter(self._models.values())))
        return next(iter(protocol_models(self.protocol_name).values()))

    def _sync_layout(self, reg: str, ids) -> tuple[int, int, dict[int, ControlTable]]:
        tables = {int(i): self.table(i) for i in ids}
        layouts = {(t[reg].addr, t[reg].size) for t in tables.values()}
        if len(layouts) != 1:
            raise ServoError(f"{reg} sits at different addresses/sizes on servos {sorted(tables)} "
                             f"({layouts}): read them one by one")
        addr, size = layouts.pop()
        return addr, size, tables

    def sync_read(self, reg: str, ids: list[int]) -> dict[int, int]:
        """One SYNC_READ: ``{id: value}`` for every id (each servo answers with its own packet)."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        addr, size, tables = self._sync_layout(reg, ids)
        ctx = f"sync_read {reg} from servos {ids}"
        got = self._transact(SYNC_READ, lambda pend: self.protocol.sync_read(pend, addr, size), ids, size, ctx,
                             check_status=False)
        values = {i: tables[i].decode(reg, got[i].params) for i in ids if len(got[i].params) == size}
        self._check_status(got, ids, ctx, values)
        return values

    def sync_write(self, reg: str, values: dict[int, int]) -> None:
        """One SYNC_WRITE (no reply)."""
        if not values:
            return
        addr, size, tables = self._sync_layout(reg, values)
        data = {int(i): tables[int(i)].encode(reg, v) for i, v in values.items()}
        self._send_only(SYNC_WRITE, self.protocol.sync_write(addr, size, data))

    def __repr__(self) -> str:
        return (f"ServoBus({self.port!r}, {self.protocol_name!r}, {self.baudrate}, "
                f"{'open' if self.is_open else 'closed'})")
