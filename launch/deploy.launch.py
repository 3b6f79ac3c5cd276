"""ros2 launch robot_rl deploy.launch.py checkpoint:=PATH [name:=value ...] -- same graph as `robot-rl launch deploy`."""
from robot_rl.ros.launch_description import generate


def generate_launch_description():
    return generate("deploy")
