"""The interface a servo protocol implements (Feetech STS/SMS, Dynamixel 2.0).

A protocol is pure bytes <-> packets: no I/O. The bus (``bus.py``) does the I/O, the
emulator (``robot_rl.drivers.virtual.servo_bus``) is the other end of the same wire.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

# instruction codes shared by both protocols' names (values differ per protocol)
PING, READ, WRITE, SYNC_READ, SYNC_WRITE = "ping", "read", "write", "sync_read", "sync_write"


@dataclass(frozen=True)
class Packet:
    """A parsed packet. Instruction packets: ``code`` is the instruction byte; status
    packets: ``code`` is the error byte. ``params`` excludes header, id, length, code and
    checksum (Dynamixel: un-stuffed)."""
    id: int
    code: int
    params: bytes
    raw: bytes = b""  # the packet's bytes as found on the wire


class Protocol(abc.ABC):
    name: str
    broadcast_id: int
    byteorder: str = "little"  # register data; Feetech STS is little-endian, SCS big-endian
    instructions: dict[str, int]  # PING/READ/WRITE/SYNC_READ/SYNC_WRITE (+ others) -> code

    # -- client side: instruction packets ---------------------------------------------------
    @abc.abstractmethod
    def instruction(self, servo_id: int, code: int, params: bytes = b"") -> bytes:
        """A complete instruction packet (header, id, length, code, params, checksum/CRC)."""

    def ping(self, servo_id: int) -> bytes:
        return self.instruction(servo_id, self.instructions[PING])

    @abc.abstractmethod
    def read(self, servo_id: int, addr: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def write(self, servo_id: int, addr: int, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def sync_read(self, ids: list[int], addr: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def sync_write(self, addr: int, length: int, data: dict[int, bytes]) -> bytes: ...

    # -- server side (emulator): status packets -------------------------------------------------
    @abc.abstractmethod
    def status(self, servo_id: int, error: int, params: bytes = b"") -> bytes:
        """A complete status (reply) packet."""

    # -- both: finding packets in a byte stream ---------------------------------------------------
    @abc.abstractmethod
    def find_packet(self, buf: bytes | bytearray, status: bool) -> tuple[Packet | None, int, int]:
        """Scan `buf` for the first complete, valid packet (a status packet when `status`,
        else an instruction packet). Returns ``(packet, consumed, garbage)``:
        `consumed` bytes of `buf` are done with (garbage before the header, a packet that
        failed its checksum, and the packet itself); `garbage` counts the bytes thrown away
        (0 for a clean stream). ``(None, n, g)`` with n > 0: drop n bytes and scan again;
        ``(None, 0, 0)``: need more bytes. A packet whose checksum fails is dropped
        (counted as garbage) -- the caller sees it as a corrupt reply."""

    @abc.abstractmethod
    def error_names(self, error: int) -> tuple[str, ...]:
        """Status error byte -> flag names (see ``errors.STATUS_CLASSES``)."""

    # sync-read decoding: each servo answers a SYNC_READ with its own status packet
    # (Feetech STS and Dynamixel 2.0 both do), so the bus reads len(ids) status packets.
    def sync_read_params(self, ids: list[int], addr: int, length: int) -> bytes:  # pragma: no cover
        raise NotImplementedError
