"""Episode store -> LeRobotDataset v3.0 (the layout in ``lerobot_format.py``), without lerobot.

What goes where (``info.json`` features; each carries a ``robot_rl`` key naming the store
key, dtype and shape it came from, so the import restores it exactly):

- ``observation.state``: ``joint_pos`` + ``gripper`` in the units of ``lerobot_units.py``
  (SO-101: ``shoulder_pan.pos`` .. ``wrist_roll.pos`` in degrees, ``gripper.pos`` 0 closed
  .. 100 open), float32.
- ``action``: joint_pos actions mapped like the state; ``joint_delta`` / ``ee_delta``
  actions as recorded (normalised deltas, gripper closure command), named for what they are.
- ``observation.images.<cam>`` from ``image_<cam>``: AV1 (or H.264) MP4, yuv420p, or
  PNG bytes in the parquet with ``video=False``.
- ``next.reward`` from ``reward``; other per-step observations as ``observation.<key>``;
  bookkeeping (``timestamp``, ``stamp_*``, ``lerobot_*``) and the exact store values behind converted
  columns as ``robot_rl.<key>`` (LeRobot's policies read only ``observation.*`` /
  ``action``). LeRobot's own ``timestamp`` is ``frame_index / fps``, as its video lookup
  expects. Names holding "image" that are not images say "camera" instead (lerobot's stats
  checks treat any feature named "*image*" as a picture).
- the episodes parquet also keeps each episode's success, source, fps, start time and extra
  (``robot_rl/*`` columns).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_rl.data import lerobot_format as fmt
from robot_rl.data.lerobot_format import LeRobotFormatError
from robot_rl.data.lerobot_units import UnitMap, UnitsError, unit_map
from robot_rl.data.store import EpisodeStore, StoreError
from robot_rl.spec import ACTION_MODES, RobotSpec, SpecError, load_spec

FORMAT = "robot_rl.lerobot_export/1"
ROBOT_TYPES = {"so101": "so101_follower"}  # LeRobot's name for the robot, where it has one
FRAME_BLOCK = 64  # frames read from the store at a time


@dataclass
class Feature:
    name: str  # LeRobot feature name
    dtype: str  # "float32" ..., "image", "video"
    shape: list[int]
    names: Any
    keys: tuple[str, ...]  # the store keys behind it
    role: str  # "state" | "action" | "camera" | "plain"
    umap: UnitMap | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    carry: str | None = None  # a store key holding the LeRobot values an import read (lerobot_state / _action)

    def info(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "names": self.names, fmt.OURS: self.meta}


def _lerobot_name(key: str, prefix: str) -> str:
    return prefix + key.replace("/", "_").replace("image", "camera")


def _action_names(spec: RobotSpec, mode: str) -> list[str]:
    g = ["gripper.closure"] if spec.gripper else []
    if mode == "joint_delta":
        return [f"{j}.delta" for j in spec.joint_names] + g
    return ["ee.dx", "ee.dy", "ee.dz", "ee.drx", "ee.dry", "ee.drz"] + g


ACTION_UNITS = {
    "joint_delta": "per-step joint deltas in [-1, 1] (x max_delta_joint rad), gripper closure command 0 open..1 closed",
    "ee_delta": "per-step end-effector deltas in [-1, 1] (position x max_delta_pos m, rotation vector x "
                "max_delta_rot rad), gripper closure command 0 open..1 closed",
}
KNOWN_NAMES = {"ee_pos": ["x", "y", "z"], "ee_quat": ["w", "x", "y", "z"]}
# store keys an import of a LeRobot-written dataset adds: the LeRobot numbers it read (robot order),
# so that exporting again gives them back bit for bit where no float32 angle maps onto them
CARRY = {"state": "lerobot_state", "action": "lerobot_action"}


def _action_mode(store: EpisodeStore, spec: RobotSpec, given: str | None) -> str:
    modes = {m["extra"].get("action_mode") for m in store.episodes_meta()}
    if given is None:
        found = {m for m in modes if m}
        if len(found) > 1:
            raise LeRobotFormatError(f"the store's episodes were recorded in several action modes {sorted(found)}: "
                                     "export them separately (one mode per dataset)")
        how = "recorded" if found else "assumed: no episode says, the trainer's default"
        given = found.pop() if found else "ee_delta"
    else:
        how = "given"
    if given not in ACTION_MODES:
        raise LeRobotFormatError(f"action_mode must be one of {list(ACTION_MODES)}, got {given!r}")
    adim = store.schema["action"].shape
    want = (spec.dof + (1 if spec.gripper else 0)) if given != "ee_delta" else (6 + (1 if spec.gripper else 0))
    if adim != (want,):
        raise LeRobotFormatError(f"the store's action has shape {adim}, but {given} actions of robot {spec.name!r} "
                                 f"have shape ({want},) ({how}); pass action_mode= (one of {list(ACTION_MODES)})")
    return given


def check_keys(store: EpisodeStore, spec: RobotSpec) -> None:
    """The store holds what observation.state and action are made of."""
    schema = store.schema
    for need in ["joint_pos"] + (["gripper"] if spec.gripper else []) + ["action"]:
        if need not in schema:
            raise LeRobotFormatError(f"the store has no {need!r} key, which a LeRobot dataset needs "
                                     f"({'observation.state' if need != 'action' else 'action'}); it holds "
                                     f"{sorted(schema)}")
    if schema["joint_pos"].shape != (spec.dof,) or (spec.gripper and schema["gripper"].shape not in ((1,), ())):
        raise LeRobotFormatError(f"joint_pos {schema['joint_pos'].shape} / gripper do not match robot {spec.name!r} "
                                 f"({spec.dof} joints)")


def plan_features(store: EpisodeStore, spec: RobotSpec, umap: UnitMap, mode: str, video: bool) -> list[Feature]:
    schema = store.schema
    check_keys(store, spec)
    feats: list[Feature] = []

    def carried(key: str) -> str | None:
        ks = schema.get(key)
        return key if ks is not None and ks.dtype == np.float32 and ks.shape == (len(umap.names),) else None

    state_keys = ("joint_pos", "gripper") if spec.gripper else ("joint_pos",)
    def key_meta(k: str) -> dict[str, Any]:
        return {"key": k, "dtype": schema[k].dtype.name, "shape": list(schema[k].shape)}

    feats.append(Feature("observation.state", "float32", [len(umap.names)], list(umap.names), state_keys, "state",
                         umap, {"keys": [key_meta(k) for k in state_keys], "units": umap.to_json()},
                         carry=carried(CARRY["state"])))
    if mode == "joint_pos":
        feats.append(Feature("action", "float32", [len(umap.names)], list(umap.names), ("action",), "action", umap,
                             {**key_meta("action"), "action_mode": mode, "units": umap.to_json()},
                             carry=carried(CARRY["action"])))
    else:
        feats.append(Feature("action", "float32", [schema["action"].shape[0]], _action_names(spec, mode), ("action",),
                             "action", None, {**key_meta("action"), "action_mode": mode, "units": ACTION_UNITS[mode]}))
    exact = [] if umap.identity else list(state_keys) + (["action"] if mode == "joint_pos" else [])
    exact += [k for k in ("joint_pos", "gripper", "action") if schema[k].dtype != np.float32 and k not in exact]
    for k in sorted(set(exact), key=list(schema).index):
        ks = schema[k]
        feats.append(Feature(f"{fmt.OURS}.{k}", ks.dtype.name, list(ks.shape) or [1], None, (k,), "plain", None,
                             {**key_meta(k), "exact": "observation.state" if k != "action" else "action"}))
    for k, ks in schema.items():
        if k in ("joint_pos", "gripper", "action"):
            continue
        if ks.image:
            if ks.shape[2] != 3:
                raise LeRobotFormatError(f"image key {k!r} has {ks.shape[2]} channels; LeRobot cameras are RGB "
                                         "(3 channels): drop the key from the store or convert it")
            cam = k[len("image_"):] if k.startswith("image_") else k
            feats.append(Feature(fmt.CAMERA_PREFIX + cam, "video" if video else "image", list(ks.shape),
                                 ["height", "width", "channels"], (k,), "camera", None,
                                 {"key": k, "codec": store.codec(k)}))
            continue
        if ks.dtype.kind not in "biuf":
            raise LeRobotFormatError(f"store key {k!r} has dtype {ks.dtype}, which a LeRobot dataset cannot hold")
        if k == "reward":
            name = "next.reward"
        elif k == "timestamp" or k.startswith(("stamp_", "lerobot_")):
            name = _lerobot_name(k, f"{fmt.OURS}.")
        else:
            name = _lerobot_name(k, "observation.")
        names = list(spec.joint_names) if k == "joint_vel" and ks.shape == (spec.dof,) else KNOWN_NAMES.get(k)
        feats.append(Feature(name, ks.dtype.name, list(ks.shape) or [1], names, (k,), "plain", None,
                             {"key": k, "dtype": ks.dtype.name, "shape": list(ks.shape)}))
    seen: set[str] = set()
    for f in feats:
        if f.name in seen or f.name in fmt.DEFAULT_FEATURES:
            raise LeRobotFormatError(f"two store keys map to the LeRobot feature {f.name!r}; rename one")
        seen.add(f.name)
    return feats


class _Files:
    """Data parquet or MP4 files, rolled over at a size limit, chunk/file indexed."""

    def __init__(self, root: Path, limit_mb: float) -> None:
        self.root, self.limit = root, limit_mb * (1 << 20)
        self.chunk, self.file, self.size, self.writer = 0, 0, 0, None

    def roll_if_full(self) -> None:
        if self.writer is not None and self.size >= self.limit:
            self.close()
            self.chunk, self.file = fmt.next_file(self.chunk, self.file)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.size = None, 0


def export_lerobot(store_path: str | os.PathLike, out_dir: str | os.PathLike, repo_id: str | None = None,
                   robot: Any = None, video: bool = True, calibration: Any = None, progress: bool = True, *,
                   units: str = "auto", hardware: str | None = None, action_mode: str | None = None,
                   vcodec: str = "auto", crf: int | None = None, gop: int = 2, data_file_mb: float = fmt.DATA_FILE_MB,
                   video_file_mb: float = fmt.VIDEO_FILE_MB) -> dict[str, Any]:
    """Write the episode store at ``store_path`` as a LeRobotDataset v3.0 in ``out_dir``
    (built in a temporary folder next to it, renamed into place at the end). Returns a summary."""
    t0 = time.perf_counter()
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LeRobotFormatError(f"{out} exists and is not empty: pick a new OUT_DIR (or remove it)")
    repo_id = repo_id or f"local/{out.name}"
    try:
        store = EpisodeStore.open(store_path)
    except StoreError as e:
        raise LeRobotFormatError(str(e)) from None
    tmp = out.parent / f".{out.name}.exporting-{uuid.uuid4().hex[:8]}"
    try:
        spec = store.spec
        if robot is not None:
            spec.check_compatible(load_spec(robot), what=f"episode store {store.path}")
        if store.n_episodes == 0:
            raise LeRobotFormatError(f"episode store {store.path} has no episodes to export")
        check_keys(store, spec)
        umap = unit_map(spec, units, calibration, hardware)
        mode = _action_mode(store, spec, action_mode)
        feats = plan_features(store, spec, umap, mode, video)
        codec = fmt.pick_vcodec(vcodec) if video and any(f.role == "camera" for f in feats) else None
        tmp.mkdir(parents=True)
        summary = _write(store, spec, feats, umap, mode, tmp, repo_id, video, codec,
                         None if crf is None else int(crf), int(gop),
                         data_file_mb, video_file_mb, progress)
        os.rename(tmp, out)
    except (SpecError, UnitsError, StoreError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LeRobotFormatError(str(e)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        store.close()
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary.update(out=str(out), bytes=nbytes, mb=nbytes / 1e6, seconds=time.perf_counter() - t0)
    return summary


def _forward(umap: UnitMap, x: np.ndarray, carried: np.ndarray | None) -> np.ndarray:
    """LeRobot values of store values ``x``: the carried LeRobot values (what an import read)
    where ``x`` is still what the import derived from them, else the unit map's forward."""
    v = umap.forward(x)
    if carried is None:
        return v
    c = np.asarray(carried, np.float32)
    same = umap.inverse(c).view(np.uint32) == np.asarray(x, np.float32).view(np.uint32)
    return np.where(same, c, v)


def _fps(store: EpisodeStore) -> int:
    fpss = sorted({float(m["fps"]) for m in store.episodes_meta()})
    if len(fpss) != 1 or not float(fpss[0]).is_integer():
        raise LeRobotFormatError(f"LeRobot datasets have one integer fps; the store's episodes have fps {fpss}: "
                                 "export episodes of one integer rate")
    return int(fpss[0])


def _write(store: EpisodeStore, spec: RobotSpec, feats: list[Feature], umap: UnitMap, mode: str, root: Path,
           repo_id: str, video: bool, codec: str | None, crf: int | None, gop: int, data_mb: float, video_mb: float,
           progress: bool) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fps = _fps(store)
    metas = store.episodes_meta()
    tasks: list[str] = list(dict.fromkeys(m["task"] for m in metas))
    task_idx = {t: i for i, t in enumerate(tasks)}
    n_total = store.n_steps
    cams = [f for f in feats if f.role == "camera"]
    plain = [f for f in feats if f.role != "camera"]
    numeric_keys = sorted({k for f in plain for k in f.keys})
    arrays = {k: np.asarray(store.data[k][:n_total]) for k in numeric_keys}
    info_feats = {f.name: f.info() for f in feats}
    info_feats.update({k: dict(v) for k, v in fmt.DEFAULT_FEATURES.items()})
    schema = pa.schema([(n, fmt.arrow_type(f["dtype"], f["shape"])) for n, f in info_feats.items()
                        if f["dtype"] != "video"])
    data = _Files(root, data_mb)
    vids = {f.name: _Files(root, video_mb) for f in cams} if video else {}
    all_cols: dict[str, list[np.ndarray]] = {n: [] for n in info_feats if info_feats[n]["dtype"] not in ("image", "video")}
    hists = {f.name: [np.zeros((3, 256), np.int64), 0] for f in cams}
    rows: list[dict[str, Any]] = []
    try:
        for e, m in enumerate(tqdm(metas, desc="export lerobot", unit="ep", disable=not progress)):
            lo, hi, n = m["start"], m["end"], m["length"]
            cols: dict[str, np.ndarray] = {}
            for f in plain:
                if f.role == "state" or (f.role == "action" and f.umap is not None):
                    x = np.concatenate([arrays[k][lo:hi].reshape(n, -1) for k in f.keys], 1)
                    cols[f.name] = _forward(f.umap or umap, x, None if f.carry is None else arrays[f.carry][lo:hi])
                else:
                    cols[f.name] = arrays[f.keys[0]][lo:hi].astype(np.dtype(f.dtype), copy=False).reshape(
                        (n, *f.shape) if f.shape != [1] else (n,))
            g0 = lo
            cols["timestamp"] = (np.arange(n) / fps).astype(np.float32)
            cols["frame_index"] = np.arange(n, dtype=np.int64)
            cols["episode_index"] = np.full(n, e, np.int64)
            cols["index"] = np.arange(g0, g0 + n, dtype=np.int64)
            cols["task_index"] = np.full(n, task_idx[m["task"]], np.int64)
            row: dict[str, Any] = {"episode_index": e, "tasks": [m["task"]], "length": n}
            ep_stats: dict[str, dict[str, np.ndarray]] = {}
            arrow_cols: dict[str, Any] = {}
            for f in cams:
                hist, count, pngs = _camera(store, f, lo, hi, vids.get(f.name), root, fps, codec, crf, gop, row)
                hists[f.name][0] += hist
                hists[f.name][1] += count
                ep_stats[f.name] = fmt.image_stats(hist, count)
                if pngs is not None:
                    arrow_cols[f.name] = pa.array([{"bytes": b, "path": None} for b in pngs],
                                                  fmt.arrow_type("image", f.shape))
            for name, x in cols.items():
                ep_stats[name] = fmt.numeric_stats(x.reshape(n, -1) if x.ndim > 2 else x)
                all_cols[name].append(x)
                arrow_cols[name] = fmt.to_arrow(x, info_feats[name]["dtype"], info_feats[name]["shape"])
            table = pa.table([arrow_cols[n] for n in schema.names], schema=schema)
            data.roll_if_full()
            if data.writer is None:
                path = root / fmt.DATA_PATH.format(chunk_index=data.chunk, file_index=data.file)
                path.parent.mkdir(parents=True, exist_ok=True)
                data.writer = pq.ParquetWriter(path, schema, compression="snappy")
            data.writer.write_table(table)
            data.size += table.nbytes
            row.update({"data/chunk_index": data.chunk, "data/file_index": data.file,
                        "dataset_from_index": g0, "dataset_to_index": g0 + n,
                        "robot_rl/success": bool(m["success"]), "robot_rl/source": m["source"],
                        "robot_rl/fps": float(m["fps"]), "robot_rl/start_time": float(m["start_time"]),
                        "robot_rl/extra": json.dumps(m["extra"])})
            for name in info_feats:
                for k, v in ep_stats.get(name, {}).items():
                    row[f"stats/{name}/{k}"] = np.asarray(v).tolist()
            rows.append(row)
    finally:
        data.close()
        for v in vids.values():
            v.close()
    for f in cams:
        if video:
            info_feats[f.name]["info"] = fmt.video_info(root / fmt.VIDEO_PATH.format(
                video_key=f.name, chunk_index=0, file_index=0))
    _write_episodes(rows, root, data_mb)
    pq.write_table(fmt.tasks_table(tasks), root / fmt.TASKS)
    stats: dict[str, dict[str, np.ndarray]] = {}
    for name in all_cols:
        x = np.concatenate(all_cols[name])
        stats[name] = fmt.numeric_stats(x.reshape(len(x), -1) if x.ndim > 2 else x)
    for f in cams:
        stats[f.name] = fmt.image_stats(*hists[f.name])
    fmt.write_json(root / fmt.STATS, fmt.stats_json({n: stats[n] for n in info_feats if n in stats}))
    ours = {"format": FORMAT, "repo_id": repo_id, "store": str(store.path), "robot": spec.to_dict(),
            "action_mode": mode, "units": umap.to_json(),
            "video": None if not video or not cams else {"codec": codec, "crf": fmt.DEFAULT_CRF.get(codec or "", 23)
                                                         if crf is None else crf, "gop": gop, "pix_fmt": "yuv420p"},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    info = {"codebase_version": fmt.CODEBASE_VERSION, "robot_type": ROBOT_TYPES.get(spec.name, spec.name),
            "total_episodes": len(metas), "total_frames": n_total, "total_tasks": len(tasks),
            "chunks_size": fmt.CHUNKS_SIZE, "data_files_size_in_mb": int(data_mb) or 1,
            "video_files_size_in_mb": int(video_mb) or 1, "fps": fps, "splits": {"train": f"0:{len(metas)}"},
            "data_path": fmt.DATA_PATH, "video_path": fmt.VIDEO_PATH if video and cams else None,
            "features": info_feats, fmt.OURS: ours}
    fmt.write_json(root / fmt.INFO, info)
    return {"repo_id": repo_id, "episodes": len(metas), "frames": n_total, "tasks": tasks, "fps": fps,
            "video": bool(video and cams), "vcodec": codec, "cameras": [f.name for f in cams],
            "units": umap.describe(), "unit_map": umap.to_json(), "action_mode": mode,
            "action_units": "as observation.state" if mode == "joint_pos" else ACTION_UNITS[mode],
            "features": {f.name: list(f.keys) for f in feats}}


def _camera(store: EpisodeStore, f: Feature, lo: int, hi: int, files: _Files | None, root: Path, fps: int,
            codec: str | None, crf: int | None, gop: int, row: dict[str, Any]) -> tuple[np.ndarray, int, list | None]:
    """Encode one episode of one camera (video: appended to the current MP4; image: PNG
    bytes); returns the episode's pixel histogram over lerobot's sampled frames, their
    count, and the PNGs (image mode)."""
    import cv2
    n = hi - lo
    pick = set((fmt.sample_indices(n)).tolist())
    hist = np.zeros((3, 256), np.int64)
    pngs: list[bytes] | None = None if files is not None else []
    if files is not None:
        files.roll_if_full()
        if files.writer is None:
            h, w = f.shape[:2]
            files.writer = fmt.VideoWriter(root / fmt.VIDEO_PATH.format(
                video_key=f.name, chunk_index=files.chunk, file_index=files.file), w, h, fps, codec or "", crf, gop)
        first = files.writer.frames
        row.update({f"videos/{f.name}/chunk_index": files.chunk, f"videos/{f.name}/file_index": files.file,
                    f"videos/{f.name}/from_timestamp": first / fps, f"videos/{f.name}/to_timestamp": (first + n) / fps})
    for b in range(lo, hi, FRAME_BLOCK):
        rows_ = np.arange(b, min(hi, b + FRAME_BLOCK))
        frames = store.read_frames(f.keys[0], rows_)
        sel = [i for i, r in enumerate(rows_ - lo) if int(r) in pick]
        if sel:
            hist += fmt.channel_hist(fmt.downsample(frames[sel]))
        if files is not None:
            files.writer.add(frames)
            files.size = files.writer.bytes
        else:
            for fr in frames:
                ok, buf = cv2.imencode(".png", np.ascontiguousarray(fr[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
                if not ok:
                    raise LeRobotFormatError(f"PNG encoding of {f.keys[0]} failed")
                pngs.append(buf.tobytes())
    return hist, len(pick), pngs


def _write_episodes(rows: list[dict[str, Any]], root: Path, limit_mb: float) -> None:
    """meta/episodes parquet files (rolled over at the data file size limit)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    chunk = file = 0
    start = 0
    limit = limit_mb * (1 << 20)
    while start < len(rows):
        end, size = start, 0
        while end < len(rows) and (end == start or size < limit):
            size += len(json.dumps(rows[end]))
            end += 1
        part = [dict(r, **{"meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file})
                for r in rows[start:end]]
        path = root / fmt.EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part), path, compression="snappy")
        chunk, file = fmt.next_file(chunk, file)
        start = end


__all__ = ["export_lerobot", "plan_features", "Feature", "LeRobotFormatError", "FORMAT"]
