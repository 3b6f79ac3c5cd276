"""Typed servo-bus errors. Every message names the port / id / register involved."""
from __future__ import annotations


class ServoError(RuntimeError):
    """Base of every servo-bus error."""


class PortError(ServoError):
    """The serial port cannot be opened, or went away (unplugged adapter)."""


class ServoTimeout(ServoError):
    """No (complete) reply from a servo within the timeout, after all retries."""

    def __init__(self, msg: str, ids: tuple[int, ...] = ()):
        super().__init__(msg)
        self.ids = tuple(ids)


class ServoCorrupt(ServoError):
    """Replies arrived but failed their checksum / CRC on every attempt."""

    def __init__(self, msg: str, ids: tuple[int, ...] = ()):
        super().__init__(msg)
        self.ids = tuple(ids)


class ServoStatusError(ServoError):
    """A status packet reported error bits. ``bits`` is the raw error byte, ``names``
    the decoded flags (e.g. ``["overload"]``)."""

    def __init__(self, msg: str, servo_id: int, bits: int, names: tuple[str, ...]):
        super().__init__(msg)
        self.servo_id, self.bits, self.names = servo_id, bits, tuple(names)


class ServoVoltageError(ServoStatusError):
    pass


class ServoAngleError(ServoStatusError):
    pass


class ServoOverheatError(ServoStatusError):
    pass


class ServoOverloadError(ServoStatusError):
    pass


class ServoHardwareError(ServoStatusError):
    """Any other hardware alarm (over-current, encoder, electrical shock, ...)."""


class ServoInstructionError(ServoStatusError):
    """The servo rejected the instruction (bad instruction, range, checksum, access)."""


# flag name -> exception class; the protocol modules map their bits onto these names
STATUS_CLASSES: dict[str, type[ServoStatusError]] = {
    "voltage": ServoVoltageError,
    "angle": ServoAngleError,
    "overheat": ServoOverheatError,
    "overload": ServoOverloadError,
    "overcurrent": ServoHardwareError,
    "hardware": ServoHardwareError,
    "encoder": ServoHardwareError,
    "electrical_shock": ServoHardwareError,
    "instruction": ServoInstructionError,
    "checksum": ServoInstructionError,
    "range": ServoInstructionError,
    "access": ServoInstructionError,
    "data_length": ServoInstructionError,
    "data_limit": ServoInstructionError,
    "result_fail": ServoInstructionError,
}

# the flags that mean "the servo protects itself": the arm must stop
HARDWARE_ALARMS = ("voltage", "overheat", "overload", "overcurrent", "hardware", "encoder", "electrical_shock")


def status_error(servo_id: int, bits: int, names: tuple[str, ...], context: str = "") -> ServoStatusError:
    """The most specific exception for a set of flags (hardware alarms first)."""
    order = [n for n in names if n in HARDWARE_ALARMS] + [n for n in names if n not in HARDWARE_ALARMS]
    cls = STATUS_CLASSES.get(order[0], ServoStatusError) if order else ServoStatusError
    where = f" ({context})" if context else ""
    return cls(f"servo {servo_id} reports {', '.join(names) or hex(bits)} (error byte 0x{bits:02x}){where}",
               servo_id, bits, names)
