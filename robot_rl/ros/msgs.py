"""numpy <-> rclpy message conversions shared by the nodes (rosbags-side conversions for
bag files live in robot_rl.data.bag)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32MultiArray, MultiArrayDimension


def to_time(t: float) -> Time:
    sec = int(np.floor(t))
    ns = int(round((t - sec) * 1e9))
    if ns >= 1_000_000_000:  # 7.9999999999 rounds up to 8 s, not to 7 s + 0 ns
        sec, ns = sec + 1, ns - 1_000_000_000
    return Time(sec=sec, nanosec=ns)


def from_time(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def joint_state(names: Sequence[str], pos, vel=None, stamp: float = 0.0, frame_id: str = "") -> JointState:
    m = JointState()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.name = list(names)
    m.position = [float(x) for x in pos]
    if vel is not None:
        m.velocity = [float(x) for x in vel]
    return m


def joint_positions(msg: JointState, names: Sequence[str]) -> dict[str, float]:
    """{name: position} for the named joints present in `msg` (unknown names ignored)."""
    idx = {n: i for i, n in enumerate(msg.name)}
    return {n: float(msg.position[idx[n]]) for n in names if n in idx and idx[n] < len(msg.position)}


def image(arr: np.ndarray, stamp: float = 0.0, frame_id: str = "") -> Image:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"image must be HxWx3 (rgb8) or HxWx1 (mono8), got {arr.shape}")
    m = Image()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.height, m.width = int(arr.shape[0]), int(arr.shape[1])
    m.encoding = "rgb8" if arr.shape[2] == 3 else "mono8"
    m.is_bigendian = 0
    m.step = int(arr.shape[1] * arr.shape[2])
    m.data = arr.tobytes()
    return m


def image_array(msg: Image) -> np.ndarray:
    ch = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}.get(msg.encoding)
    if ch is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (rgb8, bgr8, rgba8, bgra8, mono8)")
    a = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width * ch]
    a = a.reshape(msg.height, msg.width, ch)
    if msg.encoding.startswith("bgr"):
        a = a[..., [2, 1, 0] + ([3] if ch == 4 else [])]
    return a[..., :3] if ch == 4 else a


def camera_info(K, width: int, height: int, stamp: float = 0.0, frame_id: str = "") -> CameraInfo:
    m = CameraInfo()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.width, m.height = int(width), int(height)
    m.distortion_model = "plumb_bob"
    m.d = [0.0] * 5
    k = np.asarray(K, dtype=np.float64).reshape(3, 3)
    m.k = k.reshape(-1).tolist()
    m.r = np.eye(3).reshape(-1).tolist()
    p = np.zeros((3, 4))
    p[:, :3] = k
    m.p = p.reshape(-1).tolist()
    return m


def pose_stamped(pos, quat_wxyz, stamp: float = 0.0, frame_id: str = "base") -> PoseStamped:
    m = PoseStamped()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in pos)
    w, x, y, z = (float(v) for v in quat_wxyz)
    m.pose.orientation.w, m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z = w, x, y, z
    return m


def pose_arrays(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    p, o = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z], np.float32), np.array([o.w, o.x, o.y, o.z], np.float32)


def float_array(values, label: str = "") -> Float32MultiArray:
    m = Float32MultiArray()
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    m.layout.dim = [MultiArrayDimension(label=label, size=len(v), stride=len(v))]
    m.data = v.tolist()
    return m


def float_array_values(msg: Float32MultiArray) -> np.ndarray:
    return np.asarray(msg.data, dtype=np.float32)


# -- stamped Float32MultiArray (/action, /object_state) ------------------------------------
# Float32MultiArray has no header. A stamp travels as a trailing size-1 dimension whose label
# is "stamp=<sec>.<nanosec>": the shape stays consistent with the data (n x 1) and consumers
# that only read `data` or `dim[0]` are unaffected.
STAMP_PREFIX = "stamp="


def stamped_float_array(values, label: str, stamp: float) -> Float32MultiArray:
    m = float_array(values, label)
    t = to_time(stamp)
    m.layout.dim.append(MultiArrayDimension(label=f"{STAMP_PREFIX}{t.sec}.{t.nanosec:09d}", size=1, stride=1))
    return m


def float_array_stamp(msg: Float32MultiArray) -> float | None:
    """The stamp of a stamped_float_array message, None when it carries none."""
    for d in msg.layout.dim:
        if d.label.startswith(STAMP_PREFIX):
            sec, _, ns = d.label[len(STAMP_PREFIX):].partition(".")
            try:
                return int(sec) + int(ns or 0) * 1e-9
            except ValueError:
                return None
    return None


def diagnostic_status(name: str, hardware_id: str, level, message: str, values: dict[str, str]) -> DiagnosticStatus:
    s = DiagnosticStatus(name=name, hardware_id=hardware_id, level=level, message=message)
    s.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return s


def publish_diagnostics(node, pub, statuses: Sequence[DiagnosticStatus]) -> None:
    """One DiagnosticArray stamped now; a publisher already gone at shutdown is not an error."""
    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    arr.status = list(statuses)
    try:
        pub.publish(arr)
    except Exception:  # noqa: BLE001 - shutting down
        pass
