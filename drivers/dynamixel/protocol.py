"""Dynamixel Protocol 2.0 codec: bytes <-> packets, no I/O.

Wire format (ROBOTIS e-manual, "Protocol 2.0")::

    FF FF FD 00 | ID | LEN_L LEN_H | INSTR | PARAM... | CRC_L CRC_H          (instruction)
    FF FF FD 00 | ID | LEN_L LEN_H | 55 | ERROR | PARAM... | CRC_L CRC_H      (status)

* LENGTH = bytes after the length field: instruction (+ error) + params + 2 CRC bytes,
  counted *after* byte stuffing.
* Byte stuffing: inside the instruction..params region, every ``FF FF FD`` gets an extra
  ``FD`` (``FF FF FD FD``) so data can never look like a header. The receiver removes it
  after the CRC check.
* CRC: CRC-16 with polynomial 0x8005, initial value 0, not reflected (the table in the
  e-manual's "CRC Calculation" page), over every byte from the header to the last
  parameter, stuffing included; sent low byte first.

Checked byte for byte against ROBOTIS' ``dynamixel_sdk`` by
``robot_rl.drivers.dynamixel.sdk_compare``.
"""
from __future__ import annotations

from typing import NamedTuple

from ..servo.protocol import PING, READ, SYNC_READ, SYNC_WRITE, WRITE, Packet, Protocol

HEADER = b"\xff\xff\xfd\x00"
_H3 = b"\xff\xff\xfd"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC  # 253 (0xFD) and 255 (0xFF) are never ids: they would look like a header

# instruction codes
INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_FACTORY_RESET = 0x06
INST_REBOOT = 0x08
INST_CLEAR = 0x10
INST_STATUS = 0x55
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83
INST_BULK_READ = 0x92
INST_BULK_WRITE = 0x93

# FACTORY_RESET options
RESET_ALL = 0xFF
RESET_ALL_EXCEPT_ID = 0x01
RESET_ALL_EXCEPT_ID_BAUD = 0x02

# status error byte: bit 7 = alert, bits 0..6 = an error *number* (not a bit field)
ERRBIT_ALERT = 0x80
ERROR_NUMBERS = {
    1: "result_fail",
    2: "instruction",
    3: "checksum",      # "CRC error" in the e-manual
    4: "range",         # "Data Range Error"
    5: "data_length",
    6: "data_limit",
    7: "access",
}
# Hardware_Error_Status (address 70) bits on the X series
HARDWARE_ERROR_BITS = {
    0: "voltage",           # input voltage out of the configured range
    2: "overheat",
    3: "encoder",           # motor encoder malfunction
    4: "electrical_shock",  # electrical shock / insufficient power
    5: "overload",
}

MAX_LENGTH = 1024  # largest LENGTH field accepted when parsing (the SDK's RXPACKET_MAX_LEN)


class Scan(NamedTuple):
    """``find_packet``'s answer plus ``corrupt``: True when the bytes dropped this time
    include a packet that failed its CRC (a corrupt reply rather than line junk). Same
    shape as the Feetech codec's ``Scan``; the bus uses ``scan()`` when a codec has it."""
    packet: Packet | None
    consumed: int
    garbage: int
    corrupt: bool = False


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Dynamixel CRC-16 (poly 0x8005, init 0, no reflection, no final xor)."""
    table = CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def stuff(body: bytes | bytearray) -> bytes:
    """Insert an extra 0xFD after every FF FF FD in `body` (instruction..params)."""
    if _H3 not in body:
        return bytes(body)
    out = bytearray()
    for i, b in enumerate(body):
        out.append(b)
        if b == 0xFD and i >= 2 and body[i - 1] == 0xFF and body[i - 2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes | bytearray) -> bytes:
    """Inverse of :func:`stuff`: drop the 0xFD that follows each FF FF FD."""
    if _H3 not in body:
        return bytes(body)
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        b = body[i]
        out.append(b)
        if b == 0xFD and i >= 2 and body[i - 1] == 0xFF and body[i - 2] == 0xFF \
                and i + 1 < n and body[i + 1] == 0xFD:
            i += 1  # skip the stuffed FD
        i += 1
    return bytes(out)


def _u16(v: int, what: str) -> bytes:
    if not 0 <= v <= 0xFFFF:
        raise ValueError(f"{what} {v} does not fit 2 bytes (0..65535)")
    return v.to_bytes(2, "little")


def _check_id(servo_id: int, broadcast_ok: bool = True) -> None:
    if 0 <= servo_id <= MAX_ID or (broadcast_ok and servo_id == BROADCAST_ID):
        return
    allowed = f"0..{MAX_ID}" + (f" or {BROADCAST_ID} (broadcast)" if broadcast_ok else "")
    raise ValueError(f"Dynamixel id {servo_id} is not valid here: use {allowed}")


def frame(servo_id: int, body: bytes) -> bytes:
    """Header + id + length + stuffed `body` + CRC. `body` is un-stuffed
    (instruction [+ error] + params)."""
    body = stuff(body)
    length = len(body) + 2
    if length > 0xFFFF:
        raise ValueError(f"Dynamixel packet too long: LENGTH {length} > 65535")
    pkt = HEADER + bytes((servo_id,)) + length.to_bytes(2, "little") + body
    return pkt + crc16(pkt).to_bytes(2, "little")


def error_names(error: int) -> tuple[str, ...]:
    """Status error byte -> flag names. Bit 7 (alert) -> ``"hardware"`` (the cause is in
    Hardware_Error_Status, see :func:`hardware_error_names`); bits 0..6 are one error
    number (1 result_fail, 2 instruction, 3 checksum, 4 range, 5 data_length,
    6 data_limit, 7 access; others -> ``"error_<n>"``)."""
    names = []
    if error & ERRBIT_ALERT:
        names.append("hardware")
    num = error & 0x7F
    if num:
        names.append(ERROR_NUMBERS.get(num, f"error_{num}"))
    return tuple(names)


def hardware_error_names(status: int) -> tuple[str, ...]:
    """Hardware_Error_Status register value -> flag names (bit 0 voltage, 2 overheat,
    3 encoder, 4 electrical_shock, 5 overload; an undocumented bit -> ``"hardware"``)."""
    names: list[str] = []
    for bit in range(8):
        if status & (1 << bit):
            name = HARDWARE_ERROR_BITS.get(bit, "hardware")
            if name not in names:
                names.append(name)
    return tuple(names)


def hardware_error_bits(names) -> int:
    """Flag names -> Hardware_Error_Status value (inverse of hardware_error_names)."""
    rev = {v: k for k, v in HARDWARE_ERROR_BITS.items()}
    value = 0
    for name in names:
        if name not in rev:
            raise ValueError(f"unknown Dynamixel hardware error {name!r}; known: {', '.join(rev)}")
        value |= 1 << rev[name]
    return value


class Dynamixel2Protocol(Protocol):
    """Dynamixel Protocol 2.0 (X series, MX with 2.0 firmware, ...)."""

    name = "dynamixel"
    broadcast_id = BROADCAST_ID
    byteorder = "little"
    instructions = {
        PING: INST_PING, READ: INST_READ, WRITE: INST_WRITE,
        "reg_write": INST_REG_WRITE, "action": INST_ACTION, "factory_reset": INST_FACTORY_RESET,
        "reboot": INST_REBOOT, "clear": INST_CLEAR,
        SYNC_READ: INST_SYNC_READ, SYNC_WRITE: INST_SYNC_WRITE,
        "bulk_read": INST_BULK_READ, "bulk_write": INST_BULK_WRITE,
        "status": INST_STATUS,
    }
    max_length = MAX_LENGTH

    # -- instruction packets ------------------------------------------------------------------
    def instruction(self, servo_id: int, code: int, params: bytes = b"") -> bytes:
        _check_id(servo_id)
        if not 0 <= code <= 0xFF or code == INST_STATUS:
            raise ValueError(f"instruction code {code!r} is not a Dynamixel instruction")
        return frame(servo_id, bytes((code,)) + bytes(params))

    def ping(self, servo_id: int) -> bytes:
        return self.instruction(servo_id, INST_PING)

    def read(self, servo_id: int, addr: int, length: int) -> bytes:
        _check_id(servo_id, broadcast_ok=False)  # a broadcast READ gets no reply
        return self.instruction(servo_id, INST_READ, _u16(addr, "address") + _u16(length, "length"))

    def write(self, servo_id: int, addr: int, data: bytes) -> bytes:
        return self.instruction(servo_id, INST_WRITE, _u16(addr, "address") + bytes(data))

    def reg_write(self, servo_id: int, addr: int, data: bytes) -> bytes:
        return self.instruction(servo_id, INST_REG_WRITE, _u16(addr, "address") + bytes(data))

    def action(self, servo_id: int = BROADCAST_ID) -> bytes:
        return self.instruction(servo_id, INST_ACTION)

    def factory_reset(self, servo_id: int, option: int = RESET_ALL) -> bytes:
        if option not in (RESET_ALL, RESET_ALL_EXCEPT_ID, RESET_ALL_EXCEPT_ID_BAUD):
            raise ValueError(f"FACTORY_RESET option 0x{option:02x}: use 0xFF (all), 0x01 (all but ID) "
                             "or 0x02 (all but ID and baud rate)")
        return self.instruction(servo_id, INST_FACTORY_RESET, bytes((option,)))

    def reboot(self, servo_id: int) -> bytes:
        return self.instruction(servo_id, INST_REBOOT)

    def clear_multi_turn(self, servo_id: int) -> bytes:
        """CLEAR option 0x01: reset the multi-turn count (fixed key 44 58 4C 22)."""
        return self.instruction(servo_id, INST_CLEAR, b"\x01\x44\x58\x4c\x22")

    def sync_read_params(self, ids: list[int], addr: int, length: int) -> bytes:
        ids = list(ids)
        if not ids:
            raise ValueError("SYNC_READ needs at least one id")
        if len(set(ids)) != len(ids):
            raise ValueError(f"SYNC_READ ids must be unique, got {ids}")
        for i in ids:
            _check_id(i, broadcast_ok=False)
        return _u16(addr, "address") + _u16(length, "length") + bytes(ids)

    def sync_read(self, ids: list[int], addr: int, length: int) -> bytes:
        return self.instruction(BROADCAST_ID, INST_SYNC_READ, self.sync_read_params(ids, addr, length))

    def sync_write(self, addr: int, length: int, data: dict[int, bytes]) -> bytes:
        if not data:
            raise ValueError("SYNC_WRITE needs at least one id")
        params = bytearray(_u16(addr, "address") + _u16(length, "length"))
        for sid, d in data.items():
            _check_id(sid, broadcast_ok=False)
            if len(d) != length:
                raise ValueError(f"SYNC_WRITE id {sid}: {len(d)} data bytes, expected {length}")
            params.append(sid)
            params += d
        return self.instruction(BROADCAST_ID, INST_SYNC_WRITE, bytes(params))

    def bulk_read(self, entries: list[tuple[int, int, int]]) -> bytes:
        """entries: (id, addr, length) per servo; each id once."""
        if not entries:
            raise ValueError("BULK_READ needs at least one (id, addr, length)")
        ids = [e[0] for e in entries]
        if len(set(ids)) != len(ids):
            raise ValueError(f"BULK_READ ids must be unique, got {ids}")
        params = bytearray()
        for sid, addr, length in entries:
            _check_id(sid, broadcast_ok=False)
            params.append(sid)
            params += _u16(addr, "address") + _u16(length, "length")
        return self.instruction(BROADCAST_ID, INST_BULK_READ, bytes(params))

    def bulk_write(self, entries: list[tuple[int, int, bytes]]) -> bytes:
        """entries: (id, addr, data) per servo; each id once."""
        if not entries:
            raise ValueError("BULK_WRITE needs at least one (id, addr, data)")
        ids = [e[0] for e in entries]
        if len(set(ids)) != len(ids):
            raise ValueError(f"BULK_WRITE ids must be unique, got {ids}")
        params = bytearray()
        for sid, addr, data in entries:
            _check_id(sid, broadcast_ok=False)
            params.append(sid)
            params += _u16(addr, "address") + _u16(len(data), "length") + bytes(data)
        return self.instruction(BROADCAST_ID, INST_BULK_WRITE, bytes(params))

    # -- status packets -----------------------------------------------------------------------
    def status(self, servo_id: int, error: int, params: bytes = b"") -> bytes:
        _check_id(servo_id, broadcast_ok=False)
        if not 0 <= error <= 0xFF:
            raise ValueError(f"status error byte {error} does not fit a byte")
        return frame(servo_id, bytes((INST_STATUS, error)) + bytes(params))

    @staticmethod
    def ping_params(model_number: int, firmware: int) -> bytes:
        """A PING reply's params: model number (LE16) + firmware version."""
        return _u16(model_number, "model number") + bytes((firmware & 0xFF,))

    @staticmethod
    def parse_ping(packet: Packet) -> tuple[int, int]:
        """(model_number, firmware_version) from a PING status packet."""
        if len(packet.params) < 3:
            raise ValueError(f"PING reply from id {packet.id} has {len(packet.params)} param bytes, expected 3")
        return int.from_bytes(packet.params[:2], "little"), packet.params[2]

    # -- parsing ------------------------------------------------------------------------------
    def find_packet(self, buf: bytes | bytearray, status: bool) -> tuple[Packet | None, int, int]:
        """See :meth:`Protocol.find_packet` and :meth:`scan`."""
        s = self.scan(buf, status)
        return s.packet, s.consumed, s.garbage

    def _plausible(self, buf: bytes, i: int, status: bool) -> int:
        """Total size of the packet whose ``FF FF FD`` starts at `i`, 0 if that is no
        header (reserved byte != 0, id 0xFD / 0xFF / broadcast in a status packet, LENGTH
        out of range), -1 if too few bytes are there to tell."""
        n = len(buf)
        if n > i + 3 and buf[i + 3] != 0x00:
            return 0
        if n < i + 7:
            return -1
        sid = buf[i + 4]
        length = buf[i + 5] | (buf[i + 6] << 8)
        if sid in (0xFD, 0xFF) or (status and sid == BROADCAST_ID) \
                or length < (4 if status else 3) or length > self.max_length:
            return 0
        return 7 + length

    def _crc_ok(self, buf: bytes, i: int, total: int) -> bool:
        return crc16(buf[i:i + total - 2]) == (buf[i + total - 2] | (buf[i + total - 1] << 8))

    def _next_valid(self, buf: bytes, start: int, status: bool) -> int:
        """Index of the next complete packet with a good CRC at or after `start`, or -1."""
        while True:
            j = buf.find(HEADER, start)
            if j < 0:
                return -1
            total = self._plausible(buf, j, status)
            if total > 0 and j + total <= len(buf) and self._crc_ok(buf, j, total):
                return j
            start = j + 1

    @staticmethod
    def _cut(buf: bytes, i: int, end: int) -> int:
        """Where to stop dropping the bad packet ``buf[i:end]``: at the first header that
        starts inside it -- also one running past `end` (a LENGTH hit by noise may end
        the window in the middle of the next header), or a header prefix at the end of
        the buffer."""
        n = len(buf)
        j = buf.find(HEADER, i + 1, min(n, end + 3))
        if j > 0:
            return j
        for s in range(max(i + 1, n - 3), end):
            if HEADER.startswith(buf[s:n]):
                return s
        return end

    def scan(self, buf: bytes | bytearray, status: bool) -> Scan:
        """``find_packet`` that also says whether a CRC failure was dropped (``corrupt``).

        * a header is ``FF FF FD 00`` followed by an id (0..252, or 254 for instructions)
          and a LENGTH within [3 (instruction) / 4 (status), ``max_length``]; anything
          else is a false header, skipped as garbage (absurd lengths never stall the stream);
        * junk before a header is skipped (garbage); a trailing ``FF`` / ``FF FF`` is kept
          (it may be the start of a header);
        * a complete packet whose CRC fails is dropped at once, up to the next header
          starting inside it if any, with ``corrupt=True``;
        * a valid packet of the other kind (an instruction while looking for status
          packets, e.g. an adapter's echo, or vice versa) is dropped as garbage;
        * an incomplete packet waits for more bytes (dropping the junk before its header)
          -- unless a complete, valid packet starts later in the buffer, which proves the
          first header was junk (e.g. a LENGTH byte hit by noise).
        """
        mv = buf if isinstance(buf, bytes) else bytes(buf)
        n = len(mv)
        pos = 0
        while True:
            idx = mv.find(_H3, pos)
            if idx < 0:
                keep = 0
                if n >= 1 and mv[n - 1] == 0xFF:
                    keep = 2 if n >= 2 and mv[n - 2] == 0xFF else 1
                return Scan(None, n - keep, n - keep)
            total = self._plausible(mv, idx, status)
            if total == 0:
                pos = idx + 1  # false header: skip its first byte and look again
                continue
            if total < 0 or n < idx + total:
                j = self._next_valid(mv, idx + 1, status)
                if j < 0:
                    return Scan(None, idx, idx)  # wait for the rest
                pos = j
                continue
            end = idx + total
            raw = mv[idx:end]
            if not self._crc_ok(mv, idx, total):
                drop = self._cut(mv, idx, end)
                return Scan(None, drop, drop, True)
            body = unstuff(raw[7:-2])
            is_status = body[0] == INST_STATUS
            if is_status != status or (is_status and len(body) < 2):
                return Scan(None, end, end)  # valid, but not what the caller listens for
            if status:
                return Scan(Packet(raw[4], body[1], bytes(body[2:]), raw), end, idx)
            return Scan(Packet(raw[4], body[0], bytes(body[1:]), raw), end, idx)

    def error_names(self, error: int) -> tuple[str, ...]:
        return error_names(error)

    @staticmethod
    def hardware_error_names(status: int) -> tuple[str, ...]:
        return hardware_error_names(status)
