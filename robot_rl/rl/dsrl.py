"""Noise-aliased steering (DSRL-NA, after Wagenmaker et al. 2025): two critics instead of one.

Plain steering (:mod:`robot_rl.rl.steer` + SAC) learns Q(s, w) over the diffusion policy's
initial noise ``w`` from the noises the actor happened to try. In a 112-dimensional noise
space, with a few thousand decisions, that critic is poorly defined away from the tried
noises, and the actor follows its errors (the collapses in docs/benchmarks.md).

Here:

- ``Q^A(s, a)`` is a critic over the *executed* action chunk ``a`` (normalised, the
  ``n_exec`` rows that ran; a human's rows where one took over), learned by TD on the
  decision transitions: ``r + gamma * Q^W_target(s', pi(s'))``;
- ``Q^W(s, w)`` is the noise critic the SAC actor climbs. It is not learned by TD but by
  regression onto ``Q^A(s, pi_dp(s, w))`` over a bank of noises: at every visited decision
  state the environment ran the frozen sampler on K random noises as well (one batched
  call, :class:`~robot_rl.rl.steer.NoiseSteeringEnv` with ``bank=K``). The sampler is
  deterministic (DDIM from ``w``), so the pairs stay exact while Q^A changes, and Q^W gets
  K targets per state instead of one.

Different noises that give the same chunk get the same value (the "aliasing"), and the
noise critic is supervised over the whole noise distribution, not only where the actor went.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from robot_rl.rl.nets import EnsembleCritic
from robot_rl.rl.replay import ReplayBuffer, ReplayError
from robot_rl.rl.sac import CheckpointError, SACConfig, SACLearner, read_checkpoint, write_safetensors_atomic


class NoiseBank:
    """A ring of (observation, noise, normalised executed chunk) rows."""

    def __init__(self, obs_spec: Mapping[str, tuple[tuple[int, ...], Any]], noise_dim: int, chunk_dim: int,
                 capacity: int = 200_000, seed: int = 0):
        self.obs_spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in obs_spec.items()}
        self.capacity = int(capacity)
        self.obs = {k: np.zeros((capacity, *s), d) for k, (s, d) in self.obs_spec.items()}
        self.noise = np.zeros((capacity, noise_dim), np.float32)
        self.chunk = np.zeros((capacity, chunk_dim), np.float32)
        self.rows = 0
        self.rng = np.random.default_rng(seed)

    @property
    def size(self) -> int:
        return min(self.rows, self.capacity)

    def add(self, obs: Mapping[str, np.ndarray], noises: np.ndarray, chunks: np.ndarray) -> None:
        """K rows for one decision state."""
        noises, chunks = np.asarray(noises, np.float32), np.asarray(chunks, np.float32)
        if noises.shape[1:] != self.noise.shape[1:] or chunks.shape != (len(noises), self.chunk.shape[1]):
            raise ReplayError(f"noise bank expects ({self.noise.shape[1]},) noises and ({self.chunk.shape[1]},) "
                              f"chunks, got {noises.shape} and {chunks.shape}")
        if not (np.all(np.isfinite(noises)) and np.all(np.isfinite(chunks))):
            raise ReplayError("non-finite noise or chunk refused")
        idx = (self.rows + np.arange(len(noises))) % self.capacity
        for k in self.obs_spec:
            self.obs[k][idx] = np.asarray(obs[k])
        self.noise[idx], self.chunk[idx] = noises, chunks
        self.rows += len(noises)

    def sample(self, n: int, device: str | torch.device = "cpu") -> dict[str, Any]:
        if self.size == 0:
            raise ReplayError("cannot sample from an empty noise bank")
        idx = self.rng.integers(0, self.size, n)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x[idx])).to(device)

        return {"obs": {k: t(v) for k, v in self.obs.items()}, "noise": t(self.noise), "chunk": t(self.chunk),
                "is_demo": torch.zeros(n, device=device)}  # no demonstrated noises: the BC term has nothing to fit

    def save(self, path: str | Path) -> None:
        n = self.size
        order = (np.arange(n) + (self.rows - n)) % self.capacity  # oldest first
        arrays = {f"obs.{k}": v[order] for k, v in self.obs.items()}
        arrays.update(noise=self.noise[order], chunk=self.chunk[order])
        meta = {"kind": "robot_rl.noise_bank", "obs_spec": json.dumps({k: (list(s), d.str) for k, (s, d) in
                                                                       self.obs_spec.items()})}
        write_safetensors_atomic({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, meta, path)

    @classmethod
    def load(cls, path: str | Path, capacity: int = 200_000, seed: int = 0) -> "NoiseBank":
        try:
            tensors, meta = read_checkpoint(path, kind="robot_rl.noise_bank")
        except CheckpointError as e:
            raise ReplayError(f"not a noise bank: {e}") from None
        arrays = {k: v.numpy() for k, v in tensors.items()}
        spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in json.loads(meta["obs_spec"]).items()}
        bank = cls(spec, arrays["noise"].shape[1], arrays["chunk"].shape[1], capacity, seed)
        n = len(arrays["noise"])
        keep = slice(max(0, n - capacity), n)
        bank.add({k: arrays[f"obs.{k}"][keep] for k in spec}, arrays["noise"][keep], arrays["chunk"][keep])
        return bank


class AliasedNoiseLearner(SACLearner):
    """SAC over noises whose critic (``self.critic``, Q^W) is distilled from a critic over
    executed chunks (``self.qa``, Q^A). Replay rows store ``action = [noise, chunk]``."""

    def __init__(self, obs_spec: Mapping[str, tuple[tuple[int, ...], Any]], low: np.ndarray, high: np.ndarray,
                 cfg: SACConfig | None = None, seed: int = 0, chunk_dim: int = 0):
        super().__init__(obs_spec, low, high, cfg, seed)
        if chunk_dim <= 0:
            raise ValueError("AliasedNoiseLearner needs chunk_dim > 0 (the executed chunk's size)")
        cfg = self.cfg
        if cfg.critic_loss != "mse" or cfg.discrete_gripper:
            raise ValueError("noise aliasing supports the mse critic without a discrete gripper")
        self.chunk_dim = int(chunk_dim)
        self.qa = EnsembleCritic(cfg.n_critics, self.policy.encoder.out_dim + chunk_dim, cfg.hidden).to(self.device)
        self.qa_opt = torch.optim.Adam(self.qa.parameters(), lr=cfg.critic_lr)

    def init_kw(self) -> dict[str, Any]:
        return {"chunk_dim": self.chunk_dim}

    def modules(self):
        return {**super().modules(), "qa": self.qa}

    def optimizers(self):
        return {**super().optimizers(), "qa_opt": self.qa_opt}

    def update(self, online: ReplayBuffer | None, demos: ReplayBuffer | None = None, n_critic: int | None = None,
               intervention_penalty: float = 0.0, bank: NoiseBank | None = None) -> dict[str, float]:
        if bank is None or bank.size == 0:
            raise ReplayError("noise aliasing needs a non-empty noise bank")
        info: dict[str, float] = {}
        for _ in range(n_critic or self.cfg.utd):
            info.update(self.qa_step(self.sample_penalised(online, demos, intervention_penalty)))
            nb = bank.sample(self.cfg.batch_size, self.device)
            info.update(self.distill_step(nb))
        if self.updates > self.cfg.actor_delay:
            info.update(self.actor_step(nb))
        return info

    def qa_step(self, b: Mapping[str, Any]) -> dict[str, float]:
        """TD for Q^A on executed chunks; the bootstrap is the noise critic's target at s'."""
        cfg, pol = self.cfg, self.policy
        chunk = b["action"][:, self.policy.actor.act_dim:]
        with torch.no_grad():
            q_next = self.bootstrap(b)[0]  # the noise critic's target under the noise actor
            target = b["reward"] + cfg.gamma * (1.0 - b["done"]) * q_next
            z = pol.encoder(b["obs"], augment=cfg.augment)
        q = self.qa(z, chunk).squeeze(-1)
        loss = ((q - target.unsqueeze(0)) ** 2).mean(-1).sum()
        self.qa_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.qa_opt.step()
        return {"qa_loss": float(loss.detach()) / cfg.n_critics, "q": float(q.detach().mean())}

    def distill_step(self, nb: Mapping[str, Any]) -> dict[str, float]:
        """Q^W(s, w) <- mean over the ensemble of Q^A(s, chunk(s, w)) on bank rows."""
        cfg, pol = self.cfg, self.policy
        with torch.no_grad():
            target = self.qa(pol.encoder(nb["obs"]), nb["chunk"]).squeeze(-1).mean(0)
        z = pol.encoder(nb["obs"], augment=cfg.augment)
        q = self.critic(z, nb["noise"]).squeeze(-1)
        loss = ((q - target.unsqueeze(0)) ** 2).mean(-1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.soft_update()
        self.updates += 1
        return {"critic_loss": float(loss.detach()) / cfg.n_critics, "qw": float(q.detach().mean())}

