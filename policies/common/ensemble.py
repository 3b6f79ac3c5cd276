"""Temporal ensembling of overlapping action chunks (ACT, Zhao et al. 2023).

The policy is queried every control step; each query predicts ``horizon`` actions. The
action executed at step t is a weighted average of every prediction made for t by the
last ``horizon`` queries, with weights ``exp(-k * i)`` where i = 0 is the oldest
prediction (the paper's convention: older predictions weigh more, k = 0.01). Works on a
batch of environments; ``reset(mask)`` forgets the chunks of finished episodes.
"""
from __future__ import annotations

import numpy as np


class TemporalEnsembler:
    def __init__(self, horizon: int, action_dim: int, batch: int = 1, k: float = 0.01):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon, self.action_dim, self.batch, self.k = int(horizon), int(action_dim), int(batch), float(k)
        # ring of past chunks: _chunks[b, j] is the chunk predicted j queries ago (j = 0 newest)
        self._chunks = np.zeros((self.batch, self.horizon, self.horizon, self.action_dim), np.float64)
        self._age = np.zeros(self.batch, np.int64)  # queries since reset (capped at horizon)

    def reset(self, mask: np.ndarray | None = None) -> None:
        m = np.ones(self.batch, bool) if mask is None else np.asarray(mask, bool)
        self._chunks[m] = 0.0
        self._age[m] = 0

    def update(self, chunks: np.ndarray) -> np.ndarray:
        """Add this step's chunks (B, horizon, action_dim); return the actions to execute now (B, action_dim)."""
        c = np.asarray(chunks, np.float64)
        if c.shape != (self.batch, self.horizon, self.action_dim):
            raise ValueError(f"expected chunks of shape {(self.batch, self.horizon, self.action_dim)}, got {c.shape}")
        self._chunks = np.roll(self._chunks, 1, axis=1)
        self._chunks[:, 0] = c
        self._age = np.minimum(self._age + 1, self.horizon)
        j = np.arange(self.horizon)  # chunk predicted j queries ago holds step t at index j
        preds = self._chunks[:, j, j]  # (B, horizon, A): predictions for now, newest first
        valid = j[None, :] < self._age[:, None]  # (B, horizon)
        # oldest valid prediction gets i = 0
        i = (self._age[:, None] - 1 - j[None, :]).clip(min=0)
        w = np.exp(-self.k * i) * valid
        return (preds * w[..., None]).sum(1) / w.sum(1, keepdims=True)
