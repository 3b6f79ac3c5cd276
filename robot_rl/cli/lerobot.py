"""Episode store <-> LeRobotDataset v3.0: robot-rl export-lerobot and import-lerobot.

    robot-rl export-lerobot STORE OUT_DIR [repo_id=local/NAME] [robot=...] [video=true|false]
                            [calibration=FILE] [hardware=NAME] [units=auto|lerobot|spec]
                            [action_mode=...] [vcodec=auto|av1|h264] [crf=...] [gop=2]
    robot-rl import-lerobot DIR OUT.zarr robot=NAME [calibration=FILE] [hardware=NAME]
                            [units=auto|lerobot|spec] [action_mode=...]

The export writes LeRobot's v3.0 layout (meta/, data/ parquet, videos/ MP4) that lerobot's
``LeRobotDataset(repo_id, root=OUT_DIR)`` loads; SO-101 joints in LeRobot's degrees and
gripper 0..100 (exact with calibration=). The import reads such a dataset (LeRobot's own or
ours) into a new episode store; store -> LeRobot -> store returns every numeric key bitwise.
Both write to a temporary folder and rename it at the end: an error leaves nothing behind.
"""
from __future__ import annotations

from typing import Any

from robot_rl.cli.common import CLIError, cfg_to_dict, compose


def _paths(args: list[str], cmd: str, what: str) -> tuple[str, str, list[str]]:
    if len(args) < 2 or "=" in args[0] or "=" in args[1]:
        raise CLIError(f"'{cmd}' needs {what}: robot-rl {cmd} {what} [key=value ...]")
    return args[0], args[1], args[2:]


def _opt(v: Any) -> Any:
    return None if v in (None, "", "null", "None") else v


def _robot(cfg: dict[str, Any]) -> Any:
    """The robot group's composed spec (a mapping) or None."""
    r = cfg.get("robot")
    return r if isinstance(r, dict) and r else None


def cmd_export_lerobot(args: list[str]) -> int:
    from robot_rl.data.lerobot import LeRobotFormatError, export_lerobot

    store, out, rest = _paths(args, "export-lerobot", "STORE OUT_DIR")
    cfg = cfg_to_dict(compose("export_lerobot", rest))
    try:
        s = export_lerobot(store, out, repo_id=_opt(cfg["repo_id"]), robot=_robot(cfg), video=bool(cfg["video"]),
                           calibration=_opt(cfg["calibration"]), progress=bool(cfg["progress"]),
                           units=str(cfg["units"]), hardware=_opt(cfg["hardware"]),
                           action_mode=_opt(cfg["action_mode"]), vcodec=str(cfg["vcodec"]),
                           crf=None if _opt(cfg["crf"]) is None else int(cfg["crf"]),
                           gop=int(cfg["gop"]))
    except LeRobotFormatError as e:
        raise CLIError(str(e)) from None
    cams = f"{len(s['cameras'])} cameras as {s['vcodec'] if s['video'] else 'PNG images'}" if s["cameras"] \
        else "no cameras"
    print(f"wrote {s['out']} ({s['repo_id']}): {s['episodes']} episodes, {s['frames']} frames at {s['fps']} fps, "
          f"{cams}, {s['mb']:.1f} MB in {s['seconds']:.1f} s")
    print(f"  observation.state: {s['units']}")
    print(f"  action ({s['action_mode']}): {s['action_units']}")
    print(f"  load it: LeRobotDataset({s['repo_id']!r}, root={s['out']!r})")
    return 0


def cmd_import_lerobot(args: list[str]) -> int:
    from robot_rl.data.lerobot import LeRobotFormatError, import_lerobot

    src, out, rest = _paths(args, "import-lerobot", "DIR OUT.zarr")
    cfg = cfg_to_dict(compose("import_lerobot", rest))
    if _robot(cfg) is None:
        from robot_rl.spec import available_robots
        raise CLIError(f"import-lerobot needs robot=NAME (the robot the dataset was recorded with); available: "
                       f"{', '.join(available_robots())}")
    try:
        s = import_lerobot(src, out, robot=_robot(cfg), calibration=_opt(cfg["calibration"]),
                           progress=bool(cfg["progress"]), units=str(cfg["units"]), hardware=_opt(cfg["hardware"]),
                           action_mode=_opt(cfg["action_mode"]))
    except LeRobotFormatError as e:
        raise CLIError(str(e)) from None
    print(f"wrote {s['out']}: {s['episodes']} episodes, {s['frames']} steps at {s['fps']} fps "
          f"({s['robot']}), {len(s['cameras'])} cameras, {s['mb']:.1f} MB in {s['seconds']:.1f} s")
    print(f"  joint_pos / gripper from: {s['units']}")
    print(f"  action: {s['action_mode']}")
    for w in s["warnings"][:5]:
        print(f"  warning: {w}")
    if len(s["warnings"]) > 5:
        print(f"  ... and {len(s['warnings']) - 5} more warnings")
    return 0
