"""The recorder core (robot_rl.ros.recorder, no ROS): lockstep (stamp-driven) and realtime
(grid) episodes from synthetic contract messages, events, telemetry, shutdown."""
from __future__ import annotations

import json

import numpy as np
import pytest

from robot_rl.data import EpisodeStore
from robot_rl.data.contract import NS, Contract
from robot_rl.ros.recorder import Recorder, parse_stamp_ns
from robot_rl.spec import load_spec

SIZE = 8
DT = 50_000_000  # 20 Hz


@pytest.fixture
def bound():
    spec = load_spec("so101").with_cameras(["front"], SIZE, SIZE)
    return Contract.load("sim").bind(spec, cameras=["front"])


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeRobot:
    """What a lockstep robot node publishes: per step k (stamp t0 + k*DT) joint_states,
    ee_pose, image, object_state, reward; plus /action stamped with the step it was chosen at."""

    def __init__(self, rec: Recorder, t0: int = 10 * NS):
        self.rec = rec
        self.t = t0

    @staticmethod
    def values(k: float):
        return {
            "/joint_states": {"joint_pos": np.full(5, k, np.float32), "joint_vel": np.full(5, -k, np.float32),
                              "gripper": np.array([k / 100], np.float32)},
            "/ee_pose": {"ee_pos": np.array([k, 0, 1], np.float32), "ee_quat": np.array([1, 0, 0, k], np.float32)},
            "/camera/front/image_raw": {"image_front": np.full((SIZE, SIZE, 3), int(k) % 256, np.uint8)},
            "/object_state": {"object_state": np.full(10, k, np.float32)},
            "/reward": {"reward": np.float64(k / 10)},
        }

    def obs(self, k: int, skip=(), order=None):
        vals = self.values(k)
        for topic in (order or list(vals)):
            if topic in skip:
                continue
            stamped = topic != "/reward"
            stamp = self.t if stamped else self.rec.unstamped_stamp(0)
            self.rec.message(topic, stamp, vals[topic], recv_ns=0, stamped=stamped)

    def action(self, k: int, stamp: int):
        self.rec.message("/action", stamp, {"action": np.full(7, k + 0.5, np.float32)}, recv_ns=0)

    def step(self, k: int, **kw):
        """Action k at the current stamp, then observation k+1."""
        self.action(k, self.t)
        self.t += DT
        self.obs(k + 1, **kw)


def make(tmp_path, bound, mode="lockstep", **kw):
    store = EpisodeStore.create(tmp_path / "d.zarr", bound.spec)
    clock = Clock()
    events = []
    rec = Recorder(bound, store, task="pick_cube", mode=mode, clock=clock,
                   on_episode=lambda kind, info, idx, ok, cad: events.append((kind, idx, ok)), **kw)
    return rec, store, clock, events


def stamp_text(ns: int) -> str:
    return f"{ns // NS}.{ns % NS:09d}"


def run_episode(rec, robot, n, seed=0, end="success"):
    rec.event(f"start seed={seed} source=expert", 0)
    robot.t += DT
    robot.obs(0)
    for k in range(n):
        robot.step(k)
    rec.event(f"{end} steps={n} stamp={stamp_text(robot.t)}", 0)


def test_lockstep_episode_values_stamps_telemetry(tmp_path, bound):
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    robot.obs(-1)  # the robot node's start-up observation: never part of an episode
    t_first = robot.t + DT
    run_episode(rec, robot, 6, seed=3)
    assert events == [("committed", 0, True)]
    ep = store.episode(0)
    assert len(ep["timestamp"]) == 6
    for k in range(6):
        assert ep["joint_pos"][k][0] == k and ep["action"][k][0] == k + 0.5
        assert ep["image_front"][k].max() == k and ep["object_state"][k][0] == k
        assert ep["stamp_joint_pos"][k] == pytest.approx((t_first + k * DT) / NS)
        assert ep["stamp_action"][k] == ep["stamp_joint_pos"][k] == ep["timestamp"][k]
    meta = store.episode_meta(0)
    assert meta["source"] == "expert" and meta["success"] and meta["extra"]["seed"] == 3
    cad = meta["extra"]["cadence"]
    assert cad["steps"] == 6 and cad["rate_hz"] == pytest.approx(20.0)
    assert set(cad["drops"].values()) == {0}
    assert cad["age"]["/joint_states"]["max_ms"] == 0.0
    # the observation that ended the episode (no action) was not recorded; the next episode
    # starts after it
    run_episode(rec, robot, 3, seed=4, end="failure")
    assert events[-1] == ("committed", 1, False)
    assert store.episode(1)["joint_pos"][0][0] == 0 and len(store.episode(1)["timestamp"]) == 3
    store.close()


def test_lockstep_reordered_delivery(tmp_path, bound):
    """Step-0 observation and the first action before the start event; the end event before
    the last action and observation: the same episode."""
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    robot.t += DT
    robot.obs(0, order=["/camera/front/image_raw", "/reward", "/object_state", "/ee_pose", "/joint_states"])
    robot.action(0, robot.t)
    rec.event("start seed=1", 0)
    robot.t += DT
    robot.obs(1)
    for k in range(1, 3):
        robot.step(k)
    end = robot.t + DT
    rec.event(f"success steps=4 stamp={stamp_text(end)}", 0)
    assert events == []  # waiting for its 4th step
    robot.step(3)
    assert robot.t == end
    assert events == [("committed", 0, True)]
    ep = store.episode(0)
    np.testing.assert_array_equal(ep["joint_pos"][:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(ep["action"][:, 0], [0.5, 1.5, 2.5, 3.5])
    store.close()


def test_lockstep_waits_for_stamps_then_times_out(tmp_path, bound):
    rec, store, clock, events = make(tmp_path, bound, step_timeout_s=2.0)
    robot = FakeRobot(rec)
    rec.event("start", 0)
    robot.t += DT
    robot.obs(0)
    robot.step(0, skip=["/camera/front/image_raw"])  # the image of step 1 is lost
    robot.action(1, robot.t)
    rec.event(f"success steps=2 stamp={stamp_text(robot.t + DT)}", 0)
    assert events == []  # step 1 waits for an image stamped >= its stamp
    clock.t = 1.0
    rec.tick(0)
    assert events == []
    clock.t = 5.0
    rec.tick(0)
    assert events == [("committed", 0, True)]
    ep = store.episode(0)
    assert len(ep["timestamp"]) == 2
    assert ep["image_front"][1].max() == 0  # the nearest frame (tolerance 1 / rate)
    cad = store.episode_meta(0)["extra"]["cadence"]
    assert cad["drops"]["/camera/front/image_raw"] == 1  # the nearest frame was used for step 1
    assert rec.warnings and "no message stamped" in rec.warnings[-1]
    store.close()


def test_discard_rerecord_restart_and_intervention(tmp_path, bound):
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    rec.event("start seed=0", 0)
    robot.t += DT
    robot.obs(0)
    robot.step(0)
    rec.event("discard", 0)
    assert events == [("discarded", None, False)]
    rec.event("start seed=1", 0)
    robot.t += DT
    robot.obs(0)
    robot.step(0)
    rec.event("rerecord seed=1", 0)  # drops it, starts again
    robot.t += DT
    robot.obs(0)
    robot.step(0)
    rec.intervention(True)
    robot.step(1)
    rec.intervention(False)
    rec.event("start seed=2", 0)  # while recording: the open one ends as a failure
    assert events[-1] == ("committed", 0, False)
    assert store.episode_meta(0)["source"] == "intervention"
    assert store.episode_meta(0)["extra"]["end_reason"] == "restarted"
    assert len(store.episode(0)["timestamp"]) == 2
    robot.t += DT
    robot.obs(0)
    robot.step(0)
    rec.close()  # still recording: discarded, nothing half-written
    assert events[-1] == ("discarded", None, False)
    assert store.n_episodes == 1
    store.close()


def test_repeated_start_before_any_step(tmp_path, bound):
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    rec.event("start seed=5", 0)
    robot.t += DT
    robot.obs(0)
    run_episode(rec, robot, 2, seed=5)  # the teleop re-sent its start
    assert events == [("committed", 0, True)]
    assert store.n_episodes == 1
    store.close()


def test_close_finishes_an_ended_episode(tmp_path, bound):
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    rec.event("start", 0)
    robot.t += DT
    robot.obs(0)
    robot.step(0)
    robot.step(1)
    rec.event(f"success steps=3 stamp={stamp_text(robot.t + DT)}", 0)  # step 3 never comes
    rec.close()
    assert events == [("committed", 0, True)]
    assert len(store.episode(0)["timestamp"]) == 2
    store.close()


def test_manual_end_without_arguments(tmp_path, bound):
    """A service / keyboard 'success' carries no steps= / stamp=: the steps seen so far."""
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    rec.event("start", 0)
    robot.t += DT
    robot.obs(0)
    for k in range(4):
        robot.step(k)
    rec.event("success", 0)
    assert events == [("committed", 0, True)] and len(store.episode(0)["timestamp"]) == 4
    assert store.episode_meta(0)["source"] == "teleop"
    store.close()


def test_realtime_grid(tmp_path, bound):
    """Wall-clock stamps: the contract's assembler grid from the start event."""
    rec, store, clock, events = make(tmp_path, bound, mode="realtime")
    t = 1_700_000_000 * NS
    vals = FakeRobot.values
    rec.event("start seed=9", t + 1)  # grid starts at the start event
    for k in range(30):
        tk = t + k * DT
        for topic, v in vals(k).items():
            rec.message(topic, tk if topic != "/reward" else tk + 1_000_000, v, recv_ns=tk + 2_000_000,
                        stamped=topic != "/reward")
        rec.message("/action", tk, {"action": np.full(7, k, np.float32)}, recv_ns=tk + 2_000_000)
        if k == 20:
            rec.event("success", tk + 2_000_000)
    rec.tick(t + 40 * DT)
    assert events == [("committed", 0, True)]
    ep = store.episode(0)
    n = len(ep["timestamp"])
    assert 18 <= n <= 20
    # latest policy: each step uses the newest message at or before it (its stamp is kept)
    k_used = np.round((ep["stamp_joint_pos"] - t / NS) / (DT / NS))
    np.testing.assert_array_equal(ep["joint_pos"][:, 0], k_used)
    assert np.all(ep["stamp_joint_pos"] <= ep["timestamp"]) and np.all(ep["timestamp"] - ep["stamp_joint_pos"] < 0.05)
    cad = store.episode_meta(0)["extra"]["cadence"]
    assert cad["rate_hz"] == pytest.approx(20.0) and cad["drops"]["/joint_states"] == 0
    extra = store.episode_meta(0)["extra"]
    assert extra["seed"] == 9 and "align" in extra
    json.dumps(extra)
    store.close()


def test_parse_stamp_ns():
    assert parse_stamp_ns("12.050000000") == 12_050_000_000
    assert parse_stamp_ns("1700000000.123456789") == 1_700_000_000_123_456_789
    assert parse_stamp_ns("0.5") == 500_000_000


def test_lockstep_steps_long_before_the_start_are_not_adopted(tmp_path, bound):
    """A twin driven between episodes (actions with no episode open) does not leak into the
    next episode; a step that arrives just before its start event (reordering) does."""
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    robot.obs(-1)
    for k in range(5):  # driven with no episode open
        robot.step(100 + k)
    clock.t = 10.0
    robot.t += DT
    robot.obs(0)
    robot.action(0, robot.t)  # the episode's first step, ahead of its start event
    clock.t = 10.2
    rec.event("start seed=0", 0)
    robot.t += DT
    robot.obs(1)
    robot.step(1)
    rec.event(f"success steps=2 stamp={stamp_text(robot.t)}", 0)
    assert events == [("committed", 0, True)]
    np.testing.assert_array_equal(store.episode(0)["joint_pos"][:, 0], [0, 1])
    store.close()


def test_burst_stamper_places_unstamped_messages_by_source_time():
    from robot_rl.ros.recorder import BurstStamper
    clock = Clock()
    bs = BurstStamper(timeout_s=2.0, clock=clock)
    # burst k published at source time 1000*k: joint_states (stamp 50*k) first, then the reward
    assert bs.unstamped(5, "r-before-any") == []  # its burst's reference was never seen
    assert bs.reference(1000, 50) == [] and bs.dropped == 1
    # a lagging subscriber: reference of burst 2 processed before the reward of burst 1
    out = bs.reference(2000, 100)
    assert out == []
    assert bs.unstamped(1001, "r1") == [("r1", 50)]
    # reward of burst 2 processed before its reference: waits until the reference passes it
    assert bs.unstamped(2001, "r2") == []
    assert bs.reference(3000, 150) == [("r2", 100)]
    # the last burst: nothing passes it; expires after timeout_s, flush at the end
    assert bs.unstamped(3001, "r3") == []
    assert bs.expire() == []
    clock.t = 3.0
    assert bs.expire() == [("r3", 150)]
    assert bs.unstamped(3002, "r4") == [] and bs.flush() == [("r4", 150)]


def _realtime_reset_run(tmp_path, bound, reset_recv_delay_ns, reset_seed="4", jitter=True):
    """A realtime twin: frames every DT (stamped with wall time, a few ms of jitter). The start
    event arrives between frames 4 and 5 while the twin still shows the previous episode (value
    100 + k); it resets before frame 6 (value 0, then 1, 2, ...) and announces it."""
    rec, store, clock, events = make(tmp_path, bound, mode="realtime")
    t = 1_700_000_000 * NS
    MS = 1_000_000
    todo = []  # (receipt ns, order, fn)

    def frame(k, value):
        tk = t + k * DT + ((k * 7) % 5 - 2) * MS * jitter  # -2 .. +2 ms
        recv = tk + 2 * MS

        def pub():
            for topic, v in FakeRobot.values(value).items():
                rec.message(topic, tk if topic != "/reward" else recv, v, recv_ns=recv, stamped=topic != "/reward")
            rec.message("/action", tk, {"action": np.full(7, value, np.float32)}, recv_ns=recv)
        todo.append((recv, 1, pub))
        return tk

    for k in range(6):
        frame(k, 100 + k)
    t_reset = frame(6, 0)
    for k in range(7, 30):
        frame(k, k - 6)
    todo.append((t + 4 * DT + 10 * MS, 0, lambda: rec.event("start seed=4 source=expert", t + 4 * DT + 10 * MS)))
    seed = f"seed={reset_seed} " if reset_seed is not None else ""
    r_recv = t_reset + reset_recv_delay_ns
    todo.append((r_recv, 0, lambda: rec.event(f"reset {seed}stamp={stamp_text(t_reset)}", r_recv)))
    todo.append((t + 25 * DT, 0, lambda: rec.event("success", t + 25 * DT)))
    for _, _, fn in sorted(todo, key=lambda x: (x[0], x[1])):
        fn()
    rec.tick(t + 40 * DT)
    assert events == [("committed", 0, True)]
    return store, t_reset


@pytest.mark.parametrize("delay_ms", [3, 300])
def test_realtime_reset_announcement_reanchors_the_episode(tmp_path, bound, delay_ms):
    """`reset seed=N stamp=T` from the robot node: step 0 is the first post-reset observation
    (nothing of the previous episode), the grid follows the robot's frames one to one; also
    when the announcement comes after steps were already assembled (300 ms > latency)."""
    store, t_reset = _realtime_reset_run(tmp_path, bound, delay_ms * 1_000_000)
    ep = store.episode(0)
    n = len(ep["timestamp"])
    assert 17 <= n <= 19
    np.testing.assert_array_equal(ep["joint_pos"][:, 0], np.arange(n))  # no stale, repeated or lost frame
    np.testing.assert_array_equal(ep["image_front"][:, 0, 0, 0], np.arange(n))
    np.testing.assert_array_equal(ep["object_state"][:, 0], np.arange(n))
    assert ep["stamp_joint_pos"][0] == pytest.approx(t_reset / NS, abs=1e-9)
    assert ep["timestamp"][0] == pytest.approx(t_reset / NS + DT / 4 / NS, abs=1e-9)
    extra = store.episode_meta(0)["extra"]
    assert extra["align"]["reset_stamp"] == pytest.approx(t_reset / NS)
    assert (extra["align"]["dropped_before_reset"] > 0) == (delay_ms > 100)
    assert extra["cadence"]["steps"] == n and extra["cadence"]["drops"]["/joint_states"] == 0
    assert store.n_episodes == 1
    store.close()


@pytest.mark.parametrize("reset_seed", ["99", "far"])
def test_realtime_reset_for_another_episode_is_ignored(tmp_path, bound, reset_seed):
    """A reset announced for another seed, or far from the start: the grid stays at the start
    event, whose first step is the previous episode's last frame (what a real arm, which never
    announces a reset, records too)."""
    delay = 3_000_000 if reset_seed != "far" else 1_500_000_000
    store, _ = _realtime_reset_run(tmp_path, bound, delay, reset_seed="99" if reset_seed == "99" else "4")
    ep = store.episode(0)
    assert ep["joint_pos"][0, 0] == 104  # stale: the frame before the start event
    assert "reset_stamp" not in store.episode_meta(0)["extra"]["align"]
    store.close()


def test_realtime_reset_before_its_start_event_counts(tmp_path, bound):
    """The announcement overtook the start event (another publisher): it is kept for it."""
    store, t_reset = _realtime_reset_run(tmp_path, bound, -(2 * DT - 5_000_000))  # before the start
    ep = store.episode(0)
    assert ep["joint_pos"][0, 0] == 0 and ep["stamp_joint_pos"][0] == pytest.approx(t_reset / NS, abs=1e-9)
    store.close()


def test_lockstep_ignores_reset_announcements(tmp_path, bound):
    rec, store, clock, events = make(tmp_path, bound)
    robot = FakeRobot(rec)
    rec.event("start seed=1", 0)
    robot.t += DT
    robot.obs(0)
    rec.event(f"reset seed=1 stamp={stamp_text(robot.t + 5 * DT)}", 0)
    for k in range(3):
        robot.step(k)
    rec.event(f"success steps=3 stamp={stamp_text(robot.t)}", 0)
    assert events == [("committed", 0, True)] and not rec.warnings
    np.testing.assert_array_equal(store.episode(0)["joint_pos"][:, 0], [0, 1, 2])
    store.close()
