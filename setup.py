"""Only here for ament/colcon: everything else lives in pyproject.toml."""
from glob import glob

from setuptools import setup

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/robot_rl"]),
        ("share/robot_rl", ["package.xml"]),
        ("share/robot_rl/launch", glob("launch/*.launch.py")),
    ],
)
