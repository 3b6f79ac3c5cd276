"""Online RL split over ROS 2: a learner node (next to the GPU) and actor nodes (next to the robot).

    python -m robot_rl.ros.rl_nodes learner --out runs/rl_dist --task pick_cube
    python -m robot_rl.ros.rl_nodes actor --id a0 --task pick_cube --human sim

Thin adapters over :class:`robot_rl.rl.distributed.LearnerCore` / :class:`ActorCore`.
Actors publish batches of transitions on ``/rl/transitions`` and keep each one until the
learner acknowledges it on ``/rl/ack`` (after it is fsynced to the replay log); the learner
publishes policy weights on ``/rl/weights`` (transient local, depth 1: a (re)started actor
gets the latest). Payloads are safetensors bytes in ``std_msgs/UInt8MultiArray``
(:mod:`robot_rl.rl.wire`). An actor's control loop runs on a thread of its own at a fixed
rate and never waits on the network; packing and publishing happen on a sender thread. The
learner trains on a thread of its own, checkpoints every N updates and on SIGINT / SIGTERM,
and resumes from ``--out``. See docs/rl_distributed.md.
"""
from __future__ import annotations

import argparse
import array
import json
import signal
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

import numpy as np

from robot_rl.ros import topics
from robot_rl.ros.node_args import exit_on_help


def _import_ros():
    global rclpy, DiagnosticArray, DiagnosticStatus, UInt8MultiArray, String, Bool, Float64, TwistStamped
    import rclpy  # noqa: F811
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: F811
    from geometry_msgs.msg import TwistStamped  # noqa: F811
    from std_msgs.msg import Bool, Float64, String, UInt8MultiArray  # noqa: F811


def bytes_msg(data: bytes):
    """bytes -> ``std_msgs/UInt8MultiArray`` (one copy: array('B') is what rclpy stores)."""
    m = UInt8MultiArray()
    m.data = array.array("B", data)
    return m


def msg_bytes(msg) -> bytes:
    d = msg.data
    return d.tobytes() if isinstance(d, array.array) else bytes(d)


def _diag_values(d: dict[str, Any]) -> dict[str, str]:
    return {str(k): (f"{v:.6g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in d.items()}


class _Threaded:
    """A node with worker threads; a worker that fails logs and shuts the node down."""

    def __init__(self, node_name: str):
        self.node = rclpy.create_node(node_name)
        self.log = self.node.get_logger()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.failed: BaseException | None = None

    def _spawn(self, fn, name: str) -> None:
        def run():
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                if self._stop.is_set():
                    return
                self.failed = e
                self.log.fatal(f"{name} thread failed, shutting down: {e!r}\n{traceback.format_exc()}")
                self._stop.set()
        t = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10.0)


# ============================================================================== learner ====
class LearnerNode(_Threaded):
    def __init__(self, core, *, publish_every_s: float = 1.0, queue_depth: int = 32, diag_hz: float = 1.0,
                 train: bool = True, node_name: str = "rl_learner"):
        _import_ros()
        super().__init__(node_name)
        self.core = core
        self.publish_every_s = float(publish_every_s)
        self.train_enabled = bool(train)
        n, rq = self.node, topics.reliable_qos
        self.pub_ack = n.create_publisher(String, topics.RL_ACK, rq(100))
        self.pub_weights = n.create_publisher(UInt8MultiArray, topics.RL_WEIGHTS, topics.latched_qos(1))
        self.pub_diag = n.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, rq(10))
        n.create_subscription(UInt8MultiArray, topics.RL_TRANSITIONS, self._on_transitions, rq(queue_depth))
        if diag_hz > 0:
            n.create_timer(1.0 / diag_hz, self.publish_diagnostics)
        self._published_updates: int | None = None

    def start(self) -> None:
        self.publish_weights()  # actors switch to the learner's policy (and architecture) at once
        self._spawn(self._train_loop, "rl_train")

    def _on_transitions(self, msg) -> None:
        ack = self.core.receive(msg_bytes(msg))
        if ack is None:
            self.log.warning(f"transition message dropped: {self.core.last_error}", throttle_duration_sec=2.0)
            return
        if not ack.ok:
            self.log.error(f"batch {ack.seq} of {ack.source} refused: {ack.reason}", throttle_duration_sec=2.0)
        try:
            self.pub_ack.publish(String(data=ack.text()))
        except Exception:  # noqa: BLE001 - shutting down
            pass

    def publish_weights(self) -> None:
        from robot_rl.rl.wire import WireError
        try:
            blob = self.core.weights()
        except WireError as e:  # NaN / inf: the learner diverged; actors keep their weights
            self.log.error(f"weights not published: {e}", throttle_duration_sec=10.0)
            return
        self._published_updates = self.core.updates
        self.pub_weights.publish(bytes_msg(blob))

    def _train_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            n = self.core.train(4) if self.train_enabled else 0
            if n == 0:
                self._stop.wait(0.01)
            now = time.monotonic()
            if now - last >= self.publish_every_s and self.core.updates != self._published_updates:
                self.publish_weights()
                last = now

    def publish_diagnostics(self) -> None:
        from robot_rl.ros.msgs import diagnostic_status, publish_diagnostics
        d = self.core.status()
        level = DiagnosticStatus.WARN if (d.get("corrupt") or d.get("rejected")) else DiagnosticStatus.OK
        msg = f"{d['transitions']} transitions from {d['sources']} sources, {d['updates']} updates, " \
              f"weights v{d['weights_version']}"
        publish_diagnostics(self.node, self.pub_diag, [diagnostic_status(
            f"{self.node.get_name()}: rl_learner", self.core.cfg.task, level, msg, _diag_values(d))])


# ================================================================================ actor ====
class ActorNode(_Threaded):
    """``core.step()`` on a control thread at ``rate`` Hz (0: as fast as it goes); packing and
    publishing on a sender thread; acks, weights and teleop in the executor."""

    def __init__(self, core, *, rate: float = 0.0, diag_hz: float = 1.0, teleop=None, max_steps: int = 0,
                 send: bool = True, node_name: str | None = None, queue_depth: int = 32):
        _import_ros()
        super().__init__(node_name or f"rl_actor_{core.cfg.actor_id.replace('-', '_').replace('.', '_')}")
        self.core = core
        self.rate = float(rate)
        self.max_steps = int(max_steps)
        self.send = bool(send)
        self.done = threading.Event()  # max_steps reached
        self._batch_ready = threading.Event()
        core.on_batch = self._batch_ready.set
        self.tick_times: deque = deque(maxlen=200_000)  # monotonic start of every control step
        self.overruns = 0
        n, rq = self.node, topics.reliable_qos
        self.pub_tr = n.create_publisher(UInt8MultiArray, topics.RL_TRANSITIONS, rq(queue_depth))
        self.pub_diag = n.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, rq(10))
        n.create_subscription(String, topics.RL_ACK, self._on_ack, rq(100))
        n.create_subscription(UInt8MultiArray, topics.RL_WEIGHTS, self._on_weights, topics.latched_qos(1))
        self.teleop = teleop
        if teleop is not None:
            n.create_subscription(Bool, topics.TELEOP_INTERVENTION, lambda m: teleop.on_intervention(m.data), rq(10))
            n.create_subscription(TwistStamped, topics.EE_DELTA_COMMAND, self._on_twist, rq(10))
            n.create_subscription(Float64, topics.GRIPPER_COMMAND, lambda m: teleop.on_gripper(m.data), rq(10))
            n.create_subscription(String, topics.TELEOP_EVENT, self._on_event, rq(10))
        if diag_hz > 0:
            n.create_timer(1.0 / diag_hz, self.publish_diagnostics)

    def start(self) -> None:
        self._spawn(self._control_loop, "rl_control")
        self._spawn(self._sender_loop, "rl_sender")

    # -- threads -----------------------------------------------------------------------------
    def _control_loop(self) -> None:
        period = 1.0 / self.rate if self.rate > 0 else 0.0
        deadline = time.monotonic()
        while not self._stop.is_set():
            if period:
                rest = deadline - time.monotonic()
                if rest > 0:
                    time.sleep(rest)
            self.tick_times.append(time.monotonic())
            self.core.step()
            if self.max_steps and self.core.counts["steps"] >= self.max_steps:
                self.core.flush()
                self.done.set()
                return
            if period:
                deadline += period
                now = time.monotonic()
                if deadline <= now:  # a whole period late: skip the missed ticks, do not burst
                    self.overruns += 1
                    deadline += (int((now - deadline) / period) + 1) * period

    def _sender_loop(self) -> None:
        matched = 0
        while not self._stop.is_set():
            self._batch_ready.wait(0.05)
            self._batch_ready.clear()
            if not self.send:  # transport off (benchmark baseline): batches pile up and are dropped
                continue
            self.core.pack_ready()
            m = self.pub_tr.get_subscription_count()
            if m > matched:  # a learner (re)appeared: what it missed goes now, not after the timeout
                self.core.resend_now()
            matched = m
            for _, blob in self.core.due():
                self.pub_tr.publish(bytes_msg(blob))

    # -- callbacks ---------------------------------------------------------------------------
    def _on_ack(self, msg) -> None:
        from robot_rl.rl.distributed import parse_ack
        try:
            src, seq, ok = parse_ack(msg.data)
        except ValueError as e:
            self.log.warning(str(e), throttle_duration_sec=5.0)
            return
        if self.core.on_ack(src, seq, ok) and not ok:
            self.log.error(f"the learner refused batch {seq} for good (see its log)", throttle_duration_sec=5.0)

    def _on_weights(self, msg) -> None:
        if self.core.offer_weights(msg_bytes(msg)):
            self.log.info(f"weights v{self.core._offered} accepted", throttle_duration_sec=5.0)
        elif self.core.last_weights_error:
            self.log.warning(f"weights rejected: {self.core.last_weights_error}", throttle_duration_sec=5.0)

    def _on_twist(self, msg) -> None:
        t = msg.twist
        self.teleop.on_twist([t.linear.x, t.linear.y, t.linear.z], [t.angular.x, t.angular.y, t.angular.z])

    def _on_event(self, msg) -> None:
        event = topics.event_or_warn(msg.data, self.log)
        if event in ("success", "failure"):
            self.core.label_episode(event == "success")
            self.log.info(f"episode labelled {event} by /teleop/event")

    # -- stats -------------------------------------------------------------------------------
    def period_stats(self, since: float = -np.inf) -> dict[str, float]:
        """Control period statistics (ms) over ticks after ``since`` (monotonic)."""
        t = np.asarray([x for x in list(self.tick_times) if x >= since], float)
        out: dict[str, float] = {"ticks": float(len(t))}
        if len(t) < 3:
            return out
        per = np.diff(t) * 1e3
        out["rate_hz"] = float((len(t) - 1) / (t[-1] - t[0]))
        out["period_ms_p50"] = float(np.percentile(per, 50))
        if self.rate > 0:
            err = np.abs(per - 1e3 / self.rate)
            out.update(period_err_ms_p50=float(np.percentile(err, 50)), period_err_ms_p99=float(np.percentile(err, 99)),
                       period_err_ms_max=float(err.max()))
        return out

    def publish_diagnostics(self) -> None:
        from robot_rl.ros.msgs import diagnostic_status, publish_diagnostics
        d = self.core.status()
        d.update({f"loop/{k}": v for k, v in self.period_stats(time.monotonic() - 10.0).items()})
        d["loop/rate_target_hz"] = self.rate
        d["loop/overruns"] = self.overruns
        dropped = d.get("dropped_batches", 0)
        level = DiagnosticStatus.WARN if dropped or d.get("weights_rejected") else DiagnosticStatus.OK
        msg = f"{d['steps']} steps, weights v{d['weights_version']}, {d['pending_batches']} batches pending" \
              + (f", {dropped} dropped" if dropped else "")
        publish_diagnostics(self.node, self.pub_diag, [diagnostic_status(
            f"{self.node.get_name()}: rl_actor", self.core.cfg.actor_id, level, msg, _diag_values(d))])


# ========================================================================= command line ====
def _list(s: str) -> list[str]:
    return [x for x in (w.strip() for w in s.split(",")) if x and x != "none"]


def _pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values parsed as JSON when they are) -> dict."""
    d: dict[str, Any] = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ValueError(f"{flag} expects key=value, got {kv!r}")
        try:
            d[k] = json.loads(v)
        except ValueError:
            d[k] = v
    return d


def _sac(pairs: list[str]):
    """``--sac hidden=[64,64] --sac utd=4`` -> SACConfig."""
    from robot_rl.rl.sac import SACConfig
    return SACConfig.from_dict(_pairs(pairs, "--sac"))


def _offline(pairs: list[str]):
    """``--offline steps=2000 --offline online=iql`` -> OfflineConfig (learner defaults: no
    pretraining, SAC online, no WSRL)."""
    from robot_rl.rl.offline import OfflineConfig
    from robot_rl.rl.sac import check_fields
    d = {"steps": 0, "online": "sac", "wsrl": False, **_pairs(pairs, "--offline")}
    check_fields(OfflineConfig, d, "offline")
    return OfflineConfig(**d)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="pick_cube")
    p.add_argument("--robot", default="so101")
    p.add_argument("--keys", default="joint_pos,gripper,ee_pos,object_state", help="state observation keys")
    p.add_argument("--cameras", default="none", help="comma-separated cameras (image_<name> observations) or none")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--sac", action="append", default=[], metavar="KEY=VALUE",
                   help="SACConfig setting (repeatable), e.g. --sac hidden=[64,64] --sac utd=4")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--queue-depth", type=int, default=32, help="/rl/transitions history depth (messages)")
    p.add_argument("--diag-hz", type=float, default=1.0, help="/diagnostics rate (0: off)")
    p.add_argument("--name", default=None, help="node name")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robot_rl.ros.rl_nodes", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="role", required=True)
    lp = sub.add_parser("learner", help="receive transitions, train SAC, publish weights",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    lp.add_argument("--out", required=True, help="run directory: replay log, checkpoint (resumed when present)")
    _common(lp)
    lp.add_argument("--demos", default=None, help="episode store of demonstrations (RLPD: half of every batch)")
    lp.add_argument("--demo-episodes", type=int, default=20)
    lp.add_argument("--capacity", type=int, default=200_000)
    lp.add_argument("--learning-starts", type=int, default=500, help="online transitions before the first update")
    lp.add_argument("--updates-per-transition", type=float, default=1.0,
                    help="SAC update calls (each utd critic steps) per received transition; 0: as fast as possible")
    lp.add_argument("--checkpoint-every", type=int, default=2000, help="critic updates between checkpoints")
    lp.add_argument("--publish-every", type=float, default=1.0, help="seconds between weight publications")
    lp.add_argument("--keep-segments", type=int, default=None, help="replay log segments kept (default: all)")
    lp.add_argument("--intervention-penalty", type=float, default=0.0)
    lp.add_argument("--no-interventions-to-demos", dest="interventions_to_demos", action="store_false")
    lp.add_argument("--offline", action="append", default=[], metavar="KEY=VALUE",
                    help="IQL: --offline steps=2000 (pretrain on --demos at first start) --offline online=iql "
                         "--offline online_actor_lr=3e-5 (the single-process recipe)")
    lp.add_argument("--device", default=None, help="torch device (default: cuda when present)")
    lp.add_argument("--no-train", dest="train", action="store_false",
                    help="only receive and log (transport benchmarks)")
    lp.set_defaults(queue_depth=64)  # >= actors x window, or batches beyond it wait for a re-send
    ap = sub.add_parser("actor", help="act on the twin, stream transitions, follow the learner's weights",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--id", default="a0", help="actor id (several actors: different ids)")
    _common(ap)
    ap.add_argument("--human", default="none", choices=["none", "sim", "teleop"],
                    help="who may take over: the scripted expert (sim) or a teleop device over ROS")
    ap.add_argument("--rate", type=float, default=0.0, help="control loop Hz (0: as fast as the twin goes)")
    ap.add_argument("--batch", type=int, default=32, help="transitions per message")
    ap.add_argument("--max-pending", type=int, default=64, help="unacknowledged batches kept (then drop oldest)")
    ap.add_argument("--window", type=int, default=8, help="batches in flight")
    ap.add_argument("--resend-after", type=float, default=2.0, help="seconds before an unacked batch is re-sent")
    ap.add_argument("--random-steps", type=int, default=0, help="uniform random actions first")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: run until stopped)")
    ap.add_argument("--drain", type=float, default=5.0,
                    help="after --max-steps: wait up to this long (s) for the learner to acknowledge what is pending")
    ap.add_argument("--deterministic", action="store_true", help="act with the policy's mean")
    ap.add_argument("--teleop-stale", type=float, default=0.25, help="a teleop twist older than this is zero (s)")
    return p


def _signals():
    """SIGINT / SIGTERM set a flag checked between callbacks (never mid-write)."""
    stop = {"sig": None}

    def on_signal(signum, frame):
        stop["sig"] = signum
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return stop


def _init_ros(argv):
    """rclpy up without its own signal handlers; returns the flag our handlers set."""
    _import_ros()
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    return _signals()


def _ignore_signals() -> None:
    """While shutting down (final checkpoint, last log lines) a second Ctrl-C is ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _stop_node(node, rc: int) -> int:
    """Shutting down: ignore further signals, stop the node's threads; 1 if the node failed."""
    _ignore_signals()
    if node is not None:
        node.stop()
        if node.failed:
            return 1
    return rc


def _executor(node):
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor()
    ex.add_node(node.node)
    return ex


def _spin(ex, node, stop, until=None) -> None:
    while stop["sig"] is None and rclpy.ok() and not node.stopped and not (until and until()):
        ex.spin_once(timeout_sec=0.1)


def main_learner(args, argv) -> int:
    from robot_rl.rl.distributed import LearnerConfig, LearnerCore
    prog = "rl_nodes learner"
    try:
        sac = _sac(args.sac)
        if args.device:
            sac.device = args.device
        cfg = LearnerConfig(out=args.out, task=args.task, robot=args.robot, keys=_list(args.keys),
                            cameras=_list(args.cameras), image_size=args.image_size, seed=args.seed or 0,
                            capacity=args.capacity, demos=args.demos, demo_episodes=args.demo_episodes,
                            learning_starts=args.learning_starts, updates_per_transition=args.updates_per_transition,
                            interventions_to_demos=args.interventions_to_demos,
                            intervention_penalty=args.intervention_penalty, checkpoint_every=args.checkpoint_every,
                            keep_segments=args.keep_segments, sac=sac, offline=_offline(args.offline))
        core = LearnerCore(cfg)
    except (ValueError, KeyError, OSError) as e:  # ReplayError, CheckpointError, SpecError: one line
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    stop = _init_ros(argv)
    node = None
    rc = 0
    try:
        node = LearnerNode(core, publish_every_s=args.publish_every, queue_depth=args.queue_depth,
                           diag_hz=args.diag_hz, train=args.train, node_name=args.name or "rl_learner")
        s = core.status()
        node.log.info(f"learner {args.out}: {'resumed' if core.resumed else 'new'}, {s['resumed_batches']} batches / "
                      f"{s['resumed_transitions']} transitions from the replay log, {s['updates']} updates; observation "
                      f"keys {list(core.obs_spec)}")
        node.start()
        ex = _executor(node)
        _spin(ex, node, stop)
    except Exception as e:  # noqa: BLE001
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 1
    finally:
        rc = _stop_node(node, rc)
        try:
            path = core.checkpoint()
            print(f"{prog}: checkpoint {path} at {core.updates} updates; {core.counts['transitions']} transitions "
                  f"logged", file=sys.stderr)
        except Exception as e:  # noqa: BLE001
            print(f"{prog}: final checkpoint failed: {type(e).__name__}: {e}", file=sys.stderr)
            rc = rc or 1
        if node is not None:
            node.node.destroy_node()
        rclpy.try_shutdown()
    return rc


def main_actor(args, argv) -> int:
    from robot_rl.rl.distributed import ActorConfig, ActorCore, TeleopIntervention
    prog = "rl_nodes actor"
    try:
        cfg = ActorConfig(actor_id=args.id, task=args.task, robot=args.robot, keys=_list(args.keys),
                          cameras=_list(args.cameras), image_size=args.image_size, seed=args.seed,
                          human={"teleop": "external"}.get(args.human, args.human), batch_size=args.batch,
                          max_pending=args.max_pending, window=args.window, resend_after_s=args.resend_after,
                          random_steps=args.random_steps, deterministic=args.deterministic, sac=_sac(args.sac))
        teleop = None
        if args.human == "teleop":
            from robot_rl.rl.loop import make_rl_env
            env = make_rl_env(cfg.rl_config())
            teleop = TeleopIntervention(env.robot_spec, stale_s=args.teleop_stale)
            core = ActorCore(cfg, env=env, intervention=teleop)
        else:
            core = ActorCore(cfg)
    except (ValueError, KeyError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    stop = _init_ros(argv)
    node = None
    rc = 0
    try:
        node = ActorNode(core, rate=args.rate, diag_hz=args.diag_hz, teleop=teleop, max_steps=args.max_steps,
                         node_name=args.name, queue_depth=args.queue_depth)
        node.log.info(f"actor {core.source} on {args.task}: {'%g Hz' % args.rate if args.rate > 0 else 'free-running'}, "
                      f"human {args.human}, {args.batch} transitions per message, keys {core.keys}")
        sys.setswitchinterval(2e-4)  # a waking control thread gets the GIL quickly
        node.start()
        ex = _executor(node)
        _spin(ex, node, stop, until=node.done.is_set)
        if node.done.is_set() and stop["sig"] is None:  # --max-steps: let the learner acknowledge the rest
            end = time.monotonic() + args.drain
            _spin(ex, node, stop, until=lambda: core.pending_batches == 0 or time.monotonic() > end)
    except Exception as e:  # noqa: BLE001
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 1
    finally:
        rc = _stop_node(node, rc)
        if node is not None:
            s = core.status()
            print(f"{prog}: {s['steps']} steps, {s['acked_transitions']} transitions acknowledged, "
                  f"{s['pending_batches']} batches unacknowledged, weights v{s['weights_version']}", file=sys.stderr)
            node.node.destroy_node()
        core.close()
        rclpy.try_shutdown()
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    exit_on_help(build_parser, argv[1:])
    from rclpy.utilities import remove_ros_args
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    return main_learner(args, argv) if args.role == "learner" else main_actor(args, argv)


if __name__ == "__main__":
    sys.exit(main())
