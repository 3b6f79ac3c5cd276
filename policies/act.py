"""ACT: action chunking with transformers (Zhao et al., 2023), on the shared policy interface.

A conditional VAE over action chunks:

- training-time *style encoder* q(z | a, s): a transformer encoder over
  ``[CLS, state token, action tokens]`` (fixed sinusoidal positions, padded actions masked
  out); the CLS output gives the mean and log-variance of a ``latent_dim`` latent ``z``;
- the *policy*: a transformer encoder over ``[z token, observation tokens]`` (per
  observation step one state token and one token per camera, from the shared
  ``ObservationEncoder``; learned positions), and a transformer decoder whose ``horizon``
  learned queries cross-attend to the encoder output; a linear head gives the normalised
  action for each query.

Loss: masked L1 on normalised actions + ``kl_weight`` * KL(q(z|a,s) || N(0, I)) (summed
over latent dimensions, averaged over the batch); in eval mode the loss decodes the
posterior mean instead of a sample, so validation losses are deterministic. At
inference ``z = 0`` (the prior mean), so predictions are deterministic in eval mode. The
evaluator smooths overlapping chunks with ``policies.common.ensemble.TemporalEnsembler``
using ``config.temporal_ensemble_k``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.policies.base import Policy, PolicyConfig, register
from robot_rl.policies.common.encoders import ObservationEncoder
from robot_rl.policies.common.normalizer import Normalizer


@dataclass
class ACTConfig(PolicyConfig):
    n_obs_steps: int = 1
    horizon: int = 20  # chunk size
    n_action_steps: int = 20
    dim_model: int = 256
    n_heads: int = 8
    dim_feedforward: int = 1024
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1  # the original's 7-layer decoder only used its first layer
    n_vae_encoder_layers: int = 4
    latent_dim: int = 32
    kl_weight: float = 10.0
    dropout: float = 0.1
    activation: str = "relu"
    pre_norm: bool = True
    use_vae: bool = True
    temporal_ensemble_k: float = 0.01
    feature_dim: int = 128  # ObservationEncoder features per state group / camera
    crop: int | None = None  # image random crop (centre crop at eval)
    shared_cnn: bool = False


def sinusoid_table(n: int, dim: int) -> torch.Tensor:
    """(n, dim) fixed sinusoidal position encodings (Vaswani et al.)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


def _encoder(c: ACTConfig, n_layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(c.dim_model, c.n_heads, c.dim_feedforward, c.dropout, c.activation,
                                       batch_first=True, norm_first=c.pre_norm)
    return nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(c.dim_model) if c.pre_norm else None,
                                 enable_nested_tensor=False)


@register("act")
class ACTPolicy(Policy):
    config_class = ACTConfig

    def __init__(self, config: ACTConfig, normalizer: Normalizer):
        super().__init__(config, normalizer)
        c = config
        if c.dim_model % c.n_heads:
            raise ValueError(f"dim_model ({c.dim_model}) must be divisible by n_heads ({c.n_heads})")
        if c.horizon < c.n_obs_steps:
            raise ValueError(f"horizon ({c.horizon}) must be >= n_obs_steps ({c.n_obs_steps})")
        d = c.dim_model
        self.state_dim = sum(c.state_dims[k] for k in c.state_keys)
        self.obs_encoder = ObservationEncoder({k: c.state_dims[k] for k in c.state_keys}, c.cameras,
                                              feature_dim=c.feature_dim, crop=c.crop, shared_cnn=c.shared_cnn,
                                              **c.encoder_kwargs())
        # one token per state group / camera and observation step
        self.n_groups = bool(c.state_keys) + len(c.cameras)
        self.obs_proj = nn.Linear(c.feature_dim, d)

        # CVAE style encoder q(z | a, s)
        if c.use_vae:
            self.vae_cls = nn.Parameter(torch.zeros(1, 1, d))
            self.vae_state_proj = nn.Linear(self.state_dim, d) if self.state_dim else None
            self.vae_action_proj = nn.Linear(c.action_dim, d)
            self.vae_encoder = _encoder(c, c.n_vae_encoder_layers)
            self.vae_latent = nn.Linear(d, 2 * c.latent_dim)
            n_vae = 1 + (self.vae_state_proj is not None) + c.horizon
            self.register_buffer("vae_pos", sinusoid_table(n_vae, d)[None], persistent=False)

        # policy: encoder over [z, observation tokens], decoder with learned queries
        self.latent_proj = nn.Linear(c.latent_dim, d)
        self.enc_pos = nn.Parameter(torch.zeros(1, 1 + c.n_obs_steps * self.n_groups, d))
        self.encoder = _encoder(c, c.n_encoder_layers)
        dec_layer = nn.TransformerDecoderLayer(d, c.n_heads, c.dim_feedforward, c.dropout, c.activation,
                                               batch_first=True, norm_first=c.pre_norm)
        self.decoder = nn.TransformerDecoder(dec_layer, c.n_decoder_layers,
                                             norm=nn.LayerNorm(d) if c.pre_norm else None)
        self.queries = nn.Parameter(torch.zeros(1, c.horizon, d))
        self.action_head = nn.Linear(d, c.action_dim)
        self._init_weights()
        self.last_loss_terms: dict[str, float] = {}

    def _init_weights(self) -> None:
        tr = [self.encoder, self.decoder] + ([self.vae_encoder] if self.config.use_vae else [])
        for m in tr:
            for p in m.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.queries, std=0.02)
        if self.config.use_vae:
            nn.init.normal_(self.vae_cls, std=0.02)

    # -- model ----------------------------------------------------------------------------
    def _obs_tokens(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised state / uint8 images (B, T, ...) -> (B, T * n_groups, dim_model)."""
        f = self.obs_encoder(obs)  # (B, T, n_groups * feature_dim): state first, then cameras
        b, t = f.shape[:2]
        return self.obs_proj(f.reshape(b, t * self.n_groups, self.config.feature_dim))

    def _posterior(self, obs: Mapping[str, torch.Tensor], actions: torch.Tensor,
                   is_pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z | normalised action chunk, current state), each (B, latent_dim)."""
        b = actions.shape[0]
        toks = [self.vae_cls.expand(b, -1, -1)]
        if self.vae_state_proj is not None:
            state = torch.cat([obs[k][:, -1].float() for k in self.config.state_keys], dim=-1)
            toks.append(self.vae_state_proj(state)[:, None])
        n_fixed = len(toks)
        toks.append(self.vae_action_proj(actions))
        x = torch.cat(toks, dim=1) + self.vae_pos
        mask = None
        if is_pad is not None:
            mask = torch.cat([torch.zeros(b, n_fixed, dtype=torch.bool, device=x.device), is_pad.bool()], dim=1)
        h = self.vae_encoder(x, src_key_padding_mask=mask)[:, 0]
        mu, logvar = self.vae_latent(h).chunk(2, dim=-1)
        return mu, logvar

    def _decode(self, obs: Mapping[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """-> normalised actions (B, horizon, action_dim)."""
        x = torch.cat([self.latent_proj(z)[:, None], self._obs_tokens(obs)], dim=1) + self.enc_pos
        memory = self.encoder(x)
        q = self.queries.expand(z.shape[0], -1, -1)
        return self.action_head(self.decoder(q, memory))

    # -- interface ------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        obs = {k: batch[k][:, : c.n_obs_steps] for k in c.state_keys + c.cameras}
        obs = {k: (v if k in c.cameras else self.normalizer.normalize(k, v.float())) for k, v in obs.items()}
        target = self.normalizer.normalize(c.action_key, batch[c.action_key].float())
        is_pad = batch["is_pad"].bool() if "is_pad" in batch else None
        b = target.shape[0]
        if c.use_vae:
            mu, logvar = self._posterior(obs, target, is_pad)
            # reparameterised sample in training; the posterior mean in eval (a deterministic val loss)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()
        else:
            z = target.new_zeros(b, c.latent_dim)
            kl = target.new_zeros(())
        pred = self._decode(obs, z)
        err = F.l1_loss(pred, target, reduction="none").mean(-1)  # (B, horizon)
        if is_pad is not None:
            keep = (~is_pad).float()
            l1 = (err * keep).sum() / keep.sum().clamp(min=1)
        else:
            l1 = err.mean()
        total = l1 + c.kl_weight * kl
        self.last_loss_terms = {"l1": float(l1.detach()), "kl": float(kl.detach())}
        return total

    def normalized_chunks(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised observation tensors (B, n_obs_steps, ...) -> normalised action chunks
        (B, horizon, action_dim), decoded at the prior mean z = 0 (the whole inference network:
        what an ONNX export holds)."""
        x = next(iter(obs.values()))
        z = torch.zeros(x.shape[0], self.config.latent_dim, device=x.device)  # prior mean
        return self._decode(obs, z)

    @torch.no_grad()
    def predict_chunks(self, obs_history: Mapping[str, Any], generator: torch.Generator | None = None) -> np.ndarray:
        pred = self.normalized_chunks(self.obs_to_tensors(obs_history))
        act = self.normalizer.unnormalize(self.config.action_key, pred)[:, self.config.n_obs_steps - 1:]
        return act.cpu().numpy()
