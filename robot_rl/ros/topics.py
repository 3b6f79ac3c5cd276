"""Topic and service names, message conventions and QoS for every robot_rl node.

Standard messages only. Conventions (also in docs/ros.md):

- ``/joint_states`` ``sensor_msgs/JointState``: the spec's joints in spec order, then
  ``gripper`` whose position is the closure 0 (open) .. 1 (closed); velocity for the arm
  joints (0 for the gripper). Header stamp = time of the measurement.
- ``/ee_pose`` ``geometry_msgs/PoseStamped``: tool centre point in the base frame.
- ``/camera/<name>/image_raw`` ``sensor_msgs/Image`` (encoding ``rgb8``), sensor-data QoS;
  ``/camera/<name>/image_raw/compressed`` ``sensor_msgs/CompressedImage`` (``jpeg``, from a
  camera node); ``/camera/<name>/camera_info`` ``sensor_msgs/CameraInfo`` (K from the spec,
  or a camera node's calibration file).
- ``/object_state`` ``std_msgs/Float32MultiArray``: privileged task state (twin only).
- ``/reward`` ``std_msgs/Float32`` and ``/success`` ``std_msgs/Bool`` (twin only).
- Commands into the robot node:
  ``/joint_command`` ``sensor_msgs/JointState`` (absolute position targets by joint name;
  ``gripper`` optional), ``/ee_delta_command`` ``geometry_msgs/TwistStamped`` (tool velocity
  in the base frame, m/s and rad/s; integrated over one control period),
  ``/gripper_command`` ``std_msgs/Float64`` (0 open .. 1 closed),
  ``/joint_trajectory`` ``trajectory_msgs/JointTrajectory`` (an action chunk: points with
  ``time_from_start``, executed from the header stamp, or on receipt if the stamp is zero).
- ``/action_command`` ``std_msgs/Float32MultiArray``: one complete action in the spec's
  action space (what a policy or the scripted expert outputs); ``layout.dim[0].label`` names
  the action mode (``joint_pos`` | ``joint_delta`` | ``ee_delta``), the last entry is the
  gripper. In ``lockstep`` mode each one received advances the twin by one control step.
- ``/action`` ``std_msgs/Float32MultiArray``: the action the robot node applied at each
  control step, in the node's action mode (what a dataset stores as ``action``).
- Teleop: ``/teleop/event`` ``std_msgs/String`` -- one of EVENTS, optionally followed by
  ``key=value`` words (``start seed=12``); the realtime robot node adds ``reset seed=N stamp=T``
  (ROBOT_EVENTS) after resetting the twin for a start; ``/teleop/intervention`` ``std_msgs/Bool``.
- Services: ``/robot/estop`` ``std_srvs/SetBool`` (true engages: hold position, ignore
  commands), ``/robot/reset`` ``std_srvs/Trigger``; recorder ``/recorder/start``,
  ``/recorder/success``, ``/recorder/failure``, ``/recorder/discard`` ``std_srvs/Trigger``.
- ``/diagnostics`` ``diagnostic_msgs/DiagnosticArray``: cadence and safety telemetry.
- ``/clock`` ``rosgraph_msgs/Clock`` when the twin runs on sim time.
- Online RL (robot_rl.ros.rl_nodes, docs/rl_distributed.md): ``/rl/transitions`` and
  ``/rl/weights`` ``std_msgs/UInt8MultiArray`` (safetensors bytes, robot_rl.rl.wire);
  ``/rl/ack`` ``std_msgs/String`` ``"<source> <seq> ok|rejected"``. Weights use
  ``latched_qos`` (reliable, transient local, depth 1): a (re)started actor gets the latest.
"""
from __future__ import annotations

JOINT_STATES = "/joint_states"
EE_POSE = "/ee_pose"
OBJECT_STATE = "/object_state"
REWARD = "/reward"
SUCCESS = "/success"
ACTION = "/action"
ACTION_COMMAND = "/action_command"
JOINT_COMMAND = "/joint_command"
EE_DELTA_COMMAND = "/ee_delta_command"
GRIPPER_COMMAND = "/gripper_command"
JOINT_TRAJECTORY = "/joint_trajectory"
TELEOP_EVENT = "/teleop/event"
TELEOP_INTERVENTION = "/teleop/intervention"
ESTOP = "/robot/estop"
RESET = "/robot/reset"
DIAGNOSTICS = "/diagnostics"
CLOCK = "/clock"
GRIPPER_JOINT = "gripper"

EVENTS = ("start", "success", "failure", "discard", "rerecord")  # what an operator / teleop sends
# what the robot node announces on /teleop/event: ``reset seed=N stamp=T`` after resetting the
# twin for a ``start`` (realtime mode), T = the stamp (``<sec>.<nanosec>``) of its first
# post-reset observation. Listeners that do not need it ignore it.
ROBOT_EVENTS = ("reset",)
ALL_EVENTS = EVENTS + ROBOT_EVENTS


def camera_image(name: str) -> str:
    return f"/camera/{name}/image_raw"


def camera_compressed(name: str) -> str:
    return f"/camera/{name}/image_raw/compressed"


def camera_info(name: str) -> str:
    return f"/camera/{name}/camera_info"


def parse_event(text: str) -> tuple[str, dict[str, str]]:
    """``"start seed=3"`` -> ``("start", {"seed": "3"})``; ValueError for unknown events."""
    words = text.split()
    if not words or words[0] not in ALL_EVENTS:
        raise ValueError(f"unknown teleop event {text!r}; events: {list(ALL_EVENTS)}")
    args = {}
    for w in words[1:]:
        if "=" not in w:
            raise ValueError(f"teleop event {text!r}: expected key=value, got {w!r}")
        k, v = w.split("=", 1)
        args[k] = v
    return words[0], args


def event_or_warn(text: str, log) -> str | None:
    """The event name of a ``/teleop/event`` message, or None after logging why it is not one
    (a node's callback must not raise on bad input)."""
    try:
        return parse_event(text)[0]
    except ValueError as e:
        log.warning(str(e))
        return None


def format_event(event: str, **args) -> str:
    if event not in ALL_EVENTS:
        raise ValueError(f"unknown teleop event {event!r}; events: {list(ALL_EVENTS)}")
    return " ".join([event] + [f"{k}={v}" for k, v in args.items()])


def sensor_qos(depth: int = 5):
    """Best-effort, volatile, keep-last: for camera images (rclpy's sensor-data profile)."""
    from rclpy.qos import qos_profile_sensor_data, QoSProfile
    q = QoSProfile(**{k: getattr(qos_profile_sensor_data, k) for k in ("reliability", "durability", "history")},
                   depth=depth)
    return q


def reliable_qos(depth: int = 50):
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
    return QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE,
                      history=QoSHistoryPolicy.KEEP_LAST, depth=depth)


def latched_qos(depth: int = 1):
    """Reliable, transient local, keep-last: late joiners get the last ``depth`` messages."""
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
    return QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
                      history=QoSHistoryPolicy.KEEP_LAST, depth=depth)


# online RL (robot_rl.ros.rl_nodes)
RL_TRANSITIONS = "/rl/transitions"
RL_ACK = "/rl/ack"
RL_WEIGHTS = "/rl/weights"

# inference node (robot_rl.ros.inference_node): std_srvs/Trigger (new episode) and
# std_srvs/SetBool (true: hold)
INFERENCE_RESET = "/inference/reset"
INFERENCE_PAUSE = "/inference/pause"
