"""Our LeRobotDataset v3.0 export and import against the real lerobot (0.4.4, in .venv-lerobot).

- export: episodes recorded on the MuJoCo twin (two cameras) are exported with
  ``export_lerobot`` and loaded by lerobot's ``LeRobotDataset(repo_id, root=...)``: counts,
  every frame's state / action bit for bit, images within codec error (PSNR), delta_timestamps
  windows and their padding at episode edges, tasks as strings, stats / quantiles, lerobot's
  own aggregate_stats over our per-episode stats, and the files' layout against a dataset
  lerobot wrote itself from the same values.
- import: datasets lerobot writes through its recording API (create / add_frame /
  save_episode / finalize, SO-101 features, video and image mode) come back through
  ``import_lerobot`` with the same values.

Run by ``make test-lerobot`` (which builds the lerobot venv first).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from robot_rl.data.store import EpisodeStore

pytestmark = pytest.mark.lerobot

SO101_NAMES = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos",
               "gripper.pos"]
CAMS = ["observation.images.front", "observation.images.wrist"]
STAT_KEYS = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
MIN_PSNR = 30.0  # dB: a lossy video round trip of the twin's frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 images `a` against `b` (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def cli(*args):
    env = {**os.environ, "MUJOCO_GL": "egl"}
    r = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, f"robot-rl {' '.join(args)}:\n{r.stderr[-4000:]}"
    return r


# -- stores recorded on the twin ----------------------------------------------------------
@pytest.fixture(scope="module")
def sim_store(tmp_path_factory) -> Path:
    """`robot-rl record sim`, as a user records: 3 pick_cube expert episodes, two 48 px cameras,
    ee_delta actions."""
    out = tmp_path_factory.mktemp("rec") / "twin.zarr"
    cli("record", "sim", "task=pick_cube", "episodes=3", "robot=so101", f"out={out}", "image_size=48",
        "progress=false")
    return out


@pytest.fixture(scope="module")
def joint_store(tmp_path_factory) -> Path:
    """Twin expert episodes stored the way a leader-arm teleop recording is: the action is the
    joint position (+ gripper) commanded for the next step, action_mode joint_pos; two tasks."""
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.experts import rollout_expert

    out = tmp_path_factory.mktemp("rec") / "joint.zarr"
    env = RobotEnv(task="pick_cube", robot="so101", cameras=["front", "wrist"], image_size=48,
                   terminate_on_success=False)
    try:
        with EpisodeStore.create(out, env.robot_spec) as st:
            for seed, task in ((3, "pick up the cube"), (4, "lift the red cube")):
                obs_seen: list[dict] = []
                rollout_expert(env, seed, on_step=lambda o, a, r, i: obs_seen.append(o))
                ep = st.start_episode(task=task, source="teleop", fps=env.robot_spec.control_hz,
                                      extra={"action_mode": "joint_pos", "seed": seed})
                for t in range(len(obs_seen) - 1):
                    nxt = obs_seen[t + 1]
                    action = np.concatenate([nxt["joint_pos"], nxt["gripper"]]).astype(np.float32)
                    ep.add_step({**obs_seen[t], "action": action}, timestamp=t / env.robot_spec.control_hz)
                ep.commit(success=True)
    finally:
        env.close()
    return out


def store_episodes(path: Path) -> tuple[list[dict], list[dict]]:
    with EpisodeStore.open(path) as st:
        return [st.episode(i) for i in range(st.n_episodes)], st.episodes_meta()


def concat(eps: list[dict], key: str) -> np.ndarray:
    return np.concatenate([e[key] for e in eps])


# -- our export, loaded by lerobot ---------------------------------------------------------
@dataclass
class Exported:
    name: str
    store: Path
    root: Path
    summary: dict
    read: dict  # lr_read.py's answer
    eps: list[dict]  # the store's episodes
    metas: list[dict]
    delta: dict  # the delta_timestamps asked for
    fps: int
    video: bool


def delta_spec(metas: list[dict], fps: int) -> dict:
    probe = sorted({i for m in metas for i in (m["start"], m["start"] + 1, m["end"] - 2, m["end"] - 1)})
    return {"delta_timestamps": {"action": [k / fps for k in range(6)],
                                 "observation.state": [-1 / fps, 0.0],
                                 "observation.images.front": [-2 / fps, -1 / fps, 0.0]},
            "probe": probe}


CASES = {"sim_video": ("sim_store", True), "sim_image": ("sim_store", False), "joint_video": ("joint_store", True)}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory, lerobot_read) -> Exported:
    from robot_rl.data.lerobot_export import export_lerobot

    store_fixture, video = CASES[request.param]
    store = request.getfixturevalue(store_fixture)
    tmp = tmp_path_factory.mktemp(request.param)
    repo_id = f"local/{request.param}"
    summary = export_lerobot(store, tmp / "ds", repo_id=repo_id, video=video, progress=False)
    eps, metas = store_episodes(store)
    fps = int(metas[0]["fps"])
    delta = delta_spec(metas, fps)
    read = lerobot_read(tmp / "ds", repo_id, tmp / "read", delta)
    return Exported(request.param, store, tmp / "ds", summary, read, eps, metas, delta, fps, video)


def expected_state(ex: Exported) -> np.ndarray:
    """The store's joint_pos + gripper through the export's unit mapping (lerobot_units)."""
    from robot_rl.data.lerobot_units import UnitMap
    umap = UnitMap.from_json(ex.summary["unit_map"])
    return umap.forward(np.concatenate([concat(ex.eps, "joint_pos"), concat(ex.eps, "gripper").reshape(-1, 1)], 1))


def expected_action(ex: Exported) -> np.ndarray:
    from robot_rl.data.lerobot_units import UnitMap
    a = concat(ex.eps, "action").astype(np.float32)
    return UnitMap.from_json(ex.summary["unit_map"]).forward(a) if ex.summary["action_mode"] == "joint_pos" else a


def test_lerobot_loads_our_export_counts_and_features(exported):
    ex, r = exported, exported.read
    n = sum(len(e["timestamp"]) for e in ex.eps)
    assert r["num_episodes"] == len(ex.eps) and r["num_frames"] == n and r["len"] == n
    assert r["fps"] == ex.fps == 20 and r["robot_type"] == "so101_follower"
    assert r["camera_keys"] == CAMS
    assert r["video_keys"] == (CAMS if ex.video else [])
    assert r["features"]["observation.state"]["names"] == SO101_NAMES
    assert [(e["dataset_from_index"], e["dataset_to_index"], e["length"]) for e in r["episodes"]] == \
        [(m["start"], m["end"], m["length"]) for m in ex.metas]
    f = r["frames"]
    assert np.array_equal(f["index"], np.arange(n))
    assert np.array_equal(f["episode_index"], np.concatenate([np.full(m["length"], i) for i, m in enumerate(ex.metas)]))
    assert np.array_equal(f["frame_index"], np.concatenate([np.arange(m["length"]) for m in ex.metas]))
    assert np.allclose(f["timestamp"], f["frame_index"] / ex.fps)


def test_state_and_action_come_back_bit_for_bit(exported):
    import pyarrow.parquet as pq
    ex, f = exported, exported.read["frames"]
    state, action = expected_state(ex), expected_action(ex)
    assert f["observation.state"].dtype == np.float32 and f["action"].dtype == np.float32
    assert np.array_equal(f["observation.state"], state), "observation.state differs from the store's, mapped"
    assert np.array_equal(f["action"], action), "action differs from the store's"
    # what our export wrote in the data parquet is what lerobot hands out
    written = pq.read_table(sorted((ex.root / "data").rglob("*.parquet"))).to_pydict()
    assert np.array_equal(np.array(written["observation.state"], np.float32), f["observation.state"])
    assert np.array_equal(np.array(written["action"], np.float32), f["action"])
    # LeRobot's SO-101 units, independently: joints in degrees, gripper.pos 0 closed .. 100 open
    jp, grip = concat(ex.eps, "joint_pos").astype(np.float64), concat(ex.eps, "gripper").reshape(-1).astype(np.float64)
    assert np.allclose(f["observation.state"][:, :5], np.degrees(jp), rtol=0, atol=1e-4)
    assert np.allclose(f["observation.state"][:, 5], 100.0 * (1.0 - grip), rtol=0, atol=1e-4)
    if ex.summary["action_mode"] == "joint_pos":
        a = concat(ex.eps, "action").astype(np.float64)
        assert np.allclose(f["action"][:, :5], np.degrees(a[:, :5]), rtol=0, atol=1e-4)
        assert np.allclose(f["action"][:, 5], 100.0 * (1.0 - a[:, 5]), rtol=0, atol=1e-4)


def test_images_within_codec_error(exported, record_property):
    ex, f = exported, exported.read["frames"]
    for cam in CAMS:
        want = concat(ex.eps, "image_" + cam.rsplit(".", 1)[1])
        got = f[cam]
        assert got.shape == want.shape and got.dtype == np.uint8
        if ex.video:
            per_frame = [psnr(g, w) for g, w in zip(got, want)]
            total = psnr(got, want)
            record_property(f"psnr_{cam}", round(total, 2))
            print(f"[{ex.name}] {cam}: PSNR {total:.2f} dB over {len(got)} frames, worst frame {min(per_frame):.2f} dB")
            assert total > MIN_PSNR and min(per_frame) > MIN_PSNR - 3, (total, min(per_frame))
        else:  # PNG: lossless
            assert np.array_equal(got, want)


def test_delta_timestamps_windows_and_padding(exported):
    ex, f, d = exported, exported.read["frames"], exported.read["delta"]
    starts = {i: m for m in ex.metas for i in range(m["start"], m["end"])}
    for key, deltas in ex.delta["delta_timestamps"].items():
        steps = np.rint(np.array(deltas) * ex.fps).astype(int)
        for i in ex.delta["probe"]:
            m = starts[i]
            want_idx = np.clip(i + steps, m["start"], m["end"] - 1)
            want_pad = (i + steps < m["start"]) | (i + steps >= m["end"])
            assert np.array_equal(d[f"{i}/{key}_is_pad"], want_pad), (key, i)
            got = d[f"{i}/{key}"]
            assert got.shape == (len(steps), *f[key].shape[1:]), (key, i, got.shape)
            if key in CAMS and ex.video:
                # the same frames as decoded one at a time, within a decoder's rounding
                assert all(psnr(g, w) > 45 for g, w in zip(got, f[key][want_idx])), (key, i)
            else:
                assert np.array_equal(got, f[key][want_idx]), (key, i)
    b = ex.read["batch"]
    assert b["action"] == [4, 6, f["action"].shape[1]] and b["action_is_pad"] == [4, 6]
    assert b["observation.images.front"][:2] == [4, 3] and b["task"] == ["str"] * 4


def test_tasks_are_strings(exported):
    ex, r = exported, exported.read
    tasks = list(dict.fromkeys(m["task"] for m in ex.metas))
    assert r["tasks"]["index"] == [[t, "str"] for t in tasks]
    assert r["tasks"]["task_index"] == list(range(len(tasks)))
    want = [m["task"] for m in ex.metas for _ in range(m["length"])]
    assert r["item_tasks"] == [[t, "str"] for t in want]
    assert [e["tasks"] for e in r["episodes"]] == [[m["task"]] for m in ex.metas]
    assert r["batch_task"] == want[:4]


def test_stats_and_quantiles_load_in_lerobot(exported):
    ex, r = exported, exported.read
    stats, agg = r["stats"], r["aggregated_stats"]
    for key, x in (("observation.state", expected_state(ex)), ("action", expected_action(ex))):
        s = {k: np.array(v) for k, v in stats[key].items()}
        assert STAT_KEYS <= set(s), (key, sorted(s))
        x64 = x.astype(np.float64)
        assert np.allclose(s["min"], x64.min(0)) and np.allclose(s["max"], x64.max(0))
        assert np.allclose(s["mean"], x64.mean(0), rtol=1e-6, atol=1e-6)
        assert np.allclose(s["std"], x64.std(0), rtol=1e-5, atol=1e-6)
        assert int(np.ravel(s["count"])[0]) == len(x)
        qs = np.stack([s[q] for q in ("q01", "q10", "q50", "q90", "q99")])
        span = x64.max(0) - x64.min(0)
        assert np.all(np.diff(qs, axis=0) >= -1e-9) and np.all(qs >= s["min"] - 1e-9) and np.all(qs <= s["max"] + 1e-9)
        assert np.all(np.abs(s["q50"] - np.quantile(x64, 0.5, axis=0)) <= 0.02 * span + 1e-6), key
        # lerobot's aggregate_stats over our per-episode stats agrees with the dataset's
        a = {k: np.array(v) for k, v in agg[key].items()}
        for k in ("min", "max", "mean"):
            assert np.allclose(a[k], s[k], rtol=1e-6, atol=1e-6), (key, k)
        assert np.allclose(a["std"], s["std"], rtol=1e-4, atol=1e-5)
    for cam in CAMS:
        s = {k: np.array(v) for k, v in stats[cam].items()}
        assert STAT_KEYS <= set(s) and s["mean"].shape == (3, 1, 1)
        assert np.all((0 <= s["min"]) & (s["max"] <= 1) & (s["min"] <= s["mean"]) & (s["mean"] <= s["max"]))
        want = concat(ex.eps, "image_" + cam.rsplit(".", 1)[1]).reshape(-1, 3).mean(0) / 255.0
        assert np.allclose(s["mean"].reshape(3), want, atol=0.03), (cam, s["mean"].reshape(3), want)
    assert set(r["episode_stats_features"]) >= {"observation.state", "action", *CAMS}
