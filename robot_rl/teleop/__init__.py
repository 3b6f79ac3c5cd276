"""Teleoperation (ROS-free core): devices that turn a person's input -- or the task's scripted
expert -- into end-effector commands, an intervention flag and episode events. The ROS node
that publishes them is :mod:`robot_rl.ros.teleop_node`."""
from robot_rl.teleop.devices import (DEVICES, EVENTS, HELP, KEYMAP, DeviceError, ExpertDevice,
                                     GamepadDevice, GamepadMap, KeyboardDevice, SpaceMouseDevice,
                                     TeleopCommand, TeleopDevice, make_device, parse_keys, twist_si)

__all__ = ["TeleopDevice", "TeleopCommand", "DeviceError", "KeyboardDevice", "GamepadDevice",
           "GamepadMap", "SpaceMouseDevice", "ExpertDevice", "DEVICES", "EVENTS", "HELP", "KEYMAP",
           "make_device", "parse_keys", "twist_si"]
