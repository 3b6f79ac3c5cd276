"""System identification of the twin's arm dynamics (calibration/sysid.py, docs/sysid.md)::

    robot-rl sysid excite robot=so101 driver=sim|feetech|dynamixel [port=PORT] [calibration=MOTOR_CALIB.yaml]
                          [hardware=NAME] [baudrate=N] out=DATA.zarr [seconds=48] [seed=0] [segment_s=8]
                          [amplitude=0.25] [velocity_fraction=0.6] [margin=0.2] [rate=HZ]
    robot-rl sysid fit DATA.zarr robot=so101 [params=[kp,damping,armature,frictionloss,delay]]
                       [validate=DATA2.zarr] [id=NAME] [out=CALIBRATION_ROOT] [max_delay=4]
                       [global_start=auto|always|never] [holdout=3,4] [plot=true|false]
    robot-rl sysid randomization CALIBRATION_DIR|dynamics.yaml [base=wide|none|FILE] [widen=2] [min_rel=0.05]
                                 out=FILE.yaml

``excite`` drives the arm through its driver (the robot node's ``make_robot``: same safety
filter, same options) along multi-sines, steps and slow ramps around the home pose, at the
control rate, and records one episode per segment. ``fit`` fits the twin to it and writes
``<out or $ROBOT_RL_CALIBRATION_DIR or ~/.cache/robot_rl/calibration>/<robot>/<id>/dynamics.yaml``
plus ``validation.png`` (predicted vs measured on the held-out segment) next to it; load it
with ``robot=so101 calibration=<that dir>`` (``RobotEnv(calibration=...)``).
Parameters: kp, kv, damping, armature, frictionloss, forcerange, mass, payload, delay.
"""
from __future__ import annotations

from pathlib import Path

from robot_rl.cli.common import CLIError

EXCITE_KEYS = ("robot", "driver", "port", "calibration", "hardware", "baudrate", "out", "seconds", "seed",
               "segment_s", "amplitude", "velocity_fraction", "margin", "rate")
FIT_KEYS = ("robot", "params", "validate", "id", "out", "max_delay", "global_start", "holdout", "plot")


def _kv(args: list[str], cmd: str, allowed: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """(settings, positional arguments): the same key=value parser as the calibrate commands."""
    from robot_rl.cli.motors import _kv as parse
    return parse([a for a in args if "=" in a], f"sysid {cmd}", allowed), [a for a in args if "=" not in a]


def _num(kv: dict[str, str], key: str, default, cast=float):
    if key not in kv:
        return default
    try:
        return cast(kv[key])
    except ValueError:
        raise CLIError(f"{key} must be a number, got {kv[key]!r}") from None


def make_sysid_robot(robot: str, driver: str, *, port: str | None = None, calibration: str | None = None,
                     hardware: str | None = None, baudrate: int | None = None, rate: float | None = None):
    """The driver exactly as the robot node builds it (``robot_rl.ros.robot_node.make_robot``),
    in the joint_pos action mode, without cameras, with the command watchdog off (this loop
    is the only commander) and the spec's limits and rate limits on."""
    argv = ["--robot", robot, "--driver", driver, "--action-mode", "joint_pos", "--cameras", "none",
            "--timeout", "0", "--task", "reach"]
    for flag, v in (("--port", port), ("--calibration", calibration), ("--hardware", hardware),
                    ("--baudrate", baudrate), ("--rate", rate)):
        if v is not None:
            argv += [flag, str(v)]
    try:
        from robot_rl.ros.robot_node import build_parser, make_robot
    except ImportError:  # no ROS on this machine: the registry directly, with the node's defaults
        from robot_rl.drivers.registry import make_driver
        from robot_rl.spec import load_spec
        opts = {k: v for k, v in (("port", port), ("calibration", calibration), ("hardware", hardware),
                                  ("baudrate", baudrate)) if v is not None}
        if driver == "sim":
            opts.update(task="reach", cameras=[])
        return make_driver(driver, robot=load_spec(robot), action_mode="joint_pos",
                           safety=dict(margin=0.01, velocity_scale=1.0, timeout_s=None), control_hz=rate, **opts)
    return make_robot(build_parser().parse_args(argv))


def excite_cmd(args: list[str]) -> int:
    from robot_rl.calibration.sysid import SysidError, excitation_plan, excite
    kv, pos = _kv(args, "excite", EXCITE_KEYS)
    if pos:
        raise CLIError(f"'sysid excite' takes key=value settings only, got {pos}")
    for k in ("driver", "out"):
        if not kv.get(k):
            raise CLIError(f"'sysid excite' needs {k}=... (" + ("sim, feetech or dynamixel" if k == "driver"
                                                                 else "the episode store to write") + ")")
    robot_name = kv.get("robot", "so101")
    out = Path(kv["out"]).expanduser()
    if (out / "zarr.json").exists():
        raise CLIError(f"{out} already exists: pick a new out=... (a recording is one excitation run)")
    if kv["driver"] != "sim" and not kv.get("port"):
        raise CLIError(f"driver={kv['driver']} needs port=... (robot-rl find-port) and calibration=...")
    try:
        robot = make_sysid_robot(robot_name, kv["driver"], port=kv.get("port"), calibration=kv.get("calibration"),
                                 hardware=kv.get("hardware"), baudrate=_num(kv, "baudrate", None, int),
                                 rate=_num(kv, "rate", None))
        plan = excitation_plan(robot.spec, seconds=_num(kv, "seconds", 48.0), seed=_num(kv, "seed", 0, int),
                               segment_s=_num(kv, "segment_s", 8.0), amplitude=_num(kv, "amplitude", 0.25),
                               velocity_fraction=_num(kv, "velocity_fraction", 0.6), margin=_num(kv, "margin", 0.2))
    except (ValueError, RuntimeError, KeyError) as e:
        raise CLIError(str(e)) from None
    print(f"sysid excite: {len(plan)} segments ({', '.join(s.kind for s in plan)}), "
          f"{sum(len(s.targets) for s in plan) / robot.spec.control_hz:.0f} s at {robot.spec.control_hz:g} Hz "
          f"on {kv['driver']}")
    try:
        robot.connect()
        summary = excite(robot, plan, out, seed=_num(kv, "seed", 0, int), driver=kv["driver"], progress=True)
    except SysidError as e:
        raise CLIError(str(e)) from None
    except (OSError, RuntimeError, ValueError) as e:
        raise CLIError(f"excitation stopped: {e}") from None
    finally:
        try:
            robot.disconnect()
        except Exception:  # noqa: BLE001
            pass
    print(f"recorded {summary['segments']} segments, {summary['steps']} steps -> {out}")
    return 0


def fit_cmd(args: list[str]) -> int:
    from robot_rl.calibration.sysid import SysidError, default_dynamics_path, fit, plot_validation
    kv, pos = _kv(args, "fit", FIT_KEYS)
    if len(pos) != 1:
        raise CLIError("'sysid fit' needs exactly one recording: robot-rl sysid fit DATA.zarr robot=so101 ...")
    data = Path(pos[0]).expanduser()
    if not data.exists():
        raise CLIError(f"no recording at {data}")
    robot = kv.get("robot")
    dyn_id = kv.get("id") or data.stem
    holdout = None
    if kv.get("holdout"):
        try:
            holdout = [int(x) for x in kv["holdout"].strip("[]").split(",") if x.strip()]
        except ValueError:
            raise CLIError(f"holdout must be segment indices like 3,4, got {kv['holdout']!r}") from None
    try:
        res = fit(data, robot=robot, params=kv.get("params"), validate=kv.get("validate"), holdout=holdout,
                  max_delay=_num(kv, "max_delay", 4, int), global_start=kv.get("global_start", "auto"),
                  progress=True, dyn_id=dyn_id)
        path = default_dynamics_path(res.dynamics.robot, dyn_id, kv.get("out"))
    except SysidError as e:
        raise CLIError(str(e)) from None
    print(res.table)
    res.dynamics.save(path)
    print(f"wrote {path}")
    if kv.get("plot", "true").lower() not in ("0", "false", "no"):
        png = plot_validation(res, path.parent / "validation.png")
        if png:
            print(f"wrote {png}")
    return 0


def main(args: list[str]) -> int:
    """``sysid excite|fit|randomization ...`` (``--help``: robot_rl.cli.main prints this module's docstring)."""
    if not args:
        raise CLIError("'sysid' needs a command: robot-rl sysid excite|fit|randomization ... (robot-rl sysid --help)")
    sub, rest = args[0], list(args[1:])
    if sub == "excite":
        return excite_cmd(rest)
    if sub == "fit":
        return fit_cmd(rest)
    if sub == "randomization":
        return randomization_cmd(rest)
    raise CLIError(f"unknown sysid command {sub!r}: use 'sysid excite', 'sysid fit' or 'sysid randomization'")


RAND_KEYS = ("base", "widen", "min_rel", "out")


def randomization_cmd(args: list[str]) -> int:
    """``sysid randomization``: a randomization file centred on a fit (sim/randomization.py
    ``centred_on_fit``)."""
    kv, pos = _kv(args, "randomization", RAND_KEYS)
    if len(pos) != 1:
        raise CLIError("usage: robot-rl sysid randomization CALIBRATION_DIR|dynamics.yaml [base=wide] [widen=2] "
                       "out=FILE.yaml")
    if "out" not in kv:
        raise CLIError("sysid randomization: out=FILE.yaml is required")
    import yaml

    from robot_rl.calibration.sysid import SysidError
    from robot_rl.sim.randomization import RandomizationError, centred_on_fit
    base = kv.get("base", "wide")
    try:
        d = centred_on_fit(pos[0], base=None if base in ("none", "null", "") else base,
                           widen=_num(kv, "widen", 2.0), min_rel=_num(kv, "min_rel", 0.05))
    except (SysidError, RandomizationError) as e:
        raise CLIError(str(e)) from None
    out = Path(kv["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# centred on the fit in {pos[0]} (robot-rl sysid randomization); base: {base}\n"
                   + yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=140))
    for t in d["terms"]:
        print(f"  {t['name']:<22} {t['field']:<20} {t['operation']:<5} {t['distribution']:<11} {t['range']}")
    print(f"wrote {out} ({len(d['terms'])} terms); use it with calibration={pos[0]} randomization={out}")
    return 0


__all__ = ["main", "make_sysid_robot"]
