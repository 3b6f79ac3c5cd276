"""rosbag2 IO on top of the ``rosbags`` library (no rclpy): open sqlite3 / mcap bags, pick the
typestore that matches the bag, decode messages, write bags.

- :func:`open_bag` reads a rosbag2 directory (``metadata.yaml`` + storage files, sqlite3
  or mcap), a bare ``.mcap`` file (what ``ros2 bag record -s mcap`` or any mcap writer
  produces) or a bare ``.db3`` file. Every failure is a :class:`BagError` naming the file
  and the cause (truncated mcap, corrupt sqlite, missing metadata.yaml, unknown type ...).
- Typestores: message definitions stored in the bag (mcap schemas, the sqlite3
  ``message_definitions`` table of Iron+ bags) win; types without one come from the ROS 2
  distribution's typestore (the bag's ``ros_distro``, else ``distro=``, else Humble for a
  bag without any definitions -- a Humble-or-older sqlite3 bag -- and Jazzy otherwise).
- :class:`JointStateDecoder` decodes ``sensor_msgs/msg/JointState`` CDR straight into
  numpy (several times faster than the generic deserializer; same result).
- :class:`BagWriter` writes a rosbag2 directory (mcap or sqlite3) or a bare ``.mcap`` /
  ``.db3`` file with the chosen distro's definitions embedded, with builders for the
  standard messages (``image`` for raw frames, ``compressed_image`` for JPEG / PNG bytes).
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)

NS = 1_000_000_000
DISTROS = ("humble", "iron", "jazzy", "kilted", "foxy", "galactic")
STORAGES = ("mcap", "sqlite3")


class BagError(ValueError):
    """A bag cannot be read or written as asked; the message names the file and the cause."""


def _stores():
    from rosbags.typesys import Stores
    return {"humble": Stores.ROS2_HUMBLE, "iron": Stores.ROS2_IRON, "jazzy": Stores.ROS2_JAZZY,
            "kilted": Stores.ROS2_KILTED, "foxy": Stores.ROS2_FOXY, "galactic": Stores.ROS2_GALACTIC}


_TYPESTORES: dict[str, Any] = {}


def typestore(distro: str = "jazzy"):
    """The rosbags typestore of a ROS 2 distribution (cached)."""
    distro = str(distro).lower()
    if distro not in _TYPESTORES:
        stores = _stores()
        if distro not in stores:
            raise BagError(f"unknown ROS 2 distribution {distro!r}; known: {sorted(stores)}")
        from rosbags.typesys import get_typestore
        _TYPESTORES[distro] = get_typestore(stores[distro])
    return _TYPESTORES[distro]


@dataclass
class BagTopic:
    name: str
    type: str
    count: int
    has_definition: bool  # the bag stores this type's definition
    qos: list  # offered QoS profiles as stored (rosbags Qos objects), may be empty


def _explain(path: Path, err: BaseException) -> str:
    """Turn a rosbags / apsw / struct error into one sentence about the bag."""
    text = " ".join(str(a) for a in getattr(err, "args", ())) or type(err).__name__
    name = type(err).__name__
    low = text.lower()
    if "end magic" in low or "truncated" in low or "invalid mcap footer" in low or "summary offset" in low:
        return (f"the mcap file is truncated or corrupt ({text.rstrip('.')}); an interrupted recording? "
                f"`mcap recover` can often rescue the messages")
    if "file magic" in low or "profile is not ros2" in low:
        return f"not a ROS 2 mcap file ({text.rstrip('.')})"
    if "not a database" in low or name in ("NotADBError", "CorruptError") or "malformed" in low \
            or "missing tables" in low:
        return f"the sqlite3 database is corrupt or not a rosbag2 database ({name}: {text.rstrip('.')})"
    if "checksum" in low or "size mismatch" in low or "chunk" in low or "record length" in low:
        return f"the mcap file is corrupt ({text.rstrip('.')})"
    return f"{name}: {text}"


def _read_errors() -> tuple[type[BaseException], ...]:
    from rosbags.rosbag2 import ReaderError
    errs: list[type[BaseException]] = [ReaderError, struct.error, EOFError, OSError, ValueError, KeyError,
                                       AssertionError, IndexError]
    try:
        import apsw
        errs.append(apsw.Error)
    except ImportError:  # pragma: no cover - rosbags depends on apsw
        pass
    try:
        from rosbags.serde import SerdeError
        errs.append(SerdeError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


class Bag:
    """An open rosbag2 (directory, bare .mcap or bare .db3). Use :func:`open_bag`."""

    def __init__(self, path: Path, distro: str | None = None) -> None:
        from rosbags.rosbag2 import Reader
        self.path = path
        self._errors = _read_errors()
        if not path.exists():
            raise BagError(f"{path}: no such bag (file or rosbag2 directory)")
        if path.is_dir():
            if not (path / "metadata.yaml").is_file():
                stores = sorted(p.name for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
                hint = (f"; it holds {', '.join(stores)}: pass that file to read it without metadata"
                        if stores else "")
                raise BagError(f"{path}: not a rosbag2 directory: metadata.yaml is missing{hint}")
            self.bare = False
        elif path.suffix in (".mcap", ".db3"):
            self.bare = True
        else:
            raise BagError(f"{path}: not a bag: expected a rosbag2 directory, a .mcap or a .db3 file")
        try:
            self._reader = Reader(path)
            self._reader.open()
        except Exception as e:  # noqa: BLE001 - rosbags / apsw / struct errors from a corrupt file
            raise BagError(f"{self._name()}: cannot open bag: {_explain(path, e)}") from None
        st = self._reader.storage
        if self.bare:
            self.storage = "mcap" if path.suffix == ".mcap" else "sqlite3"
        else:
            self.storage = "mcap" if any(type(s).__name__ == "McapReader" for s in st.storages) else "sqlite3"
        self.metadata_distro = (self._reader.ros_distro or "").lower() or None
        self._conns = list(self._reader.connections)
        self._build_typestores(distro)

    def _name(self) -> str:
        """The bag, and its storage file when it is a directory with one (for error messages)."""
        if self.path.is_dir():
            files = sorted(p.name for p in self.path.iterdir() if p.suffix in (".mcap", ".db3"))
            if len(files) == 1:
                return f"{self.path} ({files[0]})"
        return str(self.path)

    # -- typestores ------------------------------------------------------------------------
    def _build_typestores(self, distro: str | None) -> None:
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import Stores, TypesysError, get_typestore, get_types_from_idl, get_types_from_msg
        typs: dict = {}
        self._defined: set[str] = set()
        for c in self._conns:
            if c.msgdef.format == MessageDefinitionFormat.NONE or not c.msgdef.data.strip():
                continue
            try:
                if c.msgdef.format == MessageDefinitionFormat.MSG:
                    typs.update(get_types_from_msg(c.msgdef.data, c.msgtype))
                else:
                    sep = "=" * 80 + "\n"
                    data = c.msgdef.data
                    if data.startswith(f"{sep}IDL: "):
                        for part in data.split(sep)[1:]:
                            typs.update(get_types_from_idl(part.split("\n", 1)[1]))
                    else:
                        typs.update(get_types_from_idl(data))
            except Exception as e:  # noqa: BLE001 - a broken definition in the bag
                raise BagError(f"{self.path}: topic {c.topic}: the stored definition of {c.msgtype} cannot be "
                               f"parsed: {e}") from None
            self._defined.add(c.msgtype)
        self._defs = get_typestore(Stores.EMPTY)
        if typs:
            try:
                self._defs.register(typs)
            except TypesysError as e:
                raise BagError(f"{self.path}: conflicting message definitions in the bag: {e}") from None
        if distro is None and self.metadata_distro in DISTROS:
            distro = self.metadata_distro
        if distro is None:
            # no definitions at all: a bag from Humble or older (Iron+ store them)
            distro = "humble" if not self._defined else "jazzy"
        self.distro = distro
        self._distro_store = typestore(distro)

    def typestore_for(self, msgtype: str):
        """The typestore that decodes ``msgtype`` (the bag's own definitions first), or None."""
        if msgtype in self._defs.types:
            return self._defs
        if msgtype in self._distro_store.types:
            return self._distro_store
        return None

    def check_type(self, topic: str, msgtype: str) -> None:
        if self.typestore_for(msgtype) is None:
            raise BagError(f"{self.path}: topic {topic} has unknown message type {msgtype!r}: the bag stores no "
                           f"definition for it and ROS 2 {self.distro} does not know it (pass distro=... if the "
                           f"bag comes from another distribution)")

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        ts = self.typestore_for(msgtype)
        if ts is None:
            raise BagError(f"{self.path}: unknown message type {msgtype!r}")
        return ts.deserialize_cdr(raw, msgtype)

    # -- contents --------------------------------------------------------------------------
    @property
    def topics(self) -> dict[str, BagTopic]:
        out: dict[str, BagTopic] = {}
        for c in self._conns:
            t = out.get(c.topic)
            qos = list(getattr(c.ext, "offered_qos_profiles", []) or [])
            if t is None:
                out[c.topic] = BagTopic(c.topic, c.msgtype, int(c.msgcount), c.msgtype in self._defined, qos)
            else:
                if t.type != c.msgtype:
                    raise BagError(f"{self.path}: topic {c.topic} carries two message types, {t.type} and "
                                   f"{c.msgtype}")
                t.count += int(c.msgcount)
        return out

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, log_time_ns, raw CDR bytes)`` in log-time order."""
        conns = self._conns if topics is None else [c for c in self._conns if c.topic in set(topics)]
        if not conns:
            return
        it = self._reader.messages(connections=conns)
        while True:
            try:
                c, t, raw = next(it)
            except StopIteration:
                return
            except self._errors as e:
                raise BagError(f"{self._name()}: cannot read messages: {_explain(self.path, e)}") from None
            yield c.topic, c.msgtype, t, raw

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a broken file
                pass

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Bag {self.path} storage={self.storage} distro={self.distro} messages={self.message_count} "
                f"topics={len(self._conns)}>")


def open_bag(path: str | os.PathLike, distro: str | None = None) -> Bag:
    """Open a rosbag2 directory, bare .mcap or bare .db3 (``distro``: typestore for types the
    bag stores no definition of; default from the bag, see module doc)."""
    if distro is not None and str(distro).lower() not in DISTROS:
        raise BagError(f"unknown ROS 2 distribution {distro!r}; known: {list(DISTROS)}")
    return Bag(Path(path), None if distro is None else str(distro).lower())


# ---------------------------------------------------------------------------------------
# fast decoding
# ---------------------------------------------------------------------------------------
_STAMP_LE, _STAMP_BE = struct.Struct("<iI"), struct.Struct(">iI")


def header_stamp_ns(raw: bytes) -> int:
    """Header stamp of a CDR message whose first field is std_msgs/Header."""
    sec, nsec = (_STAMP_LE if raw[1] else _STAMP_BE).unpack_from(raw, 4)
    return sec * NS + nsec


class _Time:
    __slots__ = ("sec", "nanosec")

    def __init__(self, sec: int, nanosec: int) -> None:
        self.sec, self.nanosec = sec, nanosec


class _Header:
    __slots__ = ("stamp", "frame_id")

    def __init__(self, stamp: _Time, frame_id: str) -> None:
        self.stamp, self.frame_id = stamp, frame_id


class JointStateMsg:
    """What :class:`JointStateDecoder` returns: the JointState attributes the converters use."""

    __slots__ = ("header", "name", "position", "velocity", "effort")

    def __init__(self, header: _Header, name: tuple, position: np.ndarray, velocity: np.ndarray,
                 effort: np.ndarray) -> None:
        self.header, self.name, self.position, self.velocity, self.effort = header, name, position, velocity, effort


_U32 = struct.Struct("<I")
_HDR = struct.Struct("<iII")
_F8 = np.dtype("<f8")
_EMPTY = np.empty(0, _F8)


class JointStateDecoder:
    """sensor_msgs/msg/JointState CDR (little endian) -> :class:`JointStateMsg` with numpy
    arrays, without the generic deserializer; the name list is parsed once and reused while
    it stays the same. Big-endian data goes to ``fallback`` (the generic path)."""

    def __init__(self, fallback=None) -> None:
        self.fallback = fallback
        self._names_at = -1
        self._names_raw = b""
        self._names: tuple = ()
        self._names_end = 0
        self._frames: dict[bytes, str] = {}
        self._plan: tuple | None = None  # layout of the arrays after the names, last seen

    def __call__(self, raw: bytes) -> Any:
        if raw[1] != 1:  # big endian CDR: rare, let the generic deserializer do it
            if self.fallback is None:
                raise ValueError("big-endian CDR JointState and no fallback decoder")
            return self.fallback(raw)
        sec, nsec, flen = _HDR.unpack_from(raw, 4)
        fb = raw[16:16 + flen - 1] if flen else b""
        frame = self._frames.get(fb)
        if frame is None:
            frame = self._frames[fb] = fb.decode()
        q = 12 + flen  # offsets relative to the CDR payload (after the 4-byte encapsulation)
        q = (q + 3) & ~3
        if q == self._names_at and raw.startswith(self._names_raw, q + 4):
            names, q = self._names, self._names_end
        else:
            q0 = q
            (n,) = _U32.unpack_from(raw, q + 4)
            q += 4
            out = []
            for _ in range(n):
                q = (q + 3) & ~3
                (ln,) = _U32.unpack_from(raw, q + 4)
                out.append(raw[q + 8:q + 8 + ln - 1].decode())
                q += 4 + ln
            names = tuple(out)
            self._names_at, self._names_raw, self._names, self._names_end = q0, raw[q0 + 4:q + 4], names, q
        plan = self._plan
        if (plan is not None and plan[0] == q and len(raw) >= plan[3] and len(raw) >= q + 4 + plan[1].size
                and plan[1].unpack_from(raw, q + 4) == plan[2]):
            # same layout as the last message: one buffer view, three slices
            _, _, _, end, a0, cuts = plan
            block = np.frombuffer(raw, _F8, (end - a0 - 4) // 8, a0 + 4) if end > a0 + 4 else _EMPTY
            arrays = [block[i:j] if j > i else _EMPTY for i, j in cuts]
        else:
            arrays, q_names = [], q
            spots, counts, starts = [], [], []
            for _ in range(3):
                q = (q + 3) & ~3
                (n,) = _U32.unpack_from(raw, q + 4)
                spots.append(q)
                counts.append(n)
                q += 4
                if n:
                    q = (q + 7) & ~7
                    arrays.append(np.frombuffer(raw, _F8, n, q + 4))
                    starts.append(q)
                    q += 8 * n
                else:
                    arrays.append(_EMPTY)
                    starts.append(None)
            if q + 4 > len(raw):
                raise ValueError("JointState CDR data is truncated")
            a0 = next((x for x in starts if x is not None), q)
            fmt = "<" + "".join(f"{(b - a - 4) if i else (b - q_names)}xI" for i, (a, b) in
                                enumerate(zip([q_names] + spots[:-1], spots)))
            cuts = [((x - a0) // 8, (x - a0) // 8 + n) if x is not None else (0, 0) for x, n in zip(starts, counts)]
            self._plan = (q_names, struct.Struct(fmt), tuple(counts), q + 4, a0, cuts)
        return JointStateMsg(_Header(_Time(sec, nsec), frame), names, arrays[0], arrays[1], arrays[2])


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
class BagWriter:
    """Write a bag at ``path``: a rosbag2 directory (``storage`` mcap or sqlite3) or, when the
    path ends in ``.mcap`` / ``.db3``, one bare storage file. Definitions of the ``distro``
    typestore are embedded. The path must not exist. Use as a context manager; on an
    exception the partial output is removed."""

    def __init__(self, path: str | os.PathLike, storage: str = "mcap", distro: str = "jazzy") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        self.path = Path(path)
        if self.path.suffix in (".mcap", ".db3"):
            want = "mcap" if self.path.suffix == ".mcap" else "sqlite3"
            if storage != want:
                raise BagError(f"{self.path}: a {self.path.suffix} file is {want} storage, not {storage}")
            self.bare = True
        else:
            self.bare = False
        if storage not in STORAGES:
            raise BagError(f"unknown bag storage {storage!r}; choose one of {list(STORAGES)}")
        if self.path.exists():
            raise BagError(f"{self.path} exists already; choose a new output path")
        self.storage = storage
        self.typestore = typestore(distro)
        self.distro = distro
        self._dir = self.path.with_name(f".{self.path.name}.writing") if self.bare else self.path
        if self._dir.exists():
            shutil.rmtree(self._dir)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._w = Writer(self._dir, version=9, storage_plugin=plugin)
        self._conns: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self._open = False

    def __enter__(self) -> "BagWriter":
        self._w.open()
        self._open = True
        return self

    def add_topic(self, topic: str, msgtype: str, qos: list | None = None) -> None:
        if msgtype not in self.typestore.types:
            raise BagError(f"{self.path}: ROS 2 {self.distro} has no message type {msgtype!r}")
        self._conns[topic] = self._w.add_connection(topic, msgtype, typestore=self.typestore,
                                                    offered_qos_profiles=qos or [])
        self._types[topic] = msgtype

    def write(self, topic: str, log_ns: int, msg: Any) -> None:
        """Write ``msg`` (a typestore message object, or raw CDR bytes) at ``log_ns``."""
        raw = msg if isinstance(msg, (bytes, bytearray, memoryview)) else \
            self.typestore.serialize_cdr(msg, self._types[topic])
        self._w.write(self._conns[topic], int(log_ns), raw)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            try:
                self._w.abort()
            finally:
                shutil.rmtree(self._dir, ignore_errors=True)
            return
        self._w.close()
        if self.bare:
            files = [p for p in self._dir.iterdir() if p.suffix in (".mcap", ".db3")]
            assert len(files) == 1, files
            os.replace(files[0], self.path)
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- message builders (typestore classes) ----------------------------------------------
    def _t(self, name: str):
        return self.typestore.types[name]

    def header(self, stamp_ns: int, frame_id: str = ""):
        T, H = self._t("builtin_interfaces/msg/Time"), self._t("std_msgs/msg/Header")
        return H(stamp=T(sec=int(stamp_ns // NS), nanosec=int(stamp_ns % NS)), frame_id=frame_id)

    def joint_state(self, stamp_ns: int, names: list[str], position, velocity=None, effort=None):
        f = lambda a: np.zeros(0) if a is None else np.asarray(a, np.float64).reshape(-1)  # noqa: E731
        return self._t("sensor_msgs/msg/JointState")(header=self.header(stamp_ns), name=list(names),
                                                     position=f(position), velocity=f(velocity), effort=f(effort))

    def pose_stamped(self, stamp_ns: int, pos, quat_wxyz, frame_id: str = "base"):
        P, Pt, Q = (self._t(n) for n in ("geometry_msgs/msg/Pose", "geometry_msgs/msg/Point",
                                         "geometry_msgs/msg/Quaternion"))
        w, x, y, z = (float(v) for v in quat_wxyz)
        return self._t("geometry_msgs/msg/PoseStamped")(
            header=self.header(stamp_ns, frame_id),
            pose=P(position=Pt(x=float(pos[0]), y=float(pos[1]), z=float(pos[2])), orientation=Q(x=x, y=y, z=z, w=w)))

    def image(self, stamp_ns: int, arr: np.ndarray, frame_id: str = ""):
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise BagError(f"image must be HxWx1/3/4 uint8, got shape {arr.shape}")
        enc = {1: "mono8", 3: "rgb8", 4: "rgba8"}[arr.shape[2]]
        return self._t("sensor_msgs/msg/Image")(header=self.header(stamp_ns, frame_id), height=arr.shape[0],
                                                width=arr.shape[1], encoding=enc, is_bigendian=0,
                                                step=arr.shape[1] * arr.shape[2], data=arr.reshape(-1))

    def compressed_image(self, stamp_ns: int, data: bytes | bytearray | memoryview | np.ndarray,
                         format: str = "jpeg", frame_id: str = ""):
        """sensor_msgs/CompressedImage carrying ``data`` (already-encoded JPEG / PNG bytes, as
        stored; nothing is re-encoded). ``format`` as image_transport writes it: "jpeg", "png",
        or the long form ("rgb8; jpeg compressed bgr8")."""
        if not isinstance(format, str) or not format.strip():
            raise BagError(f"CompressedImage format must be a non-empty string like 'jpeg' or 'png', got {format!r}")
        buf = data.view(np.uint8).reshape(-1) if isinstance(data, np.ndarray) else \
            np.frombuffer(bytes(data), np.uint8)
        if buf.size == 0:
            raise BagError("CompressedImage data is empty")
        return self._t("sensor_msgs/msg/CompressedImage")(header=self.header(stamp_ns, frame_id), format=format,
                                                          data=buf)

    def multi_array(self, values, label: str = "", msgtype: str = "std_msgs/msg/Float32MultiArray"):
        dt = np.float64 if msgtype.endswith("Float64MultiArray") else np.float32
        v = np.asarray(values, dtype=dt).reshape(-1)
        D, L = self._t("std_msgs/msg/MultiArrayDimension"), self._t("std_msgs/msg/MultiArrayLayout")
        return self._t(msgtype)(layout=L(dim=[D(label=label, size=len(v), stride=len(v))], data_offset=0), data=v)

    def scalar(self, value, msgtype: str = "std_msgs/msg/Float32"):
        if msgtype == "std_msgs/msg/Bool":
            return self._t(msgtype)(data=bool(value))
        return self._t(msgtype)(data=float(value))

    def string(self, text: str):
        return self._t("std_msgs/msg/String")(data=str(text))


__all__ = ["Bag", "BagError", "BagTopic", "BagWriter", "JointStateDecoder", "JointStateMsg", "open_bag",
           "header_stamp_ns", "typestore", "DISTROS", "STORAGES"]
