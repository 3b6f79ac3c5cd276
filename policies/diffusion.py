"""Diffusion policy (Chi et al., RSS 2023): denoise a chunk of future actions conditioned on
a short observation history.

Training adds noise from the ``diffusers`` DDPM schedule to normalised action chunks and
regresses the noise (``prediction_type="epsilon"``) or the clean chunk (``"sample"``).
Sampling runs a diffusers scheduler (DDPM or DDIM) from Gaussian noise.

Pieces the real-time runtime uses to build warm-started sampling without touching this
class: ``encode_obs`` (observation history -> conditioning, computed once per query),
``denoise(x_t, t, cond)`` (one network evaluation), ``make_scheduler`` (a fresh
scheduler, any kind and step count), ``alphas_cumprod`` / ``add_noise`` (the training
noise schedule, to re-noise a shifted chunk to an intermediate step), ``sample(cond,
x_init=..., timesteps=...)`` (the reverse process from any starting point along any
decreasing step list) and ``normalize_actions`` / ``unnormalize_actions``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from robot_rl.policies.base import Policy, PolicyConfig, register
from robot_rl.policies.common.denoisers import ConditionalUnet1D, TransformerDenoiser
from robot_rl.policies.common.encoders import ObservationEncoder
from robot_rl.policies.common.normalizer import Normalizer

SCHEDULERS = ("ddpm", "ddim")


@dataclass
class DiffusionConfig(PolicyConfig):
    denoiser: str = "unet"  # unet | transformer
    feature_dim: int = 64  # observation features per key group and time step
    crop: int | None = None  # random-crop size for images (None: no crop)
    shared_cnn: bool = False
    # U-Net
    down_dims: list[int] = field(default_factory=lambda: [32, 64, 128])
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 64
    # transformer
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    dropout: float = 0.1
    causal_attn: bool = True
    # diffusion
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"  # epsilon | sample
    clip_sample: bool = True
    scheduler: str = "ddim"  # sampler used by predict_chunks: ddpm | ddim
    num_inference_steps: int = 10


@register("diffusion")
class DiffusionPolicy(Policy):
    config_class = DiffusionConfig

    def __init__(self, config: DiffusionConfig, normalizer: Normalizer):
        super().__init__(config, normalizer)
        c = config
        if c.denoiser not in ("unet", "transformer"):
            raise ValueError(f"denoiser must be 'unet' or 'transformer', got {c.denoiser!r}")
        if c.prediction_type not in ("epsilon", "sample"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'sample', got {c.prediction_type!r}")
        if c.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {c.scheduler!r}")
        self.encoder = ObservationEncoder({k: c.state_dims[k] for k in c.state_keys}, c.cameras,
                                          feature_dim=c.feature_dim, crop=c.crop, shared_cnn=c.shared_cnn,
                                          **c.encoder_kwargs())
        if c.denoiser == "unet":
            self.net = ConditionalUnet1D(c.action_dim, self.encoder.out_dim * c.n_obs_steps, c.down_dims,
                                         c.step_embed_dim, c.kernel_size, c.n_groups)
        else:
            self.net = TransformerDenoiser(c.action_dim, self.encoder.out_dim, c.horizon, c.n_obs_steps, c.d_model,
                                           c.n_heads, c.n_layers, c.dropout, c.causal_attn)
        self.noise_scheduler = self.make_scheduler("ddpm")
        self.register_buffer("alphas_cumprod", self.noise_scheduler.alphas_cumprod.clone().float(), persistent=False)

    # -- pieces for samplers -------------------------------------------------------------
    def make_scheduler(self, kind: str | None = None, num_inference_steps: int | None = None):
        """A fresh diffusers scheduler on this policy's noise schedule (timesteps set when
        num_inference_steps is given)."""
        from diffusers import DDIMScheduler, DDPMScheduler
        c = self.config
        kind = kind or c.scheduler
        kw = dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                  clip_sample=c.clip_sample, prediction_type=c.prediction_type)
        if kind == "ddpm":
            s = DDPMScheduler(variance_type="fixed_small", **kw)
        elif kind == "ddim":
            s = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **kw)
        else:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")
        if num_inference_steps is not None:
            s.set_timesteps(int(num_inference_steps))
        return s

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised observation tensors (B, n_obs_steps, ...) -> conditioning for ``denoise``."""
        f = self.encoder(obs)  # (B, T, F)
        return f.flatten(1) if self.config.denoiser == "unet" else f

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """One network evaluation: the noise or clean-chunk estimate for x_t at step t."""
        return self.net(x_t, t, cond)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(x0.device)[t].reshape(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def normalize_actions(self, a):
        return self.normalizer.normalize(self.config.action_key, a)

    def unnormalize_actions(self, a):
        return self.normalizer.unnormalize(self.config.action_key, a)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, x_init: torch.Tensor | None = None, scheduler=None,
               timesteps: Sequence[int] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the reverse process; returns normalised chunks (B, horizon, A).

        ``x_init``: the starting sample (default Gaussian noise); ``scheduler``: a
        diffusers scheduler (default: the config's kind and step count); ``timesteps``: a
        decreasing step list to run instead of the scheduler's own (for warm starts)."""
        c = self.config
        b = cond.shape[0]
        if x_init is None:
            x = torch.randn((b, c.horizon, c.action_dim), generator=generator, device="cpu").to(cond.device)
        else:
            x = x_init
        if scheduler is None:
            scheduler = self.make_scheduler(c.scheduler, c.num_inference_steps)
        steps = list(scheduler.timesteps) if timesteps is None else list(timesteps)
        for i, t in enumerate(steps):
            t = int(t)
            out = self.denoise(x, torch.full((b,), t, device=cond.device, dtype=torch.long), cond)
            if timesteps is None:
                x = scheduler.step(out, t, x, generator=generator).prev_sample
            else:
                t_prev = int(steps[i + 1]) if i + 1 < len(steps) else -1
                x = self.ddim_step(out, t, t_prev, x)
        return x

    def ddim_step(self, model_out: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM update from step t to t_prev (-1: the clean sample) on the
        training schedule; works for any pair of steps, unlike a scheduler's fixed grid."""
        ac = self.alphas_cumprod.to(x_t.device)
        a_t = ac[t]
        a_prev = ac[t_prev] if t_prev >= 0 else torch.ones((), device=x_t.device)
        if self.config.prediction_type == "epsilon":
            eps = model_out
            x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        else:
            x0 = model_out
        if self.config.clip_sample:
            x0 = x0.clamp(-1, 1)
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt().clamp(min=1e-8)
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps

    # -- Policy interface -----------------------------------------------------------------
    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        obs = {k: batch[k][:, : c.n_obs_steps] for k in c.state_keys + c.cameras}
        obs = {k: (v if k in c.cameras else self.normalizer.normalize(k, v.float())) for k, v in obs.items()}
        cond = self.encode_obs(obs)
        x0 = self.normalize_actions(batch[c.action_key].float())
        noise = torch.randn_like(x0)
        t = torch.randint(0, c.num_train_timesteps, (x0.shape[0],), device=x0.device)
        pred = self.denoise(self.add_noise(x0, noise, t), t, cond)
        target = noise if c.prediction_type == "epsilon" else x0
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def predict_chunks(self, obs_history: Mapping[str, Any], generator: torch.Generator | None = None,
                       scheduler: str | None = None, num_inference_steps: int | None = None) -> np.ndarray:
        c = self.config
        cond = self.encode_obs(self.obs_to_tensors(obs_history))
        sched = self.make_scheduler(scheduler or c.scheduler, num_inference_steps or c.num_inference_steps)
        x = self.sample(cond, scheduler=sched, generator=generator)
        return self.unnormalize_actions(x)[:, c.n_obs_steps - 1:].cpu().numpy()
