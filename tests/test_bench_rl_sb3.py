"""benchmarks/bench_rl.py: the sb3_demos baseline's demonstrations (real store, real env, real
SB3 replay buffer) and the carry-over of methods whose run folders are not on disk."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_rl  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two pick_cube demos recorded as the benchmark store is (``robot-rl record sim``, which
    keeps recording 2 steps after success)."""
    from robot_rl.cli.main import main

    path = tmp_path_factory.mktemp("demos") / "pick.zarr"
    assert main(["record", "sim", "task=pick_cube", "episodes=2", "cameras=[]", f"out={path}", "progress=false"]) == 0
    return path


def test_demo_transitions_match_the_sparse_env(store):
    from robot_rl.data import EpisodeStore

    trans, stats = bench_rl.demo_transitions(store, 2)
    with EpisodeStore.open(store) as st:
        lengths = [m["length"] for m in st.episodes_meta()]
    assert stats["episodes"] == 2 and stats["successes"] == 2 and stats["store_steps"] == sum(lengths)
    # the env ends the episode on reaching success; the store's 2 hold steps after it are dropped
    assert stats["store_terminal_minus_env_terminal"] == [2, 2]
    assert stats["transitions"] == len(trans) == sum(lengths) - 4
    ends = [i for i, t in enumerate(trans) if t[4] or t[5]]
    assert len(ends) == 2 and ends[-1] == len(trans) - 1
    for i, (o, a, r, no, term, trunc) in enumerate(trans):
        assert r == float(term) and not trunc  # sparse: 1 exactly on the terminal (success) step
        if i not in ends:
            np.testing.assert_array_equal(no, trans[i + 1][0])  # next_obs is the next step's obs
    # the terminal next_obs is the env's success state, not a copy of the last stored row
    assert not np.array_equal(trans[ends[0]][3], trans[ends[0]][0])


def test_demos_go_into_the_sb3_replay_buffer_as_sb3_stores_its_steps(store):
    from stable_baselines3 import SAC

    trans, _ = bench_rl.demo_transitions(store, 2)
    env = bench_rl.flat_env()
    model = SAC("MlpPolicy", env, seed=0, device="cpu")
    assert bench_rl.sb3_add_demos(model, trans) == 0
    rb, n = model.replay_buffer, len(trans)
    assert rb.size() == n and rb.observations.shape[1:] == (1, env.observation_space.shape[0])
    assert np.all(np.abs(rb.actions[:n]) <= 1.0)
    np.testing.assert_allclose(model.policy.unscale_action(rb.actions[:n, 0]), np.stack([t[1] for t in trans]),
                               atol=1e-6)
    np.testing.assert_array_equal(rb.rewards[:n, 0], [t[2] for t in trans])
    np.testing.assert_array_equal(rb.dones[:n, 0], [t[4] or t[5] for t in trans])
    assert not rb.timeouts[:n].any()
    np.testing.assert_array_equal(rb.next_observations[:n, 0], np.stack([t[3] for t in trans]))
    env.close()


def test_report_carries_over_methods_without_run_folders(tmp_path, monkeypatch):
    from robot_rl.rl.curves import CurveLog

    results, runs = tmp_path / "results", tmp_path / "runs"
    results.mkdir()
    old_curve = [{"env_steps": 0.0, "wall_s": 1.0, "success": 0.5}, {"env_steps": 1000.0, "wall_s": 2.0, "success": 0.9}]
    old = {"benchmark": "rl", "wall_s": 1.0, "target": 0.9, "updates_per_s": {"state": 90.0},
           "methods": {"pick": {"seeds": 3, "steps_to_90": [1000, None, 0], "start_success": [0.5, 0.6, 0.9],
                                "min_first_5000": [0.5, 0.6, 0.9], "final_success": [0.9, 0.8, 0.9],
                                "intervention_rate": [0.0] * 3, "final_eval_success": [0.86, 0.89, 0.9],
                                "final_env_steps": [10000] * 3, "base_success": [None] * 3},
                       "sb3_demos": {"seeds": 1, "stale": True}},
           "curves": {"pick": old_curve, "sb3_demos": old_curve}}
    (results / "rl.json").write_text(json.dumps(old))
    for s in range(2):  # fresh sb3_demos runs replace the old entry
        d = runs / f"sb3_demos_s{s}"
        log = CurveLog(d / "curve.csv")
        for step, ok in ((0, 0.0), (1000, 0.3 + s / 10)):
            log.add({"env_steps": step, "wall_s": 1.0 + step, "updates": step, "success": ok, "return": ok,
                     "intervention_rate": 0.0})
        (d / "summary.json").write_text(json.dumps({"final_success": 0.3 + s / 10, "env_steps": 1000,
                                                    "steps_to_90": None, "wall_s": 12.0}))
    monkeypatch.setattr(bench_rl, "RESULTS", results)
    monkeypatch.setattr(bench_rl, "RUNS", runs)
    monkeypatch.setattr(bench_rl, "write_json", lambda name, payload: (results / f"{name}.json").write_text(
        json.dumps(payload)))
    monkeypatch.setattr(sys, "argv", ["bench_rl.py", "--report", "--only", "sb3_demos"])
    bench_rl.main()
    new = json.loads((results / "rl.json").read_text())
    assert new["methods"]["pick"] == old["methods"]["pick"] and new["curves"]["pick"] == old_curve
    assert new["updates_per_s"] == old["updates_per_s"]
    m = new["methods"]["sb3_demos"]
    assert m["seeds"] == 2 and m["final_success"] == [0.3, 0.4] and m["wall_s"] == [12.0, 12.0]
    assert "stale" not in m and [r["success"] for r in new["curves"]["sb3_demos"]] == [0.0, 0.35]
