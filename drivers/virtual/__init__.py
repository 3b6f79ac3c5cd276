"""Virtual hardware: protocol emulators backed by the MuJoCo twin (or synthetic data).

- ``camera``: a camera served as an HTTP MJPEG stream (twin, live scene or synthetic).
- ``servo_bus``: a Feetech / Dynamixel servo bus on a pseudo-terminal, register file per
  servo, wire time at the baud rate, injected faults.
- ``so101``: an SO-101 follower + leader on two such buses, the follower's physics the
  twin in real time, cameras of the same scene (``robot-rl virtual so101``).
- ``person``: the scripted person who plugs motors in, holds poses and teleoperates.
"""
