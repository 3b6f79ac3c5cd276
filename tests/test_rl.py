"""Online RL core: replay buffers (images once, ring, persistence, logs, demos from a store),
the SAC learner (update, discrete gripper, histogram critic, checkpoints), the simulated
human, offline IQL, the single-process loop (resume) and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robot_rl.rl.replay import ReplayBuffer, ReplayError, ReplayLog, transitions_to_batch
from robot_rl.rl.sac import CheckpointError, SACConfig, SACLearner, policy_from_checkpoint
from tests.policy_helpers import KEYS, record_expert_store, tiny_diffusion

SPEC = {"x": ((3,), np.float32), "image_front": ((8, 8, 3), np.uint8)}


def _obs(t: int) -> dict:
    return {"x": np.full(3, t, np.float32), "image_front": np.full((8, 8, 3), t % 256, np.uint8)}


def test_replay_shares_observations_and_pairs_next_correctly():
    buf = ReplayBuffer(SPEC, 2, capacity=100)
    for ep in range(3):
        for t in range(5):
            s = 10 * ep + t
            buf.add(_obs(s), [s, 0], float(t == 4), _obs(s + 1), terminated=t == 4, truncated=False)
    # 5 transitions per episode use 6 rows: the last observation is stored once, unsampled
    assert buf.size == 15 and buf.rows == 18
    b = buf.sample(200)
    x, nx = b["obs"]["x"][:, 0], b["next_obs"]["x"][:, 0]
    assert torch.equal(nx, x + 1)
    assert torch.equal(b["action"][:, 0], x)
    assert torch.equal(b["done"], (b["reward"] == 1).float())
    assert torch.equal(b["obs"]["image_front"][:, 0, 0, 0].float(), x)


def test_replay_ring_never_pairs_across_overwritten_rows():
    buf = ReplayBuffer(SPEC, 2, capacity=7)
    s = 0
    for ep in range(6):
        for t in range(4):
            buf.add(_obs(s), [s, 0], 0.0, _obs(s + 1), terminated=False, truncated=t == 3)
            s += 1
        s += 100  # episodes do not chain
    for _ in range(20):
        b = buf.sample(64)
        assert torch.equal(b["next_obs"]["x"][:, 0], b["obs"]["x"][:, 0] + 1)
    assert buf.size <= 6


def test_replay_refuses_bad_input_and_keeps_data():
    buf = ReplayBuffer(SPEC, 2, capacity=10)
    buf.add(_obs(1), [0, 0], 0.0, _obs(2), False, True)
    with pytest.raises(ReplayError, match="action has 3 entries"):
        buf.add(_obs(1), [0, 0, 0], 0.0, _obs(2), False, True)
    with pytest.raises(ReplayError, match="non-finite"):
        buf.add(_obs(1), [np.nan, 0], 0.0, _obs(2), False, True)
    with pytest.raises(ReplayError, match="shape"):
        buf.add({"x": np.zeros(4, np.float32), "image_front": _obs(0)["image_front"]}, [0, 0], 0.0, _obs(2), False, True)
    assert buf.size == 1
    with pytest.raises(ReplayError, match="empty"):
        ReplayBuffer(SPEC, 2, 10).sample(4)


def test_replay_save_load_round_trip_and_corrupt_file(tmp_path):
    buf = ReplayBuffer(SPEC, 2, capacity=9)
    for t in range(20):
        buf.add(_obs(t), [t, 1], 0.0, _obs(t + 1), False, t % 4 == 3, intervened=t % 2 == 0)
    buf.save(tmp_path / "b.safetensors")
    back = ReplayBuffer.load(tmp_path / "b.safetensors")
    assert back.size == buf.size and back.transitions == buf.transitions
    b = back.sample(100)
    assert torch.equal(b["next_obs"]["x"][:, 0], b["obs"]["x"][:, 0] + 1)
    assert torch.equal(b["intervened"], (b["obs"]["x"][:, 0] % 2 == 0).float())
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ReplayError, match="not a replay buffer"):
        ReplayBuffer.load(tmp_path / "bad.safetensors")


def test_replay_log_is_durable_and_rebuilds_the_buffer(tmp_path):
    log = ReplayLog(tmp_path / "log")
    steps = [{"obs": _obs(t), "action": [t, 0], "reward": 0.0, "next_obs": _obs(t + 1),
              "terminated": False, "truncated": t % 5 == 4} for t in range(15)]
    for i in range(3):
        log.append(transitions_to_batch(steps[5 * i: 5 * i + 5], SPEC), source="a0", source_seq=i)
    (tmp_path / "log" / "seg-000000099.safetensors.tmp").write_bytes(b"torn")  # a crash mid-write
    log2 = ReplayLog(tmp_path / "log")
    assert log2.next_seq == 3 and not list((tmp_path / "log").glob("*.tmp"))
    buf = ReplayBuffer(SPEC, 2, 100)
    acked = log2.load_into(buf)
    assert acked == {"a0": 2} and buf.size == 15


def test_demos_load_from_an_episode_store(tmp_path):
    store = record_expert_store(tmp_path / "d.zarr", "reach", episodes=3)
    buf = ReplayBuffer.from_store(store, KEYS)
    assert buf.size > 10
    assert int(buf.terminated.sum()) == 3 and float(buf.reward.sum()) == 3.0
    with pytest.raises(ReplayError, match="lacks keys"):
        ReplayBuffer.from_store(store, ["image_front"])


def _learner(**kw) -> SACLearner:
    low = np.array([-1, -1, 0], np.float32)
    high = np.array([1, 1, 1], np.float32)
    return SACLearner({"x": ((3,), np.float32)}, low, high, SACConfig(hidden=[32, 32], batch_size=16, **kw), seed=0)


def _filled(n=200) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buf = ReplayBuffer({"x": ((3,), np.float32)}, 3, 1000)
    for t in range(n):
        o, o2 = {"x": rng.normal(size=3).astype(np.float32)}, {"x": rng.normal(size=3).astype(np.float32)}
        a = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), float(rng.integers(0, 2))], np.float32)
        buf.add(o, a, float(a[0] > 0.5), o2, bool(a[0] > 0.5), t % 10 == 9)
    return buf


@pytest.mark.parametrize("kw", [{}, {"discrete_gripper": True}, {"critic_loss": "hl_gauss"},
                                {"n_critics": 5, "critic_subset": 2, "bc_weight": 1.0},
                                {"actor_delay": 50, "backup_entropy": True}, {"actor_l2": 0.01}])
def test_sac_learns_a_one_step_bandit(kw):
    """reward 1 when action[0] > 0.5 (episode ends): the actor must move its mean there."""
    torch.manual_seed(0)
    L = _learner(gamma=0.0, **kw)
    buf = _filled()
    for _ in range(300):
        info = L.update(buf, buf if kw.get("bc_weight") else None)
    assert np.isfinite(list(info.values())).all()
    a = L.policy.act({"x": np.zeros((64, 3), np.float32)}, deterministic=True)
    assert a.shape == (64, 3)
    if kw.get("bc_weight"):
        # BC pulls towards the data, whose action[0] is uniform on [-1, 1] (mean 0); the critic
        # must still move the mean well into the rewarded side
        assert a[:, 0].mean() > 0.3
    else:
        assert a[:, 0].mean() > 0.5  # inside the rewarded region
    if kw.get("discrete_gripper"):
        assert set(np.unique(a[:, 2])) <= {0.0, 1.0}  # the DQN head picks open or closed
    else:
        assert ((a[:, 2] >= 0) & (a[:, 2] <= 1)).all()  # the continuous gripper stays in its range


def test_sac_checkpoint_round_trip_resumes_identically(tmp_path):
    L = _learner(discrete_gripper=True)
    buf = _filled()
    for _ in range(5):
        L.update(buf)
    L.save(tmp_path / "l.safetensors", {"env_steps": 7})
    L2, extra = SACLearner.load(tmp_path / "l.safetensors")
    assert extra == {"env_steps": 7} and L2.updates == L.updates
    s1, s2 = L.critic_opt.state_dict()["state"], L2.critic_opt.state_dict()["state"]
    assert sorted(s1) == sorted(s2)
    for pid in s1:
        assert torch.equal(s1[pid]["exp_avg"], s2[pid]["exp_avg"])
    x = {"x": np.ones((4, 3), np.float32)}
    assert np.array_equal(L.policy.act(x, deterministic=True), L2.policy.act(x, deterministic=True))
    pol = policy_from_checkpoint(tmp_path / "l.safetensors")
    assert np.array_equal(pol.act(x, deterministic=True), L.policy.act(x, deterministic=True))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        SACLearner.load(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        policy_from_checkpoint(tmp_path / "none.safetensors")


def test_image_learner_updates_shared_encoder():
    spec = {"image_front": ((32, 32, 3), np.uint8), "x": ((2,), np.float32)}
    L = SACLearner(spec, -np.ones(2, np.float32), np.ones(2, np.float32),
                   SACConfig(hidden=[32, 32], batch_size=8, image_feat=16), seed=0)
    buf = ReplayBuffer(spec, 2, 100)
    rng = np.random.default_rng(0)
    for t in range(30):
        o = {"image_front": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "x": np.zeros(2, np.float32)}
        buf.add(o, rng.uniform(-1, 1, 2), 0.0, o, False, t % 10 == 9)
    before = L.policy.encoder.trunks["image_front"].head[0].weight.clone()
    actor_before = L.policy.actor.head.weight.clone()
    L.update(buf)
    assert not torch.equal(before, L.policy.encoder.trunks["image_front"].head[0].weight)
    assert not torch.equal(actor_before, L.policy.actor.head.weight)


def test_simulated_human_takes_over_within_budget():
    from robot_rl.rl.human import HumanConfig, SimulatedHuman
    from robot_rl.sim import make_env

    env = make_env("pick_cube", "so101")
    try:
        h = SimulatedHuman(env, HumanConfig(threshold=0.5, patience=2, takeover_steps=10, budget=0.2))
        obs, _ = env.reset(seed=0)
        h.reset(0)
        tagged = 0
        for _ in range(100):
            wrong = np.array([0, 0, 1, 0, 0, 0, 1], np.float32)  # up and closed: never the expert's action
            a, took = h.step(obs, wrong)
            tagged += took
            if took:
                assert not np.array_equal(a, wrong)
            obs, *_ = env.step(a)
        assert h.interventions >= 1 and tagged == h.intervened_steps
        assert h.rate <= 0.2 + 1e-9
    finally:
        env.close()


def test_iql_pretraining_fits_the_demonstrations(tmp_path):
    from robot_rl.rl.offline import OfflineConfig, pretrain_iql

    store = record_expert_store(tmp_path / "d.zarr", "reach", episodes=4)
    demos = ReplayBuffer.from_store(store, KEYS)
    from robot_rl.sim import make_env
    env = make_env("reach", "so101")
    spec = {k: (env.observation_space[k].shape, np.float32) for k in KEYS}
    L = SACLearner(spec, env.action_space.low, env.action_space.high, SACConfig(hidden=[64, 64], batch_size=64))
    env.close()
    L.set_obs_stats(demos)
    b = demos.sample(256)
    err0 = float(((torch.as_tensor(L.policy.act({k: v.numpy() for k, v in b["obs"].items()}, deterministic=True))
                   - b["action"]) ** 2).mean())
    info = pretrain_iql(L, demos, OfflineConfig(steps=300)).info
    err1 = float(((torch.as_tensor(L.policy.act({k: v.numpy() for k, v in b["obs"].items()}, deterministic=True))
                   - b["action"]) ** 2).mean())
    assert err1 < 0.5 * err0, (err0, err1)
    assert np.isfinite(list(info.values())).all()
    assert torch.equal(L.target_critic.out.weight, L.critic.out.weight)  # targets synced for online


def test_online_loop_runs_resumes_and_writes_curves(tmp_path):
    from robot_rl.rl.loop import RLConfig, run_online

    store = record_expert_store(tmp_path / "d.zarr", "reach", episodes=3)
    d = {"task": "reach", "demos": str(store), "env_steps": 300, "eval_every": 150, "eval_episodes": 2,
         "learning_starts": 50, "checkpoint_every": 150, "out": str(tmp_path / "run"), "progress": False,
         "hil": True, "human": {"budget": 0.5, "patience": 1, "threshold": 0.1},
         "offline": {"steps": 20, "wsrl": True, "warmup": 50}, "sac": {"hidden": [32, 32], "batch_size": 32, "utd": 1}}
    s = run_online(RLConfig.from_dict(d))
    assert s["env_steps"] == 300 and s["updates"] == 251 and s["interventions"] >= 1
    assert 0 < s["intervention_rate"] <= 0.5
    rows = (tmp_path / "run" / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("env_steps,wall_s") and len(rows) == 4  # header + steps 0, 150, 300
    assert (tmp_path / "run" / "curve.png").stat().st_size > 1000
    s2 = run_online(RLConfig.from_dict({**d, "env_steps": 450, "resume": True}))
    assert s2["env_steps"] == 450 and s2["updates"] == 251 + 150
    assert len((tmp_path / "run" / "curve.csv").read_text().splitlines()) == 5
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"] == 450


def test_rl_config_errors_are_one_line():
    from robot_rl.rl.loop import RLConfig

    with pytest.raises(ValueError, match="unknown rl setting"):
        RLConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="unknown SAC setting"):
        RLConfig.from_dict({"sac": {"n_critic": 3}})
    with pytest.raises(ValueError, match="critic_loss"):
        RLConfig.from_dict({"sac": {"critic_loss": "huber"}})
    with pytest.raises(ValueError, match="unknown human setting"):
        RLConfig.from_dict({"human": {"patiense": 3}})


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_rl_cli_trains_and_reports(tmp_path):
    import subprocess
    import sys

    store = record_expert_store(tmp_path / "d.zarr", "reach", episodes=2)
    base = [sys.executable, "-m", "robot_rl.cli.main", "rl"]
    r = subprocess.run(base + ["task=reach", "robot=so101", f"demos={store}", "env_steps=120", "eval_every=120",
                               "eval_episodes=1", "learning_starts=60", "offline.steps=10", "sac.hidden=[16,16]",
                               "sac.batch_size=16", f"out={tmp_path / 'run'}", "progress=false"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "rl reach: 120 env steps" in r.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"] == 120
    r = subprocess.run(base + ["sac.n_critic=3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown setting 'sac.n_critic'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(base + [f"demos={tmp_path / 'none.zarr'}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "demos: no such path" in r.stderr


def test_noise_steering_env_maps_noise_to_the_policys_chunks(tmp_path):
    """Same noise -> same chunk (deterministic DDIM); a step executes n_exec actions and
    reports them; a drifting policy gets taken over and the decision is tagged."""
    from robot_rl.rl.human import HumanConfig, SimulatedHuman
    from robot_rl.rl.steer import NoiseSteeringEnv
    from robot_rl.sim import make_env

    pol = tiny_diffusion(record_expert_store(tmp_path / "d.zarr", "pick_cube", episodes=2))
    env = make_env("pick_cube", "so101", reward_type="sparse")
    human = SimulatedHuman(env, HumanConfig(threshold=0.0, patience=1, takeover_steps=6, budget=1.0))
    senv = NoiseSteeringEnv(env, pol, KEYS, noise_bound=1.5, human=None)
    try:
        assert senv.action_space.shape == (8 * 7,)
        obs, _ = senv.reset(seed=3)
        assert sorted(obs) == sorted(KEYS)
        w = np.random.default_rng(0).standard_normal(56).astype(np.float32)
        c1, c2 = senv.chunk(w), senv.chunk(w)
        assert c1.shape == (pol.chunk_len, 7) and np.array_equal(c1, c2)
        assert not np.allclose(senv.chunk(-w), c1)
        obs, r, term, trunc, info = senv.step(w)
        assert info["env_steps"] == 4 and not info["intervened"]
        senv.human = human  # threshold 0: the expert takes over at once, for 6 steps
        senv.reset(seed=4)
        _, _, _, _, info = senv.step(w)
        assert info["intervened"] and info["env_steps"] == 6 and human.interventions == 1
    finally:
        senv.close()
    with pytest.raises(ValueError, match="needs a diffusion policy"):
        NoiseSteeringEnv(make_env("reach", "so101"), torch.nn.Linear(2, 2), KEYS)


def test_zero_mean_actor_starts_steering_at_the_samplers_mode():
    from robot_rl.rl.nets import TanhGaussianActor

    actor = TanhGaussianActor(5, -1.5 * torch.ones(4), 1.5 * torch.ones(4), hidden=[16])
    z = torch.randn(32, 5)
    assert actor(z, deterministic=True, with_log_prob=False)[0].abs().max() > 0
    actor.zero_mean_()
    mean, _ = actor(z, deterministic=True, with_log_prob=False)
    assert torch.equal(mean, torch.zeros_like(mean))
    sample, _ = actor(z)
    assert sample.std() > 0.05  # exploration noise is kept


def test_offline_to_online_with_iql_updates(tmp_path, monkeypatch):
    """offline.online=iql keeps IQL running online at the online actor learning rate."""
    from robot_rl.rl import offline as off
    from robot_rl.rl.loop import RLConfig, run_online

    seen = {}
    orig = off.IQL.step

    def step(self, b):
        seen["lr"] = self.pi_opt.param_groups[0]["lr"]
        seen["n"] = seen.get("n", 0) + 1
        return orig(self, b)

    monkeypatch.setattr(off.IQL, "step", step)
    store = record_expert_store(tmp_path / "d.zarr", "reach", episodes=2)
    d = {"task": "reach", "demos": str(store), "env_steps": 150, "eval_every": 150, "eval_episodes": 1,
         "learning_starts": 50, "out": str(tmp_path / "run"), "progress": False,
         "offline": {"steps": 30, "wsrl": False, "online": "iql", "online_actor_lr": 1e-5},
         "sac": {"hidden": [16, 16], "batch_size": 16}}
    s = run_online(RLConfig.from_dict(d))
    assert seen["n"] == 30 + 101 and seen["lr"] == 1e-5
    assert s["updates"] == 101 and "offline" in s
    # resume: online IQL goes on with its own value net and optimisers (not SAC updates)
    saved = off.IQL(SACLearner.load(tmp_path / "run" / "learner.safetensors")[0], off.OfflineConfig())
    saved.load(tmp_path / "run" / "iql.safetensors")
    s2 = run_online(RLConfig.from_dict({**d, "env_steps": 200, "resume": True}))
    assert seen["n"] == 30 + 101 + 50 and seen["lr"] == 1e-5 and s2["updates"] == 151
    after = off.IQL(SACLearner.load(tmp_path / "run" / "learner.safetensors")[0], off.OfflineConfig())
    after.load(tmp_path / "run" / "iql.safetensors")
    v0, v1 = saved.value.state_dict(), after.value.state_dict()
    assert any(not torch.equal(v0[k], v1[k]) for k in v0)  # the value net kept training from where it was
    with pytest.raises(CheckpointError, match="not a robot_rl.iql checkpoint"):
        saved.load(tmp_path / "run" / "learner.safetensors")
