"""``robot-rl rl``: online reinforcement learning (SAC with the RLPD recipe) on the twin.

    robot-rl rl task=pick_cube [demos=PATH] [hil=true] [env_steps=30000] [out=DIR] [key=value ...]
    robot-rl rl task=pick_cube steer.checkpoint=CKPT [demos=PATH] [key=value ...]

Starts from demonstrations (half of every batch, optionally IQL pretraining on them), a
simulated human who takes over when the policy drifts (``hil=true``), or nothing; with
``steer.checkpoint`` it fine-tunes a diffusion checkpoint in its noise space instead of
training an actor from scratch. Curves go to ``OUT/curve.{csv,png}``, the learner to
``OUT/learner.safetensors``; ``resume=true`` continues a run.
"""
from __future__ import annotations

from pathlib import Path


def cmd_rl(args: list[str]) -> int:
    from robot_rl.cli.common import CLIError, cfg_to_dict, compose
    from robot_rl.rl.replay import ReplayError
    from robot_rl.rl.sac import CheckpointError

    bad = [a for a in args if "=" not in a]
    if bad:
        raise CLIError(f"expected key=value, got {bad[0]!r}")
    d = cfg_to_dict(compose("rl", args))
    d["robot"] = d["robot"]["name"]  # the robot config group: the twin is built from the spec's name
    if d["out"] is None:
        d["out"] = f"runs/rl_{d['task']}"
    for what, path in (("demos", d["demos"]), ("steer.checkpoint", d["steer"]["checkpoint"])):
        if path is not None and not Path(path).exists():
            raise CLIError(f"{what}: no such path {path}")
    from robot_rl.rl.loop import RLConfig, run_online

    try:
        cfg = RLConfig.from_dict(d)
        s = run_online(cfg, on_eval=lambda r: print(
            f"  {int(r['env_steps']):>7} steps  {r['wall_s'] / 60:5.1f} min  success {100 * r['success']:5.1f}%  "
            f"return {r['return']:.2f}  interventions {100 * r['intervention_rate']:.1f}%", flush=True))
    except (ValueError, ReplayError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    reached = f"90% at {s['steps_to_90']} env steps" if s["steps_to_90"] is not None else "90% not reached"
    base = f" (base policy {100 * s['base_success']:.0f}%)" if "base_success" in s else ""
    print(f"rl {cfg.task}: {s['env_steps']} env steps, final success {100 * s['final_success']:.0f}%{base}, "
          f"{reached}; curves {Path(cfg.out) / 'curve.png'}, checkpoint {Path(cfg.out) / 'learner.safetensors'}")
    return 0
