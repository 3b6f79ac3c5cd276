"""The SO-101 follower and leader through the robot node, on the virtual SO-101 (issue 14).

One virtual SO-101 (follower + leader servo buses on pseudo-terminals at 1 Mbaud, the
follower's physics the twin in real time; no cameras) runs in this process; both arms are
calibrated through their ports first. Then, each a section:

- ``joint_states``: robot_node --driver feetech at --rate (100) Hz for --duration (30) s,
  /joint_states recorded by a subscriber in another process (bench_joint_states.py's):
  period error p50 / p99 / max and gaps, of the header stamps (taken when the bus read
  returned) and of the receive times. Target: p99 < 2 ms, no gaps. Baseline in the same
  run: the twin's robot node (--driver sim) at the same rate.
- ``leader``: robot_node (feetech, 60 Hz, joint_pos) + teleop_node (leader, 60 Hz): the
  leader's shoulder_pan register steps by +-0.03 rad at random moments (the person's hand);
  latency from the step to the first follower Goal_Position write that carries it (the
  emulator sees the write), p50 / p99 / max. Target p99 < 20 ms. For scale: a 60 Hz
  leader loop alone samples a step 0..16.7 ms after it happens.
- ``faults``: 1% dropped and 1% corrupt replies on the follower's bus, robot_node at
  100 Hz following a stream of joint commands (some far outside the joint limits) for
  --fault-minutes (10): the node must stay up, every Goal_Position write must lie within
  the joint limits, and every request the emulator answered with a dropped or corrupt reply
  must show up as a failed attempt on /diagnostics (bus_timeouts + bus_corrupt).

    scripts/isolated.sh .venv/bin/python benchmarks/bench_hardware.py [--sections joint_states,leader,faults]
        [--duration 30] [--rate 100] [--steps 200] [--fault-minutes 10] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def _spawn(module: str, *args: str, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=REPO, stdout=out,
                            stderr=subprocess.STDOUT)


def _stop(p: subprocess.Popen) -> int:
    p.send_signal(2)
    try:
        return p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


class Rig:
    """The virtual SO-101, calibrated; records the follower's Goal_Position writes."""

    def __init__(self, work: Path, seed: int = 3):
        from robot_rl.calibration.procedures import calibrate
        from robot_rl.calibration.prompter import PersonPrompter
        from robot_rl.drivers.virtual.so101 import VirtualSO101, random_unit
        from robot_rl.spec import load_spec
        self.spec = load_spec("so101")
        self.rig = VirtualSO101(random_unit(seed, cameras=[]))
        self.info = self.rig.start()
        self.cal = {}
        for arm in ("follower", "leader"):
            c = calibrate(self.info[f"{arm}_port"], self.rig.hardware[arm], self.spec,
                          PersonPrompter(self.info["person"], quiet=True), arm_id=arm, sweep_s=2.0,
                          log=lambda *a, **k: None)
            self.cal[arm] = c.save(work / f"{arm}.yaml")
        self.writes: list[tuple[float, str, float]] = []  # (monotonic, motor, commanded angle)
        self.recording = False
        plant = self.rig.follower
        orig = plant.command

        def command(servo, torque, goal_raw):  # instrumentation: what the emulator was told, when
            if self.recording and goal_raw is not None:
                n = plant._servo_motor(servo)
                self.writes.append((time.monotonic(), n, plant._goal_value(n, goal_raw)))
            return orig(servo, torque, goal_raw)
        plant.command = command

    def close(self):
        self.rig.close()


# -- joint_states -------------------------------------------------------------------------------
def joint_states(rig: Rig, a, work: Path) -> list[dict]:
    from bench_joint_states import analyse
    rows = []
    for label, node_args in (
            ("feetech follower (virtual SO-101)", ["--driver", "feetech", "--port", rig.info["follower_port"],
                                                  "--calibration", str(rig.cal["follower"]), "--action-mode",
                                                  "joint_pos"]),
            ("baseline: the twin (--driver sim)", ["--driver", "sim", "--cameras", "none"])):
        out = work / "sub.npz"
        out.unlink(missing_ok=True)
        sub = subprocess.Popen([sys.executable, str(HERE / "bench_joint_states.py"), "--_subscriber", str(out),
                                "--duration", str(a.duration), "--warmup", "2"], cwd=REPO, env=dict(os.environ))
        node = _spawn("robot_rl.ros.robot_node", "--robot", "so101", "--mode", "realtime", "--rate", str(a.rate),
                      "--diag-hz", "1", *node_args, log=work / "node_js.log")
        try:
            rc = sub.wait(timeout=a.duration + 90)
        finally:
            _stop(node)
        if rc != 0 or not out.exists():
            raise SystemExit(f"joint_states ({label}): subscriber failed; node log:\n"
                             f"{(work / 'node_js.log').read_text()[-3000:]}")
        d = np.load(out)
        r = analyse(d["recv"], d["stamps"], a.rate)
        for sig in ("stamp", "receive"):
            s = r[sig]
            rows.append({"variant": label, "clock": "header stamp" if sig == "stamp" else "receive time",
                         "p50_err_ms": s["p50_ms"], "p99_err_ms": s["p99_ms"], "max_err_ms": s["max_ms"],
                         "gaps": s["gaps"], "received": r["received"], "expected": r["expected"]})
    return rows


# -- leader -> follower ----------------------------------------------------------------------------
def leader_latency(rig: Rig, a, work: Path) -> dict:
    leader = rig.rig.leader
    base = dict(leader.values())
    leader.hold(base)  # the person holds the leader still
    node = _spawn("robot_rl.ros.robot_node", "--robot", "so101", "--driver", "feetech", "--port",
                  rig.info["follower_port"], "--calibration", str(rig.cal["follower"]), "--mode", "realtime",
                  "--rate", "60", "--action-mode", "joint_pos", "--timeout", "0.5", log=work / "node_leader.log")
    tele = _spawn("robot_rl.ros.teleop_node", "--device", "leader", "--robot", "so101", "--rate", "60",
                  "--leader-port", rig.info["leader_port"], "--leader-calibration", str(rig.cal["leader"]),
                  "--events", "none", "--wait-recorder", "0", log=work / "teleop_leader.log")
    lat = []
    try:
        # wait until the follower follows (its writes track the held leader)
        rig.recording = True
        end = time.monotonic() + 60
        while time.monotonic() < end and not any(n == "shoulder_pan" for _, n, _ in rig.writes[-20:]):
            time.sleep(0.2)
        if not rig.writes:
            raise SystemExit("leader: the follower never received a goal; logs:\n"
                             + (work / "node_leader.log").read_text()[-2000:]
                             + (work / "teleop_leader.log").read_text()[-2000:])
        time.sleep(1.0)
        rng = random.Random(0)
        cur = base["shoulder_pan"]
        for k in range(a.steps):
            time.sleep(0.15 + rng.random() * 0.2)  # a random phase against both loops
            new = cur + (0.03 if k % 2 == 0 else -0.03)
            n0 = len(rig.writes)
            t0 = time.monotonic()
            leader.hold({**base, "shoulder_pan": new})
            mid = 0.5 * (cur + new)
            t_hit = None
            deadline = t0 + 0.5
            i = n0
            while t_hit is None and time.monotonic() < deadline:
                w = rig.writes[i:]
                for t, n, v in w:
                    if n == "shoulder_pan" and (v - mid) * (new - cur) > 0:
                        t_hit = t
                        break
                i += len(w)
                time.sleep(0.005)  # the write times are recorded by the hook: polling slowly keeps the GIL free
            if t_hit is not None:
                lat.append((t_hit - t0) * 1e3)
            cur = new
    finally:
        rig.recording = False
        _stop(tele)
        _stop(node)
        leader.release()
    arr = np.array(lat)
    return {"steps": a.steps, "measured": int(len(arr)), "missed": a.steps - int(len(arr)),
            "p50_ms": float(np.percentile(arr, 50)) if len(arr) else None,
            "p99_ms": float(np.percentile(arr, 99)) if len(arr) else None,
            "max_ms": float(arr.max()) if len(arr) else None,
            "sampling_floor_ms": 1000 / 60, "latencies_ms": [round(x, 2) for x in lat]}


# -- faults ----------------------------------------------------------------------------------------
def faults(rig: Rig, a, work: Path) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from robot_rl.ros import msgs, topics
    emu = rig.rig.buses["follower"]
    before = dict(emu.stats())
    emu.faults.drop_reply, emu.faults.corrupt_reply = 0.01, 0.01
    node = _spawn("robot_rl.ros.robot_node", "--robot", "so101", "--driver", "feetech", "--port",
                  rig.info["follower_port"], "--calibration", str(rig.cal["follower"]), "--mode", "realtime",
                  "--rate", "100", "--action-mode", "joint_pos", "--timeout", "0.5", "--diag-hz", "1",
                  log=work / "node_faults.log")
    rclpy.init()
    n = rclpy.create_node("bench_hw_faults")
    diag: dict = {}

    def on_diag(arr):
        for s in arr.status:
            if s.name.endswith(": safety"):
                diag.update({kv.key: kv.value for kv in s.values})
    n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diag, topics.reliable_qos(10))
    pub = n.create_publisher(JointState, topics.JOINT_COMMAND, topics.reliable_qos(10))
    spec = rig.spec
    lo, hi = np.array(spec.lower), np.array(spec.upper)
    mid, amp = 0.5 * (lo + hi), 0.3 * (hi - lo)
    rig.writes.clear()
    rig.recording = True
    t0 = time.monotonic()
    k = 0
    alive = True
    try:
        while time.monotonic() - t0 < a.fault_minutes * 60:
            t = time.monotonic() - t0
            q = mid + amp * np.sin(2 * np.pi * 0.1 * t + np.arange(spec.dof))
            if k % 50 == 0:
                q = q + np.sign(q - mid) * 3.0  # far outside the limits: must be clamped
            pub.publish(msgs.joint_state(spec.joint_names, q))
            k += 1
            rclpy.spin_once(n, timeout_sec=0.0)
            time.sleep(0.01)
            if node.poll() is not None:
                alive = False
                break
        end = time.monotonic() + 3
        emu.faults.drop_reply = emu.faults.corrupt_reply = 0.0
        diag.clear()
        while time.monotonic() < end or not diag:
            rclpy.spin_once(n, timeout_sec=0.1)
            if time.monotonic() > end + 10:
                break
    finally:
        rig.recording = False
        rc = _stop(node) if node.poll() is None else node.returncode
        n.destroy_node()
        rclpy.shutdown()
    after = emu.stats()
    injected = {k2: after[k2] - before.get(k2, 0) for k2 in ("dropped", "corrupted", "faulty_requests", "requests")}
    margin = 0.01  # the node's default joint margin
    goals = {}
    for _, m, v in rig.writes:
        goals.setdefault(m, []).append(v)
    outside = 0
    for j, name in enumerate(spec.joint_names):
        g = np.array(goals.get(name, []))
        outside += int(np.sum((g < lo[j] + margin - 1e-3) | (g > hi[j] - margin + 1e-3)))
    counted = int(diag.get("bus_timeouts", -1)) + int(diag.get("bus_corrupt", -1))
    return {"minutes": a.fault_minutes, "commands_sent": k, "node_alive": alive, "node_exit": rc,
            "goal_writes": len(rig.writes), "goal_writes_outside_limits": outside, **{f"injected_{k2}": v for k2, v in
                                                                                       injected.items()},
            "counted_failed_attempts": counted, "bus_retries": int(diag.get("bus_retries", -1)),
            "read_failures": int(diag.get("read_failures", -1)), "fault": diag.get("fault", ""),
            "every_fault_counted": counted >= injected["faulty_requests"] > 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="joint_states,leader,faults")
    ap.add_argument("--duration", type=float, default=30.0, help="joint_states: measured seconds")
    ap.add_argument("--rate", type=float, default=100.0, help="joint_states: robot node rate")
    ap.add_argument("--steps", type=int, default=200, help="leader: leader steps")
    ap.add_argument("--fault-minutes", type=float, default=10.0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/hardware.json)")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from robot_rl.ros.isolation import require_loopback_only
    require_loopback_only("bench_hardware")
    os.environ.setdefault("MUJOCO_GL", "egl")
    from _common import print_table, write_json
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    out: dict = {"config": vars(a), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench_hardware_") as tmp:
        work = Path(tmp)
        rig = Rig(work)
        try:
            if "joint_states" in sections:
                print(f"joint_states: {a.rate:g} Hz for {a.duration:g} s, the follower and the twin ...", flush=True)
                rows = joint_states(rig, a, work)
                print_table(rows, ["variant", "clock", "p50_err_ms", "p99_err_ms", "max_err_ms", "gaps", "received",
                                   "expected"], f"/joint_states period error at {a.rate:g} Hz, {a.duration:g} s")
                f = [r for r in rows if r["variant"].startswith("feetech")]
                ok = all(r["p99_err_ms"] < 2.0 and r["gaps"] == 0 for r in f)
                print(f"target (follower): p99 < 2 ms and no gaps -> {'met' if ok else 'NOT met'}")
                out["joint_states"] = {"rows": rows, "target_met": ok}
            if "leader" in sections:
                print(f"leader -> follower at 60 Hz: {a.steps} leader steps ...", flush=True)
                r = leader_latency(rig, a, work)
                print_table([r], ["steps", "measured", "missed", "p50_ms", "p99_ms", "max_ms", "sampling_floor_ms"],
                            "leader register change -> follower Goal_Position write (ms)")
                r["target_met"] = r["p99_ms"] is not None and r["p99_ms"] < 20.0 and r["missed"] == 0
                print(f"target: p99 < 20 ms -> {'met' if r['target_met'] else 'NOT met'}")
                out["leader"] = r
            if "faults" in sections:
                print(f"faults: 1% dropped + 1% corrupt replies, 100 Hz, {a.fault_minutes:g} min ...", flush=True)
                r = faults(rig, a, work)
                cols = ["minutes", "commands_sent", "node_alive", "goal_writes", "goal_writes_outside_limits",
                        "injected_dropped", "injected_corrupted", "injected_faulty_requests", "counted_failed_attempts",
                        "bus_retries", "read_failures"]
                print_table([r], cols, "faults on the follower's bus")
                r["target_met"] = r["node_alive"] and r["goal_writes_outside_limits"] == 0 and r["every_fault_counted"]
                print(f"target: no crash, no command outside limits, every fault counted -> "
                      f"{'met' if r['target_met'] else 'NOT met'}")
                out["faults"] = r
        finally:
            rig.close()
    out["loadavg_end"] = os.getloadavg()[0]
    write_json("hardware", out, a.out)


if __name__ == "__main__":
    main()
