"""The Feetech STS/SMS/SCS serial-bus protocol: bytes <-> packets, no I/O.

Wire format (half duplex, 8N1)::

    instruction: FF FF  ID  LEN  INSTR  PARAM1 .. PARAMn  CHECKSUM
    status:      FF FF  ID  LEN  ERROR  PARAM1 .. PARAMn  CHECKSUM

    LEN      = n + 2                      (the instruction/error byte and the checksum)
    CHECKSUM = ~(ID + LEN + INSTR/ERROR + sum(PARAMs)) & 0xFF

ID 0xFE is the broadcast id (no servo answers it, except a lone servo to PING);
0xFF is never an id, which is what lets a parser tell ``FF FF FF 01 ..`` (junk ending
in 0xFF, then a header) from a packet. SYNC_READ and SYNC_WRITE are always broadcast:
``FE LEN 82 ADDR N ID1 ID2 ..`` asks each listed servo to answer with its own status
packet (in the listed order); ``FE LEN 83 ADDR N ID1 D1.. ID2 D2..`` writes N bytes into
each listed servo and nobody answers.

Register data is little-endian on the STS/SMS series (magnetic encoders) and big-endian
on the SCS series (potentiometers); that is the ``byteorder`` of the control table
(``robot_rl.drivers.feetech.tables``) -- the packet framing is the same for both.

Status error byte (vendor SDK ``ERRBIT_*``; the STS memory table's Status register,
address 65, uses the same bits):

    ====  ======  =============  =========================================================
    bit   mask    name           meaning
    ====  ======  =============  =========================================================
    0     0x01    voltage        input voltage outside Min/Max_Voltage_Limit
    1     0x02    angle          angle (magnetic encoder) sensor fault
    2     0x04    overheat       Present_Temperature above Max_Temperature_Limit
    3     0x08    overcurrent    over-current ("OverEle" in the SDK)
    4     0x10    hardware       not named by the SDK's error bits; the STS memory table's
                                 Status register calls bit 4 an angle(-limit) fault. Reported
                                 as a generic hardware alarm (the arm stops: the safe reading
                                 of a flag we cannot name for certain)
    5     0x20    overload       load above Overload_Torque for Protection_Time
    6, 7  0xC0    hardware       undocumented; reported as "hardware". The vendor SDK drops
                                 any status packet whose error byte is > 0x7F as corrupt, so
                                 an emulator should raise "hardware" with bit 4, never bit 7
    ====  ======  =============  =========================================================
"""
from __future__ import annotations

from typing import NamedTuple

from ..servo.protocol import PING, READ, SYNC_READ, SYNC_WRITE, WRITE, Packet, Protocol

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFD  # the highest id a servo can answer with
MAX_PACKET = 250  # bytes on the wire; the vendor SDK's TX/RX buffers (TXPACKET_MAX_LEN)
MAX_LENGTH = MAX_PACKET - 4  # the largest LEN byte we build or believe

INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_RESET = 0x06  # factory reset of the control table (vendor: "RESET", rarely used)
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83

REG_WRITE, ACTION, RESET = "reg_write", "action", "reset"

# status error byte: flag name -> the bit an emulator sets for it
ERROR_BITS: dict[str, int] = {
    "voltage": 0x01,
    "angle": 0x02,
    "overheat": 0x04,
    "overcurrent": 0x08,
    "hardware": 0x10,
    "overload": 0x20,
}
# bit -> name as decoded (bits 6 and 7 are undocumented: "hardware" as well)
_BIT_NAMES: tuple[tuple[int, str], ...] = (
    (0x01, "voltage"), (0x02, "angle"), (0x04, "overheat"), (0x08, "overcurrent"),
    (0x10, "hardware"), (0x20, "overload"), (0x40, "hardware"), (0x80, "hardware"),
)


def checksum(body: bytes | bytearray) -> int:
    """``~sum(body) & 0xFF`` over ID, LEN, INSTR/ERROR and the params."""
    return ~sum(body) & 0xFF


def error_names(error: int) -> tuple[str, ...]:
    """Status error byte -> flag names in bit order, each name once."""
    names: list[str] = []
    for mask, name in _BIT_NAMES:
        if error & mask and name not in names:
            names.append(name)
    return tuple(names)


def error_byte(names) -> int:
    """Flag names (see ``ERROR_BITS``) -> the status error byte an emulator sends."""
    bits = 0
    for name in names:
        try:
            bits |= ERROR_BITS[name]
        except KeyError:
            raise ValueError(f"unknown Feetech status flag {name!r}; known flags: {', '.join(ERROR_BITS)}") from None
    return bits


class Scan(NamedTuple):
    """``find_packet``'s answer plus ``corrupt``: True when the bytes dropped this time
    include a packet that failed its checksum (a corrupt reply rather than line junk)."""
    packet: Packet | None
    consumed: int
    garbage: int
    corrupt: bool = False


def _check(name: str, value: int, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"Feetech {name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


class FeetechProtocol(Protocol):
    """Feetech STS/SMS (``byteorder="little"``) and SCS (``byteorder="big"``) packets.

    ``max_length`` bounds the LEN byte both when building and when parsing: a header
    whose LEN is larger (or smaller than 2) is taken for junk, so a stray ``FF FF`` in
    line noise cannot make the reader wait for hundreds of bytes that never come."""

    name = "feetech"
    broadcast_id = BROADCAST_ID
    instructions = {
        PING: INST_PING, READ: INST_READ, WRITE: INST_WRITE, REG_WRITE: INST_REG_WRITE,
        ACTION: INST_ACTION, RESET: INST_RESET, SYNC_READ: INST_SYNC_READ, SYNC_WRITE: INST_SYNC_WRITE,
    }

    def __init__(self, byteorder: str = "little", max_length: int = MAX_LENGTH):
        if byteorder not in ("little", "big"):
            raise ValueError(f"byteorder must be 'little' (STS/SMS) or 'big' (SCS), got {byteorder!r}")
        self.byteorder = byteorder
        self.max_length = _check("max_length", max_length, 2, 255)

    def __repr__(self) -> str:
        return f"FeetechProtocol(byteorder={self.byteorder!r})"

    # -- client side: instruction packets ---------------------------------------------------
    def instruction(self, servo_id: int, code: int, params: bytes = b"") -> bytes:
        _check("servo id", servo_id, 0, BROADCAST_ID)
        _check("instruction", code, 0, 0xFF)
        return self._packet(servo_id, code, bytes(params))

    def ping(self, servo_id: int) -> bytes:
        """PING (a lone servo also answers a broadcast PING)."""
        return self.instruction(servo_id, INST_PING)

    def read(self, servo_id: int, addr: int, length: int) -> bytes:
        _check("servo id for READ", servo_id, 0, MAX_ID)  # nobody answers a broadcast READ
        _check("address", addr, 0, 0xFF)
        _check("READ length", length, 1, self.max_length - 2)  # the reply must fit too
        return self._packet(servo_id, INST_READ, bytes((addr, length)))

    def write(self, servo_id: int, addr: int, data: bytes) -> bytes:
        return self._write(INST_WRITE, servo_id, addr, data)

    def reg_write(self, servo_id: int, addr: int, data: bytes) -> bytes:
        """REG_WRITE: like WRITE, but the servo holds the data until ACTION."""
        return self._write(INST_REG_WRITE, servo_id, addr, data)

    def action(self, servo_id: int = BROADCAST_ID) -> bytes:
        """ACTION: apply the held REG_WRITEs (usually broadcast)."""
        return self.instruction(servo_id, INST_ACTION)

    def reset(self, servo_id: int) -> bytes:
        """RESET: restore the factory control table."""
        return self.instruction(servo_id, INST_RESET)

    def sync_read(self, ids: list[int], addr: int, length: int) -> bytes:
        return self._packet(BROADCAST_ID, INST_SYNC_READ, self.sync_read_params(ids, addr, length))

    def sync_read_params(self, ids: list[int], addr: int, length: int) -> bytes:
        ids = list(ids)
        if not ids:
            raise ValueError("Feetech SYNC_READ needs at least one servo id")
        for i in ids:
            _check("servo id for SYNC_READ", i, 0, MAX_ID)
        if len(set(ids)) != len(ids):
            raise ValueError(f"Feetech SYNC_READ lists a servo id twice: {ids}")
        _check("address", addr, 0, 0xFF)
        _check("SYNC_READ length", length, 1, self.max_length - 2)
        return bytes((addr, length, *ids))

    def sync_write(self, addr: int, length: int, data: dict[int, bytes]) -> bytes:
        _check("address", addr, 0, 0xFF)
        _check("SYNC_WRITE length", length, 1, 0xFF)
        if not data:
            raise ValueError("Feetech SYNC_WRITE needs data for at least one servo")
        params = bytearray((addr, length))
        for servo_id, chunk in data.items():
            _check("servo id for SYNC_WRITE", servo_id, 0, MAX_ID)
            if len(chunk) != length:
                raise ValueError(f"Feetech SYNC_WRITE: servo {servo_id} has {len(chunk)} bytes, "
                                 f"every servo needs exactly {length}")
            params.append(servo_id)
            params += chunk
        return self._packet(BROADCAST_ID, INST_SYNC_WRITE, bytes(params))

    # -- server side (emulator): status packets -------------------------------------------------
    def status(self, servo_id: int, error: int, params: bytes = b"") -> bytes:
        _check("status servo id", servo_id, 0, MAX_ID)
        _check("status error byte", error, 0, 0xFF)
        return self._packet(servo_id, error, bytes(params))

    # decoding an instruction's params (emulator side) ------------------------------------------
    @staticmethod
    def parse_read(params: bytes) -> tuple[int, int]:
        """READ / SYNC_READ head: ``(addr, length)``."""
        if len(params) != 2:
            raise ValueError(f"Feetech READ carries 2 params (address, length), got {len(params)}")
        return params[0], params[1]

    @staticmethod
    def parse_write(params: bytes) -> tuple[int, bytes]:
        """WRITE / REG_WRITE: ``(addr, data)``."""
        if len(params) < 2:
            raise ValueError(f"Feetech WRITE carries an address and at least one data byte, got {len(params)} params")
        return params[0], bytes(params[1:])

    @staticmethod
    def parse_sync_read(params: bytes) -> tuple[int, int, list[int]]:
        """SYNC_READ: ``(addr, length, ids)`` -- the servos answer in the listed order."""
        if len(params) < 3:
            raise ValueError(f"Feetech SYNC_READ carries address, length and ids, got {len(params)} params")
        return params[0], params[1], list(params[2:])

    @staticmethod
    def parse_sync_write(params: bytes) -> tuple[int, int, dict[int, bytes]]:
        """SYNC_WRITE: ``(addr, length, {id: data})``."""
        if len(params) < 2:
            raise ValueError(f"Feetech SYNC_WRITE carries address and length first, got {len(params)} params")
        addr, length = params[0], params[1]
        body = params[2:]
        if length == 0 or len(body) % (length + 1):
            raise ValueError(f"Feetech SYNC_WRITE: {len(body)} bytes after the head do not split into "
                             f"(id + {length} data bytes) blocks")
        step = length + 1
        return addr, length, {body[k]: bytes(body[k + 1:k + step]) for k in range(0, len(body), step)}

    # -- both: finding packets in a byte stream ---------------------------------------------------
    def find_packet(self, buf: bytes | bytearray, status: bool) -> tuple[Packet | None, int, int]:
        s = self.scan(buf, status)
        return s.packet, s.consumed, s.garbage

    def scan(self, buf: bytes | bytearray, status: bool) -> Scan:
        """``find_packet`` that also says whether a checksum failure was dropped.

        - junk before a header is skipped (counted as garbage); a trailing 0xFF is kept
          (it may be the first half of a header);
        - a header with an impossible id (0xFF; 0xFE in a status packet) or LEN (< 2 or
          > ``max_length``) is junk: one byte is dropped and the scan goes on;
        - a complete packet failing its checksum is dropped as garbage, up to the next
          header inside it if any (a false header found in junk must not swallow the real
          packet behind it), with ``corrupt=True``;
        - an incomplete packet waits for more bytes -- unless a complete, valid packet
          starts later in the buffer, which proves the first header was junk."""
        n = len(buf)
        pos = 0
        while True:
            i = buf.find(HEADER, pos)
            if i < 0:
                end = n - 1 if n and buf[-1] == 0xFF else n
                return Scan(None, end, end)
            if n - i < 4:
                return Scan(None, i, i)  # drop the junk before the header, wait for the rest
            total = self._plausible(buf, i, status)
            if not total:
                pos = i + 1
                continue
            if n - i < total:
                j = self._next_valid(buf, i + 2, status)
                if j < 0:
                    return Scan(None, i, i)
                pos = j
                continue
            raw = bytes(buf[i:i + total])
            if raw[-1] == checksum(raw[2:-1]):
                return Scan(Packet(raw[2], raw[4], raw[5:-1], raw), i + total, i)
            # a header starting inside the bad packet -- or on its last byte: a garbled LEN can
            # end the window between the two FF bytes of the next packet's header
            inner = buf.find(HEADER, i + 2, i + total + 1)
            end = inner if inner >= 0 else i + total
            return Scan(None, end, end, True)

    def error_names(self, error: int) -> tuple[str, ...]:
        return error_names(error)

    def error_byte(self, names) -> int:
        return error_byte(names)

    # -- internals -----------------------------------------------------------------------------
    def _packet(self, servo_id: int, code: int, params: bytes) -> bytes:
        length = len(params) + 2
        if length > self.max_length:
            raise ValueError(f"Feetech packet too long: {len(params)} params (LEN {length} > {self.max_length}); "
                             f"split the transfer (a packet is at most {self.max_length + 4} bytes)")
        body = bytes((servo_id, length, code)) + params
        return HEADER + body + bytes((checksum(body),))

    def _write(self, code: int, servo_id: int, addr: int, data: bytes) -> bytes:
        _check("servo id", servo_id, 0, BROADCAST_ID)
        _check("address", addr, 0, 0xFF)
        if not data:
            raise ValueError("Feetech WRITE needs at least one data byte")
        return self._packet(servo_id, code, bytes((addr,)) + bytes(data))

    def _plausible(self, buf, i: int, status: bool) -> int:
        """Total packet size if the header at ``i`` has a possible id and LEN, else 0."""
        pid, length = buf[i + 2], buf[i + 3]
        if pid == 0xFF or (status and pid == BROADCAST_ID) or not 2 <= length <= self.max_length:
            return 0
        return length + 4

    def _next_valid(self, buf, start: int, status: bool) -> int:
        """Index of the first complete packet with a good checksum at or after ``start``; -1."""
        n = len(buf)
        j = buf.find(HEADER, start)
        while 0 <= j and n - j >= 4:
            total = self._plausible(buf, j, status)
            if total and n - j >= total and buf[j + total - 1] == checksum(buf[j + 2:j + total - 1]):
                return j
            j = buf.find(HEADER, j + 1)
        return -1
