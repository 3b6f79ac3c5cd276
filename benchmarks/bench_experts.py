"""Scripted expert success rate over many seeds, every task on every robot.

    .venv/bin/python benchmarks/bench_experts.py [--seeds 200] [--out FILE]
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from _common import print_table, write_json

TASKS = ("reach", "pick_cube", "push", "insert")
ROBOTS = ("so101", "arm6")


def evaluate(args: tuple[str, str, int]) -> dict:
    from robot_rl.sim import make_env
    from robot_rl.sim.experts import rollout_expert
    task, robot, seeds = args
    env = make_env(task, robot)
    t0 = time.perf_counter()
    results = [rollout_expert(env, seed) for seed in range(seeds)]
    wall = time.perf_counter() - t0
    lengths = [r["length"] for r in results]
    ok = [r["success"] for r in results]
    return {"task": task, "robot": robot, "seeds": seeds, "success_rate": float(np.mean(ok)),
            "failed_seeds": [i for i, s in enumerate(ok) if not s],
            "mean_len": float(np.mean(lengths)), "std_len": float(np.std(lengths)),
            "steps_per_s": float(sum(lengths) / wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    jobs = [(t, r, args.seeds) for t in TASKS for r in ROBOTS]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(evaluate, jobs))
    print_table(rows, ["task", "robot", "seeds", "success_rate", "mean_len", "std_len", "steps_per_s"],
                f"Scripted experts, seeds 0..{args.seeds - 1} (target: success >= 0.95 everywhere)")
    ok = all(r["success_rate"] >= 0.95 for r in rows)
    print(f"\nall >= 95%: {'PASS' if ok else 'FAIL'}")
    write_json("experts", {"rows": rows, "pass": ok}, args.out)


if __name__ == "__main__":
    main()
