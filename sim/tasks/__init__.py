"""Tasks of the twin; each runs on every robot spec that has a twin."""
from robot_rl.sim.tasks.base import Expert, Task
from robot_rl.sim.tasks.insert import Insert
from robot_rl.sim.tasks.pick_cube import PickCube
from robot_rl.sim.tasks.push import Push
from robot_rl.sim.tasks.reach import Reach

TASKS: dict[str, type[Task]] = {t.name: t for t in (Reach, PickCube, Push, Insert)}

__all__ = ["TASKS", "Task", "Expert", "Reach", "PickCube", "Push", "Insert"]
