"""The interface every policy shares, and checkpoints as safetensors + JSON (never pickle).

A policy maps an observation history (``n_obs_steps`` steps of the keys in its config) to
a chunk of ``horizon`` actions, in the units the robot takes (normalisation is inside).
Checkpoints are a folder: ``model.safetensors`` (weights + normaliser) and ``config.json``
(policy type and config, the robot spec it was trained for, free-form metadata).
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.spec import RobotSpec, SpecError

CHECKPOINT_FORMAT = 1
POLICIES: dict[str, type["Policy"]] = {}


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or for another robot."""


@dataclass
class PolicyConfig:
    state_keys: list[str] = field(default_factory=lambda: ["joint_pos", "gripper", "ee_pos", "object_state"])
    cameras: list[str] = field(default_factory=list)
    action_key: str = "action"
    action_dim: int = 7
    state_dims: dict[str, int] = field(default_factory=dict)
    n_obs_steps: int = 2
    horizon: int = 16  # actions predicted per call
    n_action_steps: int = 8  # actions executed before predicting again
    # image encoder (ResNetEncoder): one residual stage per width, pooling, keypoints
    cnn_widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    cnn_pool: str = "spatial_softmax"  # spatial_softmax | avg
    cnn_keypoints: int = 32

    def encoder_kwargs(self) -> dict[str, Any]:
        """The image-encoder settings ObservationEncoder takes."""
        return {"widths": list(self.cnn_widths), "pool": self.cnn_pool, "keypoints": int(self.cnn_keypoints)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PolicyConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"unknown policy config keys {sorted(unknown)}")
        return cls(**d)


def import_policies() -> dict[str, str]:
    """Import every policy module in robot_rl.policies so that its type is registered (for
    load_checkpoint and the trainer); returns {module: error} for those that failed."""
    import importlib
    import pkgutil
    import robot_rl.policies as pkg
    failed = {}
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name in ("base", "common") or m.ispkg:
            continue
        try:
            importlib.import_module(f"robot_rl.policies.{m.name}")
        except Exception as e:  # a broken policy module must not stop the others
            failed[m.name] = f"{type(e).__name__}: {e}"
    return failed


def register(name: str):
    def deco(cls):
        cls.type_name = name
        POLICIES[name] = cls
        return cls
    return deco


class Policy(nn.Module, ABC):
    type_name = ""
    config_class = PolicyConfig
    backend = "torch"  # what runs the networks ("onnxruntime": an ONNX export, robot_rl.policies.export)

    def __init__(self, config: PolicyConfig, normalizer: Normalizer):
        super().__init__()
        self.config = config
        self.normalizer = normalizer

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def obs_to_tensors(self, obs_history: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """(T, ...) or (B, T, ...) arrays -> batched tensors on the policy's device, state keys
        normalised; images stay uint8."""
        out = {}
        for k in self.config.state_keys + self.config.cameras:
            if k not in obs_history:
                raise KeyError(f"observation history lacks {k!r}; the policy needs {self.config.state_keys + self.config.cameras}")
            x = torch.as_tensor(np.asarray(obs_history[k]) if not isinstance(obs_history[k], torch.Tensor)
                                else obs_history[k], device=self.device)
            is_img = k in self.config.cameras
            if x.dim() == (4 if is_img else 2):
                x = x[None]
            if x.shape[1] != self.config.n_obs_steps:
                raise ValueError(f"{k}: expected {self.config.n_obs_steps} observation steps, got {x.shape[1]}")
            out[k] = x if is_img else self.normalizer.normalize(k, x.float())
        return out

    @abstractmethod
    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Training loss on a batch from robot_rl.data.SequenceSampler (raw units)."""

    @property
    def chunk_len(self) -> int:
        """Actions per predicted chunk, from the current step on: the model predicts
        ``horizon`` actions aligned with the first observation step, so the first
        ``n_obs_steps - 1`` of them lie in the past and are not returned."""
        return self.config.horizon - self.config.n_obs_steps + 1

    @abstractmethod
    def predict_chunks(self, obs_history: Mapping[str, Any], generator: torch.Generator | None = None) -> np.ndarray:
        """(B, chunk_len, action_dim) actions in robot units for a batch of observation
        histories ((B, n_obs_steps, ...) per key; (n_obs_steps, ...) is a batch of one).
        Row 0 is the action for the current (latest observed) step."""

    def predict_chunk(self, obs_history: Mapping[str, Any], generator: torch.Generator | None = None) -> np.ndarray:
        """(chunk_len, action_dim) actions in robot units for one observation history."""
        return self.predict_chunks(obs_history, generator)[0]

    def reset(self) -> None:
        """Forget per-episode state (none by default)."""


def trained_robot(robot_spec: Mapping[str, Any], spec: RobotSpec | None, what: str) -> RobotSpec:
    """The spec a checkpoint (or an export) was trained for; with `spec`, one CheckpointError
    naming both robots when `spec` is not compatible with it."""
    trained_for = RobotSpec.from_dict(robot_spec)
    if spec is not None:
        try:
            trained_for.check_compatible(spec, what=what)
        except SpecError as e:
            raise CheckpointError(str(e)) from None
    return trained_for


def save_checkpoint(policy: Policy, path: str | os.PathLike, spec: RobotSpec, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``path/model.safetensors`` + ``path/config.json`` atomically (temp files + rename)."""
    # clone: modules shared under two names (one CNN for all cameras) would alias memory,
    # which safetensors refuses
    tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    tensors.update(policy.normalizer.state_dict())
    cfg = {"format": CHECKPOINT_FORMAT, "policy": policy.type_name, "config": asdict(policy.config),
           "normalizer_modes": policy.normalizer.modes, "robot_spec": spec.to_dict(),
           "robot_fingerprint": spec.fingerprint(), "metadata": dict(metadata or {})}
    return write_checkpoint_dir(path, tensors, cfg)


def write_checkpoint_dir(path: str | os.PathLike, tensors: Mapping[str, Any], config: Mapping[str, Any]) -> Path:
    """``path/model.safetensors`` + ``path/config.json``, each written to a temporary name and
    renamed (the counterpart of :func:`read_checkpoint_dir`)."""
    from safetensors.torch import save_file
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = p / "model.safetensors.tmp", p / "config.json.tmp"
    save_file(dict(tensors), str(tmp_w))
    tmp_c.write_text(json.dumps(config, indent=2, default=str))
    os.replace(tmp_w, p / "model.safetensors")
    os.replace(tmp_c, p / "config.json")
    return p


def read_checkpoint_dir(path: str | os.PathLike, error: type[Exception], label: str) -> tuple[Path, Any]:
    """(directory, parsed config.json) of a ``config.json`` + ``model.safetensors`` checkpoint
    directory; a missing file or broken JSON is one ``error`` naming ``label``."""
    p = Path(path)
    if not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
        raise error(f"no {label} at {p} (needs config.json and model.safetensors)")
    try:
        return p, json.loads((p / "config.json").read_text())
    except ValueError as e:
        raise error(f"{label} {p}: config.json is not valid JSON ({e})") from None


def load_checkpoint(path: str | os.PathLike, spec: RobotSpec | None = None, device: str | None = None) -> tuple[Policy, dict]:
    """(policy in eval mode, config dict). Refuses a missing or corrupt checkpoint, an unknown
    policy type, or one trained for a different robot spec than `spec` -- one clear error each."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    p, cfg = read_checkpoint_dir(path, CheckpointError, "checkpoint")
    wf = p / "model.safetensors"
    if cfg.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {p}: format {cfg.get('format')!r}, this robot_rl reads {CHECKPOINT_FORMAT}")
    kind = cfg.get("policy")
    if kind not in POLICIES:
        raise CheckpointError(f"checkpoint {p}: unknown policy type {kind!r}; known: {sorted(POLICIES)}")
    trained_robot(cfg["robot_spec"], spec, f"checkpoint {p}")
    try:
        tensors = load_file(str(wf))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {p}: model.safetensors is corrupt ({e})") from None
    cls = POLICIES[kind]
    config = cls.config_class.from_dict(cfg["config"])
    normalizer = Normalizer.from_state_dict(tensors, cfg["normalizer_modes"])
    policy = cls(config, normalizer)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        policy.load_state_dict(model_sd)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {p}: weights do not fit a {kind} policy with its config ({e})") from None
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return policy.to(dev).eval(), cfg
