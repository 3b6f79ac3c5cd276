"""ros2 launch robot_rl rl.launch.py out:=DIR [actors:=2 human:=sim ...] -- same graph as `robot-rl launch rl`."""
from robot_rl.ros.launch_description import generate


def generate_launch_description():
    return generate("rl")
