"""Is this process in a loopback-only network namespace? (No rclpy import.)

Asks the kernel over netlink (``if_nameindex``): /sys/class/net keeps listing the host's
interfaces inside a namespace unless sysfs is remounted there.
"""
from __future__ import annotations

import socket
import sys

HOW = "run it through scripts/isolated.sh (or `make test` / `make bench`)"


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def loopback_only() -> bool:
    try:
        return interfaces() == ["lo"]
    except OSError:
        return False


def require_loopback_only(what: str) -> None:
    """Exit with one clear line unless DDS traffic cannot leave this machine."""
    try:
        ifs = interfaces()
    except OSError as e:
        sys.exit(f"{what}: cannot list network interfaces ({e}); refusing to start DDS participants")
    if ifs != ["lo"]:
        sys.exit(f"{what}: refusing to start DDS participants: this network namespace has {ifs}, "
                 f"not only lo; {HOW}")
