"""Networks of the off-policy learner: observation encoder (state normalisation and a
shared image encoder with random-shift augmentation), a tanh-Gaussian actor and an
ensemble of LayerNorm critics evaluated as one batched matmul per layer."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def random_shift(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DrQ augmentation: replicate-pad (B, C, H, W) images by ``pad`` px and crop each back
    to H x W at a random integer offset."""
    b, c, h, w = x.shape
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    top = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    left = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    rows = (top + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (left + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return x[batch, chan, rows, cols]


class ImageTrunk(nn.Module):
    """Four 3x3 convolutions (three of stride 2) -> linear -> LayerNorm -> tanh."""

    def __init__(self, size: tuple[int, int], feat: int = 64, channels: int = 32):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(nn.Conv2d(3, c, 3, 2), nn.ReLU(), nn.Conv2d(c, c, 3, 2), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, 2), nn.ReLU(), nn.Conv2d(c, c, 3, 1), nn.ReLU())
        with torch.no_grad():
            n = self.conv(torch.zeros(1, 3, *size)).numel()
        self.head = nn.Sequential(nn.Linear(n, feat), nn.LayerNorm(feat), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


class ObsEncoder(nn.Module):
    """dict observation -> feature vector. State keys are concatenated and standardised
    with fixed statistics (:meth:`set_stats`, from the demonstrations or the first
    rollouts); each camera gets its own conv trunk (shared by actor and critic)."""

    def __init__(self, obs_spec: Mapping[str, tuple[tuple[int, ...], object]], image_feat: int = 64):
        super().__init__()
        self.state_keys = sorted(k for k, (s, _) in obs_spec.items() if not k.startswith("image_"))
        self.image_keys = sorted(k for k in obs_spec if k.startswith("image_"))
        self.state_dim = sum(int(math.prod(obs_spec[k][0])) for k in self.state_keys)
        self.register_buffer("mean", torch.zeros(self.state_dim))
        self.register_buffer("std", torch.ones(self.state_dim))
        self.trunks = nn.ModuleDict({k: ImageTrunk(tuple(obs_spec[k][0][:2]), image_feat)
                                     for k in self.image_keys})
        self.out_dim = self.state_dim + image_feat * len(self.image_keys)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(torch.clamp(std, min=1e-3))

    def state(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([obs[k].float().flatten(1) for k in self.state_keys], dim=1)
        return (x - self.mean) / self.std

    def forward(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        parts = [self.state(obs)] if self.state_keys else []
        for k in self.image_keys:
            img = obs[k].permute(0, 3, 1, 2).float() / 255.0
            if augment:
                img = random_shift(img)
            parts.append(self.trunks[k](img))
        return torch.cat(parts, dim=1)


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied as one batched matmul: (E, B, in) -> (E, B, out)."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleCritic(nn.Module):
    """``n`` critics Q(z, a) with LayerNorm after every hidden layer (RLPD). Output per
    member: one value, or ``n_out`` logits (histogram critic, discrete action values)."""

    def __init__(self, n: int, d_in: int, hidden: Sequence[int] = (256, 256), n_out: int = 1):
        super().__init__()
        self.n = n
        dims = [d_in, *hidden]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.ln_w = nn.ParameterList(nn.Parameter(torch.ones(n, 1, b)) for b in hidden)
        self.ln_b = nn.ParameterList(nn.Parameter(torch.zeros(n, 1, b)) for b in hidden)
        self.out = EnsembleLinear(n, dims[-1], n_out)

    def forward(self, z: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) features (+ (B, A) actions) -> (E, B, n_out)."""
        x = z if a is None else torch.cat([z, a], dim=-1)
        h = x.unsqueeze(0).expand(self.n, *x.shape)
        for lin, w, b in zip(self.layers, self.ln_w, self.ln_b):
            h = lin(h)
            h = F.layer_norm(h, h.shape[-1:]) * w + b
            h = F.relu(h)
        return self.out(h)


class TanhGaussianActor(nn.Module):
    """features -> squashed Gaussian over [low, high] (per dimension)."""

    def __init__(self, d_in: int, low: torch.Tensor, high: torch.Tensor, hidden: Sequence[int] = (256, 256),
                 log_std_range: tuple[float, float] = (-5.0, 2.0)):
        super().__init__()
        dims = [d_in, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.act_dim = int(low.numel())
        self.head = nn.Linear(dims[-1], 2 * self.act_dim)
        self.register_buffer("loc", (high + low) / 2)
        self.register_buffer("scale", (high - low) / 2)
        self.log_std_range = log_std_range

    def forward(self, z: torch.Tensor, deterministic: bool = False,
                with_log_prob: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        mu, log_std = self.head(self.trunk(z)).chunk(2, dim=-1)
        lo, hi = self.log_std_range
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)
        u = mu if deterministic else mu + log_std.exp() * torch.randn_like(mu)
        a = torch.tanh(u)
        logp = None
        if with_log_prob:
            normal = -0.5 * (((u - mu) / log_std.exp()) ** 2) - log_std - 0.5 * math.log(2 * math.pi)
            # change of variables through tanh (numerically stable form) and the affine map
            logp = (normal - 2 * (math.log(2) - u - F.softplus(-2 * u)) - torch.log(self.scale)).sum(-1)
        return self.loc + self.scale * a, logp

    @torch.no_grad()
    def zero_mean_(self, std: float | None = None) -> None:
        """Make the mean action the centre of the box for every input. ``std``: also start
        the exploration at this standard deviation (in action units, at the centre) for
        every input; None keeps the initialisation."""
        n = self.act_dim
        self.head.weight[:n].zero_()
        self.head.bias[:n].zero_()
        if std is not None:
            lo, hi = self.log_std_range
            log_std = torch.log(torch.as_tensor(std, dtype=torch.float32) / self.scale).clamp(lo + 1e-3, hi - 1e-3)
            self.head.weight[n:].zero_()
            self.head.bias[n:] = torch.atanh(2 * (log_std - lo) / (hi - lo) - 1)

    def bc_error(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per-sample squared error of the mean action to ``action`` (after the tanh: measured
        before it, saturated targets such as a gripper at 0 or 1 fit much worse)."""
        mean, _ = self(z, deterministic=True, with_log_prob=False)
        return ((mean - action) ** 2).mean(-1)


def hl_gauss_target(target: torch.Tensor, centers: torch.Tensor, sigma: float) -> torch.Tensor:
    """HL-Gauss (Imani & White 2018; Farebrother et al. 2024): the probability mass a
    Normal(target, sigma) puts in each bin. target: (...,); centers: (K,) -> (..., K)."""
    w = centers[1] - centers[0]
    edges = torch.cat([centers - w / 2, centers[-1:] + w / 2])
    cdf = torch.special.ndtr((edges - target.unsqueeze(-1)) / sigma)
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / mass.sum(-1, keepdim=True).clamp(min=1e-8)
