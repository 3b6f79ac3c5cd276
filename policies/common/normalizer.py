"""Per-key normalisers computed from a dataset and stored with the checkpoint.

``mode="minmax"`` maps each dimension's [min, max] to [-1, 1] (what diffusion policies
want for actions); ``mode="meanstd"`` standardises. Dimensions that never vary keep their
offset and get unit scale, so they are neither blown up nor divided by zero.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch

MODES = ("minmax", "meanstd", "identity")


class Normalizer:
    def __init__(self, scale: Mapping[str, np.ndarray], offset: Mapping[str, np.ndarray],
                 modes: Mapping[str, str]):
        self.scale = {k: np.asarray(v, np.float32) for k, v in scale.items()}
        self.offset = {k: np.asarray(v, np.float32) for k, v in offset.items()}
        self.modes = dict(modes)
        self._torch: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # -- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(cls, data: Mapping[str, np.ndarray], modes: Mapping[str, str] | str = "minmax",
            eps: float = 1e-6) -> "Normalizer":
        """Statistics over axis 0 of each array (time, or any leading batch dims flattened)."""
        scale, offset, used = {}, {}, {}
        for k, arr in data.items():
            mode = modes if isinstance(modes, str) else modes.get(k, "minmax")
            if mode not in MODES:
                raise ValueError(f"normaliser mode for {k!r} must be one of {MODES}, got {mode!r}")
            a = np.asarray(arr, np.float64)
            if a.ndim == 1:
                a = a[:, None]
            a = a.reshape(-1, a.shape[-1])
            if not len(a):
                raise ValueError(f"cannot fit a normaliser for {k!r}: no data")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"cannot fit a normaliser for {k!r}: the data holds NaN or inf")
            if mode == "minmax":
                lo, hi = a.min(0), a.max(0)
                half = (hi - lo) / 2
                const = half < eps
                s = np.where(const, 1.0, 1.0 / np.where(const, 1.0, half))
                o = -(lo + half) * s
                o = np.where(const, -lo, o)  # a constant maps to 0
            elif mode == "meanstd":
                mu, sd = a.mean(0), a.std(0)
                const = sd < eps
                s = np.where(const, 1.0, 1.0 / np.where(const, 1.0, sd))
                o = -mu * s
            else:
                s, o = np.ones(a.shape[-1]), np.zeros(a.shape[-1])
            scale[k], offset[k], used[k] = s, o, mode
        return cls(scale, offset, used)

    @classmethod
    def from_store(cls, store, keys: Iterable[str], modes: Mapping[str, str] | str = "minmax") -> "Normalizer":
        """Fit on the committed steps of an EpisodeStore."""
        return cls.fit({k: np.asarray(store.data[k][: store.n_steps]) for k in keys}, modes)

    # -- applying --------------------------------------------------------------------------
    def _params(self, key: str, like):
        if key not in self.scale:
            raise KeyError(f"no normaliser for {key!r}; have {sorted(self.scale)}")
        if isinstance(like, torch.Tensor):
            ck = (key, f"{like.device}:{like.dtype}")
            if ck not in self._torch:
                self._torch[ck] = (torch.as_tensor(self.scale[key], dtype=like.dtype, device=like.device),
                                   torch.as_tensor(self.offset[key], dtype=like.dtype, device=like.device))
            return self._torch[ck]
        return self.scale[key], self.offset[key]

    def normalize(self, key: str, x):
        s, o = self._params(key, x)
        return x * s + o

    def unnormalize(self, key: str, y):
        s, o = self._params(key, y)
        return (y - o) / s

    # -- checkpoints (safetensors-friendly: flat dict of tensors + JSON-able modes) ---------
    def state_dict(self, prefix: str = "normalizer.") -> dict[str, torch.Tensor]:
        out = {}
        for k in self.scale:
            out[f"{prefix}{k}.scale"] = torch.from_numpy(self.scale[k].copy())
            out[f"{prefix}{k}.offset"] = torch.from_numpy(self.offset[k].copy())
        return out

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, torch.Tensor], modes: Mapping[str, str],
                        prefix: str = "normalizer.") -> "Normalizer":
        scale, offset = {}, {}
        for k in modes:
            try:
                scale[k] = tensors[f"{prefix}{k}.scale"].numpy()
                offset[k] = tensors[f"{prefix}{k}.offset"].numpy()
            except KeyError:
                raise ValueError(f"checkpoint has no normaliser for {k!r}") from None
        return cls(scale, offset, modes)
