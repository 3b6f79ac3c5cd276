"""rosbag2 <-> episode store converters (no rclpy).

- :func:`bag_to_store`: a rosbag2 (sqlite3 or mcap directory, bare .mcap / .db3) -> a new
  episode store, through the recording contract's :class:`~robot_rl.data.contract.EpisodeAssembler`
  (the same alignment the live recorder uses). Episodes are split by the teleop events,
  by time gaps, or by a list of time ranges.
- :func:`store_to_bag`: an episode store -> a rosbag2 (mcap or sqlite3; directory or bare
  file) with the standard messages of robot_rl.ros.topics and the teleop events, so it
  converts back into the same episodes (values and lossless images exactly). A JPEG-coded
  image key goes out as ``sensor_msgs/CompressedImage`` (format ``jpeg``) on the camera
  topic + ``/compressed`` (image_transport's name), carrying the stored JPEG bytes
  untouched; lossless keys stay ``sensor_msgs/Image``. Such a bag converts back through a
  contract whose camera topics are ``.../compressed`` of type CompressedImage.

Both build their output under a temporary name next to it and rename it into place at the
end: a failure leaves nothing behind.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from robot_rl.data.bag import BagWriter, JointStateDecoder, header_stamp_ns, open_bag
from robot_rl.data.contract import (BOOL, COMPRESSED_IMAGE, F32, F32_ARRAY, F64, F64_ARRAY, IMAGE, JOINT_STATE,
                                    NS, POSE_STAMPED,
                                    STAMP_PREFIX, STRING, BoundContract, Contract, EpisodeAssembler, EpisodeInfo,
                                    MessageError, StoreSink, TopicBinding, to_ns)
from robot_rl.data.store import TIMESTAMP, EpisodeStore
from robot_rl.spec import RobotSpec, load_spec

log = logging.getLogger(__name__)

SPLITS = ("events", "gaps", "times")


class ConvertError(ValueError):
    """The conversion cannot be done as asked; the message names the input and the cause."""


def _tmp_path(out: Path) -> Path:
    # same directory (so the final rename is atomic), hidden, suffix kept (bare bag files)
    return out.with_name(f".{out.stem}.converting-{uuid.uuid4().hex[:8]}{out.suffix}")


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def _check_out(out: Path) -> None:
    if out.exists():
        raise ConvertError(f"{out} exists already; choose a new output path (nothing was written)")
    if not out.parent.is_dir():
        raise ConvertError(f"cannot write {out}: directory {out.parent} does not exist")


def is_episode_store(path: str | os.PathLike) -> bool:
    p = Path(path)
    if not (p / "zarr.json").is_file():
        return False
    try:
        import json
        return json.loads((p / "zarr.json").read_text()).get("attributes", {}).get("format") == \
            "robot_rl.episode_store"
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------
# bag -> store
# ---------------------------------------------------------------------------------------
def _bind_to_bag(bound: BoundContract, bag, split: str) -> tuple[BoundContract, list[str]]:
    """Check the contract against the bag's topics; drop optional topics it lacks."""
    topics = bag.topics
    missing, present, notes = [], [], []
    for name, tb in bound.topics.items():
        bt = topics.get(name)
        if bt is None:
            if tb.required:
                missing.append(name)
            else:
                notes.append(f"optional topic {name} is not in the bag: its keys {tb.keys} are left out")
            continue
        bag.check_type(name, bt.type)
        if not tb.accepts(bt.type):
            raise ConvertError(f"{bag.path}: topic {name} has type {bt.type}, contract {bound.name} expects "
                               f"{tb.type}")
        present.append(name)
    if missing:
        have = ", ".join(f"{t} ({v.type})" for t, v in sorted(topics.items())) or "no topics"
        raise ConvertError(f"{bag.path}: topic(s) {', '.join(missing)} of contract {bound.name} are missing from "
                           f"the bag (it has {have}); record them, pick cameras=[...], or mark the topic "
                           f"'required: false' in the contract")
    if not present:
        raise ConvertError(f"{bag.path}: none of the contract's topics are in the bag")
    if split == "events":
        et = topics.get(bound.event_topic or "")
        if et is None:
            raise ConvertError(f"{bag.path}: split=events needs the event topic {bound.event_topic}, which the bag "
                               f"does not have; use split=gaps or split=times")
        if et.type != STRING:
            raise ConvertError(f"{bag.path}: event topic {bound.event_topic} has type {et.type}, expected {STRING}")
        bag.check_type(bound.event_topic, et.type)
    return bound.only(present), notes


def _decoder(bag, tb: TopicBinding, msgtype: str) -> Callable[[bytes], Any]:
    generic = (lambda raw: bag.deserialize(raw, msgtype))
    if msgtype == JOINT_STATE:
        return JointStateDecoder(fallback=generic)
    return generic


def _parse_times(times: Any, where: str) -> list[tuple[float, float]]:
    if isinstance(times, str):
        import yaml
        try:
            times = yaml.safe_load(times)
        except yaml.YAMLError as e:
            raise ConvertError(f"{where}: times must look like [[t0, t1], ...]: {e}") from None
    if not isinstance(times, (list, tuple)) or not times:
        raise ConvertError(f"{where}: times must be a non-empty list [[t0, t1], ...] (seconds from the bag start)")
    out = []
    for r in times:
        if (not isinstance(r, (list, tuple)) or len(r) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r)
                or not 0 <= r[0] < r[1]):
            raise ConvertError(f"{where}: bad time range {r!r}: expected [t0, t1] with 0 <= t0 < t1 (seconds "
                               f"from the bag start)")
        out.append((float(r[0]), float(r[1])))
    out.sort()
    for a, b in zip(out, out[1:]):
        if b[0] < a[1]:
            raise ConvertError(f"{where}: time ranges {list(a)} and {list(b)} overlap")
    return out


def bag_to_store(bag_path: str | os.PathLike, out: str | os.PathLike, *, robot: str | RobotSpec,
                 contract: str | Contract = "sim", split: str = "events", gap_s: float = 1.0,
                 times: Any = None, task: str | None = None, cameras: Sequence[str] | None = None,
                 distro: str | None = None, fps: float | None = None, empty: str = "error",
                 image_codecs: dict[str, str] | None = None) -> dict[str, Any]:
    """Convert a bag into a NEW episode store at ``out`` (see module doc); returns a report.

    ``split``: ``events`` (the contract's event topic), ``gaps`` (a silence longer than
    ``gap_s`` in the contract topics ends an episode) or ``times`` (``[[t0, t1], ...]`` in
    seconds from the bag's first message). ``task`` defaults to the bag's name (a start
    event's ``task=`` wins). ``empty``: an episode without aligned steps is an ``error``
    (default) or ``skip``\\ ped. ``image_codecs``: per image key "lossless" / "jpeg[:q]" for
    the new store (default: the store's, by image size)."""
    t_begin = time.perf_counter()
    bag_path, out = Path(bag_path), Path(out).absolute()
    if split not in SPLITS:
        raise ConvertError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if split == "gaps" and not (isinstance(gap_s, (int, float)) and gap_s > 0):
        raise ConvertError(f"gap_s must be > 0 seconds, got {gap_s!r}")
    ranges = _parse_times(times, str(bag_path)) if split == "times" else []
    if split != "times" and times is not None:
        raise ConvertError("times=... is only used with split=times")
    _check_out(out)
    spec = load_spec(robot)
    bound = Contract.load(contract).bind(spec, cameras=cameras, fps=fps)
    task = task or bag_path.stem or "converted"

    with open_bag(bag_path, distro=distro) as bag:
        bound, notes = _bind_to_bag(bound, bag, split)
        types = {t: v.type for t, v in bag.topics.items()}
        decoders = {t: _decoder(bag, tb, types[t]) for t, tb in bound.topics.items()}
        t0_bag = bag.start_ns

        def rel(ns: int) -> str:
            return f"{(ns - t0_bag) / NS:.3f} s"

        def describe(ep: EpisodeInfo) -> str:
            end = f", ended at {rel(ep.end_ns)}" if ep.end_ns is not None else ""
            return f"{bag_path}: episode {ep.number} (split={split}, started at {rel(ep.start_ns)}{end})"

        tmp = _tmp_path(out)
        store = None
        n_msgs = 0
        try:
            store = EpisodeStore.create(tmp, spec, **({"image_codecs": dict(image_codecs)} if image_codecs else {}))
            sink = StoreSink(store, bound.fps, source="converted", empty=empty, describe=describe,
                             extra={"bag": str(bag_path), "contract": bound.name, "split": split})
            asm = EpisodeAssembler(bound, sink, task=task)
            wanted = list(bound.topics) + ([bound.event_topic] if split == "events" else [])
            bounds = [(t0_bag + to_ns(a), t0_bag + to_ns(b)) for a, b in ranges]
            ri = 0  # next boundary: ranges[ri // 2], start if even
            last_log: int | None = None
            for topic, msgtype, log_ns, raw in bag.messages(wanted):
                n_msgs += 1
                if split == "times":
                    while ri < 2 * len(bounds) and bounds[ri // 2][ri % 2] <= log_ns:
                        b = bounds[ri // 2][ri % 2]
                        asm.start(b, range=str(ri // 2)) if ri % 2 == 0 else asm.end(b, False)
                        ri += 1
                elif split == "gaps":
                    if last_log is None or log_ns - last_log > gap_s * NS:
                        if last_log is not None:
                            asm.end(last_log, False)
                        asm.start(log_ns)
                    last_log = log_ns
                if topic == bound.event_topic and split == "events":
                    try:
                        text = bag.deserialize(raw, msgtype).data
                    except Exception as e:  # noqa: BLE001 - corrupt event message
                        raise ConvertError(f"{bag_path}: cannot decode the event at {rel(log_ns)}: {e}") from None
                    asm.event(text, log_ns)
                    continue
                tb = bound.topics[topic]
                try:
                    stamp = header_stamp_ns(raw) if tb.has_header else log_ns
                except Exception as e:  # noqa: BLE001
                    raise ConvertError(f"{bag_path}: {topic} message at {rel(log_ns)} is corrupt: {e}") from None
                asm.message(topic, stamp, _thunk(decoders[topic], tb, msgtype, raw, bag_path, log_ns, rel), log_ns)
            end_ns = bag.end_ns
            if split == "times":
                while ri < 2 * len(bounds):
                    b = bounds[ri // 2][ri % 2]
                    asm.start(b, range=str(ri // 2)) if ri % 2 == 0 else asm.end(b, False)
                    ri += 1
            elif split == "gaps" and last_log is not None:
                asm.end(last_log, False)
            asm.close(end_ns + bound.latency_ns + 1)
            if not sink.committed:
                why = {"events": "no start ... success/failure event pair", "gaps": "no contract messages",
                       "times": "no aligned steps in the given time ranges"}[split]
                skipped = f"; {len(sink.skipped)} episodes had no aligned steps: {sink.skipped[0]}" \
                    if sink.skipped else ""
                raise ConvertError(f"{bag_path}: no episodes to convert ({why}){skipped}")
            summary = store.summary()
            store.close()
            store = None
            os.rename(tmp, out)
        except BaseException:
            if store is not None:
                store.close()
            _remove(tmp)
            raise
    dt = time.perf_counter() - t_begin
    return {"bag": str(bag_path), "out": str(out), "storage": bag.storage, "typestore": bag.distro,
            "contract": bound.name, "robot": spec.name, "split": split, "fps": bound.fps,
            "episodes": summary["episodes"], "steps": summary["steps"], "successes": summary["successes"],
            "messages": n_msgs, "seconds": dt, "messages_per_s": n_msgs / dt if dt > 0 else None,
            "skipped_episodes": sink.skipped, "discarded_episodes": asm.discarded,
            "warnings": notes + asm.warnings}


def _thunk(decode, tb: TopicBinding, msgtype: str, raw: bytes, bag_path: Path, log_ns: int, rel):
    def values():
        try:
            return tb.extract(decode(raw), msgtype)
        except MessageError as e:
            raise ConvertError(f"{bag_path}: message at {rel(log_ns)}: {e}") from None
        except Exception as e:  # noqa: BLE001 - corrupt message data
            raise ConvertError(f"{bag_path}: {tb.topic} message at {rel(log_ns)} cannot be decoded as "
                               f"{msgtype}: {e}") from None
    return values


# ---------------------------------------------------------------------------------------
# store -> bag
# ---------------------------------------------------------------------------------------
def _export_type(tb: TopicBinding, dtypes: list[np.dtype]) -> str:
    """Message type for a topic: the contract's, in its Float64 variant when a key is float64
    (so no value is rounded)."""
    wide = any(np.dtype(d) == np.float64 for d in dtypes)
    if tb.type in (F32, F64):
        return F64 if wide else F32
    if tb.type in (F32_ARRAY, F64_ARRAY):
        return F64_ARRAY if wide else F32_ARRAY
    return tb.type


def _js_layout(tb: TopicBinding, keys: list[str]) -> tuple[list[str], list[tuple[str, str, Any]]]:
    """JointState names and (key, array, index) placements for the keys present."""
    import re
    names = list(tb.joints)
    place = []
    for fb in tb.fields:
        if fb.key not in keys:
            continue
        m = re.match(r"^(position|velocity|effort)\[(\w+)\]$", fb.field)
        if m:
            j = m.group(2)
            if j not in names:
                names.append(j)
            place.append((fb.key, m.group(1), names.index(j)))
        else:
            place.append((fb.key, fb.field, slice(0, len(tb.joints))))
    return names, place


def _codec(store: EpisodeStore, key: str) -> str | None:
    fn = getattr(store, "codec", None)  # stores from before per-key codecs: all lossless
    return fn(key) if callable(fn) else None


def _stored_jpegs(store: EpisodeStore, key: str, rows: np.ndarray) -> list[bytes]:
    """The JPEG bytes of ``rows`` of a JPEG-coded image key, exactly as stored (no decode,
    no generation loss). A frame the store holds no bytes for (an all-zero frame, which zarr
    does not store) or a layout the store's frame reader does not know is encoded afresh
    at the key's quality."""
    out: list[bytes | None] = [None] * len(rows)
    # EpisodeStore's own shard reader (what read_frames uses); not public API, hence the guard
    layout, frames = getattr(store, "_jpeg_layout", None), getattr(store, "_jpeg_frames", None)
    if callable(layout) and callable(frames):
        crc = layout(key)
        if crc is not None:
            out = list(frames(key, store.schema[key], np.asarray(rows, np.int64), crc))
    missing = [j for j, b in enumerate(out) if b is None]
    if missing:
        from robot_rl.data.codecs import jpeg_encode_frame, jpeg_quality
        q = jpeg_quality(str(_codec(store, key))) or 90
        for j, f in zip(missing, store.read_frames(key, rows[missing])):
            out[j] = jpeg_encode_frame(f, q)
    return out  # type: ignore[return-value]


def _png(frame: np.ndarray) -> bytes:
    import cv2
    f = np.ascontiguousarray(frame, np.uint8)
    if f.ndim == 3 and f.shape[2] in (3, 4):
        f = cv2.cvtColor(f, cv2.COLOR_RGB2BGR if f.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", f)
    if not ok:
        raise ConvertError(f"cannot encode a {frame.shape} frame as PNG")
    return buf.tobytes()


def _quote(v: Any) -> str:
    return urllib.parse.quote(str(v), safe="")


def _event_args(meta: dict[str, Any], offset_ns: int) -> list[str]:
    words = [f"task={_quote(meta['task'])}"]
    for k, v in sorted(meta["extra"].items()):
        if k in ("align", "task", "t_offset_ns", "bag", "contract", "split", "range") or \
                not isinstance(v, (int, float, str, bool)) or not k.replace("_", "").isalnum():
            continue
        if isinstance(v, str) and (not v or any(c.isspace() for c in v) or len(v) > 64):
            continue
        words.append(f"{k}={str(v).lower() if isinstance(v, bool) else v}")
    if offset_ns:
        words.append(f"t_offset_ns={offset_ns}")
    return words


def store_to_bag(dataset: str | os.PathLike, out: str | os.PathLike, *, contract: str | Contract = "sim",
                 storage: str | None = None, distro: str = "jazzy",
                 episodes: Iterable[int] | None = None, gap_s: float = 1.0) -> dict[str, Any]:
    """Write the episodes of a store as a NEW rosbag2 at ``out`` (see module doc): a
    directory (``storage`` mcap (default) or sqlite3) or, for ``*.mcap`` / ``*.db3``, one
    bare file. Header stamps come from ``stamp_<key>`` when stored, else ``timestamp``;
    episodes whose timestamps start at 0 are laid out after each other (``gap_s`` apart) and
    the shift is carried in the start event as ``t_offset_ns`` (removed again on import)."""
    t_begin = time.perf_counter()
    dataset, out = Path(dataset), Path(out).absolute()
    if storage is None:
        storage = "sqlite3" if out.suffix == ".db3" else "mcap"
    _check_out(out)
    store = EpisodeStore.open(dataset, mode="r")
    try:
        spec = store.spec
        schema = store.schema
        cams = [k[len("image_"):] for k in schema if k.startswith("image_")]
        cams = [c for c in cams if c in {cs.name for cs in spec.cameras}]
        bound = Contract.load(contract).bind(spec, cameras=cams)
        data_keys = [k for k in schema if k != TIMESTAMP and not k.startswith(STAMP_PREFIX)]
        mapped: dict[str, tuple[TopicBinding, list[str], str]] = {}
        for name, tb in bound.topics.items():
            ks = [k for k in tb.keys if k in schema]
            if ks:
                mt = _export_type(tb, [schema[k].dtype for k in ks])
                if mt == IMAGE and str(_codec(store, ks[0]) or "").startswith("jpeg"):
                    # the stored JPEG goes out as it is, the way image_transport names it
                    name, mt = name.rstrip("/") + "/compressed", COMPRESSED_IMAGE
                mapped[name] = (tb, ks, mt)
        covered = {k for _, ks, _ in mapped.values() for k in ks}
        warnings = [f"key {k!r} has no topic in contract {bound.name}: not exported"
                    for k in data_keys if k not in covered]
        if not mapped:
            raise ConvertError(f"{dataset}: none of its keys {data_keys} has a topic in contract {bound.name}")
        for name, (tb, ks, mt) in mapped.items():
            for k in ks:
                ksp = schema[k]
                if mt in (IMAGE, COMPRESSED_IMAGE) and (ksp.dtype != np.uint8 or len(ksp.shape) != 3 or ksp.shape[2] not in (1, 3, 4)):
                    raise ConvertError(f"{dataset}: key {k!r} ({ksp.dtype} {ksp.shape}) is not an HxWx1/3/4 uint8 "
                                       f"image; it cannot go on {name}")
        which = list(range(store.n_episodes)) if episodes is None else [int(i) for i in episodes]
        for i in which:
            if not 0 <= i < store.n_episodes:
                raise ConvertError(f"{dataset}: no episode {i}; it has {store.n_episodes}")
        if not which:
            raise ConvertError(f"{dataset}: no episodes to export")

        tmp = _tmp_path(out)
        n_msgs = 0
        try:
            with BagWriter(tmp, storage=storage, distro=distro) as w:
                for name, (tb, ks, mt) in mapped.items():
                    w.add_topic(name, mt)
                if bound.event_topic:
                    w.add_topic(bound.event_topic, STRING)
                cursor: int | None = None
                for i in which:
                    n, cursor, warn = _write_episode(w, store, i, bound, mapped, cursor, int(gap_s * NS))
                    n_msgs += n
                    warnings.extend(warn)
            os.rename(tmp, out)
        except BaseException:
            _remove(tmp)
            raise
    finally:
        store.close()
    dt = time.perf_counter() - t_begin
    return {"dataset": str(dataset), "out": str(out), "storage": storage, "distro": distro,
            "contract": bound.name, "episodes": len(which), "messages": n_msgs,
            "topics": {n: mt for n, (_, _, mt) in mapped.items()}, "seconds": dt, "warnings": warnings}


def _write_episode(w: BagWriter, store: EpisodeStore, i: int, bound: BoundContract,
                   mapped: dict[str, tuple[TopicBinding, list[str], str]], cursor: int | None,
                   gap_ns: int) -> tuple[int, int, list[str]]:
    meta = store.episode_meta(i)
    stamp_keys = {k: STAMP_PREFIX + k for _, ks, _ in mapped.values() for k in ks if STAMP_PREFIX + k in store.schema}
    # CompressedImage keys: JPEG-coded ones pass their stored bytes; lossless ones (a contract
    # that asks for CompressedImage) go out as PNG, still lossless
    jpeg_keys = [ks[0] for _, ks, mt in mapped.values()
                 if mt == COMPRESSED_IMAGE and str(_codec(store, ks[0]) or "").startswith("jpeg")]
    keys = [TIMESTAMP] + [k for _, ks, _ in mapped.values() for k in ks if k not in jpeg_keys] \
        + list(stamp_keys.values())
    ep = store.episode(i, keys=keys)
    lo = int(store.episode_ends[i - 1]) if i else 0
    rows = np.arange(lo, lo + len(ep[TIMESTAMP]), dtype=np.int64)
    jpegs = {k: _stored_jpegs(store, k, rows) for k in jpeg_keys}
    ns = [to_ns(float(x)) for x in ep[TIMESTAMP]]
    n = len(ns)
    warnings = []
    period = NS / float(meta["fps"])
    off_grid = max(abs(ns[k] - (ns[0] + int(round(k * period)))) for k in range(n))
    if off_grid > 1000:
        warnings.append(f"episode {i}: timestamps are off the {meta['fps']:g} Hz grid by up to {off_grid / 1e6:.3f} "
                        f"ms; converting the bag back resamples them onto the grid")
    if abs(float(meta["fps"]) - bound.fps) > 1e-9:
        warnings.append(f"episode {i} was recorded at {meta['fps']:g} Hz; contract {bound.name} converts back at "
                        f"{bound.fps:g} Hz")
    # lay the episode out in bag time
    absolute = ns[0] >= 10 ** 8 * NS  # epoch-like (after 1973)
    want = ns[0] if absolute else to_ns(float(meta["start_time"]))
    first_stamp = min([ns[0]] + [to_ns(float(ep[sk][0])) for sk in stamp_keys.values()])
    if cursor is not None:
        want = max(want, cursor + gap_ns + (ns[0] - first_stamp))
    offset = want - ns[0]
    msgs: list[tuple[int, int, str, Any]] = []  # (log, order, topic, msg)
    ev = bound.event_topic
    if ev:
        msgs.append((ns[0] + offset, 0, ev, w.string(" ".join(["start"] + _event_args(meta, offset)))))
    label = str(meta["extra"].get("action_mode", ""))
    for name, (tb, ks, mt) in mapped.items():
        last = None
        skey = stamp_keys.get(ks[0])
        stamps = [to_ns(float(x)) for x in ep[skey]] if skey else ns
        if tb.type == JOINT_STATE:
            names, place = _js_layout(tb, ks)
        for k in range(n):
            st = stamps[k] + offset
            if st == last:  # the same message served several steps
                continue
            last = st
            if tb.type == JOINT_STATE:
                arrs: dict[str, np.ndarray] = {}
                for key, arr, idx in place:
                    a = arrs.setdefault(arr, np.zeros(len(names)))
                    a[idx] = np.asarray(ep[key][k], np.float64).reshape(-1) if isinstance(idx, slice) \
                        else float(np.asarray(ep[key][k]).reshape(-1)[0])
                if "velocity" in arrs and "position" not in arrs:
                    arrs["position"] = np.zeros(len(names))
                msg = w.joint_state(st, names, arrs.get("position"), arrs.get("velocity"), arrs.get("effort"))
            elif tb.type == POSE_STAMPED:
                sel = {fb.field: fb.key for fb in tb.fields if fb.key in ks}
                pos = ep[sel["position"]][k] if "position" in sel else np.zeros(3)
                quat = ep[sel["orientation"]][k] if "orientation" in sel else np.array([1.0, 0, 0, 0])
                msg = w.pose_stamped(st, np.asarray(pos, np.float64), np.asarray(quat, np.float64))
            elif mt == COMPRESSED_IMAGE:
                if ks[0] in jpegs:
                    msg = w.compressed_image(st, jpegs[ks[0]][k], "jpeg")
                else:
                    msg = w.compressed_image(st, _png(ep[ks[0]][k]), "png")
            elif tb.type == IMAGE:
                msg = w.image(st, ep[ks[0]][k])
            elif mt in (F32_ARRAY, F64_ARRAY):
                msg = w.multi_array(ep[ks[0]][k], label=label if ks[0] == "action" else "", msgtype=mt)
            else:
                v = np.asarray(ep[ks[0]][k]).reshape(-1)
                if v.size != 1:
                    raise ConvertError(f"key {ks[0]!r} holds {v.size} values per step; {mt} carries one")
                msg = w.scalar(v[0], msgtype=BOOL if tb.type == BOOL else mt)
            msgs.append((st, 1, name, msg))
    end = ns[-1] + offset + int(period // 2)
    if ev:
        msgs.append((end, 2, ev, w.string("success" if meta["success"] else "failure")))
    msgs.sort(key=lambda m: (m[0], m[1]))
    for log_ns, _, topic, msg in msgs:
        w.write(topic, log_ns, msg)
    return len(msgs), max(end, msgs[-1][0]), warnings


__all__ = ["bag_to_store", "store_to_bag", "ConvertError", "is_episode_store", "SPLITS"]
