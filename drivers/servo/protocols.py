"""Protocols and control tables by name.

    get_protocol("feetech")          -> FeetechProtocol()
    get_protocol("dynamixel")        -> Dynamixel2Protocol()
    get_table("sts3215")             -> the STS3215 ControlTable (looked up in every protocol's MODELS)
    models("dynamixel")              -> {"xl330-m288": ..., "xl430-w250": ...}
    table_for_model_number("feetech", 777) -> the table whose Model_Number is 777

The protocol packages are imported lazily, so importing this module costs nothing.
"""
from __future__ import annotations

import importlib

from robot_rl.drivers.servo.protocol import Protocol
from robot_rl.drivers.servo.table import ControlTable

# protocol name -> (module, class) of the codec, and the module holding its MODELS registry
_PROTOCOLS = {
    "feetech": ("robot_rl.drivers.feetech.protocol", "FeetechProtocol", "robot_rl.drivers.feetech.tables"),
    "dynamixel": ("robot_rl.drivers.dynamixel.protocol", "Dynamixel2Protocol", "robot_rl.drivers.dynamixel.tables"),
}
PROTOCOL_NAMES = tuple(_PROTOCOLS)


def _known() -> str:
    return ", ".join(repr(n) for n in _PROTOCOLS)


def _normal(name: str) -> str:
    key = str(name).lower()
    if key in ("dynamixel2", "dynamixel2.0", "dxl", "protocol2"):
        return "dynamixel"
    if key in ("sts", "scs", "feetech_sts"):
        return "feetech"
    return key


def get_protocol(name: str | Protocol) -> Protocol:
    """A protocol instance by name ("feetech" | "dynamixel"); a Protocol instance is returned as is."""
    if isinstance(name, Protocol):
        return name
    try:
        mod, cls, _ = _PROTOCOLS[_normal(name)]
    except KeyError:
        raise ValueError(f"unknown servo protocol {name!r} (known: {_known()})") from None
    return getattr(importlib.import_module(mod), cls)()


def protocol_key(protocol: str | Protocol) -> str:
    """The registry name ("feetech" | "dynamixel") of a protocol name or instance."""
    if isinstance(protocol, Protocol):
        for key, (_, cls, _) in _PROTOCOLS.items():
            if type(protocol).__name__ == cls:
                return key
        name = str(getattr(protocol, "name", "")).lower()
        return "dynamixel" if "dynamixel" in name else _normal(name)
    key = _normal(protocol)
    if key not in _PROTOCOLS:
        raise ValueError(f"unknown servo protocol {protocol!r} (known: {_known()})")
    return key


def models(protocol: str | Protocol) -> dict[str, ControlTable]:
    """The MODELS registry (model name -> ControlTable) of one protocol."""
    key = protocol_key(protocol)
    try:
        return importlib.import_module(_PROTOCOLS[key][2]).MODELS
    except KeyError:
        raise ValueError(f"unknown servo protocol {protocol!r} (known: {_known()})") from None


def all_models() -> dict[str, tuple[str, ControlTable]]:
    """model name -> (protocol name, table), over every protocol."""
    out: dict[str, tuple[str, ControlTable]] = {}
    for key in _PROTOCOLS:
        for model, table in models(key).items():
            out[model] = (key, table)
    return out


def get_table(model: str) -> ControlTable:
    """The control table of a servo model, looked up in every protocol's MODELS registry."""
    key = str(model).lower()
    found = all_models()
    if key in found:
        return found[key][1]
    raise ValueError(f"unknown servo model {model!r} (known: {', '.join(sorted(found))})")


def protocol_of_model(model: str) -> str:
    """Which protocol ("feetech" | "dynamixel") a servo model speaks."""
    found = all_models()
    key = str(model).lower()
    if key not in found:
        raise ValueError(f"unknown servo model {model!r} (known: {', '.join(sorted(found))})")
    return found[key][0]


def table_for_model_number(protocol: str | Protocol, number: int) -> ControlTable | None:
    """The table of the model whose Model_Number is `number` (None when unknown)."""
    for table in models(protocol).values():
        if table.model_number == number:
            return table
    return None
