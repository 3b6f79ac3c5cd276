"""``robot-rl`` command line.

    robot-rl record sim robot=so101 task=pick_cube episodes=50 out=data/pick.zarr
    robot-rl info PATH [json=true]
    robot-rl view PATH episode=N [format=gif]

Settings are hydra configs under ``robot_rl/conf`` (``key=value`` overrides, config
groups such as ``robot=arm6``); a wrong key is one clear error, not a traceback.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from robot_rl.cli.common import CLIError, cfg_to_dict, compose, path_arg  # noqa: F401  (CLIError, compose, cfg_to_dict: re-exported)
from robot_rl.cli.common import HELP_FLAGS, doc_usage, format_help, module_doc, render_settings

USAGE = """usage: robot-rl <command> [args] [key=value ...]
       robot-rl <command> --help     a command's usage, what it does and its settings with their defaults
       robot-rl --version

commands:
  record sim [key=value ...]   record scripted-expert demonstrations on the MuJoCo twin
                               (backend=isaac num_envs=N: on the Isaac Lab twin, N worlds; `make isaac` first)
  info PATH [json=true]        episodes, steps, success rate and sizes of an episode store
  view PATH [episode=N ...]    render an episode to mp4/gif and a PNG contact sheet
  convert SRC DST [key=value]  rosbag2 -> episode store, or episode store -> rosbag2 (mcap/sqlite3)
  export-lerobot STORE OUT_DIR [repo_id=local/NAME] [robot=...] [video=true|false] [calibration=FILE]
                               an episode store as a LeRobotDataset v3.0
  import-lerobot DIR OUT.zarr robot=R [calibration=FILE]
                               a LeRobotDataset v3.0 into an episode store
  launch GRAPH [key=value ...] start a ROS 2 node graph (teleop_record, replay, sim, deploy, ...) and supervise it
  train policy=P dataset=PATH  train a policy (diffusion | act | mlp_bc) on an episode store
                               (nproc=N: N processes, data-parallel)
  eval CHECKPOINT [key=value]  success rate of a policy on held-out twin seeds (+ report, videos)
  export CHECKPOINT format=onnx [out=DIR]
                               a checkpoint's networks as ONNX + a manifest (run with backend=onnxruntime)
  bench inference CHECKPOINT   samplers and execution modes: latency, success vs delay, jitter
  rl task=T [demos=PATH ...]   online RL (SAC/RLPD) on the twin: demos, simulated human, offline-to-online,
                               noise-space fine-tuning of a diffusion checkpoint (steer.checkpoint=...)
  reward-classifier train store=PATH cameras=[front] out=DIR
                               train an image success classifier (a learned reward) on an episode store
  virtual camera [--fps F ...] serve a twin (or synthetic) camera as HTTP MJPEG on loopback
  virtual so101 [unit=FILE]    an SO-101 on this machine: follower + leader servo buses on pseudo-terminals,
                               the twin's physics, two cameras, a scripted person (docs/hardware.md)
  find-port [--list]           find a servo-bus arm's serial port (unplug it when asked)
  setup-motors robot=R port=P  give each servo of an arm its id and baud rate, one motor at a time
  calibrate robot=R port=P id=NAME
                               calibrate an arm (ticks <-> joint angles); import_lerobot= / export_lerobot=
  calibrate board|camera|handeye [key=value ...]
                               a printable ChArUco board; camera intrinsics; hand-eye (docs/sim2real.md)
  sysid excite|fit|randomization [key=value ...]
                               excite an arm and record it; fit the twin's dynamics to it (dynamics.yaml);
                               a randomization centred on the fit

examples:
  robot-rl record sim robot=so101 task=pick_cube episodes=50 out=data/pick.zarr
  robot-rl info data/pick.zarr
  robot-rl view data/pick.zarr episode=3 format=gif
  robot-rl train policy=diffusion dataset=data/pick.zarr max_minutes=15 out=runs/pick_dp
  robot-rl train policy=diffusion dataset=data/pick.zarr nproc=2 out=runs/pick_dp_ddp
  robot-rl eval runs/pick_dp/checkpoints/last episodes=200 videos=4
  robot-rl export runs/pick_dp/checkpoints/last format=onnx out=runs/pick_dp/onnx
  robot-rl bench inference runs/pick_dp/checkpoints/last task=pick_cube
  robot-rl rl task=pick_cube demos=data/pick.zarr hil=true env_steps=30000 out=runs/rl_pick
  robot-rl record sim backend=isaac num_envs=64 task=pick_cube cameras=[] episodes=200 out=data/pick_isaac.zarr
  robot-rl export-lerobot data/pick.zarr out/pick_lerobot repo_id=local/pick
  robot-rl import-lerobot out/pick_lerobot data/pick_back.zarr robot=so101
  robot-rl sysid fit --help
"""


def cmd_record(args: list[str]) -> int:
    if not args or args[0] != "sim":
        raise CLIError("'record' needs a source: 'robot-rl record sim ...' (the ROS 2 recorder "
                       "arrives with the ROS layer)")
    from robot_rl.cli.record import record_sim
    cfg = compose("record", args[1:])
    try:
        summary = record_sim(cfg, cameras_given=any(a.startswith("cameras=") for a in args[1:]))
    except ValueError as e:
        raise CLIError(str(e)) from None
    from robot_rl.cli.info import print_summary
    print_summary(summary)
    return 0


def cmd_info(args: list[str]) -> int:
    path, rest = path_arg(args, "info")
    cfg = compose("info", rest)
    from robot_rl.cli.info import info
    info(path, as_json=bool(cfg.json))
    return 0


def cmd_view(args: list[str]) -> int:
    path, rest = path_arg(args, "view")
    cfg = compose("view", rest)
    from robot_rl.cli.view import view
    for f in view(path, cfg):
        print(f"wrote {f}")
    return 0


def cmd_convert(args: list[str]) -> int:
    from robot_rl.cli.convert import cmd_convert as run
    return run(args)


LAUNCH_USAGE = "robot-rl launch GRAPH [key=value ...]"


def _graphs_text(name: str | None = None) -> str:
    """The node graphs (or one of them) with their parameters and defaults."""
    from robot_rl.ros.graphs import GRAPHS
    if name is not None:
        g = GRAPHS[name]
        return f"graph {g.name}: {g.description}\n\nsettings (key=value):\n" + "\n".join(
            f"  {k}={v!r}" for k, v in g.params.items())
    return "graphs (robot-rl launch GRAPH --help: its settings):\n" + "\n".join(
        f"  {g.name:<14} {g.description}\n{'':<16} params: " + " ".join(f"{k}={v!r}" for k, v in g.params.items())
        for g in GRAPHS.values())


def cmd_launch(args: list[str]) -> int:
    if not args or "=" in args[0]:
        raise CLIError(f"'launch' needs a graph: {LAUNCH_USAGE}\n{_graphs_text()}")
    bad = [a for a in args[1:] if "=" not in a]
    if bad:
        raise CLIError(f"expected key=value, got {bad[0]!r}")
    overrides = dict(a.split("=", 1) for a in args[1:])
    from robot_rl.ros.launcher import launch
    try:
        return launch(args[0], overrides)
    except KeyError as e:
        raise CLIError(str(e).strip("\"'")) from None


def cmd_train(args: list[str]) -> int:
    from robot_rl.cli.train import cmd_train as run
    return run(args)


def cmd_eval(args: list[str]) -> int:
    if not args or "=" in args[0]:
        raise CLIError("'eval' needs a checkpoint folder: robot-rl eval CHECKPOINT [key=value ...]")
    # fixed perturbations twin.<field>=value (any randomization field): kept out of hydra
    twin = [a for a in args[1:] if a.startswith("twin.")]
    cfg = compose("eval", [a for a in args[1:] if a not in twin])
    from robot_rl.cli.eval import run_eval, run_sweep, twin_overrides
    from robot_rl.learn.evaluate import EvalError
    try:
        perturb = twin_overrides(twin)
        if cfg.sweep:
            given = any(a.startswith("episodes=") for a in args[1:])
            result, files = run_sweep(args[0], cfg, perturb, episodes=int(cfg.episodes) if given else None)
        else:
            result, files = run_eval(args[0], cfg, perturb)
    except EvalError as e:
        raise CLIError(str(e)) from None
    print(result if isinstance(result, str) else result.summary_line())
    for f in files:
        print(f"wrote {f}")
    return 0


def cmd_export(args: list[str]) -> int:
    from robot_rl.cli.export import cmd_export as run
    return run(args)


def cmd_rl(args: list[str]) -> int:
    from robot_rl.cli.rl import cmd_rl as run
    return run(args)


def cmd_export_lerobot(args: list[str]) -> int:
    from robot_rl.cli.lerobot import cmd_export_lerobot as run
    return run(args)


def cmd_import_lerobot(args: list[str]) -> int:
    from robot_rl.cli.lerobot import cmd_import_lerobot as run
    return run(args)


def cmd_reward_classifier(args: list[str]) -> int:
    from robot_rl.cli.reward_classifier import cmd_reward_classifier as run
    return run(args)


def cmd_virtual(args: list[str]) -> int:
    from robot_rl.cli.virtual import cmd_virtual as run
    return run(args)


def cmd_motors(name: str) -> Callable[[list[str]], int]:
    def run(args: list[str]) -> int:
        from robot_rl.cli import motors
        return getattr(motors, name)(args)
    return run


CAMERA_CALIBRATION = ("board", "camera", "handeye")


def cmd_calibrate(args: list[str]) -> int:
    """`calibrate board|camera|handeye ...` (cameras, calibration/cameras.py); otherwise an arm's motors."""
    if args and args[0] in CAMERA_CALIBRATION:
        from robot_rl.cli import camera_calib
        return getattr(camera_calib, f"cmd_{args[0]}")(args[1:])
    return cmd_motors("cmd_calibrate")(args)


def cmd_sysid(args: list[str]) -> int:
    """`sysid excite ...` / `sysid fit DATA ...`: system identification (calibration/sysid.py)."""
    from robot_rl.cli import sysid
    return sysid.main(args)


def cmd_bench(args: list[str]) -> int:
    if not args or args[0] != "inference" or len(args) < 2 or "=" in args[1]:
        raise CLIError("usage: robot-rl bench inference CHECKPOINT [task=...] [key=value ...]")
    cfg = compose("bench_inference", args[2:])
    from robot_rl.runtime.bench import BenchError, run_bench
    from robot_rl.runtime.executor import ExecutorError
    from robot_rl.runtime.samplers import SamplerError
    try:
        run_bench(args[1], cfg.task, episodes=int(cfg.episodes), delays=[int(d) for d in cfg.delays],
                  queries=int(cfg.queries), replan_every=int(cfg.replan_every), seed=int(cfg.seed),
                  n_envs=int(cfg.n_envs), sections=list(cfg.sections), out=cfg.out,
                  loop_seconds=float(cfg.loop_seconds), loop_rate=float(cfg.loop_rate), progress=bool(cfg.progress),
                  backend=str(cfg.backend))
    except (BenchError, SamplerError, ExecutorError) as e:
        raise CLIError(str(e)) from None
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "bench": cmd_bench, "record": cmd_record, "info": cmd_info, "view": cmd_view, "convert": cmd_convert,
    "export-lerobot": cmd_export_lerobot, "import-lerobot": cmd_import_lerobot, "launch": cmd_launch,
    "train": cmd_train, "eval": cmd_eval, "export": cmd_export, "rl": cmd_rl,
    "reward-classifier": cmd_reward_classifier, "virtual": cmd_virtual, "find-port": cmd_motors("cmd_find_port"),
    "setup-motors": cmd_motors("cmd_setup_motors"), "calibrate": cmd_calibrate, "sysid": cmd_sysid}


# -- --help ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Help:
    """Where a command's help comes from (never imported to print it): the usage lines and
    the description from ``module``'s docstring (its ``robot-rl <prefix> ...`` lines), the
    settings from the hydra config ``config``; or the argparse parser ``parser``
    (``"module:function"``) of a command that parses flags."""
    module: str = ""
    config: str | None = None
    prefix: str | None = None
    parser: str | None = None


HELP: dict[str, Help] = {
    "record": Help("robot_rl.cli.record", "record", prefix="robot-rl record sim"),
    "info": Help("robot_rl.cli.info", "info"),
    "view": Help("robot_rl.cli.view", "view"),
    "convert": Help("robot_rl.cli.convert"),
    "export-lerobot": Help("robot_rl.cli.lerobot", "export_lerobot"),
    "import-lerobot": Help("robot_rl.cli.lerobot", "import_lerobot"),
    "launch": Help("robot_rl.ros.launcher"),
    "train": Help("robot_rl.cli.train", "train"),
    "eval": Help("robot_rl.cli.eval", "eval"),
    "export": Help("robot_rl.cli.export", "export"),
    "bench": Help("robot_rl.runtime.bench", "bench_inference", prefix="robot-rl bench inference"),
    "rl": Help("robot_rl.cli.rl", "rl"),
    "reward-classifier": Help("robot_rl.cli.reward_classifier", prefix="robot-rl reward-classifier train"),
    "virtual": Help("robot_rl.cli.virtual"),
    "find-port": Help("robot_rl.cli.motors"),
    "setup-motors": Help("robot_rl.cli.motors"),
    "calibrate": Help("robot_rl.cli.motors"),
    "sysid": Help("robot_rl.cli.sysid"),
}
SUBCOMMANDS: dict[str, dict[str, Help]] = {
    "record": {"sim": HELP["record"]},
    "bench": {"inference": HELP["bench"]},
    "reward-classifier": {"train": HELP["reward-classifier"]},
    "virtual": {"camera": Help(parser="robot_rl.cli.virtual:_camera_parser"),
                "so101": Help(parser="robot_rl.cli.virtual:_so101_parser")},
    "calibrate": {k: Help("robot_rl.cli.camera_calib", prefix=f"robot-rl calibrate {k}") for k in
                  ("board", "camera", "handeye")},
    "sysid": {k: Help("robot_rl.cli.sysid") for k in ("excite", "fit", "randomization")},
}


def help_requested(cmd: str, args: list[str]) -> bool:
    """``-h`` / ``--help`` anywhere in a command's arguments, or ``help`` as its first word or
    after a subcommand (``robot-rl sysid help``, ``robot-rl sysid fit help``)."""
    return any(a in HELP_FLAGS for a in args) or args[:1] == ["help"] or \
        (args[1:2] == ["help"] and args[0] in SUBCOMMANDS.get(cmd, {}))


def _summary(cmd: str) -> tuple[str, str]:
    """(synopsis, one-line description) of a command in USAGE's list of commands."""
    import re
    lines = USAGE.split("commands:", 1)[1].split("examples:", 1)[0].splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"  {cmd} ") or line.strip() == cmd:
            synopsis, summary = (re.split(r"\s{2,}", line.strip(), maxsplit=1) + [""])[:2]
            if not summary and i + 1 < len(lines):
                summary = lines[i + 1].strip()
            return f"robot-rl {synopsis}", summary
    return f"robot-rl {cmd}", ""


def command_help(cmd: str, args: list[str]) -> str:
    """The text of ``robot-rl <cmd> [SUB] --help``: usage, description, settings."""
    words = [a for a in args if a not in HELP_FLAGS and a != "help" and "=" not in a]
    sub = words[0] if words and words[0] in SUBCOMMANDS.get(cmd, {}) else None
    h = SUBCOMMANDS[cmd][sub] if sub else HELP[cmd]
    if h.parser:
        import importlib
        mod, fn = h.parser.split(":")
        return getattr(importlib.import_module(mod), fn)().format_help()
    doc = module_doc(h.module)
    if doc is None:
        raise CLIError(f"'{cmd}' is not available in this installation ({h.module} is missing)")
    prefix = h.prefix or " ".join(["robot-rl", cmd] + ([sub] if sub else []))
    usage, desc = doc_usage(doc, prefix)
    synopsis, summary = _summary(cmd)
    settings = render_settings(h.config) if h.config else ""
    if cmd == "launch":
        usage = [LAUNCH_USAGE] + usage
        from robot_rl.ros.graphs import GRAPHS
        settings = _graphs_text(words[0] if words and words[0] in GRAPHS else None)
    if cmd in SUBCOMMANDS and not sub and len(SUBCOMMANDS[cmd]) > 1:
        subs = "|".join(SUBCOMMANDS[cmd])
        settings = "\n".join(filter(None, [settings, f"robot-rl {cmd} {{{subs}}} --help: one of them in detail"]))
    return format_help(usage or [synopsis], desc or summary[:1].upper() + summary[1:], settings)


def version() -> str:
    """``robot-rl <version>``: the installed distribution's (robot_rl.__version__ falls back on
    the source tree's pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return f"robot-rl {dist_version('robot-rl')}"
    except PackageNotFoundError:
        import robot_rl
        return f"robot-rl {robot_rl.__version__}"


ISAAC_COMMANDS = ("record", "eval", "rl")


def _in_isaac_venv(cmd: str, rest: list[str]) -> int | None:
    """``backend=isaac`` from the core venv: run the same command in the Isaac venv (Python
    3.12, Isaac Lab; ``make isaac``) as a child process and return its exit code. None when
    this process runs the command itself."""
    if cmd not in ISAAC_COMMANDS or "backend=isaac" not in rest:
        return None
    from robot_rl.sim import isaac
    if isaac.in_isaac_runtime():
        return None
    try:
        argv = isaac.reexec_argv([cmd, *rest])
    except isaac.IsaacUnavailable as e:
        raise CLIError(str(e)) from None
    import subprocess
    print(f"robot-rl {cmd}: backend=isaac, running in the Isaac venv ({argv[0]})", file=sys.stderr, flush=True)
    return subprocess.call(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-V"], ["--version"]):
        print(version())
        return 0
    if argv[:1] == ["help"] and argv[1:2] and argv[1] in COMMANDS:  # robot-rl help CMD [SUB]
        argv = [*argv[1:], "--help"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"robot-rl: error: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    if help_requested(cmd, rest):
        try:
            print(command_help(cmd, rest), end="")
        except CLIError as e:
            print(f"robot-rl {cmd}: error: {e}", file=sys.stderr)
            return 2
        return 0
    from robot_rl.data.store import StoreError
    from robot_rl.spec import SpecError

    def user_errors() -> tuple[type[Exception], ...]:
        # CheckpointError lives with torch: only commands that loaded it can raise it
        base = sys.modules.get("robot_rl.policies.base")
        rand = sys.modules.get("robot_rl.sim.randomization")  # likewise, with the twin
        cal = sys.modules.get("robot_rl.calibration.camera_info")  # a calibration= the twin cannot use
        sysid = sys.modules.get("robot_rl.calibration.sysid")
        isaac = sys.modules.get("robot_rl.sim.isaac")  # the Isaac twin cannot start (venv, memory, cameras)
        return (CLIError, StoreError, SpecError, FileNotFoundError) + ((base.CheckpointError,) if base else ()) \
            + ((rand.RandomizationError,) if rand else ()) + ((cal.CalibrationError,) if cal else ()) \
            + ((sysid.SysidError,) if sysid else ()) + ((isaac.IsaacUnavailable,) if isaac else ())

    try:
        code = _in_isaac_venv(cmd, rest)
        if code is not None:
            return code
        return COMMANDS[cmd](rest)
    except user_errors() as e:
        print(f"robot-rl {cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robot-rl {cmd}: interrupted; committed episodes are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
