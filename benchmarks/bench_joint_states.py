"""/joint_states cadence of robot_node in realtime mode, seen from another process.

robot_node runs the twin at --rate Hz (default 100) for --duration s (default 30); a
subscriber in a separate process records the receive time and header stamp of every
/joint_states message. Reported per variant: p50 / p99 / max period error (ms) of the header
stamps and of the receive times, gaps (periods > 1.5x nominal, i.e. missing or late messages),
messages received vs expected, and receive latency (receive time - stamp). Variants, all in one
run: robot_node as it runs by default (dedicated control thread with absolute-deadline
sleeps, SCHED_FIFO priority 50 where the OS allows it), the same without real-time priority,
the same node driven by a plain rclpy ``create_timer`` (the naive baseline), and the default
node also rendering and publishing two 96x96 cameras at 30 Hz (rendered in a worker thread).

The measuring subscriber runs with SCHED_FIFO priority 40 where the OS allows it (as a
real-time consumer of joint states would), so that receive times measure the node and the
DDS path rather than the subscriber's own scheduling on a busy machine;
``--sub-rt-priority 0`` measures a normal-priority consumer instead.

Must run inside the loopback-only network namespace:

    scripts/isolated.sh .venv/bin/python benchmarks/bench_joint_states.py [--duration 30] [--rate 100]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

VARIANTS = {
    "thread": ("robot_node (control thread, SCHED_FIFO 50)", ["--loop", "thread"]),
    "thread-normal": ("control thread, normal priority", ["--loop", "thread", "--rt-priority", "0"]),
    "timer": ("baseline: rclpy create_timer", ["--loop", "timer"]),
    "thread+cameras": ("control thread + 2 cameras @30 Hz",
                       ["--loop", "thread", "--cameras", "front,wrist", "--image-size", "96", "--camera-hz", "30"]),
}


def refuse_outside_netns() -> None:
    """One clear line and exit unless this process is in a loopback-only network namespace
    (asked over netlink: /sys/class/net lists the host's interfaces unless sysfs is remounted)."""
    sys.path.insert(0, str(REPO))
    from robot_rl.ros.isolation import require_loopback_only
    require_loopback_only("bench_joint_states")


# -- the subscriber process ------------------------------------------------------------------
def subscriber(out: str, duration: float, warmup: float, timeout: float, rt_priority: int = 0) -> int:
    if rt_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
        except (PermissionError, OSError) as e:
            print(f"subscriber: cannot set SCHED_FIFO ({e}); running normally", file=sys.stderr)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    sys.path.insert(0, str(REPO))
    from robot_rl.ros import topics
    rclpy.init()
    node = rclpy.create_node("bench_joint_states_sub")
    recv, stamps = [], []

    def on_msg(m):
        recv.append(time.time())
        stamps.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)

    node.create_subscription(JointState, topics.JOINT_STATES, on_msg, topics.reliable_qos(100))
    import gc
    gc.collect()
    gc.disable()  # the recorder itself must not pause (it only appends floats)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    t_end = time.monotonic() + timeout
    while not recv and time.monotonic() < t_end:
        ex.spin_once(timeout_sec=0.05)
    if not recv:
        print("subscriber: no /joint_states received", file=sys.stderr)
        return 1
    t_start = time.monotonic() + warmup
    t_stop = t_start + duration
    first = 0
    while time.monotonic() < t_stop:
        if first == 0 and time.monotonic() >= t_start:
            first = len(recv)
        ex.spin_once(timeout_sec=0.05)
    np.savez(out, recv=np.array(recv[first:]), stamps=np.array(stamps[first:]))
    node.destroy_node()
    rclpy.shutdown()
    return 0


# -- statistics --------------------------------------------------------------------------------
def period_stats(t: np.ndarray, period: float) -> dict:
    d = np.diff(t)
    err = np.abs(d - period) * 1e3
    return {"p50_ms": float(np.percentile(err, 50)), "p99_ms": float(np.percentile(err, 99)),
            "max_ms": float(err.max()), "gaps": int(np.sum(d > 1.5 * period))}


def analyse(recv: np.ndarray, stamps: np.ndarray, rate: float) -> dict:
    period = 1.0 / rate
    expected = int(round((stamps[-1] - stamps[0]) / period)) + 1
    lat = (recv - stamps) * 1e3
    return {"received": int(len(stamps)), "expected": expected,
            "stamp": period_stats(stamps, period), "receive": period_stats(recv, period),
            "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99))}


def run_variant(key: str, args) -> dict:
    label, extra = VARIANTS[key]
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sub.npz")
        sub = subprocess.Popen([sys.executable, __file__, "--_subscriber", out, "--duration", str(args.duration),
                                "--warmup", str(args.warmup), "--sub-rt-priority", str(args.sub_rt_priority)],
                               env=env, cwd=REPO)
        node_args = ["--robot", args.robot, "--task", args.task, "--mode", "realtime", "--rate", str(args.rate),
                     "--cameras", "none", "--diag-hz", "1"] + extra
        node = subprocess.Popen([sys.executable, "-m", "robot_rl.ros.robot_node", *node_args], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            rc = sub.wait(timeout=args.duration + args.warmup + 60)
        except subprocess.TimeoutExpired:
            sub.kill()
            rc = -1
        finally:
            node.terminate()
            try:
                _, err = node.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
                _, err = node.communicate()
        if rc != 0 or not os.path.exists(out):
            raise SystemExit(f"variant {key!r}: subscriber failed (rc {rc}); robot_node said:\n{err[-3000:]}")
        data = np.load(out)
        res = analyse(data["recv"], data["stamps"], args.rate)
    res.update(variant=key, label=label, node_args=node_args)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per variant")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds discarded after the first message")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--robot", default="so101")
    ap.add_argument("--task", default="pick_cube")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    ap.add_argument("--sub-rt-priority", type=int, default=40,
                    help="SCHED_FIFO priority of the measuring subscriber where allowed (0: normal priority)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/joint_states.json)")
    ap.add_argument("--_subscriber", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    refuse_outside_netns()
    if args._subscriber:
        sys.exit(subscriber(args._subscriber, args.duration, args.warmup, args._timeout, args.sub_rt_priority))
    sys.path.insert(0, str(HERE))
    from _common import print_table, write_json

    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    bad = [k for k in keys if k not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; known: {list(VARIANTS)}")
    results = []
    for k in keys:
        print(f"running {VARIANTS[k][0]} for {args.duration:g} s at {args.rate:g} Hz ...", flush=True)
        results.append(run_variant(k, args))
    rows = []
    for r in results:
        for sig in ("stamp", "receive"):
            s = r[sig]
            rows.append({"variant": r["label"], "clock": "header stamp" if sig == "stamp" else "receive time",
                         "p50_err_ms": s["p50_ms"], "p99_err_ms": s["p99_ms"], "max_err_ms": s["max_ms"],
                         "gaps": s["gaps"], "received": r["received"], "expected": r["expected"],
                         "lat_p50_ms": r["latency_ms_p50"], "lat_p99_ms": r["latency_ms_p99"]})
    print_table(rows, ["variant", "clock", "p50_err_ms", "p99_err_ms", "max_err_ms", "gaps", "received", "expected",
                       "lat_p50_ms", "lat_p99_ms"], title=f"/joint_states period error at {args.rate:g} Hz, "
                                            f"{args.duration:g} s per variant (subscriber in another process)")
    main_res = results[0]
    ok = main_res["stamp"]["p99_ms"] < 2.0 and main_res["receive"]["p99_ms"] < 2.0 and main_res["stamp"]["gaps"] == 0 \
        and main_res["receive"]["gaps"] == 0
    print(f"\ntarget (first variant): p99 period error < 2 ms and no gaps -> {'met' if ok else 'NOT met'}")
    write_json("joint_states", {"rate_hz": args.rate, "duration_s": args.duration, "warmup_s": args.warmup,
                                "robot": args.robot, "task": args.task, "cpus": os.cpu_count(),
                                "target_met": ok, "results": results}, args.out)


if __name__ == "__main__":
    main()
