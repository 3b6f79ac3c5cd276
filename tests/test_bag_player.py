"""bag_player: the timing core without ROS, then real playback over DDS (isolated netns)."""
from __future__ import annotations

import time

import numpy as np
import pytest

import bagdata
from bagdata import NS
from robot_rl.ros.bag_player import (PlayerError, message_class, parse_remaps, play, prepare,
                                     select_topics)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps += 1
        self.t += max(s, 1e-6)  # sleep(0) while spinning: time still moves


MS = 1_000_000


def _msgs(times_ms):
    return lambda: [(T * MS, i) for i, T in enumerate(times_ms)]


def test_play_publishes_at_absolute_deadlines():
    clk = FakeClock()
    out = []
    st = play(_msgs([1000, 1010, 1010, 1500, 3000]), lambda x: out.append((x, clk())), clock=clk, sleep=clk.sleep,
              start_delay=0.5)
    assert [x for x, _ in out] == [0, 1, 2, 3, 4]
    want = [100.5, 100.51, 100.51, 101.0, 102.5]
    assert np.allclose([t for _, t in out], want, atol=2e-5)
    assert st.published == 5 and max(st.lateness_s) < 2e-5
    s = st.summary()
    assert s["published"] == 5 and s["lateness_ms_p99"] < 0.02


def test_play_rate_scales_time_and_lateness_does_not_accumulate():
    clk = FakeClock()
    out = []

    def slow_publish(x):  # every publish takes 3 ms: deadlines stay absolute
        out.append(clk())
        clk.t += 0.003
    play(_msgs([0, 10, 20, 30, 40, 50]), slow_publish, rate=2.0, clock=clk, sleep=clk.sleep)
    assert np.allclose(np.array(out) - out[0], [0, 0.005, 0.010, 0.015, 0.020, 0.025], atol=2e-5)
    with pytest.raises(PlayerError, match="rate must be > 0"):
        play(_msgs([0]), print, rate=0)


def test_play_loop_and_clock():
    clk = FakeClock()
    out, ticks = [], []
    n = [0]

    def pub(x):
        out.append((x, clk()))
        n[0] += 1
    st = play(_msgs([0, 100, 200]), pub, loop=True, clock=clk, sleep=clk.sleep, end_ns=250 * MS,
              publish_clock=lambda t: ticks.append((t, clk())), clock_hz=20, should_stop=lambda: n[0] >= 7)
    assert [x for x, _ in out] == [0, 1, 2, 0, 1, 2, 0]
    t = np.array([w for _, w in out]) - out[0][1]
    assert np.allclose(t, [0, 0.1, 0.2, 0.25, 0.35, 0.45, 0.5], atol=1e-4)  # loops continue the bag time
    assert st.loops == 2
    bag_t = [b for b, _ in ticks]
    assert bag_t == sorted(bag_t)  # /clock never goes back within the (looped) time line
    assert all(b % (50 * MS) == 0 for b in bag_t)  # 20 Hz ticks and message times (all on 50 ms here)
    wall = np.array([w for _, w in ticks]) - out[0][1]
    assert np.allclose(wall, (np.array(bag_t) - bag_t[0]) / NS, atol=1e-4)  # each tick at its own time


def test_topic_selection_and_remaps():
    bag = {"/a": "std_msgs/msg/String", "/b": "sensor_msgs/msg/JointState"}
    assert parse_remaps(["/a:=/x"]) == {"/a": "/x"}
    assert select_topics(bag, None, {"/a": "/x"}) == {"/a": ("/x", "std_msgs/msg/String"),
                                                      "/b": ("/b", "sensor_msgs/msg/JointState")}
    assert select_topics(bag, ["/b"], {}) == {"/b": ("/b", "sensor_msgs/msg/JointState")}
    for call, match in [(lambda: parse_remaps(["/a=/x"]), "FROM:=TO"),
                        (lambda: parse_remaps(["a:=/x"]), "absolute"),
                        (lambda: select_topics(bag, ["/c"], {}), "/c not in the bag"),
                        (lambda: select_topics(bag, ["/a"], {"/b": "/x"}), "not a played topic"),
                        (lambda: select_topics(bag, None, {"/a": "/b"}), "several topics would be published on /b"),
                        (lambda: message_class("my_msgs/msg/Weird"), "no Python message package"),
                        (lambda: message_class("garbage"), "expected pkg/msg/Name")]:
        with pytest.raises(PlayerError, match=match):
            call()
    assert message_class("sensor_msgs/msg/JointState").__name__ == "JointState"


@pytest.fixture(scope="module")
def weird_bag(tmp_path_factory):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg("float32[] values", "my_msgs/msg/Weird"))
    p = tmp_path_factory.mktemp("weird") / "weird"
    with Writer(p, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/weird", "my_msgs/msg/Weird", typestore=ts)
        s = w.add_connection("/event", "std_msgs/msg/String", typestore=ts)
        w.write(c, NS, ts.serialize_cdr(ts.types["my_msgs/msg/Weird"](values=np.zeros(2, np.float32)),
                                        "my_msgs/msg/Weird"))
        w.write(s, 2 * NS, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="start"), "std_msgs/msg/String"))
    return p


def test_unknown_type_is_one_clear_error_before_dds(weird_bag):
    with pytest.raises(PlayerError, match="my_msgs/msg/Weird.*--topics"):
        prepare(str(weird_bag))
    bag, plan, classes = prepare(str(weird_bag), topics=["/event"])
    bag.close()
    assert list(plan) == ["/event"]
    from ros_helpers import spawn
    p = spawn("robot_rl.ros.bag_player", str(weird_bag))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "bag_player: error: cannot play message type 'my_msgs/msg/Weird'" in err, err
    p = spawn("robot_rl.ros.bag_player", str(weird_bag.parent / "missing"))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "no such bag" in err


# ---------------------------------------------------------------------------------------
# real playback (DDS, loopback-only namespace)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def play_bag(tmp_path_factory):
    s = bagdata.make_session(outcomes=("success",), ep_s=0.8, gap_s=0.2, image_hw=(6, 8), cameras=("front",))
    return s, bagdata.write_rosbags(s, tmp_path_factory.mktemp("play") / "play")


def test_playback_over_dds(ros_domain, play_bag):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from ros_helpers import spawn
    from robot_rl.ros.bag_player import message_class

    session, bag = play_bag
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    node = rclpy.create_node("bag_player_test", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    qos = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE,
                     history=QoSHistoryPolicy.KEEP_LAST, depth=1000)
    got: dict[str, list] = {}
    remapped = {"/joint_states": "/replay/joint_states"}
    for topic, typ in session.topics.items():
        dst = remapped.get(topic, topic)
        got[topic] = []
        node.create_subscription(message_class(typ), dst,
                                 lambda raw, t=topic: got[t].append((time.monotonic(), raw)), qos, raw=True)
    stray: list = []
    node.create_subscription(message_class("sensor_msgs/msg/JointState"), "/joint_states",
                             lambda raw: stray.append(raw), qos, raw=True)
    clock: list = []
    node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec * NS + m.clock.nanosec), qos)
    try:
        p = spawn("robot_rl.ros.bag_player", str(bag), "--remap", "/joint_states:=/replay/joint_states",
                  "--clock", "200", "--wait-subscribers", "20", "--start-delay", "0.3")
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.01)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        assert "messages published" in err
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    # every message arrived, in order, byte for byte (raw CDR replayed)
    from robot_rl.data.bag import open_bag
    with open_bag(bag) as b:
        want: dict[str, list[bytes]] = {}
        logs: dict[str, list[int]] = {}
        for topic, _, t, raw in b.messages():
            want.setdefault(topic, []).append(bytes(raw))
            logs.setdefault(topic, []).append(t)
    for topic, raws in want.items():
        assert [r for _, r in got[topic]] == raws, topic
    assert stray == []  # remapped away
    # timing: inter-message intervals as recorded (loose bound here; benchmarks/bench_bags.py measures)
    rx = np.array([t for t, _ in got["/joint_states"]])
    err_ms = np.abs(np.diff(rx) - np.diff(np.array(logs["/joint_states"])) / NS) * 1e3
    assert np.percentile(err_ms, 50) < 5.0, err_ms
    # /clock: bag time, monotonic, from the first to the last message, ~200 Hz in between
    assert clock and clock == sorted(clock)
    t0, t1 = min(v[0] for v in logs.values()), max(v[-1] for v in logs.values())
    assert clock[0] == t0 and clock[-1] == t1
    assert len(clock) >= 0.5 * 200 * (t1 - t0) / NS
