"""Shared by the policy tests: real expert demonstrations in a store, and a checkpoint's
actions computed in a fresh Python process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from robot_rl.data import EpisodeStore
from robot_rl.sim import make_env
from robot_rl.sim.experts import rollout_expert

KEYS = ["joint_pos", "gripper", "ee_pos", "object_state"]


def record_expert_store(path: Path, task: str = "reach", episodes: int = 6, keys=KEYS, extra_steps: int = 0) -> Path:
    """`episodes` scripted-expert episodes (seeds 0..N-1) of `task` on so101, state keys + action."""
    env = make_env(task, "so101")
    try:
        with EpisodeStore.create(path, env.robot_spec) as st:
            for seed in range(episodes):
                ep = st.start_episode(task=task, source="expert")
                rollout_expert(env, seed, extra_steps=extra_steps, on_step=lambda o, a, r, i, ep=ep: ep.add_step(
                    {**{k: o[k] for k in keys}, "action": a}, timestamp=ep.n_steps * 0.05))
                ep.commit(success=True)
    finally:
        env.close()
    return path


def actions_in_fresh_process(checkpoint: Path, obs: dict, seed: int | None = None) -> np.ndarray:
    """`predict_chunk(obs)` of the checkpoint loaded by a new interpreter (every policy type
    registered); `seed`: a torch.Generator seed for the sampling noise."""
    gen = "None" if seed is None else f"torch.Generator().manual_seed({int(seed)})"
    code = ("import numpy as np, json, sys, torch\n"
            "from robot_rl.policies.base import import_policies, load_checkpoint\n"
            "import_policies()\n"
            "p, cfg = load_checkpoint(sys.argv[1], device='cpu')\n"
            "obs = {k: np.array(v, np.float32) for k, v in json.loads(sys.argv[2]).items()}\n"
            f"print(json.dumps(p.predict_chunk(obs, {gen}).tolist()))")
    r = subprocess.run([sys.executable, "-c", code, str(checkpoint),
                        json.dumps({k: np.asarray(v).tolist() for k, v in obs.items()})],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return np.array(json.loads(r.stdout))


def tiny_diffusion(store: Path, seed: int = 0):
    """An untrained, small diffusion policy normalised on `store` (horizon 8, 4 actions
    executed, 4 DDIM steps): fast enough for steering tests."""
    import torch

    from robot_rl.policies.common.normalizer import Normalizer
    from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy

    with EpisodeStore.open(store) as st:
        norm = Normalizer.from_store(st, KEYS + ["action"])
        dims = {k: st.schema[k].shape[0] for k in KEYS}
    torch.manual_seed(seed)
    return DiffusionPolicy(DiffusionConfig(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=2, horizon=8,
                                           n_action_steps=4, down_dims=[16, 32], feature_dim=16, step_embed_dim=16,
                                           num_train_timesteps=20, num_inference_steps=4), norm)
