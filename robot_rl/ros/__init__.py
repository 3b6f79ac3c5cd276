"""ROS 2 layer: thin rclpy nodes over the core objects. The only package that imports rclpy.

Topic names, message conventions and QoS live in :mod:`robot_rl.ros.topics`; numpy <->
message conversions in :mod:`robot_rl.ros.msgs`.
"""
