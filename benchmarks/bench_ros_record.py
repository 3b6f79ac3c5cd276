"""ROS recording pipeline: teleop (scripted expert) -> twin (robot_node, lockstep) -> recorder
(episode store + mcap bag), three processes over DDS, against a direct (no-ROS) recording
of the same seeds (``robot-rl record sim``'s record_sim).

    scripts/isolated.sh .venv/bin/python benchmarks/bench_ros_record.py [--episodes 20]
        [--rate 30] [--cameras front,wrist] [--image-size 96] [--seed 0] [--out FILE]

Reports: dropped frames per topic (target 0), achieved rate (dataset time) and wall
throughput, wall time of both recordings, the largest absolute difference per key between
the ROS and the direct recording (target: within float tolerance, 0 for images), and the
message counts of the bag written in the same run. Refuses to run outside a loopback-only
network namespace.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import print_table, write_json  # noqa: E402

KEYS = ("joint_pos", "joint_vel", "ee_pos", "ee_quat", "gripper", "object_state", "action")
REWARD = "reward[k] vs direct reward[k-1]"


def refuse_unless_isolated() -> None:
    from robot_rl.ros.isolation import require_loopback_only
    require_loopback_only("bench_ros_record")


def spawn(module: str, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    f = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT, stdout=f,
                            stderr=subprocess.STDOUT, text=True)


def stop(p: subprocess.Popen, sig=signal.SIGINT, timeout: float = 30.0) -> int | None:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def run_ros(a, work: Path) -> dict:
    out, bag = work / "ros.zarr", work / "bag"
    common = ["--robot", "so101", "--task", "pick_cube"]
    t0 = time.perf_counter()
    robot = spawn("robot_rl.ros.robot_node", *common, "--mode", "lockstep", "--rate", str(a.rate), "--cameras",
                  a.cameras, "--image-size", str(a.image_size), "--image-qos", "reliable",
                  "--velocity-scale", str(a.velocity_scale), log=work / "robot.log")
    rec = spawn("robot_rl.ros.recorder_node", *common, "--contract", "sim", "--out", str(out), "--bag", str(bag),
                "--fps", str(a.rate), "--cameras", a.cameras, "--image-size", str(a.image_size),
                log=work / "recorder.log")
    teleop = spawn("robot_rl.ros.teleop_node", *common, "--device", "expert", "--mode", "lockstep", "--episodes",
                   str(a.episodes), "--seed", str(a.seed), "--hold-steps", "2", log=work / "teleop.log")
    procs = {"robot": robot, "recorder": rec, "teleop": teleop}
    try:
        rc_teleop = teleop.wait(timeout=a.timeout)
        t_done = time.perf_counter()
        rc_rec = stop(rec)
        t_closed = time.perf_counter()
    except subprocess.TimeoutExpired:
        rc_teleop = rc_rec = None
        t_done = t_closed = time.perf_counter()
    finally:
        for p in procs.values():
            stop(p)
    for name in procs:
        if (rc_teleop, rc_rec) != (0, 0):
            print(f"---- {name} ----\n" + (work / f"{name}.log").read_text()[-3000:])
    if (rc_teleop, rc_rec) != (0, 0):
        sys.exit(f"pipeline failed: teleop rc {rc_teleop}, recorder rc {rc_rec}")
    return {"store": out, "bag": bag, "wall_s": t_done - t0, "close_s": t_closed - t_done}


def run_direct(a, work: Path) -> dict:
    from omegaconf import OmegaConf

    from robot_rl.cli.record import record_sim
    from robot_rl.spec import load_spec
    robot = load_spec("so101").to_dict()
    robot["control_hz"] = float(a.rate)
    cfg = OmegaConf.create({"robot": robot, "task": "pick_cube", "episodes": a.episodes,
                            "out": str(work / "direct.zarr"), "seed": a.seed, "cameras": a.cameras.split(","),
                            "image_size": a.image_size, "hold_steps": 2, "keep_failed": True,
                            "max_attempts_factor": 1, "progress": False})
    t0 = time.perf_counter()
    record_sim(cfg)
    return {"store": work / "direct.zarr", "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--rate", type=float, default=30.0, help="robot control rate = dataset fps (robot.control_hz)")
    p.add_argument("--cameras", default="front,wrist")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0, help="s for the whole ROS run")
    p.add_argument("--velocity-scale", type=float, default=1.0,
                   help="robot_node --velocity-scale (1 = the spec's max_velocity; the direct recording's env "
                        "applies the same SafetyFilter with scale 1, so keep 1 for a like-for-like comparison)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/ros_record.json)")
    a = p.parse_args()
    refuse_unless_isolated()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from robot_rl.data import EpisodeStore
    from robot_rl.data.bag import open_bag

    work = Path(tempfile.mkdtemp(prefix="bench_ros_record_"))
    cams = a.cameras.split(",")
    print(f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')}, work dir {work}")
    ros = run_ros(a, work)
    direct = run_direct(a, work)
    rs, ds = EpisodeStore.open(ros["store"]), EpisodeStore.open(direct["store"])

    # -- match ------------------------------------------------------------------------------
    same_len = rs.n_episodes == ds.n_episodes and all(
        len(rs.episode(i, ["timestamp"])["timestamp"]) == len(ds.episode(i, ["timestamp"])["timestamp"])
        for i in range(min(rs.n_episodes, ds.n_episodes)))
    diff = {k: 0.0 for k in KEYS + tuple(f"image_{c}" for c in cams) + (REWARD,)}
    seeds_ok = True
    for i in range(min(rs.n_episodes, ds.n_episodes)):
        er, ed = rs.episode(i), ds.episode(i)
        seeds_ok &= rs.episode_meta(i)["extra"].get("seed") == ds.episode_meta(i)["extra"].get("seed")
        n = min(len(er["timestamp"]), len(ed["timestamp"]))
        for k in diff:
            if k == REWARD:  # the robot node publishes a step's reward with the next observation
                d = np.abs(er["reward"][1:n] - ed["reward"][: n - 1])
            else:
                d = np.abs(er[k][:n].astype(np.float64) - ed[k][:n].astype(np.float64))
            diff[k] = max(diff[k], float(d.max()) if d.size else 0.0)

    # -- cadence telemetry (from every episode's extra) ----------------------------------------
    drops: dict[str, int] = {}
    ages: dict[str, list[float]] = {}
    rates, wall_rates, ep_wall = [], [], 0.0
    for m in rs.episodes_meta():
        cad = m["extra"]["cadence"]
        for t, n in cad["drops"].items():
            drops[t] = drops.get(t, 0) + n
        for t, ag in cad["age"].items():
            ages.setdefault(t, []).append(ag["max_ms"])
        if cad["rate_hz"]:
            rates.append(cad["rate_hz"])
        if cad["wall_rate_hz"]:
            wall_rates.append(cad["wall_rate_hz"])
        ep_wall += cad["wall_s"]
    with open_bag(ros["bag"]) as bag:
        counts = {t: v.count for t, v in bag.topics.items()}

    steps = rs.n_steps
    summary = [{
        "episodes ros/direct": f"{rs.n_episodes}/{ds.n_episodes}",
        "steps ros/direct": f"{rs.n_steps}/{ds.n_steps}",
        "same lengths": same_len and seeds_ok,
        "target Hz": a.rate,
        "achieved Hz (stamps)": float(np.mean(rates)) if rates else None,
        "ros wall s": ros["wall_s"],
        "ros steps/s (in episodes)": steps / ep_wall if ep_wall else None,
        "direct wall s": direct["wall_s"],
        "direct steps/s": ds.n_steps / direct["wall_s"],
        "recorder close s": ros["close_s"],
        "robot velocity scale": a.velocity_scale,
    }]
    print_table(summary, list(summary[0]), f"ros_record: so101 pick_cube, {a.episodes} episodes, {a.rate:g} Hz, "
                f"cameras {a.cameras} {a.image_size}x{a.image_size}")
    topic_rows = [{"topic": t, "dropped": drops.get(t, 0), "age max ms (worst ep)": max(ages.get(t, [0.0])),
                   "bag messages": counts.get(t, 0)} for t in sorted(set(drops) | set(counts))]
    print_table(topic_rows, ["topic", "dropped", "age max ms (worst ep)", "bag messages"], "per topic")
    match_rows = [{"key": k, "max abs diff": v} for k, v in diff.items()]
    print_table(match_rows, ["key", "max abs diff"], "ROS vs direct recording, same seeds")
    write_json("ros_record", {
        "config": vars(a), "summary": summary[0], "topics": topic_rows, "match": diff, "bag_counts": counts,
        "episode_rate_hz": rates, "episode_wall_rate_hz": wall_rates, "work_dir": str(work),
        "command": "scripts/isolated.sh .venv/bin/python benchmarks/bench_ros_record.py " + " ".join(sys.argv[1:]),
    }, a.out)
    rs.close()
    ds.close()


if __name__ == "__main__":
    main()
