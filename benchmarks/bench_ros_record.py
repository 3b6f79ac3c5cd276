"""ROS recording pipeline: teleop (scripted expert) -> twin (robot_node) -> recorder (episode
store + mcap bag), three processes over DDS, in two cases:

- ``lockstep``: the robot node steps once per action, stamps are sim time; compared with a
  direct (no-ROS) recording of the same seeds (``robot-rl record sim``'s record_sim).
- ``realtime``: the robot node runs on the wall clock at ``--rate``, cameras rendered in its
  worker thread (``--image-qos`` sensor by default), the recorder on its wall-clock grid, and
  the expert streams twist + gripper at ``--rate`` from the newest observation it received
  (``teleop_node --device expert --mode realtime``), like a person's gamepad. Not
  deterministic, so not compared value by value: reports what was recorded and lost.

    scripts/isolated.sh .venv/bin/python benchmarks/bench_ros_record.py [--mode both|lockstep|realtime]
        [--episodes 20] [--rate 30] [--cameras front,wrist] [--image-size 96] [--seed 0] [--out FILE]

Reports: dropped frames per topic (as the recorder counts them; target 0), achieved rate
(dataset and source stamps) and wall throughput, wall time, the largest absolute difference
per key between the ROS and the direct recording (lockstep), the robot node's loop telemetry
(/diagnostics) and camera frames received vs expected (realtime), the message counts of the
bags, and the load average at start and end. Refuses to run outside a loopback-only network
namespace.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
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


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_sampling_cpu(procs: dict[str, subprocess.Popen], main: subprocess.Popen, timeout: float) -> tuple[int, dict]:
    """Wait for ``main`` to exit (TimeoutExpired after ``timeout`` s) while sampling every
    process's CPU time: returns main's exit status and, per process, the share of one core
    it used over the run (the machine is shared: this is what the pipeline itself needs)."""
    t0, last = time.monotonic(), {}
    while main.poll() is None:
        if time.monotonic() - t0 > timeout:
            raise subprocess.TimeoutExpired(main.args, timeout)
        for name, p in procs.items():
            c = cpu_s(p.pid)
            if c is not None:
                last[name] = (c, time.monotonic() - t0)
        time.sleep(0.25)
    return main.returncode, {n: round(c / w, 3) for n, (c, w) in last.items() if w > 0}


class DiagListener:
    """A real rclpy subscriber in this process: the newest /diagnostics status per name
    (the robot node's '<name>: loop' / ': safety', the recorder's 'recorder')."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from robot_rl.ros import topics
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("bench_ros_record_diag", context=self.ctx)
        self.latest: dict[str, dict[str, str]] = {}
        self.loop_history: list[tuple[int, dict[str, str]]] = []  # (header stamp ns, values): robot loop
        self.lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on, topics.reliable_qos(50))
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.ctx.ok():
            try:
                self.ex.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001 - shutting down
                return

    def _on(self, msg) -> None:
        with self.lock:
            for s in msg.status:
                self.latest[s.name] = {kv.key: kv.value for kv in s.values}
                if s.name.endswith(": loop"):
                    st = msg.header.stamp
                    self.loop_history.append((st.sec * 1_000_000_000 + st.nanosec, self.latest[s.name]))

    def status(self, suffix: str) -> dict[str, str]:
        with self.lock:
            for name, v in self.latest.items():
                if name.endswith(suffix):
                    return dict(v)
        return {}

    def wait_fresh(self, suffix: str, timeout: float = 2.0) -> dict[str, str]:
        """The next status named ``*suffix`` published from now on (else the newest one)."""
        with self.lock:
            old = {k: v for k, v in self.latest.items() if k.endswith(suffix)}
            for k in old:
                del self.latest[k]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s = self.status(suffix)
            if s:
                return s
            time.sleep(0.05)
        return next(iter(old.values()), {})

    def close(self) -> None:
        self.ctx.try_shutdown()
        self.thread.join(timeout=2.0)
        self.node.destroy_node()


def exit_unless_clean(case: str, rc_teleop, rc_rec, procs: dict, work: Path, prefix: str) -> None:
    """The teleop and the recorder must both have exited 0; else print each node's log tail and exit."""
    if (rc_teleop, rc_rec) != (0, 0):
        for name in procs:
            print(f"---- {name} ----\n" + (work / f"{prefix}{name}.log").read_text()[-3000:])
        sys.exit(f"{case} pipeline failed: teleop rc {rc_teleop}, recorder rc {rc_rec}")


# ---------------------------------------------------------------------------------------
# lockstep
# ---------------------------------------------------------------------------------------
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
    exit_unless_clean("lockstep", rc_teleop, rc_rec, procs, work, "")
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


def lockstep_case(a, work: Path) -> dict:
    from robot_rl.data import EpisodeStore
    from robot_rl.data.bag import open_bag

    cams = a.cameras.split(",")
    load0 = loadavg()
    ros = run_ros(a, work)
    direct = run_direct(a, work)
    load1 = loadavg()
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
    drops, ages, rates, wall_rates, ep_wall = cadence_totals(rs)
    with open_bag(ros["bag"]) as bag:
        counts = {t: v.count for t, v in bag.topics.items()}

    summary = {
        "episodes ros/direct": f"{rs.n_episodes}/{ds.n_episodes}",
        "steps ros/direct": f"{rs.n_steps}/{ds.n_steps}",
        "same lengths": same_len and seeds_ok,
        "target Hz": a.rate,
        "achieved Hz (stamps)": float(np.mean(rates)) if rates else None,
        "ros wall s": ros["wall_s"],
        "ros steps/s (in episodes)": rs.n_steps / ep_wall if ep_wall else None,
        "direct wall s": direct["wall_s"],
        "direct steps/s": ds.n_steps / direct["wall_s"],
        "recorder close s": ros["close_s"],
        "robot velocity scale": a.velocity_scale,
        "expert success": f"{sum(bool(m['success']) for m in rs.episodes_meta())}/{rs.n_episodes}",
        "loadavg start": load0, "loadavg end": load1,
    }
    print_table([summary], list(summary), f"LOCKSTEP ros_record: so101 pick_cube, {a.episodes} episodes, "
                f"{a.rate:g} Hz, cameras {a.cameras} {a.image_size}x{a.image_size}")
    topic_rows = [{"topic": t, "dropped": drops.get(t, 0), "age max ms (worst ep)": max(ages.get(t, [0.0])),
                   "bag messages": counts.get(t, 0)} for t in sorted(set(drops) | set(counts))]
    print_table(topic_rows, ["topic", "dropped", "age max ms (worst ep)", "bag messages"], "lockstep, per topic")
    match_rows = [{"key": k, "max abs diff": v} for k, v in diff.items()]
    print_table(match_rows, ["key", "max abs diff"], "lockstep: ROS vs direct recording, same seeds")
    out = {"summary": summary, "topics": topic_rows, "match": diff, "bag_counts": counts,
           "episode_rate_hz": rates, "episode_wall_rate_hz": wall_rates}
    rs.close()
    ds.close()
    return out


def cadence_totals(rs) -> tuple[dict, dict, list, list, float]:
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
    return drops, ages, rates, wall_rates, ep_wall


# ---------------------------------------------------------------------------------------
# realtime
# ---------------------------------------------------------------------------------------
def run_realtime(a, work: Path, diag: DiagListener) -> dict:
    out, bag = work / "rt.zarr", work / "rt_bag"
    common = ["--robot", "so101", "--task", "pick_cube"]
    load0 = loadavg()
    t0 = time.perf_counter()
    robot = spawn("robot_rl.ros.robot_node", *common, "--mode", "realtime", "--rate", str(a.rate), "--cameras",
                  a.cameras, "--image-size", str(a.image_size), "--image-qos", a.rt_image_qos,
                  "--velocity-scale", str(a.velocity_scale), log=work / "rt_robot.log")
    rec = spawn("robot_rl.ros.recorder_node", *common, "--contract", "sim", "--mode", "realtime", "--out", str(out),
                "--bag", str(bag), "--fps", str(a.rate), "--cameras", a.cameras, "--image-size", str(a.image_size),
                log=work / "rt_recorder.log")
    teleop = spawn("robot_rl.ros.teleop_node", *common, "--device", "expert", "--mode", "realtime", "--rate",
                   str(a.rate), "--episodes", str(a.episodes), "--seed", str(a.seed), "--hold-steps", "2",
                   log=work / "rt_teleop.log")
    procs = {"robot": robot, "recorder": rec, "teleop": teleop}
    robot_loop: dict[str, str] = {}
    robot_safety: dict[str, str] = {}
    cpu: dict[str, float] = {}
    try:
        rc_teleop, cpu = wait_sampling_cpu(procs, teleop, a.timeout)
        t_done = time.perf_counter()
        robot_loop = diag.wait_fresh(": loop")  # the robot's own telemetry, before it stops
        robot_safety = diag.status(": safety")
        rc_rec = stop(rec)
        t_closed = time.perf_counter()
    except subprocess.TimeoutExpired:
        rc_teleop = rc_rec = None
        t_done = t_closed = time.perf_counter()
    finally:
        for p in procs.values():
            stop(p)
    load1 = loadavg()
    exit_unless_clean("realtime", rc_teleop, rc_rec, procs, work, "rt_")
    return {"store": out, "bag": bag, "wall_s": t_done - t0, "close_s": t_closed - t_done, "loadavg_start": load0,
            "loadavg_end": load1, "robot_loop": robot_loop, "robot_safety": robot_safety, "cpu_cores": cpu,
            "teleop_log": (work / "rt_teleop.log").read_text(), "recorder_log": (work / "rt_recorder.log").read_text(),
            "robot_log": (work / "rt_robot.log").read_text()}


def frame_accounting(bag_path: Path, cams: list[str], history: list[tuple[int, dict]]) -> dict:
    """Observations and camera frames over the recording window, exactly: the robot node's own
    counters (two of its /diagnostics, the first after the first teleop event, the last before
    the last one: the recorder ran on for seconds after it, so everything stamped earlier had
    time to arrive) against the messages in the bag whose header stamps lie between those two
    diagnostics' stamps (within one control tick at each end)."""
    from robot_rl.data.bag import header_stamp_ns, open_bag
    cam_topics = {f"/camera/{c}/image_raw": c for c in cams}
    with open_bag(bag_path) as b:
        events = [t for _, _, t, _ in b.messages(["/teleop/event"])]
        hist = [(t, v) for t, v in history if events and events[0] <= t <= events[-1]]
        if len(hist) < 2:
            return {"note": "fewer than two robot diagnostics during the recording"}
        (ta, va), (tb, vb) = hist[0], hist[-1]
        js, img = 0, {c: 0 for c in cams}
        for topic, _, _, raw in b.messages(["/joint_states", *cam_topics]):
            if ta < header_stamp_ns(raw) <= tb:
                if topic == "/joint_states":
                    js += 1
                else:
                    img[cam_topics[topic]] += 1

    def d(k: str) -> int:
        return int(vb.get(k, 0)) - int(va.get(k, 0))
    published_obs = d("steps") + d("resets")  # every control step and every reset publishes one
    out = {"window_s": round((tb - ta) / 1e9, 3), "robot observations published": published_obs,
           "robot overruns": d("overruns"), "joint_states received": js, "cameras": {}}
    for c in cams:
        out["cameras"][c] = {"expected (one per observation)": published_obs,
                             "rendered + published by the robot": d("camera_frames"),
                             "dropped by the robot (renderer busy)": d("camera_frames_dropped"),
                             "received (bag)": img[c],
                             "lost in transport": d("camera_frames") - img[c]}
    return out


def _pct(x: np.ndarray, q: float) -> float | None:
    return float(np.percentile(x, q)) if x.size else None


def realtime_case(a, work: Path, diag: DiagListener) -> dict:
    from robot_rl.data import EpisodeStore
    from robot_rl.data.bag import open_bag

    cams = [] if a.cameras in ("", "none") else a.cameras.split(",")
    cam_topics = [f"/camera/{c}/image_raw" for c in cams]
    rt = run_realtime(a, work, diag)
    rs = EpisodeStore.open(rt["store"])
    fps = float(a.rate)

    # -- achieved rate from the dataset: grid timestamps and the robot's own stamps ---------------
    grid_periods, js_periods, img_periods, ep_rates = [], [], {c: [] for c in cams}, []
    stale_js = same_js = pre_reset = old_action = 0
    for i in range(rs.n_episodes):
        e = rs.episode(i, ["timestamp", "stamp_joint_pos", "stamp_action", "object_state"]
                       + [f"stamp_image_{c}" for c in cams])
        ts = e["timestamp"].astype(np.float64)
        if len(ts) > 1:
            grid_periods.append(np.diff(ts))
            ep_rates.append(len(ts) / (ts[-1] - ts[0] + 1.0 / fps))  # steps / episode duration
        sj = e["stamp_joint_pos"].astype(np.float64)
        js_periods.append(np.diff(sj))
        same_js += int(np.sum(np.diff(sj) == 0))  # a step reused the previous step's sample
        stale_js += int(np.sum(ts - sj > 1.5 / fps))  # sample older than 1.5 periods
        # the action applied after this observation was chosen from an earlier one (the streamed
        # command reached the robot after its next tick): what the recorder counts as /action gaps
        old_action += int(np.sum(sj - e["stamp_action"].astype(np.float64) > 0.5 / fps))
        for c in cams:
            img_periods[c].append(np.diff(e[f"stamp_image_{c}"].astype(np.float64)))
        # steps before the twin's reset: the cube jumps (> 1 cm) when the reset lands
        cube = e["object_state"][:, :3].astype(np.float64)
        jumps = np.flatnonzero(np.linalg.norm(np.diff(cube[:6], axis=0), axis=1) > 0.01)
        pre_reset += int(jumps[-1] + 1) if jumps.size else 0
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    gp, jp = cat(grid_periods) * 1e3, cat(js_periods) * 1e3
    ip = {c: cat(v) * 1e3 for c, v in img_periods.items()}

    # -- the recorder's own counts (episode extra: cadence / align) --------------------------------
    drops, ages, rates, wall_rates, ep_wall = cadence_totals(rs)
    msgs: dict[str, int] = {}
    skipped: dict[str, int] = {}
    held: dict[str, int] = {}
    late: dict[str, int] = {}
    grid_steps = 0
    for m in rs.episodes_meta():
        grid_steps += int(m["extra"].get("align", {}).get("grid_steps", 0))
        for t, n in m["extra"]["cadence"]["messages"].items():
            msgs[t] = msgs.get(t, 0) + n
        for t, n in m["extra"]["cadence"].get("skipped_steps_by_topic", {}).items():
            skipped[t] = skipped.get(t, 0) + n
        al = m["extra"].get("align", {})
        for k, n in (al.get("held") or {}).items():
            held[k] = held.get(k, 0) + n
        for k, n in (al.get("late") or {}).items():
            late[k] = late.get(k, 0) + n
    successes = sum(bool(m["success"]) for m in rs.episodes_meta())
    with open_bag(rt["bag"]) as bag:
        counts = {t: v.count for t, v in bag.topics.items()}
    frames = frame_accounting(rt["bag"], cams, list(diag.loop_history))

    # -- the robot node's and the teleop node's own telemetry ------------------------------------------
    rl = rt["robot_loop"]
    teleop_line = re.search(r"streamed (\d+) commands in ([\d.]+) s \(([\d.]+) Hz, target [\d.]+\), (\d+) late ticks, "
                            r"acted on (\d+) observations", rt["teleop_log"])
    teleop_eps = re.findall(r"episode \d+/\d+ seed=\d+: (success|failure) after (\d+) robot steps", rt["teleop_log"])
    rec_warn = [ln for ln in rt["recorder_log"].splitlines() if "WARN" in ln or "ERROR" in ln]
    robot_warn = [ln for ln in rt["robot_log"].splitlines() if "WARN" in ln or "ERROR" in ln]
    js_msgs = msgs.get("/joint_states", 0)

    summary = {
        "episodes": rs.n_episodes,
        "steps": rs.n_steps,
        "expert success": f"{successes}/{rs.n_episodes}",
        "target Hz": fps,
        "achieved Hz (recorder, mean of episodes)": float(np.mean(rates)) if rates else None,
        "steps / episode duration Hz": float(np.mean(ep_rates)) if ep_rates else None,
        "grid period ms mean": float(gp.mean()) if gp.size else None,
        "grid period ms p1": _pct(gp, 1), "grid period ms p99": _pct(gp, 99),
        "joint_states stamp period ms mean": float(jp.mean()) if jp.size else None,
        "joint_states stamp period ms p1": _pct(jp, 1), "joint_states stamp period ms p99": _pct(jp, 99),
        "steps reusing the previous joint_states": same_js,
        "steps with joint_states older than 1.5 periods": stale_js,
        "steps whose action was chosen from an earlier observation": old_action,
        "steps before the reset (cube jump)": pre_reset,
        "grid steps / recorded steps": f"{grid_steps}/{rs.n_steps}",
        "drops, all topics": sum(drops.values()),
        "drops, observation + camera topics": sum(n for t, n in drops.items() if t not in ("/action", "/reward")),
        "wall s": rt["wall_s"],
        "steps/s (in episodes)": rs.n_steps / ep_wall if ep_wall else None,
        "recorder close s": rt["close_s"],
        "robot achieved Hz (whole run)": float(rl["rate_achieved_hz"]) if "rate_achieved_hz" in rl else None,
        "robot overruns (whole run)": int(rl["overruns"]) if "overruns" in rl else None,
        "robot period err ms p99": float(rl["period_err_ms_p99"]) if "period_err_ms_p99" in rl else None,
        "robot period err ms max": float(rl["period_err_ms_max"]) if "period_err_ms_max" in rl else None,
        "robot steps (whole run)": int(rl["steps"]) if "steps" in rl else None,
        "robot camera frames / dropped, busy renderer (whole run)":
            f"{rl.get('camera_frames')}/{rl.get('camera_frames_dropped')}",
        **{f"window {c}: expected/rendered/received": f"{v['expected (one per observation)']}/"
           f"{v['rendered + published by the robot']}/{v['received (bag)']}"
           for c, v in frames.get("cameras", {}).items()},
        "window: observations published/received": f"{frames.get('robot observations published')}/"
                                                    f"{frames.get('joint_states received')}",
        "window: robot overruns": frames.get("robot overruns"),
        "teleop commands Hz": float(teleop_line.group(3)) if teleop_line else None,
        "teleop late ticks": int(teleop_line.group(4)) if teleop_line else None,
        "image qos": a.rt_image_qos,
        "CPU cores used robot/recorder/teleop": "/".join(f"{rt['cpu_cores'].get(k, float('nan')):.2f}"
                                                         for k in ("robot", "recorder", "teleop")),
        "loadavg start": rt["loadavg_start"], "loadavg end": rt["loadavg_end"],
    }
    print_table([{"metric": k, "value": v} for k, v in summary.items()], ["metric", "value"],
                f"REALTIME ros_record: so101 pick_cube, {a.episodes} episodes, {a.rate:g} Hz wall clock, cameras "
                f"{a.cameras} {a.image_size}x{a.image_size}, expert streaming at {a.rate:g} Hz")
    topic_rows = []
    for t in sorted(set(drops) | set(msgs)):
        row = {"topic": t, "dropped (recorder)": drops.get(t, 0), "skipped steps": skipped.get(t, 0),
               "received in episodes": msgs.get(t, 0), "age max ms (worst ep)": max(ages.get(t, [0.0])),
               "bag messages": counts.get(t, 0)}
        if t in cam_topics:
            row["frames received / expected"] = f"{msgs.get(t, 0)}/{js_msgs}"
        topic_rows.append(row)
    print_table(topic_rows, ["topic", "dropped (recorder)", "skipped steps", "received in episodes",
                             "frames received / expected", "age max ms (worst ep)", "bag messages"],
                "realtime, per topic (expected frames: one per /joint_states received in the episodes)")
    if rec_warn or robot_warn:
        print("\nrealtime warnings (recorder / robot node logs):")
        for ln in (rec_warn + robot_warn)[:20]:
            print("  " + ln[-200:])
    out = {"summary": summary, "topics": topic_rows, "bag_counts": counts, "episode_rate_hz": rates,
           "episode_wall_rate_hz": wall_rates, "align_held": held, "align_late": late,
           "robot_loop_diagnostics": rl, "robot_safety_diagnostics": rt["robot_safety"], "frames": frames,
           "teleop_episodes": [{"end": e, "robot_steps": int(n)} for e, n in teleop_eps],
           "teleop": teleop_line.group(0) if teleop_line else None,
           "recorder_warnings": rec_warn[:50], "robot_warnings": robot_warn[:50],
           "img_stamp_period_ms": {c: {"mean": float(v.mean()) if v.size else None, "p1": _pct(v, 1),
                                       "p99": _pct(v, 99)} for c, v in ip.items()},
           "loadavg_start": rt["loadavg_start"], "loadavg_end": rt["loadavg_end"], "wall_s": rt["wall_s"]}
    rs.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="both", choices=["both", "lockstep", "realtime"],
                   help="which case(s) to run, in one run side by side")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--rate", type=float, default=30.0, help="robot control rate = dataset fps (robot.control_hz)")
    p.add_argument("--cameras", default="front,wrist")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0, help="s for each ROS run")
    p.add_argument("--velocity-scale", type=float, default=1.0,
                   help="robot_node --velocity-scale (1 = the spec's max_velocity; the direct recording's env "
                        "applies the same SafetyFilter with scale 1, so keep 1 for a like-for-like comparison)")
    p.add_argument("--rt-image-qos", default="sensor", choices=["sensor", "reliable"],
                   help="realtime: robot_node --image-qos (sensor = best effort, the node's default)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/ros_record.json)")
    a = p.parse_args()
    refuse_unless_isolated()
    os.environ.setdefault("MUJOCO_GL", "egl")

    work = Path(tempfile.mkdtemp(prefix="bench_ros_record_"))
    print(f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')}, work dir {work}, load average {loadavg()}")
    payload: dict = {"config": vars(a), "work_dir": str(work), "loadavg_start": loadavg()}
    if a.mode in ("both", "lockstep"):
        payload.update(lockstep_case(a, work))
    if a.mode in ("both", "realtime"):
        diag = DiagListener()
        try:
            payload["realtime"] = realtime_case(a, work, diag)
        finally:
            diag.close()
    payload["loadavg_end"] = loadavg()
    payload["command"] = ("scripts/isolated.sh .venv/bin/python benchmarks/bench_ros_record.py "
                          + " ".join(sys.argv[1:]))
    if a.mode == "both":
        ls, rt = payload["summary"], payload["realtime"]["summary"]
        rows = [
            {"": "episodes / steps", "lockstep": f"{ls['episodes ros/direct'].split('/')[0]} / "
             f"{ls['steps ros/direct'].split('/')[0]}", "realtime": f"{rt['episodes']} / {rt['steps']}"},
            {"": "expert success", "lockstep": ls["expert success"], "realtime": rt["expert success"]},
            {"": "drops, all topics", "lockstep": sum(r["dropped"] for r in payload["topics"]),
             "realtime": rt["drops, all topics"]},
            {"": "drops, observation + camera topics",
             "lockstep": sum(r["dropped"] for r in payload["topics"] if r["topic"] not in ("/action", "/reward")),
             "realtime": rt["drops, observation + camera topics"]},
            {"": "achieved Hz (recorder)", "lockstep": ls["achieved Hz (stamps)"],
             "realtime": rt["achieved Hz (recorder, mean of episodes)"]},
            {"": "wall s", "lockstep": ls["ros wall s"], "realtime": rt["wall s"]},
            {"": "steps/s in episodes", "lockstep": ls["ros steps/s (in episodes)"],
             "realtime": rt["steps/s (in episodes)"]},
            {"": "load average start -> end", "lockstep": f"{ls['loadavg start']} -> {ls['loadavg end']}",
             "realtime": f"{rt['loadavg start']} -> {rt['loadavg end']}"},
        ]
        print_table(rows, ["", "lockstep", "realtime"], "side by side")
    write_json("ros_record", payload, a.out)


if __name__ == "__main__":
    main()
