"""What LeRobotDataset v3.0 (lerobot 0.4) reads and writes, shared by the export and the
import: the layout, the parquet column types, statistics, MP4 video in and out.

Layout (``root/``)::

    meta/info.json              codebase_version "v3.0", fps, features, path templates, totals
    meta/stats.json             per feature: min max mean std count q01 q10 q50 q90 q99
                                (images per channel in 0..1, shape (3, 1, 1))
    meta/tasks.parquet          task strings as the (pandas) index, column task_index
    meta/episodes/chunk-XXX/file-XXX.parquet
                                one row per episode: episode_index, tasks, length,
                                data/{chunk,file}_index, dataset_{from,to}_index,
                                videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp},
                                meta/episodes/{chunk,file}_index, stats/<feature>/<stat>
    data/chunk-XXX/file-XXX.parquet
                                one row per frame, episodes back to back
    videos/<key>/chunk-XXX/file-XXX.mp4
                                one stream per camera, episodes back to back: frame k of
                                a file has pts k / fps, so an episode's frame i lies at
                                ``from_timestamp + i / fps``
"""
from __future__ import annotations

import json
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO = "meta/info.json"
STATS = "meta/stats.json"
TASKS = "meta/tasks.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
CAMERA_PREFIX = "observation.images."
OURS = "robot_rl"  # the extra key our export adds to info.json (top level and per feature)
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per encoder at its default level


class LeRobotFormatError(ValueError):
    """A LeRobot dataset cannot be written or read as asked; the message says why and what to do."""


def next_file(chunk: int, file: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")


# -- parquet ------------------------------------------------------------------------------
def arrow_type(dtype: str, shape: list[int] | tuple[int, ...]):
    """The arrow type HF ``datasets`` gives a LeRobot feature (what lerobot casts columns to)."""
    import pyarrow as pa
    if dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    t = pa.from_numpy_dtype(np.dtype(dtype))
    shape = list(shape)
    if shape == [1]:
        return t
    for n in reversed(shape):
        t = pa.list_(t, int(n))
    return t


def to_arrow(values: np.ndarray, dtype: str, shape: list[int] | tuple[int, ...]):
    """A numpy column (rows first) as the arrow array of :func:`arrow_type`."""
    import pyarrow as pa
    values = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    shape = list(shape)
    if shape == [1]:
        return pa.array(values.reshape(-1))
    arr = pa.array(values.reshape(-1))
    for n in reversed(shape):
        arr = pa.FixedSizeListArray.from_arrays(arr, int(n))
    return arr


def from_arrow(col, dtype: str, shape: list[int] | tuple[int, ...]) -> np.ndarray:
    """An arrow column (list, fixed-size list or scalar) as numpy ``(rows, *shape)``."""
    import pyarrow as pa
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    shape = [int(s) for s in shape]
    while pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        col = col.flatten()
    out = col.to_numpy(zero_copy_only=False).astype(np.dtype(dtype), copy=False)
    want = n * int(np.prod(shape))
    if out.size != want:
        raise LeRobotFormatError(f"column holds {out.size} values for {n} rows of shape {shape}")
    return out.reshape((n,) if shape == [1] else (n, *shape))


def tasks_table(tasks: list[str]):
    """``meta/tasks.parquet`` as ``pandas.DataFrame({"task_index": ...}, index=tasks).to_parquet``
    writes it (lerobot reads it with pandas and takes the task from the index)."""
    import pyarrow as pa
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def read_tasks(path: Path) -> dict[int, str]:
    """task_index -> task string, from the pandas index (or a ``task`` column)."""
    t = read_parquet(path)
    names = t.column_names
    meta = json.loads((t.schema.metadata or {}).get(b"pandas", b"{}") or b"{}")
    idx_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    col = "task" if "task" in names else (idx_cols[0] if idx_cols else None)
    if col is None or col not in names or "task_index" not in names:
        raise LeRobotFormatError(f"{path}: expected the task strings (index or 'task' column) and 'task_index', "
                                 f"found columns {names}")
    return {int(i): str(s) for i, s in zip(t.column("task_index").to_pylist(), t.column(col).to_pylist())}


def read_parquet(path: Path, columns: list[str] | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise LeRobotFormatError(f"missing file {path}: the dataset is incomplete (re-download or re-export it)") \
            from None
    except (pa.ArrowException, OSError) as e:
        raise LeRobotFormatError(f"corrupt parquet file {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                 "re-download or re-export the dataset") from None


# -- statistics ---------------------------------------------------------------------------
def numeric_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """min, max, mean, std, count, q01..q99 over axis 0 (a (n,) column gives shape (1,))."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    xf = x.astype(np.float64)
    out = {"min": xf.min(0), "max": xf.max(0), "mean": xf.mean(0), "std": xf.std(0),
           "count": np.array([len(x)], np.int64)}
    qs = np.quantile(xf, QUANTILES, axis=0)
    for k, q in zip(QUANTILE_KEYS, qs):
        out[k] = q
    return out


def sample_indices(n: int) -> np.ndarray:
    """The frames lerobot samples from an episode for image statistics."""
    k = n if n < 100 else max(100, min(int(n ** 0.75), 10_000))
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def downsample(frames: np.ndarray) -> np.ndarray:
    """As lerobot's ``auto_downsample_height_width``: frames >= 300 px strided to ~150 px."""
    h, w = frames.shape[1:3]
    if max(h, w) < 300:
        return frames
    f = int(w / 150) if w > h else int(h / 150)
    return frames[:, ::f, ::f]


def channel_hist(frames: np.ndarray) -> np.ndarray:
    """(3, 256) pixel counts per channel of uint8 (n, H, W, 3) frames."""
    flat = frames.reshape(-1, frames.shape[-1])
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])]).astype(np.int64)


def image_stats(hist: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """Per-channel stats in 0..1 with shape (3, 1, 1), exact from 256-bin histograms."""
    v = np.arange(256, dtype=np.float64) / 255.0
    tot = hist.sum(1).astype(np.float64)
    mean = (hist * v).sum(1) / tot
    std = np.sqrt(np.maximum(0.0, (hist * v ** 2).sum(1) / tot - mean ** 2))
    nz = hist > 0
    out = {"min": np.array([v[r.argmax()] for r in nz]), "max": np.array([v[255 - r[::-1].argmax()] for r in nz]),
           "mean": mean, "std": std}
    cum = np.cumsum(hist, 1)
    for k, q in zip(QUANTILE_KEYS, QUANTILES):
        out[k] = np.array([v[int(np.searchsorted(c, q * c[-1]))] for c in cum])
    out = {k: a.reshape(-1, 1, 1) for k, a in out.items()}
    out["count"] = np.array([count], np.int64)
    return out


def stats_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}


# -- video --------------------------------------------------------------------------------
VCODECS = ("auto", "av1", "h264")


DEFAULT_CRF = {"libx264": 23, "libsvtav1": 30}  # about the same PSNR and size on twin frames


def pick_vcodec(vcodec: str) -> str:
    """The encoder name: ``av1`` = libsvtav1 (lerobot's default), ``h264`` = libx264 (no
    B-frames); ``auto``: AV1 where PyAV has the encoder, else H.264."""
    import av
    if vcodec not in VCODECS:
        raise LeRobotFormatError(f"vcodec must be one of {list(VCODECS)}, got {vcodec!r}")
    names = {"av1": "libsvtav1", "h264": "libx264"}
    order = ["av1", "h264"] if vcodec == "auto" else [vcodec]
    for c in order:
        try:
            av.codec.Codec(names[c], "w")
            return names[c]
        except Exception:  # noqa: BLE001 - not in this FFmpeg build
            continue
    raise LeRobotFormatError(f"no {' or '.join(names[c] for c in order)} encoder in this PyAV build; "
                             "pick another vcodec= or export with video=false")


class VideoWriter:
    """One MP4 stream: frames get pts 0, 1, 2, ... in units of 1/fps across episodes."""

    def __init__(self, path: Path, width: int, height: int, fps: int, codec: str, crf: int | None, gop: int) -> None:
        import av
        if width % 2 or height % 2:
            raise LeRobotFormatError(f"{path.parent.parent.name}: {width}x{height} frames cannot be coded as "
                                     "yuv420p video (odd size); export with video=false")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.frames, self.bytes = path, fps, 0, 0
        # the frames' own time base: the stream's changes once the muxer writes the header
        # (MP4: 1/10240), and a frame stamped with it would reach the encoder with pts / 512
        self._tb = Fraction(1, fps)
        opts = {"g": str(gop), "crf": str(DEFAULT_CRF.get(codec, 23) if crf is None else crf)}
        if codec == "libsvtav1":
            opts["preset"] = "12"  # lerobot's
        elif codec == "libx264":
            opts["bf"] = "0"  # no B-frames: pts == dts, no edit list; little to gain at 2 frames per GOP
        self._c = av.open(str(path), "w")
        try:
            self._s = self._c.add_stream(codec, rate=fps, options=opts)
            self._s.width, self._s.height, self._s.pix_fmt = width, height, "yuv420p"
            self._s.time_base = Fraction(1, fps)
        except BaseException:
            self._c.close()
            raise

    def add(self, frames: np.ndarray) -> None:
        import av
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts, vf.time_base = self.frames, self._tb
            self.frames += 1
            self._mux(self._s.encode(vf))

    def _mux(self, packets) -> None:
        for p in packets:
            self.bytes += p.size
            self._c.mux(p)

    def close(self) -> None:
        try:
            self._mux(self._s.encode())
        finally:
            self._c.close()


def video_info(path: Path) -> dict[str, Any]:
    """The ``info`` lerobot keeps per video feature (its ``get_video_info``)."""
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"video.height": s.height, "video.width": s.width, "video.codec": s.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt, "video.is_depth_map": False, "video.fps": int(s.base_rate),
                "video.channels": 3, "has_audio": len(c.streams.audio) > 0}


class VideoReader:
    """Frames of one MP4 by time: decodes forward, seeking only when asked for earlier
    frames or ones far ahead (episodes read in order decode each file once)."""

    def __init__(self, path: Path) -> None:
        import av
        if not path.is_file():
            raise LeRobotFormatError(f"missing video {path}: the dataset is incomplete (re-download or re-export it)")
        try:
            self._c = av.open(str(path))
            self._s = self._c.streams.video[0]
        except (av.error.FFmpegError, IndexError) as e:
            raise LeRobotFormatError(f"corrupt video {path} ({type(e).__name__}: {e})") from None
        self._s.thread_type = "AUTO"
        self.path = path
        self._it: Iterator | None = None
        self._last = -np.inf  # time of the last frame decoded

    @property
    def duration(self) -> float | None:
        s = self._s
        if s.duration is not None:
            return float(s.duration * s.time_base)
        return None if self._c.duration is None else self._c.duration / 1e6

    def frames(self, t0: float, n: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """``n`` frames from time ``t0`` (frames before ``t0 - 1/(2 fps)`` skipped): (frames, times)."""
        half = 0.5 / fps
        if self._it is None or t0 - half < self._last or t0 - self._last > 2.0:
            self._c.seek(max(0, int((t0 - half) / self._s.time_base)), stream=self._s, backward=True)
            self._it = self._c.decode(self._s)
            self._last = -np.inf
        out, ts = [], []
        try:
            for f in self._it:
                t = float(f.pts * f.time_base) if f.pts is not None else self._last + 1.0 / fps
                self._last = t
                if t < t0 - half:
                    continue
                out.append(f.to_ndarray(format="rgb24"))
                ts.append(t)
                if len(out) == n:
                    break
        except Exception as e:  # noqa: BLE001 - av.error.* and friends: a damaged stream
            raise LeRobotFormatError(f"corrupt video {self.path} ({type(e).__name__}: {e})") from None
        if not out:
            return np.zeros((0,), np.uint8), np.zeros(0)
        return np.stack(out), np.asarray(ts)

    def close(self) -> None:
        self._c.close()
