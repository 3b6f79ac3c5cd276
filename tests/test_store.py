"""Episode store: round trips, metadata, errors, one-writer lock, torn-tail recovery."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

from robot_rl.data import EpisodeStore, StoreError
from robot_rl.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
SMALL_CHUNKS = {"image_front": 4, "image_wrist": 3, "joint_pos": 8, "action": 5, "reward": 7,
                "timestamp": 6, "gripper": 8, "object_state": 8}


def make_steps(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "joint_pos": rng.normal(size=(n, 6)).astype(np.float32),
        "joint_vel": rng.normal(size=(n, 6)).astype(np.float32),
        "ee_pos": rng.normal(size=(n, 3)).astype(np.float64),
        "gripper": rng.random(n).astype(np.float32),
        "object_state": rng.normal(size=(n, 7)).astype(np.float32),
        "action": rng.normal(size=(n, 7)).astype(np.float32),
        "reward": rng.random(n),
        "success_flag": rng.random(n) > 0.5,
        "image_front": rng.integers(0, 256, (n, 10, 12, 3), dtype=np.uint8),
        "image_wrist": rng.integers(0, 256, (n, 6, 8, 1), dtype=np.uint8),
        "timestamp": 100.0 * seed + np.arange(n) / 20.0,
    }


def record(store: EpisodeStore, steps: dict[str, np.ndarray], task="pick_cube", source="expert",
           success=True, extra=None, commit=True):
    ep = store.start_episode(task, source=source, fps=20.0, extra=extra)
    for t in range(len(steps["timestamp"])):
        ep.add_step({k: v[t] for k, v in steps.items() if k != "timestamp"},
                    timestamp=float(steps["timestamp"][t]))
    return ep.commit(success=success) if commit else ep


def assert_episode(store: EpisodeStore, i: int, steps: dict[str, np.ndarray]) -> None:
    got = store.episode(i)
    assert set(got) == set(steps)
    for k, v in steps.items():
        assert got[k].dtype == v.dtype, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def run_py(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def spec():
    return load_spec("so101")


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("chunks", [None, SMALL_CHUNKS], ids=["default_chunks", "small_chunks"])
def test_round_trip_and_plain_zarr_layout(tmp_path, spec, chunks):
    path = tmp_path / "ds"
    lengths = [5, 13, 1, 30]
    eps = [make_steps(i, n) for i, n in enumerate(lengths)]
    with EpisodeStore.create(path, spec, chunk_steps=chunks) as st:
        for i, steps in enumerate(eps):
            assert record(st, steps, task=["pick_cube", "push"][i % 2], source=["expert", "teleop"][i % 2],
                          success=i != 1, extra={"i": i, "np": np.float32(1.5)}) == i
        assert len(st) == st.n_episodes == 4 and st.n_steps == sum(lengths)
        for i, steps in enumerate(eps):  # readable from the writer too
            assert_episode(st, i, steps)

    st = EpisodeStore.open(path)
    assert st.mode == "r" and len(st) == 4 and st.n_steps == 49
    np.testing.assert_array_equal(st.episode_ends, np.cumsum(lengths))
    assert st.episode_ends.dtype == np.int64
    assert sorted(st.keys) == sorted(eps[0])
    for i, steps in enumerate(eps):
        assert_episode(st, i, steps)
    sub = st.episode(-1, keys=["action"])
    assert list(sub) == ["action"] and np.array_equal(sub["action"], eps[3]["action"])
    m = st.episode_meta(1)
    assert m["task"] == "push" and m["source"] == "teleop" and m["success"] is False
    assert m["fps"] == 20.0 and m["length"] == 13 and (m["start"], m["end"]) == (5, 18)
    assert m["extra"] == {"i": 1, "np": 1.5} and m["start_time"] > 1e9
    assert st.spec == spec and st.spec.fingerprint() == spec.fingerprint()
    assert st.data["image_front"].shape == (49, 10, 12, 3)
    with pytest.raises(IndexError):
        st.episode(4)
    st.close()

    # plain zarr, diffusion_policy style
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["format"] == "robot_rl.episode_store" and root.attrs["format_version"] == 1
    assert root.attrs["robot"]["name"] == "so101" and root.attrs["robot_fingerprint"] == spec.fingerprint()
    assert root.attrs["n_episodes"] == 4 and root.attrs["n_steps"] == 49
    ends = root["meta/episode_ends"][:]
    np.testing.assert_array_equal(ends, np.cumsum(lengths))
    np.testing.assert_array_equal(root["data/action"][ends[0]:ends[1]], eps[1]["action"])
    np.testing.assert_array_equal(root["meta/success"][:], [True, False, True, True])
    assert [str(x) for x in root["meta/task"][:]] == ["pick_cube", "push"] * 2
    assert json.loads(str(root["meta/extra"][2])) == {"i": 2, "np": 1.5}
    img = root["data/image_front"]
    assert img.chunks[0] == (4 if chunks else 64) and img.chunks[1:] == (10, 12, 3)
    cname = img.compressors[0].cname
    assert getattr(cname, "value", cname) == "zstd"  # an enum in zarr 3.1, a str in 3.4
    assert root["data/joint_pos"].chunks[0] == (8 if chunks else 1024)


def test_summary(tmp_path, spec):
    with EpisodeStore.create(tmp_path / "ds", spec) as st:
        record(st, make_steps(0, 10), task="pick_cube", source="expert", success=True)
        record(st, make_steps(1, 20), task="pick_cube", source="teleop", success=False)
        record(st, make_steps(2, 30), task="push", source="teleop", success=True)
        s = st.summary()
    assert s["robot"] == "so101" and s["episodes"] == 3 and s["steps"] == 60
    assert s["success_rate"] == pytest.approx(2 / 3)
    assert s["per_task"]["pick_cube"]["episodes"] == 2
    assert s["per_task"]["pick_cube"]["success_rate"] == 0.5
    assert s["per_task"]["push"] == {"episodes": 1, "successes": 1, "steps": 30, "success_rate": 1.0}
    assert s["per_source"]["teleop"] == 2 and s["per_source"]["expert"] == 1 and s["per_source"]["policy"] == 0
    assert s["duration_s"] == pytest.approx(3.0)
    assert s["keys"]["image_front"]["raw_bytes"] == 60 * 10 * 12 * 3
    assert all(v["bytes"] > 0 for v in s["keys"].values())
    assert set(s["image_compression_ratio"]) == {"image_front", "image_wrist"}
    assert s["image_compression_ratio"]["image_front"] > 0.5  # random pixels barely compress
    assert s["bytes_total"] > s["bytes_data"] > 0


def test_smooth_images_compress(tmp_path, spec):
    n = 64
    yy, xx = np.mgrid[0:48, 0:64]
    frames = np.stack([np.stack([(xx + t) % 256, yy * 2, (xx + yy) // 2], -1) for t in range(n)]).astype(np.uint8)
    with EpisodeStore.create(tmp_path / "ds", spec) as st:
        ep = st.start_episode("x")
        for t in range(n):
            ep.add_step({"image_front": frames[t]})
        ep.commit(success=True)
        assert st.summary()["image_compression_ratio"]["image_front"] > 3
        np.testing.assert_array_equal(st.episode(0)["image_front"], frames)


# ----------------------------------------------------------------------------- reopen / append
def test_reopen_and_append(tmp_path, spec):
    path = tmp_path / "ds"
    eps = [make_steps(i, n) for i, n in enumerate([7, 9, 11, 4])]
    with EpisodeStore.create(path, spec, chunk_steps=SMALL_CHUNKS) as st:
        record(st, eps[0])
        record(st, eps[1])
    with EpisodeStore.open_or_create(path, spec) as st:  # existing: append, chunking kept
        assert len(st) == 2
        assert record(st, eps[2]) == 2
    with EpisodeStore.create(path, spec, exist_ok=True) as st:
        assert record(st, eps[3]) == 3
    with EpisodeStore.open(path, mode="a", spec=spec) as st:
        assert len(st) == 4 and st.schema["image_front"].chunk_steps == 4
        for i, steps in enumerate(eps):
            assert_episode(st, i, steps)
    with EpisodeStore.open_or_create(tmp_path / "new", spec) as st:  # missing: created
        assert len(st) == 0 and st.keys == []


def test_create_over_existing_is_an_error(tmp_path, spec):
    path = tmp_path / "ds"
    with EpisodeStore.create(path, spec) as st:
        record(st, make_steps(0, 3))
    with pytest.raises(StoreError, match="exists and is not empty"):
        EpisodeStore.create(path, spec)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hi")
    with pytest.raises(StoreError, match="exists and is not empty"):
        EpisodeStore.create(other, spec, exist_ok=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with EpisodeStore.create(empty, spec) as st:  # an empty directory is fine
        assert len(st) == 0
    assert [p.name for p in tmp_path.iterdir() if "creating" in p.name] == []


# ----------------------------------------------------------------------------- errors
def test_shape_and_dtype_mismatch_rejected_nothing_lost(tmp_path, spec):
    path = tmp_path / "ds"
    e0, e1 = make_steps(0, 12), make_steps(1, 8)
    with EpisodeStore.create(path, spec, chunk_steps=SMALL_CHUNKS) as st:
        record(st, e0)
        ep = st.start_episode("pick_cube")
        good = lambda t: {k: v[t] for k, v in e1.items() if k != "timestamp"}  # noqa: E731
        for t in range(5):
            ep.add_step(good(t), timestamp=float(e1["timestamp"][t]))
        bad = good(5)
        bad["joint_pos"] = np.zeros(7, np.float32)
        with pytest.raises(StoreError, match=r"'joint_pos' expected shape \(6,\) dtype float32, got shape \(7,\) dtype float32"):
            ep.add_step(bad)
        bad = good(5)
        bad["image_front"] = bad["image_front"].astype(np.float32)
        with pytest.raises(StoreError, match=r"'image_front' expected shape \(10, 12, 3\) dtype uint8, got shape \(10, 12, 3\) dtype float32"):
            ep.add_step(bad)
        bad = good(5)
        del bad["action"]
        with pytest.raises(StoreError, match=r"missing \['action'\]"):
            ep.add_step(bad)
        bad = good(5)
        bad["new_key"] = 1.0
        with pytest.raises(StoreError, match=r"unexpected \['new_key'\]"):
            ep.add_step(bad)
        assert ep.n_steps == 5  # rejected steps went nowhere; the episode goes on
        for t in range(5, 8):
            ep.add_step(good(t), timestamp=float(e1["timestamp"][t]))
        assert ep.commit(success=True) == 1
    with EpisodeStore.open(path) as st:
        assert_episode(st, 0, e0)
        assert_episode(st, 1, e1)
    # after reopening, the committed schema still rules
    with EpisodeStore.open(path, mode="a") as st:
        ep = st.start_episode("pick_cube")
        bad = {k: v[0] for k, v in e1.items() if k != "timestamp"}
        bad["reward"] = np.float32(bad["reward"])
        with pytest.raises(StoreError, match="'reward' expected shape \\(\\) dtype float64, got shape \\(\\) dtype float32"):
            ep.add_step(bad)
        ep.discard()
    with EpisodeStore.open(path) as st:
        assert len(st) == 2
        assert_episode(st, 1, e1)


def test_spec_mismatch(tmp_path, spec):
    path = tmp_path / "ds"
    with EpisodeStore.create(path, spec) as st:
        record(st, make_steps(0, 4))
    before = (path / "zarr.json").read_bytes()
    arm6 = load_spec("arm6")
    for call in (lambda: EpisodeStore.open(path, mode="a", spec=arm6),
                 lambda: EpisodeStore.open(path, spec="arm6"),
                 lambda: EpisodeStore.open_or_create(path, arm6),
                 lambda: EpisodeStore.create(path, arm6, exist_ok=True)):
        with pytest.raises(SpecError) as ei:
            call()
        msg = str(ei.value)
        assert "'so101'" in msg and "'arm6'" in msg and str(path) in msg
    assert (path / "zarr.json").read_bytes() == before
    with EpisodeStore.open(path, mode="a", spec=spec) as st:  # the lock was released each time
        assert len(st) == 1


def test_missing_or_foreign_path(tmp_path):
    with pytest.raises(StoreError, match=r"^no episode store at .*nowhere$"):
        EpisodeStore.open(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="no episode store at"):
        EpisodeStore.open(tmp_path / "nowhere", mode="a")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(StoreError, match="no episode store at .*no zarr.json"):
        EpisodeStore.open(tmp_path / "emptydir")
    zarr.open_group(str(tmp_path / "plain"), mode="w")
    with pytest.raises(StoreError, match="not a robot_rl episode store"):
        EpisodeStore.open(tmp_path / "plain")
    with pytest.raises(StoreError, match="mode must be"):
        EpisodeStore.open(tmp_path / "plain", mode="w")


def test_bad_arguments(tmp_path, spec):
    with EpisodeStore.create(tmp_path / "ds", spec) as st:
        with pytest.raises(StoreError, match="source must be one of"):
            st.start_episode("pick", source="dream")
        with pytest.raises(StoreError, match="task must be a non-empty string"):
            st.start_episode("")
        with pytest.raises(StoreError, match="not JSON serialisable"):
            st.start_episode("pick", extra={"f": object()})
        with pytest.raises(StoreError, match="fps must be a positive"):
            st.start_episode("pick", fps=0)
        ep = st.start_episode("pick")
        assert ep.fps == spec.control_hz
        with pytest.raises(StoreError, match="still being recorded"):
            st.start_episode("pick")
        with pytest.raises(StoreError, match="has no steps"):
            ep.commit(success=True)
        with pytest.raises(StoreError, match="unsupported dtype"):
            ep.add_step({"name": np.array("hello")})
        with pytest.raises(StoreError, match="invalid data key"):
            ep.add_step({"a/b": 1.0})
        with pytest.raises(StoreError, match="timestamp given both"):
            ep.add_step({"x": 1.0, "timestamp": 2.0}, timestamp=3.0)
        ep.add_step({"x": 1.0, "timestamp": 2.0})
        ep.add_step({"x": 2.0})  # wall clock by default
        with pytest.raises(StoreError, match="success must be a bool"):
            ep.commit(success="yes")
        assert ep.commit(success=True, extra={"note": "ok"}) == 0
        with pytest.raises(StoreError, match="already committed or discarded"):
            ep.add_step({"x": 3.0})
        ts = st.episode(0)["timestamp"]
        assert ts[0] == 2.0 and ts[1] > 1e9
    with EpisodeStore.open(tmp_path / "ds") as ro:
        with pytest.raises(StoreError, match="open read-only"):
            ro.start_episode("pick")
    with pytest.raises(StoreError, match="is closed"):
        ro.episode(0)


# ----------------------------------------------------------------------------- one writer
def test_second_writer_is_refused(tmp_path, spec):
    path = tmp_path / "ds"
    st = EpisodeStore.create(path, spec)
    record(st, make_steps(0, 3))
    with pytest.raises(StoreError, match="already open for writing"):
        EpisodeStore.open(path, mode="a")
    with pytest.raises(StoreError, match="already open for writing"):
        EpisodeStore.open_or_create(path, spec)
    r = run_py(f"""
        from robot_rl.data import EpisodeStore, StoreError
        try:
            EpisodeStore.open({str(path)!r}, mode="a")
        except StoreError as e:
            print("REFUSED", e)
        print("READ", len(EpisodeStore.open({str(path)!r})))
    """)
    assert "REFUSED" in r.stdout and "already open for writing" in r.stdout, r.stderr
    assert "READ 1" in r.stdout  # readers need no lock
    st.close()
    with EpisodeStore.open(path, mode="a") as st2:
        assert len(st2) == 1


def test_reader_sees_commits_after_refresh(tmp_path, spec):
    path = tmp_path / "ds"
    with EpisodeStore.create(path, spec, chunk_steps=SMALL_CHUNKS) as st:
        record(st, make_steps(0, 5))
        ro = EpisodeStore.open(path)
        ep = record(st, make_steps(1, 20), commit=False)
        st.flush()  # rows past the end are on disk, but not committed
        assert len(ro) == 1 and ro.n_steps == 5
        ep.commit(success=True)
        assert len(ro) == 1
        ro.refresh()
        assert len(ro) == 2 and ro.n_steps == 25
        assert_episode(ro, 1, make_steps(1, 20))
        ro.close()


# ----------------------------------------------------------------------------- discard
def test_discard(tmp_path, spec):
    path = tmp_path / "ds"
    with EpisodeStore.create(path, spec, chunk_steps=SMALL_CHUNKS) as st:
        # first episode of an empty store discarded: its keys are forgotten
        ep = st.start_episode("pick")
        for t in range(40):
            ep.add_step({"other": np.float32(t), "image_front": np.zeros((4, 4, 3), np.uint8)})
        ep.discard()  # with chunk writes still queued
        st.flush()
        assert not (path / "data" / "other").exists() and not (path / "data" / "image_front").exists()
        e0, e2 = make_steps(0, 9), make_steps(2, 6)
        record(st, e0)
        ep = record(st, make_steps(1, 25), commit=False)  # several chunks past the end
        st.flush()
        ep.discard()
        ep.discard()  # idempotent
        st.flush()
        assert all(st.data[k].shape[0] == 9 for k in st.keys)  # truncated back
        assert record(st, e2) == 1
    with EpisodeStore.open(path) as st:
        assert len(st) == 2 and st.n_steps == 15
        assert_episode(st, 0, e0)
        assert_episode(st, 1, e2)


def test_close_discards_open_episode(tmp_path, spec, caplog):
    path = tmp_path / "ds"
    with caplog.at_level(logging.WARNING, logger="robot_rl.data.store"):
        with EpisodeStore.create(path, spec) as st:
            record(st, make_steps(0, 4))
            record(st, make_steps(1, 4), commit=False)
    assert "closing with episode 1 open (4 steps): discarded" in caplog.text
    with EpisodeStore.open(path) as st:
        assert len(st) == 1 and st.data["action"].shape[0] == 4


def test_long_episode_is_flushed_while_recording(tmp_path, spec):
    """Bounded memory: full chunks leave RAM while the episode is still open."""
    path = tmp_path / "ds"
    with EpisodeStore.create(path, spec, chunk_steps={"image_front": 8, "x": 16, "timestamp": 16}) as st:
        ep = st.start_episode("long")
        for t in range(203):
            ep.add_step({"image_front": np.full((16, 16, 3), t % 256, np.uint8), "x": np.float32(t)})
            assert all(len(b) <= 16 for b in ep._bufs.values())
        st.flush()
        raw = zarr.open_array(str(path / "data" / "image_front"), mode="r")
        assert raw.shape[0] == 200  # 25 full chunks on disk, 3 steps still buffered
        assert st.n_steps == 0 and len(st) == 0  # but nothing is committed
        ep.commit(success=True)
        imgs = st.episode(0)["image_front"]
        assert imgs.shape == (203, 16, 16, 3) and np.array_equal(imgs[:, 0, 0, 0], np.arange(203) % 256)


def test_fsync_data_mode(tmp_path, spec):
    eps = [make_steps(i, n) for i, n in enumerate([6, 17])]
    with EpisodeStore.create(tmp_path / "ds", spec, fsync_data=True, chunk_steps=SMALL_CHUNKS) as st:
        for steps in eps:
            record(st, steps)
    with EpisodeStore.open(tmp_path / "ds") as st:
        for i, steps in enumerate(eps):
            assert_episode(st, i, steps)


# ----------------------------------------------------------------------------- torn tails
def _crash_mid_episode(path: Path, n_committed: int, n_torn: int, chunks=SMALL_CHUNKS) -> None:
    """A child process commits episodes 0..n_committed-1, records n_torn steps of the next
    one (flushed to disk past the committed end), then dies without any cleanup."""
    r = run_py(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import make_steps, record
        from robot_rl.data import EpisodeStore
        st = EpisodeStore.open_or_create({str(path)!r}, "so101", chunk_steps={chunks!r})
        for i in range(len(st), {n_committed}):
            record(st, make_steps(i, 5 + 3 * i))
        ep = record(st, make_steps(99, {n_torn}), commit=False)
        st.flush()
        print("DYING", flush=True)
        os._exit(0)
    """)
    assert "DYING" in r.stdout, r.stderr


def test_torn_tail_past_committed_end_is_dropped(tmp_path, caplog):
    path = tmp_path / "ds"
    _crash_mid_episode(path, n_committed=2, n_torn=23)
    eps = [make_steps(i, 5 + 3 * i) for i in range(2)]
    # the shared chunk was rewritten by the torn episode: committed rows must be intact
    raw = zarr.open_array(str(path / "data" / "timestamp"), mode="r")
    assert raw.shape[0] > 13
    with caplog.at_level(logging.WARNING, logger="robot_rl.data.store"):
        with EpisodeStore.open(path) as st:  # read-only: ignores the tail, changes nothing
            assert len(st) == 2 and st.n_steps == 13
            for i, steps in enumerate(eps):
                assert_episode(st, i, steps)
    assert "ignoring 23 uncommitted steps" in caplog.text  # rows 13..35: every key flushed up to 36
    assert raw.shape[0] == zarr.open_array(str(path / "data" / "timestamp"), mode="r").shape[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robot_rl.data.store"):
        with EpisodeStore.open(path, mode="a") as st:
            assert all(st.data[k].shape[0] == 13 for k in st.keys)
            e2 = make_steps(2, 11)
            assert record(st, e2) == 2
    assert "dropped 23 uncommitted steps" in caplog.text and "2 committed episodes are intact" in caplog.text
    with EpisodeStore.open(path) as st:
        for i, steps in enumerate(eps + [e2]):
            assert_episode(st, i, steps)


def test_torn_first_episode_of_empty_store(tmp_path, caplog):
    path = tmp_path / "ds"
    _crash_mid_episode(path, n_committed=0, n_torn=30)
    assert (path / "data" / "image_front").exists()
    with caplog.at_level(logging.WARNING, logger="robot_rl.data.store"):
        with EpisodeStore.open(path, mode="a") as st:
            assert len(st) == 0 and st.keys == []
            assert [p.name for p in (path / "data").iterdir() if p.is_dir()] == []
            ep = st.start_episode("other keys")  # the store is empty: new keys are fine
            ep.add_step({"q": np.zeros(3)})
            ep.commit(success=False)
    assert "dropped 30 uncommitted steps" in caplog.text
    with EpisodeStore.open(path) as st:
        assert st.keys == ["q", "timestamp"] and st.n_steps == 1


def test_partial_files_are_cleaned_on_append(tmp_path, spec):
    path = tmp_path / "ds"
    e0 = make_steps(0, 10)
    with EpisodeStore.create(path, spec, chunk_steps=SMALL_CHUNKS) as st:
        record(st, e0)
    # what zarr's atomic writes leave behind when killed mid-write
    junk = [path / "zarr.0123abcd.partial", path / "zarr.json.feedbeef.partial",
            path / "data" / "image_front" / "c" / "2" / "0" / "0" / "0.deadbeef.partial",
            path / "data" / "image_front" / "c" / "9" / "0" / "0" / "0.cafe.partial",
            path / "meta" / "episode_ends" / "c" / "0.beef.partial"]
    for j in junk:
        j.parent.mkdir(parents=True, exist_ok=True)
        j.write_bytes(b"\x00garbage" * 10)
    with EpisodeStore.open(path) as st:  # readers do not care
        assert_episode(st, 0, e0)
    with EpisodeStore.open(path, mode="a") as st:
        assert not any(j.exists() for j in junk)
        assert not (path / "data" / "image_front" / "c" / "9").exists()  # orphan chunk dir past the end
        assert record(st, make_steps(1, 7)) == 1
    assert not list(path.rglob("*.partial"))
    with EpisodeStore.open(path) as st:
        assert_episode(st, 0, e0)
        assert_episode(st, 1, make_steps(1, 7))


def test_commit_that_did_not_reach_its_commit_point(tmp_path, spec, caplog):
    """Everything of episode 2 written (data, resized arrays, meta entries) but the commit
    record not replaced: as if killed just before the final rename."""
    path = tmp_path / "ds"
    eps = [make_steps(i, n) for i, n in enumerate([8, 5, 12])]
    with EpisodeStore.create(path, spec, chunk_steps=SMALL_CHUNKS) as st:
        for steps in eps:
            record(st, steps)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["n_episodes"], doc["attributes"]["n_steps"] = 2, 13
    (path / "zarr.json").write_text(json.dumps(doc))
    with EpisodeStore.open(path) as st:
        assert len(st) == 2 and st.n_steps == 13 and list(st.episode_ends) == [8, 13]
        assert_episode(st, 0, eps[0])
        assert_episode(st, 1, eps[1])
        assert st.summary()["episodes"] == 2
    with caplog.at_level(logging.WARNING, logger="robot_rl.data.store"):
        with EpisodeStore.open(path, mode="a") as st:
            assert zarr.open_array(str(path / "meta" / "task"), mode="r").shape == (2,)
            e3 = make_steps(3, 4)
            assert record(st, e3, task="push") == 2
    assert "dropped 12 uncommitted steps" in caplog.text and "1 uncommitted episode entries" in caplog.text
    with EpisodeStore.open(path) as st:
        assert list(st.episode_ends) == [8, 13, 17]
        assert_episode(st, 2, e3)
        assert st.episode_meta(2)["task"] == "push"


def test_corrupt_commit_record_is_reported_not_hidden(tmp_path, spec):
    path = tmp_path / "ds"
    with EpisodeStore.create(path, spec) as st:
        record(st, make_steps(0, 8))
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["n_steps"] = 5  # disagrees with episode_ends
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"corrupt: episode_ends\[0\] = 8 but the commit record says 5"):
        EpisodeStore.open(path, mode="a")
    doc["attributes"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="format version 99"):
        EpisodeStore.open(path)


def test_exit_without_close_leaves_a_clean_store(tmp_path):
    path = tmp_path / "ds"
    r = run_py(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import make_steps, record
        from robot_rl.data import EpisodeStore
        st = EpisodeStore.create({str(path)!r}, "so101", chunk_steps={SMALL_CHUNKS!r})
        record(st, make_steps(0, 9))
        record(st, make_steps(1, 30), commit=False)  # left open, never closed
    """)
    assert r.returncode == 0, r.stderr
    assert "closing with episode 1 open (30 steps): discarded" in r.stderr
    with EpisodeStore.open(path, mode="a") as st:
        assert len(st) == 1 and all(st.data[k].shape[0] == 9 for k in st.keys)
        assert_episode(st, 0, make_steps(0, 9))
    with pytest.raises(StoreError, match="must be a positive int"):
        EpisodeStore.create(tmp_path / "x", "so101", chunk_steps={"a": 0})
