"""Imitation policies on the twin: train on expert demonstrations within a wall-clock
budget on this machine, then evaluate on held-out seeds.

For every run (policy x task): records the demonstrations if the store is missing
(``robot-rl record sim``, state only), trains with ``robot-rl train``'s code path under
``max_minutes`` of training time with an evaluation every ``--eval-every-min`` minutes
(50 episodes; the curve of success vs training time), then evaluates the final
checkpoint on ``--episodes`` held-out seeds (100000+). Reports success with a Wilson 95%
interval, steps, samples/s and the share of step time spent waiting for data.

    cd benchmarks
    ../scripts/isolated.sh ../.venv/bin/python bench_policies.py                     # all runs
    ../scripts/isolated.sh ../.venv/bin/python bench_policies.py --runs diffusion:pick_cube:15
    ../scripts/isolated.sh ../.venv/bin/python bench_policies.py --report            # table + plot from saved runs

Each run writes results/policies/<policy>_<task>.json; the table, the combined JSON
(results/bench_policies.json) and the plot (results/bench_policies.png) come from all
saved runs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _common import RESULTS, ensure_demos, load_runs, plot_runs, print_curves, print_table, success_table, write_json

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = ["diffusion:pick_cube:15", "act:pick_cube:15", "diffusion:push:10", "act:push:10",
                "diffusion:insert:10", "act:insert:10"]
TARGETS = {("diffusion", "pick_cube"): 0.90, ("act", "pick_cube"): 0.85, ("diffusion", "push"): 0.80,
           ("act", "push"): 0.80, ("diffusion", "insert"): 0.60, ("act", "insert"): 0.60}
RUN_DIR = RESULTS / "policies"


def run_one(policy: str, task: str, minutes: float, args) -> dict:
    from robot_rl.cli.main import compose
    from robot_rl.learn.evaluate import evaluate, write_report
    from robot_rl.learn.train import train
    from robot_rl.policies.base import load_checkpoint
    data = ensure_demos(task, args.demos, Path(args.data))
    out = Path(args.runs_dir) / f"{policy}_{task}"
    overrides = [f"policy={policy}", f"dataset={data}", f"task={task}", f"max_episodes={args.demos}",
                 "steps=null", f"max_minutes={minutes}", f"out={out}", "eval_final=false",
                 f"eval_every_min={args.eval_every_min}", "eval_episodes=50", "eval_videos=0",
                 f"progress={str(not args.quiet).lower()}", f"seed={args.seed}"]
    if args.threads:
        overrides.append(f"threads={args.threads}")
    cfg = compose("train", overrides)
    summary = train(cfg)
    pol, ck = load_checkpoint(out / "checkpoints" / "last", device="cpu")
    t0 = time.perf_counter()
    res = evaluate(pol, task, ck["robot_spec"]["name"], episodes=args.episodes, seed=100_000, n_envs=8,
                   execution=ck["metadata"]["execution"], videos=2, video_dir=out / "eval_final", progress=False)
    write_report(res, out / "eval_final", title=f"{policy} {task}: {minutes:g} min training")
    row = {"policy": policy, "task": task, "demos": args.demos, "budget_min": minutes,
           "train_min": summary["train_wall_s"] / 60, "steps": summary["steps"],
           "samples_per_s": summary["samples_per_s"], "data_wait_pct": 100 * summary["data_wait_share"],
           "parameters": summary["parameters"], "execution": ck["metadata"]["execution"],
           "episodes": res.episodes, "success": res.success_rate, "ci95": list(res.ci95),
           "mean_episode_s": res.mean_episode_time_s, "eval_wall_s": time.perf_counter() - t0,
           "target": TARGETS.get((policy, task)),
           "curve": [{"train_min": e["train_s"] / 60, "step": e["step"], "success": e["eval_success"],
                      "ci95": [e["eval_ci_lo"], e["eval_ci_hi"]]} for e in summary["evals"]],
           "checkpoint": str(out / "checkpoints" / "last")}
    row["curve"].append({"train_min": row["train_min"], "step": row["steps"], "success": res.success_rate,
                         "ci95": list(res.ci95), "episodes": res.episodes})
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / f"{policy}_{task}.json").write_text(json.dumps(row, indent=2))
    print(f"{policy}/{task}: {res.summary_line()}  ({row['steps']} steps in {row['train_min']:.1f} min)")
    return row


def report() -> None:
    rows = load_runs(RUN_DIR)
    print_table(success_table(rows), ["policy", "task", "demos", "train_min", "steps", "samples_per_s", "data_wait_pct",
                                      "episodes", "success_%", "ci95_%", "target_%", "meets", "mean_episode_s"],
                "imitation policies on the twin (so101, state observations)")
    print_curves(rows, lambda r: f"{r['policy']}/{r['task']}")
    write_json("bench_policies", {"runs": rows})
    plot(rows)


def plot(rows: list[dict]) -> None:
    plot_runs(rows, "bench_policies", lambda task, runs: f"{task} ({runs[0]['demos']} demos)",
              lambda r: dict(marker="o", label=f"{r['policy']} ({r['execution']})"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=DEFAULT_RUNS, help="policy:task:minutes ...")
    ap.add_argument("--demos", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=200, help="final evaluation episodes")
    ap.add_argument("--eval-every-min", type=float, default=3.0)
    ap.add_argument("--data", default=str(ROOT / "data" / "bench"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--report", action="store_true", help="only print the table and plot from saved runs")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    if not args.report:
        for spec in args.runs:
            policy, task, minutes = spec.split(":")
            run_one(policy, task, float(minutes), args)
    report()


if __name__ == "__main__":
    main()
