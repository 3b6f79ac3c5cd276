"""ros2 launch robot_rl teleop_record.launch.py [name:=value ...] -- same graph as `robot-rl launch teleop_record`."""
from robot_rl.ros.launch_description import generate


def generate_launch_description():
    return generate("teleop_record")
