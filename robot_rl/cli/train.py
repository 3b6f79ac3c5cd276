"""``robot-rl train policy=diffusion|act|mlp_bc dataset=PATH [task=...] [nproc=N] [key=value ...]``.

``nproc=N`` trains with N local processes (DistributedDataParallel); under torchrun
(``torchrun --nproc-per-node=N -m robot_rl.cli.main train ...``) every process runs this
command and rank 0 reports."""
from __future__ import annotations

from pathlib import Path


def cmd_train(args: list[str]) -> int:
    from robot_rl.cli.common import CLIError, compose
    from robot_rl.learn.train import TrainError, train
    bad = [a for a in args if "=" not in a]
    if bad:
        raise CLIError(f"expected key=value, got {bad[0]!r} (the dataset is dataset=PATH)")
    if not any(a.startswith("dataset=") for a in args):
        raise CLIError("'train' needs an episode store: robot-rl train policy=diffusion dataset=PATH")
    cfg = compose("train", args)
    if not Path(cfg.dataset).exists():
        raise CLIError(f"no episode store at {cfg.dataset}")
    if cfg.out is None:
        from omegaconf import open_dict
        from robot_rl.data.store import EpisodeStore
        with EpisodeStore.open(cfg.dataset) as st:
            tasks = sorted({m["task"] for m in st.episodes_meta()})
        with open_dict(cfg):
            cfg.out = f"runs/{cfg.policy.name}_{cfg.task or '_'.join(tasks)}"
    try:
        summary = train(cfg)
    except TrainError as e:
        raise CLIError(str(e)) from None
    if summary.get("rank", 0) != 0:  # one of several torchrun processes: rank 0 reports
        return 0
    print(f"trained {summary['policy']} on {summary['task']}: {summary['steps']} steps in "
          f"{summary['train_wall_s'] / 60:.1f} min ({summary['samples_per_s']:.0f} samples/s, "
          f"data wait {100 * summary['data_wait_share']:.1f}% of step time)")
    if summary.get("final_eval"):
        e = summary["final_eval"]
        print(f"eval: success {100 * e['eval_success']:.1f}% [{100 * e['eval_ci_lo']:.1f}, {100 * e['eval_ci_hi']:.1f}]")
    print(f"checkpoint {summary['checkpoint']}")
    return 0
