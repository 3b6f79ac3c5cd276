"""Diffusion policy: denoisers, training signal, samplers, the warm-start pieces, checkpoints."""

import numpy as np
import pytest
import torch

from policy_helpers import KEYS, actions_in_fresh_process, record_expert_store
from robot_rl.data import EpisodeStore, SequenceSampler
from robot_rl.policies.base import load_checkpoint, save_checkpoint
from robot_rl.policies.common.denoisers import ConditionalUnet1D, TransformerDenoiser
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robot_rl.spec import load_spec



@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return record_expert_store(tmp_path_factory.mktemp("dp") / "reach.zarr")


def make_policy(store_path, **kw):
    with EpisodeStore.open(store_path) as st:
        norm = Normalizer.from_store(st, KEYS + ["action"])
        dims = {k: st.schema[k].shape[0] for k in KEYS}
    args = dict(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=2, horizon=8, n_action_steps=4,
                down_dims=[32, 64], feature_dim=32, step_embed_dim=32, d_model=32, n_layers=2, dropout=0.0,
                num_train_timesteps=50, num_inference_steps=5)
    args.update(kw)
    torch.manual_seed(0)
    return DiffusionPolicy(DiffusionConfig(**args), norm)


def full_batch(store_path, horizon=8):
    s = SequenceSampler(store_path, obs_keys=KEYS, n_obs_steps=2, horizon=horizon)
    return s, {k: torch.as_tensor(v) for k, v in s.get_batch(np.arange(len(s))).items()}


def test_denoisers_shapes_and_conditioning():
    x, t = torch.randn(3, 16, 7), torch.tensor([0, 5, 99])
    unet = ConditionalUnet1D(7, 20, [16, 32, 64], step_embed_dim=16)
    c = torch.randn(3, 20)
    y = unet(x, t, c)
    assert y.shape == x.shape
    assert not torch.allclose(unet(x, t, c + 1), y), "the condition must change the output (FiLM)"
    assert not torch.allclose(unet(x, t + 1, c), y), "the diffusion step must change the output"
    with pytest.raises(ValueError, match="divisible by 4"):
        unet(torch.randn(3, 10, 7), t, c)
    tr = TransformerDenoiser(7, 20, horizon=16, n_cond=2, d_model=32, n_heads=4, n_layers=2, dropout=0.0)
    ct = torch.randn(3, 2, 20)
    y = tr(x, t, ct)
    assert y.shape == x.shape
    # causal self-attention: changing the last action token leaves earlier outputs alone
    x2 = x.clone()
    x2[:, -1] += 1
    assert torch.allclose(tr(x2, t, ct)[:, :-1], y[:, :-1], atol=1e-5)
    assert not torch.allclose(tr(x2, t, ct)[:, -1], y[:, -1])


@pytest.mark.parametrize("kw", [{}, {"prediction_type": "sample"}, {"denoiser": "transformer"}])
def test_loss_decreases(store, kw):
    pol = make_policy(store, **kw)
    _, batch = full_batch(store)
    opt = torch.optim.AdamW(pol.parameters(), lr=2e-3)
    torch.manual_seed(1)
    first = np.mean([pol.loss(batch).item() for _ in range(5)])
    for _ in range(150):
        opt.zero_grad()
        pol.loss(batch).backward()
        opt.step()
    torch.manual_seed(1)
    last = np.mean([pol.loss(batch).item() for _ in range(5)])
    assert last < 0.5 * first, (first, last)


def test_predict_chunks_samplers_and_determinism(store):
    pol = make_policy(store).eval()
    s, _ = full_batch(store)
    obs = s.get_batch([0, 5, 9])
    obs = {k: obs[k] for k in KEYS}
    for sched, n in (("ddim", 5), ("ddpm", 50)):
        a = pol.predict_chunks(obs, torch.Generator().manual_seed(3), scheduler=sched, num_inference_steps=n)
        b = pol.predict_chunks(obs, torch.Generator().manual_seed(3), scheduler=sched, num_inference_steps=n)
        assert a.shape == (3, pol.chunk_len, 7) == (3, 7, 7)
        assert np.array_equal(a, b)
        # clip_sample keeps normalised actions in [-1, 1]: robot units stay in the data's range
        lo, hi = pol.normalizer.unnormalize("action", torch.full((7,), -1.0)), pol.normalizer.unnormalize("action", torch.ones(7))
        assert np.all(a >= lo.numpy() - 1e-4) and np.all(a <= hi.numpy() + 1e-4)
    single = pol.predict_chunk({k: v[0] for k, v in obs.items()}, torch.Generator().manual_seed(3))
    assert single.shape == (7, 7)
    with pytest.raises(ValueError, match="scheduler"):
        pol.make_scheduler("euler")


def test_warm_start_pieces(store):
    """A trained policy, started from its own re-noised sample at a small step with a
    short custom step list, stays near that sample; from pure noise at the same cost it
    does not have to. The pieces are what issue 5's warm start uses."""
    pol = make_policy(store)
    _, batch = full_batch(store)
    opt = torch.optim.AdamW(pol.parameters(), lr=2e-3)
    for _ in range(200):
        opt.zero_grad()
        pol.loss(batch).backward()
        opt.step()
    pol.eval()
    obs = {k: batch[k][:4, :2] for k in KEYS}
    with torch.no_grad():
        cond = pol.encode_obs({k: pol.normalizer.normalize(k, v) for k, v in obs.items()})
        x0 = pol.normalize_actions(batch["action"][:4])
        g = torch.Generator().manual_seed(0)
        t = torch.full((4,), 10, dtype=torch.long)
        xt = pol.add_noise(x0, torch.randn(x0.shape, generator=g), t)
        warm = pol.sample(cond, x_init=xt, timesteps=[10, 5, 0])
        cold = pol.sample(cond, scheduler=pol.make_scheduler("ddpm", 50), generator=g)
    assert warm.shape == cold.shape == (4, 8, 7)
    assert (warm - x0).abs().mean() < 0.25
    # ddim_step from t to -1 with the true noise recovers x0 exactly (epsilon prediction)
    noise = torch.randn(x0.shape, generator=g)
    xt = pol.add_noise(x0, noise, torch.full((4,), 30, dtype=torch.long))
    assert torch.allclose(pol.ddim_step(noise, 30, -1, xt), x0.clamp(-1, 1), atol=1e-4)


def test_checkpoint_round_trip_in_fresh_process(store, tmp_path):
    pol = make_policy(store, denoiser="transformer").eval()
    s, _ = full_batch(store)
    obs = {k: v for k, v in s[3].items() if k in KEYS}
    chunk = pol.predict_chunk(obs, torch.Generator().manual_seed(7))
    ck = save_checkpoint(pol, tmp_path / "ck", load_spec("so101"))
    assert np.allclose(actions_in_fresh_process(ck, obs, seed=7), chunk, atol=1e-5)
    again, cfg = load_checkpoint(ck, spec=load_spec("so101"), device="cpu")
    assert cfg["config"]["denoiser"] == "transformer"
