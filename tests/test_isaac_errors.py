"""The Isaac twin's clear errors, checked from the core venv (no Isaac Lab here)."""
from __future__ import annotations

import sys

import pytest

from robot_rl.sim import isaac


def test_wrong_python_or_missing_isaaclab_names_make_isaac():
    if isaac.in_isaac_runtime():
        pytest.skip("this is the Isaac venv")
    with pytest.raises(isaac.IsaacUnavailable, match="make isaac"):
        isaac.require_runtime()
    with pytest.raises(isaac.IsaacUnavailable, match="make isaac"):
        isaac.make_isaac_env("pick_cube")


def test_missing_venv_names_make_isaac(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_RL_ISAAC_VENV", str(tmp_path / "nope"))
    with pytest.raises(isaac.IsaacUnavailable, match=r"no Isaac Lab venv at .*nope.*make isaac"):
        isaac.isaac_python()


def test_missing_assets_name_the_fix(tmp_path, monkeypatch):
    from robot_rl.sim.isaac import assets
    monkeypatch.setenv("ROBOT_RL_ISAAC_ASSETS", str(tmp_path))
    with pytest.raises(isaac.IsaacUnavailable, match="no local Isaac asset for so101/pick_cube.*make isaac"):
        assets.scene_usd("so101", "pick_cube", generate=False)


def test_env_count_that_does_not_fit_memory():
    from robot_rl.sim.isaac.env import check_fits
    check_fits(4, "cpu")
    with pytest.raises(isaac.IsaacUnavailable, match=r"num_envs=10000000 needs about .* GiB .* use num_envs<="):
        check_fits(10_000_000, "cpu")
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        check_fits(0, "cpu")


def test_backend_isaac_from_the_core_venv_without_the_isaac_venv(tmp_path, monkeypatch):
    """`robot-rl record sim backend=isaac` from the core venv: one clear error, no traceback."""
    import subprocess
    env = dict(__import__("os").environ, ROBOT_RL_ISAAC_VENV=str(tmp_path / "missing"))
    p = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "record", "sim", "backend=isaac", "task=pick_cube",
                        f"out={tmp_path / 'x.zarr'}", "episodes=1"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode != 0
    assert "make isaac" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x.zarr").exists()
