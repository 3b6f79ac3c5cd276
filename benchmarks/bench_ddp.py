"""DistributedDataParallel training vs one process: the same training (policy, task,
demonstrations, global batch, steps, seed) run with ``nproc=1`` and ``nproc=2`` (two gloo
processes on this machine); the pair again with the next seed (``--seeds 2``) as the
yardstick of run-to-run noise.

Reports, per run: the final training loss (mean of the last 10% of the per-step losses,
each the loss of the global batch), samples/s of the training loop, wall time, and the
success of the final (EMA) checkpoint on ``--episodes`` held-out seeds (100000+) with a
Wilson 95% interval; then the final-loss difference nproc=2 - nproc=1 beside the
spread between the seeds, and whether each success rate lies in the other's
interval. The acceptance (first seed): the same policy quality within the 95% interval, the
final-loss difference reported; the second seed's pair shows how far two runs differ anyway.

    cd benchmarks
    ../scripts/isolated.sh ../.venv/bin/python bench_ddp.py                       # mlp_bc / push, 5000 steps, 2 seeds (~5-8 min)
    ../scripts/isolated.sh ../.venv/bin/python bench_ddp.py --policy diffusion --task pick_cube --steps 1500 --name ddp_diffusion

Writes benchmarks/results/ddp.json and benchmarks/results/ddp_loss.png (per-step loss curves overlaid, and
the success rates). On a 2-core machine nproc=2 is not expected to be faster than one
process using both cores: the point is equal quality, not speed.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

from _common import ensure_demos, print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results"  # the JSON + the loss plot (runs: --runs-dir)


def run_one(name: str, nproc: int, seed: int, data: Path, args) -> dict:
    from robot_rl.cli.common import compose
    from robot_rl.learn.evaluate import evaluate
    from robot_rl.learn.train import train
    from robot_rl.policies.base import load_checkpoint
    out = Path(args.runs_dir) / f"{args.policy}_{args.task}_{name}"
    cfg = compose("train", [f"policy={args.policy}", f"dataset={data}", f"task={args.task}",
                            f"max_episodes={args.demos}", f"steps={args.steps}", f"batch_size={args.batch}",
                            f"seed={seed}", f"nproc={nproc}", f"out={out}", "log_every=1", "save_every=0",
                            "eval_final=false", "tensorboard=false", f"progress={str(not args.quiet).lower()}"])
    if (out / "log.csv").exists():  # a fresh run, not an appended one
        (out / "log.csv").unlink()
    print(f"\n== {name}: {args.policy} on {args.task}, nproc={nproc}, batch {args.batch}, {args.steps} steps, seed {seed}")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - t0
    losses = [float(r["loss"]) for r in csv.DictReader(open(out / "log.csv")) if r["loss"]]
    tail = losses[-max(1, len(losses) // 10):]
    pol, ck = load_checkpoint(out / "checkpoints" / "last", device="cpu")
    t1 = time.perf_counter()
    res = evaluate(pol, args.task, ck["robot_spec"]["name"], episodes=args.episodes, seed=100_000, n_envs=8,
                   execution=ck["metadata"]["execution"], videos=0, progress=False)
    print(f"{name}: {res.summary_line()}")
    return {"run": name, "nproc": nproc, "seed": seed, "steps": summary["steps"], "batch_size": summary["batch_size"],
            "batch_per_rank": summary.get("ddp", {}).get("batch_size_per_rank", summary["batch_size"]),
            "threads_per_rank": summary.get("ddp", {}).get("threads_per_rank"),
            "samples": summary["samples"], "final_loss": sum(tail) / len(tail), "losses": losses,
            "samples_per_s": summary["samples_per_s"], "train_s": summary["train_wall_s"], "wall_s": wall,
            "load_avg_1min_at_start": load0, "replicas_identical": summary.get("ddp", {}).get("replicas_identical"),
            "episodes": res.episodes, "successes": res.n_successes, "success": res.success_rate,
            "ci95": list(res.ci95), "eval_wall_s": time.perf_counter() - t1,
            "checkpoint": str(out / "checkpoints" / "last")}


def plot(runs: list[dict], args, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, (a, d, b) = plt.subplots(1, 3, figsize=(17, 4.4), gridspec_kw={"width_ratios": [1.8, 1.5, 1]})
    color = {1: "C0", 2: "C3"}
    w = max(1, args.steps // 100)
    for r in runs:
        y = np.asarray(r["losses"])
        x = np.arange(1, len(y) + 1)
        ls = "-" if r["seed"] == args.seed else "--"
        a.plot(x, y, lw=0.4, alpha=0.3, color=color[r["nproc"]], ls=ls)
        if len(y) >= w:
            a.plot(x[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid"), lw=1.5, color=color[r["nproc"]], ls=ls,
                   label=f"{r['run']} (final {r['final_loss']:.4g})")
    a.set_yscale("log")
    a.set_xlabel(f"optimiser step (global batch {args.batch})")
    a.set_ylabel(f"training loss per step (thin) and its {w}-step mean")
    a.grid(alpha=0.3)
    a.legend()
    # the curves overlap: their ratio, beside the ratio of two seeds of one process
    by = {(r["nproc"], r["seed"]): np.convolve(np.asarray(r["losses"]), np.ones(w) / w, mode="valid") for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    for s_ in seeds:
        if (1, s_) in by and (2, s_) in by:
            d.plot(np.arange(w, len(by[1, s_]) + w), 100 * (by[2, s_] / by[1, s_] - 1), color="C3",
                   ls="-" if s_ == args.seed else "--", lw=1.2, label=f"nproc=2 vs nproc=1, seed {s_}")
    if len(seeds) > 1 and (1, seeds[1]) in by:
        d.plot(np.arange(w, len(by[1, seeds[0]]) + w), 100 * (by[1, seeds[1]] / by[1, seeds[0]] - 1), color="C7",
               lw=1.2, label=f"nproc=1: seed {seeds[1]} vs seed {seeds[0]}")
    d.axhline(0, color="k", lw=0.6)
    d.set_xlabel("optimiser step")
    d.set_ylabel(f"{w}-step mean loss: difference, %")
    d.grid(alpha=0.3)
    d.legend(fontsize=8)
    xs = np.arange(len(runs))
    s = np.array([100 * r["success"] for r in runs])
    err = np.array([[100 * (r["success"] - r["ci95"][0]) for r in runs], [100 * (r["ci95"][1] - r["success"]) for r in runs]])
    b.bar(xs, s, color=[color[r["nproc"]] for r in runs], alpha=0.7)
    b.errorbar(xs, s, yerr=err, fmt="none", ecolor="k", capsize=4)
    b.set_xticks(xs, [r["run"].replace("_", "\n") for r in runs])
    b.set_ylim(0, 105)
    b.set_ylabel(f"success on {args.episodes} held-out seeds, % (Wilson 95%)")
    b.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{args.policy} / {args.task}: one process vs two DDP processes (gloo), same global batch and steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def inside(p: float, ci: list[float]) -> bool:
    return ci[0] <= p <= ci[1]


def compare(runs: list[dict], seeds: list[int]) -> dict:
    """nproc=2 against nproc=1 per seed (the acceptance: the first seed), beside the
    seed-to-seed spread of each."""
    by = {(r["nproc"], r["seed"]): r for r in runs}
    one, two = by[1, seeds[0]], by[2, seeds[0]]
    c = {"final_loss_diff": two["final_loss"] - one["final_loss"],
         "final_loss_rel_diff": (two["final_loss"] - one["final_loss"]) / one["final_loss"],
         "success_diff": two["success"] - one["success"],
         "nproc2_in_nproc1_ci": inside(two["success"], one["ci95"]),
         "nproc1_in_nproc2_ci": inside(one["success"], two["ci95"]),
         "speed_ratio_nproc2_over_nproc1": two["samples_per_s"] / one["samples_per_s"]}
    c["same_quality"] = c["nproc2_in_nproc1_ci"] and c["nproc1_in_nproc2_ci"]
    if len(seeds) > 1:
        c["per_seed"] = [{"seed": s, "final_loss_rel_diff": by[2, s]["final_loss"] / by[1, s]["final_loss"] - 1,
                          "success_diff": by[2, s]["success"] - by[1, s]["success"],
                          "same_quality": inside(by[2, s]["success"], by[1, s]["ci95"])
                          and inside(by[1, s]["success"], by[2, s]["ci95"])} for s in seeds]
        for n in (1, 2):
            losses = [by[n, s]["final_loss"] for s in seeds]
            c[f"nproc{n}_seed_spread_rel"] = (max(losses) - min(losses)) / min(losses)
        for n in (1, 2):  # the seeds pooled: len(seeds) x episodes
            k = sum(by[n, s]["successes"] for s in seeds)
            e = sum(by[n, s]["episodes"] for s in seeds)
            from robot_rl.learn.evaluate import wilson_interval
            c[f"nproc{n}_pooled"] = {"successes": k, "episodes": e, "success": k / e, "ci95": list(wilson_interval(k, e))}
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="mlp_bc")
    ap.add_argument("--task", default="push")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=256, help="global batch (both runs)")
    ap.add_argument("--demos", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=100, help="held-out evaluation episodes per checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=2, help="seed, seed+1, ...: the pair per seed (the first is the "
                                                          "acceptance pair; more show the run-to-run spread)")
    ap.add_argument("--data", default=str(ROOT / "data" / "bench"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench_ddp"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--name", default="ddp", help="results/NAME.json and NAME_loss.png")
    ap.add_argument("--replot", action="store_true", help="only redraw NAME_loss.png from NAME.json")
    args = ap.parse_args()
    if args.replot:
        import json
        saved = json.loads((OUT / f"{args.name}.json").read_text())
        args.steps, args.batch, args.episodes, args.policy, args.task, args.seed = (
            saved["steps"], saved["global_batch"], saved["eval_episodes"], saved["policy"], saved["task"],
            saved["seeds"][0])
        plot(saved["runs"], args, OUT / f"{args.name}_loss.png")
        return
    t0 = time.perf_counter()
    data = ensure_demos(args.task, args.demos, Path(args.data))
    seeds = [args.seed + i for i in range(max(1, args.seeds))]
    runs = [run_one(f"nproc{n}_seed{s}", n, s, data, args) for s in seeds for n in (1, 2)]
    c = compare(runs, seeds)
    rows = [{**r, "success_%": 100 * r["success"], "ci95_%": f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]",
             "batch": f"{r['batch_size']} = {r['nproc']} x {r['batch_per_rank']}", "train_min": r["train_s"] / 60,
             "load_1min": r["load_avg_1min_at_start"]} for r in runs]
    print_table(rows, ["run", "nproc", "seed", "batch", "steps", "samples", "final_loss", "samples_per_s", "train_min",
                       "load_1min", "episodes", "success_%", "ci95_%"],
                f"{args.policy} / {args.task}: one process vs DDP (gloo, this machine: {os.cpu_count()} cores, shared)")
    print(f"\nseed {seeds[0]}: final loss (mean of the last 10% of steps) nproc=2 - nproc=1 = {c['final_loss_diff']:+.4g} "
          f"({100 * c['final_loss_rel_diff']:+.1f}%); success {100 * c['success_diff']:+.1f} points; each inside the "
          f"other's 95% interval: {'yes' if c['same_quality'] else 'NO'}")
    for p in c.get("per_seed", [])[1:]:
        print(f"seed {p['seed']}: final loss nproc=2 vs nproc=1 {100 * p['final_loss_rel_diff']:+.1f}%, success "
              f"{100 * p['success_diff']:+.1f} points, each inside the other's interval: "
              f"{'yes' if p['same_quality'] else 'NO'}")
    if len(seeds) > 1:
        print(f"seed-to-seed spread of the final loss: nproc=1 {100 * c['nproc1_seed_spread_rel']:.1f}%, nproc=2 "
              f"{100 * c['nproc2_seed_spread_rel']:.1f}%")
        for n in (1, 2):
            q = c[f"nproc{n}_pooled"]
            print(f"nproc={n}, {len(seeds)} seeds pooled: {100 * q['success']:.1f}% [{100 * q['ci95'][0]:.1f}, "
                  f"{100 * q['ci95'][1]:.1f}] ({q['successes']}/{q['episodes']})")
    print(f"samples/s: nproc=2 / nproc=1 = {c['speed_ratio_nproc2_over_nproc1']:.2f} (seed {seeds[0]}; 2 processes "
          f"on {os.cpu_count()} cores shared with other work: not expected to be faster than one process using "
          f"all of them, and the load of the machine moves these numbers)")
    plot(runs, args, OUT / f"{args.name}_loss.png")
    write_json("ddp", {"policy": args.policy, "task": args.task, "demos": args.demos, "steps": args.steps,
                       "global_batch": args.batch, "eval_episodes": args.episodes, "eval_seed": 100_000,
                       "seeds": seeds, "cores": os.cpu_count(), "wall_s": time.perf_counter() - t0, "compare": c,
                       "runs": runs, "plot": str(OUT / f"{args.name}_loss.png")}, out=str(OUT / f"{args.name}.json"))


if __name__ == "__main__":
    main()
