"""What actors and the learner send each other: transitions and policy weights as
safetensors bytes (never pickle), self-describing and checksummed.

A message is one safetensors blob whose metadata carries

- ``kind``: ``robot_rl.transitions`` or ``robot_rl.weights``; ``format``: ``1``;
- transitions: ``actor`` (the sending actor's source name), ``seq`` (its batch number),
  ``n`` (transitions); weights: ``version``;
- any extra ``str -> str`` metadata the sender adds (weights: the policy's architecture);
- ``sha256``: the SHA-256 of the whole blob with this field's 64 characters replaced by
  ``PLACEHOLDER`` -- so a flipped bit anywhere (header, metadata, tensor bytes) is caught.

Every unpack problem (truncated, corrupted, wrong kind, missing or extra tensors, wrong
shapes or dtypes, non-finite weights) raises :class:`WireError` with one line naming it.
No ROS here: ``robot_rl.ros.rl_nodes`` puts these bytes in ``std_msgs/UInt8MultiArray``.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

import numpy as np

FORMAT = "1"
KIND_TRANSITIONS = "robot_rl.transitions"
KIND_WEIGHTS = "robot_rl.weights"
PLACEHOLDER = b"~" * 64
_HEX = re.compile(r"^[0-9a-f]{64}$")
# fields every transition batch has besides obs.<key> / next_obs.<key>
TRANSITION_FIELDS = ("action", "reward", "terminated", "truncated", "intervened")
_RESERVED = {"kind", "format", "sha256", "actor", "seq", "n", "version"}
MAX_HEADER = 1 << 24  # 16 MiB of JSON header is far beyond anything we write


class WireError(ValueError):
    """A message that cannot be trusted or does not fit (one-line message). ``meta`` is set
    (``actor``, ``seq``) when the message itself was intact but its content does not fit."""

    meta: dict[str, Any] | None = None


# -- framing ---------------------------------------------------------------------------------
def _seal(blob: bytes) -> bytes:
    """Fill the sha256 placeholder of a freshly serialised blob."""
    n = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + n]
    if header.count(PLACEHOLDER) != 1:
        raise WireError("cannot seal message: checksum placeholder not unique in the header "
                        "(a tensor name or metadata value contains it)")
    digest = hashlib.sha256(blob).hexdigest().encode()
    i = 8 + header.index(PLACEHOLDER)
    return blob[:i] + digest + blob[i + 64:]


def _open(data: bytes | bytearray | memoryview, kind: str) -> tuple[dict[str, str], dict[str, Any], bytes]:
    """Check framing, checksum and kind; returns (metadata, tensor header entries, blob)."""
    blob = bytes(data) if not isinstance(data, bytes) else data
    if len(blob) < 8:
        raise WireError(f"{kind} message truncated: {len(blob)} bytes")
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or n > MAX_HEADER or 8 + n > len(blob):
        raise WireError(f"{kind} message truncated or corrupt: header of {n} bytes in a {len(blob)}-byte message")
    raw = blob[8:8 + n]
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise WireError(f"{kind} message corrupt: unreadable header") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise WireError(f"{kind} message corrupt: header has no metadata")
    meta = header.pop("__metadata__")
    digest = meta.get("sha256")
    if not isinstance(digest, str) or not _HEX.match(digest):
        raise WireError(f"{kind} message corrupt or unsigned: no valid sha256 in its metadata")
    d = digest.encode()
    if raw.count(d) != 1:
        raise WireError(f"{kind} message corrupt: checksum field ambiguous")
    i = raw.index(d)
    h = hashlib.sha256()
    h.update(blob[:8 + i])
    h.update(PLACEHOLDER)
    h.update(memoryview(blob)[8 + i + 64:])
    if h.hexdigest() != digest:
        raise WireError(f"{kind} message corrupt: checksum mismatch ({len(blob)} bytes)")
    got = meta.get("kind")
    if got != kind:
        raise WireError(f"expected a {kind} message, got kind {got!r}")
    if meta.get("format") != FORMAT:
        raise WireError(f"{kind} message has format {meta.get('format')!r}; this reader knows {FORMAT!r}")
    return meta, header, blob


def _int_meta(meta: Mapping[str, str], key: str, kind: str) -> int:
    try:
        v = int(meta[key])
    except (KeyError, TypeError, ValueError):
        raise WireError(f"{kind} message lacks an integer {key!r} in its metadata") from None
    if v < 0:
        raise WireError(f"{kind} message has negative {key} {v}")
    return v


def _extra_meta(extra: Mapping[str, str] | None) -> dict[str, str]:
    out = {}
    for k, v in (extra or {}).items():
        if k in _RESERVED:
            raise WireError(f"metadata key {k!r} is reserved")
        if not isinstance(k, str) or not isinstance(v, str):
            raise WireError(f"metadata must be str -> str, got {k!r}: {type(v).__name__}")
        out[k] = v
    return out


# -- transitions -----------------------------------------------------------------------------
def pack_transitions(batch: Mapping[str, np.ndarray], actor_id: str, seq: int,
                     extra: Mapping[str, str] | None = None) -> bytes:
    """A batch from :func:`robot_rl.rl.replay.transitions_to_batch` -> bytes."""
    from safetensors.numpy import save

    if not actor_id:
        raise WireError("actor id must not be empty")
    arrays = {k: np.ascontiguousarray(v) for k, v in batch.items()}
    n = _check_batch(arrays)
    meta = {**_extra_meta(extra), "kind": KIND_TRANSITIONS, "format": FORMAT, "actor": str(actor_id),
            "seq": str(int(seq)), "n": str(n), "sha256": PLACEHOLDER.decode()}
    return _seal(save(arrays, metadata=meta))


def _check_batch(batch: Mapping[str, np.ndarray]) -> int:
    missing = [k for k in TRANSITION_FIELDS if k not in batch]
    if missing:
        raise WireError(f"transition batch lacks {missing}")
    lens = {k: (v.shape[0] if v.ndim else -1) for k, v in batch.items()}
    if len(set(lens.values())) != 1:
        raise WireError(f"transition batch fields have different lengths: {lens}")
    n = lens["action"]
    if n <= 0:
        raise WireError("transition batch is empty")
    obs = sorted(k[4:] for k in batch if k.startswith("obs."))
    nxt = sorted(k[9:] for k in batch if k.startswith("next_obs."))
    if not obs or obs != nxt:
        raise WireError(f"transition batch observation keys do not match: obs {obs}, next_obs {nxt}")
    unknown = sorted(set(batch) - set(TRANSITION_FIELDS) - {f"obs.{k}" for k in obs} - {f"next_obs.{k}" for k in obs})
    if unknown:
        raise WireError(f"transition batch has unknown fields {unknown}")
    return n


def unpack_transitions(data: bytes, obs_spec: Mapping[str, tuple[tuple[int, ...], Any]] | None = None,
                       action_dim: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """bytes -> (batch, meta). ``meta``: ``actor`` (str), ``seq`` (int), ``n`` (int) and the
    sender's extra metadata (strings). With ``obs_spec`` / ``action_dim`` the batch must fit a
    replay buffer of that spec exactly (keys, shapes, dtypes); actions and rewards must be finite."""
    k = KIND_TRANSITIONS
    meta, _, blob = _open(data, k)
    actor = meta.get("actor")
    if not isinstance(actor, str) or not actor:
        raise WireError(f"{k} message has no actor id")
    seq, n = _int_meta(meta, "seq", k), _int_meta(meta, "n", k)
    try:
        return _transitions_content(blob, meta, actor, seq, n, obs_spec, action_dim)
    except WireError as e:
        e.meta = {"actor": actor, "seq": seq}
        raise


def _transitions_content(blob, meta, actor, seq, n, obs_spec, action_dim):
    from safetensors.numpy import load

    k = KIND_TRANSITIONS
    try:
        batch = load(blob)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WireError(f"{k} message corrupt: {type(e).__name__}: {e}") from None
    got = _check_batch(batch)
    if got != n:
        raise WireError(f"{k} message says {n} transitions, holds {got}")
    for f, dt in (("terminated", np.bool_), ("truncated", np.bool_), ("intervened", np.bool_),
                  ("reward", np.float32), ("action", np.float32)):
        if batch[f].dtype != dt:
            raise WireError(f"transition field {f!r} has dtype {batch[f].dtype}, expected {np.dtype(dt)}")
    if batch["reward"].shape != (n,) or batch["action"].ndim != 2:
        raise WireError(f"transition batch has reward shape {batch['reward'].shape}, action shape "
                        f"{batch['action'].shape}")
    if action_dim is not None and batch["action"].shape[1] != action_dim:
        raise WireError(f"actions have {batch['action'].shape[1]} entries, the learner expects {action_dim}")
    if not (np.isfinite(batch["action"]).all() and np.isfinite(batch["reward"]).all()):
        raise WireError(f"{k} message from {actor} seq {seq} has non-finite actions or rewards")
    if obs_spec is not None:
        keys = sorted(kk[4:] for kk in batch if kk.startswith("obs."))
        if keys != sorted(obs_spec):
            raise WireError(f"transition observation keys {keys} do not match the learner's {sorted(obs_spec)}")
        for kk, (shape, dtype) in obs_spec.items():
            for pre in ("obs.", "next_obs."):
                a = batch[pre + kk]
                if a.shape[1:] != tuple(shape) or a.dtype != np.dtype(dtype):
                    raise WireError(f"{pre}{kk} is {a.dtype}{list(a.shape[1:])}, the learner expects "
                                    f"{np.dtype(dtype)}{list(shape)}")
    info: dict[str, Any] = {kk: v for kk, v in meta.items() if kk not in ("kind", "format", "sha256")}
    info.update(actor=actor, seq=seq, n=n)
    return batch, info


# -- weights ---------------------------------------------------------------------------------
def pack_weights(state_dict: Mapping[str, Any], version: int, extra: Mapping[str, str] | None = None) -> bytes:
    """A state dict of torch tensors (e.g. ``SACLearner.actor_state()``) -> bytes. Refuses
    non-finite weights (a diverged learner must not ship them)."""
    import torch
    from safetensors.torch import save

    if int(version) < 0:
        raise WireError(f"weights version must be >= 0, got {version}")
    tensors = {}
    for k, v in state_dict.items():
        t = torch.as_tensor(v).detach().cpu()
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WireError(f"weights {k!r} hold NaN or inf: not sent")
        tensors[k] = t.clone().contiguous()  # own storage: no shared or strided tensors
    meta = {**_extra_meta(extra), "kind": KIND_WEIGHTS, "format": FORMAT, "version": str(int(version)),
            "sha256": PLACEHOLDER.decode()}
    return _seal(save(tensors, metadata=meta))


def weights_meta(data: bytes) -> dict[str, str]:
    """The verified metadata of a weights message, without building tensors."""
    meta, _, _ = _open(data, KIND_WEIGHTS)
    _int_meta(meta, "version", KIND_WEIGHTS)
    return {k: v for k, v in meta.items() if k not in ("kind", "format", "sha256")}


def unpack_weights(data: bytes, expected: Mapping[str, tuple[tuple[int, ...], Any]] | None = None
                   ) -> tuple[dict[str, Any], int]:
    """bytes -> (state dict of torch tensors, version). ``expected``: {name: (shape, dtype)}
    (see :func:`state_spec`) the weights must match exactly. Non-finite weights are refused."""
    import torch
    from safetensors.torch import load

    k = KIND_WEIGHTS
    meta, _, blob = _open(data, k)
    version = _int_meta(meta, "version", k)
    try:
        sd = load(blob)
    except Exception as e:  # noqa: BLE001
        raise WireError(f"{k} message corrupt: {type(e).__name__}: {e}") from None
    if expected is not None:
        missing = sorted(set(expected) - set(sd))
        extra = sorted(set(sd) - set(expected))
        if missing or extra:
            raise WireError(f"weights v{version} do not fit this policy: missing {missing[:5]}"
                            f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        for name, (shape, dtype) in expected.items():
            t = sd[name]
            if tuple(t.shape) != tuple(shape) or t.dtype != _torch_dtype(dtype):
                raise WireError(f"weights v{version}: {name!r} is {t.dtype}{list(t.shape)}, this policy "
                                f"expects {_torch_dtype(dtype)}{list(shape)}")
    for name, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WireError(f"weights v{version}: {name!r} holds NaN or inf")
    return sd, version


def _torch_dtype(d):
    import torch
    if isinstance(d, torch.dtype):
        return d
    return torch.from_numpy(np.zeros(0, np.dtype(d))).dtype


def state_spec(module_or_state) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{name: (shape, torch dtype)} of a module's state dict (the ``expected`` of
    :func:`unpack_weights`)."""
    sd = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
