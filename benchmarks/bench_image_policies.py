"""Camera-only policies on the twin: image diffusion and image ACT trained on this CPU from
the two 96x96 cameras (front + wrist) plus proprioception (the ``deployable`` observation
set: joints, gripper, EE pose; no object state), evaluated on 200 held-out seeds.

For every run (policy x task x minutes): records ``--demos`` scripted-expert demonstrations
with both cameras if the store is missing (``robot-rl record sim ... cameras=[front,wrist]``),
trains with ``robot-rl train``'s code path under ``max_minutes`` of training time (periodic
50-episode evaluations every ``--eval-every-min`` minutes are not counted: the curve of success
vs training time), then evaluates the final EMA checkpoint through ``robot-rl eval``'s code
path (``deployable=true``: refuses a checkpoint that reads privileged keys) on ``--episodes``
held-out seeds (100000+). A state policy with the privileged object state, trained on the
same demonstrations (``--state-minutes``), is reported next to each row.

    cd benchmarks
    ../scripts/isolated.sh ../.venv/bin/python bench_image_policies.py --runs diffusion:pick_cube:30
    ../scripts/isolated.sh ../.venv/bin/python bench_image_policies.py --runs act:pick_cube:30 diffusion:push:30
    ../scripts/isolated.sh ../.venv/bin/python bench_image_policies.py --report    # table + plot

The image recipe (the ``policy=diffusion_image`` / ``act_image`` presets; every lever is a
``robot-rl train`` override) can be changed per run with ``--set key=value ...`` and a ``--tag`` to keep the run apart (the
lever studies in docs/benchmarks.md). Each run writes results/image_policies/<name>.json;
the table, results/bench_image_policies.json and results/bench_image_policies.png come from
all saved runs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _common import RESULTS, load_runs, plot_runs, print_curves, print_table, success_table, write_json

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {("diffusion", "pick_cube"): 0.80, ("act", "pick_cube"): 0.75, ("diffusion", "push"): 0.60}
RUN_DIR = RESULTS / "image_policies"
# the CPU recipe is the policy presets policy=diffusion_image / act_image
# (robot_rl/conf/policy/*_image.yaml): frames resized 96 -> 64 once and held in RAM, random
# crop 56, a narrow per-camera ResNet with spatial-softmax keypoints, the deployable
# observation set, batch 64
IMAGE_PRESET = {"diffusion": "diffusion_image", "act": "act_image"}


def ensure_demos(task: str, n: int, data_dir: Path) -> Path:
    path = data_dir / f"so101_{task}_cameras.zarr"
    have = 0
    if path.exists():
        from robot_rl.data.store import EpisodeStore
        with EpisodeStore.open(path) as st:
            have = st.n_episodes
    if have < n:
        from robot_rl.cli.main import main
        rc = main(["record", "sim", f"task={task}", f"episodes={n - have}", "cameras=[front,wrist]", "image_size=96",
                   f"out={path}", "progress=false"])
        if rc:
            raise SystemExit(f"recording {task} demos failed")
    return path


def _eval(checkpoint: Path, episodes: int, out: Path, deployable: bool):
    from robot_rl.cli.eval import run_eval
    from robot_rl.cli.main import compose
    cfg = compose("eval", [f"episodes={episodes}", "seed=100000", "n_envs=8", "videos=2", f"out={out}",
                           "progress=false", f"deployable={str(deployable).lower()}"])
    t0 = time.perf_counter()
    res, _ = run_eval(str(checkpoint), cfg)
    return res, time.perf_counter() - t0


def _train(overrides: list[str]) -> dict:
    from robot_rl.cli.main import compose
    from robot_rl.learn.train import train
    return train(compose("train", overrides))


def run_one(policy: str, task: str, minutes: float, args, image: bool = True) -> dict:
    data = ensure_demos(task, args.demos, Path(args.data))
    name = f"{policy}_{task}" + ("" if image else "_state") + (f"_{args.tag}" if args.tag else "")
    out = Path(args.runs_dir) / name
    overrides = [f"policy={IMAGE_PRESET[policy] if image else policy}", f"dataset={data}", f"task={task}",
                 f"max_episodes={args.demos}",
                 "steps=null", f"max_minutes={minutes}", f"out={out}", "eval_final=false",
                 f"eval_every_min={args.eval_every_min}", "eval_episodes=50", "eval_videos=0",
                 f"progress={str(not args.quiet).lower()}", f"seed={args.seed}"]
    if image:
        overrides += list(args.set or [])
    else:
        overrides += ["policy.observations=privileged", "policy.cameras=[]"]
    if args.threads:
        overrides.append(f"threads={args.threads}")
    done = out / "summary.json"
    if args.reuse and done.exists() and (out / "checkpoints" / "last").exists():
        summary = json.loads(done.read_text())  # a finished training run: evaluate it again
        print(f"{name}: reusing the training run in {out}", flush=True)
    else:
        summary = _train(overrides)
    res, eval_s = _eval(out / "checkpoints" / "last", args.episodes, out / "eval_final", deployable=image)
    row = {"name": name, "policy": policy, "task": task, "observations": "deployable + cameras" if image else
           "privileged state", "demos": args.demos, "budget_min": minutes,
           "overrides": [f"policy={IMAGE_PRESET[policy]}", *(args.set or [])] if image else
           [f"policy={policy}", "policy.observations=privileged"],
           "train_min": summary["train_wall_s"] / 60, "steps": summary["steps"],
           "samples_per_s": summary["samples_per_s"], "data_wait_pct": 100 * summary["data_wait_share"],
           "parameters": summary["parameters"], "episodes": res.episodes, "success": res.success_rate,
           "ci95": list(res.ci95), "mean_episode_s": res.mean_episode_time_s, "eval_wall_s": eval_s,
           "target": TARGETS.get((policy, task)) if image and not args.tag else None,
           "curve": [{"train_min": e["train_s"] / 60, "step": e["step"], "success": e["eval_success"],
                      "ci95": [e["eval_ci_lo"], e["eval_ci_hi"]]} for e in summary["evals"]],
           "checkpoint": str(out / "checkpoints" / "last"), "cpu": os.cpu_count()}
    row["curve"].append({"train_min": row["train_min"], "step": row["steps"], "success": res.success_rate,
                         "ci95": list(res.ci95), "episodes": res.episodes})
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / f"{name}.json").write_text(json.dumps(row, indent=2))
    print(f"{name}: {res.summary_line()}  ({row['steps']} steps in {row['train_min']:.1f} min)", flush=True)
    return row


def report() -> None:
    rows = load_runs(RUN_DIR, "name")
    print_table(success_table(rows), ["name", "observations", "demos", "train_min", "steps", "samples_per_s", "episodes",
                                      "success_%", "ci95_%", "target_%", "meets", "mean_episode_s"],
                "camera-only policies on the twin (so101, two 96x96 cameras)")
    print_curves(rows, lambda r: r["name"])
    write_json("bench_image_policies", {"runs": rows})
    plot(rows)


def plot(rows: list[dict]) -> None:
    def style(r):
        cam = "camera" in r["observations"]
        return dict(marker="o" if cam else "s", ls="-" if cam else ":", label=r["name"])
    plot_runs(rows, "bench_image_policies", lambda task, runs: f"so101 {task}: success vs CPU training time", style,
              width=5.5, xlabel="training time on this 2-core CPU (min)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=["diffusion:pick_cube:30"], help="policy:task:minutes ...")
    ap.add_argument("--state-minutes", type=float, default=5.0,
                    help="training budget of the privileged-state policy reported next to each row (0: skip)")
    ap.add_argument("--demos", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=200, help="final evaluation episodes")
    ap.add_argument("--eval-every-min", type=float, default=5.0)
    ap.add_argument("--data", default=str(ROOT / "data" / "bench"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench_image"))
    ap.add_argument("--set", nargs="*", help="extra robot-rl train overrides for the image runs (a lever study)")
    ap.add_argument("--tag", default="", help="suffix of the run name (lever studies)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="runs whose training finished (summary.json): only the final evaluation again")
    ap.add_argument("--report", action="store_true", help="only print the table and plot from saved runs")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    if not args.report:
        for spec in args.runs:
            policy, task, minutes = spec.split(":")
            run_one(policy, task, float(minutes), args, image=True)
            state = RUN_DIR / f"{policy}_{task}_state.json"
            if args.state_minutes > 0 and not state.exists():
                run_one(policy, task, args.state_minutes, argparse.Namespace(**{**vars(args), "set": None, "tag": ""}),
                        image=False)
    report()


if __name__ == "__main__":
    main()
