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


def test_lerobot_dataset_tools_work_on_our_export(exported, run_lerobot):
    """lerobot's delete_episodes (re-cuts videos, re-indexes, rewrites per-episode stats) and
    merge_datasets (aggregate_datasets) on our export, and the results load."""
    ex = exported
    drop = 1
    out = ex.root.parent / "tools"
    run_lerobot("lr_tools.py", ex.root, f"local/{ex.name}", out, drop)
    res, arr = json.loads((out / "tools.json").read_text()), dict(np.load(out / "tools.npz"))
    keep = np.concatenate([np.arange(m["start"], m["end"]) for i, m in enumerate(ex.metas) if i != drop])
    f = ex.read["frames"]
    d = res["deleted"]
    assert d["num_episodes"] == len(ex.metas) - 1 and d["num_frames"] == len(keep)
    for k in ("observation.state", "action"):
        assert np.array_equal(arr[f"deleted/{k}"], f[k][keep]), k
        assert np.array_equal(arr[f"merged/{k}"], np.concatenate([f[k], f[k][keep]])), k
    assert np.array_equal(arr["deleted/index"], np.arange(len(keep)))
    assert res["merged"]["num_episodes"] == 2 * len(ex.metas) - 1
    assert res["merged"]["num_frames"] == len(f["index"]) + len(keep)
    assert np.allclose(res["deleted"]["action_mean"], f["action"][keep].astype(np.float64).mean(0), atol=1e-5)
    assert all(isinstance(t, str) for r in res.values() for t in r["item_tasks"])
    assert all(shape[0] == 3 for r in res.values() for shape in r["camera_shapes"].values())


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


# -- the layout, against a dataset lerobot writes itself from the same values --------------
def write_with_lerobot(run_lerobot, tmp: Path, root: Path, repo_id: str, fps: int, features: dict,
                       episodes: list[dict], use_videos: bool) -> Path:
    """`episodes`: [{"task": str, <feature>: array per frame, ...}] written by lr_write.py."""
    spec = {"repo_id": repo_id, "fps": fps, "robot_type": "so101_follower", "use_videos": use_videos,
            "features": features, "episodes": [{"task": e["task"], "length": len(e["action"])} for e in episodes]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    np.savez(tmp / "data.npz", **{f"e{i}/{k}": e[k] for i, e in enumerate(episodes) for k in features})
    run_lerobot("lr_write.py", tmp / "spec.json", tmp / "data.npz", root)
    return root


def layout(run_lerobot, root: Path, out: Path) -> dict:
    run_lerobot("lr_layout.py", root, out)
    return json.loads((out / "layout.json").read_text())


@pytest.mark.parametrize("video", [True, False], ids=["video", "image"])
def test_layout_matches_what_lerobot_writes(sim_store, video, tmp_path, run_lerobot):
    """Our export and a dataset lerobot's recording API writes from the same frames: the same
    files, info.json fields, feature entries, parquet column types, stats keys and video format
    (our extra columns and the info.json `robot_rl` entry aside)."""
    from robot_rl.data.lerobot_export import export_lerobot

    ours_root = tmp_path / "ours"
    export_lerobot(sim_store, ours_root, repo_id="local/ours", video=video, progress=False)
    info = json.loads((ours_root / "meta" / "info.json").read_text())
    keep = ["action", "observation.state", *CAMS]
    feats = {k: {f: info["features"][k][f] for f in ("dtype", "shape", "names")} for k in keep}
    eps, metas = store_episodes(sim_store)
    import pyarrow.parquet as pq
    written = pq.read_table(sorted((ours_root / "data").rglob("*.parquet")),
                            columns=["action", "observation.state"]).to_pydict()
    episodes = []
    for e, m in zip(eps, metas):
        sl = slice(m["start"], m["end"])
        episodes.append({"task": m["task"], "action": np.array(written["action"][sl], np.float32),
                         "observation.state": np.array(written["observation.state"][sl], np.float32),
                         **{c: e["image_" + c.rsplit(".", 1)[1]] for c in CAMS}})
    theirs_root = write_with_lerobot(run_lerobot, tmp_path, tmp_path / "theirs", "local/theirs", int(info["fps"]),
                                     feats, episodes, video)
    ours, theirs = layout(run_lerobot, ours_root, tmp_path / "lo"), layout(run_lerobot, theirs_root, tmp_path / "lt")

    # files: the same set (lerobot also leaves an empty images/ folder behind in image mode)
    assert sorted(ours["files"]) == sorted(theirs["files"])
    # info.json: the same fields with the same values, counts and paths included
    oi, ti = ours["info"], theirs["info"]
    assert set(oi) - set(ti) == {"robot_rl"} and set(ti) <= set(oi)
    for k in ti:
        if k != "features":
            assert oi[k] == ti[k], (k, oi[k], ti[k])
    for k, ft in ti["features"].items():
        of = {f: v for f, v in oi["features"][k].items() if f != "robot_rl"}
        if "info" in ft:  # video parameters: the same fields; the codec may differ (av1 / h264)
            assert set(of["info"]) == set(ft["info"]), (k, of["info"], ft["info"])
            assert of["info"]["video.pix_fmt"] == ft["info"]["video.pix_fmt"] == "yuv420p"
            assert {f: v for f, v in of["info"].items() if f != "video.codec"} == \
                {f: v for f, v in ft["info"].items() if f != "video.codec"}
            of, ft = {f: v for f, v in of.items() if f != "info"}, {f: v for f, v in ft.items() if f != "info"}
        assert of == ft, (k, of, ft)
    # stats.json: the same stats for every feature lerobot has
    for k, stats in theirs["stats_keys"].items():
        assert ours["stats_keys"][k] == stats, k
    # parquet tables: every column lerobot writes, with the same arrow type, except where a
    # difference is known to be harmless to lerobot (loading, stats, delete / merge tools)
    harmless = {("list<element: double>", "list<element: int64>"),  # per-episode min/max of int columns
                ("string", "large_string")}  # meta/tasks.parquet's index (pandas 3 writes large_string)
    for name, t in theirs["parquet"].items():
        o = ours["parquet"][name]
        assert o["num_rows"] == t["num_rows"], name
        missing = {c: ty for c, ty in t["schema"].items() if c not in o["schema"]}
        assert not missing, (name, missing)
        wrong = {c: (o["schema"][c], ty) for c, ty in t["schema"].items() if o["schema"][c] != ty}
        if wrong:
            print(f"[layout] {name}: column types differ from lerobot's (ours, lerobot's): {wrong}")
        assert set(wrong.values()) <= harmless, (name, wrong)
        assert o["pandas_index"] == t["pandas_index"], name
    # videos: one stream per camera, all frames, the same size and pixel format
    for name, v in theirs["videos"].items():
        o = ours["videos"][name]
        assert (o["width"], o["height"], o["pix_fmt"], o["frames"]) == (v["width"], v["height"], v["pix_fmt"], v["frames"])
    print(f"[layout {'video' if video else 'image'}] lerobot wrote {sum(theirs['files'].values())} B, "
          f"we wrote {sum(ours['files'].values())} B; video codecs ours "
          f"{sorted({v['codec'] for v in ours['videos'].values()})} lerobot's {sorted({v['codec'] for v in theirs['videos'].values()})}")


# -- datasets lerobot writes, imported into our store ---------------------------------------
def lerobot_episodes(joint_store: Path) -> tuple[list[dict], dict]:
    """Three SO-101 episodes in LeRobot's units with known values: joints in degrees (smooth,
    within the arm's range), gripper.pos 0..100, the twin's rendered frames as the cameras, a
    reward; two tasks."""
    eps, _ = store_episodes(joint_store)
    frames = {c: concat(eps, "image_" + c.rsplit(".", 1)[1]) for c in CAMS}
    rng = np.random.default_rng(7)
    out, at = [], 0
    for task, n in (("pick up the cube", 22), ("push the cube", 15), ("pick up the cube", 26)):  # <= 63 frames
        t = np.arange(n + 1)[:, None] / 30.0
        ph = rng.uniform(0, 2 * np.pi, 6)
        deg = np.concatenate([40.0 * np.sin(2.0 * t + ph[:5]), 50.0 + 45.0 * np.sin(3.0 * t + ph[5:])], 1)
        deg = deg.astype(np.float32)
        out.append({"task": task, "observation.state": deg[:-1], "action": deg[1:],
                    "next.reward": (np.arange(n) == n - 1).astype(np.float32)[:, None],
                    **{c: frames[c][at:at + n] for c in CAMS}})
        at += n
    feats = {"action": {"dtype": "float32", "shape": [6], "names": SO101_NAMES},
             "observation.state": {"dtype": "float32", "shape": [6], "names": SO101_NAMES},
             "next.reward": {"dtype": "float32", "shape": [1], "names": None},
             **{c: {"dtype": "video", "shape": [48, 48, 3], "names": ["height", "width", "channels"]} for c in CAMS}}
    return out, feats


@pytest.fixture(scope="module", params=[True, False], ids=["video", "image"])
def lerobot_written(request, joint_store, tmp_path_factory, run_lerobot):
    video = request.param
    tmp = tmp_path_factory.mktemp("lerobot_video" if video else "lerobot_image")
    episodes, feats = lerobot_episodes(joint_store)
    if not video:
        feats = {k: {**v, "dtype": "image"} if v["dtype"] == "video" else v for k, v in feats.items()}
    root = write_with_lerobot(run_lerobot, tmp, tmp / "ds", "local/so101_lerobot", 30, feats, episodes, video)
    return root, episodes, video, tmp


@dataclass
class Imported:
    root: Path
    episodes: list[dict]  # the values lerobot was given
    video: bool
    theirs: dict  # what lerobot itself reads back from its dataset (lr_read.py)
    summary: dict
    eps: list[dict]  # our store's episodes after import_lerobot
    metas: list[dict]
    again: dict  # lerobot reading our export of the imported store


@pytest.fixture(scope="module")
def imported(lerobot_written, lerobot_read) -> Imported:
    from robot_rl.data.lerobot_export import export_lerobot
    from robot_rl.data.lerobot_import import import_lerobot

    root, episodes, video, tmp = lerobot_written
    theirs = lerobot_read(root, "local/so101_lerobot", tmp / "read")
    summary = import_lerobot(root, tmp / "imported.zarr", robot="so101", progress=False)
    eps, metas = store_episodes(tmp / "imported.zarr")
    export_lerobot(tmp / "imported.zarr", tmp / "again", repo_id="local/again", video=video, progress=False)
    again = lerobot_read(tmp / "again", "local/again", tmp / "read_again")
    return Imported(root, episodes, video, theirs, summary, eps, metas, again)


def lerobot_units_of(im: Imported) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The imported store's state and action, per episode, mapped back to LeRobot units."""
    from robot_rl.data.lerobot_units import UnitMap
    umap = UnitMap.from_json(im.summary["unit_map"])
    states = [umap.forward(np.concatenate([ep["joint_pos"], ep["gripper"].reshape(len(ep["joint_pos"]), 1)], 1))
              for ep in im.eps]
    return states, [umap.forward(ep["action"]) for ep in im.eps]


def test_dataset_lerobot_wrote_imports_with_the_same_values(imported):
    im = imported
    n_all = sum(len(e["action"]) for e in im.episodes)
    assert im.summary["episodes"] == 3 and im.summary["frames"] == n_all
    assert im.summary["action_mode"] == "joint_pos" and im.summary["unit_map"]["names"] == SO101_NAMES
    assert [m["task"] for m in im.metas] == [e["task"] for e in im.episodes]
    assert [m["length"] for m in im.metas] == [len(e["action"]) for e in im.episodes]
    assert all(m["fps"] == 30 and m["extra"]["action_mode"] == "joint_pos" for m in im.metas)
    with EpisodeStore.open(im.root.parent / "imported.zarr") as st:
        assert st.spec.name == "so101" and sorted(c.name for c in st.spec.cameras) == ["front", "wrist"]
    states, actions = lerobot_units_of(im)
    for e, ep, st_, ac in zip(im.episodes, im.eps, states, actions):
        n = len(e["action"])
        # the store holds radians and closure (0 open .. 1 closed): LeRobot's degrees and 0 closed .. 100 open
        jp, grip = ep["joint_pos"].astype(np.float64), ep["gripper"].reshape(n).astype(np.float64)
        assert np.allclose(np.degrees(jp), e["observation.state"][:, :5], rtol=0, atol=1e-4)
        assert np.allclose(100.0 * (1.0 - grip), e["observation.state"][:, 5], rtol=0, atol=1e-4)
        # back through the unit mapping: the same float32 values, up to one float32 step of the
        # store's radians (see test_lerobot_values_survive_import_bit_for_bit)
        assert np.allclose(st_, e["observation.state"], rtol=0, atol=1e-5)
        assert np.allclose(ac, e["action"], rtol=0, atol=1e-5)
        assert np.allclose(ep["timestamp"], np.arange(n) / 30.0)
        assert np.array_equal(np.ravel(ep["reward"]), np.ravel(e["next.reward"]))


def test_images_lerobot_wrote_import_within_codec_error(imported):
    im = imported
    at = 0
    for e, ep in zip(im.episodes, im.eps):
        n = len(e["action"])
        for c in CAMS:
            got = ep["image_" + c.rsplit(".", 1)[1]]
            lr = im.theirs["frames"][c][at:at + n]
            assert got.shape == e[c].shape and got.dtype == np.uint8
            if im.video:
                p_orig, p_lr = psnr(got, e[c]), psnr(got, lr)
                print(f"[import video] {c} frames {at}..{at + n - 1}: PSNR {p_orig:.2f} dB vs the frames lerobot "
                      f"was given, {p_lr:.2f} dB vs lerobot's own decoding")
                assert p_orig > MIN_PSNR and p_lr > 45, (c, p_orig, p_lr)
            else:  # PNG in the parquet: lossless
                assert np.array_equal(got, e[c]) and np.array_equal(got, lr)
        at += n


def test_imported_store_exports_back_to_what_lerobot_wrote(imported):
    """lerobot's dataset -> import -> our export -> lerobot: the same frames, tasks and values
    (up to one float32 step in LeRobot's units)."""
    im = imported
    a, t = im.again, im.theirs
    for k in ("task_index", "episode_index", "frame_index", "index"):
        assert np.array_equal(a["frames"][k], t["frames"][k]), k
    assert a["item_tasks"] == t["item_tasks"] and a["tasks"] == t["tasks"]
    for k in ("observation.state", "action"):
        assert np.allclose(a["frames"][k], t["frames"][k], rtol=0, atol=1e-5), k
    for c in CAMS:
        if im.video:
            assert psnr(a["frames"][c], t["frames"][c]) > MIN_PSNR, c
        else:
            assert np.array_equal(a["frames"][c], t["frames"][c]), c


def test_lerobot_values_survive_import_bit_for_bit(imported):
    """LeRobot -> store -> LeRobot is bitwise: the store keeps lerobot's own numbers
    (lerobot_state / lerobot_action) next to the radians, and the export gives them back.
    The radians alone cannot promise that: about 7% of float32 degrees (32% of gripper
    percentages) are no float32 radian's image, so mapped forward they land one float32
    step away at most."""
    im = imported
    theirs = im.theirs["frames"]
    for key, col in (("lerobot_state", "observation.state"), ("lerobot_action", "action")):
        kept = np.concatenate([ep[key] for ep in im.eps])
        assert kept.dtype == np.float32 and np.array_equal(kept, np.concatenate([e[col] for e in im.episodes])), key
        again = np.asarray(im.again["frames"][col])
        bad = again != np.asarray(theirs[col])
        assert not bad.any(), (f"{col} after re-export: {int(bad.sum())} of {bad.size} values differ from lerobot's, "
                               f"e.g. {theirs[col][bad][0]!r} came back as {again[bad][0]!r}")
    states, actions = lerobot_units_of(im)
    for name, got, want in (("observation.state", states, [e["observation.state"] for e in im.episodes]),
                            ("action", actions, [e["action"] for e in im.episodes])):
        got, want = np.concatenate(got), np.concatenate(want)
        # one float32 step of the store's value (rad / closure), times the unit's scale, plus one of lerobot's
        store = np.concatenate([np.concatenate([ep["joint_pos"], ep["gripper"].reshape(-1, 1)], 1) for ep in im.eps]
                               if name == "observation.state" else [ep["action"] for ep in im.eps])
        scale = np.abs(np.asarray(im.summary["unit_map"]["scale"], np.float64))
        tol = scale * np.spacing(np.abs(store).astype(np.float32)) + np.spacing(np.abs(want).astype(np.float32))
        off = np.abs(got.astype(np.float64) - want) / tol
        assert off.max() <= 1.0, f"{name}: the store's values map to lerobot's within {off.max():.2f} of a float32 step"
