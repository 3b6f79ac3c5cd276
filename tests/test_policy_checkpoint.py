"""Policy interface and checkpoints, on the plain BC baseline and a real (tiny) dataset."""

import numpy as np
import pytest
import torch

from policy_helpers import KEYS, actions_in_fresh_process, record_expert_store
from robot_rl.data import EpisodeStore, SequenceSampler
from robot_rl.policies.base import CheckpointError, PolicyConfig, load_checkpoint, save_checkpoint
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.policies.mlp_bc import MLPBCPolicy
from robot_rl.spec import load_spec



@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return record_expert_store(tmp_path_factory.mktemp("bc") / "reach.zarr")


def make_policy(store_path):
    with EpisodeStore.open(store_path) as st:
        norm = Normalizer.from_store(st, KEYS + ["action"])
        dims = {k: st.schema[k].shape[0] for k in KEYS}
    cfg = PolicyConfig(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=2, horizon=8)
    torch.manual_seed(0)
    return MLPBCPolicy(cfg, norm)


def test_bc_learns_the_demonstrations_and_checkpoint_round_trips(store, tmp_path):
    pol = make_policy(store)
    sampler = SequenceSampler(store, obs_keys=KEYS, action_key="action", n_obs_steps=2, horizon=8)
    batch = {k: torch.as_tensor(np.stack([sampler[i][k] for i in range(len(sampler))])) for k in KEYS + ["action", "is_pad"]}
    opt = torch.optim.AdamW(pol.parameters(), lr=3e-3)
    first = pol.loss(batch).item()
    for _ in range(150):
        opt.zero_grad()
        loss = pol.loss(batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    pol.eval()
    obs = {k: sampler[5][k] for k in KEYS}
    chunk = pol.predict_chunk(obs)
    assert chunk.shape == (pol.chunk_len, 7) == (7, 7) and np.all(np.isfinite(chunk))
    ck = save_checkpoint(pol, tmp_path / "ck", load_spec("so101"), {"steps": 150})
    # a fresh process reproduces the same actions
    assert np.allclose(actions_in_fresh_process(ck, obs), chunk, atol=1e-6)


def test_checkpoint_refusals(store, tmp_path):
    pol = make_policy(store)
    ck = save_checkpoint(pol, tmp_path / "ck", load_spec("so101"))
    with pytest.raises(CheckpointError, match="'so101'.*'arm6'|'arm6'.*'so101'"):
        load_checkpoint(ck, spec=load_spec("arm6"))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
    raw = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ck, spec=load_spec("so101"))
