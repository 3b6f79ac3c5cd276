"""Test bags "written by other tools".

A :class:`Session` is a synthetic teleop recording (plain-dict messages, like a robot
would publish them: joint states at 100 Hz, EE pose at 50 Hz, cameras at 30 Hz, ...,
header stamps a few ms before the log time, teleop events), with known ground truth.
It is written by

- :func:`write_rosbags`: rosbags' Writer (mcap or sqlite3, any typestore) -- case (a)/(b);
  ``humble_like=True`` rewrites a sqlite3 bag the way ROS 2 Humble stores it (schema 3,
  metadata version 5, no message definitions, no type hashes);
- :func:`write_mcap_ros2`: the independent ``mcap`` + ``mcap_ros2`` writer libraries, as
  ``ros2 bag record -s mcap`` produces them (ros2msg schemas with the .msg text of every
  dependency, cdr messages), either as a bare ``.mcap`` file or inside a rosbag2
  directory with a hand-written metadata.yaml -- case (c).

Message values are smooth functions of the header stamp (:func:`joint_values` etc.), so a
test can check any converted step against the stamp it reports.
"""
from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

NS = 1_000_000_000
T0 = 1_700_000_000 * NS + 123_456_789
VENV_SHARE = Path(__file__).resolve().parents[1] / ".venv" / "share"


# ---------------------------------------------------------------------------------------
# ground truth values
# ---------------------------------------------------------------------------------------
def joint_values(stamp_ns: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    s = (stamp_ns - T0) / NS
    pos = np.array([0.5 * math.sin(0.7 * s + j) for j in range(n)])
    vel = np.array([0.35 * math.cos(0.7 * s + j) for j in range(n)])
    return pos, vel


def gripper_value(stamp_ns: int) -> float:
    return 0.5 + 0.5 * math.sin((stamp_ns - T0) / NS * 1.3)


def pose_values(stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
    s = (stamp_ns - T0) / NS
    pos = np.array([0.2 + 0.01 * math.sin(s), -0.05 * math.cos(s), 0.1 + 0.002 * s])
    a = 0.3 * math.sin(0.5 * s)
    quat = np.array([math.cos(a / 2), 0.0, 0.0, math.sin(a / 2)])  # wxyz
    return pos, quat


def image_values(stamp_ns: int, hw: tuple[int, int], cam: str) -> np.ndarray:
    rng = np.random.default_rng([stamp_ns % (2 ** 32), len(cam)])
    return rng.integers(0, 256, (hw[0], hw[1], 3), dtype=np.uint8)


def array_values(stamp_ns: int, n: int, phase: float) -> np.ndarray:
    s = (stamp_ns - T0) / NS
    return np.array([math.sin(phase + s + 0.1 * i) for i in range(n)], dtype=np.float32)


def reward_value(stamp_ns: int) -> float:
    return float(np.float32(-0.1 * ((stamp_ns - T0) / NS % 3.0)))


# ---------------------------------------------------------------------------------------
# a synthetic session
# ---------------------------------------------------------------------------------------
@dataclass
class Msg:
    topic: str
    type: str
    log_ns: int
    stamp_ns: int
    data: dict


@dataclass
class EpisodeTruth:
    start_ns: int
    end_ns: int | None  # None: discarded / never ended
    outcome: str  # success | failure | discard
    task: str = ""
    args: dict = field(default_factory=dict)


@dataclass
class Session:
    joints: list[str]
    cameras: list[str]
    image_hw: tuple[int, int]
    object_dim: int
    action_dim: int
    msgs: list[Msg]
    episodes: list[EpisodeTruth]
    topics: dict[str, str]  # topic -> type

    def stamps(self, topic: str) -> np.ndarray:
        return np.array([m.stamp_ns for m in self.msgs if m.topic == topic], np.int64)


def _header(stamp_ns: int, frame: str = "") -> dict:
    return {"stamp": {"sec": stamp_ns // NS, "nanosec": stamp_ns % NS}, "frame_id": frame}


def make_session(joints=("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"),
                 cameras=("front", "wrist"), image_hw=(12, 16), object_dim=7, action_dim=7,
                 outcomes=("success", "failure", "success"), ep_s=2.0, gap_s=1.5, silent_gaps=False,
                 rates=None, seed=0, discard_one=False, extra_topics=None, events=True) -> Session:
    """Episodes of ``ep_s`` seconds separated by ``gap_s``; sensors run all the time unless
    ``silent_gaps`` (then only from 0.2 s before a start to 0.1 s after an end)."""
    rng = np.random.default_rng(seed)
    rates = {"/joint_states": 100.0, "/ee_pose": 50.0, "camera": 30.0, "/object_state": 10.0,
             "/action": 20.0, "/reward": 20.0, **(rates or {})}
    eps: list[EpisodeTruth] = []
    t = T0 + NS // 2
    plan = list(outcomes)
    if discard_one:
        plan.insert(1, "discard")
    for i, o in enumerate(plan):
        start = t
        end = start + int(ep_s * NS)
        eps.append(EpisodeTruth(start, end if o != "discard" else None, o, task="pick_cube", args={"seed": str(i)}))
        t = end + int(gap_s * NS)
    t_end = t - int(gap_s * NS) + NS // 2

    def active(ts: int) -> bool:
        if not silent_gaps:
            return True
        return any(e.start_ns - NS // 5 <= ts <= (e.end_ns or e.start_ns + int(ep_s * NS)) + NS // 10 for e in eps)

    msgs: list[Msg] = []
    topics: dict[str, str] = {}
    nj = len(joints)

    def periodic(topic: str, typ: str, rate: float, make, header: bool, phase_ns: int) -> None:
        topics[topic] = typ
        period = NS / rate
        k = 0
        while True:
            log = T0 + phase_ns + int(k * period)
            k += 1
            if log > t_end:
                break
            if not active(log):
                continue
            lat = int(rng.integers(1_000_000, 3_000_000)) if header else 0
            stamp = log - lat
            msgs.append(Msg(topic, typ, log, stamp, make(stamp)))

    def js(st):
        pos, vel = joint_values(st, nj)
        return {"header": _header(st, "base"), "name": list(joints) + ["gripper"],
                "position": list(pos) + [gripper_value(st)], "velocity": list(vel) + [0.0], "effort": []}

    def pose(st):
        p, q = pose_values(st)
        return {"header": _header(st, "base"), "pose": {"position": {"x": p[0], "y": p[1], "z": p[2]},
                                                        "orientation": {"x": q[1], "y": q[2], "z": q[3], "w": q[0]}}}

    def img(cam):
        def make(st):
            a = image_values(st, image_hw, cam)
            return {"header": _header(st, cam), "height": image_hw[0], "width": image_hw[1], "encoding": "rgb8",
                    "is_bigendian": 0, "step": image_hw[1] * 3, "data": a.tobytes()}
        return make

    def farr(n, phase, label=""):
        def make(st):
            v = array_values(st, n, phase)
            return {"layout": {"dim": [{"label": label, "size": n, "stride": n}], "data_offset": 0},
                    "data": [float(x) for x in v]}
        return make

    periodic("/joint_states", "sensor_msgs/msg/JointState", rates["/joint_states"], js, True, 3_000_000)
    periodic("/ee_pose", "geometry_msgs/msg/PoseStamped", rates["/ee_pose"], pose, True, 7_000_000)
    for i, c in enumerate(cameras):
        periodic(f"/camera/{c}/image_raw", "sensor_msgs/msg/Image", rates["camera"], img(c), True,
                 11_000_000 + 5_000_000 * i)
    periodic("/object_state", "std_msgs/msg/Float32MultiArray", rates["/object_state"], farr(object_dim, 1.0),
             False, 13_000_000)
    periodic("/action", "std_msgs/msg/Float32MultiArray", rates["/action"], farr(action_dim, 2.0, "ee_delta"),
             False, 17_000_000)
    periodic("/reward", "std_msgs/msg/Float32", rates["/reward"], lambda st: {"data": reward_value(st)}, False,
             19_000_000)
    for topic, (typ, rate, make) in (extra_topics or {}).items():
        periodic(topic, typ, rate, make, False, 23_000_000)
    if events:
        topics["/teleop/event"] = "std_msgs/msg/String"
        for e in eps:
            words = ["start", f"task={e.task}"] + [f"{k}={v}" for k, v in e.args.items()]
            msgs.append(Msg("/teleop/event", "std_msgs/msg/String", e.start_ns, e.start_ns, {"data": " ".join(words)}))
            if e.outcome == "discard":
                msgs.append(Msg("/teleop/event", "std_msgs/msg/String", e.start_ns + NS, e.start_ns + NS,
                                {"data": "discard"}))
            else:
                msgs.append(Msg("/teleop/event", "std_msgs/msg/String", e.end_ns, e.end_ns, {"data": e.outcome}))
    msgs.sort(key=lambda m: (m.log_ns, m.topic != "/teleop/event"))
    return Session(list(joints), list(cameras), image_hw, object_dim, action_dim, msgs, eps, topics)


# ---------------------------------------------------------------------------------------
# (a) / (b): rosbags' writer
# ---------------------------------------------------------------------------------------
def _to_rosbags(ts, typ: str, d: Any) -> Any:
    """Plain dict -> rosbags message object of ``typ`` (recursively, from the typestore)."""
    from rosbags.typesys.base import Nodetype
    cls = ts.types[typ]
    _, fields = ts.fielddefs[typ]
    kw = {}
    for name, (node, spec) in fields:
        v = d.get(name) if isinstance(d, dict) else None
        if node == Nodetype.NAME:
            kw[name] = _to_rosbags(ts, spec, v or {})
        elif node == Nodetype.BASE:
            base = spec[0]
            kw[name] = v if v is not None else ("" if base == "string" else 0)
            if base in ("float32", "float64") and v is not None:
                kw[name] = float(v)
        else:  # sequences / arrays
            sub_node, sub_spec = spec[0]
            if sub_node == Nodetype.NAME:
                kw[name] = [_to_rosbags(ts, sub_spec, x) for x in (v or [])]
            else:
                base = sub_spec[0]
                if base == "string":
                    kw[name] = list(v or [])
                else:
                    dt = {"float64": np.float64, "float32": np.float32, "uint8": np.uint8, "int8": np.int8,
                          "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "bool": np.bool_,
                          "octet": np.uint8}[base]
                    kw[name] = np.frombuffer(v, np.uint8).copy() if isinstance(v, (bytes, bytearray)) \
                        else np.asarray(v if v is not None else [], dtype=dt)
    return cls(**kw)


def write_rosbags(session: Session, path: Path, storage: str = "mcap", distro: str = "jazzy",
                  humble_like: bool = False) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore({"jazzy": Stores.ROS2_JAZZY, "humble": Stores.ROS2_HUMBLE}[distro])
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {t: w.add_connection(t, typ, typestore=ts) for t, typ in session.topics.items()}
        for m in session.msgs:
            w.write(conns[m.topic], m.log_ns, ts.serialize_cdr(_to_rosbags(ts, m.type, m.data), m.type))
    if humble_like:
        assert storage == "sqlite3"
        make_humble_like(path)
    return path


def make_humble_like(path: Path) -> None:
    """Rewrite a rosbags sqlite3 bag as ROS 2 Humble stores one: sqlite schema 3 (no
    message_definitions table, no type hashes), metadata.yaml version 5 without ros_distro."""
    db = next(path.glob("*.db3"))
    con = sqlite3.connect(db)
    con.executescript("""
        DROP TABLE message_definitions;
        CREATE TABLE topics_h(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                              serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
        INSERT INTO topics_h SELECT id, name, type, serialization_format, offered_qos_profiles FROM topics;
        DROP TABLE topics;
        ALTER TABLE topics_h RENAME TO topics;
        UPDATE schema SET schema_version = 3, ros_distro = 'humble';
        DROP TABLE metadata;
    """)
    con.commit()
    con.close()
    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    info["version"] = 5
    for k in ("ros_distro", "custom_data"):
        info.pop(k, None)
    for t in info["topics_with_message_count"]:
        t["topic_metadata"].pop("type_description_hash", None)
        t["topic_metadata"]["offered_qos_profiles"] = ""
    (path / "metadata.yaml").write_text(yaml.safe_dump(meta))


# ---------------------------------------------------------------------------------------
# (c): the mcap + mcap_ros2 writer libraries
# ---------------------------------------------------------------------------------------
_BUILTIN = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
            "int64", "uint64", "string", "wstring"}


def _msg_text(typ: str) -> str:
    pkg, _, name = typ.split("/")
    p = VENV_SHARE / pkg / "msg" / f"{name}.msg"
    if p.is_file():
        return p.read_text()
    from rosbags.typesys import Stores, get_typestore  # fallback where the .msg files are not installed
    return get_typestore(Stores.ROS2_JAZZY).generate_msgdef(typ, ros_version=2)[0].split("\n" + "=" * 80)[0]


def ros2msg_schema(typ: str) -> str:
    """The schema text ``ros2 bag record`` stores for ``typ``: its .msg file, then every
    dependency as ``====...\\nMSG: pkg/Name\\n<text>``."""
    pkg = typ.split("/")[0]
    seen: list[str] = []
    order: list[str] = []

    def deps(t: str, own_pkg: str) -> None:
        for line in _msg_text(t).splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or "=" in line.split()[0]:
                continue
            ftype = re.sub(r"\[.*\]$", "", line.split()[0])
            ftype = re.sub(r"<=\d+$", "", ftype)
            if ftype in _BUILTIN or ftype.startswith(("string<", "wstring<")):
                continue
            if "/" in ftype:
                dpkg, dname = ftype.split("/")[0], ftype.split("/")[-1]
            elif ftype == "Header":
                dpkg, dname = "std_msgs", "Header"
            else:
                dpkg, dname = own_pkg, ftype
            full = f"{dpkg}/msg/{dname}"
            if full not in seen:
                seen.append(full)
                deps(full, dpkg)
                order.append(full)

    deps(typ, pkg)
    parts = [_msg_text(typ)]
    for d in order:
        parts.append("=" * 80 + f"\nMSG: {d.replace('/msg/', '/')}\n" + _msg_text(d))
    return "\n".join(parts)


def write_mcap_ros2(session: Session, path: Path, rosbag2_dir: bool = False) -> Path:
    """A bare .mcap file (``path`` ending in .mcap) or, with ``rosbag2_dir``, a directory
    ``path`` holding ``<name>_0.mcap`` and a hand-written metadata.yaml (version 8, as
    Jazzy's rosbag2 writes it)."""
    from mcap_ros2.writer import Writer
    mcap_path = path / f"{path.name}_0.mcap" if rosbag2_dir else path
    if rosbag2_dir:
        path.mkdir(parents=True)
    counts: dict[str, int] = {}
    with open(mcap_path, "wb") as f:
        w = Writer(f)
        schemas = {typ: w.register_msgdef(typ, ros2msg_schema(typ)) for typ in set(session.topics.values())}
        for m in session.msgs:
            data = dict(m.data)
            if m.type == "sensor_msgs/msg/Image":
                data["data"] = list(data["data"])  # mcap_ros2 wants a list / bytes for uint8[]
            w.write_message(m.topic, schemas[m.type], data, log_time=m.log_ns, publish_time=m.log_ns)
            counts[m.topic] = counts.get(m.topic, 0) + 1
        w.finish()
    if rosbag2_dir:
        t0, t1 = min(m.log_ns for m in session.msgs), max(m.log_ns for m in session.msgs)
        meta = {"rosbag2_bagfile_information": {
            "version": 8, "storage_identifier": "mcap", "relative_file_paths": [mcap_path.name],
            "duration": {"nanoseconds": t1 - t0}, "starting_time": {"nanoseconds_since_epoch": t0},
            "message_count": len(session.msgs),
            "topics_with_message_count": [
                {"topic_metadata": {"name": t, "type": typ, "serialization_format": "cdr",
                                    "offered_qos_profiles": "", "type_description_hash": ""},
                 "message_count": counts.get(t, 0)} for t, typ in session.topics.items()],
            "compression_format": "", "compression_mode": "", "ros_distro": "jazzy",
            "files": [{"path": mcap_path.name, "starting_time": {"nanoseconds_since_epoch": t0},
                       "duration": {"nanoseconds": t1 - t0}, "message_count": len(session.msgs)}],
            "custom_data": {}}}
        (path / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return path


# ---------------------------------------------------------------------------------------
# a synthetic episode store shaped like `robot-rl record sim`
# ---------------------------------------------------------------------------------------
def make_sim_store(path: Path, robot: str = "so101", episodes: int = 3, steps: int = 25, image_hw=(96, 96),
                   seed: int = 0, with_stamps: bool = False, image_codecs: dict | None = None,
                   camera_like: bool = False):
    """Keys and dtypes of a `record sim` store (float32 state, float64 reward, uint8 images,
    timestamps from 0 per episode by accumulating dt), random values (full float32 precision).
    ``camera_like``: images are moving gradients + sigma=3 noise (what a camera sends, what
    JPEG is for) instead of uniform noise; ``image_codecs`` goes to EpisodeStore.create."""
    from robot_rl.data.store import EpisodeStore
    from robot_rl.spec import load_spec
    spec = load_spec(robot).with_cameras(None, image_hw[1], image_hw[0])
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, spec, **({"image_codecs": image_codecs} if image_codecs else {}))
    dt = 1.0 / spec.control_hz
    yy, xx = np.mgrid[0:image_hw[0], 0:image_hw[1]].astype(np.float32)
    for e in range(episodes):
        ep = store.start_episode(task="pick_cube", source="expert", fps=spec.control_hz,
                                 extra={"seed": 100 + e, "env": "sim", "action_mode": "ee_delta"})
        t = 0.0
        for k in range(steps):
            step = {"joint_pos": rng.standard_normal(spec.dof).astype(np.float32),
                    "joint_vel": rng.standard_normal(spec.dof).astype(np.float32),
                    "ee_pos": rng.standard_normal(3).astype(np.float32),
                    "ee_quat": rng.standard_normal(4).astype(np.float32),
                    "gripper": rng.random(1).astype(np.float32),
                    "object_state": rng.standard_normal(7).astype(np.float32),
                    "action": rng.standard_normal(7).astype(np.float32),
                    "reward": float(rng.standard_normal())}
            for c in spec.cameras:
                if camera_like:
                    base = np.stack([(xx + 3 * k) * 0.6, yy * 0.8 + 20 * e, 128 + 60 * np.sin((xx + yy) / 17 + k)], -1)
                    img = base + rng.normal(0, 3, base.shape)
                    step[f"image_{c.name}"] = np.clip(img, 0, 255).astype(np.uint8)
                else:
                    step[f"image_{c.name}"] = rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8)
            if with_stamps:
                for key in list(step):
                    step[f"stamp_{key}"] = np.float64(t - 0.001 * (k % 3))
            ep.add_step(step, timestamp=t)
            t += dt
        ep.commit(success=bool(e % 2 == 0), extra={"return": float(e)})
    store.close()
    return path
