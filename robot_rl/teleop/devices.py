"""Teleop devices (ROS-free): keyboard, gamepad, SpaceMouse and the task's scripted expert.

Every device answers ``poll(obs)`` with a :class:`TeleopCommand`: a normalised end-effector
twist (``[vx, vy, vz, wx, wy, wz]`` in [-1, 1], base frame, a fraction of the robot's max
per-step motion), a gripper command (0 open .. 1 closed), an intervention flag, and the
episode events (``start`` / ``success`` / ``failure`` / ``discard`` / ``rerecord``) that
happened since the last poll. The scripted expert also fills ``action``: a complete
``ee_delta`` action, what it would send as ``/action_command``.

A normalised twist ``v`` means the tool moves ``v[:3] * max_delta_pos`` metres and turns
``v[3:] * max_delta_rot`` radians per control step, so ``concat(v, [gripper])`` is exactly an
``ee_delta`` action; :func:`twist_si` converts it to m/s and rad/s for ``/ee_delta_command``.

Devices that are absent fail in :meth:`TeleopDevice.connect` with a :class:`DeviceError`
whose message names the cause and the fix.
"""
from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

EVENTS = ("start", "success", "failure", "discard", "rerecord")
HW_HINT = "pip install robot-rl[hw]"


class DeviceError(RuntimeError):
    """A teleop device cannot be used; the message says why and what to do."""


@dataclass
class TeleopCommand:
    twist: np.ndarray = field(default_factory=lambda: np.zeros(6, np.float32))
    gripper: float = 0.0
    intervention: bool = False
    events: list[str] = field(default_factory=list)
    action: np.ndarray | None = None  # a complete action (the expert), else None
    quit: bool = False
    joints: np.ndarray | None = None  # a leader arm: absolute joint positions (rad, spec order), else None

    def ee_delta_action(self) -> np.ndarray:
        """The command as an ``ee_delta`` action (6 + gripper)."""
        if self.action is not None:
            return np.asarray(self.action, np.float32)
        return np.concatenate([np.clip(self.twist, -1, 1), [self.gripper]]).astype(np.float32)


def twist_si(twist: np.ndarray, spec, hz: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised twist -> (linear m/s, angular rad/s) for ``/ee_delta_command``: integrated
    over one control period (``1 / hz``, default the spec's ``control_hz``; pass the robot
    node's ``--rate`` when it differs) it moves the tool by ``twist * max_delta``."""
    v = np.clip(np.asarray(twist, np.float64), -1, 1)
    hz = float(hz or spec.control_hz)
    return v[:3] * spec.max_delta_pos * hz, v[3:6] * spec.max_delta_rot * hz


class TeleopDevice:
    """Interface: ``connect()``, then ``poll(obs)`` at the control rate, then ``close()``."""

    name = "device"
    human = True  # False for the scripted expert

    def connect(self) -> None:  # noqa: B027 - optional
        pass

    def poll(self, obs: Mapping[str, np.ndarray] | None = None) -> TeleopCommand:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def __enter__(self) -> "TeleopDevice":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# keyboard
# ---------------------------------------------------------------------------------------
# key -> ("axis", index, sign) | ("gripper", value|None=toggle) | ("event", name)
#        | ("intervention",) | ("speed", factor) | ("quit",)
KEYMAP: dict[str, tuple] = {
    "w": ("axis", 0, +1), "s": ("axis", 0, -1),   # x forward / back
    "a": ("axis", 1, +1), "d": ("axis", 1, -1),   # y left / right
    "r": ("axis", 2, +1), "f": ("axis", 2, -1),   # z up / down
    "u": ("axis", 3, +1), "o": ("axis", 3, -1),   # roll (about x)
    "i": ("axis", 4, +1), "k": ("axis", 4, -1),   # pitch (about y)
    "j": ("axis", 5, +1), "l": ("axis", 5, -1),   # yaw (about z)
    "UP": ("axis", 0, +1), "DOWN": ("axis", 0, -1),
    "LEFT": ("axis", 1, +1), "RIGHT": ("axis", 1, -1),
    " ": ("gripper", None),                      # toggle open / closed
    "c": ("gripper", 1.0), "v": ("gripper", 0.0),  # close / open
    "\r": ("event", "start"), "\n": ("event", "start"),
    "y": ("event", "success"), "n": ("event", "failure"),
    "x": ("event", "discard"), "\x7f": ("event", "discard"),
    "z": ("event", "rerecord"),
    "\t": ("intervention",),
    "+": ("speed", 1.25), "=": ("speed", 1.25), "-": ("speed", 0.8),
    "\x04": ("quit",),                            # Ctrl-D
}
_ESCAPES = {"\x1b[A": "UP", "\x1b[B": "DOWN", "\x1b[C": "RIGHT", "\x1b[D": "LEFT",
            "\x1bOA": "UP", "\x1bOB": "DOWN", "\x1bOC": "RIGHT", "\x1bOD": "LEFT"}

KEYBOARD_HELP = """\
keyboard teleop (terminal, no Enter needed; Ctrl-C quits)
  w / s     +x / -x (forward / back)        arrows: x and y too
  a / d     +y / -y (left / right)
  r / f     +z / -z (up / down)
  u / o     roll  + / -     i / k  pitch + / -     j / l  yaw + / -
  space     gripper toggle  c close  v open
  Enter     start episode   y success   n failure   x / Backspace discard   z re-record
  Tab       intervention on / off       + / -  speed up / down        Ctrl-D quit
A key moves the tool while it is held (the terminal's key repeat), for `hold_s` after
the last repeat."""


def parse_keys(data: str) -> list[str]:
    """Split raw terminal input into key names (escape sequences -> UP/DOWN/LEFT/RIGHT)."""
    keys, i = [], 0
    while i < len(data):
        ch = data[i]
        if ch == "\x1b":
            seq = data[i:i + 3]
            if seq in _ESCAPES:
                keys.append(_ESCAPES[seq])
                i += 3
                continue
            # unknown escape sequence: skip ESC [ and any parameter bytes up to the final byte
            j = i + 1
            if j < len(data) and data[j] in "[O":
                j += 1
                while j < len(data) and not ("@" <= data[j] <= "~"):
                    j += 1
                j += 1
            i = j
            continue
        keys.append(ch)
        i += 1
    return keys


class KeyboardDevice(TeleopDevice):
    """Keys from a terminal in cbreak mode (no echo, no line buffering; Ctrl-C still
    raises SIGINT). ``fd`` defaults to stdin; tests feed a pty."""

    name = "keyboard"

    def __init__(self, fd: int | None = None, hold_s: float = 0.25, speed: float = 0.5,
                 keymap: Mapping[str, tuple] | None = None, clock: Callable[[], float] = time.monotonic):
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.hold_s = hold_s
        self.speed = speed
        self.keymap = dict(KEYMAP if keymap is None else keymap)
        self.clock = clock
        self._until = np.zeros(6)   # per axis: active until this time
        self._sign = np.zeros(6)
        self.gripper = 0.0
        self.intervention = False
        self._saved = None

    def connect(self) -> None:
        if not os.isatty(self.fd):
            raise DeviceError("keyboard teleop needs an interactive terminal: stdin is not a TTY "
                              "(run the teleop node in a terminal of its own, not under a launcher "
                              "that redirects stdin; or use --device gamepad|spacemouse|expert)")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def close(self) -> None:
        if self._saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass
            self._saved = None

    def _read(self) -> str:
        out = b""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                b = os.read(self.fd, 1024)
            except (BlockingIOError, InterruptedError):
                break
            if not b:
                break
            out += b
        return out.decode("utf-8", errors="ignore")

    def feed(self, data: str) -> TeleopCommand:
        """Apply raw input `data` (what the terminal sent) and return the command."""
        now = self.clock()
        cmd = TeleopCommand()
        for key in parse_keys(data):
            m = self.keymap.get(key) or self.keymap.get(key.lower())
            if m is None:
                continue
            kind = m[0]
            if kind == "axis":
                _, ax, sign = m
                self._sign[ax] = sign
                self._until[ax] = now + self.hold_s
            elif kind == "gripper":
                self.gripper = (1.0 - round(self.gripper)) if m[1] is None else float(m[1])
            elif kind == "event":
                cmd.events.append(m[1])
            elif kind == "intervention":
                self.intervention = not self.intervention
            elif kind == "speed":
                self.speed = float(np.clip(self.speed * m[1], 0.05, 1.0))
            elif kind == "quit":
                cmd.quit = True
        active = self._until > now
        cmd.twist = np.where(active, self._sign * self.speed, 0.0).astype(np.float32)
        cmd.gripper = self.gripper
        cmd.intervention = self.intervention
        return cmd

    def poll(self, obs=None) -> TeleopCommand:
        return self.feed(self._read())


# ---------------------------------------------------------------------------------------
# gamepad (pygame)
# ---------------------------------------------------------------------------------------
@dataclass
class GamepadMap:
    """Xbox-style layout as SDL reports it on Linux (xpad / xone); override per pad."""

    lx: int = 0
    ly: int = 1
    rx: int = 3
    ry: int = 4
    deadzone: float = 0.12
    btn_gripper: int = 0       # A: toggle gripper
    btn_failure: int = 1       # B
    btn_rerecord: int = 2      # X
    btn_success: int = 3       # Y
    btn_intervention: int = 4  # LB: held = intervention (deadman)
    btn_discard: int = 6       # Back / View
    btn_start: int = 7         # Start / Menu
    hat: int = 0               # D-pad: up/down pitch, left/right roll
    roll_sign: float = 1.0
    pitch_sign: float = 1.0


GAMEPAD_HELP = """\
gamepad teleop (Xbox layout)
  left stick    x (up = forward) / y (left = +y)
  right stick   z (up = up) / yaw (left = +yaw)
  D-pad         up/down pitch, left/right roll
  A gripper toggle   LB (held) intervention   Start start   Y success   B failure
  Back discard       X re-record"""


class GamepadDevice(TeleopDevice):
    name = "gamepad"

    def __init__(self, index: int = 0, speed: float = 1.0, mapping: GamepadMap | None = None):
        self.index = index
        self.speed = speed
        self.map = mapping or GamepadMap()
        self.gripper = 0.0
        self._pg = None
        self._js = None
        self._prev: dict[int, bool] = {}

    def connect(self) -> None:
        try:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
            import pygame
        except ImportError:
            raise DeviceError(f"gamepad teleop: pygame not installed ({HW_HINT})") from None
        pygame.display.init()
        pygame.joystick.init()
        n = pygame.joystick.get_count()
        if n == 0:
            raise DeviceError("gamepad teleop: no gamepad found (plug one in; check `ls /dev/input/js*` "
                              "and that this user may read /dev/input/event*)")
        if self.index >= n:
            raise DeviceError(f"gamepad teleop: gamepad index {self.index} asked for, {n} found")
        self._pg = pygame
        self._js = pygame.joystick.Joystick(self.index)
        self._js.init()

    def close(self) -> None:
        if self._pg is not None:
            try:
                self._pg.joystick.quit()
            finally:
                self._pg = None

    def _axis(self, i: int) -> float:
        v = float(self._js.get_axis(i)) if i < self._js.get_numaxes() else 0.0
        return 0.0 if abs(v) < self.map.deadzone else v

    def _button(self, i: int) -> bool:
        return i < self._js.get_numbuttons() and bool(self._js.get_button(i))

    def _pressed(self, i: int) -> bool:
        """True on the press edge of button i."""
        now = self._button(i)
        was = self._prev.get(i, False)
        self._prev[i] = now
        return now and not was

    def poll(self, obs=None) -> TeleopCommand:
        if self._js is None:
            raise DeviceError("gamepad teleop: connect() first")
        self._pg.event.pump()
        m = self.map
        hx, hy = self._js.get_hat(m.hat) if m.hat < self._js.get_numhats() else (0, 0)
        twist = np.array([-self._axis(m.ly), -self._axis(m.lx), -self._axis(m.ry),
                          m.roll_sign * hx, m.pitch_sign * hy, -self._axis(m.rx)], np.float64)
        cmd = TeleopCommand(twist=np.clip(twist * self.speed, -1, 1).astype(np.float32))
        if self._pressed(m.btn_gripper):
            self.gripper = 1.0 - round(self.gripper)
        for btn, ev in ((m.btn_start, "start"), (m.btn_success, "success"), (m.btn_failure, "failure"),
                        (m.btn_discard, "discard"), (m.btn_rerecord, "rerecord")):
            if self._pressed(btn):
                cmd.events.append(ev)
        cmd.gripper = self.gripper
        cmd.intervention = self._button(m.btn_intervention)
        return cmd


# ---------------------------------------------------------------------------------------
# SpaceMouse (pyspacemouse over hidapi)
# ---------------------------------------------------------------------------------------
SPACEMOUSE_HELP = """\
SpaceMouse teleop (3Dconnexion; operator behind the robot, looking along +x)
  push / pull / slide / lift the cap   translate the tool
  tilt / twist the cap                 rotate the tool
  left button   gripper toggle   right button   intervention toggle
  (episode events from the keyboard of the teleop terminal are not read with this device:
   use the recorder services /recorder/start|success|failure|discard)"""


class SpaceMouseDevice(TeleopDevice):
    name = "spacemouse"

    def __init__(self, speed: float = 1.0, deadzone: float = 0.05,
                 signs: tuple[float, ...] = (1, -1, 1, 1, -1, -1)):
        self.speed = speed
        self.deadzone = deadzone
        self.signs = np.asarray(signs, np.float64)
        self.gripper = 0.0
        self.intervention = False
        self._mod = None
        self._dev = None
        self._prev = [0, 0]

    def connect(self) -> None:
        try:
            import pyspacemouse
        except ImportError:
            raise DeviceError(f"spacemouse teleop: pyspacemouse not installed ({HW_HINT})") from None
        except (OSError, AttributeError) as e:  # easyhid without the hidapi C library
            raise DeviceError("spacemouse teleop: the hidapi library is missing "
                              f"(apt install libhidapi-hidraw0): {e}") from None
        try:
            dev = pyspacemouse.open()
        except Exception as e:  # noqa: BLE001 - pyspacemouse raises many kinds when absent
            raise DeviceError(f"spacemouse teleop: no SpaceMouse found ({type(e).__name__}: {e}); "
                              "plug it in and check permissions on /dev/hidraw*") from None
        if not dev:
            raise DeviceError("spacemouse teleop: no SpaceMouse found (plug it in and check "
                              "permissions on /dev/hidraw*)")
        self._mod, self._dev = pyspacemouse, dev

    def close(self) -> None:
        if self._mod is not None:
            try:
                (self._dev.close if hasattr(self._dev, "close") else self._mod.close)()
            except Exception:  # noqa: BLE001
                pass
            self._mod = self._dev = None

    def poll(self, obs=None) -> TeleopCommand:
        if self._mod is None:
            raise DeviceError("spacemouse teleop: connect() first")
        st = self._dev.read() if hasattr(self._dev, "read") else self._mod.read()
        # device: y forward, x right, z up; robot base: x forward, y left, z up
        raw = np.array([st.y, st.x, st.z, st.roll, st.pitch, st.yaw], np.float64) * self.signs
        raw[np.abs(raw) < self.deadzone] = 0.0
        buttons = list(getattr(st, "buttons", []) or []) + [0, 0]
        if buttons[0] and not self._prev[0]:
            self.gripper = 1.0 - round(self.gripper)
        if buttons[1] and not self._prev[1]:
            self.intervention = not self.intervention
        self._prev = [buttons[0], buttons[1]]
        return TeleopCommand(twist=np.clip(raw * self.speed, -1, 1).astype(np.float32),
                             gripper=self.gripper, intervention=self.intervention)


# ---------------------------------------------------------------------------------------
# scripted expert
# ---------------------------------------------------------------------------------------
class ExpertDevice(TeleopDevice):
    """The task's scripted expert as a teleop device: ``poll(obs)`` returns its ``ee_delta``
    action for the observation dict the env gives (joint_pos, joint_vel, ee_pos, ee_quat,
    gripper, object_state).

    Episode bookkeeping mirrors :func:`robot_rl.sim.experts.rollout_expert` exactly: call
    :meth:`start` with the episode seed (the expert's rng is ``default_rng(seed)``, as
    ``RobotEnv.make_expert(seed)``), then for each observation :meth:`act`, and after each
    step :meth:`after_step` with the step's success flag; it returns ``"success"`` or
    ``"failure"`` when the episode is over (success held for ``hold_steps`` more steps, or
    ``max_steps`` reached), else None.
    """

    name = "expert"
    human = False

    def __init__(self, task: str = "pick_cube", robot: Any = "so101", hold_steps: int = 2,
                 max_steps: int | None = None):
        from robot_rl.sim.tasks import TASKS
        from robot_rl.spec import load_spec
        if task not in TASKS:
            raise DeviceError(f"expert teleop: unknown task {task!r}; available: {sorted(TASKS)}")
        self.spec = load_spec(robot)
        self.task_name = task
        self.task = TASKS[task](self.spec)
        self.hold_steps = int(hold_steps)
        self.max_steps = int(max_steps or self.task.max_steps)
        self._expert = None
        self.seed: int | None = None
        self.steps = self.hold = 0
        self.success = False

    def start(self, seed: int) -> None:
        self.seed = int(seed)
        self._expert = self.task.make_expert(np.random.default_rng(self.seed))
        self.steps = self.hold = 0
        self.success = False

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        if self._expert is None:
            raise DeviceError("expert teleop: start(seed) an episode first")
        return self._expert.act(obs)

    def after_step(self, success: bool) -> str | None:
        self.steps += 1
        self.success = self.success or bool(success)
        if self.success:
            self.hold += 1
        if (self.success and self.hold > self.hold_steps) or self.steps >= self.max_steps:
            return "success" if self.success else "failure"
        return None

    def poll(self, obs=None) -> TeleopCommand:
        if obs is None:
            raise DeviceError("expert teleop acts on observations: poll(obs)")
        a = self.act(obs)
        return TeleopCommand(twist=a[:6].copy(), gripper=float(a[6]), action=a)


DEVICES: dict[str, type[TeleopDevice]] = {
    "keyboard": KeyboardDevice, "gamepad": GamepadDevice, "spacemouse": SpaceMouseDevice,
    "expert": ExpertDevice,
}
# ---------------------------------------------------------------------------------------
# leader arm (servo bus): absolute joint positions
# ---------------------------------------------------------------------------------------
LEADER_HELP = """\
leader arm teleop: move the leader arm by hand; the follower follows its joint positions
(joint_pos commands), and the recorded action is the leader's joint positions.
  episodes: keys in this terminal (Enter start, y success, n failure, x discard, z re-record,
  Ctrl-D quit), or the virtual person's events (events=URL)"""


class PersonEvents:
    """Episode events from the virtual SO-101's scripted person (``robot-rl virtual so101``
    prints its URL): on connect it is asked to teleoperate `episodes` episodes; its
    start / success / failure "key presses" are polled from ``GET /events``."""

    def __init__(self, url: str, episodes: int, seed: int, max_seconds: float = 30.0, timeout_s: float = 2.0):
        self.url = url
        self.episodes, self.seed, self.max_seconds, self.timeout_s = episodes, seed, max_seconds, timeout_s
        self.after = -1
        self.ended = 0
        self._next_poll = 0.0

    def _http(self, path: str, body: dict | None = None) -> dict:
        from robot_rl.drivers.virtual.person import PersonError, get, post
        try:
            return get(self.url, path, self.timeout_s) if body is None else post(self.url, body, self.timeout_s)
        except PersonError as e:
            raise DeviceError(f"the virtual person: {e}") from None

    def connect(self) -> None:
        evs = self._http("/events?after=-1").get("events", [])
        self.after = max([e["k"] for e in evs], default=-1)  # old presses are not ours
        self._http("", {"do": "teleop", "episodes": self.episodes, "seed": self.seed,
                        "max_seconds": self.max_seconds})

    def poll(self) -> tuple[list[str], bool]:
        now = time.monotonic()
        if now < self._next_poll:
            return [], False
        self._next_poll = now + 0.05
        out = []
        for e in self._http(f"/events?after={self.after}").get("events", []):
            self.after = max(self.after, int(e["k"]))
            out.append(str(e["event"]))
            if e["event"] in ("success", "failure"):
                self.ended += 1
        return out, self.ended >= self.episodes


class LeaderDevice(TeleopDevice):
    """A leader arm on a servo bus (SO-101 leader on Feetech, Koch leader on Dynamixel),
    torque off, read as absolute joint positions + gripper closure every poll."""

    name = "leader"

    def __init__(self, robot: Any = "so101", port: str = "", calibration: Any = None, hardware: str | None = None,
                 events: str = "keyboard", episodes: int = 10, seed: int = 0, max_seconds: float = 30.0,
                 fd: int | None = None):
        self.robot, self.port, self.calibration, self.hardware = robot, port, calibration, hardware
        self.events, self.episodes, self.seed, self.max_seconds, self.fd = events, episodes, seed, max_seconds, fd
        self.leader = None
        self.keys: KeyboardDevice | None = None
        self.person: PersonEvents | None = None
        self.joint_names: list[str] = []

    def connect(self) -> None:
        from robot_rl.drivers.servo_arm import ArmSetupError, LeaderArm
        from robot_rl.drivers.servo.errors import ServoError
        try:
            self.leader = LeaderArm(self.robot, port=self.port, calibration=self.calibration, hardware=self.hardware)
            self.leader.connect()
        except (ArmSetupError, ServoError, ValueError) as e:
            raise DeviceError(f"leader arm: {e}") from None
        self.joint_names = list(self.leader.names)
        if self.events.startswith("http"):
            self.person = PersonEvents(self.events, self.episodes, self.seed, self.max_seconds)
            self.person.connect()
        elif self.events == "keyboard":
            self.keys = KeyboardDevice(fd=self.fd)
            self.keys.connect()
        elif self.events != "none":
            raise DeviceError(f"leader events must be keyboard, none or the person's http URL, got {self.events!r}")

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()
        if self.leader is not None:
            self.leader.close()
            self.leader = None

    def poll(self, obs=None) -> TeleopCommand:
        from robot_rl.runtime.robot import RobotDisconnected
        from robot_rl.drivers.servo.errors import ServoError
        cmd = TeleopCommand(intervention=True)
        if self.keys is not None:
            k = self.keys.poll()
            cmd.events, cmd.quit = k.events, k.quit
        elif self.person is not None:
            cmd.events, cmd.quit = self.person.poll()
        try:
            q, g = self.leader.read()
        except RobotDisconnected as e:
            raise DeviceError(str(e)) from None
        except ServoError:  # a glitch (dropped / corrupt reply after retries): no fresh joints this poll
            return cmd
        cmd.joints = np.asarray(q, np.float64)
        cmd.gripper = float(g) if g is not None else 0.0
        return cmd


DEVICES["leader"] = LeaderDevice

HELP = {"keyboard": KEYBOARD_HELP, "gamepad": GAMEPAD_HELP, "spacemouse": SPACEMOUSE_HELP, "leader": LEADER_HELP,
        "expert": "scripted expert: acts on observations, no keys"}


def make_device(name: str, **kw: Any) -> TeleopDevice:
    if name not in DEVICES:
        raise DeviceError(f"unknown teleop device {name!r}; devices: {sorted(DEVICES)}")
    return DEVICES[name](**kw)
