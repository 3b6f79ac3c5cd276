"""Recording contract, aligner, bag <-> episode store converters (no DDS)."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

import bagdata
from bagdata import NS
from robot_rl.data.bag import BagError, JointStateDecoder, open_bag, typestore
from robot_rl.data.contract import (Aligner, Contract, ContractError, EmptyEpisodeError, EpisodeAssembler,
                                    from_ns, to_ns)
from robot_rl.data.convert import ConvertError, bag_to_store, store_to_bag
from robot_rl.data.store import EpisodeStore


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def session():
    return bagdata.make_session(discard_one=True)


@pytest.fixture(scope="module")
def bags(session, tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    return {
        "rosbags_mcap_jazzy": bagdata.write_rosbags(session, d / "a_mcap"),
        "rosbags_sqlite_humble": bagdata.write_rosbags(session, d / "b_sqlite", storage="sqlite3", distro="humble",
                                                       humble_like=True),
        "rosbags_sqlite_jazzy": bagdata.write_rosbags(session, d / "b2_sqlite", storage="sqlite3"),
        "mcap_ros2_bare": bagdata.write_mcap_ros2(session, d / "c_bare.mcap"),
        "mcap_ros2_dir": bagdata.write_mcap_ros2(session, d / "c_dir", rosbag2_dir=True),
    }


@pytest.fixture(scope="module")
def converted(bags, tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    out = {}
    for name, bag in bags.items():
        rep = bag_to_store(bag, d / f"{name}.zarr", robot="so101")
        out[name] = (rep, d / f"{name}.zarr")
    return out


def leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if "converting" in p.name or "writing" in p.name]


# ---------------------------------------------------------------------------------------
# contract
# ---------------------------------------------------------------------------------------
def test_sim_contract_binds_to_robot():
    c = Contract.load("sim")
    b = c.bind("so101")
    assert b.fps == 20.0
    assert b.keys == ["joint_pos", "joint_vel", "gripper", "ee_pos", "ee_quat", "image_front", "image_wrist",
                      "object_state", "action", "reward"]
    assert "/camera/wrist/image_raw" in b.topics
    assert b.topic_of("gripper").topic == "/joint_states"
    assert b.topics["/camera/front/image_raw"].policy == "drop"
    assert b.topics["/camera/front/image_raw"].qos == "sensor"
    one = c.bind("so101", cameras=["front"], fps=10)
    assert "/camera/wrist/image_raw" not in one.topics and one.fps == 10
    assert Contract.load(c.source) == c  # by path too
    assert Contract.from_dict(c.to_dict()).bind("arm6").keys == c.bind("arm6").keys


BASE = {"name": "t", "topics": [{"topic": "/joint_states", "type": "sensor_msgs/msg/JointState",
                                 "fields": {"joint_pos": "position"}}]}


def _with(**topic):
    d = {"name": "t", "topics": [{**BASE["topics"][0], **topic}]}
    return d


@pytest.mark.parametrize("d, match", [
    ({**BASE, "colour": 1}, "unknown keys \\['colour'\\]"),
    ({"name": "t", "topics": []}, "non-empty list"),
    (_with(type="sensor_msgs/msg/Imu"), "unsupported message type 'sensor_msgs/msg/Imu'"),
    (_with(fields={"joint_pos": "positions"}), "unknown field 'positions' for sensor_msgs/msg/JointState"),
    (_with(policy="newest"), "policy must be one of"),
    (_with(qos="best"), "qos must be one of"),
    (_with(rate=-5), "rate must be > 0"),
    (_with(topic="joint_states"), "absolute topic name"),
    (_with(fields={"timestamp": "position"}), "invalid dataset key"),
    (_with(fields={"q": {"field": "position", "dtype": "float128x"}}), "unknown dtype"),
    ({"name": "t", "topics": [BASE["topics"][0], BASE["topics"][0]]}, "listed twice"),
    ({"name": "t", "topics": [BASE["topics"][0], {"topic": "/other", "type": "std_msgs/Float32",
                                                  "fields": {"joint_pos": "data"}}]}, "comes from both"),
    ({"name": "t", "latency": 0.05, "topics": [{"topic": "/c", "type": "sensor_msgs/msg/Image", "policy": "drop",
                                                "tolerance": 0.2, "fields": {"im": "rgb"}}]}, "raise latency"),
])
def test_contract_validation(d, match):
    with pytest.raises(ContractError, match=match):
        Contract.from_dict(d)


def test_contract_errors_at_load_and_bind(tmp_path):
    with pytest.raises(ContractError, match="unknown contract 'nope'; available: .*sim"):
        Contract.load("nope")
    with pytest.raises(ContractError, match="not found"):
        Contract.load(tmp_path / "x.yaml")
    (tmp_path / "bad.yaml").write_text("topics: [oops")
    with pytest.raises(ContractError, match="cannot read YAML"):
        Contract.load(tmp_path / "bad.yaml")
    c = Contract.from_dict(_with(fields={"j": "position[elbow]"}))
    with pytest.raises(ContractError, match="names a joint that robot 'so101' does not have"):
        c.bind("so101")


# ---------------------------------------------------------------------------------------
# aligner
# ---------------------------------------------------------------------------------------
def _contract(policy: str, **kw):
    return Contract.from_dict({"name": "t", "fps": 10, "latency": 0.1, "topics": [
        {"topic": "/a", "type": "std_msgs/msg/Float32", "policy": policy, "fields": {"a": "data"}, **kw}]}
    ).bind("so101")


def _run(aligner, msgs, start, stop):
    aligner.start(start)
    out = []
    for st in msgs:
        out += aligner.advance(st)
        aligner.push("/a", st, {"a": np.float32(st / NS)})
    aligner.stop(stop)
    return out + aligner.flush()


MS = 1_000_000


def test_aligner_latest_skips_stale_steps():
    al = Aligner(_contract("latest", max_age=0.15))
    msgs = [0, 90 * MS, 250 * MS, 260 * MS, 800 * MS]  # nothing between 260 and 800 ms
    steps = _run(al, msgs, 0, 1000 * MS)
    got = {s.t_ns // MS: s.stamps_ns["a"] // MS for s in steps}
    # t=0 -> 0; 100 -> 90; 200 -> 90 (age 110 <= 150); 300 -> 260; 400 -> 260 (age 140); 500..700 and
    # 1000 (age 200) stale
    assert got == {0: 0, 100: 90, 200: 90, 300: 260, 400: 260, 800: 800, 900: 800}
    assert al.stats.skipped["stale"] == {"/a": 4} and al.stats.grid_steps == 11 and al.stats.steps == 7
    assert al.stats.to_dict()["max_age_s"]["/a"] == pytest.approx(0.14)


def test_aligner_hold_keeps_and_flags():
    al = Aligner(_contract("hold", max_age=0.15))
    steps = _run(al, [50 * MS, 600 * MS], 0, 700 * MS)
    got = {s.t_ns // MS: s.stamps_ns["a"] // MS for s in steps}
    assert got == {100: 50, 200: 50, 300: 50, 400: 50, 500: 50, 600: 600, 700: 600}
    assert al.stats.skipped["missing"] == {"/a": 1}  # t=0: nothing yet
    assert al.stats.held == {"/a": 3}  # 300, 400, 500 ms: older than 150 ms


def test_aligner_drop_takes_nearest_within_tolerance():
    al = Aligner(_contract("drop", tolerance=0.03))
    steps = _run(al, [10 * MS, 95 * MS, 125 * MS, 220 * MS, 380 * MS], 0, 400 * MS)
    got = {s.t_ns // MS: s.stamps_ns["a"] // MS for s in steps}
    # 0 -> 10; 100 -> 95 (nearest of 95/125); 200 -> 220 (ahead); 300 none; 400 -> 380
    assert got == {0: 10, 100: 95, 200: 220, 400: 380}
    assert al.stats.skipped["no_match"] == {"/a": 1}


def test_aligner_values_are_decoded_lazily_and_out_of_order_is_fine():
    al = Aligner(_contract("latest"))
    calls = []

    def thunk(v):
        return lambda: calls.append(v) or {"a": np.float32(v)}
    al.start(0)
    for st in (0, 30, 60, 90, 120, 80):  # ms; 80 arrives late but before step 100 is due
        al.push("/a", st * MS, thunk(st))
    al.stop(100 * MS)
    steps = al.flush()
    assert [float(s.values["a"]) for s in steps] == [0.0, 90.0]
    assert sorted(calls) == [0, 90]  # nothing else decoded


def test_live_and_offline_feeding_give_the_same_steps():
    """Ticks at arbitrary times between messages (live timer) change nothing."""
    bound = Contract.load("sim").bind("so101", cameras=["front"])
    rng = random.Random(0)
    msgs = []
    for topic, rate, lat in (("/joint_states", 100, 2), ("/ee_pose", 50, 3), ("/camera/front/image_raw", 30, 8),
                             ("/object_state", 10, 0), ("/action", 20, 0), ("/reward", 20, 0)):
        for k in range(int(3 * rate)):
            log = int(k * NS / rate) + rng.randrange(0, 4 * MS)
            msgs.append((log, topic, log - lat * MS))
    msgs.sort()

    def run(ticks: bool):
        al = Aligner(bound)
        out = []
        al.start(200 * MS)
        stopped = False
        for log, topic, st in msgs:
            if ticks:
                out += al.advance(log - rng.randrange(0, 5 * MS))
            out += al.advance(log)
            if not stopped and log > 2500 * MS:
                al.stop(2500 * MS)
                stopped = True
            al.push(topic, st, {k: np.float32(st) for k in bound.topics[topic].keys})
        return [(s.t_ns, sorted(s.stamps_ns.items())) for s in out + al.flush()]

    a, b = run(False), run(True)
    assert a == b and len(a) > 40


def test_assembler_events():
    bound = Contract.from_dict({"name": "t", "fps": 10, "latency": 0.0, "topics": [
        {"topic": "/a", "type": "std_msgs/msg/Float32", "policy": "hold", "fields": {"a": "data"}}]}).bind("so101")

    class Sink:
        def __init__(self):
            self.log = []

        def begin(self, ep):
            self.log.append(("begin", ep.number, ep.task, dict(ep.args)))

        def step(self, ep, s):
            self.log.append(("step", ep.number, s.t_ns // MS))

        def end(self, ep, success, stats):
            self.log.append(("end", ep.number, success, stats.steps))

        def discard(self, ep, reason):
            self.log.append(("discard", ep.number, reason))

    sink = Sink()
    asm = EpisodeAssembler(bound, sink, task="default")
    t = 0
    for ms in range(0, 3000, 50):
        asm.message("/a", ms * MS, {"a": np.float32(ms)}, ms * MS)
        t = ms
        ev = {100: "start task=pour%20tea seed=3", 300: "success", 500: "start", 600: "discard",
              700: "start", 800: "rerecord", 950: "failure", 1100: "bogus", 1200: "success", 1300: "start"}.get(ms)
        if ev:
            asm.event(ev, ms * MS)
    asm.close(t * MS)
    kinds = [e for e in sink.log if e[0] != "step"]
    assert kinds == [("begin", 0, "pour tea", {"seed": "3"}), ("end", 0, True, 3),
                     ("begin", 1, "default", {}), ("discard", 1, "discard"),
                     ("begin", 2, "default", {}), ("discard", 2, "rerecord"),
                     ("begin", 3, "default", {}), ("end", 3, False, 2),
                     ("begin", 4, "default", {}), ("discard", 4, "end of stream")]
    assert [e[2] for e in sink.log if e[0] == "step" and e[1] == 0] == [100, 200, 300]
    assert any("bogus" in w for w in asm.warnings) and any("no episode recording" in w for w in asm.warnings)


# ---------------------------------------------------------------------------------------
# fast JointState path
# ---------------------------------------------------------------------------------------
def test_joint_state_decoder_matches_generic_deserializer():
    ts = typestore("jazzy")
    JS, H, T = (ts.types[n] for n in ("sensor_msgs/msg/JointState", "std_msgs/msg/Header",
                                      "builtin_interfaces/msg/Time"))
    rng = np.random.default_rng(1)
    dec = JointStateDecoder(fallback=lambda raw: ts.deserialize_cdr(raw, "sensor_msgs/msg/JointState"))
    for i in range(300):
        n = int(rng.integers(0, 8)) if i % 50 < 25 else 6  # runs of one layout, then variety
        names = [("j" * int(rng.integers(1, 6))) + str(k) for k in range(n)]
        if i % 3:
            names = ["shoulder_pan", "shoulder_lift", "elbow_flex"][:n] + names[3:]
        arr = lambda: rng.standard_normal(n if rng.random() < 0.7 else 0)  # noqa: E731
        m = JS(header=H(stamp=T(sec=int(rng.integers(0, 2 ** 31)), nanosec=int(rng.integers(0, NS))),
                        frame_id="f" * int(rng.integers(0, 5))), name=names, position=arr(), velocity=arr(),
               effort=arr())
        le = bytes(ts.serialize_cdr(m, "sensor_msgs/msg/JointState"))
        be = bytes(ts.serialize_cdr(m, "sensor_msgs/msg/JointState", little_endian=False))
        for raw in (le, be, le, le):  # repeats take the cached-layout path
            got = dec(raw)
            assert list(got.name) == names and got.header.frame_id == m.header.frame_id
            assert got.header.stamp.sec == m.header.stamp.sec and got.header.stamp.nanosec == m.header.stamp.nanosec
            for a in ("position", "velocity", "effort"):
                np.testing.assert_array_equal(getattr(got, a), getattr(m, a))


# ---------------------------------------------------------------------------------------
# bag -> store
# ---------------------------------------------------------------------------------------
def test_converted_episodes_follow_events_and_values_match_their_stamps(session, converted):
    rep, path = converted["rosbags_mcap_jazzy"]
    assert rep["episodes"] == 3 and rep["successes"] == 2 and rep["discarded_episodes"] == 1
    assert rep["typestore"] == "jazzy" and rep["storage"] == "mcap"
    bound = Contract.load("sim").bind("so101")
    kept = [e for e in session.episodes if e.outcome != "discard"]
    st = EpisodeStore.open(path)
    assert st.spec.name == "so101"
    stamps = {t: session.stamps(t) for t in bound.topics}
    for i, truth in enumerate(kept):
        meta = st.episode_meta(i)
        assert meta["success"] == (truth.outcome == "success") and meta["task"] == "pick_cube"
        assert meta["source"] == "converted" and meta["extra"]["seed"] == int(truth.args["seed"])
        assert meta["extra"]["align"]["skipped_steps"] == 0
        ep = st.episode(i)
        n = int((truth.end_ns - truth.start_ns) // (NS // 20)) + 1
        assert len(ep["timestamp"]) == n
        t_ns = truth.start_ns + np.arange(n) * (NS // 20)
        np.testing.assert_array_equal(ep["timestamp"], [from_ns(int(t)) for t in t_ns])
        exact = {}  # stamp_<key> is float64 s: ~0.24 us resolution at epoch times -> the exact message stamp
        for k in bound.keys:
            tb = bound.topic_of(k)
            cand = stamps[tb.topic]
            stored = np.array([to_ns(x) for x in ep[f"stamp_{k}"]])
            used = cand[np.abs(cand[None, :] - stored[:, None]).argmin(axis=1)]
            assert np.abs(used - stored).max() < 1000
            exact[k] = used
            for t, u in zip(t_ns, used):
                if tb.policy == "drop":  # nearest
                    assert u == cand[np.argmin(np.abs(cand - t))] and abs(u - t) <= tb.tolerance_ns
                else:  # newest at or before t
                    assert u == cand[cand <= t].max()
                    assert tb.policy == "hold" or t - u <= tb.max_age_ns
        for j, u in enumerate(exact["joint_pos"]):
            pos, vel = bagdata.joint_values(u, 5)
            np.testing.assert_array_equal(ep["joint_pos"][j], pos.astype(np.float32))
            np.testing.assert_array_equal(ep["joint_vel"][j], vel.astype(np.float32))
            assert ep["gripper"][j, 0] == np.float32(bagdata.gripper_value(u))
        for j, u in enumerate(exact["ee_pos"]):
            p, q = bagdata.pose_values(u)
            np.testing.assert_array_equal(ep["ee_pos"][j], p.astype(np.float32))
            np.testing.assert_array_equal(ep["ee_quat"][j], q.astype(np.float32))
        for cam in ("front", "wrist"):
            for j, u in enumerate(exact[f"image_{cam}"]):
                np.testing.assert_array_equal(ep[f"image_{cam}"][j], bagdata.image_values(u, (12, 16), cam))
        for j, u in enumerate(exact["action"]):
            np.testing.assert_array_equal(ep["action"][j], bagdata.array_values(u, 7, 2.0))
            assert ep["reward"].dtype == np.float64
    st.close()


def test_every_bag_flavour_converts_to_the_same_dataset(converted):
    ref_rep, ref = converted["rosbags_mcap_jazzy"]
    a = EpisodeStore.open(ref)
    for name, (rep, path) in converted.items():
        assert rep["episodes"] == 3, name
        b = EpisodeStore.open(path)
        assert b.schema == a.schema, name
        for i in range(3):
            ea, eb = a.episode(i), b.episode(i)
            for k in ea:
                np.testing.assert_array_equal(ea[k], eb[k], err_msg=f"{name}: {k}")
            assert a.episode_meta(i)["success"] == b.episode_meta(i)["success"]
        b.close()
    a.close()
    assert converted["rosbags_sqlite_humble"][0]["typestore"] == "humble"
    assert converted["rosbags_sqlite_humble"][0]["storage"] == "sqlite3"
    assert converted["mcap_ros2_bare"][0]["storage"] == "mcap"


def test_humble_bag_has_no_definitions_and_uses_the_humble_typestore(bags):
    with open_bag(bags["rosbags_sqlite_humble"]) as b:
        assert not any(t.has_definition for t in b.topics.values())
        assert b.distro == "humble" and b.metadata_distro is None
    with open_bag(bags["mcap_ros2_bare"]) as b:
        assert all(t.has_definition for t in b.topics.values())
        assert b.typestore_for("sensor_msgs/msg/JointState") is not typestore("jazzy")  # the bag's own definitions


def test_split_by_gaps(tmp_path):
    s = bagdata.make_session(outcomes=("success", "success"), ep_s=1.0, gap_s=1.5, silent_gaps=True, events=False)
    bag = bagdata.write_rosbags(s, tmp_path / "gaps")
    rep = bag_to_store(bag, tmp_path / "g.zarr", robot="so101", split="gaps", gap_s=0.5, task="wipe")
    assert rep["episodes"] == 2 and rep["successes"] == 0
    st = EpisodeStore.open(tmp_path / "g.zarr")
    for i, e in enumerate(s.episodes):
        m = st.episode_meta(i)
        assert m["task"] == "wipe" and m["extra"]["split"] == "gaps"
        ts = st.episode(i, keys=["timestamp"])["timestamp"]
        # sensors run from 0.2 s before the start to 0.1 s after the end
        assert e.start_ns - 0.2 * NS <= ts[0] * NS <= e.start_ns and ts[-1] * NS >= e.end_ns
    with pytest.raises(ConvertError, match="event topic /teleop/event"):
        bag_to_store(bag, tmp_path / "e.zarr", robot="so101")
    assert not (tmp_path / "e.zarr").exists()


def test_split_by_times(bags, tmp_path):
    rep = bag_to_store(bags["rosbags_mcap_jazzy"], tmp_path / "t.zarr", robot="so101", split="times",
                       times="[[1.0, 2.0], [4.0, 4.5]]")
    assert rep["episodes"] == 2
    st = EpisodeStore.open(tmp_path / "t.zarr")
    assert [st.episode_meta(i)["length"] for i in range(2)] == [21, 11]
    with pytest.raises(ConvertError, match="overlap"):
        bag_to_store(bags["rosbags_mcap_jazzy"], tmp_path / "t2.zarr", robot="so101", split="times",
                     times=[[1, 3], [2, 4]])
    with pytest.raises(ConvertError, match="bad time range"):
        bag_to_store(bags["rosbags_mcap_jazzy"], tmp_path / "t2.zarr", robot="so101", split="times", times=[[3, 1]])


# ---------------------------------------------------------------------------------------
# store -> bag -> store
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    return bagdata.make_sim_store(tmp_path_factory.mktemp("sim") / "sim.zarr", episodes=3, steps=25)


def _assert_same(a_path, b_path, ts_tol=0.0):
    a, b = EpisodeStore.open(a_path), EpisodeStore.open(b_path)
    assert len(a) == len(b)
    for i in range(len(a)):
        ea, eb = a.episode(i), b.episode(i)
        ma, mb = a.episode_meta(i), b.episode_meta(i)
        assert (ma["success"], ma["task"], ma["length"]) == (mb["success"], mb["task"], mb["length"])
        assert mb["extra"]["seed"] == ma["extra"]["seed"]
        for k, v in ea.items():
            assert eb[k].dtype == v.dtype, k
            if k == "timestamp" or k.startswith("stamp_"):
                assert np.max(np.abs(eb[k] - v)) <= ts_tol, k  # ns resolution of ROS time
            else:
                np.testing.assert_array_equal(eb[k], v, err_msg=k)  # exact
    a.close()
    b.close()


@pytest.mark.parametrize("out, kw", [("rt.mcap", {}), ("rt_dir", {}), ("rt_sqlite", {"storage": "sqlite3"}),
                                     ("rt.db3", {}), ("rt_humble.mcap", {"distro": "humble"})])
def test_store_bag_store_round_trip_is_exact(sim_store, tmp_path, out, kw):
    rep = store_to_bag(sim_store, tmp_path / out, **kw)
    assert rep["episodes"] == 3 and rep["topics"]["/reward"] == "std_msgs/msg/Float64"  # float64 reward kept
    assert rep["topics"]["/action"] == "std_msgs/msg/Float32MultiArray"
    bag_to_store(tmp_path / out, tmp_path / "back.zarr", robot="so101")
    _assert_same(sim_store, tmp_path / "back.zarr", ts_tol=1e-9)
    assert leftovers(tmp_path) == []


def test_round_trip_keeps_per_sensor_stamps(tmp_path):
    src = bagdata.make_sim_store(tmp_path / "s.zarr", episodes=2, steps=12, image_hw=(8, 8), with_stamps=True)
    store_to_bag(src, tmp_path / "s.mcap")
    bag_to_store(tmp_path / "s.mcap", tmp_path / "back.zarr", robot="so101")
    _assert_same(src, tmp_path / "back.zarr", ts_tol=1e-9)
    # and once more: a converted store (absolute stamps) goes round exactly, stamps included
    store_to_bag(tmp_path / "back.zarr", tmp_path / "again", storage="sqlite3")
    bag_to_store(tmp_path / "again", tmp_path / "again.zarr", robot="so101")
    _assert_same(tmp_path / "back.zarr", tmp_path / "again.zarr")


# ---------------------------------------------------------------------------------------
# bad input: one clear error, nothing written
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_session():
    return bagdata.make_session(outcomes=("success",), ep_s=1.0, gap_s=0.5, image_hw=(4, 4))


def _expect_error(bag, tmp_path, match, exc=(BagError, ConvertError), **kw):
    with pytest.raises(exc, match=match) as ei:
        bag_to_store(bag, tmp_path / "out.zarr", robot="so101", **kw)
    assert not (tmp_path / "out.zarr").exists() and leftovers(tmp_path) == []
    return str(ei.value)


def test_truncated_mcap(small_session, tmp_path):
    bag = bagdata.write_rosbags(small_session, tmp_path / "cut")
    f = next(bag.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    msg = _expect_error(bag, tmp_path, "truncated or corrupt")
    assert f.name in msg
    bare = bagdata.write_mcap_ros2(small_session, tmp_path / "cut.mcap")
    bare.write_bytes(bare.read_bytes()[: bare.stat().st_size // 2])
    _expect_error(bare, tmp_path, "cut.mcap: cannot open bag: the mcap file is truncated")


def test_garbage_sqlite(small_session, tmp_path):
    bag = bagdata.write_rosbags(small_session, tmp_path / "junk", storage="sqlite3")
    db = next(bag.glob("*.db3"))
    db.write_bytes(os.urandom(db.stat().st_size))
    _expect_error(bag, tmp_path, "junk.db3.*sqlite3 database is corrupt")
    bag2 = bagdata.write_rosbags(small_session, tmp_path / "junk2", storage="sqlite3")
    db = next(bag2.glob("*.db3"))
    data = bytearray(db.read_bytes())
    data[len(data) // 3: len(data) // 3 + 8192] = os.urandom(8192)
    db.write_bytes(bytes(data))
    _expect_error(bag2, tmp_path, "junk2.*(corrupt|cannot)")


def test_missing_metadata(small_session, tmp_path):
    bag = bagdata.write_rosbags(small_session, tmp_path / "nometa")
    (bag / "metadata.yaml").unlink()
    _expect_error(bag, tmp_path, "metadata.yaml is missing; it holds nometa.mcap")
    _expect_error(tmp_path / "nothing_here", tmp_path, "no such bag")


def test_contract_topic_missing_from_bag(small_session, tmp_path):
    s = bagdata.Session(**{**small_session.__dict__,
                           "msgs": [m for m in small_session.msgs if m.topic != "/ee_pose"],
                           "topics": {t: v for t, v in small_session.topics.items() if t != "/ee_pose"}})
    bag = bagdata.write_rosbags(s, tmp_path / "noee")
    _expect_error(bag, tmp_path, r"topic\(s\) /ee_pose of contract sim are missing from the bag")


def test_unknown_message_type(small_session, tmp_path):
    from rosbags.typesys import get_types_from_msg
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_HUMBLE)
    ts.register(get_types_from_msg("float32[] values", "my_msgs/msg/Weird"))
    from rosbags.rosbag2 import StoragePlugin, Writer
    bag = tmp_path / "weird"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conns = {t: w.add_connection(t, "my_msgs/msg/Weird" if t == "/object_state" else typ, typestore=ts)
                 for t, typ in small_session.topics.items()}
        for m in small_session.msgs:
            if m.topic == "/object_state":
                obj = ts.types["my_msgs/msg/Weird"](values=np.asarray(m.data["data"], np.float32))
                w.write(conns[m.topic], m.log_ns, ts.serialize_cdr(obj, "my_msgs/msg/Weird"))
            else:
                w.write(conns[m.topic], m.log_ns,
                        ts.serialize_cdr(bagdata._to_rosbags(ts, m.type, m.data), m.type))
    bagdata.make_humble_like(bag)
    _expect_error(bag, tmp_path, "topic /object_state has unknown message type 'my_msgs/msg/Weird'")


def test_episode_without_steps(tmp_path):
    s = bagdata.make_session(outcomes=("success", "success"), ep_s=0.3, gap_s=0.5, image_hw=(4, 4),
                             rates={"camera": 1.0})
    bag = bagdata.write_rosbags(s, tmp_path / "empty")
    msg = _expect_error(bag, tmp_path, "episode 0 .* has no aligned steps", exc=EmptyEpisodeError)
    assert re.search(r"/camera/(front|wrist)/image_raw had no message within tolerance at 7 of 7 grid steps", msg)
    # skipping them leaves nothing to convert: still no dataset
    _expect_error(bag, tmp_path, "no episodes to convert", empty="skip")


def test_output_exists_and_bad_args(bags, tmp_path):
    (tmp_path / "out.zarr").mkdir()
    with pytest.raises(ConvertError, match="exists already"):
        bag_to_store(bags["rosbags_mcap_jazzy"], tmp_path / "out.zarr", robot="so101")
    assert list((tmp_path / "out.zarr").iterdir()) == []
    with pytest.raises(ConvertError, match="split must be one of"):
        bag_to_store(bags["rosbags_mcap_jazzy"], tmp_path / "x.zarr", robot="so101", split="halves")
    with pytest.raises(Exception, match="unknown robot 'r2d2'"):
        bag_to_store(bags["rosbags_mcap_jazzy"], tmp_path / "x.zarr", robot="r2d2")
    with pytest.raises(ConvertError, match="exists already"):
        store_to_bag(tmp_path / "out.zarr", bags["rosbags_mcap_jazzy"])


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def test_cli_convert_both_ways(sim_store, tmp_path, capsys):
    from robot_rl.cli.convert import cmd_convert
    from robot_rl.cli.main import CLIError
    assert cmd_convert([str(sim_store), str(tmp_path / "x.mcap"), "episodes=[0,2]"]) == 0
    assert "2 episodes" in capsys.readouterr().out
    assert cmd_convert([str(tmp_path / "x.mcap"), str(tmp_path / "x.zarr"), "robot=so101", "task=t"]) == 0
    assert "2 episodes (2 successful)" in capsys.readouterr().out
    for args, match in [([str(tmp_path / "x.mcap"), str(tmp_path / "y.zarr")], "needs robot=NAME"),
                        ([str(tmp_path / "x.mcap"), str(tmp_path / "y.zarr"), "robot=so101", "colour=red"],
                         "unknown setting 'colour'"),
                        ([str(tmp_path / "x.mcap")], "needs an input and an output"),
                        ([str(tmp_path / "x.mcap"), str(tmp_path / "y.zarr"), "robot=so101", "split=gaps",
                          "gap_s=abc"], "gap_s must be a number"),
                        ([str(tmp_path / "nope.mcap"), str(tmp_path / "y.zarr"), "robot=so101"], "no such bag"),
                        ([str(sim_store), str(tmp_path / "z.mcap"), "episodes=[7]"], "no episode 7")]:
        with pytest.raises(CLIError, match=match):
            cmd_convert(args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mcap", "x.zarr"]


# ---------------------------------------------------------------------------------------
# CompressedImage: JPEG-coded store keys <-> sensor_msgs/CompressedImage
# ---------------------------------------------------------------------------------------
def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _camera_contract(compressed: dict[str, bool]) -> Contract:
    """The sim contract with one explicit camera topic per camera: image_transport's
    ``.../compressed`` CompressedImage where ``compressed[cam]``, raw Image otherwise."""
    d = Contract.load("sim").to_dict()
    i = next(j for j, t in enumerate(d["topics"]) if t["topic"] == "/camera/{camera}/image_raw")
    tmpl = d["topics"].pop(i)
    for cam, comp in compressed.items():
        t = {**tmpl, "fields": {f"image_{cam}": "rgb"}}
        t["topic"] = f"/camera/{cam}/image_raw" + ("/compressed" if comp else "")
        t["type"] = "sensor_msgs/msg/CompressedImage" if comp else "sensor_msgs/msg/Image"
        d["topics"].insert(i, t)
    d["name"] = "sim_compressed"
    return Contract.from_dict(d)


def test_jpeg_store_to_bag_passes_the_stored_jpeg_and_converts_back(tmp_path):
    import imagecodecs
    src = bagdata.make_sim_store(tmp_path / "j.zarr", episodes=2, steps=8, image_hw=(240, 320), camera_like=True,
                                 image_codecs={"image_front": "jpeg:90", "image_wrist": "lossless"})
    with EpisodeStore.open(src) as st:
        assert (st.codec("image_front"), st.codec("image_wrist")) == ("jpeg:90", "lossless")
        spec = st.spec
        front = st.read_frames("image_front", np.arange(st.n_steps))
    rep = store_to_bag(src, tmp_path / "j.mcap")
    assert rep["topics"]["/camera/front/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"
    assert rep["topics"]["/camera/wrist/image_raw"] == "sensor_msgs/msg/Image"
    assert "/camera/front/image_raw" not in rep["topics"]
    with open_bag(tmp_path / "j.mcap") as bag:
        msgs = [bag.deserialize(raw, t) for _, t, _, raw in bag.messages(["/camera/front/image_raw/compressed"])]
    assert len(msgs) == len(front) == 16 and all(m.format == "jpeg" for m in msgs)
    for m, f in zip(msgs, front):  # the stored JPEG itself: decodes to the very same pixels
        assert bytes(m.data[:2]) == b"\xff\xd8"
        np.testing.assert_array_equal(imagecodecs.jpeg8_decode(bytes(m.data)), f)

    contract = _camera_contract({"front": True, "wrist": False})
    bag_to_store(tmp_path / "j.mcap", tmp_path / "back.zarr", robot=spec, contract=contract,
                 image_codecs={"image_front": "jpeg:90", "image_wrist": "lossless"})
    a, b = EpisodeStore.open(src), EpisodeStore.open(tmp_path / "back.zarr")
    try:
        assert len(a) == len(b) == 2 and b.codec("image_front") == "jpeg:90"
        for i in range(len(a)):
            ea, eb = a.episode(i), b.episode(i)
            assert a.episode_meta(i)["length"] == b.episode_meta(i)["length"] == 8
            assert a.episode_meta(i)["success"] == b.episode_meta(i)["success"]
            assert np.max(np.abs(ea["timestamp"] - eb["timestamp"])) <= 1e-9
            for k, v in ea.items():
                if k == "image_front":  # decoded and re-encoded once by the new store
                    assert _psnr(v, eb[k]) >= 45, _psnr(v, eb[k])
                elif k != "timestamp":
                    np.testing.assert_array_equal(eb[k], v, err_msg=k)
    finally:
        a.close()
        b.close()
    assert leftovers(tmp_path) == []


def test_bag_from_another_tool_with_jpeg_and_png_compressed_images(tmp_path):
    """A bag written with the rosbags writer as any other tool would: JointState, action and
    two CompressedImage cameras (jpeg in image_transport's long format spelling, png)."""
    import cv2
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_JAZZY)
    T = ts.types
    joints = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    n, hz, t0 = 20, 20, 1_700_000_000 * NS
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    frames = [np.clip(np.stack([xx * 3 + 5 * k, yy * 4, 128 + 80 * np.sin((xx - yy + k) / 9)], -1)
                      + rng.normal(0, 3, (48, 64, 3)), 0, 255).astype(np.uint8) for k in range(n)]
    path = tmp_path / "foreign"

    def header(ns):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // NS, nanosec=ns % NS),
                                        frame_id="cam")
    with Writer(path, version=8) as w:  # rosbags' default storage (sqlite3), an older bag version
        c_js = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        c_a = w.add_connection("/action", "std_msgs/msg/Float32MultiArray", typestore=ts)
        c_f = w.add_connection("/cam_front/compressed", "sensor_msgs/msg/CompressedImage", typestore=ts)
        c_w = w.add_connection("/cam_wrist/compressed", "sensor_msgs/msg/CompressedImage", typestore=ts)
        L = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        for k in range(n):
            ns = t0 + k * NS // hz
            bgr = cv2.cvtColor(frames[k], cv2.COLOR_RGB2BGR)
            jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].reshape(-1)
            png = cv2.imencode(".png", bgr)[1].reshape(-1)
            CI = T["sensor_msgs/msg/CompressedImage"]
            w.write(c_f, ns, ts.serialize_cdr(CI(header=header(ns), format="rgb8; jpeg compressed bgr8", data=jpg),
                                              "sensor_msgs/msg/CompressedImage"))
            w.write(c_w, ns, ts.serialize_cdr(CI(header=header(ns), format="png", data=png),
                                              "sensor_msgs/msg/CompressedImage"))
            js = T["sensor_msgs/msg/JointState"](header=header(ns), name=joints, position=np.full(6, k, np.float64),
                                                 velocity=np.zeros(0), effort=np.zeros(0))
            w.write(c_js, ns, ts.serialize_cdr(js, "sensor_msgs/msg/JointState"))
            act = T["std_msgs/msg/Float32MultiArray"](layout=L, data=np.full(7, k, np.float32))
            w.write(c_a, ns, ts.serialize_cdr(act, "std_msgs/msg/Float32MultiArray"))
    contract = {"name": "foreign", "fps": hz, "topics": [
        {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "fields": {"joint_pos": "position"}},
        {"topic": "/action", "type": "std_msgs/msg/Float32MultiArray", "fields": {"action": "data"}},
        {"topic": "/cam_front/compressed", "type": "sensor_msgs/msg/CompressedImage",
         "fields": {"image_front": "rgb"}},
        {"topic": "/cam_wrist/compressed", "type": "sensor_msgs/CompressedImage", "fields": {"image_wrist": "rgb"}}]}
    rep = bag_to_store(path, tmp_path / "f.zarr", robot="so101", contract=contract, split="gaps")
    assert rep["episodes"] == 1 and rep["steps"] >= n - 2, rep
    with EpisodeStore.open(tmp_path / "f.zarr") as st:
        ep = st.episode(0)
        assert ep["image_front"].shape[1:] == (48, 64, 3) and ep["image_wrist"].dtype == np.uint8
        for j in range(len(ep["action"])):
            k = int(round(float(ep["action"][j][0])))  # the source frame this step aligned to
            assert np.all(ep["joint_pos"][j] == k)
            np.testing.assert_array_equal(ep["image_wrist"][j], frames[k])  # png: lossless
            assert _psnr(ep["image_front"][j], frames[k]) >= 35  # one jpeg q95 generation
    with pytest.raises(ConvertError, match="CompressedImage"):  # the sim contract wants raw Images
        bag_to_store(path, tmp_path / "g.zarr", robot="so101", split="gaps",
                     contract={**contract, "topics": contract["topics"][:2] + [
                         {"topic": "/cam_front/compressed", "type": "sensor_msgs/msg/Image",
                          "fields": {"image_front": "rgb"}}]})
