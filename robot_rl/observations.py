"""Observation sets: which keys a policy reads, as data (``robot_rl/conf/observations/``).

- ``privileged``: joints, gripper, end-effector position and the objects' poses, which
  only the twin knows; the default of state policies (their published figures use it).
- ``proprio``: what any arm measures (joints, gripper, end-effector pose); no cameras.
- ``deployable``: ``proprio`` + the front and wrist cameras; the default of image policies.

A policy config names a set (``observations: deployable``) or lists ``state_keys`` /
``cameras`` itself; :func:`resolve` says which keys that means. :data:`PRIVILEGED_KEYS` are
the keys no real robot provides: ``robot-rl eval ... deployable=true`` refuses a checkpoint
that needs one, and the inference node says which keys its robot lacks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from robot_rl.spec import CONF_DIR, conf_file

PRIVILEGED_KEYS = ("object_state",)


@dataclass(frozen=True)
class ObservationSet:
    name: str
    state_keys: tuple[str, ...]
    cameras: tuple[str, ...]

    @property
    def deployable(self) -> bool:
        return not privileged(self.state_keys)


def available() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "observations").glob("*.yaml"))


def load(name_or_path: str | Path) -> ObservationSet:
    p = conf_file("observations", name_or_path, "observation set")
    d: dict[str, Any] = yaml.safe_load(p.read_text()) or {}
    try:
        return ObservationSet(str(d.get("name", p.stem)), tuple(d["state_keys"] or ()), tuple(d.get("cameras") or ()))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{p}: an observation set needs state_keys (and optionally cameras) ({e!r})") from None


def privileged(keys) -> list[str]:
    """The keys among `keys` that only the twin provides."""
    return [k for k in keys if k in PRIVILEGED_KEYS]


def resolve(pcfg: Mapping[str, Any]) -> tuple[list[str], list[str], str | None]:
    """(state keys, cameras as ``image_<name>``, the set's name or None) of a policy config.

    ``observations: NAME`` gives the state keys and, unless the config names cameras, the cameras;
    without it, the config's own ``state_keys`` / ``cameras``, where a missing ``state_keys``
    is ``deployable``'s when the policy has cameras and ``privileged``'s when it has none."""
    name = pcfg.get("observations")
    cams = list(pcfg.get("cameras") or [])
    state = pcfg.get("state_keys")
    if name:
        s = load(name)
        state, cams = list(s.state_keys), cams or list(s.cameras)
    elif state is None:
        name = "deployable" if cams else "privileged"
        state = list(load(name).state_keys)
    else:
        state = list(state)
    return state, [c if c.startswith("image_") else f"image_{c}" for c in cams], name
