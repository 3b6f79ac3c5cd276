"""Replay a rosbag2 (sqlite3 or mcap; directory, bare .mcap or .db3) onto ROS 2 topics.

    python -m robot_rl.ros.bag_player BAG [--rate 1.0] [--loop] [--topics /a,/b]
        [--remap /a:=/b ...] [--clock [HZ]] [--start-delay S] [--wait-subscribers S]
        [--preload-mb MB]

Messages go out with their original timing: each is published at an absolute deadline
``start + (log_time - first_log_time) / rate`` (no drift accumulates), as the raw CDR
bytes stored in the bag (no deserialization). ``--clock`` also publishes the bag time on
``/clock`` (rosgraph_msgs/Clock) before every message and at HZ (default 100) in between,
for nodes running with ``use_sim_time``. A type without an importable Python message
package is one clear error before anything is published.

The timing core (:func:`play`) is plain Python with an injectable clock and is tested
without ROS; the rclpy part is :class:`BagPlayerNode`.
"""
from __future__ import annotations


import argparse
import gc
import importlib
import os
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

log = logging.getLogger("bag_player")

NS = 1_000_000_000


class PlayerError(ValueError):
    """The bag cannot be played as asked; the message says why."""


# ---------------------------------------------------------------------------------------
# timing core (no ROS)
# ---------------------------------------------------------------------------------------
@dataclass
class PlayStats:
    published: int = 0
    loops: int = 0
    clock_ticks: int = 0
    lateness_s: list[float] = field(default_factory=list)  # publish time - deadline, per message

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.lateness_s) * 1e3
        pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: None)
        return {"published": self.published, "loops": self.loops, "clock_ticks": self.clock_ticks,
                "lateness_ms_p50": pct(50), "lateness_ms_p99": pct(99),
                "lateness_ms_max": float(lat.max()) if lat.size else None}


def play(source: Callable[[], Iterable[tuple[int, Any]]], publish: Callable[[Any], None], *,
         rate: float = 1.0, loop: bool = False, start_delay: float = 0.0,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         publish_clock: Callable[[int], None] | None = None, clock_hz: float = 100.0,
         should_stop: Callable[[], bool] = lambda: False, spin_s: float = 0.0005,
         end_ns: int | None = None) -> PlayStats:
    """Publish ``(log_time_ns, item)`` pairs from ``source()`` at their deadlines.

    The deadline of a message is ``wall0 + (t - t0) / rate`` with ``wall0 = clock() +
    start_delay`` and ``t0`` the first log time: absolute, so lateness never accumulates.
    ``loop`` calls ``source()`` again after the end, continuing the bag time by the bag's
    duration (``end_ns`` - t0, default the last log time). ``publish_clock(bag_time_ns)`` is
    called before every message and every 1/clock_hz of bag time in between. Sleeps until
    ``spin_s`` before a deadline, then spins (sub-millisecond precision)."""
    if not rate > 0:
        raise PlayerError(f"--rate must be > 0, got {rate}")
    stats = PlayStats()
    wall0 = clock() + max(0.0, start_delay)
    t0: int | None = None
    offset = 0  # bag-time offset of the current loop
    clock_period = int(NS / clock_hz) if publish_clock is not None and clock_hz > 0 else 0
    next_tick: int | None = None

    def wait_until(deadline: float) -> bool:
        while True:
            if should_stop():
                return False
            rem = deadline - clock()
            if rem <= 0:
                return True
            if rem > spin_s:
                sleep(min(rem - spin_s, 0.05))  # wake up now and then to notice should_stop
            else:
                sleep(0)

    while True:
        last_t = None
        for t, item in source():
            if t0 is None:
                t0 = t
                next_tick = t0
            tt = t + offset
            last_t = t
            if clock_period:
                while next_tick is not None and next_tick < tt:
                    if not wait_until(wall0 + (next_tick - t0) / rate / NS):
                        return stats
                    publish_clock(next_tick)
                    stats.clock_ticks += 1
                    next_tick += clock_period
            deadline = wall0 + (tt - t0) / rate / NS
            if not wait_until(deadline):
                return stats
            if publish_clock is not None:
                publish_clock(tt)
                stats.clock_ticks += 1
                if clock_period:
                    next_tick = tt + clock_period
            publish(item)
            stats.lateness_s.append(clock() - deadline)
            stats.published += 1
        if last_t is None or t0 is None:
            return stats  # nothing (more) to play
        stats.loops += 1
        if not loop or should_stop():
            return stats
        duration = (end_ns if end_ns is not None else last_t + 1) - t0
        offset += max(duration, 1)


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """``["/a:=/b"]`` -> ``{"/a": "/b"}``."""
    out: dict[str, str] = {}
    for it in items:
        if ":=" not in it:
            raise PlayerError(f"--remap expects FROM:=TO, got {it!r}")
        a, b = it.split(":=", 1)
        if not a.startswith("/") or not b.startswith("/") or len(b) < 2:
            raise PlayerError(f"--remap {it!r}: both topics must be absolute names like /joint_states")
        out[a] = b
    return out


def select_topics(bag_topics: dict[str, str], topics: Sequence[str] | None,
                  remaps: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``{bag topic: (published topic, type)}`` for the topics to play."""
    if topics:
        unknown = [t for t in topics if t not in bag_topics]
        if unknown:
            raise PlayerError(f"topic(s) {', '.join(unknown)} not in the bag; it has {', '.join(sorted(bag_topics))}")
        names = list(topics)
    else:
        names = list(bag_topics)
    bad = [a for a in remaps if a not in names]
    if bad:
        raise PlayerError(f"--remap of {', '.join(bad)}: not a played topic ({', '.join(names)})")
    out = {t: (remaps.get(t, t), bag_topics[t]) for t in names}
    dst = [d for d, _ in out.values()]
    dup = sorted({d for d in dst if dst.count(d) > 1})
    if dup:
        raise PlayerError(f"several topics would be published on {', '.join(dup)}")
    return out


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name`` (rosidl_runtime_py when available, else
    an import of ``pkg.msg``); PlayerError naming the type if it is not installed."""
    try:
        from rosidl_runtime_py.utilities import get_message  # type: ignore
        try:
            return get_message(msgtype)
        except (AttributeError, ModuleNotFoundError, ValueError):
            pass
    except ImportError:
        pass
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise PlayerError(f"cannot play message type {msgtype!r}: expected pkg/msg/Name")
    pkg, _, name = parts
    try:
        mod = importlib.import_module(f"{pkg}.msg")
        return getattr(mod, name)
    except (ImportError, AttributeError) as e:
        raise PlayerError(f"cannot play message type {msgtype!r}: no Python message package for it in this "
                          f"environment ({type(e).__name__}: {e}); install {pkg} or leave its topics out with "
                          f"--topics") from None


def bag_bytes(path) -> int:
    """Size on disk of a bag (directory or file)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p)
                   if os.path.isfile(os.path.join(p, f)))
    return os.path.getsize(p)


def prepare(bag_path: str, topics: Sequence[str] | None = None, remaps: dict[str, str] | None = None):
    """Open the bag, pick the topics and their message classes: ``(bag, plan, classes)``.
    Needs no rclpy context, so a bad bag or an unknown type fails before DDS starts."""
    from robot_rl.data.bag import open_bag
    bag = open_bag(bag_path)
    try:
        plan = select_topics({t: v.type for t, v in bag.topics.items()}, topics, remaps or {})
        if not plan:
            raise PlayerError(f"{bag_path}: nothing to play (the bag has no topics)")
        classes = {t: message_class(typ) for t, (_, typ) in plan.items()}
    except BaseException:
        bag.close()
        raise
    return bag, plan, classes


# ---------------------------------------------------------------------------------------
# rclpy node
# ---------------------------------------------------------------------------------------
class _Prefetch:
    """Reads the bag on a thread ahead of the publisher (bounded queue)."""

    _END = object()

    def __init__(self, make_iter: Callable[[], Iterator], maxsize: int = 4096) -> None:
        self._make_iter = make_iter
        self._maxsize = maxsize

    def __call__(self) -> Iterator:
        q: queue.Queue = queue.Queue(self._maxsize)
        stop = threading.Event()
        err: list[BaseException] = []

        def run() -> None:
            try:
                for x in self._make_iter():
                    while not stop.is_set():
                        try:
                            q.put(x, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                err.append(e)
            finally:
                while not stop.is_set():
                    try:
                        q.put(self._END, timeout=0.1)
                        return
                    except queue.Full:
                        continue

        th = threading.Thread(target=run, name="bag-prefetch", daemon=True)
        th.start()
        try:
            while True:
                x = q.get()
                if x is self._END:
                    if err:
                        raise err[0]
                    return
                yield x
        finally:
            stop.set()


class BagPlayerNode:
    """An rclpy node publishing a bag's raw messages (see module doc)."""

    def __init__(self, bag_path: str, *, topics: Sequence[str] | None = None, remaps: dict[str, str] | None = None,
                 clock: bool = False, node_name: str = "bag_player") -> None:
        """Opens the bag and resolves every message class first (errors before any DDS
        activity); rclpy must be initialised."""
        self.bag, self.plan, self.classes = prepare(bag_path, topics, remaps)
        import rclpy
        from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
        self._rclpy = rclpy
        self.node = rclpy.create_node(node_name)
        # reliable publishers match reliable and best-effort subscribers alike
        qos = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE,
                         history=QoSHistoryPolicy.KEEP_LAST, depth=100)
        self.pubs = {t: self.node.create_publisher(self.classes[t], dst, qos) for t, (dst, _) in self.plan.items()}
        self.clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock
            self._Clock = Clock
            self.clock_pub = self.node.create_publisher(Clock, "/clock", QoSProfile(
                reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE,
                history=QoSHistoryPolicy.KEEP_LAST, depth=10))
        self._stop = threading.Event()

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                return True
            time.sleep(0.02)
        return False

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time
        self.clock_pub.publish(self._Clock(clock=Time(sec=int(t_ns // NS), nanosec=int(t_ns % NS))))

    def run(self, rate: float = 1.0, loop: bool = False, start_delay: float = 0.0,
            clock_hz: float = 100.0, preload_mb: float = 256.0) -> PlayStats:
        """Play; a bag of at most ``preload_mb`` is read into memory first (nothing else
        competes with the publishing loop), a bigger one is read ahead on a thread."""
        topics = list(self.plan)
        pubs = self.pubs

        def source() -> Iterator[tuple[int, tuple[str, bytes]]]:
            for topic, _, t, raw in self.bag.messages(topics):
                yield t, (topic, raw if isinstance(raw, bytes) else bytes(raw))

        if bag_bytes(self.bag.path) <= preload_mb * 2 ** 20:
            items = list(source())
            src: Callable[[], Iterable] = lambda: items  # noqa: E731
        else:
            src = _Prefetch(source)
        gc_was = gc.isenabled()
        gc.collect()
        gc.disable()  # no collector pauses between deadlines
        try:
            return play(src, lambda item: pubs[item[0]].publish(item[1]), rate=rate, loop=loop,
                        start_delay=start_delay, publish_clock=self._publish_clock if self.clock_pub else None,
                        clock_hz=clock_hz, should_stop=self._stop.is_set, end_ns=self.bag.end_ns)
        finally:
            if gc_was:
                gc.enable()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        try:
            self.node.destroy_node()
        finally:
            self.bag.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robot_rl.ros.bag_player",
                                description="Replay a rosbag2 (sqlite3 or mcap) with its original timing.")
    p.add_argument("bag", help="rosbag2 directory, .mcap or .db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again and again")
    p.add_argument("--topics", default="", help="comma-separated topics to play (default: all)")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO", help="publish FROM on TO")
    p.add_argument("--clock", nargs="?", const=100.0, default=None, type=float, metavar="HZ",
                   help="publish /clock (bag time) before each message and at HZ (default 100)")
    p.add_argument("--start-delay", type=float, default=0.0, metavar="S", help="wait S seconds before playing")
    p.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds until every played topic has a subscriber")
    p.add_argument("--preload-mb", type=float, default=256.0, metavar="MB",
                   help="read bags up to MB into memory before playing (default 256); bigger ones are "
                        "read ahead on a thread")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bag_player] %(message)s")
    from robot_rl.data.bag import BagError
    node = None
    rclpy = None
    try:
        if not args.rate > 0:
            raise PlayerError(f"--rate must be > 0, got {args.rate}")
        topics = [t.strip() for t in args.topics.split(",") if t.strip()] or None
        remaps = parse_remaps(args.remap)
        prepare(args.bag, topics, remaps)[0].close()  # a bad bag / unknown type: error before DDS starts
        import rclpy as _rclpy
        rclpy = _rclpy
        rclpy.init(args=[])  # our own flags are not ROS arguments
        node = BagPlayerNode(args.bag, topics=topics, remaps=remaps, clock=args.clock is not None)
        n = sum(node.bag.topics[t].count for t in node.plan)
        log.info("playing %s: %d messages on %d topics at %gx%s", args.bag, n, len(node.plan), args.rate,
                 " (loop)" if args.loop else "")
        if args.wait_subscribers > 0 and not node.wait_for_subscribers(args.wait_subscribers):
            log.info("not every topic has a subscriber after %g s; playing anyway", args.wait_subscribers)
        stats = node.run(rate=args.rate, loop=args.loop, start_delay=args.start_delay,
                         clock_hz=args.clock if args.clock else 100.0, preload_mb=args.preload_mb)
        s = stats.summary()
        log.info("done: %d messages published, lateness p50 %.3f ms, p99 %.3f ms, max %.3f ms",
                 s["published"], s["lateness_ms_p50"] or 0, s["lateness_ms_p99"] or 0, s["lateness_ms_max"] or 0)
        return 0
    except (PlayerError, BagError) as e:
        print(f"bag_player: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if node is not None:
            node.close()
        if rclpy is not None and rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
