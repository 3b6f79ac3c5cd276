"""ACT policy on a real (tiny) dataset, and the temporal ensembler it is evaluated with."""
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from policy_helpers import KEYS, actions_in_fresh_process, record_expert_store
from robot_rl.data import EpisodeStore, SequenceSampler
from robot_rl.policies.act import ACTConfig, ACTPolicy
from robot_rl.policies.base import POLICIES, load_checkpoint, save_checkpoint
from robot_rl.policies.common.ensemble import TemporalEnsembler
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.spec import load_spec

# small enough for a CPU test, every part of the architecture present
SMALL = dict(dim_model=64, n_heads=4, dim_feedforward=128, n_encoder_layers=2, n_decoder_layers=1,
             n_vae_encoder_layers=2, latent_dim=8, feature_dim=32)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return record_expert_store(tmp_path_factory.mktemp("act") / "reach.zarr", extra_steps=4)


def make_policy(store_path, **kw):
    with EpisodeStore.open(store_path) as st:
        norm = Normalizer.from_store(st, KEYS + ["action"])
        dims = {k: st.schema[k].shape[0] for k in KEYS}
    cfg = ACTConfig(state_keys=KEYS, state_dims=dims, action_dim=7, **{**SMALL, **kw})
    torch.manual_seed(0)
    return ACTPolicy(cfg, norm)


def full_batch(sampler, keys):
    return {k: torch.as_tensor(np.stack([sampler[i][k] for i in range(len(sampler))]))
            for k in keys + ["action", "is_pad"]}


@pytest.fixture(scope="module")
def trained(store):
    """A small ACT (2 observation steps, chunks of 10) fitted on all windows of the store."""
    pol = make_policy(store, n_obs_steps=2, horizon=10, n_action_steps=5)
    sampler = SequenceSampler(store, obs_keys=KEYS, action_key="action", n_obs_steps=2, horizon=10)
    batch = full_batch(sampler, KEYS)
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-3)
    history = []
    pol.train()
    for _ in range(100):
        opt.zero_grad()
        loss = pol.loss(batch)
        loss.backward()
        opt.step()
        history.append({"total": loss.item(), **pol.last_loss_terms})
    pol.eval()
    return pol, sampler, batch, history


def test_config_defaults_and_registration():
    c = ACTConfig()
    assert (c.n_obs_steps, c.horizon, c.n_action_steps) == (1, 20, 20)
    assert (c.dim_model, c.n_heads, c.dim_feedforward, c.n_encoder_layers, c.n_decoder_layers,
            c.n_vae_encoder_layers, c.latent_dim, c.kl_weight, c.use_vae) == (256, 8, 1024, 4, 1, 4, 32, 10.0, True)
    assert POLICIES["act"] is ACTPolicy and ACTPolicy.config_class is ACTConfig
    assert ACTConfig.from_dict(json.loads(json.dumps(asdict(c)))) == c


def test_loss_decreases_with_finite_terms(trained):
    pol, _, _, hist = trained
    first, last = hist[0], hist[-1]
    for h in hist:
        assert all(np.isfinite(v) for v in h.values())
    assert first["kl"] > 0 and last["kl"] > 0  # a real posterior, not the prior
    assert abs(last["total"] - (last["l1"] + pol.config.kl_weight * last["kl"])) < 1e-4 * max(1.0, last["total"])
    assert last["l1"] < 0.3 * first["l1"], (first, last)
    assert last["total"] < 0.3 * first["total"], (first, last)


def test_predict_chunks_shapes_units_and_determinism(trained):
    pol, sampler, batch, _ = trained
    assert not pol.training and pol.chunk_len == 9
    acts = batch["action"].numpy()[~batch["is_pad"].numpy()]
    lo, hi = acts.min(0), acts.max(0)
    margin = 0.25 * (hi - lo) + 0.05
    one = {k: sampler[7][k] for k in KEYS}  # (n_obs_steps, dim): a batch of one
    c1 = pol.predict_chunks(one)
    assert c1.shape == (1, 9, 7) and np.all(np.isfinite(c1))
    three = {k: np.stack([sampler[i][k] for i in (0, 7, 20)]) for k in KEYS}
    c3 = pol.predict_chunks(three)
    assert c3.shape == (3, 9, 7) and np.all(np.isfinite(c3))
    assert np.allclose(c3[1], c1[0], atol=1e-5)  # batching does not change a row
    assert np.array_equal(pol.predict_chunks(three), c3)  # eval mode: dropout off, z = 0
    assert np.all(c3 >= lo - margin) and np.all(c3 <= hi + margin), "chunks are not in robot units"
    # fitted: row 0 is the current step's action (index n_obs_steps - 1 of the window), and
    # clearly closer to it than the dataset's mean action is
    idx = np.arange(len(sampler))
    pred = pol.predict_chunks({k: np.stack([sampler[i][k] for i in idx]) for k in KEYS})[:, 0]
    want = np.stack([sampler[i]["action"][1] for i in idx])
    assert np.abs(pred - want).mean() < 0.75 * np.abs(want - acts.mean(0)).mean()
    assert pol.predict_chunk(one).shape == (9, 7)


def test_default_config_predicts_full_chunks(store):
    with EpisodeStore.open(store) as st:
        norm = Normalizer.from_store(st, KEYS + ["action"])
        dims = {k: st.schema[k].shape[0] for k in KEYS}
    pol = ACTPolicy(ACTConfig(state_keys=KEYS, state_dims=dims, action_dim=7), norm).eval()
    sampler = SequenceSampler(store, obs_keys=KEYS, action_key="action", n_obs_steps=1, horizon=20)
    obs = {k: np.stack([sampler[i][k] for i in range(4)]) for k in KEYS}
    out = pol.predict_chunks(obs)
    assert pol.chunk_len == 20 and out.shape == (4, 20, 7) and np.all(np.isfinite(out))
    batch = full_batch(sampler, KEYS)
    pol.train()
    loss = pol.loss({k: v[:8] for k, v in batch.items()})
    loss.backward()
    assert torch.isfinite(loss) and pol.last_loss_terms["kl"] > 0
    unused = [n for n, p in pol.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"


def test_without_vae(store):
    pol = make_policy(store, use_vae=False, horizon=6)
    sampler = SequenceSampler(store, obs_keys=KEYS, action_key="action", n_obs_steps=1, horizon=6)
    batch = full_batch(sampler, KEYS)
    loss = pol.loss(batch)
    loss.backward()
    assert pol.last_loss_terms["kl"] == 0.0 and loss.item() == pytest.approx(pol.last_loss_terms["l1"], rel=1e-5)
    assert not any(n.startswith("vae") for n, _ in pol.named_parameters())
    pol.eval()
    assert pol.predict_chunks({k: batch[k][:2].numpy() for k in KEYS}).shape == (2, 6, 7)


@pytest.mark.parametrize("training", [True, False])
def test_padded_actions_do_not_matter(trained, training):
    """The posterior and the L1 ignore actions marked is_pad (train mode, and eval mode, where
    torch's transformer layers may take their fused inference path)."""
    pol, _, batch, _ = trained
    pol.train(training)
    try:
        b = {k: v.clone() for k, v in batch.items()}
        assert b["is_pad"].any()
        with torch.no_grad():
            torch.manual_seed(1)
            ref = pol.loss(b).item()
            terms = dict(pol.last_loss_terms)
            b["action"][b["is_pad"]] = 1e3
            torch.manual_seed(1)
            assert pol.loss(b).item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
            if not training:  # eval: decodes the posterior mean, so the loss is deterministic
                torch.manual_seed(2)
                assert pol.loss(b).item() == ref and pol.last_loss_terms == terms
    finally:
        pol.eval()


def test_checkpoint_round_trip_in_a_fresh_process(trained, tmp_path):
    pol, sampler, _, _ = trained
    obs = {k: sampler[11][k] for k in KEYS}
    chunk = pol.predict_chunk(obs)
    ck = save_checkpoint(pol, tmp_path / "ck", load_spec("so101"), {"steps": 100})
    loaded, cfg = load_checkpoint(ck, spec=load_spec("so101"), device="cpu")
    assert isinstance(loaded, ACTPolicy) and loaded.config == pol.config and cfg["policy"] == "act"
    assert np.array_equal(loaded.predict_chunk(obs), chunk)
    assert np.allclose(actions_in_fresh_process(ck, obs), chunk, atol=1e-6)


@pytest.mark.parametrize("with_state", [True, False])
def test_image_config_smoke(with_state):
    """One 32x32 camera (random crop to 28), with or without a state key, 2 observation steps."""
    rng = np.random.default_rng(0)
    ends = np.array([12, 25, 40])
    n = int(ends[-1])
    data = {"joint_pos": rng.normal(size=(n, 5)).astype(np.float32),
            "image_front": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            "action": rng.normal(size=(n, 4)).astype(np.float32), "episode_ends": ends}
    norm = Normalizer.fit({k: data[k] for k in ("joint_pos", "action")})
    state = ["joint_pos"] if with_state else []
    keys = state + ["image_front"]
    cfg = ACTConfig(state_keys=state, cameras=["image_front"], state_dims={"joint_pos": 5}, action_dim=4,
                    n_obs_steps=2, horizon=8, crop=28, **SMALL)
    torch.manual_seed(0)
    pol = ACTPolicy(cfg, norm)
    assert pol.n_groups == len(keys) and pol.enc_pos.shape[1] == 1 + 2 * len(keys)
    sampler = SequenceSampler(data, obs_keys=keys, n_obs_steps=2, horizon=8)
    batch = full_batch(sampler, keys)
    batch = {k: v[:6] for k, v in batch.items()}
    assert batch["image_front"].dtype == torch.uint8 and batch["image_front"].shape == (6, 2, 32, 32, 3)
    loss = pol.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert pol.obs_encoder.cnns["image_front"].stem[0].weight.grad.abs().sum() > 0
    pol.eval()
    obs = {k: batch[k][:3].numpy() for k in keys}
    out = pol.predict_chunks(obs)
    assert out.shape == (3, 7, 4) and np.all(np.isfinite(out))
    assert np.array_equal(pol.predict_chunks(obs), out)


# -- temporal ensembling ------------------------------------------------------------------
def test_ensembler_constant_chunks_give_the_constant():
    ens = TemporalEnsembler(horizon=5, action_dim=3, batch=2, k=0.3)
    const = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25]])
    for _ in range(12):
        out = ens.update(np.repeat(const[:, None], 5, axis=1))
        assert np.allclose(out, const)


def _three_chunks():
    # query q predicts actions for steps q, q+1, q+2; value 10*q + step, so each is traceable
    return [np.array([[[10.0 * q + s] for s in range(q, q + 3)]]) for q in range(4)]  # each (1, 3, 1)


def test_ensembler_k0_is_the_mean_of_overlapping_predictions():
    ens = TemporalEnsembler(horizon=3, action_dim=1, batch=1, k=0.0)
    c = _three_chunks()
    want = [
        0.0,                           # t=0: q0 for step 0
        (1.0 + 11.0) / 2,              # t=1: q0 and q1 for step 1
        (2.0 + 12.0 + 22.0) / 3,       # t=2: q0, q1, q2 for step 2
        (13.0 + 23.0 + 33.0) / 3,      # t=3: q1, q2, q3 (q0 has run out)
    ]
    for q in range(4):
        assert ens.update(c[q])[0, 0] == pytest.approx(want[q])


def test_ensembler_weights_favour_older_predictions():
    k = 0.5
    ens = TemporalEnsembler(horizon=3, action_dim=1, batch=1, k=k)
    c = _three_chunks()
    outs = [ens.update(c[q])[0, 0] for q in range(3)]
    w = np.exp(-k * np.arange(3))  # oldest first
    assert outs[1] == pytest.approx((w[0] * 1.0 + w[1] * 11.0) / w[:2].sum())
    assert outs[2] == pytest.approx((w[0] * 2.0 + w[1] * 12.0 + w[2] * 22.0) / w.sum())


def test_ensembler_reset_mask_resets_only_masked_envs():
    ens = TemporalEnsembler(horizon=3, action_dim=1, batch=2, k=0.0)
    c = _three_chunks()
    both = lambda q: np.concatenate([c[q], c[q] + 100.0])  # noqa: E731 - env 1 offset by 100
    ens.update(both(0))
    ens.update(both(1))
    ens.reset(np.array([True, False]))
    out = ens.update(both(2))
    assert out[0, 0] == pytest.approx(22.0)  # env 0 starts over: only q2's own first action
    assert out[1, 0] == pytest.approx((2.0 + 12.0 + 22.0) / 3 + 100.0)  # env 1 keeps its history
    ens.reset()
    assert np.allclose(ens.update(both(3)), [[33.0], [133.0]])
    with pytest.raises(ValueError):
        ens.update(np.zeros((2, 4, 1)))
