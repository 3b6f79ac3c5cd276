"""`robot-rl record sim backend=isaac` end to end in the Isaac venv: worlds in parallel, one
episode store, the same layout as on the MuJoCo twin (state only)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.isaac


def test_record_sim_backend_isaac(tmp_path, capsys):
    from robot_rl.cli.main import main
    from robot_rl.data.store import EpisodeStore
    out = tmp_path / "pick.zarr"
    assert main(["record", "sim", "backend=isaac", "num_envs=4", "task=pick_cube", "cameras=[]", "episodes=5",
                 f"out={out}", "progress=false"]) == 0
    store = EpisodeStore.open(out)
    try:
        assert store.n_episodes == 5
        seeds = sorted(int(store.episode_meta(i)["extra"]["seed"]) for i in range(5))
        assert len(set(seeds)) == 5 and min(seeds) == 0
        ep = store.episode(0)
        assert {"joint_pos", "ee_pos", "object_state", "action"} <= set(ep)
        assert not any(k.startswith("image_") for k in ep)
        assert np.all(np.isfinite(ep["action"])) and len(ep["action"]) > 10
        assert store.episode_meta(0)["extra"]["backend"] == "isaac"
    finally:
        store.close()
    # cameras on the Isaac twin: one clear error, nothing written
    bad = tmp_path / "bad.zarr"
    assert main(["record", "sim", "backend=isaac", "task=pick_cube", "cameras=[front]", "episodes=1",
                 f"out={bad}"]) == 2
    assert "renders no cameras" in capsys.readouterr().err
    assert not bad.exists()


def test_world_envs_for_the_rl_loop():
    """rl backend=isaac: a training and an evaluation world share one Isaac env; stepping one
    marks the other disturbed (its episode restarts), each keeps its own seed and episode."""
    from robot_rl.sim.isaac.env import make_isaac_world_envs
    train, ev = make_isaac_world_envs("reach", "so101", 2, seed=0, reward_type="sparse")
    try:
        o0, _ = train.reset(seed=11)
        o1, _ = ev.reset(seed=12)
        assert o0["joint_pos"].shape == (5,) and not np.allclose(o0["object_state"], o1["object_state"])
        ex = train.make_expert(seed=11)
        for _ in range(3):
            o0, r, te, tr, info = train.step(ex.act(o0))
        assert ev.disturbed and not train.disturbed and isinstance(r, float)
        ev.reset(seed=12)
        assert not ev.disturbed
    finally:
        train.close()
        ev.close()


def test_eval_pool_on_isaac_worlds():
    """The evaluator's pool: per-world resets and steps; idle worlds hold."""
    from robot_rl.sim.isaac.env import IsaacEnvList
    pool = IsaacEnvList(3, task="pick_cube", robot="so101")
    try:
        obs = [pool.reset(i, 500 + i) for i in range(3)]
        assert len({float(o["object_state"][0]) for o in obs}) == 3
        experts = [pool.envs[i].make_expert(500 + i) for i in range(3)]
        active = np.array([True, False, True])
        idle_q = pool.vec.obs_of(1)["joint_pos"].copy()
        for _ in range(5):
            acts = np.stack([experts[i].act(pool.vec.obs_of(i)) for i in range(3)])
            out = pool.step(acts, active)
        assert set(out) == {0, 2}
        np.testing.assert_allclose(pool.vec.obs_of(1)["joint_pos"], idle_q, atol=2e-3)  # the idle arm holds
        with pytest.raises(Exception, match="renders no cameras"):
            IsaacEnvList(1, task="pick_cube", robot="so101", cameras=["front"])
    finally:
        pool.close()
