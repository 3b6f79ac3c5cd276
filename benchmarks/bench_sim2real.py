"""The real-to-sim-to-real loop on a virtual SO-101 whose physics the code is not told (issue 16).

Every step is a ``robot-rl`` command a user with an arm on the desk runs (printed as it
runs; docs/sim2real.md walks them):

1. ``robot-rl virtual so101 --unit hidden.yaml``: the arm -- random factory encoder offsets,
   and servo gains, damping, rotor inertia, gearbox friction and bus latency unlike the
   twin's. The unit file is written here and read by nobody but the emulator;
2. ``robot-rl calibrate``: the motor calibration (ticks <-> joint angles), with the person;
3. ``robot-rl sysid excite ... driver=feetech``: multi-sines, steps and ramps through the port;
4. ``robot-rl sysid fit``: the calibrated twin (``dynamics.yaml``);
5. ``robot-rl sysid randomization``: ranges centred on the fit, widths from its intervals,
   plus the object, light, colour and camera terms of ``--base`` (``sim2real``);
6. ``robot-rl record sim ... calibration=DIR randomization=FILE``: camera demos in the
   randomized, calibrated twin (and, for comparison, in the calibrated twin alone);
7. ``robot-rl train policy=diffusion_image``: camera-only policies;
8. ``python -m robot_rl.ros.deploy ... --driver feetech``: each policy drives the virtual
   follower through the robot node, two camera nodes and the inference node; between
   episodes the arm goes home and the unit's person sets the scene and referees.

Three policies are deployed on the same held-out seeds: the nominal-twin policy (issue 15's),
the calibrated-twin policy without randomization and the calibrated + randomized one.

    ../scripts/isolated.sh ../.venv/bin/python bench_sim2real.py [--episodes 30] [--train-minutes 25] [--base sim2real] [--reuse]

Target: the calibrated + randomized policy succeeds >= 70% of the time on the virtual arm.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
OUT = REPO / "runs" / "bench_sim2real"
# the unit's hidden physics: what a real STS3215 arm may plausibly differ in (LeRobot lowers
# the servos' P gain to 16 of 32; gearbox friction; USB-serial latency)
HIDDEN = {"actuator_gain_scale": 0.5, "damping_scale": 2.5, "armature_scale": 2.0, "frictionloss": 0.15,
          "latency_ms": 50.0}


def cli(*args: str) -> list[str]:
    return [PY, "-m", "robot_rl.cli.main", *args]


def run(step: str, cmd: list[str], env: dict, log: Path, timeout: float = 3600) -> str:
    shown = " ".join(shlex.quote(c) for c in cmd).replace(f"{PY} -m robot_rl.cli.main", "robot-rl") \
        .replace(PY, "python")
    print(f"\n[{step}] $ {shown}", flush=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    with open(log, "a") as f:
        f.write(f"\n$ {shown}\n{out}")
    tail = "\n".join(line for line in out.strip().splitlines()[-6:] if "it/s]" not in line and "ep/s" not in line)
    print(tail, flush=True)
    if p.returncode != 0:
        raise SystemExit(f"{step} failed (exit {p.returncode}); log {log}")
    print(f"[{step}] {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit-seed", type=int, default=16, help="random_unit seed (factory offsets, directions)")
    ap.add_argument("--episodes", type=int, default=30, help="deployed episodes per policy")
    ap.add_argument("--demos", type=int, default=300)
    ap.add_argument("--train-minutes", type=float, default=25.0)
    ap.add_argument("--base", default="sim2real",
                    help="randomization whose object, light, colour and camera terms join the fit-centred ones")
    ap.add_argument("--excite-seconds", type=float, default=48.0)
    ap.add_argument("--nominal", default=str(REPO / "runs" / "bench_image" / "diffusion_pick_cube" / "checkpoints" / "last"))
    ap.add_argument("--policies", default="nominal,calibrated,calibrated_randomized")
    ap.add_argument("--reuse", action="store_true", help="keep what an earlier run left in runs/bench_sim2real")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=CHECKPOINT",
                    help="also deploy this checkpoint (repeatable), e.g. bench_robustness's wide-randomized policy")
    args = ap.parse_args()
    from robot_rl.ros.isolation import HOW, loopback_only
    if not loopback_only():
        raise SystemExit(f"bench_sim2real starts DDS participants: {HOW}")

    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "session.log"
    if not args.reuse:
        log.write_text("")
    env = {**os.environ, "ROBOT_RL_CALIBRATION_DIR": str(OUT / "calibration")}
    # 1. the unit: the code under test never reads this file, only the emulator does
    import yaml

    from robot_rl.drivers.virtual.so101 import random_unit
    unit = random_unit(args.unit_seed)
    for k, v in HIDDEN.items():
        setattr(unit.twin, k, v)
    unit_file = unit.save(OUT / "hidden_unit.yaml")
    from robot_rl.hardware_session import start_virtual, stop_virtual
    rig_args = ["--unit", str(unit_file), "--camera-size", "96x96", "--fps", "30"]
    result: dict = {"hidden": HIDDEN, "unit_seed": args.unit_seed, "base": args.base, "steps": {}}
    t_all = time.perf_counter()
    cal = OUT / "calibration" / "follower.yaml"

    def arm_up() -> tuple:
        """The virtual arm, running (its physics and cameras in real time) only while the loop
        needs it: not through recording and training, which it would slow down."""
        rig = start_virtual(rig_args, env, OUT)
        info = rig.info
        port, person = info["follower_port"], info["person"]
        sources = f"{info['cameras']['front']},{info['cameras']['wrist']}"
        print(f"virtual SO-101: follower {port}, person {person}, cameras {sources}", flush=True)
        try:  # 2. motor calibration (the same unit every start: same factory offsets)
            run("calibrate", cli("calibrate", "robot=so101", "arm=follower", f"port={port}", "id=follower",
                                 f"person={person}", f"out={cal}"), env, log, 300)
        except BaseException:
            stop_virtual(rig)
            raise
        return rig, port, person, sources

    try:
        # 3-4. excite, fit
        data = OUT / "sysid.zarr"
        if not (args.reuse and data.exists()):
            import shutil
            shutil.rmtree(data, ignore_errors=True)
            rig, port, _, _ = arm_up()
            try:
                t0 = time.perf_counter()
                run("sysid excite", cli("sysid", "excite", "robot=so101", "driver=feetech", f"port={port}",
                                        f"calibration={cal}", f"out={data}", f"seconds={args.excite_seconds:g}"),
                    env, log, 600)
                result["steps"]["excite_s"] = time.perf_counter() - t0
            finally:
                stop_virtual(rig)
        calib = OUT / "calibration" / "so101" / "unit"
        if not (args.reuse and (calib / "dynamics.yaml").exists()):
            t0 = time.perf_counter()
            run("sysid fit", cli("sysid", "fit", str(data), "robot=so101", "id=unit", f"out={OUT / 'calibration'}"),
                env, log, 1800)
            result["steps"]["fit_s"] = time.perf_counter() - t0
        dyn = yaml.safe_load((calib / "dynamics.yaml").read_text())
        result["fit"] = {k: {"value": v["value"], "interval": v["interval"], "identifiable": v["identifiable"]}
                         for k, v in dyn["params"].items()}
        result["fit"]["delay_steps"] = dyn["delay_steps"]
        # 5. randomization centred on the fit
        rand = OUT / "randomization.yaml"
        run("sysid randomization", cli("sysid", "randomization", str(calib), f"base={args.base}", f"out={rand}"), env, log, 60)
        # 6-7. demos and policies
        ck = {"nominal": Path(args.nominal)}
        for name, extra in (("calibrated", []), ("calibrated_randomized", [f"randomization={rand}"])):
            if name not in args.policies.split(","):
                continue
            store = OUT / f"demos_{name}.zarr"
            if not (args.reuse and store.exists()):
                import shutil
                shutil.rmtree(store, ignore_errors=True)
                run(f"record {name}", cli("record", "sim", "task=pick_cube", f"episodes={args.demos}",
                                          "cameras=[front,wrist]", "image_size=96", f"calibration={calib}",
                                          f"out={store}", "progress=false", *extra), env, log, 3600)
            run_dir = OUT / f"policy_{name}"
            if not (args.reuse and (run_dir / "checkpoints" / "last").exists()):
                run(f"train {name}", cli("train", "policy=diffusion_image", f"dataset={store}", "task=pick_cube",
                                         "steps=null", f"max_minutes={args.train_minutes:g}", f"out={run_dir}",
                                         "eval_final=false", "eval_every_min=1000", "progress=false",
                                         f"calibration={calib}", *extra), env, log, 7200)
            ck[name] = run_dir / "checkpoints" / "last"
        # 8. deploy each through the inference node onto the virtual follower
        for kv in args.extra:
            name, _, path = kv.partition("=")
            ck[name] = Path(path)
        rows = []
        rig, port, person, sources = arm_up()
        for name in args.policies.split(",") + [kv.partition("=")[0] for kv in args.extra]:
            dep_dir = OUT / f"deploy_{name}"
            model = next(Path(ck[name]).glob("*.safetensors"), Path(ck[name]))
            fresh = (dep_dir / "deploy.json").exists() and (dep_dir / "deploy.json").stat().st_mtime > model.stat().st_mtime
            if not (args.reuse and fresh):  # --reuse: a policy deployed since it was trained is not run again
                run(f"deploy {name}", [PY, "-m", "robot_rl.ros.deploy", str(ck[name]), "--episodes",
                                         str(args.episodes), "--driver", "feetech", "--port", port, "--calibration",
                                         str(cal), "--sources", sources, "--person", person, "--log-dir",
                                         str(dep_dir)], env, log, 3600)
            r = json.loads((dep_dir / "deploy.json").read_text())
            rows.append({"policy": name, "episodes": r["episodes"], "successes": r["successes"],
                         "success_%": round(100 * r["success_rate"], 1),
                         "ci95_%": f"[{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]",
                         "mean_success_s": r["mean_success_time_s"], "checkpoint": str(ck[name])})
        result["deploy"] = rows
        stop_virtual(rig)
    finally:
        if "rig" in locals():
            stop_virtual(rig)
    result["wall_s"] = time.perf_counter() - t_all
    print_table(result["deploy"], ["policy", "episodes", "successes", "success_%", "ci95_%", "mean_success_s"],
                f"pick_cube on the hidden-parameter virtual SO-101 (unit seed {args.unit_seed}), through the "
                "inference node")
    fit_rows = [{"param": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in result["fit"].items()]
    print_table(fit_rows, ["param", "value", "interval", "identifiable"], f"fitted dynamics (hidden: {HIDDEN})")
    cr = next((r for r in result["deploy"] if r["policy"] == "calibrated_randomized"), None)
    result["target_met"] = bool(cr and cr["success_%"] >= 70)
    print(f"target (calibrated + randomized >= 70%): {result['target_met']}")
    write_json("bench_sim2real", result)


if __name__ == "__main__":
    main()
