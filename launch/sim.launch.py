"""ros2 launch robot_rl sim.launch.py [name:=value ...] -- same graph as `robot-rl launch sim`."""
from robot_rl.ros.launch_description import generate


def generate_launch_description():
    return generate("sim")
