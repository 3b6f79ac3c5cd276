"""Build a ROS 2 ``LaunchDescription`` from a graph in :mod:`robot_rl.ros.graphs`.

Used by ``launch/*.launch.py`` so ``ros2 launch robot_rl teleop_record.launch.py
robot:=arm6 episodes:=20`` starts exactly the processes ``robot-rl launch teleop_record
robot=arm6 episodes=20`` starts. Needs the ``launch`` package (ROS 2 from apt); the
PyPI wheels don't ship it, which is why ``robot-rl launch`` exists.
"""
from __future__ import annotations

import sys

from robot_rl.ros.graphs import GRAPHS


def generate(graph_name: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, OpaqueFunction, RegisterEventHandler, TimerAction
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration

    graph = GRAPHS[graph_name]

    def setup(context, *args, **kwargs):
        overrides = {k: LaunchConfiguration(k).perform(context) for k in graph.params}
        actions = []
        for node in graph.nodes(overrides):
            proc = ExecuteProcess(cmd=[sys.executable, "-m", node.module, *node.args], name=node.name,
                                  output="screen", respawn=node.respawn, sigterm_timeout="10")
            actions.append(TimerAction(period=node.start_delay_s, actions=[proc]) if node.start_delay_s else proc)
            if node.required:
                actions.append(RegisterEventHandler(OnProcessExit(
                    target_action=proc, on_exit=[EmitEvent(event=Shutdown(reason=f"{node.name} exited"))])))
        return actions

    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=f"{graph.name} parameter")
         for k, v in graph.params.items()] + [OpaqueFunction(function=setup)])
