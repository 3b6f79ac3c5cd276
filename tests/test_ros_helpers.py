"""The ROS test gate: a missing ROS 2 skips the DDS tests, a broken one fails them."""
import shutil
import subprocess
import sys
from pathlib import Path

from ros_helpers import have_rclpy, ros_extra_installed

HERE = Path(__file__).parent


def test_rclpy_imports_where_the_ros_extra_is_installed():
    if ros_extra_installed():
        assert have_rclpy()


def test_a_broken_rclpy_fails_the_ros_tests_instead_of_skipping_them(tmp_path):
    # a shadowing rclpy that fails on import, the way a wheel with a missing shared library does
    broken = tmp_path / "broken" / "rclpy"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('librcl.so: cannot open shared object file')\n")
    suite = tmp_path / "suite"
    suite.mkdir()
    for f in ("conftest.py", "ros_helpers.py"):
        shutil.copy(HERE / f, suite / f)
    (suite / "test_uses_ros.py").write_text("def test_needs_ros(ros_domain):\n    assert ros_domain > 0\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(broken.parent), "ROBOT_RL_REQUIRE_ROS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
                       capture_output=True, text=True, env=env, cwd=suite, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert out.rstrip().splitlines()[-1].startswith("1 error"), out  # pytest.fail in a fixture: an error, no skip
    assert "rclpy is installed but does not import" in out and "librcl.so" in out, out
