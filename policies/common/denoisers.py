"""Denoising networks for diffusion policies over action sequences.

Both take a noisy action sequence ``x`` (B, T, A), diffusion timesteps ``t`` (B,) and a
conditioning tensor, and return (B, T, A) (the noise or the clean sample, depending on the
policy's prediction type).

- ``ConditionalUnet1D``: a 1-D temporal U-Net (convolutions over time, GroupNorm + Mish)
  whose residual blocks are FiLM-modulated (per-channel scale and bias) by the diffusion
  step embedding concatenated with global observation features (B, cond_dim), as in
  Chi et al., "Diffusion Policy" (RSS 2023).
- ``TransformerDenoiser``: action tokens attend to themselves (causally, by default) and,
  through cross-attention, to condition tokens: one token for the diffusion step and one
  per observation step (B, n_obs, cond_dim).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
        ang = t.float()[:, None] * freqs[None]
        return torch.cat([ang.sin(), ang.cos()], dim=-1)


def _timestep_embedder(dim: int) -> nn.Module:
    return nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))


def _as_batch(t: torch.Tensor | int, b: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    return t.expand(b) if t.dim() == 0 else t


class ConvNormAct(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, groups: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout), nn.Mish())

    def forward(self, x):
        return self.net(x)


class FiLMResBlock(nn.Module):
    """Two conv blocks; the condition scales and shifts the first block's output per channel."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int = 5, groups: int = 8):
        super().__init__()
        self.b1 = ConvNormAct(cin, cout, kernel, groups)
        self.b2 = ConvNormAct(cout, cout, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.b1(x)
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.b2(h * (1 + scale) + shift)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, action_dim: int, cond_dim: int, down_dims: Sequence[int] = (64, 128, 256),
                 step_embed_dim: int = 64, kernel: int = 5, groups: int = 8):
        super().__init__()
        self.step_embed = _timestep_embedder(step_embed_dim)
        c = step_embed_dim + cond_dim
        dims = [action_dim, *down_dims]
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(down_dims) - 1
            self.down.append(nn.ModuleList([FiLMResBlock(a, b, c, kernel, groups), FiLMResBlock(b, b, c, kernel, groups),
                                            nn.Conv1d(b, b, 3, 2, 1) if not last else nn.Identity()]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([FiLMResBlock(mid, mid, c, kernel, groups), FiLMResBlock(mid, mid, c, kernel, groups)])
        self.up = nn.ModuleList()
        rev = list(reversed(down_dims))
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            self.up.append(nn.ModuleList([FiLMResBlock(2 * a, b, c, kernel, groups), FiLMResBlock(b, b, c, kernel, groups),
                                          nn.ConvTranspose1d(b, b, 4, 2, 1)]))
        self.out = nn.Sequential(ConvNormAct(down_dims[0], down_dims[0], kernel, groups),
                                 nn.Conv1d(down_dims[0], action_dim, 1))
        self.n_down = len(down_dims) - 1

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """x (B, T, A) with T divisible by 2**(len(down_dims)-1); cond (B, cond_dim)."""
        if x.shape[1] % (2 ** self.n_down):
            raise ValueError(f"the U-Net needs a horizon divisible by {2 ** self.n_down}, got {x.shape[1]}")
        c = torch.cat([self.step_embed(_as_batch(t, x.shape[0], x.device)), cond.reshape(x.shape[0], -1)], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for r1, r2, down in self.down:
            h = r2(r1(h, c), c)
            skips.append(h)
            h = down(h)
        for r in self.mid:
            h = r(h, c)
        for r1, r2, up in self.up:
            h = r2(r1(torch.cat([h, skips.pop()], dim=1), c), c)
            h = up(h)
        return self.out(h).transpose(1, 2)


class TransformerDenoiser(nn.Module):
    def __init__(self, action_dim: int, cond_dim: int, horizon: int, n_cond: int, d_model: int = 128,
                 n_heads: int = 4, n_layers: int = 4, dropout: float = 0.1, causal: bool = True):
        super().__init__()
        self.inp = nn.Linear(action_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, horizon, d_model))
        self.step_embed = _timestep_embedder(d_model)
        self.cond_proj = nn.Linear(cond_dim, d_model)
        self.cond_pos = nn.Parameter(torch.zeros(1, 1 + n_cond, d_model))
        self.cond_encoder = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.Mish(), nn.Linear(4 * d_model, d_model))
        layer = nn.TransformerDecoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, action_dim)
        self.causal = causal
        self.horizon = horizon
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.cond_pos, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """x (B, T, A); cond (B, n_cond, cond_dim)."""
        b, T, _ = x.shape
        h = self.inp(x) + self.pos[:, :T]
        step = self.step_embed(_as_batch(t, b, x.device))[:, None]
        mem = torch.cat([step, self.cond_proj(cond)], dim=1) + self.cond_pos[:, : 1 + cond.shape[1]]
        mem = self.cond_encoder(mem)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device) if self.causal else None
        h = self.decoder(h, mem, tgt_mask=mask, tgt_is_causal=self.causal)
        return self.head(self.norm(h))
