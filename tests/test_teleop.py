"""Teleop devices (ROS-free): keyboard mapping through a real pty, clear errors for absent
devices, the expert device against rollout_expert; plus the teleop node over DDS."""
from __future__ import annotations

import os
import pty
import sys
import time
import types

import numpy as np
import pytest

from robot_rl.teleop import (EVENTS, DeviceError, ExpertDevice, GamepadDevice, KeyboardDevice,
                             SpaceMouseDevice, TeleopCommand, make_device, parse_keys, twist_si)


# -- keyboard ------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def kb():
    master, slave = pty.openpty()
    clock = FakeClock()
    dev = KeyboardDevice(fd=slave, hold_s=0.25, speed=0.5, clock=clock)
    dev.connect()
    try:
        yield dev, master, clock
    finally:
        dev.close()
        os.close(master)
        os.close(slave)


def _send(master: int, data: bytes) -> None:
    os.write(master, data)
    time.sleep(0.05)  # let the pty line discipline pass it through


def test_keyboard_axes_through_pty(kb):
    dev, master, clock = kb
    assert not dev.poll().twist.any()
    _send(master, b"w")
    c = dev.poll()
    np.testing.assert_allclose(c.twist, [0.5, 0, 0, 0, 0, 0])
    _send(master, b"d")
    np.testing.assert_allclose(dev.poll().twist, [0.5, -0.5, 0, 0, 0, 0])  # w still held
    clock.t += 0.3  # past hold_s: released
    assert not dev.poll().twist.any()
    for key, axis, sign in [(b"s", 0, -1), (b"a", 1, 1), (b"r", 2, 1), (b"f", 2, -1), (b"u", 3, 1),
                            (b"o", 3, -1), (b"i", 4, 1), (b"k", 4, -1), (b"j", 5, 1), (b"l", 5, -1),
                            (b"\x1b[A", 0, 1), (b"\x1b[B", 0, -1), (b"\x1b[D", 1, 1), (b"\x1b[C", 1, -1)]:
        clock.t += 1.0
        _send(master, key)
        tw = dev.poll().twist
        expect = np.zeros(6)
        expect[axis] = 0.5 * sign
        np.testing.assert_allclose(tw, expect, err_msg=repr(key))


def test_keyboard_gripper_events_intervention_speed(kb):
    dev, master, clock = kb
    _send(master, b" ")
    assert dev.poll().gripper == 1.0
    _send(master, b" ")
    assert dev.poll().gripper == 0.0
    _send(master, b"c")
    assert dev.poll().gripper == 1.0
    _send(master, b"v")
    assert dev.poll().gripper == 0.0
    _send(master, b"\ryn\x7fxz")
    assert dev.poll().events == ["start", "success", "failure", "discard", "discard", "rerecord"]
    assert dev.poll().events == []  # events are reported once
    _send(master, b"\t")
    assert dev.poll().intervention
    _send(master, b"\t")
    assert not dev.poll().intervention
    _send(master, b"+w")
    c = dev.poll()
    assert c.twist[0] == pytest.approx(0.625)
    _send(master, b"\x04")
    assert dev.poll().quit


def test_keyboard_terminal_restored_and_not_a_tty(tmp_path):
    master, slave = pty.openpty()
    import termios
    before = termios.tcgetattr(slave)
    dev = KeyboardDevice(fd=slave)
    dev.connect()
    assert termios.tcgetattr(slave)[3] != before[3]  # lflag: no ICANON / ECHO
    dev.close()
    assert termios.tcgetattr(slave) == before
    os.close(master)
    os.close(slave)
    with open(tmp_path / "f", "w+") as f:
        with pytest.raises(DeviceError, match="not a TTY"):
            KeyboardDevice(fd=f.fileno()).connect()


def test_parse_keys_escape_sequences():
    assert parse_keys("w\x1b[Ax\x1b[1;5Cy") == ["w", "UP", "x", "y"]


def test_command_as_action_and_twist_si():
    from robot_rl.spec import load_spec
    spec = load_spec("so101")
    c = TeleopCommand(twist=np.array([1, -0.5, 0, 0, 0, 0.2], np.float32), gripper=1.0)
    np.testing.assert_allclose(c.ee_delta_action(), [1, -0.5, 0, 0, 0, 0.2, 1.0])
    lin, ang = twist_si(c.twist, spec)
    v = spec.max_delta_pos * spec.control_hz
    np.testing.assert_allclose(lin, [v, -0.5 * v, 0])
    np.testing.assert_allclose(ang, [0, 0, 0.2 * spec.max_delta_rot * spec.control_hz], rtol=1e-6)


def test_events_match_topics():
    from robot_rl.ros.topics import EVENTS as TOPIC_EVENTS
    assert tuple(EVENTS) == tuple(TOPIC_EVENTS)


# -- absent devices: clear errors -------------------------------------------------------------
def test_gamepad_without_pygame(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame -> ImportError
    with pytest.raises(DeviceError, match=r"pygame not installed \(pip install robot-rl\[hw\]\)"):
        GamepadDevice().connect()


def _fake_pygame(n_sticks: int, axes=(0.0,) * 6, buttons=(0,) * 12, hat=(0, 0)):
    state = {"axes": list(axes), "buttons": list(buttons), "hat": hat}

    class Joystick:
        def __init__(self, i):
            pass

        def init(self):
            pass

        def get_numaxes(self):
            return len(state["axes"])

        def get_axis(self, i):
            return state["axes"][i]

        def get_numbuttons(self):
            return len(state["buttons"])

        def get_button(self, i):
            return state["buttons"][i]

        def get_numhats(self):
            return 1

        def get_hat(self, i):
            return state["hat"]

    pg = types.SimpleNamespace(
        display=types.SimpleNamespace(init=lambda: None),
        joystick=types.SimpleNamespace(init=lambda: None, quit=lambda: None, get_count=lambda: n_sticks,
                                       Joystick=Joystick),
        event=types.SimpleNamespace(pump=lambda: None))
    return pg, state


def test_gamepad_none_found(monkeypatch):
    pg, _ = _fake_pygame(0)
    monkeypatch.setitem(sys.modules, "pygame", pg)
    with pytest.raises(DeviceError, match="no gamepad found"):
        GamepadDevice().connect()


def test_gamepad_mapping(monkeypatch):
    pg, state = _fake_pygame(1)
    monkeypatch.setitem(sys.modules, "pygame", pg)
    dev = GamepadDevice()
    dev.connect()
    state["axes"][1] = -1.0   # left stick up -> +x
    state["axes"][0] = 0.05   # inside the deadzone
    state["axes"][4] = 0.5    # right stick down -> -z
    state["hat"] = (1, 0)     # roll +
    state["buttons"][0] = 1   # A: gripper toggle
    state["buttons"][7] = 1   # start
    state["buttons"][4] = 1   # LB held: intervention
    c = dev.poll()
    np.testing.assert_allclose(c.twist, [1, 0, -0.5, 1, 0, 0])
    assert c.gripper == 1.0 and c.events == ["start"] and c.intervention
    c = dev.poll()  # buttons still held: no new edges
    assert c.gripper == 1.0 and c.events == []
    state["buttons"] = [0] * 12
    state["buttons"][3] = 1
    c = dev.poll()
    assert c.events == ["success"] and not c.intervention
    dev.close()


def test_spacemouse_without_pyspacemouse(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(DeviceError, match=r"pyspacemouse not installed \(pip install robot-rl\[hw\]\)"):
        SpaceMouseDevice().connect()


def test_spacemouse_none_found(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspacemouse", types.SimpleNamespace(open=lambda: None))
    with pytest.raises(DeviceError, match="no SpaceMouse found"):
        SpaceMouseDevice().connect()

    def boom():
        raise OSError("hid_open failed")
    monkeypatch.setitem(sys.modules, "pyspacemouse", types.SimpleNamespace(open=boom))
    with pytest.raises(DeviceError, match="no SpaceMouse found"):
        SpaceMouseDevice().connect()


def test_spacemouse_mapping(monkeypatch):
    st = types.SimpleNamespace(t=0, x=0.5, y=1.0, z=0.02, roll=0.0, pitch=0.0, yaw=0.3, buttons=[1, 0])
    mod = types.SimpleNamespace(open=lambda: True, read=lambda: st, close=lambda: None)
    monkeypatch.setitem(sys.modules, "pyspacemouse", mod)
    dev = SpaceMouseDevice()
    dev.connect()
    c = dev.poll()
    np.testing.assert_allclose(c.twist, [1.0, -0.5, 0.0, 0, 0, -0.3], rtol=1e-6)
    assert c.gripper == 1.0
    dev.close()


def test_make_device_unknown():
    with pytest.raises(DeviceError, match="unknown teleop device"):
        make_device("joystick9000")


# -- the expert device reproduces rollout_expert -------------------------------------------
def test_expert_device_matches_rollout_expert():
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.experts import rollout_expert
    env = RobotEnv(task="pick_cube", robot="so101", cameras=[], terminate_on_success=False)
    dev = ExpertDevice(task="pick_cube", robot="so101", hold_steps=2)
    try:
        for seed in (0, 3):
            ref = []
            res = rollout_expert(env, seed, on_step=lambda o, a, r, i: ref.append(a), extra_steps=2)
            obs, _ = env.reset(seed=seed)
            dev.start(seed)
            got, end = [], None
            while end is None:
                a = dev.poll(obs).action
                got.append(a)
                obs, _, _, _, info = env.step(a)
                end = dev.after_step(info["success"])
            assert len(got) == res["length"] == len(ref)
            assert end == ("success" if res["success"] else "failure")
            np.testing.assert_array_equal(np.stack(got), np.stack(ref))
    finally:
        env.close()


def test_expert_device_errors():
    with pytest.raises(DeviceError, match="unknown task"):
        ExpertDevice(task="juggle")
    dev = ExpertDevice()
    with pytest.raises(DeviceError, match="start"):
        dev.act({})
    dev.max_steps = 3
    dev.start(0)
    assert [dev.after_step(False) for _ in range(3)] == [None, None, "failure"]


# -- the teleop node over DDS ---------------------------------------------------------------
class _Client:
    """Test-side rclpy node (own context) collecting what the teleop node publishes."""

    def __init__(self):
        import rclpy
        from geometry_msgs.msg import TwistStamped
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import Bool, Float64, String

        from robot_rl.ros import topics
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("teleop_test_client", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        q = topics.reliable_qos(100)
        self.twist, self.grip, self.events, self.interv = [], [], [], []
        self.node.create_subscription(TwistStamped, topics.EE_DELTA_COMMAND, self.twist.append, q)
        self.node.create_subscription(Float64, topics.GRIPPER_COMMAND, lambda m: self.grip.append(m.data), q)
        self.node.create_subscription(String, topics.TELEOP_EVENT, lambda m: self.events.append(m.data), q)
        self.node.create_subscription(Bool, topics.TELEOP_INTERVENTION, lambda m: self.interv.append(m.data), q)

    def spin_until(self, cond, timeout, what=""):
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            self.ex.spin_once(timeout_sec=0.02)

    def close(self):
        import rclpy
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _finish(p):
    from ros_helpers import stop_process
    return "".join(stop_process(p))


def test_teleop_node_keyboard_over_dds(ros_domain):
    from ros_helpers import spawn
    from robot_rl.spec import load_spec
    spec = load_spec("so101")
    master, slave = pty.openpty()
    p = spawn("robot_rl.ros.teleop_node", "--device", "keyboard", "--robot", "so101", "--rate", "20",
              "--speed", "0.5", stdin=slave)
    c = None
    log = ""
    try:
        c = _Client()
        c.spin_until(lambda: len(c.twist) > 0, 20, "the first /ee_delta_command")
        assert c.twist[-1].twist.linear.x == 0.0

        def hold(key: bytes, s: float):  # a held key: the terminal repeats it
            end = time.monotonic() + s
            while time.monotonic() < end:
                os.write(master, key)
                c.ex.spin_once(timeout_sec=0.03)

        hold(b"w", 0.5)
        v = 0.5 * spec.max_delta_pos * spec.control_hz
        c.spin_until(lambda: abs(c.twist[-1].twist.linear.x - v) < 1e-9, 5, "+x twist")
        assert c.twist[-1].header.frame_id == "base"
        c.spin_until(lambda: c.twist[-1].twist.linear.x == 0.0, 5, "released key")
        os.write(master, b"\r \t")
        c.spin_until(lambda: c.events and c.grip and c.grip[-1] == 1.0 and c.interv and c.interv[-1], 5,
                     "start event, gripper close, intervention")
        assert c.events[0] == "start seed=0 source=teleop device=keyboard"
        os.write(master, b"y")
        c.spin_until(lambda: c.events[-1] == "success", 5, "success event")
        os.write(master, b"\x04")  # Ctrl-D: quit
        p.wait(timeout=10)
        assert p.returncode == 0
    finally:
        log = _finish(p)
        if c is not None:
            c.close()
        os.close(master)
        os.close(slave)
        print(log[-3000:])


@pytest.mark.parametrize("device,msg", [("keyboard", "not a TTY"), ("gamepad", "pygame not installed"),
                                        ("spacemouse", "pyspacemouse not installed")])
def test_teleop_node_absent_device_one_clear_line(ros_domain, device, msg):
    import subprocess

    from ros_helpers import spawn
    for mod in (("pygame",) if device == "gamepad" else ("pyspacemouse",) if device == "spacemouse" else ()):
        try:
            __import__(mod)
            pytest.skip(f"{mod} is installed here")
        except ImportError:
            pass
    p = spawn("robot_rl.ros.teleop_node", "--device", device, stdin=subprocess.DEVNULL)
    out = _finish(p) if p.wait(timeout=20) is not None else ""
    assert p.returncode == 2
    assert msg in out and "Traceback" not in out
