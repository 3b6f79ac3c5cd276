"""The whole recording pipeline over DDS: robot_node (lockstep twin) + teleop_node (scripted
expert) + recorder_node as three processes, compared with a direct (no-ROS) recording of the
same seeds; and the recorder's Ctrl-C behaviour."""
from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from ros_helpers import spawn

from robot_rl.spec import load_spec

CAM, SIZE, EPISODES, SEED = "front", 32, 3, 0
COMPARE = ("joint_pos", "joint_vel", "ee_pos", "ee_quat", "gripper", "object_state", "action")


def _stop(p: subprocess.Popen, sig=signal.SIGINT, timeout=15.0) -> tuple[int | None, str]:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return p.returncode, (out or "") + (err or "")


class Graph:
    """robot + recorder (+ teleop) processes; every one is stopped on the way out."""

    def __init__(self, tmp_path, bag=True):
        self.out = tmp_path / "ros.zarr"
        self.bag = tmp_path / "bag" if bag else None
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, str] = {}

    def start(self, episodes=EPISODES):
        common = ("--robot", "so101", "--task", "pick_cube")
        self.procs["robot"] = spawn("robot_rl.ros.robot_node", *common, "--mode", "lockstep", "--cameras", CAM,
                                    "--image-size", str(SIZE), "--image-qos", "reliable", "--diag-hz", "0")
        rec = [*common, "--contract", "sim", "--out", str(self.out), "--cameras", CAM, "--image-size", str(SIZE)]
        if self.bag:
            rec += ["--bag", str(self.bag)]
        self.procs["recorder"] = spawn("robot_rl.ros.recorder_node", *rec)
        self.procs["teleop"] = spawn("robot_rl.ros.teleop_node", *common, "--device", "expert", "--mode", "lockstep",
                                     "--episodes", str(episodes), "--seed", str(SEED))

    def stop(self, name, sig=signal.SIGINT):
        p = self.procs.pop(name, None)
        if p is None:
            return None
        rc, log = _stop(p, sig)
        self.logs[name] = log
        return rc

    def close(self):
        for name in ("teleop", "recorder", "robot"):
            self.stop(name)

    def dump(self):
        for name, log in self.logs.items():
            print(f"---- {name} ----\n{log[-3000:]}")


@pytest.fixture
def graph(ros_domain, tmp_path):
    g = Graph(tmp_path)
    try:
        yield g
    finally:
        g.close()
        g.dump()


def direct_recording(tmp_path, episodes=EPISODES):
    from robot_rl.cli.record import record_sim
    from robot_rl.data import EpisodeStore
    from robot_rl.spec import load_spec
    cfg = OmegaConf.create({"robot": load_spec("so101").to_dict(), "task": "pick_cube", "episodes": episodes,
                            "out": str(tmp_path / "direct.zarr"), "seed": SEED, "cameras": [CAM], "image_size": SIZE,
                            "hold_steps": 2, "keep_failed": True, "max_attempts_factor": 1, "progress": False})
    record_sim(cfg)
    return EpisodeStore.open(tmp_path / "direct.zarr")


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_ros_recording_matches_direct_recording(graph, tmp_path):
    from robot_rl.data import EpisodeStore
    from robot_rl.data.bag import open_bag
    t0 = time.monotonic()
    graph.start()
    teleop = graph.procs["teleop"]
    try:
        teleop.wait(timeout=50)
    except subprocess.TimeoutExpired:
        pytest.fail("teleop_node did not finish its episodes within 50 s")
    assert graph.stop("teleop") == 0
    assert graph.stop("recorder") == 0  # SIGINT: closes store and bag cleanly
    wall = time.monotonic() - t0

    ros = EpisodeStore.open(graph.out)
    direct = direct_recording(tmp_path)
    assert ros.n_episodes == direct.n_episodes == EPISODES
    for i in range(EPISODES):
        a, b = ros.episode(i), direct.episode(i)
        ma, mb = ros.episode_meta(i), direct.episode_meta(i)
        assert ma["extra"]["seed"] == mb["extra"]["seed"] == SEED + i
        assert ma["source"] == "expert" and ma["success"] == mb["success"]
        assert len(a["timestamp"]) == len(b["timestamp"]), f"episode {i}: step counts differ"
        for k in COMPARE:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=0, err_msg=f"episode {i} {k}")
        np.testing.assert_array_equal(a[f"image_{CAM}"], b[f"image_{CAM}"])
        # /reward arrives with the next observation: step k holds the reward of step k-1
        # (placed by DDS source time, whatever order the recorder's callbacks ran in)
        assert a["reward"][0] == 0.0
        np.testing.assert_allclose(a["reward"][1:], b["reward"][:-1], atol=1e-6)
        # per-sensor stamps: sim time, one control period apart, every key from its own step
        st = a["stamp_joint_pos"]
        assert np.allclose(np.diff(st), 1 / 20) and np.array_equal(a["stamp_action"], st)
        assert np.array_equal(a[f"stamp_image_{CAM}"], st)
        cad = ma["extra"]["cadence"]
        assert set(cad["drops"].values()) == {0}, cad["drops"]
        assert cad["rate_hz"] == pytest.approx(20.0)
    # the bag written in the same run holds every raw message
    n_steps = ros.n_steps
    with open_bag(graph.bag) as bag:
        counts = {t: v.count for t, v in bag.topics.items()}
    assert counts["/action"] == n_steps
    assert counts["/joint_states"] >= n_steps + EPISODES  # + the observation that ends each episode
    assert counts["/teleop/event"] == 2 * EPISODES
    assert counts[f"/camera/{CAM}/image_raw"] >= n_steps + EPISODES  # (the robot's start-up frame may
    # precede the subscription)
    print(f"pipeline: {EPISODES} episodes, {n_steps} steps, {wall:.1f} s wall; bag {counts}")
    assert wall < 60
    # ... and converts back into exactly the live recording (robot-rl convert, split by events)
    from robot_rl.data.convert import bag_to_store
    rep = bag_to_store(graph.bag, tmp_path / "from_bag.zarr", robot="so101", task="pick_cube", cameras=[CAM])
    back = EpisodeStore.open(tmp_path / "from_bag.zarr")
    assert (rep["episodes"], back.n_episodes, back.n_steps) == (EPISODES, ros.n_episodes, ros.n_steps), rep
    for i in range(EPISODES):
        a, b = ros.episode(i), back.episode(i)
        assert back.episode_meta(i)["success"] == ros.episode_meta(i)["success"]
        assert set(a) == set(b)
        for k in a:
            assert a[k].shape == b[k].shape, (i, k)
            assert np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max(initial=0) == 0, (i, k)
    # ... and replaying it (bag_player --clock, as `robot-rl launch replay out=` does) into a
    # recorder with sim time re-records exactly the same episodes: nothing published before
    # discovery matched is lost, start events at the stamp of their first step are handled
    from robot_rl.ros.graphs import GRAPHS
    graph.stop("robot")  # the twin would answer the replayed /action
    nodes = {n.name: n for n in GRAPHS["replay"].nodes({"bag": str(graph.bag), "out": str(tmp_path / "replay.zarr"),
                                                       "cameras": CAM, "image_size": str(SIZE)})}
    graph.procs["recorder"] = spawn(nodes["recorder"].module, *nodes["recorder"].args)
    player = spawn(nodes["player"].module, *nodes["player"].args)
    try:
        out, err = player.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        player.kill()
        pytest.fail("bag_player did not finish within 40 s")
    assert player.returncode == 0, out + err
    time.sleep(0.5)  # the last episode's steps
    assert graph.stop("recorder") == 0
    rep = EpisodeStore.open(tmp_path / "replay.zarr")
    assert (rep.n_episodes, rep.n_steps) == (ros.n_episodes, ros.n_steps), graph.logs["recorder"][-3000:]
    for i in range(EPISODES):
        a, b = ros.episode(i), rep.episode(i)
        assert rep.episode_meta(i)["extra"]["seed"] == SEED + i
        assert set(a) == set(b)
        for k in a:
            assert a[k].shape == b[k].shape, (i, k)
            assert np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max(initial=0) == 0, (i, k)


def test_recorder_sigint_mid_episode_keeps_committed_episodes(graph, tmp_path):
    """Ctrl-C while an episode is recording: the open one is discarded, the committed ones
    are intact, store and bag close cleanly."""
    from robot_rl.data import EpisodeStore
    from robot_rl.data.bag import open_bag
    graph.start(episodes=50)  # more than it gets to record
    deadline = time.monotonic() + 45
    n = 0
    while time.monotonic() < deadline and n < 2:
        time.sleep(0.05)
        try:
            n = EpisodeStore.open(graph.out).n_episodes
        except Exception:  # noqa: BLE001 - not created yet
            n = 0
    assert n >= 2, "fewer than 2 episodes committed within 45 s"
    time.sleep(0.1)  # inside the next episode
    assert graph.stop("recorder") == 0
    log = graph.logs["recorder"]
    assert "closed; store" in log and "Traceback" not in log
    ros = EpisodeStore.open(graph.out)
    assert 2 <= ros.n_episodes < 50
    direct = direct_recording(tmp_path, episodes=ros.n_episodes)
    for i in range(ros.n_episodes):
        np.testing.assert_allclose(ros.episode(i)["joint_pos"], direct.episode(i)["joint_pos"], atol=1e-5)
    with open_bag(graph.bag) as bag:
        assert bag.topics["/action"].count >= ros.n_steps
        for _ in bag.messages(["/joint_states"]):
            pass  # readable to the end


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_realtime_recording_starts_at_the_twins_reset(ros_domain, tmp_path):
    """Realtime twin + streaming expert + realtime recorder: the robot node announces each
    reset (`reset seed=N stamp=T`) and the recorder re-anchors the episode there, so step 0 of
    every episode is the reset state of its seed (within one control step of a fresh reset's
    joint and object state), never the previous episode's last frame. The robot starts with seed 0 and
    the episodes use seeds 1..3, so every episode's reset moves the cube."""
    from robot_rl.data import EpisodeStore
    from robot_rl.runtime.robot import SimRobot
    common = ("--robot", "so101", "--task", "pick_cube")
    out = tmp_path / "rt.zarr"
    seed0, episodes = 1, 3
    g = Graph(tmp_path, bag=False)
    g.procs["robot"] = spawn("robot_rl.ros.robot_node", *common, "--mode", "realtime", "--cameras", CAM,
                             "--image-size", str(SIZE), "--seed", "0", "--rt-priority", "0")
    g.procs["recorder"] = spawn("robot_rl.ros.recorder_node", *common, "--contract", "sim", "--mode", "realtime",
                                "--out", str(out), "--cameras", CAM, "--image-size", str(SIZE))
    g.procs["teleop"] = spawn("robot_rl.ros.teleop_node", *common, "--device", "expert", "--mode", "realtime",
                              "--episodes", str(episodes), "--seed", str(seed0))
    try:
        try:
            g.procs["teleop"].wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("teleop_node did not finish its episodes within 120 s")
        assert g.stop("teleop") == 0
        assert g.stop("recorder") == 0
        assert g.stop("robot") == 0
    finally:
        g.close()
        g.dump()
    assert "unknown teleop event" not in g.logs["robot"] + g.logs["recorder"]
    store = EpisodeStore.open(out)
    assert store.n_episodes == episodes
    fresh = SimRobot("so101", "pick_cube", "ee_delta", cameras=[], seed=0)
    fresh.connect()
    try:
        for i in range(episodes):
            seed = seed0 + i
            fresh.reset(seed)
            want = fresh.observe(images=False)
            ep, meta = store.episode(i), store.episode_meta(i)
            assert meta["extra"]["seed"] == seed
            assert len(ep["timestamp"]) > 10
            # step 0 is the first complete observation at or after the announced reset: the reset
            # observation itself, or (when it lacks a topic the contract needs, e.g. an action) the
            # control step after it -- never the previous episode's last frame, whose cube is
            # lifted centimetres off the table
            al = meta["extra"]["align"]
            period = 1.0 / load_spec("so101").control_hz  # the robot node's default rate
            assert al["reset_stamp"] - 1e-6 <= ep["stamp_joint_pos"][0] <= al["reset_stamp"] + 1.5 * period
            assert ep["stamp_object_state"][0] == pytest.approx(ep["stamp_joint_pos"][0], abs=1e-6)
            np.testing.assert_allclose(ep["joint_pos"][0], want["joint_pos"], atol=5e-3, err_msg=f"episode {i}")
            np.testing.assert_allclose(ep["object_state"][0], want["object_state"], atol=1e-3,
                                       err_msg=f"episode {i}")
            assert np.all(np.diff(ep["stamp_joint_pos"]) >= 0)
    finally:
        fresh.disconnect()
