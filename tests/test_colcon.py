"""The package builds with colcon as an ament_python package (colcon from PyPI)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ["pyproject.toml", "setup.py", "setup.cfg", "package.xml", "README.md", "resource", "launch",
         "robot_rl", "sim", "drivers", "policies", "calibration"]


@pytest.mark.skipif(shutil.which("colcon", path=str(Path(sys.executable).parent)) is None,
                    reason="colcon not installed (pip install -e .[dev])")
def test_colcon_build_installs_an_ament_python_package(tmp_path):
    src = tmp_path / "src" / "robot_rl"
    src.mkdir(parents=True)
    for part in PARTS:
        p = REPO / part
        if p.is_dir():
            shutil.copytree(p, src / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(p, src / part)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["colcon", "build", "--base-paths", "src", "--event-handlers", "console_direct-"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    inst = tmp_path / "install" / "robot_rl"
    site = next(inst.glob("lib/python3*/site-packages"))
    # package-dir mapping survives: sim/ is installed as robot_rl.sim
    assert (site / "robot_rl" / "sim" / "twin.py").exists()
    assert (site / "robot_rl" / "conf" / "robot" / "so101.yaml").exists()
    assert (inst / "share" / "robot_rl" / "package.xml").exists()
    assert (inst / "share" / "ament_index" / "resource_index" / "packages" / "robot_rl").exists()
    assert (inst / "share" / "robot_rl" / "launch" / "teleop_record.launch.py").exists()
    for exe in ("robot_node", "teleop_node", "recorder_node", "bag_player", "robot-rl"):
        assert (inst / "lib" / "robot_rl" / exe).exists(), exe  # where `ros2 run` looks
