"""``robot-rl eval``: success rate of a policy checkpoint (or an ONNX export folder) on
held-out twin seeds, with a JSON + PNG report and videos of the first episodes.

    robot-rl eval CHECKPOINT|EXPORT_DIR [task=...] [episodes=N] [execution=chunk|ensemble] [videos=N] [out=DIR]
                  [randomization=physics|FILE] [twin.<field>=VALUE ...] [sweep=robustness|FILE] [key=value ...]

``twin.<field>=VALUE`` fixes one field of the twin for every episode (any randomization
field: ``twin.geom_friction=0.5 twin.action_delay=3``); ``sweep=`` evaluates once per
perturbation size and plots success against it.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robot_rl.cli.common import CLIError
from robot_rl.cli.record import randomization_arg
from robot_rl.spec import RobotSpec

# Mistakes in the settings raise CLIError (one line, exit 2); the evaluator's own EvalError
# (robot_rl.learn.evaluate) is turned into the same by cmd_eval.


def _image_size(value, spec: RobotSpec, cameras: list[str]):
    if value is None:
        if not cameras:
            return None
        c = spec.camera(cameras[0])
        return (c.width, c.height)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise CLIError(f"image_size must be an int or [width, height], got {value!r}")
        return (int(value[0]), int(value[1]))
    return int(value)


def twin_overrides(args: list[str]) -> dict:
    """``twin.<field>=value`` tokens -> ``{field: value}`` (values parsed as YAML)."""
    import yaml
    out = {}
    for a in args:
        k, eq, v = a.partition("=")
        field = k.removeprefix("twin.")
        if not eq or not field or "." in field:
            raise CLIError(f"expected twin.<field>=value, got {a!r}")
        try:
            out[field] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise CLIError(f"{a}: the value is not a number or YAML mapping") from None
    return out


def _perturbation(cfg: DictConfig, twin: dict):
    """The fixed perturbation: ``perturb=FILE`` then the ``twin.<field>=value`` on top."""
    from robot_rl.sim.randomization import Randomization
    fixed: dict = {}
    if cfg.get("perturb"):
        import yaml
        p = Path(str(cfg.perturb))
        if not p.is_file():
            raise CLIError(f"perturb={p}: no such file")
        d = yaml.safe_load(p.read_text()) or {}
        if not isinstance(d, dict):
            raise CLIError(f"perturb={p}: expected a mapping {{field: value}}")
        fixed.update(d)
    fixed.update(twin)
    return Randomization.fixed(fixed, name="perturbation") if fixed else None


def run_eval(checkpoint: str, cfg: DictConfig, twin: dict | None = None):
    """Load, evaluate, write the report. Returns (EvalResult, written files)."""
    run, out, title = _prepare(checkpoint, cfg)
    result = run(_perturbation(cfg, twin or {}), out, int(cfg.episodes), int(cfg.videos))
    files = _write(result, out, title)
    return result, files + [Path(v) for v in result.videos]


def _write(result, out: Path, title: str) -> list[Path]:
    from robot_rl.learn.evaluate import write_report
    return write_report(result, out, title=f"{title}: {result.summary_line()}")


def run_sweep(checkpoint: str, cfg: DictConfig, twin: dict | None = None, episodes: int | None = None):
    """``sweep=FILE``: one evaluation per factor value (plus the fixed perturbation and the
    randomization, if given, under all of them); sweep.json + sweep.png in out."""
    from robot_rl.learn.robustness import Sweep, run_sweep as sweep_points, write_sweep
    sweep = Sweep.load(str(cfg.sweep))
    run, out, title = _prepare(checkpoint, cfg)
    base = _perturbation(cfg, twin or {})
    episodes = episodes or sweep.episodes or int(cfg.episodes)  # per point: episodes= given, else the file's
    out = out.parent / "sweep" if out.name.startswith("eval_") else out

    def at(perturbation, label):
        r = run(perturbation + base if perturbation is not None else base, out / label.replace("=", "_"),
                episodes, 0)
        print(f"  {label}: {r.summary_line()}", flush=True)
        return r

    res = sweep_points(sweep, at)
    res["episodes"] = episodes  # per point, as run
    files = write_sweep(res, out, Path(checkpoint).resolve().name, title=title)
    lines = [f"{f}: " + ", ".join(f"{v:g} {100 * s:.0f}%" for v, s in zip(r["values"], r["success"]))
             for f, r in res["factors"].items()]
    return "\n".join(lines), files


def _prepare(checkpoint: str, cfg: DictConfig):
    """Load the policy; returns (run(perturbation, out, episodes, videos) -> EvalResult, out, title)."""
    import torch

    from robot_rl.learn.evaluate import EXECUTIONS, evaluate
    from robot_rl.policies.export import BACKENDS, load_policy
    from robot_rl.sim.tasks import TASKS

    if cfg.execution is not None and cfg.execution not in EXECUTIONS:
        raise CLIError(f"execution must be one of {', '.join(EXECUTIONS)}; got {cfg.execution!r}")
    for key in ("episodes", "n_envs"):
        if int(cfg[key]) < 1:
            raise CLIError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg.device and str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"device={cfg.device} asked for, but torch sees no CUDA device")
    # backend=isaac: the Isaac Lab twin (sim/isaac) runs the episodes, the policy runs in torch
    sim = "isaac" if cfg.backend == "isaac" else "mujoco"
    policy_backend = "torch" if sim == "isaac" else str(cfg.backend)
    if policy_backend not in BACKENDS:
        raise CLIError(f"backend must be one of {', '.join(BACKENDS)} or isaac; got {cfg.backend!r}")

    override = None
    if cfg.get("robot") is not None:
        override = RobotSpec.from_dict(OmegaConf.to_container(cfg.robot, resolve=True))
    # a checkpoint folder (torch) or an ONNX export folder (onnxruntime, on the CPU with `threads` threads)
    policy, ck = load_policy(checkpoint, backend=policy_backend, spec=override, device=cfg.device or None,
                             threads=None if cfg.threads is None else int(cfg.threads))
    if cfg.get("deployable"):
        from robot_rl.observations import privileged
        priv = privileged(policy.config.state_keys)
        if priv:
            raise CLIError(f"checkpoint {checkpoint} reads {priv}, which only the twin has (deployable=true): "
                            f"train it on a deployable observation set (policy.observations=deployable or proprio)")
    trained = RobotSpec.from_dict(ck["robot_spec"])
    spec = override or trained
    meta = ck.get("metadata") or {}

    task = cfg.task or meta.get("task")
    if not task:
        raise CLIError(f"checkpoint {checkpoint} does not name its task; pass task=<{'|'.join(sorted(TASKS))}>")
    if task not in TASKS:
        raise CLIError(f"unknown task {task!r}; available: {', '.join(sorted(TASKS))}")
    action_mode = cfg.action_mode or meta.get("action_mode") or "ee_delta"
    execution = cfg.execution or meta.get("execution") or "chunk"
    if execution not in EXECUTIONS:
        raise CLIError(f"checkpoint {checkpoint} asks for execution {execution!r}; pass execution=chunk|ensemble")
    cams = [c.removeprefix("image_") for c in policy.config.cameras]
    from robot_rl.learn.evaluate import checkpoint_image_sizes
    # the size the policy sees, and for a policy trained on frames resized from the recorded
    # size, that recorded size: the twin renders it and frames are resized as in training
    image_size, camera_size = checkpoint_image_sizes(meta, trained, cams)
    if cfg.image_size is not None:
        image_size, camera_size = _image_size(cfg.image_size, trained, cams), None
    out = Path(cfg.out) if cfg.out else Path(checkpoint) / f"eval_{task}"
    from robot_rl.sim.randomization import Randomization
    rand = randomization_arg(cfg)
    rand = Randomization.load(rand) if rand is not None else None

    def run(perturbation, where: Path, episodes: int, videos: int):
        r = rand + perturbation if rand is not None else perturbation
        return evaluate(policy, task, spec, episodes=episodes, seed=int(cfg.seed),
                        n_envs=int(cfg.n_envs), execution=execution,
                        n_action_steps=None if cfg.n_action_steps is None else int(cfg.n_action_steps),
                        action_mode=action_mode, cameras=cams, image_size=image_size, camera_size=camera_size,
                        videos=videos, video_dir=where, render_size=int(cfg.render_size),
                        progress=bool(cfg.progress), generator_seed=int(cfg.generator_seed),
                        max_episode_steps=None if cfg.max_episode_steps is None else int(cfg.max_episode_steps),
                        torch_threads=None if cfg.threads is None else int(cfg.threads), randomization=r,
                        calibration=cfg.get("calibration"), sim=sim)

    backend = "" if policy.backend == "torch" else f", {policy.backend}"
    backend += ", Isaac Lab twin" if sim == "isaac" else ""
    title = f"{Path(checkpoint).resolve().name} ({ck.get('policy')}{backend}) on {spec.name}/{task}"
    return run, out, title
