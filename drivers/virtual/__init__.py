"""Virtual hardware: protocol emulators backed by the MuJoCo twin (or synthetic data).

``robot_rl.drivers.virtual.camera`` serves a camera as an HTTP MJPEG stream.
"""
