"""Chunk samplers (cold, RTI warm start, real-time chunking, blending) on real policies."""

import numpy as np
import pytest
import torch

from policy_helpers import KEYS, record_expert_store
from robot_rl.data import EpisodeStore
from robot_rl.policies.act import ACTConfig, ACTPolicy
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robot_rl.runtime.samplers import SamplerError, SamplerSettings, make_sampler, overlap_weights
from robot_rl.spec import load_spec

SPEC = load_spec("so101")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return record_expert_store(tmp_path_factory.mktemp("smp") / "reach.zarr", episodes=3)


def _norm_dims(store):
    with EpisodeStore.open(store) as st:
        norm = Normalizer.from_store(st, KEYS + ["action"])
        dims = {k: st.schema[k].shape[0] for k in KEYS}
    return norm, dims


@pytest.fixture(scope="module")
def diffusion(store):
    norm, dims = _norm_dims(store)
    torch.manual_seed(0)
    cfg = DiffusionConfig(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=2, horizon=8, n_action_steps=4,
                          down_dims=[16, 32], feature_dim=16, step_embed_dim=16, num_train_timesteps=50,
                          num_inference_steps=5)
    return DiffusionPolicy(cfg, norm).eval()


@pytest.fixture(scope="module")
def act(store):
    norm, dims = _norm_dims(store)
    torch.manual_seed(0)
    cfg = ACTConfig(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=1, horizon=8, n_action_steps=4,
                    dim_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1,
                    dim_feedforward=64, latent_dim=8, feature_dim=16, dropout=0.0)
    return ACTPolicy(cfg, norm).eval()


def obs_batch(policy, b=1, seed=0):
    rng = np.random.default_rng(seed)
    dims = policy.config.state_dims
    return {k: rng.uniform(-0.2, 0.2, (b, policy.config.n_obs_steps, dims[k])).astype(np.float32) for k in KEYS}


def gen():
    return torch.Generator().manual_seed(0)


def test_overlap_weights_shape():
    w = overlap_weights(10, held=3, overlap_end=8)
    assert np.all(w[:3] == 1) and np.all(w[8:] == 0)
    assert np.all(np.diff(w[3:8]) < 0) and 0 < w[7] < w[3] < 1, "decays over the overlap"
    assert np.all(overlap_weights(5, held=0, overlap_end=0) == 0)


def test_cold_sampler_counts_evaluations(diffusion):
    s = make_sampler(diffusion, dict(mode="cold", num_steps=3), batch=2, spec=SPEC)
    r = s.query(obs_batch(diffusion, 2), [0, 0], [0, 0], None, gen())
    assert r.chunks.shape == (2, diffusion.chunk_len, 7)
    assert list(r.nfe) == [3, 3] and r.cold.all() and not r.fallback.any()
    assert np.isfinite(r.chunks).all()


def test_warm_start_continues_previous_chunk_and_holds_delay_rows(diffusion):
    s = make_sampler(diffusion, dict(mode="warm", warm_steps=2, k_prime=20, fallback_threshold=float("inf"),
                                     discrete="none"), spec=SPEC)
    o = obs_batch(diffusion)
    first = s.query(o, [10], [0], None, gen())
    assert first.cold[0] and first.nfe[0] == diffusion.config.num_inference_steps  # nothing to warm-start from
    d = 2
    r = s.query(o, [13], [d], None, gen())  # 3 steps later, 2 more until it arrives
    assert not r.cold[0] and r.nfe[0] == 2
    # the d rows that execute anyway (steps 13, 14) equal the previous chunk's rows for them
    np.testing.assert_allclose(r.chunks[0, :d], first.chunks[0, 3:3 + d], atol=1e-5)
    n = diffusion.chunk_len - 3 - d  # rows both chunks plan beyond the held ones
    assert not np.allclose(r.chunks[0, d:d + n], first.chunks[0, 3 + d:3 + d + n]), "the rest is re-planned"
    # too far from the previous chunk (the shift leaves nothing of it): cold again
    far = s.query(o, [13 + diffusion.config.horizon], [0], None, gen())
    assert far.cold[0]


def test_warm_fallback_check(diffusion):
    o = obs_batch(diffusion)
    always = make_sampler(diffusion, dict(mode="warm", fallback_threshold=0.0), spec=SPEC)
    always.query(o, [0], [0], None, gen())
    r = always.query(o, [1], [0], None, gen())
    assert r.fallback[0] and r.cold[0] and r.distance[0] > 0
    assert r.nfe[0] == 1 + diffusion.config.num_inference_steps, "the warm evaluations count too"
    assert always.counts["fallbacks"] == 1
    never = make_sampler(diffusion, dict(mode="warm", fallback_threshold=float("inf")), spec=SPEC)
    never.query(o, [0], [0], None, gen())
    r = never.query(o, [1], [0], None, gen())
    assert not r.fallback[0] and not r.cold[0] and np.isfinite(r.distance[0])


def _policy_with_gripper_norm(store, scale, offset):
    norm, dims = _norm_dims(store)
    norm.scale["action"] = norm.scale["action"].copy()
    norm.offset["action"] = norm.offset["action"].copy()
    norm.scale["action"][-1], norm.offset["action"][-1] = scale, offset
    torch.manual_seed(0)
    cfg = DiffusionConfig(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=2, horizon=8, n_action_steps=4,
                          down_dims=[16, 32], feature_dim=16, step_embed_dim=16, num_train_timesteps=50,
                          num_inference_steps=5)
    return DiffusionPolicy(cfg, norm).eval()


def test_snap_makes_the_gripper_binary(store):
    pol = _policy_with_gripper_norm(store, 2.0, -1.0)  # gripper data spanning 0 (open) .. 1 (closed)
    s = make_sampler(pol, dict(mode="warm", discrete="snap"), spec=SPEC)
    o = obs_batch(pol)
    for step in range(4):
        g = s.query(o, [step], [0], None, gen()).chunks[0, :, -1]
        assert np.all(np.isin(np.round(g, 5), [0.0, 1.0])), g
    assert make_sampler(pol, dict(mode="cold")).discrete_dims == [], "no spec: no discrete dims"


def test_rtc_guides_toward_previous_chunk(diffusion):
    o = obs_batch(diffusion)
    s = make_sampler(diffusion, dict(mode="rtc", rtc_steps=4), spec=SPEC)
    first = s.query(o, [0], [0], None, gen())
    r = s.query(o, [2], [3], None, gen())
    assert r.nfe[0] == 4 and not r.cold[0] and s.counts["vjp"] >= 4
    np.testing.assert_allclose(r.chunks[0, :3], first.chunks[0, 2:5], atol=1e-5)  # held rows exact
    # the guidance pulls the overlap toward the previous chunk: same noise, guidance weight
    # clipped to almost nothing, the overlap ends up further away
    def overlap_err(beta):
        smp = make_sampler(diffusion, dict(mode="rtc", rtc_steps=4, rtc_beta=beta), spec=SPEC)
        prev = smp.query(o, [0], [0], None, gen())
        new = smp.query(o, [2], [3], None, torch.Generator().manual_seed(7))
        ov = slice(3, diffusion.chunk_len - 2)
        return np.abs(new.chunks[0, ov, :6] - prev.chunks[0, 5:diffusion.chunk_len, :6]).mean()
    assert overlap_err(5.0) < 0.8 * overlap_err(1e-6)


def test_blend_for_policies_without_a_reverse_process(act):
    with pytest.raises(SamplerError, match="needs a diffusion policy"):
        make_sampler(act, dict(mode="warm"), spec=SPEC)
    s = make_sampler(act, dict(mode="rtc"), spec=SPEC)
    o = obs_batch(act)
    first = s.query(o, [0], [0], None, None)
    o2 = obs_batch(act, seed=5)
    r = s.query(o2, [2], [2], None, None)
    np.testing.assert_allclose(r.chunks[0, :2], first.chunks[0, 2:4], atol=1e-6)
    plain = act.predict_chunks(o2)[0]
    assert not np.allclose(r.chunks[0, 2:4], plain[2:4]), "the overlap is blended"
    np.testing.assert_allclose(r.chunks[0, -2:], plain[-2:], atol=1e-6)  # beyond the overlap: the new chunk


def test_episode_start_warm_starts_from_holding_still(diffusion):
    """start="hold" (default): an episode's first query costs warm_steps evaluations, from the
    chunk that holds the robot where it is; without the action mode it starts cold."""
    o = obs_batch(diffusion, 2)
    o["gripper"][:, -1] = [[0.0], [1.0]]  # one open, one closed
    s = make_sampler(diffusion, dict(mode="warm", warm_steps=1, discrete="none", fallback_threshold=float("inf")),
                     batch=2, spec=SPEC,
                     action_mode="ee_delta")
    r = s.query(o, [0, 0], [0, 0], None, gen())
    assert list(r.nfe) == [1, 1] and not r.cold.any() and r.start.all() and s.counts["hold_starts"] == 2
    assert np.isfinite(r.chunks).all()
    nxt = s.query(o, [4, 4], [0, 0], None, gen())
    assert not nxt.start.any() and list(nxt.nfe) == [1, 1]
    # the hold chunk itself: zero motion and the measured gripper (ee_delta)
    hold = diffusion.unnormalize_actions(torch.as_tensor(s._hold_chunks(o, 2))).numpy()
    np.testing.assert_allclose(hold[:, :, :6], 0.0, atol=1e-5)
    np.testing.assert_allclose(hold[:, :, 6], [[0.0] * hold.shape[1], [1.0] * hold.shape[1]], atol=1e-5)
    # joint_pos: the measured joints and gripper (a 5-joint + gripper policy)
    rng = np.random.default_rng(0)
    lo, hi = np.array(SPEC.lower), np.array(SPEC.upper)
    dims = diffusion.config.state_dims
    data = {k: rng.uniform(-1, 1, (64, dims[k])) for k in KEYS}
    data["action"] = np.c_[rng.uniform(lo, hi, (64, 5)), rng.uniform(0, 1, (64, 1))]
    jp_pol = DiffusionPolicy(DiffusionConfig(state_keys=KEYS, state_dims=dims, action_dim=6, n_obs_steps=2, horizon=8,
                                             n_action_steps=4, down_dims=[16, 32], feature_dim=16, step_embed_dim=16,
                                             num_train_timesteps=50, num_inference_steps=5), Normalizer.fit(data)).eval()
    jp = make_sampler(jp_pol, dict(mode="warm", discrete="none"), batch=2, spec=SPEC, action_mode="joint_pos")
    hold = jp_pol.unnormalize_actions(torch.as_tensor(jp._hold_chunks(o, 2))).numpy()
    np.testing.assert_allclose(hold[:, :, :5], np.repeat(o["joint_pos"][:, -1:, :5], hold.shape[1], 1), atol=1e-5)
    np.testing.assert_allclose(hold[:, 0, 5], [0.0, 1.0], atol=1e-5)
    r = jp.query(o, [0, 0], [2, 2], None, gen())
    assert list(r.nfe) == [1, 1] and r.start.all()
    # the d rows that execute before the chunk arrives hold the robot where it is
    np.testing.assert_allclose(r.chunks[:, :2, :5], np.repeat(o["joint_pos"][:, -1:, :5], 2, 1), atol=1e-4)
    # 7 action dims but 5 observed joints: nothing to hold, it starts cold
    assert make_sampler(diffusion, dict(mode="warm"), spec=SPEC, action_mode="joint_pos")._hold_chunks(o, 2) is None
    # a gripper policy that does not observe the gripper, or an unknown mode: nothing to hold, cold start
    blind = {k: v for k, v in o.items() if k != "gripper"}
    assert s._hold_chunks(blind, 2) is None
    unknown = make_sampler(diffusion, dict(mode="warm"), batch=2, spec=SPEC)
    r = unknown.query(o, [0, 0], [0, 0], None, gen())
    assert r.cold.all() and list(r.nfe) == [diffusion.config.num_inference_steps] * 2
    with pytest.raises(SamplerError, match="start"):
        SamplerSettings(start="maybe").check()


def test_short_start_only_for_episode_starts(diffusion):
    """start_steps: an episode's first query (and one whose previous chunk is used up) is a
    short DDIM sample; warm queries and fallbacks are not."""
    o = obs_batch(diffusion, 2)
    s = make_sampler(diffusion, dict(mode="warm", start_steps=2, fallback_threshold=float("inf")), batch=2, spec=SPEC)
    first = s.query(o, [0, 0], [0, 0], None, gen())
    assert list(first.nfe) == [2, 2] and first.cold.all() and np.isfinite(first.chunks).all()
    s.reset([1])  # slot 1 starts a new episode, slot 0 continues
    r = s.query(o, [2, 0], [0, 0], None, gen())
    assert list(r.nfe) == [1, 2] and list(r.cold) == [False, True]
    fb = make_sampler(diffusion, dict(mode="warm", start_steps=1, fallback_threshold=0.0), batch=2, spec=SPEC)
    assert fb.query(o, [0, 0], [0, 0], [0, 1], gen()).nfe.tolist() == [1, 1]
    r = fb.query(o, [1, 1], [0, 0], [0, 1], gen())
    assert r.fallback.all() and r.nfe.tolist() == [1 + diffusion.config.num_inference_steps] * 2
    # the start is a sample of the policy's own denoiser: the same as cold DDIM with as many steps
    cold2 = make_sampler(diffusion, dict(mode="cold", scheduler="ddim", num_steps=2), spec=SPEC)
    start2 = make_sampler(diffusion, dict(mode="warm", start_steps=2, discrete="none"), spec=SPEC)
    np.testing.assert_allclose(start2.query(obs_batch(diffusion), [0], [0], None, gen()).chunks,
                               cold2.query(obs_batch(diffusion), [0], [0], None, gen()).chunks, atol=1e-6)
    with pytest.raises(SamplerError, match="start_steps"):
        SamplerSettings(start_steps=0).check()


def test_settings_validation_and_runtime_update(diffusion):
    with pytest.raises(SamplerError, match="mode"):
        SamplerSettings(mode="bogus").check()
    with pytest.raises(SamplerError, match="k_prime"):
        make_sampler(diffusion, dict(mode="warm", k_prime=500), spec=SPEC)
    with pytest.raises(SamplerError, match="unknown sampler settings"):
        SamplerSettings.from_dict({"mode": "warm", "kprime": 3})
    s = make_sampler(diffusion, dict(mode="warm"), spec=SPEC)
    s.update(mode="cold", num_steps=2)
    assert s.settings.mode == "cold"
    with pytest.raises(SamplerError):
        s.update(discrete="maybe")
    assert s.settings.discrete != "maybe", "a refused update changes nothing"


def test_snap_keeps_a_gripper_that_never_moved_in_the_data(store):
    """push-like data: the gripper command is always 1.0, so the normaliser maps it to 0;
    snapping keeps it at 1.0 (snapping to +-1 in normalised units would command 0 or 2)."""
    pol = _policy_with_gripper_norm(store, 1.0, -1.0)  # Normalizer.fit's constant-1.0 case
    s = make_sampler(pol, dict(mode="warm", discrete="snap"), spec=SPEC)
    o = obs_batch(pol)
    for step in range(3):
        g = s.query(o, [step], [0], None, gen()).chunks[0, :, -1]
        np.testing.assert_allclose(g, 1.0, atol=1e-5)
