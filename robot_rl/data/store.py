"""Crash-safe episode store: a zarr v3 group in the diffusion_policy layout.

On disk (a directory, readable with plain ``zarr.open_group(path)``)::

    PATH/zarr.json              root group; its attributes are the COMMIT RECORD:
                                  format, format_version, robot (spec dict),
                                  robot_fingerprint, n_episodes, n_steps,
                                  schema {key: {dtype, shape, chunk_steps}},
                                  codecs {image key: "lossless" | "jpeg:<q>"} (absent in
                                  old stores: all lossless), image_codecs (the codecs
                                  asked for at create, applied when the keys appear)
    PATH/data/<key>             one array per per-step key, episodes concatenated
                                along axis 0 (``timestamp`` float64 s always present)
    PATH/meta/episode_ends      int64, cumulative end index of each episode
    PATH/meta/{success,fps,start_time,task,source,extra}
                                one entry per episode (extra = JSON text)

Commit protocol (the single atomic rename of ``PATH/zarr.json`` is the commit point):

1. while recording, full time-chunks are written to ``data/*`` *past* the committed
   end ``n_steps`` (a background thread compresses and writes them); the chunk that
   is shared with the previous episode is read-modified-written, and zarr's
   LocalStore replaces every file atomically (temp file + rename), so the committed
   rows in it are never torn;
2. ``commit()`` writes the rest, resizes ``data/*`` to the new end, appends the
   episode's entries to ``meta/*``;
3. it then rewrites the root attributes with ``n_episodes + 1`` / new ``n_steps``
   (atomic replace) and fsyncs that file and the directory;
4. readers trust only the commit record: rows >= ``n_steps`` and meta entries >=
   ``n_episodes`` do not exist for them;
5. opening for append (under an exclusive ``flock`` on the store directory) removes
   zarr's ``*.partial`` temp files and truncates whatever lies past the commit record,
   logging how many steps were dropped.

Image codecs (per key, chosen at create, recorded in the commit record): "lossless"
(blosc zstd-1 + bitshuffle, one chunk per time-chunk) or "jpeg:<q>" (a zarr v3 sharded
array: shard = the time-chunk, inner chunk = one frame, inner codec ``robot_rl.jpeg``;
see robot_rl/data/codecs.py). Default: JPEG q90 (4:4:4) for images whose smaller side is
>= 224 px, lossless for smaller ones. A partial shard write (the shard shared with the
previous episode) keeps the stored bytes of the frames it does not touch, so committed
frames are never re-encoded. Plain zarr readers must ``import robot_rl.data.codecs``.

Plain zarr / diffusion_policy readers should take the number of episodes from
``attrs["n_episodes"]`` (or ``meta/episode_ends``, which equals it except while a
commit is being torn) and read rows ``< episode_ends[-1]``.
"""
from __future__ import annotations

import asyncio
import atexit
import collections.abc
import fcntl
import json
import logging
import math
import os
import queue
import shutil
import sys
import threading
import time
import uuid
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.sync import sync as _zsync
from zarr.storage import LocalStore

from robot_rl.data.codecs import (DEFAULT_JPEG_QUALITY, JPEG_MIN_SIDE, LOSSLESS, JpegCodec,
                                   jpeg_quality, parse_codec_name)
from robot_rl.data.frames import resize_image
from robot_rl.spec import RobotSpec, SpecError, load_spec

log = logging.getLogger(__name__)

FORMAT = "robot_rl.episode_store"
FORMAT_VERSION = 1
SOURCES = ("teleop", "policy", "intervention", "expert", "converted")
TIMESTAMP = "timestamp"

# per-episode metadata arrays under meta/ (episode_ends first: the diffusion_policy one)
META_FIELDS: dict[str, Any] = {
    "episode_ends": "int64",
    "success": "bool",
    "fps": "float64",
    "start_time": "float64",
    "task": str,
    "source": str,
    "extra": str,
}
META_CHUNK = 4096
IMAGE_CHUNK_BYTES = 1 << 20  # ~1 MiB of raw frames per image chunk ...
IMAGE_CHUNK_STEPS = (10, 64)  # ... but between 10 and 64 frames
STATE_CHUNK_STEPS = 1024
STATE_CHUNK_BYTES = 4 << 20


async def _gather(*coros: Any) -> list:
    return await asyncio.gather(*coros)


class StoreError(ValueError):
    """The episode store cannot do what was asked; the message says why."""


def image_codec() -> BloscCodec:
    # measured on noisy synthetic 96x96 frames: zstd-1 + bitshuffle: ratio 1.38 (zstd-3: 1.42) at
    # ~220 MB/s (zstd-3: ~190); byte shuffle is a no-op for uint8, bitshuffle helps on noise
    return BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")


def state_codec() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def is_image(dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    return np.dtype(dtype) == np.uint8 and len(shape) == 3 and shape[2] in (1, 3, 4)


def jpeg_ok(dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    """JPEG can store it: uint8 (H, W, 1|3)."""
    return is_image(dtype, shape) and shape[2] in (1, 3)


def default_codec(dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
    """None (not an image), "lossless" (small images, RGBA) or "jpeg:90" (camera-sized)."""
    if not is_image(dtype, shape):
        return None
    if jpeg_ok(dtype, shape) and min(shape[0], shape[1]) >= JPEG_MIN_SIDE:
        return f"jpeg:{DEFAULT_JPEG_QUALITY}"
    return LOSSLESS


def _parse_codecs(codecs: Mapping[str, str] | None, what: str) -> dict[str, str]:
    """Validate / normalise an ``image_codecs`` mapping (names only; keys are checked
    against dtypes and shapes when the schema is known)."""
    if codecs is None:
        return {}
    if not isinstance(codecs, Mapping):
        raise StoreError(f"{what}: image_codecs must be a dict {{key: codec}}, got {type(codecs).__name__}")
    out: dict[str, str] = {}
    for k, v in codecs.items():
        if not isinstance(k, str) or not k:
            raise StoreError(f"{what}: image_codecs keys must be data key names, got {k!r}")
        try:
            out[k] = parse_codec_name(v)
        except ValueError as e:
            raise StoreError(f"{what}: image_codecs[{k!r}]: {e}") from None
    return out


@dataclass(frozen=True)
class KeySpec:
    """dtype / per-step shape / time-chunk length of one data key."""

    dtype: np.dtype
    shape: tuple[int, ...]
    chunk_steps: int

    @property
    def image(self) -> bool:
        return is_image(self.dtype, self.shape)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype.str, "shape": list(self.shape), "chunk_steps": self.chunk_steps}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "KeySpec":
        return cls(np.dtype(d["dtype"]), tuple(int(x) for x in d["shape"]), int(d["chunk_steps"]))


def default_chunk_steps(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    row = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    if is_image(dtype, shape):
        lo, hi = IMAGE_CHUNK_STEPS
        return int(min(hi, max(lo, IMAGE_CHUNK_BYTES // row)))
    return int(min(STATE_CHUNK_STEPS, max(10, STATE_CHUNK_BYTES // row)))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _dump_extra(extra: Mapping[str, Any] | None, what: str) -> str:
    if extra is None:
        return "{}"
    if not isinstance(extra, Mapping):
        raise StoreError(f"{what}: extra must be a dict, got {type(extra).__name__}")
    try:
        return json.dumps(dict(extra), default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what}: extra is not JSON serialisable: {e}") from None


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if not f.endswith(".partial"):
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
    return total


_NO_CHUNK = 2**64 - 1  # sharding index entry of an absent inner chunk


def _decode_jpeg(buf: bytes, shape: tuple[int, ...], size: tuple[int, int] | None) -> np.ndarray:
    """One stored JPEG -> (H, W, C), or (h, w, C) for ``size``: libjpeg DCT-scaled decode
    (1/8, 1/4, 1/2, the smallest that stays >= the target) then INTER_AREA resize."""
    H, W, C = shape
    if size is None:
        import imagecodecs
        return np.asarray(imagecodecs.jpeg8_decode(buf)).reshape(H, W, C)
    import cv2
    h, w = size
    f = next((f for f in (8, 4, 2) if h * f <= H and w * f <= W), 1)
    if f == 1:
        import imagecodecs
        img = np.asarray(imagecodecs.jpeg8_decode(buf)).reshape(H, W, C)
    else:
        color = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
        gray = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), (color if C == 3 else gray)[f])
        if img is None:
            raise StoreError("read_frames: a stored JPEG frame does not decode (corrupt data)")
        if C == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = img.reshape(img.shape[0], img.shape[1], C)
    return resize_image(img, (h, w))


class _TrackingLocalStore(LocalStore):
    """LocalStore that remembers which keys were written (to fsync them at commit)."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.written: set[str] = set()

    async def set(self, key: str, value: Any) -> None:  # type: ignore[override]
        await super().set(key, value)
        self.written.add(key)


# ---------------------------------------------------------------------------------------
# background writer
# ---------------------------------------------------------------------------------------
class _Writer:
    """One thread that does every zarr write of a store, in submission order.

    Chunk writes queued back to back are taken as one batch and run concurrently (per
    key: one resize, then all its chunks); within a batch no two writes touch the same
    chunk (an episode writes each chunk once, and any other job ends a batch)."""

    _STOP = object()

    def __init__(self, name: str, max_pending_bytes: int,
                 run_writes: Callable[[list[tuple[str, int, np.ndarray, KeySpec]]], None]) -> None:
        self._q: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self._pending = 0
        self._run_writes = run_writes
        self.max_pending_bytes = max_pending_bytes
        self.error: BaseException | None = None
        self.stall_s = 0.0  # total time callers were blocked by back-pressure
        self._thread = threading.Thread(target=self._run, name=f"episode-store-writer:{name}", daemon=True)
        self._thread.start()

    def write(self, key: str, lo: int, rows: np.ndarray, ks: KeySpec) -> None:
        """Queue rows [lo, lo+len(rows)) of data/<key>; blocks only if the writer is
        max_pending_bytes behind (back-pressure bounds memory)."""
        nbytes = rows.nbytes
        with self._cond:
            if self._pending > 0 and self._pending + nbytes > self.max_pending_bytes:
                t0 = time.perf_counter()
                while (self._pending > 0 and self._pending + nbytes > self.max_pending_bytes
                       and self.error is None):
                    self._cond.wait(0.1)
                self.stall_s += time.perf_counter() - t0
            self._pending += nbytes
        self._q.put(("w", key, lo, rows, ks))

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run fn on the writer thread after everything queued before it."""
        fut: Future = Future()
        self._q.put(("f", fn, fut))
        return fut

    def _run(self) -> None:
        item = None
        while True:
            if item is None:
                item = self._q.get()
            if item is self._STOP:
                return
            if item[0] == "w":
                batch = []
                while item is not None and item is not self._STOP and item[0] == "w":
                    batch.append(item[1:])
                    try:
                        item = self._q.get_nowait()
                    except queue.Empty:
                        item = None
                try:
                    if self.error is None:
                        self._run_writes(batch)
                except BaseException as e:  # noqa: BLE001 - surfaced by the next call
                    self.error = e
                finally:
                    with self._cond:
                        self._pending -= sum(job[2].nbytes for job in batch)
                        self._cond.notify_all()
                continue
            _, fn, fut = item
            item = None
            try:
                if self.error is not None:
                    raise StoreError(f"an earlier background write failed: {self.error!r}")
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - reported to the caller
                if self.error is None:
                    self.error = e
                fut.set_exception(e)

    def wait(self) -> None:
        self.call(lambda: None).result()

    def stop(self) -> None:
        self._q.put(self._STOP)
        self._thread.join()


# ---------------------------------------------------------------------------------------
# recording one episode
# ---------------------------------------------------------------------------------------
class Episode:
    """An episode being recorded. Steps are buffered per time-chunk; full chunks go to
    the background writer; nothing is visible to readers until :meth:`commit`."""

    def __init__(self, store: "EpisodeStore", task: str, source: str, fps: float,
                 extra: Mapping[str, Any] | None, start_time: float) -> None:
        self._store = store
        self.task = task
        self.source = source
        self.fps = fps
        self.start_time = start_time
        self._extra = dict(extra or {})
        self.index = store._n_episodes  # the index it gets if committed
        self._p0 = store._n_steps  # absolute row of the first step
        self._p = self._p0
        self._bufs: dict[str, np.ndarray] = {}
        self._buf_lo: dict[str, int] = {}  # absolute row of bufs[k][0] (chunk aligned)
        self._fill_lo: dict[str, int] = {}  # first absolute row not yet handed to the writer
        self._closed = False

    def __len__(self) -> int:
        return self._p - self._p0

    @property
    def n_steps(self) -> int:
        return self._p - self._p0

    @property
    def open(self) -> bool:
        return not self._closed

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise StoreError(f"cannot {what}: episode {self.index} was already committed or discarded")
        self._store._check_writer(what)

    def add_step(self, step: Mapping[str, Any], timestamp: float | None = None) -> None:
        """Buffer one step. Validated here (same keys, dtypes, shapes as the store), so a bad
        step raises StoreError before anything is written; the episode stays usable."""
        self._check_open("add a step")
        st = self._store
        if not isinstance(step, Mapping):
            raise StoreError(f"add_step expects a dict of arrays, got {type(step).__name__}")
        if TIMESTAMP in step:
            if timestamp is not None:
                raise StoreError("add_step: timestamp given both in the step dict and as argument")
            timestamp = step[TIMESTAMP]
        if timestamp is None:
            timestamp = time.time()
        try:
            ts = float(timestamp)
        except (TypeError, ValueError):
            raise StoreError(f"add_step: timestamp must be a number (seconds), got {timestamp!r}") from None
        values: dict[str, np.ndarray] = {}
        for k, v in step.items():
            if k != TIMESTAMP:
                values[k] = np.asarray(v)
        values[TIMESTAMP] = np.float64(ts)  # type: ignore[assignment]

        schema = st._schema
        if schema is None:  # first step into an empty store defines the keys
            schema, codecs = st._make_schema(values)
            st._schema, st._schema_codecs = schema, codecs
        else:
            if values.keys() != schema.keys():
                missing = sorted(set(schema) - set(values))
                extra = sorted(set(values) - set(schema))
                raise StoreError(
                    f"step {self.n_steps} of episode {self.index} has different keys than the store: "
                    f"missing {missing}, unexpected {extra}; the store holds {sorted(schema)}")
            for k, ks in schema.items():
                v = values[k]
                if v.dtype != ks.dtype or v.shape != ks.shape:
                    raise StoreError(
                        f"step {self.n_steps} of episode {self.index}: key {k!r} expected shape "
                        f"{ks.shape} dtype {ks.dtype}, got shape {v.shape} dtype {v.dtype} "
                        f"(the step was rejected; nothing recorded is lost)")

        p = self._p
        for k, ks in schema.items():
            buf = self._bufs.get(k)
            if buf is None:
                lo = (p // ks.chunk_steps) * ks.chunk_steps
                buf = self._bufs[k] = np.empty((ks.chunk_steps,) + ks.shape, ks.dtype)
                self._buf_lo[k] = lo
                self._fill_lo[k] = p
            buf[p - self._buf_lo[k]] = values[k]
        self._p = p + 1
        for k, ks in schema.items():
            if self._p - self._buf_lo[k] == ks.chunk_steps:
                self._flush_key(k)

    def _flush_key(self, k: str) -> None:
        buf = self._bufs.pop(k, None)
        if buf is None:
            return
        lo, blo = self._fill_lo[k], self._buf_lo[k]
        if self._p > lo:
            self._store._submit_rows(k, lo, buf[lo - blo:self._p - blo])

    def commit(self, success: bool, extra: Mapping[str, Any] | None = None) -> int:
        """Write the episode and commit it atomically; returns its index once durable."""
        self._check_open("commit")
        if self.n_steps == 0:
            raise StoreError(f"cannot commit episode {self.index}: it has no steps (discard it instead)")
        if not isinstance(success, (bool, np.bool_)):
            raise StoreError(f"commit: success must be a bool, got {success!r}")
        merged = dict(self._extra)
        merged.update(extra or {})
        extra_json = _dump_extra(merged, f"episode {self.index}")
        final = []  # the partial last chunk of each key: written by the commit job itself
        for k, buf in self._bufs.items():
            lo, blo = self._fill_lo[k], self._buf_lo[k]
            if self._p > lo:
                final.append((k, lo, buf[lo - blo:self._p - blo]))
        self._bufs.clear()
        self._closed = True
        return self._store._commit(self, bool(success), extra_json, final)

    def discard(self) -> None:
        """Drop this episode; nothing of it becomes visible."""
        if self._closed:
            return
        self._closed = True
        self._bufs.clear()
        self._store._discard(self)

    def __repr__(self) -> str:
        state = "open" if not self._closed else "closed"
        return f"<Episode {self.index} task={self.task!r} source={self.source} steps={self.n_steps} {state}>"


# ---------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------
class _DataView(collections.abc.Mapping):
    """``store.data[key]`` -> lazy zarr array (rows >= store.n_steps are not committed)."""

    def __init__(self, store: "EpisodeStore") -> None:
        self._store = store

    def __getitem__(self, key: str) -> zarr.Array:
        return self._store._read_array(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.keys)

    def __len__(self) -> int:
        return len(self._store.keys)


class EpisodeStore:
    """Episodes of (observation, action, ...) steps in a zarr v3 directory; see module doc.

    Use :meth:`create`, :meth:`open` or :meth:`open_or_create`, not the constructor.
    """

    def __init__(self, path: Path, mode: str, attrs: Mapping[str, Any], lock_fd: int | None,
                 fsync_data: bool = False, max_pending_bytes: int = 256 << 20,
                 image_codecs: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.mode = mode
        self._lock_fd = lock_fd
        self._closed = False
        self._fsync_data = fsync_data
        self._load_attrs(attrs)
        self._apply_codec_request(_parse_codecs(image_codecs, f"episode store {path}"))
        self._schema: dict[str, KeySpec] | None = self._committed_schema or None
        self._schema_codecs: dict[str, str] = dict(self._codecs)  # codecs of self._schema
        self._jpeg_layouts: dict[str, bool | None] = {}
        self._episode: Episode | None = None
        self._rarrays: dict[str, zarr.Array] = {}
        self._ends: np.ndarray | None = None
        self._meta: dict[str, list] | None = None
        self._writer: _Writer | None = None
        if mode == "a":
            self._wstore = _TrackingLocalStore(path)
            self._wroot = zarr.open_group(store=self._wstore, mode="r+")
            self._wdata = self._wroot["data"]
            self._wmeta = {name: self._wroot["meta"][name] for name in META_FIELDS}
            self._warrays: dict[str, zarr.Array] = {}
            self._writer = _Writer(path.name, max_pending_bytes, self._write_batch)
            _open_writers.add(self)
        self._rstore = LocalStore(path, read_only=True)

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, spec: RobotSpec | str | Mapping[str, Any], *,
               exist_ok: bool = False, chunk_steps: Mapping[str, int] | None = None,
               fsync_data: bool = False, max_pending_bytes: int = 256 << 20,
               image_codecs: Mapping[str, str] | None = None) -> "EpisodeStore":
        """Create an empty store at ``path`` (created atomically: built next to it, then
        renamed into place). An existing non-empty path is an error unless ``exist_ok``,
        in which case an existing store is opened for append (spec checked).

        ``chunk_steps`` overrides the time-chunk length per key (default: ~1 MiB image
        chunks of 10-64 frames, 1024 steps for state). ``fsync_data`` also fsyncs every
        data file of an episode at commit (the commit record is always fsynced).

        ``image_codecs`` picks the codec per image key: "lossless", "jpeg" (quality 90) or
        "jpeg:<q>" (q 1..100; JPEG needs uint8 (H, W, 1|3) keys). Unnamed image keys get
        "jpeg:90" when their smaller side is >= 224 px, else "lossless". Applied when the
        key's array is first written; recorded in the commit record (``attrs["codecs"]``)."""
        spec = load_spec(spec)
        path = Path(path).absolute()
        codecs = _parse_codecs(image_codecs, f"cannot create an episode store at {path}")
        for k, v in (chunk_steps or {}).items():
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise StoreError(f"chunk_steps[{k!r}] must be a positive int, got {v!r}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if exist_ok and (path / "zarr.json").is_file():
                return cls.open(path, mode="a", spec=spec, fsync_data=fsync_data,
                                max_pending_bytes=max_pending_bytes, image_codecs=image_codecs)
            raise StoreError(f"cannot create an episode store at {path}: it exists and is not empty"
                             + ("" if exist_ok else " (pass exist_ok=True to append to an existing store)"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
        try:
            root = zarr.open_group(store=LocalStore(tmp), mode="w-", attributes={
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "robot": spec.to_dict(), "robot_fingerprint": spec.fingerprint(),
                "n_episodes": 0, "n_steps": 0, "schema": {},
                "chunk_steps": {k: int(v) for k, v in (chunk_steps or {}).items()},
                "image_codecs": codecs, "codecs": {},
            })
            root.create_group("data")
            meta = root.create_group("meta")
            for name, dtype in META_FIELDS.items():
                meta.create_array(name, shape=(0,), dtype=dtype, chunks=(META_CHUNK,))
            os.rename(tmp, path)  # replaces an empty directory too
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot create an episode store at {path}: {e}") from None
        _fsync(path.parent, directory=True)
        return cls.open(path, mode="a", spec=spec, fsync_data=fsync_data,
                        max_pending_bytes=max_pending_bytes)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r",
             spec: RobotSpec | str | Mapping[str, Any] | None = None, *,
             fsync_data: bool = False, max_pending_bytes: int = 256 << 20,
             image_codecs: Mapping[str, str] | None = None) -> "EpisodeStore":
        """Open for reading (``mode="r"``, no lock) or appending (``mode="a"``: takes the
        writer lock, cleans up after a crash). ``spec`` (optional) must be compatible with
        the robot the store was recorded with, else SpecError. ``image_codecs`` (append
        only) must agree with the codecs of keys already stored (see :meth:`create`)."""
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        if image_codecs and mode != "a":
            raise StoreError("image_codecs applies to writing: open with mode='a'")
        path = Path(path).absolute()
        if not path.exists():
            raise StoreError(f"no episode store at {path}")
        lock_fd = None
        if mode == "a":
            lock_fd = cls._lock(path)
        try:
            attrs = cls._read_attrs(path)
            if spec is not None:
                stored = RobotSpec.from_dict(attrs["robot"])
                stored.check_compatible(load_spec(spec), what=f"episode store {path}")
            if mode == "a":
                cls._recover(path, attrs)
            else:
                cls._report_torn_tail(path, attrs)
            return cls(path, mode, attrs, lock_fd, fsync_data=fsync_data,
                       max_pending_bytes=max_pending_bytes, image_codecs=image_codecs)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, spec: RobotSpec | str | Mapping[str, Any],
                       **kwargs: Any) -> "EpisodeStore":
        """Append to the store at ``path`` (spec checked) or create it (recorder default)."""
        path = Path(path)
        if (path / "zarr.json").is_file():
            kwargs.pop("chunk_steps", None)
            return cls.open(path, mode="a", spec=spec, **kwargs)
        return cls.create(path, spec, **kwargs)

    @staticmethod
    def _lock(path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except NotADirectoryError:
            raise StoreError(f"no episode store at {path} (it is a file, not a directory)") from None
        # readers probe with a momentary shared lock (see _report_torn_tail): retry briefly
        deadline = time.monotonic() + 0.25
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
            os.close(fd)
            raise StoreError(f"episode store {path} is already open for writing (by another "
                             f"process or EpisodeStore); one writer at a time, readers need no lock") from None

    @staticmethod
    def _read_attrs(path: Path) -> dict[str, Any]:
        zj = path / "zarr.json"
        if not zj.is_file():
            raise StoreError(f"no episode store at {path} (no zarr.json)")
        try:
            with open(zj) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise StoreError(f"episode store {path}: cannot read {zj}: {e}") from None
        attrs = doc.get("attributes") or {}
        if doc.get("node_type") != "group" or attrs.get("format") != FORMAT:
            raise StoreError(f"{path} is a zarr {doc.get('node_type', '?')} but not a robot_rl episode store")
        v = attrs.get("format_version")
        if not isinstance(v, int) or v > FORMAT_VERSION:
            raise StoreError(f"episode store {path} has format version {v}; this robot_rl reads "
                             f"versions <= {FORMAT_VERSION} (upgrade robot_rl)")
        return attrs

    @staticmethod
    def _array_len(path: Path, rel: str) -> int | None:
        try:
            with open(path / rel / "zarr.json") as f:
                return int(json.load(f)["shape"][0])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None

    @classmethod
    def _torn_steps(cls, path: Path, attrs: Mapping[str, Any]) -> int:
        n_steps = int(attrs["n_steps"])
        ln = cls._array_len(path, f"data/{TIMESTAMP}")
        return max(0, (ln or 0) - n_steps)

    @classmethod
    def _report_torn_tail(cls, path: Path, attrs: Mapping[str, Any]) -> None:
        """Read-only open: mention a torn tail only when no writer holds the lock."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a writer is recording: rows past the end are its work in progress
        finally:
            os.close(fd)
        torn = cls._torn_steps(path, attrs)
        if torn:
            log.warning("episode store %s: ignoring %d uncommitted steps past the last commit "
                        "(an interrupted recording); they are dropped on the next open for append",
                        path, torn)

    @classmethod
    def _recover(cls, path: Path, attrs: Mapping[str, Any]) -> None:
        """Bring the directory back to exactly what the commit record says (writer lock held)."""
        partial = 0
        for root, dirs, files in os.walk(path):
            for f in files:
                if f.endswith(".partial"):
                    os.unlink(os.path.join(root, f))
                    partial += 1
        n_eps, n_steps = int(attrs["n_episodes"]), int(attrs["n_steps"])
        schema = {k: KeySpec.from_json(v) for k, v in (attrs.get("schema") or {}).items()}
        dropped_steps = dropped_eps = 0
        root = zarr.open_group(store=LocalStore(path), mode="r+")
        meta = root["meta"]
        for name in META_FIELDS:
            try:
                arr = meta[name]
            except KeyError:
                raise StoreError(f"episode store {path} is corrupt: meta/{name} is missing") from None
            if arr.shape[0] < n_eps:
                raise StoreError(f"episode store {path} is corrupt: commit record says {n_eps} "
                                 f"episodes but meta/{name} has {arr.shape[0]}")
            if arr.shape[0] > n_eps:  # a commit that did not reach its commit point
                dropped_eps = max(dropped_eps, arr.shape[0] - n_eps)
                arr.resize((n_eps,))
        data_dir = path / "data"
        for child in sorted(data_dir.iterdir()):
            if child.name not in schema and child.name != "zarr.json":
                # created by a first episode that never committed
                dropped_steps = max(dropped_steps, cls._array_len(path, f"data/{child.name}") or 0)
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for k, ks in schema.items():
            try:
                arr = root["data"][k]
            except KeyError:
                raise StoreError(f"episode store {path} is corrupt: data/{k} is missing") from None
            if arr.shape[0] < n_steps:
                raise StoreError(f"episode store {path} is corrupt: commit record says {n_steps} "
                                 f"steps but data/{k} has {arr.shape[0]}")
            if arr.shape[0] > n_steps:  # rows written past the commit point
                dropped_steps = max(dropped_steps, arr.shape[0] - n_steps)
                arr.resize((n_steps,) + ks.shape)
            # orphan chunk files past the end (belt and braces: resize already deletes them)
            cdir = data_dir / k / "c"
            last = (n_steps - 1) // ks.chunk_steps if n_steps else -1
            if cdir.is_dir():
                for c in cdir.iterdir():
                    if c.name.isdigit() and int(c.name) > last:
                        shutil.rmtree(c) if c.is_dir() else c.unlink()
        if n_eps:
            ends = zarr.open_array(store=LocalStore(path, read_only=True), path="meta/episode_ends",
                                   mode="r")
            last_end = int(ends[n_eps - 1])
            if last_end != n_steps:
                raise StoreError(f"episode store {path} is corrupt: episode_ends[{n_eps - 1}] = "
                                 f"{last_end} but the commit record says {n_steps} steps")
        if dropped_steps or dropped_eps:
            log.warning("episode store %s: dropped %d uncommitted steps (torn tail of an interrupted "
                        "recording)%s; the %d committed episodes are intact", path, dropped_steps,
                        f" and {dropped_eps} uncommitted episode entries" if dropped_eps else "", n_eps)
        elif partial:
            log.info("episode store %s: removed %d temp files of an interrupted write", path, partial)

    def _load_attrs(self, attrs: Mapping[str, Any]) -> None:
        self._attrs = dict(attrs)
        self._n_episodes = int(attrs["n_episodes"])
        self._n_steps = int(attrs["n_steps"])
        self._committed_schema = {k: KeySpec.from_json(v) for k, v in (attrs.get("schema") or {}).items()}
        self._chunk_override = {k: int(v) for k, v in (attrs.get("chunk_steps") or {}).items()}
        try:
            recorded = _parse_codecs(attrs.get("codecs") or {}, "commit record")
            self._codec_request = _parse_codecs(attrs.get("image_codecs") or {}, "commit record")
        except StoreError as e:
            raise StoreError(f"episode store {self.path} is corrupt: {e}") from None
        # stores written before per-key codecs have no "codecs": all their images are lossless
        self._codecs: dict[str, str] = {k: recorded.get(k, LOSSLESS)
                                        for k, ks in self._committed_schema.items() if ks.image}
        self._spec = RobotSpec.from_dict(attrs["robot"])

    def refresh(self) -> None:
        """Re-read the commit record (a reader following a store that is being recorded)."""
        self._check_not_closed()
        if self.mode == "a":
            return
        self._load_attrs(self._read_attrs(self.path))
        self._schema = self._committed_schema or None
        self._schema_codecs = dict(self._codecs)
        self._rarrays.clear()
        self._jpeg_layouts.clear()
        self._ends = None
        self._meta = None

    # -- writing ------------------------------------------------------------------------
    def _check_not_closed(self) -> None:
        if self._closed:
            raise StoreError(f"episode store {self.path} is closed")

    def _check_writer(self, what: str) -> None:
        self._check_not_closed()
        if self._writer is None:
            raise StoreError(f"cannot {what}: episode store {self.path} is open read-only "
                             f"(use EpisodeStore.open(path, mode='a'))")
        if self._writer.error is not None:
            raise StoreError(f"cannot {what}: a background write to {self.path} failed "
                             f"({self._writer.error!r}); committed episodes are intact, reopen the store")

    def _apply_codec_request(self, req: Mapping[str, str]) -> None:
        """Merge codecs asked for at open into the recorded request; keys already stored
        keep their codec (asking for another one is an error)."""
        if not req:
            return
        schema = self._committed_schema
        if schema:
            unknown = sorted(set(req) - set(schema))
            if unknown:
                raise StoreError(f"episode store {self.path}: image_codecs names keys it does not "
                                 f"have: {unknown}; it holds {sorted(schema)}")
            for k, c in req.items():
                have = self._codecs.get(k)
                if have is None and c != LOSSLESS:
                    raise StoreError(f"episode store {self.path}: key {k!r} is not a uint8 image "
                                     f"(dtype {schema[k].dtype}, shape {schema[k].shape}); codec {c!r} "
                                     f"is for images only")
                if have is not None and have != c:
                    raise StoreError(f"episode store {self.path}: key {k!r} is stored as {have!r}; it "
                                     f"cannot be appended as {c!r} (codecs are fixed per store key)")
        self._codec_request = {**self._codec_request, **req}

    def _make_schema(self, values: Mapping[str, np.ndarray]) -> tuple[dict[str, KeySpec], dict[str, str]]:
        """Schema and image codecs of an empty store from its first step."""
        schema: dict[str, KeySpec] = {}
        for k, v in values.items():
            if not isinstance(k, str) or not k or "/" in k or k.startswith((".", "__")) or k == "zarr.json":
                raise StoreError(f"invalid data key {k!r}: use a plain name like 'joint_pos'")
            if v.dtype.kind not in "biufc":
                raise StoreError(f"key {k!r}: unsupported dtype {v.dtype} (numbers or bools only)")
            chunk = self._chunk_override.get(k) or default_chunk_steps(v.dtype, v.shape)
            schema[k] = KeySpec(v.dtype, tuple(v.shape), int(chunk))
        unknown = sorted(set(self._codec_request) - set(schema))
        if unknown:
            raise StoreError(f"image_codecs names keys the first step does not have: {unknown}; "
                             f"the step has {sorted(schema)} (the step was rejected)")
        codecs: dict[str, str] = {}
        for k, ks in schema.items():
            c = self._codec_request.get(k) or default_codec(ks.dtype, ks.shape)
            if c is not None and c != LOSSLESS and not jpeg_ok(ks.dtype, ks.shape):
                raise StoreError(f"key {k!r}: codec {c!r} needs a uint8 image of shape (H, W, 1|3); the "
                                 f"key is dtype {ks.dtype} shape {ks.shape} (the step was rejected; use "
                                 f"'lossless' or no codec for it)")
            if c is not None and ks.image:
                codecs[k] = c
        return schema, codecs

    def start_episode(self, task: str, source: str = "teleop", fps: float | None = None,
                      extra: Mapping[str, Any] | None = None) -> Episode:
        """Begin recording an episode (one at a time). ``fps`` defaults to the spec's
        control rate; ``source`` is one of SOURCES; ``extra`` any JSON-able dict."""
        self._check_writer("start an episode")
        if self._episode is not None and self._episode.open:
            raise StoreError(f"episode {self._episode.index} is still being recorded; commit or "
                             f"discard it before starting another")
        if not isinstance(task, str) or not task:
            raise StoreError(f"task must be a non-empty string, got {task!r}")
        if source not in SOURCES:
            raise StoreError(f"source must be one of {list(SOURCES)}, got {source!r}")
        fps = float(self._spec.control_hz if fps is None else fps)
        if not (math.isfinite(fps) and fps > 0):
            raise StoreError(f"fps must be a positive number, got {fps}")
        _dump_extra(extra, "start_episode")
        self._episode = Episode(self, task, source, fps, extra, time.time())
        return self._episode

    def _submit_rows(self, key: str, lo: int, rows: np.ndarray) -> None:
        self._writer.write(key, lo, rows, self._schema[key])

    def _warray(self, key: str, ks: KeySpec) -> zarr.Array:  # writer thread only
        arr = self._warrays.get(key)
        if arr is None:
            if key in self._committed_schema:
                arr = self._wdata[key]
            elif (q := jpeg_quality(self._schema_codecs.get(key, LOSSLESS))) is not None:
                # JPEG: shard = the time-chunk, inner chunk = one frame (one JPEG)
                arr = self._wdata.create_array(
                    key, shape=(0,) + ks.shape, dtype=ks.dtype, chunks=(1,) + ks.shape,
                    shards=(ks.chunk_steps,) + ks.shape, serializer=JpegCodec(quality=q),
                    compressors=None, fill_value=0, overwrite=True)
            else:  # first episode of an empty store
                arr = self._wdata.create_array(
                    key, shape=(0,) + ks.shape, dtype=ks.dtype, chunks=(ks.chunk_steps,) + ks.shape,
                    compressors=[image_codec() if ks.image else state_codec()],
                    fill_value=0, overwrite=True)
            self._warrays[key] = arr
        return arr

    def _write_batch(self, batch: list[tuple[str, int, np.ndarray, KeySpec]]) -> None:  # writer thread
        by_key: dict[str, list[tuple[int, np.ndarray]]] = {}
        specs: dict[str, KeySpec] = {}
        for key, lo, rows, ks in batch:
            by_key.setdefault(key, []).append((lo, rows))
            specs[key] = ks

        async def one_key(arr: zarr.Array, writes: list[tuple[int, np.ndarray]]) -> None:
            aarr = arr.async_array
            hi = max(lo + len(rows) for lo, rows in writes)
            if aarr.shape[0] < hi:  # grow first: zarr refuses writes past the shape
                await aarr.resize((hi,) + aarr.shape[1:])
            await asyncio.gather(*(aarr.setitem((slice(lo, lo + len(rows)),), rows) for lo, rows in writes))

        arrays = {k: self._warray(k, specs[k]) for k in by_key}
        _zsync(_gather(*(one_key(arrays[k], w) for k, w in by_key.items())))

    def _commit(self, ep: Episode, success: bool, extra_json: str,
                final: list[tuple[str, int, np.ndarray]]) -> int:
        schema = dict(self._schema)
        codecs = dict(self._schema_codecs)
        n_eps, end = self._n_episodes, ep._p
        entry = {"episode_ends": end, "success": success, "fps": ep.fps, "start_time": ep.start_time,
                 "task": ep.task, "source": ep.source, "extra": extra_json}
        new_attrs = {"n_episodes": n_eps + 1, "n_steps": end,
                     "schema": {k: v.to_json() for k, v in schema.items()}, "codecs": codecs}

        final_by_key: dict[str, list[tuple[int, np.ndarray]]] = {}
        for k, lo, rows in final:
            final_by_key.setdefault(k, []).append((lo, rows))

        async def finish_key(arr: zarr.Array, shape: tuple[int, ...], writes: list) -> None:
            aarr = arr.async_array
            if aarr.shape != shape:
                await aarr.resize(shape)
            await asyncio.gather(*(aarr.setitem((slice(lo, lo + len(rows)),), rows) for lo, rows in writes))

        async def append_meta(arr: zarr.Array, value: Any) -> None:
            await arr.async_array.resize((n_eps + 1,))
            await arr.async_array.setitem((slice(n_eps, n_eps + 1),), np.asarray([value], dtype=arr.dtype))

        def do_commit() -> None:  # writer thread
            arrays = {k: self._warray(k, ks) for k, ks in schema.items()}
            _zsync(_gather(
                *(finish_key(arrays[k], (end,) + ks.shape, final_by_key.get(k, [])) for k, ks in schema.items()),
                *(append_meta(self._wmeta[name], value) for name, value in entry.items())))
            written = self._wstore.written
            if self._fsync_data:
                dirs = set()
                for key in list(written):
                    p = self.path / key
                    if p.exists():
                        _fsync(p)
                    dirs.update(q for q in p.parents if q != self.path and self.path in q.parents)
                for d in dirs:
                    if d.is_dir():
                        _fsync(d, directory=True)
            written.clear()
            # ---- the commit point: one atomic replace of PATH/zarr.json ----
            self._write_commit_record(new_attrs)

        try:
            self._writer.call(do_commit).result()
        except BaseException as e:
            raise StoreError(f"commit of episode {n_eps} to {self.path} failed: {e!r}; it was not "
                             f"committed, the {n_eps} earlier episodes are intact") from e
        self._n_episodes, self._n_steps = n_eps + 1, end
        self._committed_schema = schema
        self._codecs = codecs
        self._attrs.update(new_attrs)
        if self._ends is not None:
            self._ends = np.append(self._ends, np.int64(end))
        if self._meta is not None:
            for name, value in entry.items():
                if name != "episode_ends":
                    self._meta[name].append(value)
        self._rarrays.clear()
        self._episode = None
        return n_eps

    def _write_commit_record(self, new_attrs: Mapping[str, Any]) -> None:  # writer thread
        """Replace the root zarr.json (the group metadata, attributes updated) in ONE atomic
        rename: temp file written + fsynced, renamed over, directory fsynced. (zarr's
        ``attrs.update`` would write the file once per key: not a single commit point.)"""
        zj = self.path / "zarr.json"
        with open(zj) as f:
            doc = json.load(f)
        doc.setdefault("attributes", {}).update(new_attrs)
        tmp = self.path / f"zarr.json.{uuid.uuid4().hex}.partial"  # removed by _recover if orphaned
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, zj)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync(self.path, directory=True)

    def _discard(self, ep: Episode) -> None:
        self._episode = None
        if self._writer is None or self._writer.error is not None:
            return
        end = self._n_steps
        if not self._committed_schema:
            keys = list(self._schema or ())
            self._schema = None
            self._schema_codecs = {}

            def drop() -> None:  # empty store: forget the keys of the discarded first episode
                for k in keys:
                    self._warrays.pop(k, None)
                    shutil.rmtree(self.path / "data" / k, ignore_errors=True)
        else:
            schema = dict(self._committed_schema)

            def drop() -> None:
                for k, ks in schema.items():
                    arr = self._warray(k, ks)
                    if arr.shape[0] > end:
                        arr.resize((end,) + ks.shape)
        self._writer.call(drop)

    def flush(self) -> None:
        """Wait until every buffered chunk handed to the writer is on disk (does not commit
        and does not write the partial chunk still buffered in an open episode)."""
        self._check_writer("flush")
        self._writer.wait()
        self._check_writer("flush")

    @property
    def writer_stall_s(self) -> float:
        """Total seconds add_step blocked because the writer fell behind (back-pressure)."""
        return self._writer.stall_s if self._writer else 0.0

    def close(self) -> None:
        if self._closed:
            return
        if self._episode is not None and self._episode.open:
            log.warning("episode store %s: closing with episode %d open (%d steps): discarded",
                        self.path, self._episode.index, self._episode.n_steps)
            self._episode.discard()
        try:
            if self._writer is not None:
                self._writer.stop()
                if self._writer.error is not None:
                    log.error("episode store %s: background writer failed: %r", self.path, self._writer.error)
        finally:
            self._closed = True
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n_episodes

    @property
    def n_episodes(self) -> int:
        return self._n_episodes

    @property
    def n_steps(self) -> int:
        return self._n_steps

    @property
    def spec(self) -> RobotSpec:
        return self._spec

    @property
    def keys(self) -> list[str]:
        return list(self._committed_schema)

    @property
    def schema(self) -> dict[str, KeySpec]:
        return dict(self._committed_schema)

    @property
    def data(self) -> _DataView:
        return _DataView(self)

    def _read_array(self, key: str) -> zarr.Array:
        self._check_not_closed()
        arr = self._rarrays.get(key)
        if arr is None:
            if key not in self._committed_schema:
                raise KeyError(f"no key {key!r} in episode store {self.path}; it has {self.keys}")
            arr = zarr.open_array(store=self._rstore, path=f"data/{key}", mode="r")
            self._rarrays[key] = arr
        return arr

    def codec(self, key: str) -> str | None:
        """Codec of a committed key: "lossless" / "jpeg:<q>" for images, None otherwise."""
        self._check_not_closed()
        if key not in self._committed_schema:
            raise KeyError(f"no key {key!r} in episode store {self.path}; it has {self.keys}")
        return self._codecs.get(key)

    @property
    def codecs(self) -> dict[str, str]:
        """{image key: codec} of the committed keys."""
        return dict(self._codecs)

    def read_frames(self, key: str, rows: Any, size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames at global row indices ``rows`` (any order, repeats allowed) of image
        ``key`` as ``(len(rows), H, W, C)`` uint8; with ``size=(h, w)`` resized to it
        (cv2 INTER_AREA). JPEG keys are decoded straight from the stored JPEG of each
        frame (one index + one frame read per row), with libjpeg DCT scaling (1/2, 1/4,
        1/8) when the target allows, before the resize. Thread-safe."""
        self._check_not_closed()
        ks = self._committed_schema.get(key)
        if ks is None:
            raise KeyError(f"no key {key!r} in episode store {self.path}; it has {self.keys}")
        if not ks.image:
            raise StoreError(f"read_frames: key {key!r} is not an image key (dtype {ks.dtype}, "
                             f"shape {ks.shape})")
        idx = np.asarray(rows)
        if idx.size == 0:
            idx = idx.astype(np.int64).reshape(0)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise StoreError(f"read_frames: rows must be a 1-d sequence of ints, got {idx.dtype} "
                             f"shape {idx.shape}")
        idx = idx.astype(np.int64)
        n = self._n_steps
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"read_frames: rows must lie in [0, {n}) (the committed steps), got "
                             f"{idx.min()}..{idx.max()}")
        H, W, C = ks.shape
        if size is not None:
            try:
                h, w = (int(x) for x in size)
            except (TypeError, ValueError):
                raise StoreError(f"read_frames: size must be (height, width), got {size!r}") from None
            if h < 1 or w < 1:
                raise StoreError(f"read_frames: size must be positive, got {size!r}")
            if (h, w) == (H, W):
                size = None
        crc = self._jpeg_layout(key)
        if crc is None:  # lossless (or a layout this reader does not know): through zarr
            if not idx.size:
                frames = np.zeros((0, H, W, C), np.uint8)
            else:
                uniq, inv = np.unique(idx, return_inverse=True)
                frames = np.asarray(self._read_array(key).get_orthogonal_selection((uniq,)))[inv]
            if size is None:
                return frames
            out = np.empty((len(idx), h, w, C), np.uint8)
            for i, f in enumerate(frames):
                out[i] = resize_image(f, (h, w))
            return out
        out = np.zeros((len(idx),) + (ks.shape if size is None else (h, w, C)), np.uint8)
        for i, buf in enumerate(self._jpeg_frames(key, ks, idx, crc)):
            if buf is not None:  # None: an all-zero frame (zarr stores no chunk for it)
                out[i] = _decode_jpeg(buf, ks.shape, None if size is None else (h, w))
        return out

    def stored_jpegs(self, key: str, rows: Any) -> list[bytes | None] | None:
        """The JPEG bytes exactly as stored for global ``rows`` of a JPEG key (None for a
        frame with no bytes: an all-zero frame, which zarr does not store); None if the
        key is not JPEG-coded in the layout this store writes (then use read_frames)."""
        self._check_not_closed()
        ks = self._committed_schema.get(key)
        if ks is None:
            raise KeyError(f"no key {key!r} in episode store {self.path}; it has {self.keys}")
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n_steps):
            raise IndexError(f"stored_jpegs: rows must lie in [0, {self._n_steps}), got "
                             f"{idx.min()}..{idx.max()}")
        crc = self._jpeg_layout(key) if ks.image else None
        return None if crc is None else self._jpeg_frames(key, ks, idx, crc)

    def _jpeg_layout(self, key: str) -> bool | None:
        """For a JPEG key stored as this store writes it (sharded, one frame per inner
        chunk, index at the end as little-endian uint64 pairs): whether the index has a
        crc32c; None for anything else (read through zarr)."""
        if key in self._jpeg_layouts:
            return self._jpeg_layouts[key]
        crc: bool | None = None
        ks = self._committed_schema[key]
        if self._codecs.get(key, LOSSLESS) != LOSSLESS:
            from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
            from zarr.codecs.sharding import ShardingCodecIndexLocation
            meta = self._read_array(key).metadata
            codecs = getattr(meta, "codecs", ())
            sh = codecs[0] if len(codecs) == 1 else None
            if (isinstance(sh, ShardingCodec) and sh.index_location == ShardingCodecIndexLocation.end
                    and tuple(sh.chunk_shape) == (1,) + ks.shape and len(sh.codecs) == 1
                    and isinstance(sh.codecs[0], JpegCodec)
                    and tuple(meta.chunk_grid.chunk_shape) == (ks.chunk_steps,) + ks.shape
                    and isinstance(sh.index_codecs[0], BytesCodec)
                    and sh.index_codecs[0].endian is not None
                    # an Endian enum in zarr 3.1, the string itself in 3.4 (the Isaac venv's)
                    and getattr(sh.index_codecs[0].endian, "value", sh.index_codecs[0].endian) == "little"):
                rest = tuple(sh.index_codecs[1:])
                if rest == ():
                    crc = False
                elif len(rest) == 1 and isinstance(rest[0], Crc32cCodec):
                    crc = True
            if crc is None:
                log.warning("episode store %s: data/%s has an unexpected JPEG layout; read_frames "
                            "reads it through zarr", self.path, key)
        self._jpeg_layouts[key] = crc
        return crc

    def _jpeg_frames(self, key: str, ks: KeySpec, idx: np.ndarray, crc: bool) -> list[bytes | None]:
        """The stored JPEG bytes of rows ``idx`` (None: no chunk = all-zero frame). One
        file descriptor per shard: the writer replaces shard files by rename, so index and
        frames come from the same version of the shard."""
        cs = ks.chunk_steps
        meta = self._read_array(key).metadata
        out: list[bytes | None] = [None] * len(idx)
        shards = idx // cs
        index_bytes = cs * 16 + (4 if crc else 0)
        for s in np.unique(shards):
            rel = meta.encode_chunk_key((int(s),) + (0,) * len(ks.shape))
            fpath = self.path / "data" / key / rel
            try:
                fd = os.open(fpath, os.O_RDONLY)
            except FileNotFoundError:
                continue  # a shard of all-zero frames is not stored
            try:
                fsize = os.fstat(fd).st_size
                if fsize < index_bytes:
                    raise StoreError(f"episode store {self.path}: shard {fpath} is truncated "
                                     f"({fsize} bytes, its index alone is {index_bytes})")
                raw = os.pread(fd, index_bytes, fsize - index_bytes)
                if len(raw) != index_bytes:
                    raise StoreError(f"episode store {self.path}: short read of the index of {fpath}")
                if crc:
                    import google_crc32c
                    if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                        raise StoreError(f"episode store {self.path}: shard {fpath} index checksum mismatch")
                table = np.frombuffer(raw, "<u8", count=cs * 2).reshape(cs, 2)
                data_end = fsize - index_bytes
                for j in np.flatnonzero(shards == s):
                    off, nb = (int(x) for x in table[idx[j] % cs])
                    if off == _NO_CHUNK and nb == _NO_CHUNK:
                        continue
                    if off + nb > data_end:
                        raise StoreError(f"episode store {self.path}: shard {fpath}: frame {int(idx[j])} "
                                         f"lies outside the shard ({off}+{nb} > {data_end})")
                    buf = os.pread(fd, nb, off)
                    if len(buf) != nb:
                        raise StoreError(f"episode store {self.path}: short read in {fpath}")
                    out[j] = buf
            finally:
                os.close(fd)
        return out

    @property
    def episode_ends(self) -> np.ndarray:
        if self._ends is None:
            if self._n_episodes == 0:
                self._ends = np.zeros(0, np.int64)
            else:
                arr = zarr.open_array(store=self._rstore, path="meta/episode_ends", mode="r")
                self._ends = np.asarray(arr[: self._n_episodes], dtype=np.int64)
        return self._ends.copy()

    def _episode_range(self, i: int) -> tuple[int, int]:
        n = self._n_episodes
        if not -n <= i < n:
            raise IndexError(f"episode {i} out of range: the store has {n} episodes")
        i %= n
        ends = self.episode_ends if self._ends is None else self._ends
        return (int(ends[i - 1]) if i else 0), int(ends[i])

    def episode(self, i: int, keys: list[str] | tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """All steps of episode ``i`` as numpy arrays (``keys`` default: all, incl. timestamp)."""
        self._check_not_closed()
        lo, hi = self._episode_range(i)
        return {k: self._read_array(k)[lo:hi] for k in (self.keys if keys is None else keys)}

    def _load_meta(self) -> dict[str, list]:
        if self._meta is None:
            meta: dict[str, list] = {}
            for name in META_FIELDS:
                if name == "episode_ends":
                    continue
                if self._n_episodes == 0:
                    meta[name] = []
                    continue
                arr = zarr.open_array(store=self._rstore, path=f"meta/{name}", mode="r")
                vals = arr[: self._n_episodes]
                meta[name] = [str(v) for v in vals] if arr.dtype.kind in "OTU" or META_FIELDS[name] is str \
                    else vals.tolist()
            self._meta = meta
        return self._meta

    def episode_meta(self, i: int) -> dict[str, Any]:
        """index, task, success, source, fps, length, start, end, start_time, extra."""
        self._check_not_closed()
        lo, hi = self._episode_range(i)
        i %= self._n_episodes
        m = self._load_meta()
        return {"index": i, "task": m["task"][i], "success": bool(m["success"][i]),
                "source": m["source"][i], "fps": float(m["fps"][i]), "length": hi - lo,
                "start": lo, "end": hi, "start_time": float(m["start_time"][i]),
                "extra": json.loads(m["extra"][i])}

    def episodes_meta(self) -> list[dict[str, Any]]:
        return [self.episode_meta(i) for i in range(self._n_episodes)]

    def summary(self) -> dict[str, Any]:
        """Counts, success rates (overall, per task), per-source counts, bytes on disk."""
        self._check_not_closed()
        m = self._load_meta()
        ends = self.episode_ends
        lengths = np.diff(np.concatenate([[0], ends])) if len(ends) else np.zeros(0, np.int64)
        per_task: dict[str, dict[str, Any]] = {}
        for t, s, ln in zip(m["task"], m["success"], lengths):
            d = per_task.setdefault(t, {"episodes": 0, "successes": 0, "steps": 0})
            d["episodes"] += 1
            d["successes"] += int(bool(s))
            d["steps"] += int(ln)
        for d in per_task.values():
            d["success_rate"] = d["successes"] / d["episodes"]
        per_source = {s: 0 for s in SOURCES}
        for s in m["source"]:
            per_source[s] = per_source.get(s, 0) + 1
        keys: dict[str, Any] = {}
        for k, ks in self._committed_schema.items():
            on_disk = _dir_bytes(self.path / "data" / k)
            raw = ks.row_bytes * self._n_steps
            keys[k] = {"dtype": str(ks.dtype), "shape": list(ks.shape), "chunk_steps": ks.chunk_steps,
                       "image": ks.image, "codec": self._codecs.get(k), "bytes": on_disk, "raw_bytes": raw,
                       "compression_ratio": (raw / on_disk) if on_disk else None}
        n = self._n_episodes
        return {
            "path": str(self.path),
            "robot": self._spec.name,
            "robot_fingerprint": self._spec.fingerprint(),
            "format_version": int(self._attrs.get("format_version", FORMAT_VERSION)),
            "episodes": n,
            "steps": self._n_steps,
            "successes": int(sum(bool(s) for s in m["success"])),
            "success_rate": (sum(bool(s) for s in m["success"]) / n) if n else None,
            "per_task": per_task,
            "per_source": per_source,
            "duration_s": float(sum(ln / f for ln, f in zip(lengths, m["fps"]))),
            "keys": keys,
            "image_compression_ratio": {k: v["compression_ratio"] for k, v in keys.items() if v["image"]},
            "bytes_data": sum(v["bytes"] for v in keys.values()),
            "bytes_total": _dir_bytes(self.path),
        }

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self._n_episodes):
            yield self.episode(i)

    def __repr__(self) -> str:
        return (f"<EpisodeStore {self.path} mode={self.mode} robot={self._spec.name} "
                f"episodes={self._n_episodes} steps={self._n_steps}>")

    def __del__(self) -> None:
        try:
            if not self._closed and self._lock_fd is not None and not sys.is_finalizing():
                self.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


_open_writers: "weakref.WeakSet[EpisodeStore]" = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    """At interpreter exit (writer threads still alive): finish queued writes, discard open
    episodes with a warning, release locks. A hard kill is covered by crash recovery."""
    for st in list(_open_writers):
        try:
            st.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


__all__ = ["EpisodeStore", "Episode", "StoreError", "KeySpec", "SOURCES", "FORMAT", "FORMAT_VERSION",
           "TIMESTAMP", "SpecError"]
