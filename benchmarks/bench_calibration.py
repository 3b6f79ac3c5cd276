"""Motor calibration accuracy on virtual arms with random factory offsets and directions.

For each unit ``random_unit(seed)`` (seeds 0, 1, 2 by default) the virtual SO-101 starts
(two servo buses on ptys, the follower's MuJoCo twin, the person over HTTP); then, through
the ports and the person only, as a user would:

- (``--setup``: factory-new servos, ``setup-motors`` first, timed)
- ``calibrate`` the follower and the leader (zero pose, sweep, check pose, configure);
- follower: torque on, ``--poses`` random poses inside the calibrated range commanded as
  Goal_Position through the calibration's ``q_to_ticks``; once the arm is still, the
  calibrated angles (``ticks_to_q`` of Present_Position) against the person's ``/truth``;
- leader: the person holds ``--poses`` random poses, same comparison.

Errors are in encoder ticks (4096 per turn; the gripper in ticks of its servo). ``avg``:
Present_Position averaged over 0.1 s (the calibration's error); ``single``: one reading
(plus the encoder's 0.3-tick noise and 1-tick backlash). ``cmd``: commanded vs true angle
of the follower (tracking under gravity: the twin's servo loop, not the calibration).
``--koch`` adds units whose leader is the Dynamixel Koch arm. Target: max error <= 2 ticks.

    .venv/bin/python benchmarks/bench_calibration.py [--seeds 0 1 2] [--poses 20] [--koch] [--setup]
        [--sweep-s 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import print_table, write_json  # noqa: E402

T = 4096 / (2 * math.pi)


def _pose_errors(cal, spec, hw, truth, ticks) -> np.ndarray:
    q, g = cal.ticks_to_q(ticks)
    tq = np.array([truth["q"][n] for n in spec.joint_names])
    return np.append((q - tq) * T, (g - truth["gripper"]) * T * hw.gripper_travel)


def _random_pose(spec, cal, rng, around_home: float | None = None, margin=0.08) -> tuple[np.ndarray, float]:
    """Uniform inside the calibrated range (leader: any pose a hand can hold); the follower's
    poses stay within ``around_home`` rad of the spec's home, so the twin's arm does not
    drive into the table (a pose it cannot reach measures the contact, not the calibration)."""
    lo, hi = cal.limits()
    lo = np.maximum(lo, np.array(spec.lower)) + margin
    hi = np.minimum(hi, np.array(spec.upper)) - margin
    if around_home is not None:
        home = np.array(spec.home)
        lo, hi = np.maximum(lo, home - around_home), np.minimum(hi, home + around_home)
    return rng.uniform(lo, hi), float(rng.uniform(0.05, 0.95))


def _wait_still(bus, ids, timeout=3.0, tol=2) -> None:
    prev = bus.sync_read("Present_Position", ids)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(0.15)
        cur = bus.sync_read("Present_Position", ids)
        if max(abs(cur[i] - prev[i]) for i in ids) <= tol:
            return
        prev = cur


def measure(arm, cal, hw, spec, port, url, poses, seed) -> dict:
    from robot_rl.calibration.procedures import average_positions
    from robot_rl.drivers.servo.bus import ServoBus
    from robot_rl.drivers.virtual.person import get, post
    rng = np.random.default_rng(1000 + seed)
    avg, single, cmd = [], [], []
    with ServoBus(port, hw.protocol, hw.baudrate, models={m.id: m.model for m in hw.motors}) as bus:
        ids = cal.ids
        if arm == "follower":
            post(url, {"do": "release", "arm": "follower"})
            bus.sync_write("Goal_Position", bus.sync_read("Present_Position", ids))
            for i in ids:
                bus.write(i, "Torque_Enable", 1)
        for _ in range(poses):
            q, g = _random_pose(spec, cal, rng, around_home=0.5 if arm == "follower" else None)
            if arm == "follower":
                bus.sync_write("Goal_Position", cal.q_to_ticks(q, g))
                _wait_still(bus, ids)
            else:
                angles = {n: float(v) for n, v in zip(spec.joint_names, q)}
                angles["gripper"] = g
                post(url, {"do": "pose", "arm": arm, "angles": angles})
            truth = get(url, "/truth")[arm]
            single.append(_pose_errors(cal, spec, hw, truth, bus.sync_read("Present_Position", ids)))
            avg.append(_pose_errors(cal, spec, hw, truth, average_positions(bus, ids, 0.1)))
            if arm == "follower":
                tq = np.array([truth["q"][n] for n in spec.joint_names])
                cmd.append((q - tq) * T)  # joints (the gripper may close on nothing or on the cube)
        if arm == "follower":
            for i in ids:
                bus.write(i, "Torque_Enable", 0)
    a, s = np.abs(np.array(avg)), np.abs(np.array(single))
    out = {"poses": poses, "max_avg": float(a.max()), "p99_avg": float(np.percentile(a, 99)),
           "mean_avg": float(a.mean()), "max_single": float(s.max()), "p99_single": float(np.percentile(s, 99)),
           "max_per_motor_avg": {n: float(v) for n, v in zip([m.name for m in cal.motors], a.max(axis=0))}}
    if cmd:
        c = np.abs(np.array(cmd))
        out["max_cmd"], out["p50_cmd"] = float(c.max()), float(np.percentile(c, 50))
        out["max_cmd_per_joint"] = {n: float(v) for n, v in zip(spec.joint_names, c.max(axis=0))}
    return out


def run_unit(seed: int, leader: str, arms: list[str], a) -> list[dict]:
    from robot_rl.calibration.procedures import calibrate, setup_motors
    from robot_rl.calibration.prompter import PersonPrompter
    from robot_rl.drivers.hardware import load_hardware
    from robot_rl.drivers.virtual.so101 import VirtualSO101, random_unit
    from robot_rl.spec import load_spec
    spec = load_spec("so101")
    unit = random_unit(seed, leader=leader, factory_new=a.setup)
    rows = []
    with VirtualSO101(unit) as rig:
        info = rig.start()
        url = info["person"]
        for arm in arms:
            hw = load_hardware(unit.arm(arm).hardware)
            port = info[f"{arm}_port"]
            person = PersonPrompter(url, out=io.StringIO())
            row = {"seed": seed, "arm": arm, "hardware": hw.name, "protocol": hw.protocol}
            if a.setup:
                t0 = time.monotonic()
                setup_motors(port, hw, person, log=lambda s: None)
                row["setup_s"] = round(time.monotonic() - t0, 2)
            t0 = time.monotonic()
            cal = calibrate(port, hw, spec, person, arm_id=f"{arm}{seed}", sweep_s=a.sweep_s, log=lambda s: None)
            row["calibrate_s"] = round(time.monotonic() - t0, 2)
            truth_dirs = {n: m.direction for n, m in unit.arm(arm).motors.items()}
            row["directions_ok"] = all(m.direction == truth_dirs[m.name] for m in cal.motors)
            row.update(measure(arm, cal, hw, spec, port, url, a.poses, seed))
            row["pass"] = bool(row["max_avg"] <= 2.0 and row["directions_ok"])
            rows.append(row)
            print(f"seed {seed} {hw.name:<15} calibrate {row['calibrate_s']:.1f} s  max {row['max_avg']:.2f} "
                  f"p99 {row['p99_avg']:.2f} ticks (single read max {row['max_single']:.2f})", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--poses", type=int, default=20, help="random poses per arm")
    p.add_argument("--sweep-s", type=float, default=5.0, help="how long the virtual person takes for the sweep")
    p.add_argument("--koch", action="store_true", help="also units whose leader is the Dynamixel Koch arm")
    p.add_argument("--setup", action="store_true", help="factory-new servos: setup-motors before calibrating")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    t0 = time.monotonic()
    rows = []
    for seed in a.seeds:
        rows += run_unit(seed, "so101_leader", ["follower", "leader"], a)
        if a.koch:
            rows += run_unit(seed, "koch_leader", ["leader"], a)
    cols = ["seed", "hardware", "protocol"] + (["setup_s"] if a.setup else []) + [
        "calibrate_s", "directions_ok", "poses", "max_avg", "p99_avg", "mean_avg", "max_single", "p99_single",
        "max_cmd", "pass"]
    print_table(rows, cols, "calibrated angle vs /truth, encoder ticks (target: max_avg <= 2)")
    write_json("bench_calibration", {"config": vars(a), "rows": rows, "all_pass": all(r["pass"] for r in rows),
                                     "wall_s": round(time.monotonic() - t0, 1)}, a.out)


if __name__ == "__main__":
    main()
