"""`make demo`, timed: the full end-to-end pipeline on the sim twin with its default
settings, its wall time per stage and the figures it prints (success rates, deploy latency),
saved so the demo figures in docs/benchmarks.md have a result file.

    cd benchmarks
    ../scripts/isolated.sh ../.venv/bin/python bench_demo.py [--out ../out/bench_demo] [-- DEMO ARGS]

Runs ``python -m robot_rl.demo`` in a child process (the demo writes OUT/demo.json), prints
a table and writes results/demo.json with the load average before and after (the machine
is shared: stage times move with other work).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import print_table, write_json

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_demo"))
    ap.add_argument("--budget-s", type=float, default=600.0, help="the demo's stated time budget (README)")
    ap.add_argument("demo_args", nargs="*", help="extra arguments for robot_rl.demo (after --)")
    a = ap.parse_args()
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "robot_rl.demo", "--out", a.out, *a.demo_args], cwd=ROOT,
                       env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    if r.returncode != 0:
        sys.exit(f"bench_demo: the demo failed (exit {r.returncode}); nothing written")
    rep = json.loads((Path(a.out) / "demo.json").read_text())
    rows = [{"stage": k, "seconds": v} for k, v in rep["stage_seconds"].items()]
    rows.append({"stage": "total (demo's own clock)", "seconds": rep["total_seconds"]})
    rows.append({"stage": "total (process wall time, incl. imports)", "seconds": round(wall, 1)})
    print_table(rows, ["stage", "seconds"], f"make demo, stage times (budget {a.budget_s:.0f} s)")
    figs = []
    if "cameras" in rep:
        c = rep["cameras"]
        figs.append({"figure": "stage 4 cameras", "value": f"{c['steps']} steps at {c['rate_hz']} Hz; " + ", ".join(
            f"{k} {v['messages']} frames, {v.get('steps_skipped')} steps skipped, 1/{v['raw_over_stored']} of raw"
            for k, v in c["cameras"].items())})
    if "hardware" in rep:
        h = rep["hardware"]
        figs.append({"figure": "stage 5 virtual SO-101", "value": f"{h['store']['episodes']} leader episodes "
                     f"({h['store']['successes']} successful, {h['store']['steps']} steps) in {h['record_s']} s; the policy "
                     f"moved the follower {h['deploy']['follower_moved_rad']} rad; session {h['seconds']} s"})
    if "eval" in rep:
        e = rep["eval"]
        figs.append({"figure": "stage 6 eval success", "value": f"{100 * e['success_rate']:.1f}% "
                     f"[{100 * e['ci95'][0]:.1f}, {100 * e['ci95'][1]:.1f}] over {e['episodes']}"})
    if "deploy" in rep:
        d = rep["deploy"]
        lat = d.get("worker_latency_ms") or {}
        figs.append({"figure": "stage 7 deployed", "value": f"{d['successes']}/{d['episodes']}; worker latency "
                     + ", ".join(f"{k} {v:.1f} ms" for k, v in lat.items())})
    if "rl" in rep:
        x = rep["rl"]
        figs.append({"figure": "stage 8 online RL", "value": f"{100 * x['base_success']:.0f}% -> "
                     f"{100 * x['final_success']:.0f}%, {100 * x['intervention_rate']:.1f}% intervened"})
    if figs:
        print_table(figs, ["figure", "value"], "figures the demo printed")
    write_json("demo", {"command": "../scripts/isolated.sh ../.venv/bin/python bench_demo.py " + " ".join(sys.argv[1:]),
                        "wall_s": wall, "budget_s": a.budget_s, "within_budget": wall <= a.budget_s,
                        "loadavg_before": load0, "loadavg_after": load1, "demo": rep})


if __name__ == "__main__":
    main()
