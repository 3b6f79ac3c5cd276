"""The virtual SO-101 (drivers/virtual/so101.py, person.py): real pseudo-terminals, the real
bus emulator and ServoBus client, real MuJoCo physics in real time, real HTTP.

The tests know the unit (offsets, directions) to check the truth; the code under test
never would."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from robot_rl.drivers.servo.bus import ServoBus
from robot_rl.drivers.servo.errors import PortError, ServoError
from robot_rl.drivers.virtual.person import PersonError, get, post
from robot_rl.drivers.virtual.so101 import (TICKS_PER_RAD, Encoder, MotorUnit, UnitError, VirtualSO101, load_unit,
                                            random_unit, unit_from_dict)

SMALL = dict(width=160, height=120, fps=10)
TIMEOUT = 0.05  # s per reply (ServoBus default 10 ms)


# -- helpers: what the test knows about the unit ----------------------------------------------
def ticks_of(unit, arm: str, motor: str, value: float, travel: float) -> float:
    """Exact raw ticks (mod 4096) of a joint angle / gripper closure."""
    m = unit.arm(arm).motors[motor]
    a = value * travel if motor == "gripper" else value
    return (m.offset + m.direction * a * TICKS_PER_RAD) % 4096


def tick_diff(a: float, b: float) -> float:
    return abs((a - b + 2048) % 4096 - 2048)


def bus_for(rig: VirtualSO101, arm: str) -> ServoBus:
    hw = rig.hardware[arm]
    # a generous reply timeout: the rig and this client share two busy cores with other tests
    return ServoBus(rig.info[f"{arm}_port"], hw.protocol, 1_000_000, models={m.id: m.model for m in hw.motors},
                    timeout_s=TIMEOUT)


def goal_ticks(rig, arm: str, values: dict[str, float]) -> dict[int, int]:
    hw = rig.hardware[arm]
    return {hw.motor(n).id: int(round(ticks_of(rig.unit, arm, n, v, hw.gripper_travel))) % 4096
            for n, v in values.items()}


def truth_values(rig, arm: str) -> dict[str, float]:
    t = get(rig.info["person"], "/truth")[arm]
    return {**t["q"], "gripper": t["gripper"]}


@pytest.fixture(scope="module")
def rig():
    unit = random_unit(7).with_cameras(**SMALL)
    r = VirtualSO101(unit)
    r.start()
    yield r
    r.close()


# -- unit files --------------------------------------------------------------------------------------
def test_unit_files_roundtrip_and_errors(tmp_path):
    for name in ("so101_default", "so101_koch"):
        u = load_unit(name)
        assert u.follower.baudrate == 1_000_000 and u.follower.return_delay_us == 0
        assert {c.name: (c.width, c.height, c.fps) for c in u.cameras} == {"front": (640, 480, 30.0),
                                                                          "wrist": (640, 480, 30.0)}
    assert load_unit("so101_koch").leader.hardware == "koch_leader"
    u = random_unit(5, leader="koch_leader")
    offs = [m.offset for m in u.follower.motors.values()] + [m.offset for m in u.leader.motors.values()]
    dirs = {m.direction for m in u.follower.motors.values()} | {m.direction for m in u.leader.motors.values()}
    assert all(0 <= o < 4096 for o in offs) and len(set(offs)) > 6 and dirs == {1, -1}
    p = u.save(tmp_path / "u.yaml")
    back = load_unit(p)
    assert back.to_dict() == u.to_dict()
    assert random_unit(5, leader="koch_leader").to_dict() == u.to_dict()  # seeded

    d = u.to_dict()
    d["follower"]["motors"]["gripper"]["offset"] = 5000
    with pytest.raises(UnitError, match="offset 5000 outside"):
        unit_from_dict(d)
    d = u.to_dict()
    d["leader"]["motors"]["gripper"]["direction"] = 0
    with pytest.raises(UnitError, match="direction must be 1 or -1"):
        unit_from_dict(d)
    d = u.to_dict()
    del d["follower"]["motors"]["wrist_roll"]
    with pytest.raises(UnitError, match="do not match hardware"):
        unit_from_dict(d)
    d = u.to_dict()
    d["twin"]["fricton_scale"] = 2.0
    with pytest.raises(UnitError, match="unknown keys.*fricton_scale"):
        unit_from_dict(d)
    with pytest.raises(UnitError, match="no unit file 'nope'"):
        load_unit("nope")


def test_encoder_goal_unwraps_into_the_joint_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        enc = Encoder(MotorUnit(int(rng.integers(0, 4096)), int(rng.choice([-1, 1]))), 0.0, 0.0, rng)
        lo, hi = -2.8, 2.8
        a = rng.uniform(lo, hi)
        raw = int(round(enc.exact(a))) % 4096
        assert abs(enc.angle(raw, lo, hi) - a) <= 1.0 / TICKS_PER_RAD
        assert enc.ticks(a) == raw
    enc = Encoder(MotorUnit(100, 1), 0.0, 0.0, rng)  # a goal in the gap beyond the range -> the nearer limit
    assert enc.angle(int(enc.exact(math.pi)) % 4096, -2.8, 2.8) in (-2.8, 2.8)
    # backlash: reversing direction leaves the reading still for `backlash` ticks
    enc = Encoder(MotorUnit(2000, 1), 0.0, 4.0, rng)
    seq = [enc.ticks(x / TICKS_PER_RAD) for x in (0, 10, 9, 8, 7, 6, 5)]
    assert seq[:5] == [2000, 2008, 2008, 2008, 2008] and seq[6] == 2007


# -- the rig: bus, physics, person, cameras ------------------------------------------------------------
def test_present_position_is_the_true_angle_through_the_unit(rig):
    for arm in ("follower", "leader"):
        hw = rig.hardware[arm]
        ids = [m.id for m in hw.motors]
        with bus_for(rig, arm) as bus:
            reads = [bus.sync_read("Present_Position", ids) for _ in range(5)]
        truth = truth_values(rig, arm)
        for m in hw.motors:
            want = ticks_of(rig.unit, arm, m.name, truth[m.name], hw.gripper_travel)
            got = np.mean([(r[m.id] - want + 2048) % 4096 - 2048 for r in reads])
            assert abs(got) <= 1.5, f"{arm} {m.name}: reads {[r[m.id] for r in reads]}, true {want:.1f}"


def test_goal_position_moves_the_twin_in_real_time(rig):
    hw = rig.hardware["follower"]
    ids = [m.id for m in hw.motors]
    goal = {"shoulder_pan": 0.4, "shoulder_lift": 0.3, "elbow_flex": 1.1, "wrist_flex": 1.3, "wrist_roll": -0.6,
            "gripper": 0.5}
    t_sim0, t0 = float(rig.follower.data.time), time.monotonic()
    with bus_for(rig, "follower") as bus:
        bus.sync_write("Torque_Enable", {i: 1 for i in ids})
        time.sleep(0.05)
        bus.sync_write("Goal_Position", goal_ticks(rig, "follower", goal))
        time.sleep(1.0)
        truth = truth_values(rig, "follower")
        pos = bus.sync_read("Present_Position", ids)
        bus.sync_write("Torque_Enable", {i: 0 for i in ids})
    wall, sim = time.monotonic() - t0, float(rig.follower.data.time) - t_sim0
    for n, v in goal.items():
        assert abs(truth[n] - v) < 0.02, f"{n}: at {truth[n]:.3f}, goal {v}"
        want = ticks_of(rig.unit, "follower", n, truth[n], hw.gripper_travel)
        assert tick_diff(pos[hw.motor(n).id], want) <= 3
    assert 0.8 < sim / wall < 1.05, f"physics ran {sim:.2f} s in {wall:.2f} s of wall time"


def test_torque_off_sags_and_the_person_poses_it_exactly(rig):
    url = rig.info["person"]
    hw = rig.hardware["follower"]
    ids = [m.id for m in hw.motors]
    post(url, {"do": "pose", "arm": "follower", "angles": {"shoulder_lift": 0.0, "elbow_flex": 0.3}})
    held = truth_values(rig, "follower")
    post(url, {"do": "release", "arm": "follower"})
    time.sleep(0.5)
    sagged = truth_values(rig, "follower")
    assert abs(sagged["shoulder_lift"] - held["shoulder_lift"]) > 0.3, (held, sagged)  # nothing holds it up

    for pose in ("check", "zero"):
        post(url, {"do": "pose", "arm": "follower", "pose": pose})
        truth = truth_values(rig, "follower")
        for n, v in hw.calibration[pose].items():
            assert truth[n] == pytest.approx(v, abs=1e-6), (pose, n)
        with bus_for(rig, "follower") as bus:
            pos = bus.sync_read("Present_Position", ids)
        for n, v in hw.calibration[pose].items():
            assert tick_diff(pos[hw.motor(n).id], ticks_of(rig.unit, "follower", n, v, hw.gripper_travel)) <= 2.5
    time.sleep(0.3)  # still held
    assert truth_values(rig, "follower")["shoulder_lift"] == pytest.approx(0.0, abs=1e-6)
    # a powered arm cannot be posed
    with bus_for(rig, "follower") as bus:
        bus.write(hw.motor("elbow_flex").id, "Torque_Enable", 1)
        with pytest.raises(PersonError, match="torque is on in the follower's elbow_flex"):
            post(url, {"do": "pose", "arm": "follower", "pose": "check"})
        bus.write(hw.motor("elbow_flex").id, "Torque_Enable", 0)
    # powering a held joint: it holds itself, the person lets go of it
    post(url, {"do": "pose", "arm": "follower", "pose": "zero"})
    with bus_for(rig, "follower") as bus:
        bus.write(hw.motor("wrist_flex").id, "Torque_Enable", 1)
        assert "wrist_flex" not in get(url, "/truth")["follower"]["held"]
        bus.write(hw.motor("wrist_flex").id, "Torque_Enable", 0)
    post(url, {"do": "release", "arm": "follower"})


def test_sweep_reaches_every_limit(rig):
    url = rig.info["person"]
    hw = rig.hardware["leader"]
    ids = {m.id: m.name for m in hw.motors}
    spec = rig.spec
    limits = {n: (lo, hi) for n, lo, hi in zip(spec.joint_names, spec.lower, spec.upper)}
    limits["gripper"] = (0.0, 1.0)
    lo_seen = {n: math.inf for n in limits}
    hi_seen = {n: -math.inf for n in limits}
    done = threading.Event()
    out = {}

    def sweep():
        try:
            out["r"] = post(url, {"do": "sweep", "arm": "leader", "seconds": 3.0})
        finally:
            done.set()

    th = threading.Thread(target=sweep)
    with bus_for(rig, "leader") as bus:
        th.start()
        while not done.is_set():
            for i, raw in bus.sync_read("Present_Position", list(ids)).items():
                n = ids[i]
                m = rig.unit.leader.motors[n]
                scale = hw.gripper_travel if n == "gripper" else 1.0
                a = Encoder(m, 0, 0, None).angle(raw, limits[n][0] * scale - 0.3, limits[n][1] * scale + 0.3) / scale
                lo_seen[n], hi_seen[n] = min(lo_seen[n], a), max(hi_seen[n], a)
            time.sleep(0.002)
    th.join()
    assert out["r"]["swept"] == list(ids.values())
    for n, (lo, hi) in limits.items():
        tol = 2.5 / TICKS_PER_RAD / (hw.gripper_travel if n == "gripper" else 1.0)
        assert lo_seen[n] == pytest.approx(lo, abs=tol) and hi_seen[n] == pytest.approx(hi, abs=tol), n


def _mjpeg_frames(url: str, n: int, timeout: float = 10.0) -> list[np.ndarray]:
    frames = []
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        while len(frames) < n:
            line = r.readline()
            if line.lower().startswith(b"content-length:"):
                size = int(line.split(b":")[1])
                while r.readline() not in (b"\r\n", b"\n"):
                    pass
                jpeg = r.read(size)
                assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
                frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    return frames


def test_cameras_serve_the_live_scene(rig):
    url = rig.info["person"]
    front = rig.info["cameras"]["front"]
    post(url, {"do": "pose", "arm": "follower", "pose": "zero"})
    a = _mjpeg_frames(front, 2)[-1]
    wrist = _mjpeg_frames(rig.info["cameras"]["wrist"], 1)[-1]
    post(url, {"do": "pose", "arm": "follower", "angles": {"shoulder_pan": 1.2, "shoulder_lift": 0.8}})
    b = _mjpeg_frames(front, 2)[-1]
    post(url, {"do": "release", "arm": "follower"})
    assert a.shape == b.shape == wrist.shape == (SMALL["height"], SMALL["width"], 3)
    diff = np.abs(a.astype(int) - b.astype(int)).mean(axis=2)
    assert (diff > 40).mean() > 0.01, "the front camera did not see the arm move"
    assert np.abs(a.astype(int) - wrist.astype(int)).mean() > 10  # two different cameras
    # nobody watching: the scene is rendered every 0.5 s, not at 10 fps
    src = rig.cameras["front"].source
    time.sleep(0.3)
    n0 = src.renders
    time.sleep(1.5)
    assert src.renders - n0 <= 5, src.renders - n0


def test_person_rejects_bad_requests(rig):
    url = rig.info["person"]
    for body, msg in [({"do": "dance"}, "unknown action 'dance'"),
                      ({"do": "pose", "arm": "folower", "pose": "zero"}, "'arm' must be 'follower' or 'leader'"),
                      ({"do": "pose", "arm": "leader", "pose": "rest"}, "unknown pose 'rest'"),
                      ({"do": "pose", "arm": "leader", "angles": {"elbow_flex": 9.0}}, "outside its range"),
                      ({"do": "plug", "arm": "leader", "motor": "elbow"}, "no motor 'elbow'"),
                      ({"do": "scene"}, "needs an integer 'seed'")]:
        with pytest.raises(PersonError, match=msg):
            post(url, body)
    req = urllib.request.Request(url, data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400 and "JSON" in json.loads(e.value.read())["error"]


def _teleoperate(rig, stop: threading.Event, hz: float = 60.0) -> None:
    """A minimal leader -> follower loop (what the teleop driver does), using the unit's
    offsets directly: Present_Position of the leader -> Goal_Position of the follower."""
    lhw, fhw, unit = rig.hardware["leader"], rig.hardware["follower"], rig.unit
    limits = {n: (lo, hi) for n, lo, hi in zip(rig.spec.joint_names, rig.spec.lower, rig.spec.upper)}
    limits["gripper"] = (0.0, 1.0)
    with bus_for(rig, "leader") as lb, bus_for(rig, "follower") as fb:
        fb.sync_write("Torque_Enable", {m.id: 1 for m in fhw.motors})
        t0, k = time.monotonic(), 0
        while not stop.is_set():
            raw = lb.sync_read("Present_Position", [m.id for m in lhw.motors])
            values = {}
            for m in lhw.motors:
                scale = lhw.gripper_travel if m.name == "gripper" else 1.0
                lo, hi = limits[m.name]
                values[m.name] = Encoder(unit.leader.motors[m.name], 0, 0, None).angle(
                    raw[m.id], lo * scale, hi * scale) / scale
            fb.sync_write("Goal_Position", goal_ticks(rig, "follower", values))
            k += 1
            time.sleep(max(0.0, t0 + k / hz - time.monotonic()))
        fb.sync_write("Torque_Enable", {m.id: 0 for m in fhw.motors})


def _run_teleop(rig, episodes: int, seed: int) -> list[dict]:
    url = rig.info["person"]
    stop = threading.Event()
    th = threading.Thread(target=_teleoperate, args=(rig, stop))
    th.start()
    events, last = [], get(url, "/status")["events"]
    try:
        post(url, {"do": "teleop", "episodes": episodes, "seed": seed, "max_seconds": 15})
        leader0 = truth_values(rig, "leader")
        moved = False
        t_end = time.monotonic() + 20 * episodes
        while sum(e["event"] != "start" for e in events) < episodes and time.monotonic() < t_end:
            new = get(url, "/events", after=last, timeout=1.0)["events"]
            events += new
            last = new[-1]["k"] if new else last
            lv = truth_values(rig, "leader")
            moved = moved or max(abs(lv[n] - leader0[n]) for n in lv) > 0.2
    finally:
        post(url, {"do": "stop"})
        stop.set()
        th.join()
    assert moved, "the person never moved the leader"
    return events


def test_teleop_person_moves_the_leader_and_reports_success(rig):
    events = _run_teleop(rig, 1, seed=3)
    assert [e["event"] for e in events] == ["start", "success"], events
    assert events[0]["seed"] == 3 and events[1]["t"] > events[0]["t"]


def test_objects_are_placed_like_the_env_places_them(rig):
    from robot_rl.sim.env import RobotEnv
    env = RobotEnv(task="pick_cube", cameras=[], safety=False)
    try:
        env.reset(seed=12)
        want = env.task.object_state()[:3]
    finally:
        env.close()
    arm = rig.follower.values()
    assert post(rig.info["person"], {"do": "scene", "seed": 12}) == {"ok": True, "do": "scene", "seed": 12}
    got = np.array(get(rig.info["person"], "/truth")["object_state"][:3])
    assert np.abs(got[:2] - want[:2]).max() < 1e-3 and abs(got[2] - want[2]) < 3e-3
    assert all(abs(rig.follower.values()[n] - arm[n]) < 0.05 for n in arm)  # the arm stayed put


@pytest.mark.slow
def test_teleop_koch_leader_three_episodes():
    with VirtualSO101(random_unit(11, leader="koch_leader").with_cameras(64, 48, 5)) as rig:
        events = _run_teleop(rig, 3, seed=20)
    assert [e["event"] for e in events] == ["start", "success"] * 3, events
    assert [e["seed"] for e in events] == [20, 20, 21, 21, 22, 22]


# -- cables -------------------------------------------------------------------------------------------
def test_latency_delays_the_goal_and_close_stops_every_thread():
    from robot_rl.drivers.virtual.servo_bus import VirtualServo
    unit = random_unit(8).with_cameras(64, 48, 2)
    unit.twin.latency_ms = 150.0
    before = set(threading.enumerate())
    rig = VirtualSO101(unit)
    try:
        rig.start()
        ours = set(threading.enumerate()) - before
        plant = rig.follower
        servo = rig.servos["follower"]["elbow_flex"]
        assert isinstance(servo, VirtualServo) and servo.plant is plant
        act = plant.act["elbow_flex"]
        ctrl0 = float(plant.data.ctrl[act])
        raw = int(round(ticks_of(unit, "follower", "elbow_flex", ctrl0 + 0.5, 1.0))) % 4096
        overruns = plant.overruns
        t0 = time.monotonic()
        plant.command(servo, True, raw)  # what the emulator calls on a Goal_Position write
        t0_end = time.monotonic()  # it arrived in [t0, t0_end] (the lock may wait for a physics batch)
        while float(plant.data.ctrl[act]) == ctrl0 and time.monotonic() - t0 < 2.0:
            time.sleep(0.002)
        assert 0.15 <= time.monotonic() - t0 < 1.0
        assert float(plant.data.ctrl[act]) == pytest.approx(ctrl0 + 0.5, abs=1e-3)
        # it acts from the physics step nearest arrival + latency (a servo's kHz loop), not
        # from the physics thread's next 10 ms tick
        motor, at = plant.applied[-1]
        dt = plant.model.opt.timestep
        assert motor == "elbow_flex" and at >= t0 + 0.15 - dt, at - t0  # never early
        if plant.overruns == overruns:  # physics kept real time (a loaded machine lets it slip)
            assert at <= t0_end + 0.15 + dt, (at - t0, t0_end - t0)
        # with no latency: from the step the physics stood at on arrival
        plant.latency_s = 0.0
        t1 = time.monotonic()
        plant.command(servo, True, raw)
        t1_end = time.monotonic()
        assert t1 - dt <= plant.applied[-1][1] <= t1_end, (plant.applied[-1][1] - t1, t1_end - t1)
    finally:
        rig.close()
    assert ours and not [t.name for t in ours if t.is_alive()]


def test_unplug_makes_client_io_fail():
    with VirtualSO101(random_unit(8).with_cameras(64, 48, 2)) as rig:
        hw = rig.hardware["follower"]
        with bus_for(rig, "follower") as bus:
            assert bus.ping(hw.motor("gripper").id) > 0
            post(rig.info["person"], {"do": "unplug", "arm": "follower", "motor": "gripper"})
            with pytest.raises(ServoError):
                bus.ping(hw.motor("gripper").id)
            assert bus.ping(hw.motor("wrist_roll").id) > 0
            post(rig.info["person"], {"do": "unplug", "arm": "follower"})
            with pytest.raises(PortError):
                bus.read(hw.motor("wrist_roll").id, "Present_Position")
        assert get(rig.info["person"], "/truth")["follower"]["plugged"] == []
        with bus_for(rig, "leader") as bus:  # the other arm is untouched
            assert bus.ping(1) > 0


def test_factory_new_servos_join_the_bus_when_plugged():
    unit = random_unit(9, leader="koch_leader", factory_new=True).with_cameras(64, 48, 2)
    with VirtualSO101(unit) as rig:
        url = rig.info["person"]
        with ServoBus(rig.info["leader_port"], "dynamixel", 57_600, timeout_s=TIMEOUT) as bus:  # XL330 factory baud
            assert bus.scan(range(0, 8), timeout_s=TIMEOUT) == {}
            post(url, {"do": "plug", "arm": "leader", "motor": "gripper"})
            assert list(bus.scan(range(0, 8), timeout_s=TIMEOUT)) == [1]
            bus.write(1, "ID", 6)
            bus.write(6, "Baud_Rate", 3)  # 1 Mbaud
            post(url, {"do": "plug", "arm": "leader", "motor": "wrist_roll"})
            assert list(bus.scan(range(0, 8), timeout_s=TIMEOUT)) == [1]
            bus.set_baudrate(1_000_000)
            assert list(bus.scan(range(0, 8), timeout_s=TIMEOUT)) == [6]
            post(url, {"do": "plug", "arm": "leader", "motor": "elbow_flex", "only": True})
            bus.set_baudrate(57_600)
            assert list(bus.scan(range(0, 8), timeout_s=TIMEOUT)) == [1]
            assert get(url, "/truth")["leader"]["plugged"] == ["elbow_flex"]
        # STS3215 factory baud: 1 Mbaud
        with ServoBus(rig.info["follower_port"], "feetech", 1_000_000, timeout_s=TIMEOUT) as bus:
            assert bus.scan(range(0, 8), timeout_s=TIMEOUT) == {}
            post(url, {"do": "plug", "arm": "follower", "motor": "shoulder_pan"})
            assert list(bus.scan(range(0, 8), timeout_s=TIMEOUT)) == [1]


# -- command line ---------------------------------------------------------------------------------------
def test_cli_prints_ports_writes_info_and_stops_on_sigterm(tmp_path):
    info_path = tmp_path / "info.json"
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "virtual", "so101", "unit=so101_koch",
                             "--camera-size", "64x48", "--fps", "2", "--info-json", str(info_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # like `cmd &`
    try:
        t_end = time.monotonic() + 30
        while not info_path.exists() and proc.poll() is None and time.monotonic() < t_end:
            time.sleep(0.1)
        assert info_path.exists(), proc.stderr.read() if proc.poll() is not None else "no info file"
        info = json.loads(info_path.read_text())
        assert set(info["cameras"]) == {"front", "wrist"} and info["person"].startswith("http://127.0.0.1:")
        with ServoBus(info["leader_port"], "dynamixel", 1_000_000, timeout_s=TIMEOUT) as bus:
            assert bus.ping(1) == 1200  # xl330-m288
        with ServoBus(info["follower_port"], "feetech", 1_000_000, timeout_s=TIMEOUT) as bus:
            assert bus.ping(6) == 777  # sts3215
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
        print(f"robot-rl virtual so101 said:\n{out}\n{err}")
        raise
    assert proc.returncode == 0, err
    assert info["follower_port"] in out and info["leader_port"] in out and info["person"] in out
    assert "stopped" in out and not info_path.exists()


@pytest.mark.slow
def test_scored_episodes_on_the_virtual_arm_through_the_inference_node(tmp_path, ros_domain):
    """`python -m robot_rl.ros.deploy --driver feetech --person URL`: per episode the inference
    node is paused, the arm goes home over /joint_trajectory, the person sets the scene for the
    seed, the policy resumes, the person referees; every episode is counted."""
    from policy_helpers import record_expert_store
    from robot_rl.cli.main import main
    store = record_expert_store(tmp_path / "pick.zarr", "pick_cube", episodes=2, keys=["joint_pos", "gripper", "ee_pos",
                                                                                       "ee_quat"])
    run = tmp_path / "policy"
    assert main(["train", "policy=mlp_bc", f"dataset={store}", f"out={run}", "steps=20", "policy.observations=proprio",
                 "eval_final=false", "tensorboard=false", "progress=false"]) == 0
    unit = random_unit(11).with_cameras(**SMALL)
    rig = VirtualSO101(unit)
    info = rig.start()
    env = {**os.environ, "ROBOT_RL_CALIBRATION_DIR": str(tmp_path / "cal")}
    try:
        cal = tmp_path / "cal" / "follower.yaml"
        r = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "calibrate", "robot=so101", "arm=follower",
                            f"port={info['follower_port']}", "id=follower", f"person={info['person']}", f"out={cal}"],
                           env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([sys.executable, "-m", "robot_rl.ros.deploy", str(run / "checkpoints" / "last"),
                            "--episodes", "2", "--timeout-steps", "30", "--mode", "cold", "--driver", "feetech",
                            "--port", info["follower_port"], "--calibration", str(cal), "--person", info["person"],
                            "--log-dir", str(tmp_path / "dep")], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        dep = json.loads((tmp_path / "dep" / "deploy.json").read_text())
        assert dep["episodes"] == 2 and [o["seed"] for o in dep["outcomes"]] == [200000, 200001]
        assert all(o["steps"] > 0 for o in dep["outcomes"])
        assert "paused" in r.stdout  # the held-ticks line: the node sat out each homing
        # without a person the command refuses at once
        r = subprocess.run([sys.executable, "-m", "robot_rl.ros.deploy", str(run / "checkpoints" / "last"),
                            "--driver", "feetech", "--port", info["follower_port"]], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and "--person" in r.stderr
    finally:
        rig.close()
