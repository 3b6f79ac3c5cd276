"""ros2 launch robot_rl replay.launch.py [name:=value ...] -- same graph as `robot-rl launch replay`."""
from robot_rl.ros.launch_description import generate


def generate_launch_description():
    return generate("replay")
