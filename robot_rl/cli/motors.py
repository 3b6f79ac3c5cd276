"""Servo-bus arm tools, the way LeRobot users know them::

    robot-rl find-port [--list] [glob=PATTERN] [person=URL arm=follower|leader]
    robot-rl setup-motors robot=so101 [arm=follower|leader] [hardware=NAME] port=PORT [person=URL]
                          [motors=gripper,wrist_roll]
    robot-rl calibrate robot=so101 [arm=follower|leader] [hardware=NAME] port=PORT id=NAME
                       [person=URL [sweep_s=S]] [out=FILE.yaml] [lerobot=FILE.json|true]
    robot-rl calibrate robot=so101 [arm=...] id=NAME import_lerobot=FILE.json [port=PORT [person=URL]]
                       [zero=FILE.yaml] [out=FILE.yaml]
    robot-rl calibrate export_lerobot=OUT.json calibration=FILE.yaml

A virtual arm (``robot-rl virtual so101``) prints its ports; find-port finds one the same
way as a real one if it can see it: its pty (``glob=/dev/pts/*``, where other terminals may
come and go) or the unit's ``link:`` path (``glob=/tmp/robot_rl/*``), with ``person=URL``
pulling the arm's (virtual) USB adapter. The virtual person cannot plug it back in: restart
the rig afterwards.

``hardware`` defaults to ``<robot>_<arm>`` (robot_rl/conf/hardware/). ``person=URL`` hands
the instructions to the virtual arm's person (``robot-rl virtual so101`` prints the URL);
without it, a person at the keyboard presses Enter. Calibration files go to
``$ROBOT_RL_CALIBRATION_DIR`` or ``~/.cache/robot_rl/calibration/<hardware>/<id>.yaml``.
"""
from __future__ import annotations

from pathlib import Path

from robot_rl.cli.common import CLIError

# the settings each command takes (``robot-rl <command> --help`` prints this module's docstring)
FIND_PORT_KEYS = ("glob", "person", "arm")
SETUP_KEYS = ("robot", "arm", "hardware", "port", "person", "motors")


def _kv(args: list[str], cmd: str, allowed: tuple[str, ...], repeat: tuple[str, ...] = ()) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in args:
        if "=" not in a:
            raise CLIError(f"expected key=value, got {a!r} (robot-rl {cmd} takes: {', '.join(allowed)})")
        k, v = a.split("=", 1)
        if k not in allowed:
            raise CLIError(f"unknown setting {k!r} for '{cmd}'; valid settings: {', '.join(allowed)}")
        if k in repeat and k in out:
            v = out[k] + "," + v
        out[k] = v
    return out


def _user_errors() -> tuple[type[Exception], ...]:
    from robot_rl.calibration.motors import MotorCalibrationError
    from robot_rl.calibration.procedures import ProcedureError
    from robot_rl.calibration.prompter import PromptError
    from robot_rl.drivers.hardware import HardwareError
    from robot_rl.drivers.servo.errors import ServoError
    return (ProcedureError, MotorCalibrationError, PromptError, HardwareError, ServoError)


def _hardware(kv: dict[str, str], cmd: str):
    from robot_rl.drivers.hardware import load_hardware
    from robot_rl.spec import load_spec
    arm = kv.get("arm")
    if arm is not None and arm not in ("follower", "leader"):
        raise CLIError(f"arm must be follower or leader, got {arm!r}")
    robot = kv.get("robot")
    name = kv.get("hardware") or f"{robot or 'so101'}_{arm or 'follower'}"
    hw = load_hardware(name)
    if robot and hw.robot != robot:
        raise CLIError(f"hardware {hw.name!r} belongs to robot {hw.robot!r}, not {robot!r}")
    if arm and hw.role != arm:
        raise CLIError(f"hardware {hw.name!r} is a {hw.role} arm, not a {arm}")
    spec = load_spec(hw.robot)
    hw.check_spec(spec)
    return hw, spec


def _need(kv: dict[str, str], key: str, cmd: str, what: str) -> str:
    if not kv.get(key):
        raise CLIError(f"'{cmd}' needs {key}=... ({what})")
    return kv[key]


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _user_errors() as e:
        raise CLIError(str(e)) from None


# -- find-port --------------------------------------------------------------------------------

def cmd_find_port(args: list[str]) -> int:
    from robot_rl.calibration.procedures import find_port, find_ports
    from robot_rl.calibration.prompter import make_prompter
    listing = "--list" in args
    kv = _kv([a for a in args if a != "--list"], "find-port", FIND_PORT_KEYS, repeat=("glob",))
    globs = [g for g in kv.get("glob", "").split(",") if g]
    if kv.get("person") and kv.get("arm") not in ("follower", "leader"):
        raise CLIError("with person=URL, say which arm the person unplugs: arm=follower or arm=leader")
    if listing:
        ports = find_ports(globs)
        print("\n".join(ports) if ports else "no serial ports found")
        return 0
    ports = find_ports(globs)
    print("Finding all available ports for the servo bus.")
    print(f"Ports before disconnecting: {ports}")
    port = _run(find_port, make_prompter(kv.get("person")), globs=globs, arm=kv.get("arm"))
    print(f"The port of this servo bus is '{port}'")
    print("Reconnect the USB cable.")
    return 0


# -- setup-motors --------------------------------------------------------------------------------

def cmd_setup_motors(args: list[str]) -> int:
    from robot_rl.calibration.procedures import setup_motors
    from robot_rl.calibration.prompter import make_prompter
    kv = _kv(args, "setup-motors", SETUP_KEYS)
    port = _need(kv, "port", "setup-motors", "the arm's serial port: robot-rl find-port")
    hw, _ = _run(_hardware, kv, "setup-motors")
    motors = [m for m in kv.get("motors", "").split(",") if m] or None
    report = _run(setup_motors, port, hw, make_prompter(kv.get("person")), motors=motors)
    ids = ", ".join(f"{n}={r['id']}" for n, r in report.items())
    print(f"{hw.name} on {port}: {len(report)} motor(s) set up at {hw.baudrate} baud ({ids})")
    return 0


# -- calibrate --------------------------------------------------------------------------------------

CAL_KEYS = ("robot", "arm", "hardware", "port", "id", "person", "out", "lerobot", "import_lerobot", "zero",
            "export_lerobot", "calibration", "sweep_s")


def _print_calibration(cal) -> None:
    import math
    print(f"{'motor':<14} {'id':>3} {'dir':>4} {'homing':>7} {'zero_ticks':>10} {'range':>12}  angle range")
    lo, hi = cal.limits()
    for k, m in enumerate(cal.motors):
        if m is cal.gripper:
            a, b = sorted((cal.angle(m, m.range_min), cal.angle(m, m.range_max)))
            span = f"closure {a:+.2f} .. {b:+.2f}"
        else:
            span = f"{math.degrees(lo[k]):+.1f} .. {math.degrees(hi[k]):+.1f} deg"
        print(f"{m.name:<14} {m.id:>3} {m.direction:>+4d} {m.homing_offset:>7d} {m.zero_ticks:>10.2f} "
              f"{m.range_min:>5d}..{m.range_max:<5d}  {span}")


def _out_path(kv: dict[str, str], hw, cmd: str) -> Path:
    from robot_rl.calibration.motors import default_path
    if kv.get("out"):
        return Path(kv["out"]).expanduser()
    arm_id = _need(kv, "id", cmd, "a name for this arm, e.g. id=my_follower; or out=FILE.yaml")
    return _run(default_path, hw.name, arm_id)


def _save(cal, kv: dict[str, str], path: Path) -> None:
    cal.save(path)
    print(f"wrote {path}")
    lr = kv.get("lerobot")
    if lr and lr.lower() not in ("false", "0", "no"):
        lp = path.with_suffix(".json") if lr.lower() in ("true", "1", "yes") else Path(lr).expanduser()
        cal.save_lerobot(lp)
        print(f"wrote {lp} (LeRobot calibration JSON)")


def cmd_calibrate(args: list[str]) -> int:
    from robot_rl.calibration.motors import MotorCalibration
    from robot_rl.calibration.procedures import adopt_lerobot, calibrate
    from robot_rl.calibration.prompter import make_prompter
    kv = _kv(args, "calibrate", CAL_KEYS)

    if "export_lerobot" in kv:  # our file -> LeRobot JSON
        src = _need(kv, "calibration", "calibrate export_lerobot", "the calibration file to export")
        cal = _run(MotorCalibration.load, src)
        out = _run(cal.save_lerobot, kv["export_lerobot"])
        print(f"wrote {out} (LeRobot calibration JSON of {cal.hardware} arm {cal.arm_id!r})")
        return 0

    hw, spec = _run(_hardware, kv, "calibrate")
    path = _out_path(kv, hw, "calibrate")
    arm_id = kv.get("id") or path.stem

    if "import_lerobot" in kv:  # LeRobot JSON -> our file
        src = kv["import_lerobot"]
        if kv.get("port"):
            cal = _run(adopt_lerobot, kv["port"], hw, spec, make_prompter(kv.get("person")), src, arm_id=arm_id)
        else:
            zero = None
            if kv.get("zero"):
                import yaml
                try:
                    zero = {str(k): float(v) for k, v in (yaml.safe_load(Path(kv["zero"]).read_text()) or {}).items()}
                except (OSError, yaml.YAMLError, TypeError, ValueError, AttributeError) as e:
                    raise CLIError(f"zero={kv['zero']}: expected a YAML mapping motor -> Present_Position at the "
                                   f"spec's zero pose ({e})") from None
            cal = _run(MotorCalibration.from_lerobot, src, hw, spec, arm_id=arm_id, zero_ticks=zero)
            print(f"note: {cal.source}: LeRobot's file does not say where the spec's zero is; pass port=PORT "
                  "(measures it with the zero and check poses) or zero=FILE.yaml for exact angles")
        _print_calibration(cal)
        _save(cal, kv, path)
        return 0

    port = _need(kv, "port", "calibrate", "the arm's serial port: robot-rl find-port")
    if not kv.get("id") and not kv.get("out"):
        raise CLIError("'calibrate' needs id=NAME (a name for this arm, e.g. id=my_follower) or out=FILE.yaml")
    print(f"Calibrating {hw.name} ({hw.role}, {hw.protocol}) on {port} as {arm_id!r}.")
    try:
        sweep_s = float(kv["sweep_s"]) if kv.get("sweep_s") else None
    except ValueError:
        raise CLIError(f"sweep_s must be a number of seconds, got {kv['sweep_s']!r}") from None
    cal = _run(calibrate, port, hw, spec, make_prompter(kv.get("person")), arm_id=arm_id, sweep_s=sweep_s)
    _print_calibration(cal)
    _save(cal, kv, path)
    return 0
