"""``robot-rl eval CHECKPOINT``: success rate of a policy checkpoint on held-out twin seeds,
with a JSON + PNG report and videos of the first episodes."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robot_rl.cli.record import randomization_arg
from robot_rl.learn.evaluate import EvalError
from robot_rl.spec import RobotSpec

# Mistakes in the settings raise EvalError; cmd_eval turns them into the CLI's one-line
# error (not CLIError here: under `python -m robot_rl.cli.main` that class would be a
# second copy, from the module imported a second time, which main() does not catch).


def _image_size(value, spec: RobotSpec, cameras: list[str]):
    if value is None:
        if not cameras:
            return None
        c = spec.camera(cameras[0])
        return (c.width, c.height)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise EvalError(f"image_size must be an int or [width, height], got {value!r}")
        return (int(value[0]), int(value[1]))
    return int(value)


def run_eval(checkpoint: str, cfg: DictConfig):
    """Load, evaluate, write the report. Returns (EvalResult, written files)."""
    import torch

    from robot_rl.learn.evaluate import EXECUTIONS, evaluate, write_report
    from robot_rl.policies.export import BACKENDS, load_policy
    from robot_rl.sim.tasks import TASKS

    if cfg.execution is not None and cfg.execution not in EXECUTIONS:
        raise EvalError(f"execution must be one of {', '.join(EXECUTIONS)}; got {cfg.execution!r}")
    for key in ("episodes", "n_envs"):
        if int(cfg[key]) < 1:
            raise EvalError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg.device and str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"device={cfg.device} asked for, but torch sees no CUDA device")
    if cfg.backend not in BACKENDS:
        raise EvalError(f"backend must be one of {', '.join(BACKENDS)}; got {cfg.backend!r}")

    override = None
    if cfg.get("robot") is not None:
        override = RobotSpec.from_dict(OmegaConf.to_container(cfg.robot, resolve=True))
    # a checkpoint folder (torch) or an ONNX export folder (onnxruntime, on the CPU with `threads` threads)
    policy, ck = load_policy(checkpoint, backend=str(cfg.backend), spec=override, device=cfg.device or None,
                             threads=None if cfg.threads is None else int(cfg.threads))
    if cfg.get("deployable"):
        from robot_rl.observations import privileged
        priv = privileged(policy.config.state_keys)
        if priv:
            raise EvalError(f"checkpoint {checkpoint} reads {priv}, which only the twin has (deployable=true): "
                            f"train it on a deployable observation set (policy.observations=deployable or proprio)")
    trained = RobotSpec.from_dict(ck["robot_spec"])
    spec = override or trained
    meta = ck.get("metadata") or {}

    task = cfg.task or meta.get("task")
    if not task:
        raise EvalError(f"checkpoint {checkpoint} does not name its task; pass task=<{'|'.join(sorted(TASKS))}>")
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; available: {', '.join(sorted(TASKS))}")
    action_mode = cfg.action_mode or meta.get("action_mode") or "ee_delta"
    execution = cfg.execution or meta.get("execution") or "chunk"
    if execution not in EXECUTIONS:
        raise EvalError(f"checkpoint {checkpoint} asks for execution {execution!r}; pass execution=chunk|ensemble")
    cams = [c.removeprefix("image_") for c in policy.config.cameras]
    from robot_rl.learn.evaluate import checkpoint_image_sizes
    # the size the policy sees, and for a policy trained on frames resized from the recorded
    # size, that recorded size: the twin renders it and frames are resized as in training
    image_size, camera_size = checkpoint_image_sizes(meta, trained, cams)
    if cfg.image_size is not None:
        image_size, camera_size = _image_size(cfg.image_size, trained, cams), None
    out = Path(cfg.out) if cfg.out else Path(checkpoint) / f"eval_{task}"

    result = evaluate(policy, task, spec, episodes=int(cfg.episodes), seed=int(cfg.seed),
                      n_envs=int(cfg.n_envs), execution=execution,
                      n_action_steps=None if cfg.n_action_steps is None else int(cfg.n_action_steps),
                      action_mode=action_mode, cameras=cams, image_size=image_size, camera_size=camera_size,
                      videos=int(cfg.videos), video_dir=out, render_size=int(cfg.render_size),
                      progress=bool(cfg.progress), generator_seed=int(cfg.generator_seed),
                      max_episode_steps=None if cfg.max_episode_steps is None else int(cfg.max_episode_steps),
                      torch_threads=None if cfg.threads is None else int(cfg.threads),
                      randomization=randomization_arg(cfg))
    backend = "" if policy.backend == "torch" else f", {policy.backend}"
    title = (f"{Path(checkpoint).resolve().name} ({ck.get('policy')}{backend}) on {result.robot}/{task}: "
             f"{result.summary_line()}")
    files = write_report(result, out, title=title)
    return result, files + [Path(v) for v in result.videos]
