"""Noise-aliased steering (DSRL-NA): the noise bank, the two-critic learner, the steering
env's bank output and the loop with aliasing (runs, resumes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robot_rl.rl.dsrl import AliasedNoiseLearner, NoiseBank
from robot_rl.rl.replay import ReplayBuffer, ReplayError
from robot_rl.rl.sac import SACConfig
from tests.policy_helpers import KEYS, record_expert_store, tiny_diffusion

SPEC = {"x": ((3,), np.float32)}
NOISE, CHUNK = 4, 2


def _sampler(w: np.ndarray) -> np.ndarray:
    """A stand-in deterministic sampler: only the first two noise entries matter (aliasing)."""
    return np.tanh(w[..., :CHUNK])


def test_noise_bank_round_trip_and_refuses_bad_input(tmp_path):
    bank = NoiseBank(SPEC, NOISE, CHUNK, capacity=10, seed=0)
    for t in range(4):  # 12 rows into a ring of 10: the oldest two are gone
        w = np.full((3, NOISE), t, np.float32)
        bank.add({"x": np.full(3, t, np.float32)}, w, _sampler(w))
    assert bank.size == 10 and bank.rows == 12
    b = bank.sample(64)
    assert b["noise"].shape == (64, NOISE) and b["chunk"].shape == (64, CHUNK)
    assert torch.allclose(b["obs"]["x"][:, 0], b["noise"][:, 0])  # rows stay aligned
    with pytest.raises(ReplayError, match="noise bank expects"):
        bank.add({"x": np.zeros(3, np.float32)}, np.zeros((2, NOISE)), np.zeros((2, CHUNK + 1)))
    with pytest.raises(ReplayError, match="non-finite"):
        bank.add({"x": np.zeros(3, np.float32)}, np.full((1, NOISE), np.nan), np.zeros((1, CHUNK)))
    assert bank.rows == 12  # refused input changed nothing
    bank.save(tmp_path / "bank.safetensors")
    back = NoiseBank.load(tmp_path / "bank.safetensors", capacity=10)
    order = (np.arange(10) + 2) % 10
    assert np.array_equal(back.noise[:10], bank.noise[order]) and np.array_equal(back.obs["x"][:10], bank.obs["x"][order])
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ReplayError, match="not a noise bank"):
        NoiseBank.load(tmp_path / "junk.safetensors")


def _aliased_learner(**kw) -> AliasedNoiseLearner:
    cfg = SACConfig(hidden=[64, 64], batch_size=64, gamma=0.0, init_temperature=0.01, **kw)
    return AliasedNoiseLearner(SPEC, -1.5 * np.ones(NOISE, np.float32), 1.5 * np.ones(NOISE, np.float32), cfg,
                               seed=0, chunk_dim=CHUNK)


def _bandit(n: int = 400):
    """One-step episodes: reward 1 when the executed chunk's first entry exceeds 0.5."""
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(SPEC, NOISE + CHUNK, 2000)
    bank = NoiseBank(SPEC, NOISE, CHUNK, 20_000, seed=1)
    for _ in range(n):
        o = {"x": rng.normal(size=3).astype(np.float32)}
        w = np.clip(rng.standard_normal(NOISE), -1.5, 1.5).astype(np.float32)
        c = _sampler(w)
        buf.add(o, np.concatenate([w, c]), float(c[0] > 0.5), {"x": np.zeros(3, np.float32)}, True, True)
        wk = np.clip(rng.standard_normal((8, NOISE)), -1.5, 1.5).astype(np.float32)
        bank.add(o, wk, _sampler(wk))
    return buf, bank


def test_aliased_learner_distils_the_chunk_critic_and_the_actor_climbs_it():
    torch.manual_seed(0)
    L = _aliased_learner()
    L.policy.actor.zero_mean_()
    buf, bank = _bandit()
    for _ in range(400):
        info = L.update(buf, bank=bank)
    assert {"qa_loss", "critic_loss", "qw", "actor_loss"} <= set(info) and np.isfinite(list(info.values())).all()
    x = torch.zeros(5, 3)
    z = L.policy.encoder({"x": x})
    hi, lo = torch.zeros(5, NOISE), torch.zeros(5, NOISE)
    hi[:, 0], lo[:, 0] = 1.2, -1.2
    q_hi, q_lo = L.critic(z, hi).mean(0).squeeze(-1), L.critic(z, lo).mean(0).squeeze(-1)
    assert (q_hi - q_lo).min() > 0.6, (q_hi, q_lo)  # noise critic learned from chunk values it never acted on
    a = L.policy.act({"x": np.zeros((32, 3), np.float32)}, deterministic=True)
    assert np.tanh(a[:, 0]).min() > 0.5, a[:5]  # the actor moved its noise to where the chunk succeeds
    with pytest.raises(ReplayError, match="non-empty noise bank"):
        L.update(buf)


def test_aliased_learner_checkpoint_round_trip(tmp_path):
    from robot_rl.rl.sac import policy_from_checkpoint

    L = _aliased_learner()
    buf, bank = _bandit(50)
    for _ in range(3):
        L.update(buf, bank=bank)
    L.save(tmp_path / "l.safetensors", {"env_steps": 5})
    L2, extra = AliasedNoiseLearner.load(tmp_path / "l.safetensors")
    assert extra == {"env_steps": 5} and L2.chunk_dim == CHUNK and L2.updates == L.updates
    for k, v in L.qa.state_dict().items():
        assert torch.equal(v, L2.qa.state_dict()[k])
    assert sorted(L2.qa_opt.state_dict()["state"]) == sorted(L.qa_opt.state_dict()["state"])
    x = {"x": np.ones((4, 3), np.float32)}
    assert np.array_equal(policy_from_checkpoint(tmp_path / "l.safetensors").act(x, deterministic=True),
                          L.policy.act(x, deterministic=True))
    with pytest.raises(ValueError, match="chunk_dim"):
        AliasedNoiseLearner(SPEC, -np.ones(NOISE, np.float32), np.ones(NOISE, np.float32), SACConfig())


def test_steering_env_bank_pairs_are_the_samplers_chunks(tmp_path):
    """Each decision reports K (noise, chunk) pairs that the sampler reproduces from the same
    state, and the executed chunk, with a human's rows where one took over."""
    from robot_rl.rl.human import HumanConfig, SimulatedHuman
    from robot_rl.rl.steer import NoiseSteeringEnv
    from robot_rl.sim import make_env

    pol = tiny_diffusion(record_expert_store(tmp_path / "d.zarr", "pick_cube", episodes=2))
    senv = NoiseSteeringEnv(make_env("pick_cube", "so101", reward_type="sparse"), pol, KEYS, bank=5, seed=0)
    try:
        assert senv.chunk_dim == 4 * 7
        w = np.random.default_rng(1).standard_normal(56).astype(np.float32)
        senv.reset(seed=3)
        _, _, _, _, info = senv.step(w)
        assert info["bank_noise"].shape == (6, 56) and info["bank_chunk"].shape == (6, 28)
        assert np.array_equal(info["bank_noise"][0], w)  # the chosen noise comes first
        assert np.abs(info["bank_noise"][1:]).max() <= 1.5
        radii = np.linalg.norm(info["bank_noise"][1:], axis=1)
        assert radii.min() < 0.8 * radii.max()  # spread radii, not only the Gaussian shell
        senv.reset(seed=3)  # the same start state: recompute each pair one at a time
        for k in range(6):
            c = senv.sample_normalized(info["bank_noise"][k])[0, :4].numpy().reshape(-1)
            assert np.allclose(c, info["bank_chunk"][k], atol=1e-5)
        own = senv.sample_normalized(w)[0, :4].numpy().reshape(-1)
        assert np.allclose(own, info["executed_chunk"], atol=1e-5)
        human = SimulatedHuman(senv.env, HumanConfig(threshold=0.0, patience=1, takeover_steps=6, budget=1.0))
        senv.human = human
        senv.reset(seed=4)
        _, _, _, _, info = senv.step(w)
        assert info["intervened"]
        ex = info["executed_chunk"].reshape(4, 7)
        acts = pol.unnormalize_actions(torch.as_tensor(ex)).numpy()  # the human's actions, in robot units
        space = senv.env.action_space
        assert np.all(acts >= space.low - 1e-4) and np.all(acts <= space.high + 1e-4)
        senv.human = None
        senv.reset(seed=4)
        assert not np.allclose(ex, senv.sample_normalized(w)[0, :4].numpy(), atol=1e-3)
    finally:
        senv.close()


def test_loop_with_aliased_steering_runs_and_resumes(tmp_path):
    from robot_rl.policies.base import save_checkpoint
    from robot_rl.rl.loop import RLConfig, run_online
    from robot_rl.spec import load_spec

    store = record_expert_store(tmp_path / "d.zarr", "pick_cube", episodes=2)
    ckpt = save_checkpoint(tiny_diffusion(store), tmp_path / "dp", load_spec("so101"))
    d = {"task": "pick_cube", "env_steps": 120, "eval_every": 120, "eval_episodes": 1, "learning_starts": 40,
         "checkpoint_every": 120, "out": str(tmp_path / "run"), "progress": False, "demos": str(store),
         "hil": True, "human": {"threshold": 0.0, "patience": 1, "takeover_steps": 4, "budget": 0.3},
         "steer": {"checkpoint": str(ckpt), "aliased": True, "bank": 4, "explore_std": 0.1},
         "sac": {"hidden": [32, 32], "batch_size": 16, "utd": 2}}
    s = run_online(RLConfig.from_dict(d))
    assert s["env_steps"] >= 120 and s["updates"] > 0 and "base_zero_noise_success" in s
    assert s["demo_decisions"] > 10 and s["interventions"] >= 1
    bank = NoiseBank.load(tmp_path / "run" / "bank.safetensors")
    online = ReplayBuffer.load(tmp_path / "run" / "online.safetensors")
    demos = ReplayBuffer.load(tmp_path / "run" / "demos.safetensors")
    n_interv = int(online.intervened[online.valid].sum())
    assert n_interv >= 1 and demos.transitions == s["demo_decisions"] + n_interv  # HIL-SERL: taken-over decisions too
    assert online.action_dim == 56 + 28 and bank.size == 5 * online.transitions + 4 * s["demo_decisions"]
    s2 = run_online(RLConfig.from_dict({**d, "env_steps": 200, "resume": True}))
    assert s2["env_steps"] >= 200 and s2["updates"] > s["updates"]
    assert NoiseBank.load(tmp_path / "run" / "bank.safetensors").size > bank.size
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"] == s2["env_steps"]
    with pytest.raises(ValueError, match="needs steer.aliased=true"):
        run_online(RLConfig.from_dict({**d, "steer": {"checkpoint": str(ckpt)}, "out": str(tmp_path / "r2")}))


def test_demo_decisions_rebuild_the_policys_history(tmp_path):
    """Demonstrations become one decision per n_exec steps with the demonstrated chunk, and
    their bank pairs come from the policy conditioned on the demo's own history."""
    from robot_rl.data import EpisodeStore
    from robot_rl.learn.evaluate import push_history, start_history
    from robot_rl.rl.steer import NoiseSteeringEnv
    from robot_rl.sim import make_env

    store = record_expert_store(tmp_path / "d.zarr", "pick_cube", episodes=2)
    pol = tiny_diffusion(store)
    senv = NoiseSteeringEnv(make_env("pick_cube", "so101", reward_type="sparse"), pol, KEYS, bank=3, seed=0)
    try:
        buf, rows = senv.demo_decisions(str(store))
        with EpisodeStore.open(store) as st:
            metas = st.episodes_meta()
            ep0 = st.episode(metas[0]["index"], KEYS + ["action"])
        lengths = [m["length"] for m in metas]
        n_dec = sum(-(-n // 4) for n in lengths)
        assert buf.transitions == n_dec and len(rows) == n_dec and buf.action_dim == 56 + 28
        assert buf.reward[buf.valid].sum() == 2 and buf.terminated.sum() == 2  # one success per episode
        first = buf.action[0, 56:].reshape(4, 7)
        assert np.allclose(first, pol.normalize_actions(torch.as_tensor(ep0["action"][:4])).numpy(), atol=1e-6)
        assert np.allclose(buf.obs["ee_pos"][1], ep0["ee_pos"][4])  # the second decision starts 4 steps on
        # the second decision's bank pairs: the policy sees observations 3 and 4
        obs, w, chunks = rows[1]
        senv.hist = {}
        start_history(senv.hist, KEYS, 0, {k: ep0[k][3] for k in KEYS}, 1, 2)
        push_history(senv.hist, KEYS, 0, {k: ep0[k][4] for k in KEYS})
        again = senv.sample_normalized(w)[:, :4].reshape(3, -1).numpy()
        assert np.allclose(again, chunks, atol=1e-5) and np.allclose(obs["ee_pos"], ep0["ee_pos"][4])
        with pytest.raises(ReplayError, match="store lacks keys"):
            NoiseSteeringEnv(make_env("pick_cube", "so101"), pol, KEYS + ["ee_quat"]).demo_decisions(str(store))
    finally:
        senv.close()


def test_zero_mean_actor_can_start_at_a_chosen_exploration_std():
    from robot_rl.rl.nets import TanhGaussianActor

    actor = TanhGaussianActor(5, -1.5 * torch.ones(300), 1.5 * torch.ones(300), hidden=[16])
    actor.zero_mean_(std=0.05)
    with torch.no_grad():
        a, _ = actor(torch.randn(64, 5), with_log_prob=False)
    assert abs(float(a.std()) - 0.05) < 0.005 and abs(float(a.mean())) < 0.005
