"""``--help`` / ``-h`` and ``--version`` on every ``robot-rl`` command and every node: usage,
description and settings on stdout, exit 0, and no work done (no twin, torch, ROS or port).

The commands come from ``COMMANDS`` and ``SUBCOMMANDS`` (a new command is covered without
touching this file); a hydra command's settings are checked against its config file read
here with PyYAML, independently of the help renderer."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from robot_rl.cli.main import COMMANDS, HELP, SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "robot_rl" / "conf"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def missing(cmd: str) -> str | None:
    """Why a command cannot answer yet (its module or config is not in this tree), else None."""
    import importlib.util
    h = HELP[cmd]
    if h.module and importlib.util.find_spec(h.module) is None:
        return f"{h.module} is not in this tree yet"
    if h.config and not (CONF / f"{h.config}.yaml").exists():
        return f"robot_rl/conf/{h.config}.yaml is not in this tree yet"
    return None


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def config_keys(name: str) -> tuple[list[str], dict[str, list[str]]]:
    """(settings as the user types them: ``key``, ``parent.child``; config group -> choices)."""
    d = yaml.safe_load((CONF / f"{name}.yaml").read_text()) or {}
    groups = {}
    for item in d.pop("defaults", []):
        if isinstance(item, dict):
            for g in item:
                groups[g] = sorted(p.stem for p in (CONF / g).glob("*.yaml"))
    keys = []

    def walk(prefix, node):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                keys.append(f"{prefix}{k}")
    walk("", d)
    return keys, groups


# the key=value settings of the commands that parse them without hydra
def _plain_keys():
    from robot_rl.cli import camera_calib, convert, motors, reward_classifier, sysid
    return {
        ("convert",): list(convert.BAG_KEYS) + list(convert.STORE_KEYS),
        ("reward-classifier",): list(reward_classifier.TRAIN_KEYS),
        ("reward-classifier", "train"): list(reward_classifier.TRAIN_KEYS),
        ("find-port",): list(motors.FIND_PORT_KEYS),
        ("setup-motors",): list(motors.SETUP_KEYS),
        ("calibrate",): list(motors.CAL_KEYS),
        ("calibrate", "board"): list(camera_calib.KEYS["board"]),
        ("calibrate", "camera"): list(camera_calib.KEYS["camera"]),
        ("calibrate", "handeye"): list(camera_calib.KEYS["handeye"]) + list(camera_calib.KEYS["handeye collect"]),
        ("sysid", "excite"): list(sysid.EXCITE_KEYS),
        ("sysid", "fit"): list(sysid.FIT_KEYS),
        ("sysid", "randomization"): list(sysid.RAND_KEYS),
        ("sysid",): list(sysid.EXCITE_KEYS) + list(sysid.FIT_KEYS) + list(sysid.RAND_KEYS),
    }


CASES = [(c,) for c in sorted(COMMANDS)] + [(c, s) for c in sorted(SUBCOMMANDS) for s in SUBCOMMANDS[c]]


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("words", CASES, ids=[" ".join(c) for c in CASES])
def test_every_command_answers_help(words, flag, capsys):
    why = missing(words[0])
    if why:
        pytest.skip(f"robot-rl {words[0]}: {why} (another change adds it)")
    code, out, err = run(capsys, *words, flag)
    assert code == 0 and err == "", err
    h = SUBCOMMANDS[words[0]][words[1]] if len(words) > 1 else HELP[words[0]]
    prog = "robot-rl " + " ".join(words)
    # the usage line names the command (and the subcommand) ...
    assert out.startswith("usage: "), out[:200]
    first = out.splitlines()[0]
    assert first.startswith(f"usage: {prog} ") or first == f"usage: {prog}", first
    # ... a description follows it ...
    paragraphs = [p for p in out.split("\n\n") if p.strip()]
    assert len(paragraphs) >= 2 and len(paragraphs[1].split()) >= 4, out
    # ... and the settings: every key of the config file with its default, each config group
    # with its choices; a flag parser's options; the key=value settings a command accepts
    if h.config:
        keys, groups = config_keys(h.config)
        listed = out.split("settings (key=value;", 1)[1]
        for k in keys:
            assert f"\n  {k}=" in listed, f"{k} missing from the settings of {prog}"
        for g, choices in groups.items():
            line = next(ln for ln in listed.splitlines() if ln.startswith(f"  {g}="))
            assert all(c in line for c in choices), line
    elif h.parser:
        import importlib
        mod, fn = h.parser.split(":")
        parser = getattr(importlib.import_module(mod), fn)()
        for action in parser._actions:
            assert all(o in out for o in action.option_strings), action.option_strings
    elif words[0] == "launch":
        from robot_rl.ros.graphs import GRAPHS
        assert all(f"  {g} " in out for g in GRAPHS)
    elif words[0] == "virtual":
        assert "robot-rl virtual camera" in out and "robot-rl virtual so101" in out
    else:
        for k in _plain_keys()[tuple(words)]:
            assert f"{k}=" in out, f"{k} missing from the help of {prog}"
    # -h and --help say the same, wherever they stand
    code, out2, _ = run(capsys, *words, "x=1", "--help" if flag == "-h" else "-h")
    assert code == 0 and out2 == out


def test_help_after_arguments_does_no_work(capsys, tmp_path):
    """``--help`` anywhere: nothing is read, written, trained or opened, even with real-looking
    arguments (a missing store, a serial port that does not exist)."""
    for args in (["sysid", "fit", str(tmp_path / "none.zarr"), "robot=so101", "--help"],
                 ["train", f"dataset={tmp_path / 'none.zarr'}", "policy=act", "-h"],
                 ["record", "sim", f"out={tmp_path / 'x.zarr'}", "--help"],
                 ["calibrate", "robot=so101", "port=/dev/ttyNOPE", "id=x", "--help"],
                 ["launch", "sim", "robot=so101", "-h"],
                 ["eval", str(tmp_path / "ckpt"), "twin.geom_friction=0.5", "--help"],
                 ["virtual", "so101", "--duration", "1", "--help"]):
        code, out, err = run(capsys, *args)
        assert code == 0 and out.startswith(f"usage: robot-rl {args[0]}") and err == "", (args, err)
    assert list(tmp_path.iterdir()) == []
    # the graph's own settings, when a graph is named
    code, out, _ = run(capsys, "launch", "sim", "--help")
    assert "graph sim:" in out and "  mode='realtime'" in out
    # robot-rl help CMD [SUB] is robot-rl CMD [SUB] --help
    assert run(capsys, "help", "sysid", "fit") == run(capsys, "sysid", "fit", "--help")


def test_help_loads_no_torch_no_twin_no_ros():
    """Every command's help in one fresh process: torch, MuJoCo, rclpy and hydra stay unloaded."""
    code = ("import sys, io, contextlib\n"
            "from robot_rl.cli.main import COMMANDS, SUBCOMMANDS, main\n"
            "for c in COMMANDS:\n"
            "    for w in [[c]] + [[c, s] for s in SUBCOMMANDS.get(c, {})]:\n"
            "        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "            main(w + ['--help'])\n"
            "print(sorted(m for m in ('torch', 'mujoco', 'rclpy', 'hydra', 'zarr', 'serial') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_version(capsys):
    for flag in ("--version", "-V"):
        code, out, err = run(capsys, flag)
        assert (code, out, err) == (0, f"robot-rl {VERSION}\n", "")
    import robot_rl
    assert robot_rl.__version__ == VERSION
    # the installed console script
    script = Path(sys.executable).parent / "robot-rl"
    if script.exists():
        r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, f"robot-rl {VERSION}\n"), r.stderr


def test_top_level_help_and_unknown_command(capsys):
    for args in ([], ["--help"], ["-h"], ["help"]):
        code, out, _ = run(capsys, *args)
        assert code == 0 and out.startswith("usage: robot-rl <command>")
        assert all(f"  {c}" in out for c in COMMANDS), "a command missing from USAGE"
        assert "nproc=" in out
    code, out, err = run(capsys, "trian", "--help")
    assert code == 2 and "unknown command 'trian'" in err and out == ""


# -- nodes: real processes ---------------------------------------------------------------------------

SCRIPTS = {name: target for name, target in PYPROJECT["project"]["scripts"].items() if name != "robot-rl"}
MODULES = ["robot_rl.ros.deploy", "robot_rl.ros.episode_clock", "robot_rl.ros.fake_ros2_control", "robot_rl.demo",
           "robot_rl.ros.rl_nodes learner", "robot_rl.ros.rl_nodes actor"]


def node_help(argv_head: list[str], flag: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", *argv_head, flag], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def check_node_help(r: subprocess.CompletedProcess, name: str) -> None:
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: ") and name in r.stdout.splitlines()[0], r.stdout[:300]
    assert "options:" in r.stdout and "-h, --help" in r.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    other = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
    assert not other, other  # nothing but the import timings on stderr
    assert not {"rclpy", "torch", "mujoco"} & imported, "--help loaded ROS / torch / the twin"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_node_entry_point_help(script):
    """The ``[project.scripts]`` entry point itself: ``module:main()`` with argv[0] the script."""
    module, func = SCRIPTS[script].split(":")
    code = f"import sys; sys.argv[0] = {script!r}; from {module} import {func}; sys.exit({func}())"
    r = node_help(["-c", code], "--help")
    check_node_help(r, module.rsplit(".", 1)[1])


@pytest.mark.parametrize("module", MODULES)
def test_python_m_module_help(module):
    r = node_help(["-m", *module.split()], "-h")
    check_node_help(r, module.split()[0].rsplit(".", 1)[1])
