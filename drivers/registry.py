"""Robot drivers by name: ``sim`` (the MuJoCo twin), ``feetech`` / ``dynamixel`` (servo-bus
arms such as the SO-101 follower), ``ros2_control`` (arms that run a ros2_control
controller: UR, Franka, ...), plus any third-party driver registered under the entry-point
group ``robot_rl.drivers`` (``name = "package.module:factory"``).

A factory is called as ``factory(robot=..., action_mode=..., safety={...}, control_hz=...,
**options)`` and returns a :class:`robot_rl.runtime.robot.Robot`; ``options`` are the
driver's own settings (``port``, ``calibration``, ``controller`` ...). Options a driver does
not take are an error naming the ones it does.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

ENTRY_POINT_GROUP = "robot_rl.drivers"

BUILTIN: dict[str, str] = {
    "sim": "robot_rl.drivers.registry:sim_robot",
    "feetech": "robot_rl.drivers.servo_arm:feetech_arm",
    "dynamixel": "robot_rl.drivers.servo_arm:dynamixel_arm",
    "ros2_control": "robot_rl.drivers.ros2_control:from_options",
}


class DriverError(ValueError):
    """An unknown driver, or options it does not take."""


def sim_robot(robot: str = "so101", action_mode: str = "ee_delta", safety: dict | None = None,
              control_hz: float | None = None, *, task: str = "pick_cube", cameras=(), image_size=None,
              reward_type: str = "dense", seed: int | None = None, randomization=None, calibration=None):
    """The twin (``SimRobot``); ``randomization=NAME|FILE`` and ``calibration=DIR`` (a twin
    calibration folder: ``dynamics.yaml``, ``cameras/``, ``handeye_*.yaml``) make it the
    randomized, calibrated twin. Both are checked here, before anything connects."""
    from pathlib import Path

    from robot_rl.runtime.robot import SimRobot
    from robot_rl.sim.tasks import TASKS
    if task not in TASKS:
        raise DriverError(f"unknown task {task!r}; available: {sorted(TASKS)}")
    if randomization is not None:
        from robot_rl.sim.randomization import Randomization, RandomizationError
        try:
            Randomization.load(randomization)
        except (RandomizationError, OSError) as e:
            raise DriverError(f"randomization={randomization}: {e}") from None
    if calibration is not None and not Path(calibration).is_dir():
        raise DriverError(f"calibration={calibration}: the sim driver takes a twin calibration folder (dynamics.yaml, "
                          "cameras/, handeye_<camera>.yaml: robot-rl sysid fit / calibrate camera / handeye), "
                          "not a motor calibration file")
    return SimRobot(robot, task, action_mode, cameras=cameras, image_size=image_size, control_hz=control_hz,
                    reward_type=reward_type, seed=seed, safety=safety, randomization=randomization,
                    calibration=calibration)


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    return sorted(set(BUILTIN) | set(_entry_points()))


def resolve(name: str) -> Callable[..., Any]:
    if name in BUILTIN:
        mod, _, attr = BUILTIN[name].partition(":")
        return getattr(importlib.import_module(mod), attr)
    eps = _entry_points()
    if name in eps:
        return eps[name].load()
    raise DriverError(f"unknown driver {name!r}; available: {', '.join(available())}")


def make_driver(name: str, **kwargs: Any):
    """Build driver `name` with keyword arguments; unknown options -> DriverError."""
    factory = resolve(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        extra = sorted(set(kwargs) - set(params))
        if extra:
            takes = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
            raise DriverError(f"driver {name!r} does not take {extra}; it takes {takes}")
    return factory(**kwargs)
