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

With ``bank=K`` (noise aliasing, DSRL-NA; see :mod:`robot_rl.rl.dsrl`) every decision also
runs the sampler on K random noises in the same batch, and ``step`` reports the executed
chunk and K + 1 (noise, chunk) pairs (the chosen noise first) in ``info``, so that a critic over actions can teach
the noise critic.
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
                 num_inference_steps: int | None = None, human=None, bank: int = 0, seed: int = 0):
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
        self.bank = int(bank)
        self.chunk_dim = self.n_exec * self.A  # the executed part, normalised, flattened
        self.noise_bound = float(noise_bound)
        self.rng = np.random.default_rng(seed)

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
    def sample_normalized(self, noises: np.ndarray) -> torch.Tensor:
        """The BC policy's normalised chunks (N, H - T + 1, A) for N noises, all from the
        current history, in one batch."""
        p = self.policy
        noises = np.asarray(noises, np.float32).reshape(-1, self.H, self.A)
        cond = p.encode_obs(p.obs_to_tensors({k: v[0] for k, v in self.hist.items()}))
        x0 = torch.as_tensor(noises, device=p.device)
        self.scheduler.set_timesteps(len(self.scheduler.timesteps))
        x = p.sample(cond.expand(len(noises), *cond.shape[1:]), x_init=x0, scheduler=self.scheduler)
        return x[:, self.T - 1:]

    def chunk(self, noise: np.ndarray) -> np.ndarray:
        """The BC policy's chunk (robot units) from the current history and ``noise``."""
        return self.policy.unnormalize_actions(self.sample_normalized(noise))[0].cpu().numpy()

    def bank_noises(self, n: int) -> np.ndarray:
        """``n`` random noises for the bank: Gaussian directions at radii spread from 0 to the
        typical one (in H*A dimensions a plain Gaussian sample is never near the mode, where
        the actor starts), clipped to the action box."""
        w = self.rng.standard_normal((n, self.H * self.A)) * self.rng.uniform(0, 1, (n, 1))
        return np.clip(w, -self.noise_bound, self.noise_bound).astype(np.float32)

    def demo_decisions(self, store: str, max_episodes: int | None = None, capacity: int | None = None,
                       seed: int = 0):
        """Demonstrations as steering decisions, for the critic over chunks (DSRL-NA uses
        offline data): every ``n_exec`` steps of each successful episode of ``store`` is one
        decision whose executed chunk is the demonstrated actions (normalised like the
        policy's), reward 1 on success. With ``bank`` > 0 the sampler also runs on K noises
        from each demo decision state (the policy's observation history rebuilt from the
        store). Returns (ReplayBuffer with action = [zero noise, chunk], [(obs, noises, chunks)])."""
        from robot_rl.data import EpisodeStore
        from robot_rl.rl.replay import ReplayBuffer, ReplayError

        want = sorted(set(self.keys) | set(self.policy_keys) | {"action"})
        with EpisodeStore.open(store) as st:
            eps = [m for m in st.episodes_meta() if m["success"]][:max_episodes]
            if not eps:
                raise ReplayError(f"{store}: no successful episodes to load")
            missing = [k for k in want if k not in st.keys]
            if missing:
                raise ReplayError(f"{store}: store lacks keys {missing} (has {sorted(st.keys)})")
            data = [(st.episode(m["index"], want), m["length"]) for m in eps]
        spec = {k: tuple(self.observation_space[k].shape) for k in self.keys}
        n_dec = sum(-(-n // self.n_exec) for _, n in data)
        noise_dim = self.H * self.A
        buf = ReplayBuffer({k: (s, self.observation_space[k].dtype) for k, s in spec.items()},
                           noise_dim + self.chunk_dim, capacity or n_dec + len(data) + 1, seed=seed)
        bank_rows = []
        zero = np.zeros(noise_dim, np.float32)
        for arr, n in data:
            self.hist = {}
            start_history(self.hist, self.policy_keys, 0, {k: arr[k][0] for k in self.policy_keys}, 1, self.T)
            for t in range(0, n, self.n_exec):
                end = min(t + self.n_exec, n)
                acts = np.asarray(arr["action"][t:end], np.float32)
                acts = np.concatenate([acts, np.repeat(acts[-1:], self.n_exec - len(acts), 0)])
                chunk = self.policy.normalize_actions(torch.as_tensor(acts)).numpy().reshape(-1)
                obs = {k: arr[k][t] for k in self.keys}
                last = end == n
                nxt = {k: arr[k][min(end, n - 1)] for k in self.keys}
                if self.bank:
                    w = self.bank_noises(self.bank)
                    pairs = self.sample_normalized(w)[:, : self.n_exec].reshape(len(w), -1).cpu().numpy()
                    bank_rows.append((obs, w, pairs))
                buf.add(obs, np.concatenate([zero, chunk]), float(last), nxt, terminated=last, truncated=last)
                for u in range(t + 1, end + 1 if not last else end):  # the history at the next decision
                    push_history(self.hist, self.policy_keys, 0, {k: arr[k][u] for k in self.policy_keys})
        self.hist = {}
        return buf, bank_rows

    def step(self, noise: np.ndarray):
        info_bank = {}
        if self.bank:  # the chosen noise and K random ones, one batch
            w = np.concatenate([np.asarray(noise, np.float32).reshape(1, -1), self.bank_noises(self.bank)])
            xs = self.sample_normalized(w)
            chunk = self.policy.unnormalize_actions(xs[:1])[0].cpu().numpy()
            pairs = xs[:, : self.n_exec].reshape(len(w), -1).cpu().numpy()
            executed = pairs[0].reshape(self.n_exec, self.A).copy()
            # the chosen noise is a pair too (its chunk before any human took over)
            info_bank = {"bank_noise": w, "bank_chunk": pairs}
        else:
            chunk = self.chunk(noise)
        total, n, intervened = 0.0, 0, False
        term = trunc = False
        info: dict[str, Any] = {}
        obs = self._obs
        for i, a in enumerate(chunk[: self.n_exec]):
            if self.human is not None:
                a, took = self.human.step(obs, a)
                intervened = intervened or took
                if took and self.bank:  # the critic over actions learns what the human did
                    executed[i] = self.policy.normalize_actions(torch.as_tensor(a, dtype=torch.float32)).numpy()
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
        if self.bank:
            info.update(info_bank, executed_chunk=executed.reshape(-1))
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
