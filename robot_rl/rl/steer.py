"""RL fine-tuning of a pretrained diffusion policy by steering its initial noise (DSRL,
after Wagenmaker et al. 2025, "Steering Your Diffusion Policy with Latent Space RL").

The behaviour-cloned policy stays frozen. Its deterministic DDIM sampler is a map from an
initial noise ``w`` (horizon x action_dim) to an action chunk; an off-policy actor learns to
choose ``w`` from the observation, so that the chunks it gets are the ones that succeed.
Whatever the actor picks, the executed actions come out of the BC policy's reverse process,
so they stay on the demonstrations' manifold (no off-distribution jerks on a real arm), and
the RL problem is short-horizon (one decision per executed chunk).

:class:`NoiseSteeringEnv` turns a task env + a diffusion checkpoint into a gymnasium env
whose actions are noises; :func:`robot_rl.rl.loop.run_online` trains SAC on it. A
simulated human may take over during a chunk: the decision is tagged intervened (for the
RLIF penalty) and the human's actions are executed until its takeover ends.
"""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from robot_rl.learn.evaluate import push_history, start_history


class NoiseSteeringEnv(gym.Env):
    def __init__(self, env, policy, keys: Sequence[str], noise_bound: float = 1.5, n_exec: int | None = None,
                 num_inference_steps: int | None = None, human=None):
        from robot_rl.policies.diffusion import DiffusionPolicy

        if not isinstance(policy, DiffusionPolicy):
            raise ValueError(f"noise steering needs a diffusion policy, got {type(policy).__name__}")
        self.env, self.policy, self.human = env, policy.eval(), human
        c = policy.config
        self.H, self.A, self.T = c.horizon, c.action_dim, c.n_obs_steps
        self.n_exec = int(n_exec or c.n_action_steps)
        if not 1 <= self.n_exec <= policy.chunk_len:
            raise ValueError(f"n_exec must be in 1..{policy.chunk_len}")
        self.policy_keys = list(c.state_keys) + list(c.cameras)
        self.keys = list(keys)
        self.scheduler = policy.make_scheduler("ddim", num_inference_steps or c.num_inference_steps)
        self.action_space = spaces.Box(-noise_bound, noise_bound, (self.H * self.A,), np.float32)
        self.observation_space = spaces.Dict({k: env.observation_space.spaces[k] for k in self.keys})
        self.max_episode_steps = env.max_episode_steps
        self.hist: dict[str, np.ndarray] = {}
        self._obs: dict[str, np.ndarray] | None = None
        self._seed = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed)
        self._seed = seed or 0
        self.hist = {}
        start_history(self.hist, self.policy_keys, 0, obs, 1, self.T)
        if self.human is not None:
            self.human.reset(self._seed)
        self._obs = obs
        return self._view(obs), info

    def _view(self, obs) -> dict[str, np.ndarray]:
        return {k: obs[k] for k in self.keys}

    @torch.no_grad()
    def chunk(self, noise: np.ndarray) -> np.ndarray:
        """The BC policy's chunk (robot units) from the current history and ``noise``."""
        p = self.policy
        cond = p.encode_obs(p.obs_to_tensors({k: v[0] for k, v in self.hist.items()}))
        x0 = torch.as_tensor(np.asarray(noise, np.float32).reshape(1, self.H, self.A), device=p.device)
        self.scheduler.set_timesteps(len(self.scheduler.timesteps))
        x = p.sample(cond, x_init=x0, scheduler=self.scheduler)
        return p.unnormalize_actions(x)[0, self.T - 1:].cpu().numpy()

    def step(self, noise: np.ndarray):
        chunk = self.chunk(noise)
        total, n, intervened = 0.0, 0, False
        term = trunc = False
        info: dict[str, Any] = {}
        obs = self._obs
        for a in chunk[: self.n_exec]:
            if self.human is not None:
                a, took = self.human.step(obs, a)
                intervened = intervened or took
            obs, r, term, trunc, info = self.env.step(a)
            push_history(self.hist, self.policy_keys, 0, obs)
            total += r
            n += 1
            if term or trunc:
                break
        # a takeover that outlasts the chunk: the human finishes it before control returns
        while self.human is not None and self.human.left > 0 and not (term or trunc):
            a, _ = self.human.step(obs, chunk[-1])
            obs, r, term, trunc, info = self.env.step(a)
            push_history(self.hist, self.policy_keys, 0, obs)
            total += r
            n += 1
        self._obs = obs
        info = dict(info, env_steps=n, intervened=intervened)
        return self._view(obs), total, term, trunc, info

    def make_expert(self, seed: int | None = None):
        return self.env.make_expert(seed)

    def close(self):
        self.env.close()


def load_diffusion(path: str, device: str = "cpu"):
    from robot_rl.policies.base import import_policies, load_checkpoint

    import_policies()
    policy, _ = load_checkpoint(path, device=device)
    return policy
