"""The teleop node: a teleop device (keyboard, gamepad, SpaceMouse) or the task's scripted
expert on ROS 2.

    python -m robot_rl.ros.teleop_node --device expert --robot so101 --task pick_cube \\
        --mode lockstep --episodes 20 --seed 0
    python -m robot_rl.ros.teleop_node --device keyboard --robot so101

Human devices publish ``/ee_delta_command`` (TwistStamped, m/s and rad/s, base frame) and
``/gripper_command`` (Float64) at ``--rate`` (realtime mode), or one ``/action_command``
(``ee_delta``) per observation (lockstep mode); plus ``/teleop/intervention`` (Bool) and
``/teleop/event`` (String: ``start seed=N source=teleop``, ``success``, ...).

``--device expert --mode lockstep`` runs whole episodes against a lockstep robot node:
``start seed=S+i source=expert``, wait for the step-0 observation, then for every
observation the expert's action on ``/action_command`` -- exactly
:func:`robot_rl.sim.experts.rollout_expert` (same expert rng, same hold-after-success and
step limit) -- and finally ``success steps=N stamp=T`` or ``failure steps=N stamp=T``
(N actions sent; T the stamp of the observation that ended the episode, which gets no action).
Before the first episode it waits for the robot node and, when one is running, for the
recorder (``/diagnostics`` status ``recorder`` ready); after the last it waits until the
recorder has closed every episode.

``--device expert --mode realtime`` streams the expert like a person's device against a
realtime robot node: twist + gripper at ``--rate``, each from the newest observation received
(:func:`run_expert_realtime`). Not reproducible (wall-clock timing), but it exercises the
realtime recording path end to end.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

from robot_rl.ros import msgs, topics
from robot_rl.ros.node_args import exit_on_help
from robot_rl.teleop.devices import HELP, DeviceError, ExpertDevice, TeleopCommand, make_device, twist_si

RECORDER_DIAG = "recorder"


def stamp_label(ns: int) -> str:
    """Integer nanoseconds -> ``"<sec>.<nanosec:09d>"`` (exact)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


class TeleopNode:
    """Publishers + the observation subscriptions the expert needs."""

    def __init__(self, args: argparse.Namespace, spec):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, Float32MultiArray, Float64, String

        self.args = args
        self.spec = spec
        self.node = rclpy.create_node(args.name)
        self.log = self.node.get_logger()
        n, rq = self.node, topics.reliable_qos
        self.pub_event = n.create_publisher(String, topics.TELEOP_EVENT, rq(50))
        self.pub_interv = n.create_publisher(Bool, topics.TELEOP_INTERVENTION, rq(10))
        self.pub_action = n.create_publisher(Float32MultiArray, topics.ACTION_COMMAND, rq(100))
        self.pub_twist = n.create_publisher(TwistStamped, topics.EE_DELTA_COMMAND, rq(10))
        self.pub_grip = n.create_publisher(Float64, topics.GRIPPER_COMMAND, rq(10))
        self.pub_joint = n.create_publisher(JointState, topics.JOINT_COMMAND, rq(10))
        # observations by stamp (ns): the expert needs joint_states + ee_pose + object_state
        self.obs: dict[str, dict[int, Any]] = {"js": {}, "ee": {}, "obj": {}}
        # /success has no stamp: the robot node publishes exactly one with every observation, so
        # the i-th /success since the last start belongs to the i-th /joint_states stamp
        self._js_order: list[int] = []
        self._succ_order: list[bool] = []
        self._clock_ns = -1  # newest observation stamp seen
        self.recorder: dict[str, str] | None = None  # latest recorder diagnostics
        self.robot_loop: dict[str, str] | None = None  # latest robot node '<name>: loop' diagnostics
        self.robot_loop_recv_ns = 0  # wall time it was received
        n.create_subscription(JointState, topics.JOINT_STATES, lambda m: self._obs("js", m, m.header.stamp), rq(100))
        n.create_subscription(PoseStamped, topics.EE_POSE, lambda m: self._obs("ee", m, m.header.stamp), rq(100))
        n.create_subscription(Float32MultiArray, topics.OBJECT_STATE, self._on_obj, rq(100))
        n.create_subscription(type(Bool()), topics.SUCCESS, self._on_success, rq(100))
        n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, rq(50))

    # -- subscriptions ---------------------------------------------------------------------
    def _obs(self, key: str, msg, stamp) -> None:
        ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        d = self.obs[key]
        d[ns] = msg
        if len(d) > 64:
            for k in sorted(d)[:-32]:
                del d[k]
        if key == "js":
            self._js_order.append(ns)
            self._clock_ns = max(self._clock_ns, ns)

    def _on_obj(self, msg) -> None:
        st = msgs.float_array_stamp(msg)
        if st is None:
            return
        from robot_rl.data.contract import to_ns
        ns = to_ns(st)
        self.obs["obj"][ns] = msg
        if len(self.obs["obj"]) > 64:
            for k in sorted(self.obs["obj"])[:-32]:
                del self.obs["obj"][k]

    def _on_success(self, msg) -> None:
        self._succ_order.append(bool(msg.data))

    def reset_pairing(self) -> None:
        """Before a start: observations from now on pair with /success messages one to one."""
        self._js_order.clear()
        self._succ_order.clear()

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name == RECORDER_DIAG:
                self.recorder = {kv.key: kv.value for kv in s.values}
            elif s.name.endswith(": loop"):
                self.robot_loop = {kv.key: kv.value for kv in s.values}
                self.robot_loop_recv_ns = time.time_ns()

    def robot_resets(self) -> int | None:
        """The robot node's reset count, from its latest loop diagnostics (None: none yet)."""
        try:
            return int((self.robot_loop or {})["resets"])
        except (KeyError, ValueError):
            return None

    # -- helpers -----------------------------------------------------------------------------
    def spin(self, timeout: float = 0.0) -> None:
        import rclpy
        rclpy.spin_once(self.node, timeout_sec=timeout)

    def spin_until(self, cond, timeout: float, step: float = 0.02) -> bool:
        end = time.monotonic() + timeout
        while True:
            if cond():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.spin(min(step, left))  # never past the end (a 60 Hz loop sleeps through here)

    def event(self, name: str, **kw) -> None:
        from std_msgs.msg import String
        text = topics.format_event(name, **kw)
        self.pub_event.publish(String(data=text))
        self.log.info(f"event: {text}")

    def intervention(self, flag: bool) -> None:
        from std_msgs.msg import Bool
        self.pub_interv.publish(Bool(data=bool(flag)))

    def observation(self, ns: int) -> dict[str, np.ndarray] | None:
        """The env's observation dict at stamp ``ns`` if all its parts arrived."""
        js, ee, obj = self.obs["js"].get(ns), self.obs["ee"].get(ns), self.obs["obj"].get(ns)
        if js is None or ee is None or obj is None:
            return None
        names = self.spec.joint_names
        idx = {n: i for i, n in enumerate(js.name)}
        try:
            q = np.array([js.position[idx[n]] for n in names], np.float32)
            qd = np.array([js.velocity[idx[n]] for n in names], np.float32)
            g = np.array([js.position[idx[topics.GRIPPER_JOINT]]], np.float32) if self.spec.gripper else \
                np.zeros(1, np.float32)
        except (KeyError, IndexError) as e:
            raise RuntimeError(f"/joint_states lacks joint {e} (has {list(js.name)})") from None
        pos, quat = msgs.pose_arrays(ee)
        return {"joint_pos": q, "joint_vel": qd, "ee_pos": pos, "ee_quat": quat, "gripper": g,
                "object_state": msgs.float_array_values(obj)}

    def newest_complete(self, after_ns: int) -> int | None:
        """The oldest stamp > after_ns with a complete observation."""
        for ns in sorted(self.obs["js"]):
            if ns > after_ns and ns in self.obs["ee"] and ns in self.obs["obj"]:
                return ns
        return None

    def latest_complete(self, after_ns: int) -> int | None:
        """The newest stamp > after_ns with a complete observation."""
        for ns in sorted(self.obs["js"], reverse=True):
            if ns <= after_ns:
                return None
            if ns in self.obs["ee"] and ns in self.obs["obj"]:
                return ns
        return None

    def success_at(self, ns: int) -> bool | None:
        try:
            i = self._js_order.index(ns)
        except ValueError:
            return None
        return self._succ_order[i] if i < len(self._succ_order) else None

    def send_action(self, a: np.ndarray, stamp_ns: int | None = None) -> None:
        """One ee_delta action; ``stamp_ns``: the stamp of the observation it was chosen from."""
        m = msgs.float_array(a, "ee_delta")
        if stamp_ns is not None:
            from std_msgs.msg import MultiArrayDimension
            m.layout.dim.append(MultiArrayDimension(label=f"{msgs.STAMP_PREFIX}{stamp_label(stamp_ns)}", size=1,
                                                    stride=1))
        self.pub_action.publish(m)

    def send_joints(self, names: list[str], q: np.ndarray, gripper: float | None) -> None:
        """A leader arm's absolute joint positions (+ gripper closure) on /joint_command."""
        from sensor_msgs.msg import JointState
        m = JointState()
        m.header.stamp = self.node.get_clock().now().to_msg()
        arm = [n for n in names if n != topics.GRIPPER_JOINT]
        m.name = list(arm) + ([topics.GRIPPER_JOINT] if gripper is not None and self.spec.gripper else [])
        m.position = [float(v) for v in q] + ([float(gripper)] if gripper is not None and self.spec.gripper else [])
        self.pub_joint.publish(m)

    def send_twist(self, cmd: TeleopCommand, stamp_ns: int | None = None, hz: float | None = None) -> None:
        """Twist + gripper; ``stamp_ns``: the observation it was chosen from (default: now);
        ``hz``: the robot's control rate the normalised twist refers to (default: the spec's)."""
        from geometry_msgs.msg import TwistStamped
        from std_msgs.msg import Float64
        from builtin_interfaces.msg import Time
        lin, ang = twist_si(cmd.twist, self.spec, hz)
        m = TwistStamped()
        m.header.stamp = self.node.get_clock().now().to_msg() if stamp_ns is None else \
            Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        m.header.frame_id = "base"
        m.twist.linear.x, m.twist.linear.y, m.twist.linear.z = (float(v) for v in lin)
        m.twist.angular.x, m.twist.angular.y, m.twist.angular.z = (float(v) for v in ang)
        self.pub_twist.publish(m)
        self.pub_grip.publish(Float64(data=float(cmd.gripper)))

    # -- graph waits ---------------------------------------------------------------------------
    def wait_for_robot(self, timeout: float) -> bool:
        n = self.node
        return self.spin_until(lambda: n.count_subscribers(topics.ACTION_COMMAND) > 0
                               and n.count_subscribers(topics.TELEOP_EVENT) > 0
                               and n.count_publishers(topics.JOINT_STATES) > 0, timeout, 0.05)

    def recorder_present(self) -> bool:
        return any(name == "/recorder/start" for name, _ in self.node.get_service_names_and_types())

    def wait_for_recorder(self, timeout: float) -> bool:
        """Wait until a recorder is up and subscribed to all its topics (no-op without one)."""
        end = time.monotonic() + timeout
        if not self.spin_until(self.recorder_present, timeout, 0.05):
            return False
        return self.spin_until(lambda: self.recorder is not None and self.recorder.get("ready") == "true",
                               max(0.0, end - time.monotonic()), 0.05)


# -- loops --------------------------------------------------------------------------------------
def run_expert_lockstep(tn: TeleopNode, dev: ExpertDevice, args) -> int:
    log = tn.log
    last_ns = -1
    ended = 0
    for i in range(args.episodes):
        seed = args.seed + i
        dev.start(seed)
        # start (re-sent if the robot node missed it: discovery can lag the first publish)
        ns = None
        after = max(last_ns, tn._clock_ns)  # only observations of this reset count
        for attempt in range(args.start_retries):
            t_sent = time.monotonic()
            tn.reset_pairing()
            tn.event("start", seed=seed, source="expert", device="expert")
            if tn.spin_until(lambda: tn.newest_complete(after) is not None, args.start_timeout):
                ns = tn.newest_complete(after)
                if attempt > 0:  # several starts may be answered: settle, act on the newest reset
                    tn.spin_until(lambda: False, 1.0)
                    while (n2 := tn.newest_complete(ns)) is not None:
                        ns = n2
                break
            log.warning(f"no step-0 observation {time.monotonic() - t_sent:.1f} s after 'start seed={seed}' "
                        f"(attempt {attempt + 1}/{args.start_retries}); sending it again")
        if ns is None:
            log.error(f"the robot node never answered 'start seed={seed}' with an observation: is "
                      f"`robot_node --mode lockstep` running on this ROS_DOMAIN_ID?")
            return 1
        steps, end = 0, None
        t0 = time.monotonic()
        while True:
            obs = tn.observation(ns)
            if steps > 0:
                ok = tn.spin_until(lambda: tn.success_at(ns) is not None, args.step_timeout)
                succ = tn.success_at(ns)
                if not ok or succ is None:
                    log.error(f"no /success for the observation at {ns / 1e9:.4f} s within {args.step_timeout} s")
                    return 1
                end = dev.after_step(succ)
                if end is not None:
                    break
            tn.send_action(dev.act(obs), ns)
            steps += 1
            prev = ns
            if not tn.spin_until(lambda: tn.newest_complete(prev) is not None, args.step_timeout):
                log.error(f"episode seed={seed}: no observation {args.step_timeout} s after action {steps} "
                          f"(robot node gone, or not in --mode lockstep?)")
                return 1
            ns = tn.newest_complete(prev)
        last_ns = ns
        tn.event(end, steps=steps, stamp=stamp_label(ns))
        ended += 1
        log.info(f"episode {i + 1}/{args.episodes} seed={seed}: {end} after {steps} steps "
                 f"({steps / max(time.monotonic() - t0, 1e-9):.1f} steps/s)")
    wait_recorder_done(tn, ended, args)
    return 0


def run_expert_realtime(tn: TeleopNode, dev: ExpertDevice, args) -> int:
    """The expert as a streaming device against a realtime robot node: ``start seed=N`` (the
    robot node resets the twin), then at ``--rate`` (on its own clock, like a gamepad) the
    expert's action for the newest observation received, sent as ``/ee_delta_command`` (stamped
    with that observation) + ``/gripper_command``; without a new observation the last command
    is sent again. ``--rate`` is also the control rate the per-step action refers to: pass the
    robot node's. Episodes count the robot's steps (one ``/success`` per observation) and end as
    in ``rollout_expert`` (success held ``--hold-steps`` more steps, or ``--max-steps``), with a
    plain ``success`` / ``failure`` event. Observations count only once the robot node's loop
    diagnostics report the reset (``resets``), so nothing from before it steers the expert; a
    ``/success`` true received before the episode's first false one is from before the reset.
    Between episodes it streams a zero twist (the stick at rest)."""
    log = tn.log
    period = 1.0 / args.rate
    stats = {"sent": 0, "late": 0, "acted": 0}
    clock = {"next": time.monotonic()}

    def tick(cmd: TeleopCommand, stamp_ns: int | None = None) -> None:
        tn.send_twist(cmd, stamp_ns, args.rate)
        stats["sent"] += 1
        clock["next"] += period
        tn.spin(0.0)  # callbacks run even when this tick is late
        rest = clock["next"] - time.monotonic()
        if rest < 0:
            stats["late"] += 1
            if rest < -period:  # a whole period behind: skip, do not burst
                clock["next"] = time.monotonic()
        tn.spin_until(lambda: False, max(0.0, rest), min(0.01, max(rest, 0.0) or 0.001))

    if not tn.spin_until(lambda: tn.robot_resets() is not None, args.wait_robot, 0.05):
        log.error(f"no loop diagnostics from the robot node after {args.wait_robot} s: the realtime expert "
                  f"needs them to see its resets (robot_node --diag-hz > 0)")
        return 1
    t_run = time.monotonic()
    hold = TeleopCommand()
    ended = 0
    for i in range(args.episodes):
        seed = args.seed + i
        dev.start(seed)
        after = None
        for attempt in range(args.start_retries):
            base = tn.robot_resets()
            if attempt:  # the recorder's episode of the unanswered start
                tn.event("discard")
            tn.event("start", seed=seed, source="expert", device="expert")
            hold = TeleopCommand()  # the twin resets with the gripper open
            t_sent = time.monotonic()
            while time.monotonic() - t_sent < args.start_timeout:
                if (tn.robot_resets() or 0) > (base or 0):
                    after = tn.robot_loop_recv_ns  # observations stamped later are the reset's
                    break
                tick(hold)
            if after is not None:
                break
            log.warning(f"the robot node reported no reset {args.start_timeout:g} s after 'start seed={seed}' "
                        f"(attempt {attempt + 1}/{args.start_retries}); sending it again")
        if after is None:
            log.error(f"the robot node never reset for 'start seed={seed}': is `robot_node --mode realtime` "
                      f"running on this ROS_DOMAIN_ID?")
            return 1
        tn.reset_pairing()
        cursor, armed, end = 0, False, None
        cmd, cmd_ns, last_ns = hold, None, after
        t0 = t_obs = time.monotonic()
        acted0 = stats["acted"]
        while end is None:
            succ = tn._succ_order
            while cursor < len(succ) and end is None:  # one /success per robot step
                s = succ[cursor]
                cursor += 1
                if s and not armed:
                    continue
                armed = True
                end = dev.after_step(s)
            if end is not None:
                break
            ns = tn.latest_complete(last_ns)
            if ns is not None:
                cmd, cmd_ns, last_ns = dev.poll(tn.observation(ns)), ns, ns
                stats["acted"] += 1
                t_obs = time.monotonic()
            elif time.monotonic() - t_obs > args.step_timeout:
                log.error(f"episode seed={seed}: no observation for {args.step_timeout} s (robot node gone?)")
                return 1
            tick(cmd, cmd_ns)
        tn.event(end)
        ended += 1
        hold = TeleopCommand(gripper=cmd.gripper)
        log.info(f"episode {i + 1}/{args.episodes} seed={seed}: {end} after {dev.steps} robot steps "
                 f"({stats['acted'] - acted0} observations acted on) in {time.monotonic() - t0:.2f} s")
        # like a person between takes: the next start only once the recorder (if any) has closed
        # this episode (a start during its last `latency` makes the recorder finish it early)
        t_wait = time.monotonic()
        while tn.recorder is not None and time.monotonic() - t_wait < args.recorder_timeout:
            try:
                if int(tn.recorder.get("episodes_closed", "0")) - tn.recorder_base >= ended:
                    break
            except ValueError:
                break
            tick(hold)
    wall = time.monotonic() - t_run
    log.info(f"streamed {stats['sent']} commands in {wall:.2f} s ({stats['sent'] / max(wall, 1e-9):.2f} Hz, "
             f"target {args.rate:g}), {stats['late']} late ticks, acted on {stats['acted']} observations")
    wait_recorder_done(tn, ended, args)
    return 0


def wait_recorder_done(tn: TeleopNode, n_episodes: int, args) -> None:
    """Give the recorder (if any) the time to close the episodes it was sent."""
    tn.spin_until(lambda: False, args.linger)  # deliver the last event
    if tn.recorder is None:
        return
    base = tn.recorder_base

    def done() -> bool:
        r = tn.recorder
        try:
            return int(r.get("episodes_closed", "0")) - base >= n_episodes and r.get("recording") == "false"
        except (TypeError, ValueError):
            return False
    if not tn.spin_until(done, args.recorder_timeout, 0.05):
        tn.log.warning(f"the recorder did not confirm {n_episodes} closed episodes within "
                       f"{args.recorder_timeout} s (last status: {tn.recorder})")


def run_human(tn: TeleopNode, dev, args) -> int:
    """Poll the device at --rate: twist + gripper (realtime) or one action per observation
    (lockstep); events and the intervention flag as they happen."""
    period = 1.0 / args.rate
    seed = args.seed
    last_interv, interv_sent = None, 0.0
    last_ns = -1
    steps = 0  # lockstep: actions sent since the last start
    active = False  # lockstep: the twin only moves inside an episode (start .. end)
    tn.log.info(HELP.get(args.device, ""))
    if args.device == "keyboard":
        print(HELP["keyboard"], file=sys.stderr)
    joint_names = list(getattr(dev, "joint_names", []) or [])
    if args.device == "leader":
        missing = [n for n in tn.spec.joint_names if n not in joint_names]
        if missing:
            raise DeviceError(f"the leader arm's joints {joint_names} do not match robot {tn.spec.name!r}: "
                              f"missing {missing}")
    nxt = time.monotonic()
    while True:
        cmd = dev.poll()
        for ev in cmd.events:
            if ev in ("start", "rerecord"):
                tn.event(ev, seed=seed, source="teleop", device=args.device)
                seed += 1
                steps, active = 0, True
                last_ns = max(last_ns, tn._clock_ns)  # act on the reset's observation, not older ones
            elif ev in ("success", "failure") and args.mode == "lockstep" and active:
                # the steps acted on so far; observations after the last one are not part of it
                tn.event(ev, steps=steps, stamp=stamp_label(last_ns + 1))
                active = False
            else:
                tn.event(ev)
                active = active and ev not in ("success", "failure", "discard")
        if cmd.quit:
            return 0
        now = time.monotonic()
        if cmd.intervention != last_interv or now - interv_sent > 1.0:
            tn.intervention(cmd.intervention)
            last_interv, interv_sent = cmd.intervention, now
        if cmd.joints is not None:  # a leader arm: absolute joint positions, in both modes
            tn.send_joints(joint_names, cmd.joints, cmd.gripper)
        elif args.mode == "lockstep":
            ns = tn.newest_complete(last_ns) if active else None
            if ns is not None:
                tn.send_action(cmd.ee_delta_action(), ns)
                last_ns = ns
                steps += 1
        else:
            tn.send_twist(cmd)
        nxt += period
        rest = nxt - time.monotonic()
        if rest < -period:
            nxt = time.monotonic()
        tn.spin_until(lambda: False, max(0.0, rest), min(0.01, max(rest, 0.0) or 0.001))


# -- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robot_rl.ros.teleop_node", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="keyboard", choices=["keyboard", "gamepad", "spacemouse", "expert", "leader"])
    p.add_argument("--leader-port", default="", help="leader: serial port of the leader arm")
    p.add_argument("--leader-calibration", default=None, help="leader: calibration file (robot-rl calibrate arm=leader)")
    p.add_argument("--leader-hardware", default=None, help="leader: hardware description (default: the calibration's)")
    p.add_argument("--events", default="keyboard",
                   help="leader: where episode events come from: keyboard (this terminal), none, or the virtual "
                        "person's URL (robot-rl virtual so101 prints it)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="leader + virtual person: episode time limit")
    p.add_argument("--robot", default="so101", help="robot spec name or YAML path")
    p.add_argument("--task", default="pick_cube", help="task (the expert's; also stored by the recorder)")
    p.add_argument("--mode", default=None, choices=["lockstep", "realtime"],
                   help="the robot node's mode (default: lockstep for the expert, realtime for people)")
    p.add_argument("--episodes", type=int, default=10, help="expert: episodes to run")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (episode i: seed + i)")
    p.add_argument("--hold-steps", type=int, default=2,
                   help="expert: steps kept after success (rollout_expert extra_steps)")
    p.add_argument("--max-steps", type=int, default=None, help="expert: step limit (default: the task's)")
    p.add_argument("--rate", type=float, default=None,
                   help="realtime: command rate Hz (default: spec control_hz); the realtime expert's actions "
                        "refer to it as the robot's control rate (pass the robot node's --rate)")
    p.add_argument("--speed", type=float, default=None, help="human devices: speed scale 0..1")
    p.add_argument("--wait-robot", type=float, default=30.0, help="s to wait for the robot node")
    p.add_argument("--wait-recorder", type=float, default=10.0,
                   help="s to wait for a recorder to be ready before the first episode (0: do not wait)")
    p.add_argument("--start-timeout", type=float, default=3.0, help="s to wait for the step-0 observation")
    p.add_argument("--start-retries", type=int, default=5)
    p.add_argument("--step-timeout", type=float, default=10.0, help="s to wait for each observation")
    p.add_argument("--linger", type=float, default=0.3, help="s to keep running after the last event")
    p.add_argument("--recorder-timeout", type=float, default=30.0,
                   help="s to wait for the recorder to confirm the last episode")
    p.add_argument("--name", default="teleop", help="node name")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    exit_on_help(build_parser, argv[1:])
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.utilities import remove_ros_args

    from robot_rl.spec import load_spec
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    args.mode = args.mode or ("lockstep" if args.device == "expert" else "realtime")
    try:
        spec = load_spec(args.robot)
        if args.rate is None:
            args.rate = float(spec.control_hz)
        kw: dict[str, Any] = {}
        if args.device == "expert":
            kw = dict(task=args.task, robot=spec, hold_steps=args.hold_steps, max_steps=args.max_steps)
        elif args.device == "leader":
            kw = dict(robot=spec, port=args.leader_port, calibration=args.leader_calibration,
                      hardware=args.leader_hardware, events=args.events, episodes=args.episodes, seed=args.seed,
                      max_seconds=args.max_seconds)
        elif args.speed is not None:
            kw = dict(speed=args.speed)
        dev = make_device(args.device, **kw)
        dev.connect()
    except (DeviceError, ValueError, KeyError) as e:
        print(f"teleop_node: {e}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    tn = None
    rc = 0
    try:
        tn = TeleopNode(args, spec)
        tn.log.info(f"{args.device} teleop for {spec.name}/{args.task} ({args.mode})")
        if args.device == "expert":
            if not tn.wait_for_robot(args.wait_robot):
                tn.log.error(f"no robot node after {args.wait_robot} s (nothing subscribes to "
                             f"{topics.ACTION_COMMAND} / publishes {topics.JOINT_STATES})")
                return 1
            if args.wait_recorder > 0:
                if tn.wait_for_recorder(args.wait_recorder):
                    tn.log.info("recorder ready")
                    tn.spin_until(lambda: False, 0.3)  # let the robot node match the recorder too
                else:
                    tn.log.warning(f"no ready recorder after {args.wait_recorder} s: running without one")
            tn.recorder_base = int((tn.recorder or {}).get("episodes_closed", "0") or 0)
            rc = (run_expert_lockstep if args.mode == "lockstep" else run_expert_realtime)(tn, dev, args)
        else:
            tn.recorder_base = 0
            if args.device == "leader" and args.wait_recorder > 0:
                if tn.wait_for_recorder(args.wait_recorder):
                    tn.recorder_base = int((tn.recorder or {}).get("episodes_closed", "0") or 0)
                    tn.spin_until(lambda: False, 0.3)
            try:
                rc = run_human(tn, dev, args)
            except DeviceError as e:  # the leader arm went away mid-episode, or does not fit the robot
                tn.log.error(str(e))
                tn.event("failure", source="teleop", reason="device")
                rc = 1
            if args.device == "leader" and rc == 0:
                wait_recorder_done(tn, args.episodes, args)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        dev.close()
        if tn is not None:
            tn.node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.exit(main())
