"""The recording contract: which ROS 2 topics become which dataset keys, and how they are
aligned onto the dataset's time grid. Pure Python (no rclpy): the live recorder node and the
bag -> episode-store converter both use it, so both produce the same dataset.

A contract is YAML (``robot_rl/conf/contract/<name>.yaml`` or any path)::

    name: sim
    fps: null                  # dataset rate in Hz (null: the robot spec's control_hz)
    latency: 0.1               # s a grid step waits for late messages before it is aligned
    event_topic: /teleop/event # std_msgs/String start|success|failure|discard|rerecord
    topics:
      - topic: /joint_states
        type: sensor_msgs/msg/JointState
        rate: 20               # expected Hz (default max_age / tolerance derive from it)
        qos: reliable          # reliable | sensor
        policy: latest         # latest | hold | drop
        fields:                # dataset key: field  (or {field: ..., dtype: ...})
          joint_pos: position  # the spec's arm joints, in spec order
          joint_vel: velocity
          gripper: position[gripper]
      - topic: /camera/{camera}/image_raw     # expanded once per camera of the robot spec
        type: sensor_msgs/msg/Image
        fields: {image_{camera}: rgb}

Fields per message type (``FIELDS``): JointState ``position`` / ``velocity`` / ``effort``
(arm joints of the spec, by name) and ``position[<joint>]`` etc. (one joint, shape (1,));
PoseStamped ``position`` (xyz) and ``orientation`` (quaternion **wxyz**); Image ``rgb``
(HxWx3 uint8 from rgb8/bgr8/rgba8/bgra8/mono8); CompressedImage ``rgb`` (jpeg or png,
decoded); Float32/Float64(MultiArray) and Bool ``data``. The Float32 and Float64 variants of
a type are interchangeable in a bag. An image field may say ``{field: rgb, size: [h, w]}``:
the recorder (and the bag converter) then resize with area interpolation; without ``size``
frames are stored as the camera sends them.

Alignment (:class:`Aligner`), on a grid ``t_k = start + k / fps`` (integer nanoseconds),
using header stamps (receipt / bag log time for messages without a header):

- ``latest``: the newest message with stamp <= t_k, if it is at most ``max_age`` old;
  otherwise the step is skipped (telemetry ``stale``). Causal: what a policy would see.
- ``hold``: the newest message with stamp <= t_k, however old; older than ``max_age`` is
  flagged (telemetry ``held``), the step is kept.
- ``drop``: the message whose stamp is nearest to t_k (either side) within ``tolerance``;
  otherwise the step is skipped (telemetry ``no_match``). Needs ``latency >= tolerance``.

Before a topic's first message every policy skips the step (telemetry ``missing``). A step
is emitted once ``now > t_k + latency`` (``now`` = receipt time live, log time in a bag),
so late messages still count; every emitted step carries the stamp each key came from
(stored as ``stamp_<key>``, float64 s).

Episodes (:class:`EpisodeAssembler`) follow the teleop events: ``start [k=v ...]`` begins
one (``task=`` overrides the task, other args go to ``extra``), ``success`` / ``failure``
end it, ``discard`` drops it, ``rerecord`` drops it and starts a new one; ``start`` while
recording ends the open episode as a failure first. Steps go to an :class:`EpisodeSink`
(:class:`StoreSink` writes an :class:`~robot_rl.data.store.EpisodeStore`).
"""
from __future__ import annotations

import bisect
import copy
import logging
import math
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Union

import numpy as np
import yaml

# the teleop event grammar is shared with the nodes (topics.py imports no rclpy)
from robot_rl.ros.topics import EVENTS, parse_event  # noqa: F401  (re-exported)
from robot_rl.data.frames import resize_image  # noqa: F401  (re-exported)
from robot_rl.spec import CONF_DIR, RobotSpec, load_spec

log = logging.getLogger(__name__)

CONTRACT_DIR = CONF_DIR / "contract"
POLICIES = ("latest", "hold", "drop")
QOS = ("reliable", "sensor")
GRIPPER_JOINT = "gripper"  # == robot_rl.ros.topics.GRIPPER_JOINT
STAMP_PREFIX = "stamp_"
NS = 1_000_000_000

JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
F32_ARRAY = "std_msgs/msg/Float32MultiArray"
F64_ARRAY = "std_msgs/msg/Float64MultiArray"
F32 = "std_msgs/msg/Float32"
F64 = "std_msgs/msg/Float64"
BOOL = "std_msgs/msg/Bool"
STRING = "std_msgs/msg/String"

# message type -> fields a contract may select ("position[<joint>]" style for JointState)
FIELDS: dict[str, tuple[str, ...]] = {
    JOINT_STATE: ("position", "velocity", "effort"),
    POSE_STAMPED: ("position", "orientation"),
    IMAGE: ("rgb",),
    COMPRESSED_IMAGE: ("rgb",),
    F32_ARRAY: ("data",),
    F64_ARRAY: ("data",),
    F32: ("data",),
    F64: ("data",),
    BOOL: ("data",),
}
# types that may stand in for each other in a bag (same meaning, other precision)
VARIANTS: dict[str, tuple[str, ...]] = {F32: (F32, F64), F64: (F32, F64),
                                        F32_ARRAY: (F32_ARRAY, F64_ARRAY), F64_ARRAY: (F32_ARRAY, F64_ARRAY)}
HAS_HEADER = {JOINT_STATE, POSE_STAMPED, IMAGE, COMPRESSED_IMAGE}
_JOINT_FIELD = re.compile(r"^(position|velocity|effort)\[([A-Za-z0-9_]+)\]$")


class ContractError(ValueError):
    """A recording contract is malformed or does not fit what it is used with."""


class MessageError(ValueError):
    """A message does not hold what the contract asks of it."""


def normalize_type(t: str) -> str:
    """``sensor_msgs/JointState`` -> ``sensor_msgs/msg/JointState``."""
    parts = str(t).strip().split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return "/".join(parts)


def to_ns(t: float) -> int:
    """Seconds (float) -> integer nanoseconds, exact for the float given (``from_ns`` inverts
    it for every float that is a whole number of ns)."""
    s = math.floor(t)
    return int(s) * NS + int(round((t - s) * NS))


def from_ns(ns: int) -> float:
    return ns / NS  # int / int: correctly rounded


# ---------------------------------------------------------------------------------------
# the contract as written
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    key: str  # dataset key (may hold "{camera}")
    field: str  # message field selector
    dtype: str | None = None  # stored dtype (default: float64 for Float64 types, else float32 / uint8)
    size: tuple[int, int] | None = None  # images: (h, w) the recorder resizes to (None: as the camera sends)


@dataclass(frozen=True)
class TopicSpec:
    topic: str  # may hold "{camera}"
    type: str
    fields: tuple[FieldSpec, ...]
    policy: str = "latest"
    rate: float | None = None  # expected Hz (None: the dataset fps)
    max_age: float | None = None  # s, latest/hold (default 2 / rate)
    tolerance: float | None = None  # s, drop (default min(1 / rate, latency))
    qos: str = "reliable"
    required: bool = True

    @property
    def per_camera(self) -> bool:
        return "{camera}" in self.topic or any("{camera}" in f.key for f in self.fields)


_TOP_KEYS = {"name", "description", "fps", "latency", "event_topic", "topics"}
_TOPIC_KEYS = {"topic", "type", "fields", "policy", "rate", "max_age", "tolerance", "qos", "required"}


@dataclass(frozen=True)
class Contract:
    """A recording contract as loaded (camera templates not yet expanded): see module doc."""

    name: str
    topics: tuple[TopicSpec, ...]
    fps: float | None = None
    latency: float = 0.1
    event_topic: str = "/teleop/event"
    description: str = ""
    source: str = ""  # file it was loaded from

    @classmethod
    def load(cls, name_or_path: "str | Path | Mapping[str, Any] | Contract") -> "Contract":
        """A contract by name (``sim`` -> ``robot_rl/conf/contract/sim.yaml``), YAML path or dict."""
        if isinstance(name_or_path, Contract):
            return name_or_path
        if isinstance(name_or_path, Mapping):
            return cls.from_dict(name_or_path)
        p = Path(name_or_path)
        if not p.suffix and "/" not in str(name_or_path):
            p = CONTRACT_DIR / f"{name_or_path}.yaml"
            if not p.is_file():
                raise ContractError(f"unknown contract {str(name_or_path)!r}; available: {available_contracts()} "
                                    f"(or pass a YAML path)")
        if not p.is_file():
            raise ContractError(f"contract file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ContractError(f"contract {p}: cannot read YAML: {e}") from None
        if not isinstance(d, Mapping):
            raise ContractError(f"contract {p}: expected a mapping at the top level")
        return cls.from_dict(d, source=str(p), default_name=p.stem)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "", default_name: str = "contract") -> "Contract":
        where = f"contract {source or d.get('name', default_name)}"
        unknown = set(d) - _TOP_KEYS
        if unknown:
            raise ContractError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
        name = str(d.get("name") or default_name)
        fps = _pos_float(d.get("fps"), f"{where}: fps", allow_none=True)
        latency = _pos_float(d.get("latency", 0.1), f"{where}: latency", allow_zero=True)
        event_topic = d.get("event_topic", "/teleop/event")
        if event_topic is not None and (not isinstance(event_topic, str) or not event_topic.startswith("/")):
            raise ContractError(f"{where}: event_topic must be an absolute topic name, got {event_topic!r}")
        raw_topics = d.get("topics")
        if not isinstance(raw_topics, list) or not raw_topics:
            raise ContractError(f"{where}: 'topics' must be a non-empty list of topic entries")
        topics = tuple(_parse_topic(t, f"{where}: topics[{i}]") for i, t in enumerate(raw_topics))
        c = cls(name=name, topics=topics, fps=fps, latency=float(latency), event_topic=event_topic,
                description=str(d.get("description") or ""), source=source)
        c._check(where)
        return c

    def _check(self, where: str) -> None:
        seen_topics: dict[str, int] = {}
        seen_keys: dict[str, str] = {}
        for t in self.topics:
            if t.topic in seen_topics:
                raise ContractError(f"{where}: topic {t.topic} is listed twice")
            seen_topics[t.topic] = 1
            if t.topic == self.event_topic:
                raise ContractError(f"{where}: {t.topic} is the event topic; it cannot also be a data topic")
            for f in t.fields:
                if f.key in seen_keys:
                    raise ContractError(f"{where}: dataset key {f.key!r} comes from both {seen_keys[f.key]} "
                                        f"and {t.topic}")
                seen_keys[f.key] = t.topic
            if t.policy == "drop" and t.tolerance is not None:
                tol = t.tolerance
                if tol > self.latency + 1e-12:
                    raise ContractError(f"{where}: {t.topic}: policy 'drop' looks {tol:g} s ahead for the "
                                        f"nearest message, more than latency {self.latency:g} s; raise "
                                        f"latency or lower tolerance")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "fps": self.fps, "latency": self.latency,
                "event_topic": self.event_topic,
                "topics": [{"topic": t.topic, "type": t.type, "policy": t.policy, "rate": t.rate,
                            "max_age": t.max_age, "tolerance": t.tolerance, "qos": t.qos, "required": t.required,
                            "fields": {f.key: _field_dict(f) for f in t.fields}} for t in self.topics]}

    def bind(self, spec: RobotSpec | str, cameras: Iterable[str] | None = None,
             fps: float | None = None) -> "BoundContract":
        """Expand camera templates for ``spec`` (all its cameras, or ``cameras``) and resolve
        rates, ages and joint names: what the aligner and the converters work with."""
        spec = load_spec(spec)
        cams = [c.name for c in spec.cameras] if cameras is None else list(cameras)
        for c in cams:
            spec.camera(c)  # SpecError for an unknown camera
        fps = float(fps or self.fps or spec.control_hz)
        if not (math.isfinite(fps) and fps > 0):
            raise ContractError(f"contract {self.name}: fps must be > 0, got {fps}")
        bindings: list[TopicBinding] = []
        for t in self.topics:
            for cam in (cams if t.per_camera else [None]):
                bindings.append(_bind_topic(t, spec, cam, fps, self.name, self.latency))
        return BoundContract(self, spec, fps, to_ns(self.latency), self.event_topic, bindings)


def _field_dict(f: FieldSpec) -> "str | dict[str, Any]":
    if f.dtype is None and f.size is None:
        return f.field
    d: dict[str, Any] = {"field": f.field}
    if f.dtype is not None:
        d["dtype"] = f.dtype
    if f.size is not None:
        d["size"] = list(f.size)
    return d


def available_contracts() -> list[str]:
    return sorted(p.stem for p in CONTRACT_DIR.glob("*.yaml"))


def _pos_float(v: Any, what: str, allow_none: bool = False, allow_zero: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ContractError(f"{what} must be a number, got {v!r}")
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ContractError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return float(v)


def _parse_topic(d: Any, where: str) -> TopicSpec:
    if not isinstance(d, Mapping):
        raise ContractError(f"{where}: expected a mapping with topic/type/fields, got {d!r}")
    unknown = set(d) - _TOPIC_KEYS
    if unknown:
        raise ContractError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_TOPIC_KEYS)}")
    topic = d.get("topic")
    if not isinstance(topic, str) or not topic.startswith("/"):
        raise ContractError(f"{where}: 'topic' must be an absolute topic name like /joint_states, got {topic!r}")
    where = f"{where} ({topic})"
    if "type" not in d:
        raise ContractError(f"{where}: 'type' is missing (e.g. sensor_msgs/msg/JointState)")
    typ = normalize_type(d["type"])
    if typ not in FIELDS:
        raise ContractError(f"{where}: unsupported message type {typ!r}; supported: {sorted(FIELDS)}")
    fields_raw = d.get("fields")
    if not isinstance(fields_raw, Mapping) or not fields_raw:
        raise ContractError(f"{where}: 'fields' must map dataset keys to message fields, e.g. "
                            f"{{joint_pos: position}}")
    fields = []
    for key, sel in fields_raw.items():
        dtype = size = None
        if isinstance(sel, Mapping):
            bad = set(sel) - {"field", "dtype", "size"}
            if bad or "field" not in sel:
                raise ContractError(f"{where}: field entry for {key!r} must be a name or {{field, dtype, size}}")
            sel, dtype, size = sel["field"], sel.get("dtype"), sel.get("size")
        if size is not None:
            if typ not in IMAGE_TYPES:
                raise ContractError(f"{where}: {key}: 'size' resizes images; {typ} is not an image type")
            if not (isinstance(size, (list, tuple)) and len(size) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
                raise ContractError(f"{where}: {key}: size must be [height, width] in pixels, got {size!r}")
            size = (int(size[0]), int(size[1]))
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_{}]+", key) or key.startswith(STAMP_PREFIX) \
                or key == "timestamp":
            raise ContractError(f"{where}: invalid dataset key {key!r} (letters, digits, _; not 'timestamp' "
                                f"or '{STAMP_PREFIX}*')")
        if not isinstance(sel, str) or not _valid_field(typ, sel):
            raise ContractError(f"{where}: unknown field {sel!r} for {typ}; fields: {list(FIELDS[typ])}"
                                + (" or position[<joint>] / velocity[<joint>] / effort[<joint>]"
                                   if typ == JOINT_STATE else ""))
        if dtype is not None:
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise ContractError(f"{where}: {key}: unknown dtype {dtype!r}") from None
            if dt.kind not in "biuf":
                raise ContractError(f"{where}: {key}: dtype must be numeric, got {dtype!r}")
            if typ in IMAGE_TYPES and dt != np.uint8:
                raise ContractError(f"{where}: {key}: images are stored as uint8, got dtype {dtype!r}")
            dtype = dt.name
        fields.append(FieldSpec(str(key), sel, dtype, size))
    policy = d.get("policy", "latest")
    if policy not in POLICIES:
        raise ContractError(f"{where}: policy must be one of {list(POLICIES)}, got {policy!r}")
    qos = d.get("qos", "sensor" if typ in IMAGE_TYPES else "reliable")
    if qos not in QOS:
        raise ContractError(f"{where}: qos must be one of {list(QOS)}, got {qos!r}")
    required = d.get("required", True)
    if not isinstance(required, bool):
        raise ContractError(f"{where}: required must be true or false, got {required!r}")
    return TopicSpec(topic=topic, type=typ, fields=tuple(fields), policy=policy,
                     rate=_pos_float(d.get("rate"), f"{where}: rate", allow_none=True),
                     max_age=_pos_float(d.get("max_age"), f"{where}: max_age", allow_none=True),
                     tolerance=_pos_float(d.get("tolerance"), f"{where}: tolerance", allow_none=True, allow_zero=True),
                     qos=qos, required=required)


def _valid_field(typ: str, sel: str) -> bool:
    if sel in FIELDS[typ]:
        return True
    return typ == JOINT_STATE and _JOINT_FIELD.match(sel) is not None


# ---------------------------------------------------------------------------------------
# the contract bound to a robot: concrete topics, extractors
# ---------------------------------------------------------------------------------------
@dataclass
class FieldBinding:
    key: str
    field: str
    dtype: np.dtype | None  # None: natural dtype of the message type (see TopicBinding.key_dtype)
    size: tuple[int, int] | None = None  # images: (h, w) to resize to


class _JointIndex:
    """JointState name list -> indices of the wanted joints (cached per name list)."""

    def __init__(self, joints: list[str], topic: str) -> None:
        self.joints = joints
        self.topic = topic
        self._cache: dict[tuple, np.ndarray] = {}

    def __call__(self, names: Any) -> np.ndarray:
        key = names if isinstance(names, tuple) else tuple(names)
        idx = self._cache.get(key)
        if idx is None:
            pos = {n: i for i, n in enumerate(key)}
            missing = [j for j in self.joints if j not in pos]
            if missing:
                raise MessageError(f"{self.topic}: JointState has no joint(s) {missing} (it names {list(key)})")
            idx = self._cache[key] = np.array([pos[j] for j in self.joints], np.intp)
        return idx


def _stamp_ns(msg: Any) -> int:
    st = msg.header.stamp
    return int(st.sec) * NS + int(st.nanosec)


def _image_rgb(msg: Any, topic: str) -> np.ndarray:
    enc = str(msg.encoding).lower()
    ch = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4, "8uc3": 3, "8uc1": 1}.get(enc)
    if ch is None:
        raise MessageError(f"{topic}: unsupported image encoding {msg.encoding!r} (rgb8, bgr8, rgba8, bgra8, mono8)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(memoryview(msg.data), dtype=np.uint8) if not isinstance(msg.data, np.ndarray) \
        else msg.data.view(np.uint8).reshape(-1)
    if step < w * ch or buf.size < h * step:
        raise MessageError(f"{topic}: image data too short: {buf.size} bytes for {h}x{w} {enc} step {step}")
    a = buf[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc.startswith("bgr"):
        a = a[..., [2, 1, 0]]
    elif ch == 4:
        a = a[..., :3]
    elif ch == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def compressed_image_rgb(msg: Any, topic: str) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg / png, any ``format`` spelling image_transport uses:
    ``jpeg``, ``rgb8; jpeg compressed bgr8`` ...) -> HxWx3 RGB uint8."""
    import cv2
    fmt = str(msg.format).lower()
    if not any(f in fmt for f in ("jpeg", "jpg", "png")):
        raise MessageError(f"{topic}: unsupported CompressedImage format {msg.format!r} (jpeg or png)")
    buf = msg.data if isinstance(msg.data, np.ndarray) else np.frombuffer(memoryview(msg.data), np.uint8)
    buf = buf.view(np.uint8).reshape(-1)
    if buf.size == 0:
        raise MessageError(f"{topic}: empty CompressedImage ({msg.format!r})")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # BGR; mono and alpha sources come back as 3 channels
    if img is None:
        raise MessageError(f"{topic}: CompressedImage of {buf.size} bytes does not decode as {msg.format!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class TopicBinding:
    """One concrete topic of a bound contract: what to read from it and how to align it."""

    topic: str
    type: str
    fields: tuple[FieldBinding, ...]
    policy: str
    rate: float  # expected Hz
    max_age_ns: int  # latest / hold
    tolerance_ns: int  # drop
    qos: str
    required: bool
    joints: list[str] = field(default_factory=list)  # arm joints (JointState)
    _extract: Callable[[Any], dict[str, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.fields]

    @property
    def has_header(self) -> bool:
        return self.type in HAS_HEADER

    @property
    def lookback_ns(self) -> int:
        return self.tolerance_ns if self.policy == "drop" else self.max_age_ns

    def accepts(self, msgtype: str) -> bool:
        """Whether a bag topic of ``msgtype`` can feed this binding (Float32/Float64 variants too)."""
        return normalize_type(msgtype) in VARIANTS.get(self.type, (self.type,))

    def key_dtype(self, key: str, msgtype: str | None = None) -> np.dtype:
        """The stored dtype of ``key`` (contract dtype, else uint8 images, float64 for Float64
        message types, float32 otherwise)."""
        fb = next(f for f in self.fields if f.key == key)
        if fb.dtype is not None:
            return fb.dtype
        t = normalize_type(msgtype or self.type)
        if t in IMAGE_TYPES:
            return np.dtype(np.uint8)
        if t == BOOL:
            return np.dtype(np.bool_)
        return np.dtype(np.float64 if t in (F64, F64_ARRAY) else np.float32)

    def stamp_ns(self, msg: Any, receipt_ns: int) -> int:
        """Header stamp of ``msg`` (receipt / log time for types without a header)."""
        return _stamp_ns(msg) if self.has_header else int(receipt_ns)

    def extract(self, msg: Any, msgtype: str | None = None) -> dict[str, np.ndarray]:
        """Dataset values from one decoded message (rosbags or rclpy message objects alike)."""
        if self._extract is None:
            self._extract = self._make_extractor(msgtype)
        return self._extract(msg)

    def _make_extractor(self, msgtype: str | None) -> Callable[[Any], dict[str, np.ndarray]]:
        topic = self.topic
        t = self.type
        parts: list[Callable[[Any], tuple[str, np.ndarray]]] = []
        for fb in self.fields:
            key, sel, dt = fb.key, fb.field, self.key_dtype(fb.key, msgtype)
            if t == JOINT_STATE:
                m = _JOINT_FIELD.match(sel)
                arr_name, joints = (m.group(1), [m.group(2)]) if m else (sel, self.joints)
                index = _JointIndex(joints, topic)

                def js(msg, key=key, arr_name=arr_name, index=index, dt=dt, joints=joints):
                    idx = index(msg.name)
                    arr = np.asarray(getattr(msg, arr_name), dtype=np.float64)
                    if arr.shape[0] < len(msg.name):
                        raise MessageError(f"{topic}: JointState has {arr.shape[0]} {arr_name} values for "
                                           f"{len(msg.name)} names; {key} needs {arr_name} of {joints}")
                    return key, arr[idx].astype(dt)
                parts.append(js)
            elif t == POSE_STAMPED:
                if sel == "position":
                    parts.append(lambda msg, key=key, dt=dt: (key, np.array(
                        [msg.pose.position.x, msg.pose.position.y, msg.pose.position.z], dtype=dt)))
                else:
                    parts.append(lambda msg, key=key, dt=dt: (key, np.array(
                        [msg.pose.orientation.w, msg.pose.orientation.x, msg.pose.orientation.y,
                         msg.pose.orientation.z], dtype=dt)))
            elif t in IMAGE_TYPES:
                decode = _image_rgb if t == IMAGE else compressed_image_rgb
                if fb.size is None:
                    parts.append(lambda msg, key=key, decode=decode: (key, decode(msg, topic)))
                else:
                    parts.append(lambda msg, key=key, decode=decode, size=fb.size:
                                 (key, resize_image(decode(msg, topic), size)))
            elif t in (F32_ARRAY, F64_ARRAY):
                parts.append(lambda msg, key=key, dt=dt: (key, np.asarray(msg.data).astype(dt).reshape(-1)))
            else:  # scalars
                parts.append(lambda msg, key=key, dt=dt: (key, np.asarray(msg.data, dtype=dt).reshape(())))

        def extract(msg: Any) -> dict[str, np.ndarray]:
            return dict(p(msg) for p in parts)
        return extract


def _bind_topic(t: TopicSpec, spec: RobotSpec, cam: str | None, fps: float, cname: str,
                latency: float) -> TopicBinding:
    sub = (lambda s: s.replace("{camera}", cam)) if cam else (lambda s: s)
    rate = t.rate or fps
    max_age = t.max_age if t.max_age is not None else 2.0 / rate
    # drop looks ahead for the nearest message: never further than the latency allows
    tol = t.tolerance if t.tolerance is not None else min(1.0 / rate, latency)
    fields = tuple(FieldBinding(sub(f.key), f.field, np.dtype(f.dtype) if f.dtype else None, f.size)
                   for f in t.fields)
    joints: list[str] = []
    if t.type == JOINT_STATE:
        joints = spec.joint_names
        for f in fields:
            m = _JOINT_FIELD.match(f.field)
            if m and m.group(2) not in joints + [GRIPPER_JOINT]:
                raise ContractError(f"contract {cname}: {t.topic}: field {f.field!r} names a joint that robot "
                                    f"{spec.name!r} does not have; joints: {joints + [GRIPPER_JOINT]}")
            if m and m.group(2) == GRIPPER_JOINT and spec.gripper is None:
                raise ContractError(f"contract {cname}: {t.topic}: {f.key} reads the gripper but robot "
                                    f"{spec.name!r} has none")
    return TopicBinding(topic=sub(t.topic), type=t.type, fields=fields, policy=t.policy, rate=float(rate),
                        max_age_ns=to_ns(max_age), tolerance_ns=to_ns(tol), qos=t.qos, required=t.required,
                        joints=joints)


class BoundContract:
    """A contract expanded for one robot (and camera set): concrete topics and keys."""

    def __init__(self, contract: Contract, spec: RobotSpec, fps: float, latency_ns: int,
                 event_topic: str | None, topics: list[TopicBinding]) -> None:
        self.contract = contract
        self.spec = spec
        self.fps = fps
        self.period_ns = NS / fps  # float; grid times are rounded per step
        self.latency_ns = latency_ns
        self.event_topic = event_topic
        self.topics: dict[str, TopicBinding] = {t.topic: t for t in topics}

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def keys(self) -> list[str]:
        return [k for t in self.topics.values() for k in t.keys]

    def topic_of(self, key: str) -> TopicBinding:
        for t in self.topics.values():
            if key in t.keys:
                return t
        raise KeyError(f"contract {self.name} has no dataset key {key!r}; keys: {self.keys}")

    def only(self, topics: Iterable[str]) -> "BoundContract":
        """A copy restricted to ``topics`` (e.g. optional topics absent from a bag dropped)."""
        keep = set(topics)
        return BoundContract(self.contract, self.spec, self.fps, self.latency_ns, self.event_topic,
                             [copy.copy(t) for n, t in self.topics.items() if n in keep])

    def grid_ns(self, start_ns: int, k: int) -> int:
        return start_ns + int(round(k * self.period_ns))

    def __repr__(self) -> str:
        return f"<BoundContract {self.name} robot={self.spec.name} fps={self.fps:g} topics={list(self.topics)}>"


# ---------------------------------------------------------------------------------------
# the aligner
# ---------------------------------------------------------------------------------------
Values = Union[Mapping[str, np.ndarray], Callable[[], Mapping[str, np.ndarray]]]


class _Sample:
    __slots__ = ("stamp", "_v")

    def __init__(self, stamp: int, v: Values) -> None:
        self.stamp = stamp
        self._v = v

    @property
    def values(self) -> Mapping[str, np.ndarray]:
        v = self._v
        if callable(v):  # decoded lazily: most messages of a fast topic are never used
            v = self._v = v()
        return v


class _Buffer:
    __slots__ = ("stamps", "samples")

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.samples: list[_Sample] = []

    def add(self, s: _Sample) -> None:
        if not self.stamps or s.stamp >= self.stamps[-1]:
            self.stamps.append(s.stamp)
            self.samples.append(s)
        else:  # out of stamp order (several publishers, transport reordering)
            i = bisect.bisect_right(self.stamps, s.stamp)
            self.stamps.insert(i, s.stamp)
            self.samples.insert(i, s)

    def prune(self, t_min: int) -> None:
        """Forget everything older than the newest sample with stamp <= t_min."""
        i = bisect.bisect_right(self.stamps, t_min) - 1
        if i > 0:
            del self.stamps[:i]
            del self.samples[:i]


@dataclass
class AlignedStep:
    """One step on the grid: values per dataset key and the stamp each came from."""

    t_ns: int
    index: int  # grid index k (t = start + k / fps); skipped steps leave holes
    values: dict[str, np.ndarray]
    stamps_ns: dict[str, int]  # per dataset key

    def store_step(self, offset_ns: int = 0) -> tuple[dict[str, np.ndarray], float]:
        """``(values + stamp_<key> float64 s, timestamp s)`` for ``Episode.add_step``;
        ``offset_ns`` is subtracted from every time."""
        d = dict(self.values)
        for k, s in self.stamps_ns.items():
            d[STAMP_PREFIX + k] = np.float64(from_ns(s - offset_ns))
        return d, from_ns(self.t_ns - offset_ns)


@dataclass
class AlignStats:
    """Telemetry of one episode's alignment (JSON-able via :meth:`to_dict`)."""

    grid_steps: int = 0  # grid times considered
    steps: int = 0  # emitted
    skipped: dict[str, dict[str, int]] = field(default_factory=lambda: {"missing": {}, "stale": {}, "no_match": {}})
    held: dict[str, int] = field(default_factory=dict)  # hold policy, older than max_age
    max_age_s: dict[str, float] = field(default_factory=dict)  # largest t - stamp used, per topic
    messages: dict[str, int] = field(default_factory=dict)  # received during the episode
    late: dict[str, int] = field(default_factory=dict)  # stamped before an already-emitted step
    start_ns: int = 0
    end_ns: int | None = None
    reset_ns: int | None = None  # re-anchored at the robot's announced reset (EpisodeAssembler.reset)
    dropped_before_reset: int = 0  # steps already assembled then dropped

    @property
    def skipped_steps(self) -> int:
        return self.grid_steps - self.steps

    def to_dict(self) -> dict[str, Any]:
        dur = ((self.end_ns if self.end_ns is not None else self.start_ns) - self.start_ns) / NS
        reset = ({} if self.reset_ns is None else
                 {"reset_stamp": from_ns(self.reset_ns), "dropped_before_reset": self.dropped_before_reset})
        return {**reset, "grid_steps": self.grid_steps, "steps": self.steps, "skipped_steps": self.skipped_steps,
                "skipped": {r: dict(v) for r, v in self.skipped.items() if v}, "held": dict(self.held),
                "max_age_s": {k: round(v, 6) for k, v in self.max_age_s.items()},
                "messages": dict(self.messages), "late": dict(self.late),
                "rate_hz": {k: round(n / dur, 3) for k, n in self.messages.items()} if dur > 0 else {}}

    def worst(self) -> str:
        """One line naming what caused most skipped steps (for error messages)."""
        items = [(n, r, t) for r, d in self.skipped.items() for t, n in d.items()]
        if not items:
            return "no step was skipped"
        n, r, t = max(items)
        why = {"missing": "had no message yet", "stale": "had no message recent enough (max_age)",
               "no_match": "had no message within tolerance"}[r]
        return f"{t} {why} at {n} of {self.grid_steps} grid steps"


class Aligner:
    """Samples every topic of a bound contract onto the dataset grid (see module doc).

    Feed it every message (:meth:`push`), open an episode grid with :meth:`start`, close it
    with :meth:`stop`, and collect steps from :meth:`advance` (``now`` = receipt time live,
    log time in a bag) or :meth:`flush` (end of stream). Times are integer nanoseconds."""

    def __init__(self, bound: BoundContract) -> None:
        self.bound = bound
        self._topics = bound.topics
        self._bufs = {t: _Buffer() for t in bound.topics}
        self._start: int | None = None
        self._end: int | None = None
        self._k = 0
        self._last_t: int | None = None  # last grid time processed
        self._now = -(1 << 62)
        self._wake = -(1 << 62)  # advance() has nothing to do while now <= _wake
        self.keep_from_ns: int | None = None  # never prune samples stamped at or after it (restart)
        self.stats = AlignStats()

    # -- state --------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """An episode grid is open (started, not all of its steps emitted yet)."""
        return self._start is not None

    @property
    def stopping(self) -> bool:
        return self._start is not None and self._end is not None

    @property
    def next_t(self) -> int | None:
        return None if self._start is None else self.bound.grid_ns(self._start, self._k)

    def push(self, topic: str, stamp_ns: int, values: Values) -> None:
        """One message of a contract topic: its stamp and dataset values (a dict, or a
        zero-argument callable returning one, decoded only if a step uses it)."""
        buf = self._bufs.get(topic)
        if buf is None:
            raise KeyError(f"topic {topic} is not in contract {self.bound.name}; topics: {list(self._bufs)}")
        stamp_ns = int(stamp_ns)
        buf.add(_Sample(stamp_ns, values))
        if self._start is not None and stamp_ns >= self._start and (self._end is None or stamp_ns <= self._end):
            st = self.stats
            st.messages[topic] = st.messages.get(topic, 0) + 1
            if self._last_t is not None and stamp_ns <= self._last_t:
                st.late[topic] = st.late.get(topic, 0) + 1

    def start(self, t_ns: int) -> None:
        """Open an episode grid at ``t_ns`` (the first step's time)."""
        if self._start is not None:
            raise RuntimeError("Aligner.start: an episode grid is already open; stop/flush or cancel it first")
        self._start, self._end, self._k, self._last_t = int(t_ns), None, 0, None
        self._wake = -(1 << 62)
        self.stats = AlignStats(start_ns=int(t_ns))

    def stop(self, t_ns: int) -> None:
        """The episode ends at ``t_ns``: grid steps after it are not produced."""
        if self._start is None:
            raise RuntimeError("Aligner.stop: no episode grid is open")
        self._end = max(int(t_ns), self._start - 1)
        self._wake = -(1 << 62)
        self.stats.end_ns = self._end

    def cancel(self) -> None:
        self._start = self._end = None
        self._wake = -(1 << 62)

    def restart(self, t_ns: int) -> None:
        """Move the open grid's first step to ``t_ns`` and forget the steps emitted so far
        (their telemetry too); messages already received that are stamped in the new grid count."""
        if self._start is None:
            raise RuntimeError("Aligner.restart: no episode grid is open")
        t_ns = int(t_ns)
        self._start, self._k, self._last_t = t_ns, 0, None
        self._wake = -(1 << 62)
        self.stats = AlignStats(start_ns=t_ns, end_ns=self._end)
        for topic, buf in self._bufs.items():
            n = len(buf.stamps) - bisect.bisect_left(buf.stamps, t_ns)
            if self._end is not None:
                n -= len(buf.stamps) - bisect.bisect_right(buf.stamps, self._end)
            if n > 0:
                self.stats.messages[topic] = n

    def advance(self, now_ns: int) -> list[AlignedStep]:
        """Steps whose time + latency has passed by ``now_ns``. Once a stopped episode's last
        step is out, the grid closes (``active`` turns False)."""
        if now_ns <= self._wake:  # nothing due yet (the common case: one call per message)
            return []
        self._now = max(self._now, int(now_ns))
        out: list[AlignedStep] = []
        if self._start is None:
            self._prune(self._now - self.bound.latency_ns)
            self._wake = self._now + NS // 10
            return out
        limit = self._now - self.bound.latency_ns
        while self._start is not None:
            t = self.bound.grid_ns(self._start, self._k)
            if self._end is not None and t > self._end:
                self._close()
                break
            if t >= limit:
                self._wake = t + self.bound.latency_ns
                break
            self._emit_into(t, out)
        return out

    def flush(self, until_ns: int | None = None) -> list[AlignedStep]:
        """End of stream: every remaining step up to the stop time (or ``until_ns`` / the
        newest message when not stopped) with what has arrived; closes the grid."""
        out: list[AlignedStep] = []
        if self._start is None:
            return out
        end = self._end
        if end is None:
            end = until_ns if until_ns is not None else max(
                (b.stamps[-1] for b in self._bufs.values() if b.stamps), default=self._start)
            self.stats.end_ns = end
        while True:
            t = self.bound.grid_ns(self._start, self._k)
            if t > end:
                break
            self._emit_into(t, out)
        self._close()
        return out

    def _close(self) -> None:
        self._start = self._end = None
        self._wake = -(1 << 62)

    def _emit_into(self, t: int, out: list[AlignedStep]) -> None:
        step = self._sample(t)
        if step is not None:
            out.append(step)
        self._last_t = t
        self._k += 1
        self._prune(self.bound.grid_ns(self._start, self._k))

    def _prune(self, t_next: int) -> None:
        keep = self.keep_from_ns
        for name, buf in self._bufs.items():
            if len(buf.stamps) > 1:
                t_min = t_next - self._topics[name].lookback_ns
                buf.prune(t_min if keep is None else min(t_min, keep))

    def _sample(self, t: int) -> AlignedStep | None:
        st = self.stats
        st.grid_steps += 1
        chosen: list[tuple[TopicBinding, _Sample]] = []
        failed = False
        for name, tb in self._topics.items():
            buf = self._bufs[name]
            stamps = buf.stamps
            i = bisect.bisect_right(stamps, t) - 1
            if tb.policy == "drop":
                best = None
                for j in (i, i + 1):
                    if 0 <= j < len(stamps) and abs(stamps[j] - t) <= tb.tolerance_ns:
                        if best is None or abs(stamps[j] - t) < abs(stamps[best] - t):
                            best = j
                if best is None:
                    d = st.skipped["missing" if not stamps else "no_match"]
                    d[name] = d.get(name, 0) + 1
                    failed = True
                    continue
                chosen.append((tb, buf.samples[best]))
                continue
            if i < 0:
                d = st.skipped["missing"]
                d[name] = d.get(name, 0) + 1
                failed = True
                continue
            age = t - stamps[i]
            if age > tb.max_age_ns:
                if tb.policy == "latest":
                    d = st.skipped["stale"]
                    d[name] = d.get(name, 0) + 1
                    failed = True
                    continue
                st.held[name] = st.held.get(name, 0) + 1
            chosen.append((tb, buf.samples[i]))
        if failed:
            return None
        values: dict[str, np.ndarray] = {}
        stamps_ns: dict[str, int] = {}
        for tb, s in chosen:
            v = s.values
            for k in tb.keys:
                try:
                    values[k] = v[k]
                except KeyError:
                    raise MessageError(f"{tb.topic}: decoded values lack key {k!r} (have {list(v)})") from None
                stamps_ns[k] = s.stamp
            age_s = (t - s.stamp) / NS
            if age_s > st.max_age_s.get(tb.topic, -math.inf):
                st.max_age_s[tb.topic] = age_s
        st.steps += 1
        return AlignedStep(t, self._k, values, stamps_ns)


# ---------------------------------------------------------------------------------------
# episodes: teleop events -> aligned episodes -> a sink
# ---------------------------------------------------------------------------------------
@dataclass
class EpisodeInfo:
    """An episode as the assembler sees it (handed to every sink call)."""

    number: int  # 0-based count of episodes started by this assembler
    start_ns: int
    task: str
    args: dict[str, str] = field(default_factory=dict)  # key=value words of the start event
    end_ns: int | None = None
    steps: int = 0
    end_reason: str = ""
    event_ns: int = 0  # when the start event came (start_ns moves to a robot's announced reset)


class EpisodeSink(Protocol):
    """Where assembled episodes go (see :class:`StoreSink`)."""

    def begin(self, ep: EpisodeInfo) -> None: ...

    def step(self, ep: EpisodeInfo, step: AlignedStep) -> None: ...

    def end(self, ep: EpisodeInfo, success: bool, stats: AlignStats) -> None: ...

    def discard(self, ep: EpisodeInfo, reason: str) -> None: ...

    # optional: ``restart(ep)`` drops the steps handed over so far (the episode goes on);
    # without it a robot's reset announcement that comes after the first step is ignored


class EpisodeAssembler:
    """Turns a stream of contract messages and teleop events into aligned episodes.

    Used identically by the live recorder (callbacks + a timer calling :meth:`tick`) and by
    the bag converter (messages and events in log-time order), so both give one dataset::

        asm = EpisodeAssembler(bound, sink, task="pick_cube")
        asm.message(topic, stamp_ns, values, now_ns)   # every contract message
        asm.event("start seed=3", now_ns)              # /teleop/event (or asm.start() etc.)
        asm.tick(now_ns)                               # emit due steps (timer, live)
        asm.close(now_ns)                              # end of stream

    A robot that resets for a start (the realtime twin) announces ``reset seed=N stamp=T``,
    T the stamp of its first post-reset observation. The open episode is then re-anchored
    (:meth:`reset`): steps already assembled are dropped and the grid restarts at
    ``T + period / 4`` (step 0 samples the reset observation; the quarter period keeps the
    grid clear of the jitter of the robot's stamps). A robot that never announces one (a real
    arm) changes nothing.
    """

    reset_window_ns = NS  # a reset announcement counts for an episode started at most this far away

    def __init__(self, bound: BoundContract, sink: EpisodeSink, task: str = "",
                 open_at_close: str = "discard") -> None:
        if open_at_close not in ("discard", "failure"):
            raise ValueError("open_at_close must be 'discard' or 'failure'")
        self.bound = bound
        self.sink = sink
        self.task = task
        self.open_at_close = open_at_close
        self.aligner = Aligner(bound)
        self._ep: EpisodeInfo | None = None
        self._ending: tuple[EpisodeInfo, bool] | None = None  # stopped, steps still due
        self._count = 0
        self._pending_reset: tuple[int, int, str | None] | None = None  # (now, stamp, seed) before its start
        self.warnings: list[str] = []
        self.committed = 0
        self.discarded = 0

    @property
    def recording(self) -> bool:
        """An episode is open (started, no end event yet)."""
        return self._ep is not None

    @property
    def finishing(self) -> bool:
        """An ended episode still waits for its last steps (``latency`` after the end)."""
        return self._ending is not None

    # -- inputs -------------------------------------------------------------------------
    def message(self, topic: str, stamp_ns: int, values: Values, now_ns: int) -> None:
        if now_ns > self.aligner._wake or self._ending is not None:
            self.tick(now_ns)
        self.aligner.push(topic, stamp_ns, values)

    def tick(self, now_ns: int) -> None:
        if self.aligner.keep_from_ns is not None and (
                self._ep is None or now_ns > self._ep.event_ns + self.reset_window_ns):
            self.aligner.keep_from_ns = None  # no reset announcement will come for it any more
        for s in self.aligner.advance(now_ns):
            self._deliver(s)
        if self._ending is not None and not self.aligner.active:
            self._finish_ending()

    def event(self, text: str, now_ns: int) -> None:
        """A /teleop/event message (std_msgs/String data)."""
        try:
            ev, args = parse_event(text)
        except ValueError as e:
            self._warn(f"ignored event at {from_ns(now_ns):.3f} s: {e}")
            return
        if ev == "reset":
            try:
                stamp = parse_stamp_ns(args["stamp"])
            except (KeyError, ValueError):
                self._warn(f"ignored event at {from_ns(now_ns):.3f} s: {text!r} needs stamp=<seconds>")
                return
            self.reset(now_ns, stamp, args.get("seed"))
            return
        {"start": lambda: self.start(now_ns, **args), "success": lambda: self.end(now_ns, True),
         "failure": lambda: self.end(now_ns, False), "discard": lambda: self.discard(now_ns),
         "rerecord": lambda: (self.discard(now_ns, "rerecord"), self.start(now_ns, **args))}[ev]()

    def reset(self, now_ns: int, stamp_ns: int, seed: str | None = None) -> bool:
        """The robot announced a reset (``reset seed=N stamp=T``): re-anchor the open episode at
        its first post-reset observation (see the class doc). It counts when the episode's
        start event came within ``reset_window_ns`` of T and the seeds agree (when both name
        one); one that comes just before its start event is kept for it. True if applied."""
        self.tick(now_ns)
        ep = self._ep
        seed = None if seed is None else str(seed)
        if ep is None or not self._reset_matches(ep, stamp_ns, seed):
            self._pending_reset = (int(now_ns), int(stamp_ns), seed)
            return False
        self._pending_reset = None
        anchor = int(stamp_ns) + int(self.bound.period_ns // 4)
        dropped = ep.steps
        if dropped:
            restart = getattr(self.sink, "restart", None)
            if restart is None:
                self._warn(f"episode {ep.number}: reset announced after {dropped} steps were handed to a sink "
                           f"that cannot drop them: not re-anchored")
                return False
            restart(ep)
            ep.steps = 0
        ep.start_ns = anchor
        self.aligner.keep_from_ns = None
        self.aligner.restart(anchor)
        self.aligner.stats.reset_ns = int(stamp_ns)
        self.aligner.stats.dropped_before_reset = dropped
        self.tick(now_ns)
        return True

    def _reset_matches(self, ep: EpisodeInfo, stamp_ns: int, seed: str | None) -> bool:
        if abs(int(stamp_ns) - ep.event_ns) > self.reset_window_ns:
            return False
        want = ep.args.get("seed")
        return seed is None or want is None or str(want) == seed

    def start(self, now_ns: int, **args: str) -> None:
        self.tick(now_ns)
        if self._ep is not None:
            self._warn(f"'start' at {from_ns(now_ns):.3f} s while episode {self._ep.number} is recording: "
                       f"it ends as a failure")
            self._ep.end_reason = "restarted"
            self.end(now_ns, False)
        self._force_finish()
        task = args.pop("task", None)
        task = urllib.parse.unquote(task) if task else self.task  # the exporter %-quotes spaces
        self._ep = EpisodeInfo(self._count, int(now_ns), task, dict(args), event_ns=int(now_ns))
        self._count += 1
        self.aligner.start(int(now_ns))
        # a robot's reset announcement may move the grid back to a stamp before now_ns
        self.aligner.keep_from_ns = int(now_ns) - self.reset_window_ns
        self.sink.begin(self._ep)
        pending, self._pending_reset = self._pending_reset, None
        if pending is not None and 0 <= now_ns - pending[0] <= self.reset_window_ns:
            self.reset(now_ns, pending[1], pending[2])  # it overtook its start event

    def end(self, now_ns: int, success: bool) -> None:
        self.tick(now_ns)
        if self._ep is None:
            self._warn(f"'{'success' if success else 'failure'}' at {from_ns(now_ns):.3f} s with no episode "
                       f"recording: ignored")
            return
        ep, self._ep = self._ep, None
        ep.end_ns = int(now_ns)
        self.aligner.stop(int(now_ns))
        self._ending = (ep, bool(success))
        self.tick(now_ns)

    def discard(self, now_ns: int, reason: str = "discard") -> None:
        self.tick(now_ns)
        if self._ep is None:
            if reason == "discard":
                self._warn(f"'discard' at {from_ns(now_ns):.3f} s with no episode recording: ignored")
            return
        ep, self._ep = self._ep, None
        ep.end_ns = int(now_ns)
        self.aligner.cancel()
        self.discarded += 1
        self.sink.discard(ep, reason)

    def close(self, now_ns: int | None = None) -> None:
        """End of stream: finish a stopped episode with what arrived; an episode still
        recording is discarded (``open_at_close='discard'``) or ended as a failure."""
        if now_ns is not None:
            self.tick(now_ns)
        if self._ep is not None:
            if self.open_at_close == "failure":
                self._ep.end_reason = "end of stream"
                last = max((b.stamps[-1] for b in self.aligner._bufs.values() if b.stamps),
                           default=self._ep.start_ns)
                self.end(max(last, self._ep.start_ns) if now_ns is None else now_ns, False)
            else:
                self._warn(f"episode {self._ep.number} (started at {from_ns(self._ep.start_ns):.3f} s) has no "
                           f"success/failure event before the end: discarded")
                self.discard(now_ns if now_ns is not None else self._ep.start_ns, "end of stream")
        self._force_finish()

    # -- internals ------------------------------------------------------------------------
    def _force_finish(self) -> None:
        if self._ending is not None:
            for s in self.aligner.flush():
                self._deliver(s)
            self._finish_ending()

    def _finish_ending(self) -> None:
        ep, success = self._ending  # type: ignore[misc]
        self._ending = None
        self.committed += 1
        self.sink.end(ep, success, self.aligner.stats)

    def _deliver(self, s: AlignedStep) -> None:
        ep = self._ending[0] if self._ending is not None else self._ep
        if ep is None:
            return
        ep.steps += 1
        self.sink.step(ep, s)

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning(msg)


# ---------------------------------------------------------------------------------------
# a sink that writes an episode store
# ---------------------------------------------------------------------------------------
class EmptyEpisodeError(ValueError):
    """An episode ended without a single aligned step."""


class StoreSink:
    """Writes assembled episodes into an :class:`~robot_rl.data.store.EpisodeStore`.

    Each step is stored with ``stamp_<key>`` (float64 s) next to the values and the grid time
    as ``timestamp``. A start-event argument ``t_offset_ns`` (written by the store -> bag
    converter) is subtracted from every time. The episode's ``extra`` gets the start-event
    arguments, ``align`` telemetry and ``extra``. An episode without steps raises
    :class:`EmptyEpisodeError` (``empty="error"``) or is skipped with a warning (``"skip"``)."""

    def __init__(self, store: Any, fps: float, source: str = "teleop", extra: Mapping[str, Any] | None = None,
                 empty: str = "error", describe: Callable[[EpisodeInfo], str] | None = None) -> None:
        if empty not in ("error", "skip"):
            raise ValueError("empty must be 'error' or 'skip'")
        self.store = store
        self.fps = float(fps)
        self.source = source
        self.extra = dict(extra or {})
        self.empty = empty
        self.describe = describe or (lambda ep: f"episode {ep.number}")
        self.committed: list[int] = []
        self.skipped: list[str] = []
        self._episode: Any = None
        self._offset = 0

    def begin(self, ep: EpisodeInfo) -> None:
        self._episode = None
        try:
            self._offset = int(ep.args.get("t_offset_ns", 0))
        except ValueError:
            raise MessageError(f"{self.describe(ep)}: start event argument t_offset_ns="
                               f"{ep.args['t_offset_ns']!r} is not an integer") from None

    def step(self, ep: EpisodeInfo, step: AlignedStep) -> None:
        if self._episode is None:
            extra = dict(self.extra)
            extra.update({k: _parse_arg(v) for k, v in ep.args.items() if k != "t_offset_ns"})
            self._episode = self.store.start_episode(task=ep.task or "unknown", source=self.source,
                                                     fps=self.fps, extra=extra)
        values, ts = step.store_step(self._offset)
        self._episode.add_step(values, timestamp=ts)

    def end(self, ep: EpisodeInfo, success: bool, stats: AlignStats) -> None:
        if self._episode is None:
            msg = (f"{self.describe(ep)} has no aligned steps: {stats.worst()}")
            if self.empty == "error":
                raise EmptyEpisodeError(msg)
            self.skipped.append(msg)
            log.warning("%s; skipped", msg)
            return
        extra = {"align": stats.to_dict()}
        if ep.end_reason:
            extra["end_reason"] = ep.end_reason
        self.committed.append(self._episode.commit(success=bool(success), extra=extra))
        self._episode = None

    def discard(self, ep: EpisodeInfo, reason: str) -> None:
        if self._episode is not None:
            self._episode.discard()
            self._episode = None

    def restart(self, ep: EpisodeInfo) -> None:
        """Drop the steps written so far; the episode goes on (a robot's reset announcement)."""
        if self._episode is not None:
            self._episode.discard()
            self._episode = None


def parse_stamp_ns(text: str) -> int:
    """``"12.050000000"`` (``<sec>.<nanosec>``, as the nodes write stamps into events) or any
    float seconds -> integer ns; exact for the sec.nanosec form."""
    sec, dot, frac = str(text).strip().partition(".")
    if dot and sec.lstrip("-").isdigit() and frac.isdigit() and len(frac) == 9:
        return int(sec) * NS + (int(frac) if not sec.startswith("-") else -int(frac))
    return to_ns(float(text))


def _parse_arg(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


__all__ = ["Contract", "TopicSpec", "FieldSpec", "BoundContract", "TopicBinding", "FieldBinding", "Aligner",
           "AlignedStep", "AlignStats", "EpisodeAssembler", "EpisodeInfo", "EpisodeSink", "StoreSink",
           "ContractError", "MessageError", "EmptyEpisodeError", "available_contracts", "parse_event",
           "normalize_type", "to_ns", "from_ns", "parse_stamp_ns", "POLICIES", "QOS", "FIELDS", "STAMP_PREFIX",
           "EVENTS"]
