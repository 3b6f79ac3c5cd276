"""A plain behaviour-cloning baseline: observation features -> an MLP -> an action chunk.

Small and fast; it exercises the shared policy interface, encoders, normaliser and
checkpoints, and is the yardstick the diffusion policy and ACT are compared against.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.policies.base import Policy, PolicyConfig, register
from robot_rl.policies.common.encoders import ObservationEncoder
from robot_rl.policies.common.normalizer import Normalizer


@register("mlp_bc")
class MLPBCPolicy(Policy):
    def __init__(self, config: PolicyConfig, normalizer: Normalizer, hidden: int = 256):
        super().__init__(config, normalizer)
        c = config
        self.encoder = ObservationEncoder({k: c.state_dims[k] for k in c.state_keys}, c.cameras, feature_dim=64,
                                          **c.encoder_kwargs())
        self.head = nn.Sequential(nn.Linear(self.encoder.out_dim * c.n_obs_steps, hidden), nn.Mish(),
                                  nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, c.horizon * c.action_dim))

    def normalized_chunks(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised observation tensors (B, n_obs_steps, ...) -> normalised action chunks
        (B, horizon, action_dim): the whole inference network (what an ONNX export holds)."""
        f = self.encoder(obs).flatten(1)
        return self.head(f).reshape(-1, self.config.horizon, self.config.action_dim)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        obs = {k: batch[k][:, : self.config.n_obs_steps] for k in self.config.state_keys + self.config.cameras}
        obs = {k: (v if k in self.config.cameras else self.normalizer.normalize(k, v.float())) for k, v in obs.items()}
        target = self.normalizer.normalize(self.config.action_key, batch[self.config.action_key].float())
        pred = self.normalized_chunks(obs)
        err = F.mse_loss(pred, target, reduction="none").mean(-1)
        if "is_pad" in batch:
            keep = (~batch["is_pad"].bool()).float()
            return (err * keep).sum() / keep.sum().clamp(min=1)
        return err.mean()

    @torch.no_grad()
    def predict_chunks(self, obs_history: Mapping[str, Any], generator: torch.Generator | None = None) -> np.ndarray:
        pred = self.normalized_chunks(self.obs_to_tensors(obs_history))
        act = self.normalizer.unnormalize(self.config.action_key, pred)[:, self.config.n_obs_steps - 1:]
        return act.cpu().numpy()
