"""Servo buses: protocol-independent pieces (errors, control tables, the protocol
interface, the bus client). The protocols live in ``robot_rl.drivers.feetech`` and
``robot_rl.drivers.dynamixel``; the emulator in ``robot_rl.drivers.virtual.servo_bus``."""
