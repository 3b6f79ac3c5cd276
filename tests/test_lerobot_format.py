"""LeRobotDataset v3.0 export / import (robot_rl/data/lerobot*.py) on real files: a store
recorded from the twin's scripted expert with two cameras, synthetic stores of random
values, calibration files written here. The lerobot package itself loads our exports in
the tests that run in its own venv; these need only pyarrow and PyAV."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

from robot_rl.data.lerobot import LeRobotFormatError, export_lerobot, import_lerobot  # noqa: E402
from robot_rl.data.lerobot_units import Linear, unit_map  # noqa: E402
from robot_rl.data.store import EpisodeStore  # noqa: E402
from robot_rl.spec import load_spec  # noqa: E402

H, W = 64, 80  # not square: a height / width swap shows
CAMS = ["front", "wrist"]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """3 scripted pick_cube episodes on the so101 twin, every observation key, two cameras."""
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.experts import rollout_expert
    path = tmp_path_factory.mktemp("rec") / "pick.zarr"
    env = RobotEnv(task="pick_cube", robot="so101", cameras=CAMS, image_size=(W, H),  # (width, height)
                   terminate_on_success=False)
    try:
        with EpisodeStore.create(path, env.robot_spec) as st:
            for seed in range(3):
                ep = st.start_episode(task="pick_cube", source="expert", fps=20.0,
                                      extra={"seed": seed, "action_mode": "ee_delta"})
                t = [100.0 + 7 * seed]  # absolute, irregular-looking stamps: kept exactly

                def on_step(o, a, r, i, ep=ep, t=t):
                    ep.add_step({**o, "action": a, "reward": float(r), "stamp_joint_pos": t[0] - 0.003},
                                timestamp=t[0])
                    t[0] += 0.05
                rollout_expert(env, seed, on_step=on_step, extra_steps=2)
                ep.commit(success=seed != 1, extra={"return": 1.5})
    finally:
        env.close()
    return path


@pytest.fixture(scope="module")
def video_export(recorded, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lr") / "pick_video"
    export_lerobot(recorded, out, progress=False)
    return out


def random_store(path: Path, robot: str = "so101", mode: str = "joint_pos", n: int = 4000, eps: int = 2,
                 seed: int = 0) -> Path:
    """Random float32 joint values over (and past) the spec's range, float64 extras; no images."""
    spec = load_spec(robot)
    rng = np.random.default_rng(seed)
    lo, hi = np.array(spec.lower) - 0.3, np.array(spec.upper) + 0.3
    with EpisodeStore.create(path, spec) as st:
        for e in range(eps):
            ep = st.start_episode(task=f"task {e % 2}", source="teleop", fps=spec.control_hz,
                                  extra={"action_mode": mode})
            for i in range(n):
                q = rng.uniform(lo, hi).astype(np.float32)
                g = np.array([rng.uniform(-0.05, 1.05)], np.float32)
                if mode == "joint_pos":
                    a = np.r_[rng.uniform(lo, hi), rng.uniform(0, 1)].astype(np.float32)
                else:
                    a = rng.uniform(-1, 1, spec.action_dim(mode)).astype(np.float32)
                ep.add_step({"joint_pos": q, "gripper": g, "action": a, "joint_vel": rng.normal(size=spec.dof)
                             .astype(np.float32), "reward": rng.normal(), "count": np.int32(i)},
                            timestamp=1.7e9 + i / spec.control_hz + rng.uniform(0, 1e-3))
            ep.commit(success=bool(e % 2))
    return path


def assert_same_store(a_path: Path, b_path: Path, images: str = "exact") -> dict[str, float]:
    """Numeric keys bitwise, meta equal; image PSNR per key returned (inf when identical)."""
    a, b = EpisodeStore.open(a_path), EpisodeStore.open(b_path)
    assert sorted(a.keys) == sorted(b.keys)
    assert a.n_episodes == b.n_episodes and a.n_steps == b.n_steps
    assert a.episodes_meta() == b.episodes_meta()
    assert a.spec == b.spec or a.spec.fingerprint() == b.spec.fingerprint()
    psnr = {}
    for k, ks in a.schema.items():
        x, y = np.asarray(a.data[k][:a.n_steps]), np.asarray(b.data[k][:b.n_steps])
        assert (x.dtype, x.shape) == (y.dtype, y.shape), k
        if ks.image:
            mse = float(((x.astype(np.float64) - y) ** 2).mean())
            psnr[k] = math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)
            if images == "exact":
                assert mse == 0, k
        else:
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f"{k} differs: max {np.abs(x - y).max()}"
    return psnr


def no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if ".importing-" in p.name or ".exporting-" in p.name]


def rewrite(path: Path, fn) -> None:
    t = pq.read_table(path)
    pq.write_table(fn(t), path)


def set_column(t, name: str, values):
    return t.set_column(t.column_names.index(name), name, pa.array(values, t.schema.field(name).type))


# -- round trips --------------------------------------------------------------------------------
def test_video_export_layout_and_round_trip(recorded, video_export, tmp_path):
    root = video_export
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["total_episodes"] == 3
    assert info["robot_type"] == "so101_follower"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    f = info["features"]
    assert f["observation.state"]["names"] == ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
                                               "wrist_flex.pos", "wrist_roll.pos", "gripper.pos"]
    assert f["observation.images.front"]["dtype"] == "video" and f["observation.images.front"]["shape"] == [H, W, 3]
    assert f["observation.images.front"]["info"]["video.pix_fmt"] == "yuv420p"
    assert f["observation.images.front"]["info"]["video.codec"] == "av1"  # where PyAV has SVT-AV1, as here
    assert f["timestamp"]["dtype"] == "float32" and "next.reward" in f and "robot_rl.stamp_joint_pos" in f
    assert not [n for n, ft in f.items() if "image" in n and ft["dtype"] not in ("image", "video")]
    for key in ("observation.images.front", "observation.images.wrist"):
        assert (root / f"videos/{key}/chunk-000/file-000.mp4").is_file()
    stats = json.loads((root / "meta/stats.json").read_text())
    img = stats["observation.images.wrist"]
    assert set(img) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert np.array(img["mean"]).shape == (3, 1, 1) and 0 <= np.min(img["q01"]) <= np.max(img["q99"]) <= 1
    assert np.array(stats["observation.state"]["q50"]).shape == (6,)
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == [e["dataset_to_index"] - e["dataset_from_index"] for e in eps]
    assert eps[0]["tasks"] == ["pick_cube"] and eps[1]["robot_rl/success"] is False
    assert {"stats/observation.state/q99", "meta/episodes/chunk_index", "data/file_index",
            "videos/observation.images.front/to_timestamp"} <= set(eps[0])
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.num_rows == info["total_frames"] and data.column("index").to_pylist() == list(range(data.num_rows))
    ts = np.array(data.column("timestamp").to_pylist())
    assert np.allclose(ts, np.array(data.column("frame_index").to_pylist()) / 20)

    summary = import_lerobot(root, tmp_path / "back.zarr", robot="so101", progress=False)
    assert summary["warnings"] == [] and summary["episodes"] == 3
    psnr = assert_same_store(recorded, tmp_path / "back.zarr", images="lossy")
    assert min(psnr.values()) > 28, psnr  # AV1 crf 30, yuv420p, 64x80 sim frames


def test_video_timestamps_align_per_episode(recorded, video_export):
    """Decoding each MP4 at an episode's from_timestamp gives that episode's first frame."""
    st = EpisodeStore.open(recorded)
    eps = pq.read_table(video_export / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for cam in CAMS:
        key = f"observation.images.{cam}"
        with av.open(str(video_export / f"videos/{key}/chunk-000/file-000.mp4")) as c:
            s = c.streams.video[0]
            frames = {round(float(fr.pts * fr.time_base) * 20): fr.to_ndarray(format="rgb24") for fr in c.decode(s)}
        assert len(frames) == st.n_steps
        for e, ep in enumerate(eps):
            t0 = ep[f"videos/{key}/from_timestamp"]
            assert t0 == st.episode_meta(e)["start"] / 20
            got = frames[round(t0 * 20)].astype(np.float64)
            first = st.read_frames(f"image_{cam}", [st.episode_meta(e)["start"]])[0]
            err = np.abs(got - first).mean()
            assert err < 6, (cam, e, err)
            if e:  # and not the previous episode's last frame
                prev = st.read_frames(f"image_{cam}", [st.episode_meta(e)["start"] - 1])[0]
                assert err < np.abs(got - prev).mean()


def test_image_mode_is_lossless(recorded, tmp_path):
    out = tmp_path / "pick_images"
    s = export_lerobot(recorded, out, video=False, progress=False)
    assert not s["video"] and not (out / "videos").exists()
    info = json.loads((out / "meta/info.json").read_text())
    assert info["video_path"] is None and info["features"]["observation.images.front"]["dtype"] == "image"
    col = pq.read_table(out / "data/chunk-000/file-000.parquet").column("observation.images.front")
    assert col.type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert col[0].as_py()["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    import_lerobot(out, tmp_path / "back.zarr", robot="so101", progress=False)
    assert_same_store(recorded, tmp_path / "back.zarr", images="exact")


def test_random_joint_values_round_trip_bitwise(tmp_path):
    """8000 random float32 angles / closures / actions through degrees and 0..100: exact."""
    src = random_store(tmp_path / "rand.zarr")
    s = export_lerobot(src, tmp_path / "lr", video=False, progress=False)
    assert s["action_mode"] == "joint_pos" and "deg" in s["units"]
    data = pq.read_table(tmp_path / "lr/data/chunk-000/file-000.parquet")
    assert {"robot_rl.joint_pos", "robot_rl.gripper", "robot_rl.action", "robot_rl.timestamp",
            "observation.count"} <= set(data.column_names)
    import_lerobot(tmp_path / "lr", tmp_path / "back.zarr", robot="so101", progress=False)
    assert_same_store(src, tmp_path / "back.zarr")


def test_unit_map_inverse_and_why_exact_columns_exist():
    """The neighbour-search inverse always lands on a float32 whose forward image is the
    LeRobot value; it cannot always be the original float32 (x -> 57.3 x is many-to-one)."""
    rng = np.random.default_rng(1)
    for lin, lo, hi in [(Linear(180 / math.pi, 0.0), -3.2, 3.2), (Linear(-100.0, 100.0), -0.1, 1.1),
                        (Linear(-1.4306, 123.4), -2.0, 2.0)]:
        x = rng.uniform(lo, hi, 200_000).astype(np.float32)
        v = lin.forward(x)
        back = lin.inverse(v)
        assert np.array_equal(lin.forward(back), v)
        assert (back != x).any()  # so the export keeps the store's own values (robot_rl.*)
    ident = Linear(1.0, 0.0)
    x = rng.normal(size=1000).astype(np.float32)
    assert np.array_equal(ident.inverse(ident.forward(x)), x)


def test_default_units_so101(recorded, video_export):
    st = EpisodeStore.open(recorded)
    data = pq.read_table(video_export / "data/chunk-000/file-000.parquet")
    state = np.array(data.column("observation.state").to_pylist(), np.float64)
    q = np.asarray(st.data["joint_pos"][:st.n_steps], np.float64)
    g = np.asarray(st.data["gripper"][:st.n_steps], np.float64)[:, 0]
    assert np.allclose(state[:, :5], np.degrees(q), atol=1e-4)
    assert np.allclose(state[:, 5], 100 * (1 - g), atol=1e-4)  # LeRobot's gripper: 0 closed .. 100 open
    info = json.loads((video_export / "meta/info.json").read_text())
    u = info["features"]["observation.state"]["robot_rl"]["units"]
    assert u["source"] == "default" and u["units"] == ["deg"] * 5 + ["percent_open"]
    act = info["features"]["action"]
    assert act["names"][:3] == ["ee.dx", "ee.dy", "ee.dz"] and act["robot_rl"]["action_mode"] == "ee_delta"


def test_spec_units_for_arm6(tmp_path):
    src = random_store(tmp_path / "arm6.zarr", robot="arm6", mode="joint_delta", n=300)
    s = export_lerobot(src, tmp_path / "lr", video=False, progress=False)
    assert s["unit_map"]["units"] == ["rad"] * 6 + ["closure"] and s["action_mode"] == "joint_delta"
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["features"]["observation.state"]["names"][0] == "shoulder_pan.pos"
    assert info["features"]["action"]["names"][0] == "shoulder_pan.delta"
    assert not [n for n in info["features"] if n.startswith("robot_rl.joint")]  # identity: nothing to carry
    import_lerobot(tmp_path / "lr", tmp_path / "back.zarr", robot="arm6", progress=False)
    assert_same_store(src, tmp_path / "back.zarr")
    with pytest.raises(LeRobotFormatError, match="no LeRobot counterpart"):
        export_lerobot(src, tmp_path / "lr2", units="lerobot", progress=False)
    assert not (tmp_path / "lr2").exists()


CAL_YAML = """\
format: robot_rl.motor_calibration/1
robot: so101
hardware: so101_follower
role: follower
protocol: feetech
arm_id: unit
resolution: 4096
gripper_travel: 1.75
motors:
  shoulder_pan: {id: 1, model: sts3215, direction: -1, homing_offset: 1187, zero_ticks: 2047.21, range_min: 810, range_max: 3286}
  shoulder_lift: {id: 2, model: sts3215, direction: 1, homing_offset: 10, zero_ticks: 2047.0, range_min: 700, range_max: 3300}
  elbow_flex: {id: 3, model: sts3215, direction: 1, homing_offset: 10, zero_ticks: 1000.0, range_min: 900, range_max: 3100}
  wrist_flex: {id: 4, model: sts3215, direction: -1, homing_offset: 10, zero_ticks: 2047.0, range_min: 800, range_max: 3200}
  wrist_roll: {id: 5, model: sts3215, direction: 1, homing_offset: 10, zero_ticks: 2047.0, range_min: 0, range_max: 4095}
  gripper: {id: 6, model: sts3215, direction: 1, homing_offset: 10, zero_ticks: 2031.0, range_min: 2031, range_max: 3503}
"""
LEROBOT_JSON = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 157, "range_min": 612, "range_max": 3401},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 1105, "range_min": 913, "range_max": 3124},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -2031, "range_min": 828, "range_max": 3209},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 1877, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1234, "range_min": 2031, "range_max": 3503},
}


def test_calibrated_units_by_hand(tmp_path):
    cal = tmp_path / "arm.yaml"
    cal.write_text(CAL_YAML)
    umap = unit_map(load_spec("so101"), calibration=cal)
    # shoulder_pan at 0.5 rad: ticks = 2047.21 - 0.5 * 4096 / (2 pi) = 1721.2607; mid-range (810 + 3286) / 2 = 2048
    # LeRobot degrees = (1721.2607 - 2048) * 360 / 4095 = -28.7243
    # gripper at closure 0.5: ticks = 2031 + 0.5 * 1.75 * 4096 / (2 pi) = 2601.4085; (ticks - 2031) / 1472 * 100 = 38.7506
    v = umap.forward(np.array([[0.5, 0, 0, 0, 0, 0.5]], np.float32))[0]
    assert v[0] == pytest.approx(-28.7243, abs=1e-3)
    assert v[5] == pytest.approx(38.7506, abs=1e-3)
    assert v[2] == pytest.approx((1000.0 - 2000.0) * 360 / 4095, abs=1e-4)  # elbow: spec zero off mid-range
    # export with it, import with it: exact; the state holds the calibrated numbers
    src = random_store(tmp_path / "rand.zarr", n=500, eps=1)
    s = export_lerobot(src, tmp_path / "lr", video=False, calibration=cal, progress=False)
    assert "calibration" in s["units"] and str(cal) in s["unit_map"]["source"]
    state = np.array(pq.read_table(tmp_path / "lr/data/chunk-000/file-000.parquet")
                     .column("observation.state").to_pylist(), np.float32)
    st = EpisodeStore.open(src)
    q0 = np.asarray(st.data["joint_pos"][:1], np.float64)[0, 0]
    assert state[0, 0] == pytest.approx((2047.21 - q0 * 4096 / (2 * math.pi) - 2048) * 360 / 4095, abs=1e-3)
    import_lerobot(tmp_path / "lr", tmp_path / "back.zarr", robot="so101", calibration=cal, progress=False)
    assert_same_store(src, tmp_path / "back.zarr")


def test_lerobot_calibration_json_gripper_direction(tmp_path):
    """With LeRobot's JSON the spec zero is mid-range and the gripper reads 0 closed .. 100 open."""
    p = tmp_path / "my_follower.json"
    p.write_text(json.dumps(LEROBOT_JSON))
    umap = unit_map(load_spec("so101"), calibration=p)
    v = umap.forward(np.array([[0, 0, 0, 0, 0, 0.0], [0.1, 0, 0, 0, 0, 1.0]], np.float32))
    assert v[0, 0] == pytest.approx(0.0, abs=1e-9) and v[1, 0] == pytest.approx(0.1 * 4096 / 4095 * 180 / math.pi,
                                                                                  rel=1e-6)
    assert v[0, 5] == pytest.approx(100.0) and v[1, 5] < v[0, 5]
    assert umap.units[5] == "percent_open"
    with pytest.raises(ValueError, match="hardware"):
        unit_map(load_spec("so101"), calibration=p, hardware="nope")


# -- LeRobot-shaped datasets (no robot_rl metadata) ----------------------------------------------
def strip_ours(root: Path) -> None:
    """Make an export look like lerobot wrote it: no robot_rl keys, columns or episode extras."""
    info = json.loads((root / "meta/info.json").read_text())
    info.pop("robot_rl")
    drop = [n for n in info["features"] if n.startswith("robot_rl.")]
    for n in drop:
        info["features"].pop(n)
    for ft in info["features"].values():
        ft.pop("robot_rl", None)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    for p in (root / "data").glob("*/*.parquet"):
        rewrite(p, lambda t: t.drop_columns(drop))
    for p in (root / "meta/episodes").glob("*/*.parquet"):
        rewrite(p, lambda t: t.drop_columns([c for c in t.column_names if c.startswith("robot_rl/")]))


def test_import_lerobot_shaped_dataset(tmp_path):
    src = random_store(tmp_path / "rand.zarr", n=300)
    shutil.copytree(export_lerobot(src, tmp_path / "lr", video=False, progress=False)["out"], tmp_path / "plain")
    strip_ours(tmp_path / "plain")
    # LeRobot's numbers as a LeRobot arm writes them: any float32 degree / percentage, most of which
    # are no float32 radian's image
    rng = np.random.default_rng(3)
    data_file = tmp_path / "plain/data/chunk-000/file-000.parquet"
    n = pq.read_table(data_file).num_rows
    lr = {c: np.c_[rng.uniform(-110, 110, (n, 5)), rng.uniform(0, 100, n)].astype(np.float32)
          for c in ("observation.state", "action")}
    rewrite(data_file, lambda t: set_column(set_column(t, "observation.state", list(lr["observation.state"])),
                                            "action", list(lr["action"])))
    s = import_lerobot(tmp_path / "plain", tmp_path / "back.zarr", robot="so101", progress=False)
    assert s["action_mode"] == "joint_pos" and s["exact_columns"] == []
    b = EpisodeStore.open(tmp_path / "back.zarr")
    assert sorted(b.keys) == ["action", "count", "gripper", "joint_pos", "joint_vel", "lerobot_action", "lerobot_state",
                              "reward", "timestamp"]
    assert s["carried"] == {"action": "lerobot_action", "state": "lerobot_state"}
    m = b.episode_meta(1)
    assert m["source"] == "converted" and m["success"] and m["extra"]["action_mode"] == "joint_pos"
    assert m["task"] == "task 1" and m["extra"]["lerobot"]["episode_index"] == 1
    assert np.allclose(np.degrees(np.asarray(b.data["joint_pos"][:], np.float64)), lr["observation.state"][:, :5],
                       rtol=0, atol=1e-4)
    assert np.allclose(100 * (1 - np.asarray(b.data["gripper"][:], np.float64)[:, 0]),
                       lr["observation.state"][:, 5], rtol=0, atol=1e-4)
    assert np.array_equal(np.asarray(b.data["lerobot_action"][:]), lr["action"])
    # LeRobot -> store -> LeRobot: bit for bit, through the carried lerobot_* keys where no float32
    # radian maps onto a LeRobot float32 degree (the store's own values are within a float32 step)
    lr_state = np.asarray(b.data["lerobot_state"][:])
    fwd = s["unit_map"]
    from robot_rl.data.lerobot_units import UnitMap
    umap = UnitMap.from_json(fwd)
    mine = umap.forward(np.concatenate([np.asarray(b.data["joint_pos"][:]), np.asarray(b.data["gripper"][:])], 1))
    assert np.array_equal(lr_state, lr["observation.state"])
    assert 0 < (mine != lr_state).sum() < 0.2 * mine.size and np.allclose(mine, lr_state, rtol=0, atol=1e-5)
    export_lerobot(tmp_path / "back.zarr", tmp_path / "again", video=False, progress=False)
    for col in ("observation.state", "action"):
        x = lr[col]
        y = np.array(pq.read_table(tmp_path / "again/data/chunk-000/file-000.parquet").column(col).to_pylist(),
                     np.float32)
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), col
    # an edited store value is exported from the store, not from the stale carried copy
    with EpisodeStore.open(tmp_path / "back.zarr") as st2:
        edited = np.asarray(st2.data["joint_pos"][:])
    edited[0, 0] += 0.25
    shutil.copytree(tmp_path / "back.zarr", tmp_path / "edit.zarr")
    import zarr
    zarr.open_array(str(tmp_path / "edit.zarr/data/joint_pos"), mode="r+")[0] = edited[0]
    export_lerobot(tmp_path / "edit.zarr", tmp_path / "edited", video=False, progress=False)
    z = np.array(pq.read_table(tmp_path / "edited/data/chunk-000/file-000.parquet").column("observation.state")
                 .to_pylist(), np.float32)
    assert z[0, 0] == pytest.approx(math.degrees(edited[0, 0]), abs=1e-4)
    assert np.array_equal(z[1:], lr["observation.state"][1:]) and np.array_equal(z[0, 1:], lr["observation.state"][0, 1:])


# -- errors: one clear line, nothing left behind --------------------------------------------------
def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def expect_import_error(root: Path, out: Path, match: str, robot: str = "so101", **kw) -> None:
    with pytest.raises(LeRobotFormatError, match=match):
        import_lerobot(root, out, robot=robot, progress=False, **kw)
    assert not out.exists()
    no_leftovers(out.parent)


def test_missing_feature_names_it(video_export, tmp_path):
    root = copy_of(video_export, tmp_path / "ds")
    strip_ours(root)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.state"]["names"][5] = "claw.pos"
    (root / "meta/info.json").write_text(json.dumps(info))
    expect_import_error(root, tmp_path / "out.zarr", r"observation.state lacks \['gripper.pos'\].*claw.pos")
    info["features"].pop("action")
    (root / "meta/info.json").write_text(json.dumps(info))
    expect_import_error(root, tmp_path / "out.zarr", r"missing feature 'action'.*observation.state")


@pytest.mark.parametrize("version,match", [("v2.1", "convert it with .*convert_dataset_v21_to_v30"),
                                           ("v3.1", "newer than the v3.0"), ("v4.0", "newer than the v3.0")])
def test_codebase_version(video_export, tmp_path, version, match):
    root = copy_of(video_export, tmp_path / "ds")
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = version
    (root / "meta/info.json").write_text(json.dumps(info))
    expect_import_error(root, tmp_path / "out.zarr", match)


def test_mismatched_video_timestamps(video_export, tmp_path):
    key = "videos/observation.images.wrist/"
    root = copy_of(video_export, tmp_path / "ds")
    ep_file = root / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(ep_file)
    frm = rows.column(key + "from_timestamp").to_pylist()
    to = rows.column(key + "to_timestamp").to_pylist()
    # shifted by a full second (both ends): it overlaps the next episode in the file
    rewrite(ep_file, lambda t: set_column(set_column(t, key + "from_timestamp", [frm[0], frm[1] + 1.0, frm[2]]),
                                          key + "to_timestamp", [to[0], to[1] + 1.0, to[2]]))
    expect_import_error(root, tmp_path / "out.zarr", "mismatched video timestamps: episodes 1 .* and 2 .* overlap")
    # the span disagrees with the episode length
    rewrite(ep_file, lambda t: set_column(set_column(t, key + "from_timestamp", frm), key + "to_timestamp",
                                          [to[0], to[1] - 0.2, to[2]]))
    expect_import_error(root, tmp_path / "out.zarr", r"mismatched video timestamps: episode 1 .* spans")
    # the last episode runs past the end of the file
    rewrite(ep_file, lambda t: set_column(set_column(t, key + "from_timestamp", [frm[0], frm[1], frm[2] + 0.5]),
                                          key + "to_timestamp", [to[0], to[1], to[2] + 0.5]))
    expect_import_error(root, tmp_path / "out.zarr", "mismatched video timestamps")
    # a frame's timestamp (where LeRobot looks the frame up) off by more than half a frame
    rewrite(ep_file, lambda t: set_column(set_column(t, key + "from_timestamp", frm), key + "to_timestamp", to))
    data = root / "data/chunk-000/file-000.parquet"
    ts = pq.read_table(data).column("timestamp").to_pylist()
    rewrite(data, lambda t: set_column(t, "timestamp", ts[:40] + [ts[40] + 0.03] + ts[41:]))
    expect_import_error(root, tmp_path / "out.zarr", r"mismatched video timestamps: episode 1 frame \d+ of")


def test_corrupt_parquet_and_missing_video(video_export, tmp_path):
    root = copy_of(video_export, tmp_path / "ds")
    data = root / "data/chunk-000/file-000.parquet"
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    expect_import_error(root, tmp_path / "out.zarr", r"corrupt parquet file .*file-000.parquet")
    data.write_bytes(raw)
    (root / "videos/observation.images.front/chunk-000/file-000.mp4").unlink()
    expect_import_error(root, tmp_path / "out.zarr", "missing video")
    expect_import_error(tmp_path / "nothing", tmp_path / "out.zarr", "no LeRobot dataset")


def test_wrong_robot_and_existing_output(video_export, tmp_path):
    expect_import_error(video_export, tmp_path / "out.zarr", "recorded with robot spec 'so101'.*'arm6'", robot="arm6")
    (tmp_path / "full.zarr").mkdir()
    (tmp_path / "full.zarr" / "x").write_text("")
    with pytest.raises(LeRobotFormatError, match="exists and is not empty"):
        import_lerobot(video_export, tmp_path / "full.zarr", robot="so101", progress=False)


def test_export_errors_leave_nothing(recorded, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(LeRobotFormatError, match="exists and is not empty"):
        export_lerobot(recorded, tmp_path / "full", progress=False)
    with pytest.raises(LeRobotFormatError, match="action has shape .*joint_pos.*pass action_mode="):
        export_lerobot(recorded, tmp_path / "o1", action_mode="joint_pos", progress=False)
    with pytest.raises(LeRobotFormatError, match="does not match"):
        export_lerobot(recorded, tmp_path / "o2", robot="arm6", progress=False)
    with pytest.raises(LeRobotFormatError, match="vcodec"):
        export_lerobot(recorded, tmp_path / "o3", vcodec="vp9", progress=False)
    spec = load_spec("so101")
    with EpisodeStore.create(tmp_path / "noaction.zarr", spec) as st:
        ep = st.start_episode(task="t", source="teleop")
        ep.add_step({"joint_pos": np.zeros(5, np.float32), "gripper": np.zeros(1, np.float32)}, timestamp=0.0)
        ep.commit(success=True)
    with pytest.raises(LeRobotFormatError, match="no 'action' key"):
        export_lerobot(tmp_path / "noaction.zarr", tmp_path / "o4", progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o")]
    no_leftovers(tmp_path)


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_commands(recorded, tmp_path, capsys):
    from robot_rl.cli.common import CLIError
    from robot_rl.cli.lerobot import cmd_export_lerobot, cmd_import_lerobot
    out = tmp_path / "lr"
    assert cmd_export_lerobot([str(recorded), str(out), "repo_id=me/pick", "video=false", "progress=false"]) == 0
    text = capsys.readouterr().out
    assert "3 episodes" in text and "me/pick" in text and "gripper 0 closed..100 open" in text
    assert cmd_import_lerobot([str(out), str(tmp_path / "back.zarr"), "robot=so101", "progress=false"]) == 0
    assert "3 episodes" in capsys.readouterr().out
    assert_same_store(recorded, tmp_path / "back.zarr")
    with pytest.raises(CLIError, match="needs robot=NAME"):
        cmd_import_lerobot([str(out), str(tmp_path / "b2.zarr")])
    with pytest.raises(CLIError, match="exists and is not empty"):
        cmd_import_lerobot([str(out), str(tmp_path / "back.zarr"), "robot=so101"])
    with pytest.raises(CLIError, match="needs STORE OUT_DIR"):
        cmd_export_lerobot([str(recorded)])
    with pytest.raises(CLIError, match="unknown setting 'bogus'"):
        cmd_export_lerobot([str(recorded), str(tmp_path / "x"), "bogus=1"])


def test_files_roll_over(recorded, tmp_path):
    """Tiny size limits: one data, video and episodes file per episode; the import follows them."""
    out = tmp_path / "multi"
    export_lerobot(recorded, out, data_file_mb=1e-6, video_file_mb=1e-6, progress=False)
    assert len(list((out / "data").glob("*/*.parquet"))) == 3
    # the encoder holds a few frames back, so an MP4 may take one more episode than its limit
    assert len(list((out / "videos/observation.images.front").glob("*/*.mp4"))) >= 2
    assert len(list((out / "meta/episodes").glob("*/*.parquet"))) == 3
    eps = [r for p in sorted((out / "meta/episodes").glob("*/*.parquet")) for r in pq.read_table(p).to_pylist()]
    k = "videos/observation.images.wrist/"
    assert eps[-1][k + "file_index"] >= 1
    for prev, e in zip(eps, eps[1:]):  # back to back within a file, from 0 in a new one
        assert e[k + "from_timestamp"] == (prev[k + "to_timestamp"] if e[k + "file_index"] == prev[k + "file_index"]
                                           else 0.0)
    assert [e["data/file_index"] for e in eps] == [0, 1, 2] and [e["meta/episodes/file_index"] for e in eps] == [0, 1, 2]
    import_lerobot(out, tmp_path / "back.zarr", robot="so101", progress=False)
    assert min(assert_same_store(recorded, tmp_path / "back.zarr", images="lossy").values()) > 28


def test_h264_round_trip(recorded, tmp_path):
    """vcodec=h264: libx264 without B-frames (pts == dts), crf 23."""
    s = export_lerobot(recorded, tmp_path / "h264", vcodec="h264", progress=False)
    assert s["vcodec"] == "libx264"
    info = json.loads((tmp_path / "h264/meta/info.json").read_text())
    assert info["features"]["observation.images.wrist"]["info"]["video.codec"] == "h264"
    import_lerobot(tmp_path / "h264", tmp_path / "back.zarr", robot="so101", progress=False)
    assert min(assert_same_store(recorded, tmp_path / "back.zarr", images="lossy").values()) > 28
