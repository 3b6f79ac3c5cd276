"""Observation encoders shared by the policies (written here: no torchvision on these machines).

- ``MLPEncoder``: state vectors -> features.
- ``ResNetEncoder``: a small ResNet-style CNN with GroupNorm (batch-size independent, safe
  for EMA and tiny batches) and spatial-softmax pooling (expected 2-D keypoints per
  channel, as in diffusion policy's image encoders) or global average pooling, for one
  camera. Widths set the depth too: one residual stage per width, the first at the stem's
  stride 2, each later one halving the resolution.
- ``RandomCrop``: train-time augmentation; at eval time a centre crop of the same size.
- ``ObservationEncoder``: state keys + cameras (one CNN per camera, or one shared) -> one
  feature vector per time step.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class MLPEncoder(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 128, hidden: Sequence[int] = (256,)):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Mish()]
            d = h
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _groups(ch: int) -> int:
    return max(1, min(8, ch // 8))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = nn.GroupNorm(_groups(cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = nn.GroupNorm(_groups(cout), cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(_groups(cout), cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.n1(self.c1(x)))
        return F.relu(self.n2(self.c2(y)) + self.skip(x))


class SpatialSoftmax(nn.Module):
    """Per channel: softmax over pixels, then the expected (x, y) in [-1, 1] -> 2*K features."""

    def __init__(self, channels: int, keypoints: int = 32):
        super().__init__()
        self.proj = nn.Conv2d(channels, keypoints, 1)
        self.temperature = nn.Parameter(torch.ones(1))
        self.out_dim = 2 * keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        b, k, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        p = torch.softmax(x.reshape(b, k, h * w) / self.temperature, dim=-1).reshape(b, k, h, w)
        ex = (p.sum(2) * xs).sum(-1)
        ey = (p.sum(3) * ys).sum(-1)
        return torch.cat([ex, ey], dim=-1)


POOLS = ("spatial_softmax", "avg")


class AvgPool(nn.Module):
    """Global average pooling: (B, C, H, W) -> (B, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class ResNetEncoder(nn.Module):
    """uint8 or float images (B, H, W, 3) or (B, 3, H, W) -> (B, out_dim)."""

    def __init__(self, out_dim: int = 128, widths: Sequence[int] = (32, 64, 128), keypoints: int = 32,
                 pool: str = "spatial_softmax"):
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"CNN widths must be a non-empty list of positive ints, got {list(widths)!r}")
        if pool not in POOLS:
            raise ValueError(f"CNN pool must be one of {POOLS}, got {pool!r}")
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, 2, 2, bias=False),
                                  nn.GroupNorm(_groups(widths[0]), widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(_Block(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = SpatialSoftmax(c, keypoints) if pool == "spatial_softmax" else AvgPool(c)
        self.head = nn.Linear(self.pool.out_dim, out_dim)
        self.out_dim = out_dim

    @staticmethod
    def to_float_chw(img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] in (1, 3) and img.shape[1] not in (1, 3):
            img = img.permute(0, 3, 1, 2)
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        return img * 2.0 - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Float (B, 3, H, W) in [-1, 1] -> (B, out_dim)."""
        return self.head(self.pool(self.blocks(self.stem(x))))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.features(self.to_float_chw(img))


class RandomCrop(nn.Module):
    """Random crop of `size` in training (independent per image), centre crop in eval."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        b, _, h, w = img.shape
        ch, cw = self.size
        if ch > h or cw > w:
            raise ValueError(f"crop {self.size} larger than the image {(h, w)}")
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return img[:, :, top:top + ch, left:left + cw]
        tops = torch.randint(0, h - ch + 1, (b,), device=img.device)
        lefts = torch.randint(0, w - cw + 1, (b,), device=img.device)
        rows = tops[:, None] + torch.arange(ch, device=img.device)  # (B, ch)
        cols = lefts[:, None] + torch.arange(cw, device=img.device)  # (B, cw)
        idx_b = torch.arange(b, device=img.device)[:, None, None]
        out = img.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # (B, ch, cw, C)
        return out.permute(0, 3, 1, 2)


class ObservationEncoder(nn.Module):
    """Dict of observations with a time axis -> (B, T, out_dim) features.

    `state_dims`: {key: dim} of state vectors (concatenated, then an MLP); `cameras`:
    image keys; `shared_cnn`: one CNN for all cameras instead of one each (their frames then
    go through it as one batch); `widths`, `keypoints`, `pool`: the CNN's (see ResNetEncoder).
    """

    def __init__(self, state_dims: Mapping[str, int], cameras: Sequence[str] = (), *, feature_dim: int = 128,
                 crop: int | None = None, shared_cnn: bool = False, widths: Sequence[int] = (32, 64, 128),
                 keypoints: int = 32, pool: str = "spatial_softmax"):
        super().__init__()
        self.state_keys = list(state_dims)
        self.cameras = list(cameras)
        if not self.state_keys and not self.cameras:
            raise ValueError("an observation encoder needs at least one state key or camera")
        self.state = MLPEncoder(sum(state_dims.values()), feature_dim) if self.state_keys else None
        self.crop = RandomCrop(crop) if crop else None
        self.shared_cnn = bool(shared_cnn)

        def cnn() -> ResNetEncoder:
            return ResNetEncoder(feature_dim, widths, keypoints, pool)

        # a shared CNN is held once (under "shared"), so its weights are saved once
        self.cnns = nn.ModuleDict({"shared": cnn()} if self.shared_cnn and self.cameras
                                  else {c: cnn() for c in self.cameras})
        self.out_dim = feature_dim * (bool(self.state_keys) + len(self.cameras))

    def cnn(self, camera: str) -> ResNetEncoder:
        return self.cnns["shared" if self.shared_cnn else camera]

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feats = []
        if self.state is not None:
            x = torch.cat([obs[k].float() for k in self.state_keys], dim=-1)  # (B, T, D)
            feats.append(self.state(x))
        if not self.cameras:
            return torch.cat(feats, dim=-1)
        imgs = [obs[c] for c in self.cameras]  # (B, T, H, W, 3) uint8 each
        b_t = imgs[0].shape[:2]
        xs = [ResNetEncoder.to_float_chw(img.reshape(-1, *img.shape[2:])) for img in imgs]
        if self.crop is not None:
            xs = [self.crop(x) for x in xs]
        if self.shared_cnn and len({x.shape for x in xs}) == 1:
            # one pass of the shared CNN over every camera's frames
            f = self.cnns["shared"].features(torch.cat(xs)).reshape(len(xs), *b_t, -1)
            feats.extend(f.unbind(0))
        else:
            feats.extend(self.cnn(c).features(x).reshape(*b_t, -1) for c, x in zip(self.cameras, xs))
        return torch.cat(feats, dim=-1)
