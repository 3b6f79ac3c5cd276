"""Control tables: named registers at addresses, with sizes and sign encodings."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Register:
    name: str
    addr: int
    size: int  # bytes: 1, 2 or 4
    sign_bit: int | None = None  # sign-magnitude sign bit (Feetech: 15, 11, 10); None: see `signed`
    signed: bool = False  # two's complement (Dynamixel)
    access: str = "RW"  # "R" or "RW"
    eeprom: bool = False  # EEPROM area (lock / torque off to write)
    default: int = 0  # the value a factory-new servo holds


@dataclass(frozen=True)
class ControlTable:
    """One servo model's registers. ``model_number`` is what PING / Model_Number reads."""
    model: str  # e.g. "sts3215", "xl330-m288"
    model_number: int
    registers: dict[str, Register] = field(default_factory=dict)
    size: int = 0  # bytes of register memory (the emulator's register file)
    resolution: int = 4096  # encoder ticks per turn
    byteorder: str = "little"
    baudrates: dict[int, int] = field(default_factory=dict)  # register value -> baud

    def __getitem__(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"{self.model} has no register {name!r}") from None

    def encode(self, name: str, value: int) -> bytes:
        """A register value as the bytes on the wire / in the register file."""
        r = self[name]
        return encode_value(int(value), r, self.byteorder)

    def decode(self, name: str, data: bytes) -> int:
        return decode_value(bytes(data), self[name], self.byteorder)


def encode_value(value: int, reg: Register, byteorder: str = "little") -> bytes:
    bits = 8 * reg.size
    if reg.sign_bit is not None:
        mag = abs(value)
        if mag >= (1 << reg.sign_bit):
            raise ValueError(f"{reg.name}: {value} does not fit a sign-magnitude value with sign bit {reg.sign_bit}")
        raw = mag | ((1 << reg.sign_bit) if value < 0 else 0)
    elif reg.signed:
        if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
            raise ValueError(f"{reg.name}: {value} does not fit {reg.size} signed bytes")
        raw = value & ((1 << bits) - 1)
    else:
        if not 0 <= value < (1 << bits):
            raise ValueError(f"{reg.name}: {value} does not fit {reg.size} unsigned bytes")
        raw = value
    return raw.to_bytes(reg.size, byteorder)


def decode_value(data: bytes, reg: Register, byteorder: str = "little") -> int:
    if len(data) != reg.size:
        raise ValueError(f"{reg.name}: {len(data)} bytes for a {reg.size}-byte register")
    raw = int.from_bytes(data, byteorder)
    if reg.sign_bit is not None:
        mag = raw & ((1 << reg.sign_bit) - 1)
        return -mag if raw & (1 << reg.sign_bit) else mag
    if reg.signed and raw & (1 << (8 * reg.size - 1)):
        return raw - (1 << (8 * reg.size))
    return raw
