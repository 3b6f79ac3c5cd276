"""Command-line handling shared by the node entry points; no rclpy import here, so that
``--help`` answers before ROS is loaded."""
from __future__ import annotations

from typing import Callable

HELP_FLAGS = ("-h", "--help")


def strip_ros_args(argv: list[str]) -> list[str]:
    """``argv`` without its ROS arguments: every ``--ros-args ... [--]`` block (what rclpy's
    ``remove_ros_args`` takes out)."""
    out: list[str] = []
    in_ros = False
    for a in argv:
        if a == "--ros-args":
            in_ros = True
        elif in_ros and a == "--":
            in_ros = False
        elif not in_ros:
            out.append(a)
    return out


def exit_on_help(build_parser: Callable, argv: list[str]) -> None:
    """``-h`` / ``--help`` among a node's own arguments (``argv`` without the program name):
    argparse prints the help (of a subcommand, where one is given) and exits 0, before the
    caller imports rclpy or creates a node."""
    args = strip_ros_args(argv)
    if any(a in HELP_FLAGS for a in args):
        build_parser().parse_args(args)
