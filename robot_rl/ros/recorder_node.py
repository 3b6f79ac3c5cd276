"""The recorder node: contract topics -> episode store (+ a rosbag2 mcap of the raw topics).

    python -m robot_rl.ros.recorder_node --contract sim --out data/demo.zarr --robot so101 \\
        --task pick_cube [--bag data/demo_bag] [--cameras front,wrist] [--fps 30]

Subscribes to every topic of the recording contract (``robot_rl/conf/contract/<name>.yaml``;
QoS per contract), samples them onto dataset steps by header stamps with the contract's
aligner (:mod:`robot_rl.ros.recorder`), keeps each key's stamp as ``stamp_<key>``, and writes
one episode per teleop episode into the :class:`~robot_rl.data.store.EpisodeStore`.

- Episodes: ``/teleop/event`` (``start [seed=N source=expert ...]``, ``success``,
  ``failure``, ``discard``, ``rerecord``) and the services ``/recorder/start``,
  ``/recorder/success``, ``/recorder/failure``, ``/recorder/discard`` (std_srvs/Trigger).
  Source: the start event's ``source=``, else ``--source``; ``intervention`` when
  ``/teleop/intervention`` was true during the episode.
- Mode: ``realtime`` (wall-clock stamps: a grid at the dataset fps) or ``lockstep``
  (sim-time stamps: one step per ``/action`` stamp, emitted once every topic has caught up,
  never by wall time); ``auto`` picks lockstep when stamps are sim time (< 1e9 s).
- Telemetry: achieved rate, per-topic drops and age (p50 / max) of the samples used, in
  each episode's ``extra["cadence"]`` and on ``/diagnostics`` (status ``recorder``).
- ``--bag DIR``: every raw message of the contract topics, events, intervention, success
  and camera_info goes into a rosbag2 (mcap) in the same run (log time: receipt time, or
  sim time in lockstep mode: each contract message at the stamp it was recorded with, each
  episode's events at the stamps of its first and last recorded step, so that
  ``robot-rl convert`` gives back exactly the episodes of the store).
- SIGINT / SIGTERM: an episode whose end event arrived is finished, one still recording is
  discarded, the store and the bag are closed. Committed episodes are never touched.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import os
import signal
import sys
import time
from typing import Any

from robot_rl.ros import topics
from robot_rl.ros.node_args import exit_on_help

SIM_TIME_MAX_S = 1e9  # stamps below this are sim time (wall time is ~1.7e9 s)
DIAG_NAME = "recorder"


def _msg_class(typ: str):
    pkg, _, name = typ.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class RecorderNode:
    def __init__(self, args: argparse.Namespace, bound, store, bag=None):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        self.args = args
        self.bound = bound
        self.store = store
        self.bag = bag
        overrides = []
        if args.use_sim_time:
            from rclpy.parameter import Parameter
            overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, True)]
        self.node = rclpy.create_node(args.name, parameter_overrides=overrides)
        self.log = self.node.get_logger()
        self.recorder = None  # built once the mode is known
        self.mode = None if args.mode == "auto" else args.mode
        self._early_events: list[tuple[str, int, Any]] = []  # (text, receipt ns, raw message or None)
        self._bag_early: list[tuple] = []  # bag writes before the clock is known
        from robot_rl.ros.recorder import BurstStamper
        self.stamper = BurstStamper(timeout_s=args.step_timeout)
        # the first header topic of the contract is what each observation burst starts with
        self.ref_topic = next((t for t, tb in bound.topics.items() if tb.has_header), None)
        self._log_ns = 0
        self.bag_counts: dict[str, int] = {}
        self.received: dict[str, int] = {t: 0 for t in bound.topics}  # every message since start, per topic
        self._subs: dict[str, Any] = {}
        self._classes = {t: _msg_class(tb.type) for t, tb in bound.topics.items()}
        n = self.node
        self.pub_diag = n.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topics.reliable_qos(10))
        # events and intervention: reliable, deep queue (never lose one)
        ev_topic = bound.event_topic or topics.TELEOP_EVENT
        self._extra_topics = {ev_topic: ("std_msgs/msg/String", String), topics.TELEOP_INTERVENTION:
                              ("std_msgs/msg/Bool", Bool)}
        # /success and camera_info only go into the bag; they are subscribed without one too,
        # so that a bag player waiting for a subscriber on every topic (replay) starts
        from sensor_msgs.msg import CameraInfo
        self._extra_topics[topics.SUCCESS] = ("std_msgs/msg/Bool", Bool)
        for c in bound.spec.cameras:
            self._extra_topics[topics.camera_info(c.name)] = ("sensor_msgs/msg/CameraInfo", CameraInfo)
        if bag is not None:
            for t, tb in bound.topics.items():
                bag.add_topic(t, tb.type)
            for t, (typ, _) in self._extra_topics.items():
                bag.add_topic(t, typ)
        self._lazy: dict[str, tuple[Any, str, Any]] = {}  # topic -> (class, contract qos, callback)
        for t, (typ, cls) in self._extra_topics.items():
            cb = (lambda raw, t=t, cls=cls: self._on_extra(t, cls, raw))
            if t.endswith("camera_info"):
                self._lazy[t] = (cls, "sensor", cb)
            else:
                n.create_subscription(cls, t, cb, topics.reliable_qos(100), raw=True)
        for t, tb in bound.topics.items():
            cls = self._classes[t]
            # (raw, message info): DDS source timestamps place unstamped messages (BurstStamper)
            self._lazy[t] = (cls, tb.qos, functools.partial(self._on_raw, t, tb, cls))
        self._ev_topic = ev_topic
        for what in ("start", "success", "failure", "discard"):
            n.create_service(Trigger, f"/recorder/{what}", lambda req, resp, w=what: self._srv(w, resp))
        self._subscribe_available()
        # timers run on the steady clock: with --use-sim-time a ROS-clock timer would not fire
        # before the first /clock message (no late topic could be subscribed before a bag plays)
        # and step / end timeouts are wall time anyway
        from rclpy.clock import Clock, ClockType
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        n.create_timer(0.5, self._subscribe_available, clock=steady)
        n.create_timer(1.0 / args.tick_hz, self._tick, clock=steady)
        if args.diag_hz > 0:
            n.create_timer(1.0 / args.diag_hz, self.publish_diagnostics, clock=steady)

    _last_now = 0

    def _now(self) -> int:
        """Receipt time, ns: wall clock, or the ROS clock (/clock) with --use-sim-time."""
        if self.args.use_sim_time:
            try:
                return self.node.get_clock().now().nanoseconds
            except Exception:  # noqa: BLE001 - shutting down
                return self._last_now
        return time.time_ns()

    # -- subscriptions --------------------------------------------------------------------
    def _qos(self, topic: str, contract_qos: str) -> Any:
        """Contract QoS; a 'sensor' topic whose publishers all offer reliable delivery is
        subscribed reliably (``--qos auto``): lockstep recordings lose nothing."""
        from rclpy.qos import QoSReliabilityPolicy
        reliable = contract_qos == "reliable"
        if not reliable and self.args.qos == "auto":
            infos = self.node.get_publishers_info_by_topic(topic)
            reliable = bool(infos) and all(i.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE for i in infos)
        return topics.reliable_qos(self.args.depth) if reliable else topics.sensor_qos(self.args.depth)

    def _subscribe_available(self) -> None:
        from rclpy.qos import QoSReliabilityPolicy
        for topic, (cls, cq, cb) in self._lazy.items():
            if topic in self._subs:
                continue
            if self.args.qos == "auto" and cq != "reliable" and not self.node.count_publishers(topic):
                continue  # wait for the publisher to learn its reliability
            qos = self._qos(topic, cq)
            self._subs[topic] = self.node.create_subscription(cls, topic, cb, qos, raw=True)
            rel = "reliable" if qos.reliability == QoSReliabilityPolicy.RELIABLE else "best effort"
            self.log.info(f"subscribed {topic} ({rel})")

    @property
    def ready(self) -> bool:
        return all(t in self._subs for t, tb in self.bound.topics.items() if tb.required)

    # -- callbacks ---------------------------------------------------------------------------
    def _bag_write(self, topic: str, raw: bytes, recv_ns: int, stamp_ns: int | None = None) -> None:
        """Log time: receipt time. In lockstep, sim time, chosen so that the bag converts
        (split by events, on the dataset grid) into exactly the episodes recorded here: a
        contract message is logged at the stamp it was recorded with (its header stamp, or
        for an unstamped one the stamp of its observation), an event at the stamp of the
        first / last step of its episode (see Recorder.event), anything else at the sim clock
        (newest stamp processed). Before the clock is known, writes wait."""
        if self.bag is None:
            return
        if self.mode is None or (self.mode == "lockstep" and self.recorder is None):
            self._bag_early.append((topic, raw, recv_ns, stamp_ns))
            return
        if self._bag_early:
            early, self._bag_early = self._bag_early, []
            for t, r, rc, st in early:
                self._bag_write(t, r, rc, st)
        if self.mode == "lockstep":
            log_ns = stamp_ns if stamp_ns is not None else self.recorder.unstamped_stamp(recv_ns)
        else:
            log_ns = recv_ns
        self._log_ns = log_ns
        self.bag.write(topic, log_ns, raw)
        self.bag_counts[topic] = self.bag_counts.get(topic, 0) + 1

    def _decide_mode(self, stamp_ns: int) -> None:
        self.mode = "lockstep" if stamp_ns < SIM_TIME_MAX_S * 1e9 else "realtime"
        self.log.info(f"--mode auto: stamps are {'sim' if self.mode == 'lockstep' else 'wall'} time -> {self.mode}")

    def _make_recorder(self) -> None:
        from robot_rl.ros.recorder import Recorder
        a = self.args
        extra = {"contract": self.bound.name, "recorded_by": "recorder_node", "robot_rate_hz": a.fps}
        if a.action_mode:  # what the recorded /action means (training reads it; default ee_delta)
            extra["action_mode"] = a.action_mode
        if a.bag:
            extra["bag"] = os.path.abspath(a.bag)
        self.recorder = Recorder(self.bound, self.store, task=a.task, mode=self.mode, source=a.source,
                                 step_timeout_s=a.step_timeout, end_timeout_s=a.end_timeout, extra=extra,
                                 on_episode=self._on_episode, on_event_log=self._bag_event)
        for text, recv, raw in self._early_events:
            self.recorder.event(text, recv, raw)
        self._early_events.clear()

    def _stamp_of(self, tb, cls, raw: bytes):
        """(stamp ns or None, decoded message or None)."""
        if tb.has_header:
            from robot_rl.data.bag import header_stamp_ns
            return header_stamp_ns(raw), None
        if tb.type.endswith("MultiArray"):
            from rclpy.serialization import deserialize_message

            from robot_rl.data.contract import to_ns
            from robot_rl.ros.msgs import float_array_stamp
            msg = deserialize_message(raw, cls)
            st = float_array_stamp(msg)
            return (None if st is None else to_ns(st)), msg
        return None, None

    def _on_raw(self, topic: str, tb, cls, raw: bytes, info: dict) -> None:
        recv = self._now()
        self.received[topic] += 1
        src = int(info.get("source_timestamp") or recv) if isinstance(info, dict) else recv
        stamp, msg = self._stamp_of(tb, cls, raw)
        item = (topic, tb, cls, raw, msg, recv)
        if stamp is None:  # bag: written by _deliver, at the stamp it gets
            if self.mode == "realtime":
                self._deliver(item, recv, stamped=False)
            else:  # lockstep, or not known yet: the stamp of its observation, once known
                for it, st in self.stamper.unstamped(src, item):
                    self._deliver(it, st, stamped=False)
            return
        if self.mode is None:
            self._decide_mode(stamp)
        self._deliver(item, stamp, stamped=True)
        self._bag_write(topic, raw, recv, stamp)
        if topic == self.ref_topic:
            for it, st in self.stamper.reference(src, stamp):
                self._deliver(it, st, stamped=False)
        if self.mode == "realtime" and self.stamper._pending:  # decided realtime: receipt times
            for it, _ in self.stamper.flush():
                self._deliver(it, it[5], stamped=False)

    def _deliver(self, item, stamp: int, stamped: bool) -> None:
        from rclpy.serialization import deserialize_message
        topic, tb, cls, raw, msg, recv = item
        if self.recorder is None:
            self._make_recorder()
        if not stamped:
            self._bag_write(topic, raw, recv, stamp)
        if msg is None:
            values = lambda raw=raw: tb.extract(deserialize_message(raw, cls))  # noqa: E731 - lazy decode
        else:
            values = lambda msg=msg: tb.extract(msg)  # noqa: E731
        try:
            self.recorder.message(topic, stamp, values, recv, stamped=stamped)
        except Exception as e:  # noqa: BLE001 - one bad message must not end the recording
            self.log.error(f"{topic}: {e}", throttle_duration_sec=2.0)

    def _on_extra(self, topic: str, cls, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message
        recv = self._now()
        if topic == self._ev_topic:  # bag: written by the recorder's on_event_log (_bag_event)
            text = deserialize_message(raw, cls).data
            self.log.info(f"event: {text}")
            self._event(text, recv, raw)
            return
        self._bag_write(topic, raw, recv)
        if topic == topics.TELEOP_INTERVENTION and self.recorder is not None:
            self.recorder.intervention(bool(deserialize_message(raw, cls).data))

    def _bag_event(self, raw: bytes, log_ns: int) -> None:
        self._bag_write(self._ev_topic, raw, log_ns, log_ns)

    def _event(self, text: str, recv: int, raw: bytes | None = None) -> None:
        if self.recorder is None:
            if self.mode is None:
                self._early_events.append((text, recv, raw))
                return
            self._make_recorder()
        try:
            self.recorder.event(text, recv, raw)
        except Exception as e:  # noqa: BLE001
            self.log.error(f"event {text!r}: {e}")
        self.publish_diagnostics()

    def _srv(self, what: str, resp):
        if self.recorder is None and self.mode is None:
            self._early_events.append((what, self._now(), None))
            resp.success, resp.message = True, f"{what}: queued (no data seen yet)"
            return resp
        before = (self.recorder.recording if self.recorder else False)
        if what in ("success", "failure", "discard") and not before:
            resp.success, resp.message = False, f"{what}: no episode is recording"
            return resp
        self._event(what, self._now())
        resp.success, resp.message = True, f"{what}: ok"
        return resp

    def _tick(self) -> None:
        if self.mode == "lockstep":
            for it, st in self.stamper.expire():
                self._deliver(it, st, stamped=False)
        if self.recorder is not None:
            try:
                self.recorder.tick(self._now())
            except Exception as e:  # noqa: BLE001
                self.log.error(f"tick: {e}", throttle_duration_sec=2.0)

    def _say(self, text: str, warn: bool = False) -> None:
        if self.node.context.ok():
            (self.log.warning if warn else self.log.info)(text)
        else:  # shutting down: rosout is gone
            print(f"recorder_node: {text}", file=sys.stderr)

    def _on_episode(self, kind: str, info, index, success, cad: dict) -> None:
        drops = {k: v for k, v in cad.get("drops", {}).items() if v}
        if kind == "committed":
            self._say(f"episode {index} committed: {info.steps} steps, success={success}, "
                      f"rate {cad.get('rate_hz')} Hz, drops {drops or 0}")
        elif kind == "empty":
            self._say(f"episode (start {info.args}) had no aligned steps: nothing committed", warn=True)
        else:
            self._say(f"episode discarded ({info.args})")
        if self.node.context.ok():
            self.publish_diagnostics()

    # -- telemetry -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ready": self.ready, "mode": self.mode or "auto (undecided)", "store": self.args.out,
                             "store_episodes": self.store.n_episodes}
        if self.recorder is not None:
            d.update(self.recorder.status())
        if self.bag is not None:
            d["bag"] = self.args.bag
            d["bag_messages"] = sum(self.bag_counts.values())
        missing = [t for t in self.bound.topics if t not in self._subs]
        if missing:
            d["waiting_for_publishers"] = missing
        return d

    def publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus

        from robot_rl.ros.msgs import diagnostic_status, publish_diagnostics
        st = self.status()
        vals: dict[str, str] = {}
        for k, v in st.items():
            if k in ("current", "last"):
                continue
            vals[k] = str(v).lower() if isinstance(v, bool) else str(v)
        level = DiagnosticStatus.OK
        for prefix, cad in (("current", st.get("current")), ("last", (st.get("last") or {}).get("cadence"))):
            if not cad:
                continue
            vals[f"{prefix}/steps"] = str(cad["steps"])
            vals[f"{prefix}/rate_hz"] = str(cad["rate_hz"])
            vals[f"{prefix}/wall_rate_hz"] = str(cad["wall_rate_hz"])
            for t, n in cad["drops"].items():
                vals[f"{prefix}/drops{t}"] = str(n)
                if n:
                    level = DiagnosticStatus.WARN
            for t, a in cad["age"].items():
                vals[f"{prefix}/age_p50_ms{t}"] = str(a["p50_ms"])
                vals[f"{prefix}/age_max_ms{t}"] = str(a["max_ms"])
        for t, n in self.received.items():
            vals[f"received{t}"] = str(n)
        if st.get("last"):
            vals["last/kind"] = str(st["last"].get("kind"))
            vals["last/success"] = str(st["last"].get("success")).lower()
        message = ("recording" if st.get("recording") else "idle") + (
            "" if st["ready"] else ", waiting for publishers")
        publish_diagnostics(self.node, self.pub_diag,
                            [diagnostic_status(DIAG_NAME, self.bound.spec.name, level, message, vals)])

    def close(self) -> None:
        if self.mode == "lockstep":
            for it, st in self.stamper.flush():
                self._deliver(it, st, stamped=False)
        if self.recorder is not None:
            self.recorder.close(self._now())


# -- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robot_rl.ros.recorder_node", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--contract", default="sim", help="recording contract: name in robot_rl/conf/contract or YAML path")
    p.add_argument("--out", required=True, help="episode store (zarr directory; created or appended to)")
    p.add_argument("--bag", default=None,
                   help="also write the raw topics to this rosbag2 directory (mcap); must not exist")
    p.add_argument("--robot", default="so101", help="robot spec name or YAML path")
    p.add_argument("--task", default="pick_cube",
                   help="task name stored with each episode (a start event's task= wins)")
    p.add_argument("--cameras", default="all", help="comma-separated camera names, 'all' or 'none'")
    p.add_argument("--image-size", default=None,
                   help="camera size in the stored robot spec: N (square) or WxH, e.g. 640x480 (default: the spec's)")
    p.add_argument("--action-mode", default=None, choices=["joint_pos", "joint_delta", "ee_delta"],
                   help="the robot node's action mode (stored with each episode; training defaults to ee_delta)")
    p.add_argument("--fps", type=float, default=None,
                   help="dataset rate in Hz = the robot's control rate (default: contract fps, else the spec's "
                        "control_hz)")
    p.add_argument("--mode", default="auto", choices=["auto", "realtime", "lockstep"],
                   help="realtime: wall-clock grid; lockstep: one step per /action stamp; auto: by the stamps' clock")
    p.add_argument("--use-sim-time", action="store_true",
                   help="receipt times from /clock (replaying a realtime bag with `bag_player --clock`)")
    p.add_argument("--source", default="teleop", choices=["teleop", "expert", "intervention", "policy"],
                   help="episode source when the start event names none")
    p.add_argument("--qos", default="auto", choices=["auto", "contract"],
                   help="auto: 'sensor' topics are subscribed reliably when their publishers are reliable")
    p.add_argument("--depth", type=int, default=500, help="subscription queue depth")
    p.add_argument("--step-timeout", type=float, default=10.0,
                   help="lockstep: wall s a step waits for late topics before it is recorded with what there is")
    p.add_argument("--end-timeout", type=float, default=5.0,
                   help="lockstep: wall s an ended episode waits for its last steps")
    p.add_argument("--tick-hz", type=float, default=50.0, help="how often due steps are emitted")
    p.add_argument("--diag-hz", type=float, default=1.0, help="/diagnostics rate (0: only after each episode)")
    p.add_argument("--name", default="recorder", help="node name")
    p.add_argument("--codec", action="append", default=[], metavar="KEY=CODEC",
                   help="image codec of a new store's key: lossless | jpeg | jpeg:<quality> (repeatable; default: "
                        "lossless below 224 px, jpeg:90 from 224 px, e.g. 640x480 cameras)")
    return p


def open_outputs(args) -> tuple[Any, Any, Any]:
    """(bound contract, store, bag writer or None); raises ValueError with one clear message."""
    from robot_rl.data.contract import Contract
    from robot_rl.data.store import EpisodeStore
    from robot_rl.spec import load_spec
    spec = load_spec(args.robot)
    if args.fps:
        spec = dataclasses.replace(spec, control_hz=float(args.fps))
    if args.cameras == "all":
        cams = [c.name for c in spec.cameras]
    elif args.cameras in ("", "none"):
        cams = []
    else:
        cams = [c.strip() for c in args.cameras.split(",") if c.strip()]
    w = h = None
    if args.image_size:
        try:
            w, _, hh = str(args.image_size).lower().partition("x")
            w, h = int(w), int(hh or w)
            assert w > 0 and h > 0
        except (ValueError, AssertionError):
            raise ValueError(f"--image-size {args.image_size!r}: expected N or WxH, e.g. 96 or 640x480") from None
    spec = spec.with_cameras(cams, w, h) if w else spec.with_cameras(cams)
    bound = Contract.load(args.contract).bind(spec, cameras=cams, fps=args.fps)
    bag = None
    if args.bag:
        from robot_rl.data.bag import BagWriter
        if os.path.exists(args.bag):
            raise ValueError(f"--bag {args.bag} exists already; choose a new path (nothing was recorded)")
        bag = BagWriter(args.bag, storage="mcap")
    codecs = {}
    for item in args.codec:
        key, sep, codec = item.partition("=")
        if not sep or not key or not codec:
            raise ValueError(f"--codec {item!r}: expected KEY=CODEC, e.g. image_front=jpeg:90")
        codecs[key.strip()] = codec.strip()
    store = EpisodeStore.open_or_create(args.out, spec, **({"image_codecs": codecs} if codecs else {}))
    return bound, store, bag


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    exit_on_help(build_parser, argv[1:])
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    try:
        bound, store, bag = open_outputs(args)
    except Exception as e:  # noqa: BLE001 - ContractError, SpecError, StoreError, BagError: one line
        print(f"recorder_node: {e}", file=sys.stderr)
        return 2
    # SIGINT / SIGTERM only set a flag, checked between callbacks: a signal never lands in the
    # middle of a store or aligner update (rclpy's own handler would raise KeyboardInterrupt
    # wherever the main thread happens to be)
    stop = {"sig": None}

    def on_signal(signum, frame):
        stop["sig"] = signum
    bag_open = False
    node = None
    rc = 0
    try:
        if bag is not None:
            bag.__enter__()
            bag_open = True
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        node = RecorderNode(args, bound, store, bag)
        node.log.info(f"recording contract {bound.name} ({len(bound.topics)} topics, {bound.fps:g} Hz) into "
                      f"{args.out}" + (f" and bag {args.bag}" if bag else ""))
        ex = SingleThreadedExecutor()
        ex.add_node(node.node)
        while stop["sig"] is None and rclpy.ok():
            ex.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # noqa: BLE001
        print(f"recorder_node: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not interrupt the close
            signal.signal(sig, signal.SIG_IGN)
        try:
            if node is not None:
                node.close()
                n_bag = sum(node.bag_counts.values())
                print(f"recorder_node: closed; store {args.out}: {store.n_episodes} episodes"
                      + (f"; bag {args.bag}: {n_bag} messages" if bag is not None else ""), file=sys.stderr)
        except Exception as e:  # noqa: BLE001
            print(f"recorder_node: while closing: {type(e).__name__}: {e}", file=sys.stderr)
            rc = rc or 1
        finally:
            try:
                store.close()
            finally:
                if bag_open:
                    bag.__exit__(None, None, None)
                if node is not None:
                    node.node.destroy_node()
                rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
