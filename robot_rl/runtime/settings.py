"""A small base for the runtime's settings dataclasses: construction from a dict that
names unknown keys, and back to a dict."""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Mapping


class SettingsBase:
    error: type[ValueError] = ValueError  # raised for unknown keys
    what: str = "settings"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise cls.error(f"unknown {cls.what} {sorted(bad)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
