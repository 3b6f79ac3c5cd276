"""rosbag benchmarks: read / decode / convert rates, store -> mcap -> store exactness, and
playback timing at 1x.

    cd benchmarks
    ../scripts/isolated.sh ../.venv/bin/python bench_bags.py [--messages 100000] [--play-seconds 20]
                                                            [--skip-playback]

1. A bag of N sensor_msgs/JointState messages (100 Hz, mcap and sqlite3, written by rosbags)
   is read raw, read + decoded by rosbags' generic ``deserialize_cdr`` (the baseline) and by
   robot_rl's JointStateDecoder, each also turned into dataset values; then the whole
   bag -> episode store conversion (events split, 20 Hz grid) runs with the fast path and
   with the generic deserializer. Target: >= 20,000 JointState messages/s.
2. A store shaped like ``robot-rl record sim`` (two 96x96 cameras) goes to mcap and back:
   max abs difference per key (target: 0; timestamps within 1 ns), images equal.
3. Playback at 1x: the player runs in its own process, a subscriber in this one measures
   each inter-message interval against the bag's recorded interval (target p99 < 5 ms).
   Refuses to run outside a loopback-only network namespace.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import print_table, write_json  # noqa: E402

NS = 1_000_000_000
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]
JS_CONTRACT = {"name": "bench_joints", "fps": 20, "latency": 0.1, "topics": [
    {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "policy": "latest",
     "fields": {"joint_pos": "position", "joint_vel": "velocity", "gripper": "position[gripper]"}}]}


def write_joint_bag(path: Path, n: int, storage: str, episodes: int = 10) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from robot_rl.data.bag import typestore
    ts = typestore("jazzy")
    JS, H, T, S = (ts.types[k] for k in ("sensor_msgs/msg/JointState", "std_msgs/msg/Header",
                                         "builtin_interfaces/msg/Time", "std_msgs/msg/String"))
    rng = np.random.default_rng(0)
    t0 = 1_700_000_000 * NS
    period = NS // 100
    ep_len = n // episodes
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    names = JOINTS + ["gripper"]
    with Writer(path, version=9, storage_plugin=plugin) as w:
        c = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        e = w.add_connection("/teleop/event", "std_msgs/msg/String", typestore=ts)
        for i in range(n):
            log = t0 + i * period
            if i % ep_len == 0:
                w.write(e, log, ts.serialize_cdr(S(data=f"start seed={i // ep_len}"), "std_msgs/msg/String"))
            st = log - 2_000_000
            m = JS(header=H(stamp=T(sec=st // NS, nanosec=st % NS), frame_id="base"), name=names,
                   position=rng.standard_normal(6), velocity=rng.standard_normal(6), effort=np.zeros(0))
            w.write(c, log, ts.serialize_cdr(m, "sensor_msgs/msg/JointState"))
            if i % ep_len == ep_len - 1:
                w.write(e, log + 1, ts.serialize_cdr(S(data="success"), "std_msgs/msg/String"))


def bench_rates(n: int, tmp: Path) -> list[dict]:
    from robot_rl.data import convert as conv
    from robot_rl.data.bag import JointStateDecoder, open_bag
    from robot_rl.data.contract import Contract
    rows = []
    tb = Contract.from_dict(JS_CONTRACT).bind("so101").topics["/joint_states"]
    for storage in ("mcap", "sqlite3"):
        bag = tmp / f"joints_{storage}"
        t = time.perf_counter()
        write_joint_bag(bag, n, storage)
        print(f"wrote {n} JointState messages ({storage}) in {time.perf_counter() - t:.1f} s")

        def rate(fn, label):
            with open_bag(bag) as b:
                ts = b.typestore_for("sensor_msgs/msg/JointState")
                dec = JointStateDecoder()
                t = time.perf_counter()
                k = 0
                for _, _, _, raw in b.messages(["/joint_states"]):
                    fn(raw, ts, dec)
                    k += 1
                dt = time.perf_counter() - t
            rows.append({"storage": storage, "path": label, "messages": k, "seconds": dt, "msgs_per_s": k / dt})

        JST = "sensor_msgs/msg/JointState"
        rate(lambda raw, ts, dec: None, "read raw CDR")
        rate(lambda raw, ts, dec: ts.deserialize_cdr(raw, JST), "read + rosbags deserialize_cdr (baseline)")
        rate(lambda raw, ts, dec: dec(raw), "read + JointStateDecoder")
        rate(lambda raw, ts, dec: tb.extract(ts.deserialize_cdr(raw, JST), JST),
             "read + deserialize_cdr + dataset values (baseline)")
        rate(lambda raw, ts, dec: tb.extract(dec(raw), JST), "read + JointStateDecoder + dataset values")
        for label, fast in (("bag -> store, generic deserializer (baseline)", False),
                            ("bag -> store, fast path (robot-rl convert)", True)):
            out = tmp / f"{storage}_{int(fast)}.zarr"
            orig = conv._decoder
            if not fast:
                conv._decoder = lambda bag, tb, msgtype: (lambda raw: bag.deserialize(raw, msgtype))
            try:
                rep = conv.bag_to_store(bag, out, robot="so101", contract=Contract.from_dict(JS_CONTRACT))
            finally:
                conv._decoder = orig
            n_js = rep["messages"] - 2 * rep["episodes"]
            rows.append({"storage": storage, "path": label, "messages": n_js, "seconds": rep["seconds"],
                         "msgs_per_s": n_js / rep["seconds"], "steps": rep["steps"],
                         "steps_per_s": rep["steps"] / rep["seconds"]})
    return rows


def bench_round_trip(tmp: Path) -> tuple[list[dict], dict]:
    import bagdata
    from robot_rl.data.convert import bag_to_store, store_to_bag
    from robot_rl.data.store import EpisodeStore
    src = bagdata.make_sim_store(tmp / "sim.zarr", episodes=5, steps=100, image_hw=(96, 96))
    t = time.perf_counter()
    rep1 = store_to_bag(src, tmp / "sim.mcap")
    t_out = time.perf_counter() - t
    rep2 = bag_to_store(tmp / "sim.mcap", tmp / "back.zarr", robot="so101")
    a, b = EpisodeStore.open(src), EpisodeStore.open(tmp / "back.zarr")
    rows = []
    for k in a.keys:
        x, y = a.data[k][:], b.data[k][:]
        same_shape = x.shape == y.shape
        diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if same_shape else None
        rows.append({"key": k, "dtype": str(x.dtype), "shape": str(tuple(x.shape[1:])), "max_abs_diff": diff,
                     "equal": bool(same_shape and np.array_equal(x, y)), "dtype_kept": x.dtype == y.dtype})
    meta_ok = all(a.episode_meta(i)["success"] == b.episode_meta(i)["success"] and
                  a.episode_meta(i)["length"] == b.episode_meta(i)["length"] for i in range(len(a)))
    info = {"episodes": len(a), "steps": a.n_steps, "bag_messages": rep1["messages"],
            "store_to_mcap_s": t_out, "mcap_to_store_s": rep2["seconds"], "episode_meta_equal": meta_ok,
            "mcap_bytes": (tmp / "sim.mcap").stat().st_size}
    return rows, info


def bench_playback(seconds: float, tmp: Path) -> dict:
    from robot_rl.ros.isolation import require_loopback_only
    require_loopback_only("bench_bags playback")
    import os
    import subprocess
    import bagdata
    s = bagdata.make_session(outcomes=("success",), ep_s=seconds, gap_s=0.0, image_hw=(96, 96),
                             cameras=("front",))
    bag = bagdata.write_rosbags(s, tmp / "play")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
    from robot_rl.ros.bag_player import message_class
    rclpy.init(args=[])
    node = rclpy.create_node("bench_bag_subscriber")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    qos = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE,
                     history=QoSHistoryPolicy.KEEP_LAST, depth=1000)
    rx: dict[str, list[float]] = {t: [] for t in s.topics}
    for topic, typ in s.topics.items():
        node.create_subscription(message_class(typ), topic,
                                 lambda raw, t=topic: rx[t].append(time.monotonic()), qos, raw=True)
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-m", "robot_rl.ros.bag_player", str(bag), "--wait-subscribers", "20",
                          "--start-delay", "0.5"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + seconds + 60
    while p.poll() is None and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.005)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.005)
    err = p.communicate(timeout=10)[1]
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    logs: dict[str, list[int]] = {}
    for m in s.msgs:
        logs.setdefault(m.topic, []).append(m.log_ns)
    res = {"seconds": seconds, "player_stderr_tail": err.strip().splitlines()[-1:] if err else [], "topics": {}}
    all_err = []
    for topic, times in rx.items():
        want = np.array(logs[topic]) / NS
        got = np.array(times)
        if len(got) != len(want):
            res["topics"][topic] = {"received": len(got), "sent": len(want)}
            continue
        e = np.abs(np.diff(got) - np.diff(want)) * 1e3
        drift = np.abs((got - got[0]) - (want - want[0])) * 1e3
        all_err.append(e)
        res["topics"][topic] = {"received": len(got), "sent": len(want),
                                "interval_err_ms_p50": float(np.percentile(e, 50)),
                                "interval_err_ms_p99": float(np.percentile(e, 99)),
                                "interval_err_ms_max": float(e.max()), "drift_ms_max": float(drift.max())}
    if all_err:
        e = np.concatenate(all_err)
        res["all"] = {"intervals": int(e.size), "interval_err_ms_p50": float(np.percentile(e, 50)),
                      "interval_err_ms_p99": float(np.percentile(e, 99)), "interval_err_ms_max": float(e.max())}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--play-seconds", type=float, default=20.0)
    ap.add_argument("--skip-playback", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bags.json)")
    args = ap.parse_args()
    payload: dict = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="bench_bags_") as d:
        tmp = Path(d)
        rows = bench_rates(args.messages, tmp)
        print_table(rows, ["storage", "path", "messages", "seconds", "msgs_per_s", "steps_per_s"],
                    title=f"JointState read / decode / convert ({args.messages} messages, 100 Hz -> 20 Hz grid)")
        payload["rates"] = rows
        for storage in ("mcap", "sqlite3"):
            r = {x["path"]: x for x in rows if x["storage"] == storage}
            base = r["bag -> store, generic deserializer (baseline)"]["msgs_per_s"]
            fast = r["bag -> store, fast path (robot-rl convert)"]["msgs_per_s"]
            dec_b = r["read + rosbags deserialize_cdr (baseline)"]["msgs_per_s"]
            dec_f = r["read + JointStateDecoder"]["msgs_per_s"]
            print(f"{storage}: conversion {fast:,.0f} msgs/s ({fast / base:.2f}x the generic path); "
                  f"decode {dec_f:,.0f} vs {dec_b:,.0f} msgs/s ({dec_f / dec_b:.2f}x)")
            payload[f"{storage}_convert_speedup"] = fast / base
            payload[f"{storage}_decode_speedup"] = dec_f / dec_b

        rt_rows, rt_info = bench_round_trip(tmp)
        print_table(rt_rows, ["key", "dtype", "shape", "max_abs_diff", "equal", "dtype_kept"],
                    title=f"store -> mcap -> store ({rt_info['episodes']} episodes, {rt_info['steps']} steps)")
        print(rt_info)
        payload["round_trip"] = {"keys": rt_rows, **rt_info}

        if not args.skip_playback:
            res = bench_playback(args.play_seconds, tmp)
            prow = [{"topic": t, **v} for t, v in res["topics"].items()] + \
                   ([{"topic": "(all)", **res["all"]}] if "all" in res else [])
            print_table(prow, ["topic", "sent", "received", "interval_err_ms_p50", "interval_err_ms_p99",
                               "interval_err_ms_max", "drift_ms_max", "intervals"],
                        title=f"playback at 1x, {args.play_seconds:g} s, subscriber in another process")
            print("player:", *res["player_stderr_tail"])
            payload["playback"] = res
    write_json("bags", payload, args.out)


if __name__ == "__main__":
    main()
