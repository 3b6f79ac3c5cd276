"""ros2 launch robot_rl cameras.launch.py [name:=value ...] -- same graph as `robot-rl launch cameras`."""
from robot_rl.ros.launch_description import generate


def generate_launch_description():
    return generate("cameras")
