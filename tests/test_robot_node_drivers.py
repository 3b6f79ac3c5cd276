"""The robot node on hardware drivers, as processes: ros2_control against the twin-backed fake
controller manager. A latched e-stop holds on every path (reset, teleop start, command, policy
chunk), and a /joint_trajectory chunk reaches the controller as ONE message.

    scripts/isolated.sh .venv/bin/python -m pytest -q tests/test_robot_node_drivers.py
"""
from __future__ import annotations

import numpy as np
import pytest

from ros_helpers import node_process, robot_node, spawn
from robot_rl.spec import load_spec

ARM6 = load_spec("arm6")
UR = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]
UR_TRAJ = "/scaled_joint_trajectory_controller/joint_trajectory"


def fake_ur():
    return node_process("robot_rl.ros.fake_ros2_control", "--rate", "100", "--joint-map", "ur")


def _positions(msgs, names):
    """Latest positions of `names` from a list of JointState messages that have them all."""
    for m in reversed(msgs):
        if all(n in m.name for n in names):
            idx = {n: i for i, n in enumerate(m.name)}
            return np.array([m.position[idx[n]] for n in names])
    return None


def test_ros2_control_robot_node_forwards_chunks_and_estop_holds_every_path(client_factory):
    from builtin_interfaces.msg import Duration
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from robot_rl.ros import msgs, topics
    with fake_ur() as fake, robot_node("--robot", "arm6", "--driver", "ros2_control", "--joint-map", "ur",
                                       "--controller", "scaled_joint_trajectory_controller", "--interface",
                                       "trajectory", "--action-mode", "joint_pos", "--rate", "50",
                                       "--timeout", "0") as proc:
        c = client_factory(proc)
        sent = []  # what reaches the controller's topic
        c.node.create_subscription(JointTrajectory, UR_TRAJ, lambda m: sent.append(m), topics.reliable_qos(100))
        c.spin_until(lambda: _positions(c.js, ARM6.joint_names) is not None, 30.0, "the robot node's joint states")
        c.spin_until(lambda: _positions(c.js, UR) is not None, 30.0, "the controller's joint states")
        c.wait_ready(30.0)
        home = _positions(c.js, UR)
        assert home is not None and np.allclose(home, ARM6.home, atol=0.02)

        # a policy chunk of 3 points -> one JointTrajectory with 3 points and their time_from_start
        c.spin(0.5)  # the driver's first hold after connecting has arrived: count from a quiet wire
        n0 = len(sent)
        tr = JointTrajectory(joint_names=["shoulder_pan", "wrist_3"])
        tr.points = [JointTrajectoryPoint(positions=[home[0] + 0.05 * (k + 1), home[5] - 0.05 * (k + 1)],
                                          time_from_start=Duration(sec=0, nanosec=200_000_000 * (k + 1)))
                     for k in range(3)]
        c.pub_traj.publish(tr)
        c.spin(1.2)
        multi = [m for m in sent[n0:] if len(m.points) == 3]
        assert len(multi) == 1, [len(m.points) for m in sent[n0:]]
        t = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in multi[0].points]
        assert np.allclose(np.diff(t), 0.2, atol=0.02) and t[0] == pytest.approx(0.2, abs=0.05)
        # nothing else while it ran (act(None) leaves it running); after its end one hold at its
        # last point, not a message per tick
        after = sent[n0 + 1:]
        assert sent[n0] is multi[0] and len(after) <= 1, [len(m.points) for m in sent[n0:]]
        if after:
            assert np.allclose(after[0].points[0].positions, multi[0].points[-1].positions, atol=1e-6)
        q = _positions(c.js, UR)
        assert q[0] == pytest.approx(home[0] + 0.15, abs=0.03) and q[5] == pytest.approx(home[5] - 0.15, abs=0.03)

        # e-stop: nothing moves the arm on any path
        assert c.call(SetBool, "/robot/estop", data=True).success
        c.spin(0.3)
        q0 = _positions(c.js, UR)
        r = c.call(Trigger, "/robot/reset")
        assert not r.success and "e-stop" in r.message
        c.pub_event.publish(String(data="start seed=1"))
        c.stream(lambda: c.pub_joint.publish(msgs.joint_state(["shoulder_pan"], [home[0] - 0.3])), 0.4)
        c.pub_traj.publish(tr)
        c.spin(0.8)
        assert np.allclose(_positions(c.js, UR), q0, atol=5e-3)
        assert c.call(SetBool, "/robot/estop", data=False).success
        c.spin(0.4)
        assert np.allclose(_positions(c.js, UR), q0, atol=5e-3)  # release alone moves nothing
        assert fake.poll() is None and proc.poll() is None


# -- the SO-101 follower on the Feetech driver, against the virtual SO-101 ---------------------------
SO101 = load_spec("so101")


@pytest.fixture(scope="module")
def rigs(tmp_path_factory):
    """Virtual SO-101-class units (no cameras) with calibrated arms, made on first use:
    ``rigs(follower_hw, leader_hw) -> (rig, follower file, leader file)``."""
    from robot_rl.calibration.prompter import PersonPrompter
    from robot_rl.calibration.procedures import calibrate
    from robot_rl.drivers.virtual.so101 import VirtualSO101, random_unit
    made = {}

    def get(follower: str = "so101_follower", leader: str = "so101_leader"):
        if (follower, leader) not in made:
            rig = VirtualSO101(random_unit(11, follower=follower, leader=leader, cameras=[]))
            info = rig.start()
            made[(follower, leader)] = (rig,)
            d = tmp_path_factory.mktemp(f"cal_{follower}")
            files = [calibrate(info[f"{arm}_port"], rig.hardware[arm], SO101, PersonPrompter(info["person"], quiet=True),
                               arm_id=arm, sweep_s=2.0, log=lambda *a, **k: None).save(d / f"{arm}.yaml")
                     for arm in ("follower", "leader")]
            made[(follower, leader)] = (rig, *files)
        return made[(follower, leader)]
    yield get
    for r in made.values():
        r[0].close()


@pytest.fixture
def so101(rigs):
    return rigs()


def _truth(rig):
    from robot_rl.drivers.virtual.person import get
    return get(rig.info["person"], "/truth")


def test_servo_arm_setup_errors_are_one_clear_message(so101, tmp_path):
    """Wrong port, wrong baud, missing id, wrong model, uncalibrated arm, a calibration from
    another arm, leader/follower joint mismatch: each one error naming the cause."""
    import yaml

    from robot_rl.drivers.servo_arm import ArmSetupError, ServoArm
    from robot_rl.teleop.devices import DeviceError, LeaderDevice
    rig, fcal, lcal = so101
    port = rig.info["follower_port"]

    def err(**kw) -> str:
        arm = ServoArm("so101", **{"port": port, "calibration": fcal, **kw})
        with pytest.raises(ArmSetupError) as e:
            arm.connect()
        assert not arm.is_connected
        return str(e.value)

    assert "cannot open /dev/ttyNOPE" in err(port="/dev/ttyNOPE")
    m = err(baudrate=500_000)
    assert "at 500000 baud, but they answer at 1000000 baud" in m, m
    rig.unplug("follower", "wrist_roll")  # a motor cable out of the daisy chain
    try:
        m = err()
        assert "wrist_roll (id 5) do not answer" in m, m
    finally:
        rig.plug("follower", "wrist_roll")
    servo = rig.servos["follower"]["elbow_flex"]
    real = servo.get("Model_Number")
    servo.set("Model_Number", 1060)
    try:
        m = err()
        assert "elbow_flex (id 3) is model number 1060, expected 777" in m, m
    finally:
        servo.set("Model_Number", real)
    assert "is not calibrated: run `robot-rl calibrate" in ArmSetupError_text(lambda: ServoArm("so101", port=port))
    other = yaml.safe_load(open(fcal))
    next(iter(other["motors"].values()))["homing_offset"] += 7  # another arm's file
    bad = tmp_path / "other.yaml"
    bad.write_text(yaml.safe_dump(other, sort_keys=False))
    m = err(calibration=bad)
    assert "Homing_Offset does not match" in m, m
    # a leader whose joints are not the follower's robot: the arm6 spec has other joints
    dev = LeaderDevice(robot="arm6", port=rig.info["leader_port"], calibration=lcal, events="none")
    with pytest.raises(DeviceError) as e:
        dev.connect()
    assert "leader arm" in str(e.value) and "arm6" in str(e.value), str(e.value)
    # and it all left the arm usable
    arm = ServoArm("so101", port=port, calibration=fcal)
    arm.connect()
    arm.disconnect()


def ArmSetupError_text(make) -> str:
    from robot_rl.drivers.servo_arm import ArmSetupError
    with pytest.raises(ArmSetupError) as e:
        make().connect()
    return str(e.value)


ARMS = [("so101_follower", "so101_leader", "feetech"), ("koch_follower", "koch_leader", "dynamixel")]


@pytest.mark.parametrize("follower,leader,driver", ARMS)
def test_leader_device_reads_the_leaders_joint_angles(rigs, follower, leader, driver):
    """The teleop device of an SO-101 leader (Feetech) and a Koch leader (Dynamixel): absolute
    joint positions in the spec's angles, what the person holds."""
    from robot_rl.teleop.devices import LeaderDevice
    rig, _, lcal = rigs(follower, leader)
    pose = {"shoulder_pan": 0.4, "shoulder_lift": -0.3, "elbow_flex": 1.0, "wrist_flex": 0.5, "wrist_roll": -1.2,
            "gripper": 0.6}
    rig.leader.hold(pose)
    dev = LeaderDevice(robot="so101", port=rig.info["leader_port"], calibration=lcal, events="none")
    dev.connect()
    try:
        cmd = dev.poll()
        assert np.allclose(cmd.joints, [pose[n] for n in SO101.joint_names], atol=4 * 2 * np.pi / 4096), cmd.joints
        assert abs(cmd.gripper - 0.6) < 0.01 and cmd.intervention and not cmd.events
    finally:
        dev.close()
        rig.leader.release()


@pytest.mark.parametrize("follower,leader,driver", ARMS)
def test_servo_robot_node_estop_alarm_and_every_path(rigs, client_factory, follower, leader, driver):
    """A servo-bus follower through the robot node (SO-101 on Feetech, a Koch follower on
    Dynamixel): joint commands move the (virtual) arm; a latched e-stop holds on every path
    then turns torque off; an overload alarm holds, turns torque off with one message and
    takes nothing until /robot/reset clears it."""
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from robot_rl.ros import msgs
    rig, fcal, _ = rigs(follower, leader)
    with robot_node("--driver", driver, "--port", rig.info["follower_port"], "--calibration", str(fcal),
                    "--action-mode", "joint_pos", "--rate", "50", "--timeout", "0", "--estop-hold", "0.3") as proc:
        c = client_factory(proc)
        c.wait_streaming(timeout=30)
        q0 = c.q()[:5]
        target = np.clip(q0 + [0.3, 0, 0, 0, 0], SO101.lower, SO101.upper)
        names = SO101.joint_names
        c.stream(lambda: c.joint_command(dict(zip(names, target))), 1.5)
        t = _truth(rig)["follower"]
        assert abs(t["q"]["shoulder_pan"] - target[0]) < 0.05, (t["q"], target)
        assert abs(c.q()[0] - t["q"]["shoulder_pan"]) < 0.01  # the node's reading = the truth (calibrated)

        # e-stop: nothing moves it; torque off after the hold
        assert c.call(SetBool, "/robot/estop", data=True).success
        c.spin(0.6)
        assert not any(_truth(rig)["follower"]["torque"].values())
        q_stop = _truth(rig)["follower"]["q"]
        r = c.call(Trigger, "/robot/reset")
        assert not r.success and "e-stop" in r.message
        c.pub_event.publish(String(data="start seed=2"))
        c.stream(lambda: c.joint_command(dict(zip(names, q0))), 0.5)
        c.stream(lambda: c.pub_action.publish(msgs.float_array(np.r_[q0, 0.0], "joint_pos")), 0.5)
        assert not any(_truth(rig)["follower"]["torque"].values())  # no path turned torque on
        assert c.call(SetBool, "/robot/estop", data=False).success
        c.spin(0.4)
        t = _truth(rig)["follower"]
        assert all(t["torque"].values())  # released: torque on where the arm is, not moving
        assert abs(t["q"]["shoulder_pan"] - q_stop["shoulder_pan"]) < 0.05

        # overload on the elbow: hold, then torque off, one ERROR line, a latched fault
        bus = rig.buses["follower"]
        bus.inject_error(3, ["overload"])
        c.spin(1.0)
        assert not any(_truth(rig)["follower"]["torque"].values())
        c.spin_until(lambda: "servo alarm" in (c.diag_value("fault") or ""), 5.0, "the fault on /diagnostics")
        c.stream(lambda: c.joint_command(dict(zip(names, target))), 0.5)
        assert not any(_truth(rig)["follower"]["torque"].values())  # commands do not resume it
        if driver == "feetech":  # the flag goes when the overload does; Dynamixel latches it until REBOOT
            r = c.call(Trigger, "/robot/reset")
            assert not r.success and "persists" in r.message  # the servo still reports it
            bus.clear_error(3)
        r = c.call(Trigger, "/robot/reset")  # Dynamixel: the reset REBOOTs the alarmed servo
        assert r.success and "cleared" in r.message, r.message
        c.spin(0.3)
        assert all(_truth(rig)["follower"]["torque"].values())
        c.stream(lambda: c.joint_command(dict(zip(names, q0))), 1.5)
        assert abs(_truth(rig)["follower"]["q"]["shoulder_pan"] - q0[0]) < 0.05  # follows again
    log = proc.log
    assert log.count("overload") >= 1 and log.count("[ERROR]") == 1, log[-3000:]
    assert ("rebooted servo(s) [3]" in log) == (driver == "dynamixel"), log[-3000:]


def test_unplugging_the_follower_mid_episode(tmp_path, client_factory):
    """The adapter is pulled during an episode: the robot node says so in one line and stays in a
    safe state, the recorder closes the episode as failed, the committed episode is intact."""
    from std_msgs.msg import String

    from robot_rl.calibration.prompter import PersonPrompter
    from robot_rl.calibration.procedures import calibrate
    from robot_rl.data.store import EpisodeStore
    from robot_rl.drivers.virtual.so101 import VirtualSO101, random_unit
    rig = VirtualSO101(random_unit(12, cameras=[]))
    info = rig.start()
    try:
        cal = calibrate(info["follower_port"], rig.hardware["follower"], SO101,
                        PersonPrompter(info["person"], quiet=True), arm_id="f", sweep_s=2.0,
                        log=lambda *a, **k: None).save(tmp_path / "f.yaml")
        store = tmp_path / "rec.zarr"
        rec = spawn("robot_rl.ros.recorder_node", "--contract", "hardware", "--out", str(store), "--robot", "so101",
                    "--task", "pick_cube", "--cameras", "none", "--mode", "realtime", "--fps", "50",
                    "--action-mode", "joint_pos")
        try:
            with robot_node("--driver", "feetech", "--port", info["follower_port"], "--calibration", str(cal),
                            "--action-mode", "joint_pos", "--rate", "50", "--timeout", "0") as proc:
                c = client_factory(proc)
                c.wait_streaming(timeout=30)
                c.spin_until(lambda: c.node.count_subscribers("/teleop/event") >= 2, 20.0, "the recorder")
                c.spin(1.0)
                c.pub_event.publish(String(data="start seed=0"))
                c.spin(1.0)
                c.pub_event.publish(String(data="success"))
                c.spin(1.0)
                c.pub_event.publish(String(data="start seed=1"))
                c.spin(0.8)
                rig.buses["follower"].unplug()
                c.spin(1.5)
                assert proc.poll() is None  # the node stays up, idle, in its safe state
                c.spin_until(lambda: "disconnected" in (c.diag_value("fault") or ""), 5.0, "the fault on /diagnostics")
        finally:
            rec.send_signal(2)
            rec_out, rec_err = rec.communicate(timeout=20)
        log = proc.log
        lines = [ln for ln in log.splitlines() if "disconnected" in ln]
        assert len(lines) == 1 and "[ERROR]" in lines[0] and "safe state" in lines[0], log[-3000:]
        with EpisodeStore.open(store) as st:
            meta = st.episodes_meta()
            assert [bool(m["success"]) for m in meta] == [True, False], (meta, rec_err[-2000:])
            assert st.episode(0)["joint_pos"].shape[0] > 30  # the committed episode, whole
    finally:
        rig.close()
