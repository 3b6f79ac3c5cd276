"""LeRobotDataset v3.0 -> episode store, without lerobot.

Reads what ``lerobot_export.py`` writes (restoring every store key, dtype, shape, task,
success, source, fps and extra exactly) and datasets LeRobot recorded: ``observation.state``
/ ``action`` elements named ``<motor>.pos`` are mapped to the robot's joints (+ gripper)
through the unit mapping backwards (``lerobot_units.py``); cameras become
``image_<cam>``; ``next.reward`` becomes ``reward``; other numeric features are kept under
their names (``observation.`` dropped, dots as underscores); the LeRobot state / action
numbers themselves are kept as ``lerobot_state`` / ``lerobot_action`` (so an export gives
them back bit for bit, see ``lerobot_units.py``). Video frames are decoded with
PyAV, each episode looked up at its ``from_timestamp`` and checked frame by frame against
``from_timestamp + i / fps`` (half a frame of tolerance).

The store is written next to OUT under a temporary name and renamed at the end: an error
leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import re
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
from robot_rl.data.lerobot_export import CARRY
from robot_rl.data.lerobot_units import UnitMap, UnitsError, unit_map
from robot_rl.data.store import EpisodeStore, StoreError
from robot_rl.spec import ACTION_MODES, CameraSpec, RobotSpec, SpecError, load_spec

CONVERTER = ("python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=REPO_ID (lerobot >= 0.4), "
             "then import the converted copy")


@dataclass
class _Plan:
    """Where each LeRobot feature goes in the store."""
    state: tuple[list[int], UnitMap, list[tuple[str, np.dtype, tuple[int, ...]]]]  # columns, map, [(key, dtype, shape)]
    action: tuple[list[int] | None, UnitMap | None, np.dtype, tuple[int, ...]]
    action_mode: str
    exact: dict[str, str] = field(default_factory=dict)  # store key -> LeRobot column with its exact values
    plain: dict[str, tuple[str, np.dtype, tuple[int, ...]]] = field(default_factory=dict)  # feature -> key, dtype, shape
    cameras: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # feature -> store key, codec
    timestamp: str = "timestamp"
    carry: set[str] = field(default_factory=set)  # "state" / "action": keep the LeRobot values read (CARRY keys)


def _version(info: dict[str, Any], root: Path) -> None:
    v = str(info.get("codebase_version", ""))
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", v)
    if not m:
        raise LeRobotFormatError(f"{root}: meta/info.json has no readable codebase_version ({v!r})")
    major, minor = int(m.group(1)), int(m.group(2))
    if major < 3:
        raise LeRobotFormatError(f"{root} is a LeRobot {v} dataset; this importer reads v3.0: convert it with "
                                 f"{CONVERTER}")
    if (major, minor) > (3, 0):
        raise LeRobotFormatError(f"{root} is a LeRobot {v} dataset, newer than the v3.0 this importer knows; "
                                 "export it as v3.0 or update robot_rl")


def _names(ft: dict[str, Any]) -> list[str]:
    n = ft.get("names")
    if isinstance(n, dict):  # older datasets: {"motors": [...]}
        n = next(iter(n.values()), None)
    return [str(x) for x in n] if isinstance(n, list) else []


def _store_key(name: str) -> str:
    if name == "next.reward":
        return "reward"
    return (name[len("observation."):] if name.startswith("observation.") else name).replace(".", "_")


def _pick(names: list[str], want: tuple[str, ...], feature: str, feats: dict[str, Any]) -> list[int]:
    missing = [w for w in want if w not in names]
    if missing:
        raise LeRobotFormatError(f"{feature} lacks {missing}, which the robot needs; it holds {names} "
                                 f"(features: {sorted(feats)}); pick the robot= the dataset was recorded with")
    return [names.index(w) for w in want]


def plan_import(info: dict[str, Any], spec: RobotSpec, umap_given: UnitMap | None, umap_default: UnitMap,
                action_mode: str | None) -> _Plan:
    feats: dict[str, Any] = info.get("features") or {}
    ours = isinstance(info.get(fmt.OURS), dict)
    for need in ("observation.state", "action"):
        if need not in feats:
            raise LeRobotFormatError(f"missing feature {need!r}, which the robot needs; the dataset has "
                                     f"{sorted(feats)}")
    st = feats["observation.state"]
    meta = st.get(fmt.OURS) or {}
    umap = umap_given or (UnitMap.from_json(meta["units"]) if ours and "units" in meta else umap_default)
    cols = _pick(_names(st), umap.names, "observation.state", feats)
    n_g = 1 if spec.gripper else 0
    if ours and "keys" in meta:
        keys = [(str(k["key"]), np.dtype(k["dtype"]), tuple(k["shape"])) for k in meta["keys"]]
    else:
        keys = [("joint_pos", np.dtype("float32"), (spec.dof,))] + ([("gripper", np.dtype("float32"), (1,))] * n_g)
    act = feats["action"]
    ameta = act.get(fmt.OURS) or {}
    adt, ashape = np.dtype(ameta.get("dtype", "float32")), tuple(ameta.get("shape", act["shape"]))
    if ours and ameta.get("action_mode") and ameta.get("action_mode") != "joint_pos":
        mode, acols, amap = ameta["action_mode"], None, None
    elif set(umap.names) <= set(_names(act)) and action_mode in (None, "joint_pos"):
        mode, acols, amap, ashape = "joint_pos", _pick(_names(act), umap.names, "action", feats), umap, (len(umap.names),)
    elif action_mode is not None:
        if action_mode not in ACTION_MODES:
            raise LeRobotFormatError(f"action_mode must be one of {list(ACTION_MODES)}, got {action_mode!r}")
        if ashape != (spec.action_dim(action_mode),):
            raise LeRobotFormatError(f"action has shape {list(ashape)}, but {action_mode} actions of robot "
                                     f"{spec.name!r} have shape [{spec.action_dim(action_mode)}]")
        mode, acols, amap = action_mode, None, None
    else:
        raise LeRobotFormatError(f"action elements {_names(act)} are not the robot's joint positions {list(umap.names)}: "
                                 f"pass action_mode= (one of {list(ACTION_MODES)}) to keep them as recorded")
    plan = _Plan((cols, umap, keys), (acols, amap, adt, ashape), mode)
    taken = {"observation.state", "action", *fmt.DEFAULT_FEATURES}
    for name, ft in feats.items():
        if name in taken:
            continue
        m = ft.get(fmt.OURS) if ours else None
        if ft.get("dtype") in ("image", "video"):
            cam = name[len(fmt.CAMERA_PREFIX):] if name.startswith(fmt.CAMERA_PREFIX) else name.replace(".", "_")
            plan.cameras[name] = ((m or {}).get("key", f"image_{cam}"), (m or {}).get("codec"))
            continue
        if ft.get("dtype") == "string" or not isinstance(ft.get("shape"), (list, tuple)):
            continue
        if m and m.get("exact"):
            plan.exact[m["key"]] = name
            continue
        key = (m or {}).get("key") or _store_key(name)
        shape = tuple((m or {}).get("shape", ft["shape"]))
        plan.plain[name] = (key, np.dtype((m or {}).get("dtype", ft["dtype"])), shape)
    # a dataset robot_rl did not write: keep what it holds where the map is not the identity, so that
    # an export gives the LeRobot numbers back bit for bit (not every float32 degree has a float32 radian)
    if not all(k in plan.exact for k, _, _ in keys) and not umap.identity:
        plan.carry.add("state")
    if amap is not None and "action" not in plan.exact and not amap.identity:
        plan.carry.add("action")
    if ours and f"{fmt.OURS}.timestamp" in plan.plain:
        plan.plain.pop(f"{fmt.OURS}.timestamp")
        plan.timestamp = f"{fmt.OURS}.timestamp"
    used = [k for k, _, _ in keys] + ["action", "timestamp"] + [v[0] for v in plan.plain.values()] + \
        [v[0] for v in plan.cameras.values()] + [CARRY[c] for c in plan.carry]
    dup = sorted({k for k in used if used.count(k) > 1})
    if dup:
        raise LeRobotFormatError(f"several features map to store keys {dup}; rename them in the dataset")
    return plan


def _load_info(root: Path) -> dict[str, Any]:
    p = root / fmt.INFO
    if not root.is_dir():
        raise LeRobotFormatError(f"no LeRobot dataset at {root}")
    if not p.is_file():
        legacy = (root / "meta" / "episodes.jsonl").is_file()
        raise LeRobotFormatError(f"{root} is not a LeRobot dataset (no meta/info.json)" +
                                 (f"; it looks like a v2.x one: convert it with {CONVERTER}" if legacy else ""))
    try:
        info = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeRobotFormatError(f"{p}: not JSON ({e})") from None
    if not isinstance(info, dict):
        raise LeRobotFormatError(f"{p}: expected a JSON object")
    _version(info, root)
    for k in ("fps", "features"):
        if k not in info:
            raise LeRobotFormatError(f"{p} has no {k!r}")
    return info


def _episodes(root: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root}: no meta/episodes/*/*.parquet: the dataset is incomplete")
    rows: list[dict[str, Any]] = []
    for f in files:
        t = fmt.read_parquet(f)
        t = t.select([c for c in t.column_names if not c.startswith("stats/")])
        try:
            rows += t.to_pylist()
        except pa.ArrowException as e:
            raise LeRobotFormatError(f"corrupt parquet file {f} ({e})") from None
    need = ("episode_index", "length", "data/chunk_index", "data/file_index")
    for r in rows[:1]:
        miss = [k for k in need if k not in r]
        if miss:
            raise LeRobotFormatError(f"{files[0]} lacks columns {miss}: not a v3.0 episodes table")
    return sorted(rows, key=lambda r: int(r["episode_index"]))


class _DataFiles:
    """The data parquet file of the current episode, loaded once, rows grouped by episode."""

    def __init__(self, root: Path, template: str) -> None:
        self.root, self.template = root, template
        self.key: tuple[int, int] | None = None
        self.table = None
        self.groups: dict[int, np.ndarray] = {}
        self.path = root

    def rows(self, ep: dict[str, Any]):
        key = (int(ep["data/chunk_index"]), int(ep["data/file_index"]))
        if key != self.key:
            path = self.root / self.template.format(chunk_index=key[0], file_index=key[1])
            self.table = fmt.read_parquet(path)
            for c in ("episode_index", "frame_index"):
                if c not in self.table.column_names:
                    raise LeRobotFormatError(f"{path} has no {c!r} column: not a LeRobot data file")
            e = self.table.column("episode_index").to_numpy()
            fi = self.table.column("frame_index").to_numpy()
            order = np.lexsort((fi, e))
            uniq, start = np.unique(e[order], return_index=True)
            bounds = list(start) + [len(order)]
            self.groups = {int(u): order[bounds[i]:bounds[i + 1]] for i, u in enumerate(uniq)}
            self.key, self.path = key, path
        idx = self.groups.get(int(ep["episode_index"]), np.zeros(0, np.int64))
        return self.table.take(idx), self.path


def import_lerobot(in_dir: str | os.PathLike, out_store: str | os.PathLike, robot: Any,
                   calibration: Any = None, progress: bool = True, *, units: str = "auto",
                   hardware: str | None = None, action_mode: str | None = None,
                   image_codecs: dict[str, str] | None = None) -> dict[str, Any]:
    """Read the LeRobotDataset v3.0 at ``in_dir`` into a new episode store ``out_store``."""
    t0 = time.perf_counter()
    root = Path(in_dir).absolute()
    out = Path(out_store).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LeRobotFormatError(f"{out} exists and is not empty: pick a new OUT.zarr (or remove it)")
    info = _load_info(root)
    try:
        spec = load_spec(robot)
        ours = info.get(fmt.OURS) if isinstance(info.get(fmt.OURS), dict) else None
        if ours and "robot" in ours:
            recorded = RobotSpec.from_dict(ours["robot"])
            recorded.check_compatible(spec, what=f"LeRobot dataset {root}")
            spec = recorded
        umap_given = unit_map(spec, units, calibration, hardware) if (calibration is not None or units != "auto") \
            else None
        plan = plan_import(info, spec, umap_given, unit_map(spec, "auto"), action_mode)
    except (SpecError, UnitsError) as e:
        raise LeRobotFormatError(str(e)) from None
    fps = info["fps"]
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise LeRobotFormatError(f"{root}: fps must be a positive number, got {fps!r}")
    tasks = fmt.read_tasks(root / fmt.TASKS)
    episodes = _episodes(root)
    for name, ft in info["features"].items():
        if ft.get("dtype") == "video" and name in plan.cameras:
            _check_video_spans(name, episodes, float(fps))
    feats = info["features"]
    spec = _with_cameras(spec, {k: feats[n]["shape"] for n, (k, _) in plan.cameras.items()})
    codecs = dict(image_codecs or {})
    for n, (k, c) in plan.cameras.items():
        if c and k not in codecs:
            codecs[k] = c
    tmp = out.parent / f".{out.name}.importing-{uuid.uuid4().hex[:8]}"
    store = None
    warnings: list[str] = []
    readers: dict[Path, fmt.VideoReader] = {}
    try:
        store = EpisodeStore.create(tmp, spec, image_codecs=codecs or None)
        data = _DataFiles(root, str(info.get("data_path") or fmt.DATA_PATH))
        for ep in tqdm(episodes, desc="import lerobot", unit="ep", disable=not progress):
            _import_episode(store, ep, plan, info, root, data, readers, tasks, float(fps), warnings)
        n_eps, n_steps = store.n_episodes, store.n_steps
        store.close()
        store = None
        os.rename(tmp, out)
    except (StoreError, SpecError) as e:
        raise LeRobotFormatError(f"importing {root}: {e}") from None
    finally:
        for r in readers.values():
            r.close()
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - cleaning up after the real error
                pass
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    umap = plan.state[1]
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"out": str(out), "dataset": str(root), "episodes": n_eps, "frames": n_steps, "fps": fps,
            "robot": spec.name, "units": umap.describe(), "unit_map": umap.to_json(), "action_mode": plan.action_mode,
            "cameras": {n: k for n, (k, _) in plan.cameras.items()}, "keys": {n: v[0] for n, v in plan.plain.items()},
            "exact_columns": sorted(plan.exact), "carried": {c: CARRY[c] for c in sorted(plan.carry)},
            "warnings": warnings, "bytes": nbytes, "mb": nbytes / 1e6,
            "seconds": time.perf_counter() - t0}


def _check_video_spans(name: str, episodes: list[dict[str, Any]], fps: float) -> None:
    """Episodes sharing an MP4 must not overlap in it (a shifted from_timestamp reads another
    episode's frames, which look just as well timed)."""
    k = f"videos/{name}/"
    by_file: dict[tuple[int, int], list[tuple[float, float, int]]] = {}
    for ep in episodes:
        if k + "from_timestamp" not in ep or ep[k + "from_timestamp"] is None:
            continue
        t0 = float(ep[k + "from_timestamp"])
        t1 = ep.get(k + "to_timestamp")
        t1 = t0 + int(ep["length"]) / fps if t1 is None else float(t1)
        by_file.setdefault((int(ep[k + "chunk_index"]), int(ep[k + "file_index"])), []).append(
            (t0, t1, int(ep["episode_index"])))
    half = 0.5 / fps
    for (c, f), spans in by_file.items():
        spans.sort()
        for (a0, a1, ea), (b0, b1, eb) in zip(spans, spans[1:]):
            if b0 < a1 - half:
                raise LeRobotFormatError(f"mismatched video timestamps: episodes {ea} ({a0:.4f}..{a1:.4f} s) and {eb} "
                                         f"({b0:.4f}..{b1:.4f} s) overlap in {name} chunk {c} file {f}")


def _with_cameras(spec: RobotSpec, shapes: dict[str, Any]) -> RobotSpec:
    """The spec with the dataset's cameras at their sizes (fov / mount kept where the spec knows them)."""
    import dataclasses
    known = {c.name: c for c in spec.cameras}
    cams = []
    for key, shape in shapes.items():
        name = key[len("image_"):] if key.startswith("image_") else key
        h, w = int(shape[0]), int(shape[1])
        base = known.get(name)
        cams.append(dataclasses.replace(base, width=w, height=h) if base else CameraSpec(name, w, h, 60.0))
    return dataclasses.replace(spec, cameras=tuple(cams)) if cams else spec


def _inverse_with_exact(vals: np.ndarray, umap: UnitMap, exact: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Store values for LeRobot ``vals``: the exact column where it still maps onto them
    (bitwise), else the unit map's inverse. Returns (values, elements not taken from exact)."""
    back = umap.inverse(vals)
    if exact is None:
        return back, 0 if umap.identity else vals.size
    ok = umap.forward(exact).view(np.uint32) == np.asarray(vals, np.float32).view(np.uint32)
    out = np.where(ok, exact, back.astype(exact.dtype))
    return out, int((~ok).sum())


def _import_episode(store: EpisodeStore, ep: dict[str, Any], plan: _Plan, info: dict[str, Any], root: Path,
                    data: _DataFiles, readers: dict[Path, fmt.VideoReader], tasks: dict[int, str], fps: float,
                    warnings: list[str]) -> None:
    feats = info["features"]
    e, n = int(ep["episode_index"]), int(ep["length"])
    table, path = data.rows(ep)
    if table.num_rows != n:
        raise LeRobotFormatError(f"episode {e}: {path} holds {table.num_rows} frames, its episodes entry says {n}")
    if n == 0:
        return

    def col(name: str) -> np.ndarray:
        ft = feats.get(name) or fmt.DEFAULT_FEATURES[name]
        if name not in table.column_names:
            raise LeRobotFormatError(f"{path} has no column {name!r} (a feature in meta/info.json)")
        try:
            return fmt.from_arrow(table.column(name), ft["dtype"], ft["shape"])
        except LeRobotFormatError as err:
            raise LeRobotFormatError(f"{path}: column {name!r}: {err}") from None

    steps: dict[str, np.ndarray] = {}
    cols, umap, keys = plan.state
    state = col("observation.state").reshape(n, -1)[:, cols]
    exact = None
    if all(k in plan.exact for k, _, _ in keys):
        exact = np.concatenate([col(plan.exact[k]).reshape(n, -1) for k, _, _ in keys], 1)
    vals, redone = _inverse_with_exact(state, umap, exact)
    if "state" in plan.carry:
        steps[CARRY["state"]] = state.astype(np.float32)
    if exact is not None and redone:
        warnings.append(f"episode {e}: {redone} observation.state values differ from the exact robot_rl columns "
                        "(edited after export?): converted from observation.state")
    j = 0
    for k, dt, shape in keys:
        w = int(np.prod(shape)) if shape else 1
        steps[k] = vals[:, j:j + w].astype(dt).reshape((n, *shape))
        j += w
    acols, amap, adt, ashape = plan.action
    a = col("action").reshape(n, -1)
    if "action" in plan.carry:
        steps[CARRY["action"]] = a[:, acols].astype(np.float32)
    if amap is not None:
        a, redone = _inverse_with_exact(a[:, acols], amap,
                                        col(plan.exact["action"]).reshape(n, -1) if "action" in plan.exact else None)
        if "action" in plan.exact and redone:
            warnings.append(f"episode {e}: {redone} action values differ from robot_rl.action: converted from action")
    steps["action"] = a.astype(adt).reshape((n, *ashape))
    for name, (k, dt, shape) in plan.plain.items():
        steps[k] = col(name).astype(dt).reshape((n, *shape))
    ts = col(plan.timestamp).astype(np.float64).reshape(n)
    rel = col("timestamp").astype(np.float64).reshape(n) if plan.cameras else None  # LeRobot's, from 0
    for name, (k, _) in plan.cameras.items():
        steps[k] = _frames(name, feats[name], ep, table, root, info, readers, fps, rel, e)
    meta_task = tasks.get(int(col("task_index")[0]))
    task = meta_task or (ep.get("tasks") or ["lerobot"])[0]
    ours = "robot_rl/extra" in ep
    extra = json.loads(ep["robot_rl/extra"]) if ours else {
        "lerobot": {"dataset": str(root), "episode_index": e, "robot_type": info.get("robot_type")}}
    if not ours:
        extra["action_mode"] = plan.action_mode
    episode = store.start_episode(task=str(task), source=str(ep.get("robot_rl/source", "converted")),
                                  fps=float(ep.get("robot_rl/fps", fps)), extra=extra)
    try:
        for i in range(n):
            episode.add_step({k: v[i] for k, v in steps.items()}, timestamp=float(ts[i]))
        if "robot_rl/start_time" in ep:
            episode.start_time = float(ep["robot_rl/start_time"])
        episode.commit(bool(ep.get("robot_rl/success", True)))
    except BaseException:
        episode.discard()
        raise


def _frames(name: str, ft: dict[str, Any], ep: dict[str, Any], table, root: Path, info: dict[str, Any],
            readers: dict[Path, fmt.VideoReader], fps: float, rel: np.ndarray, e: int) -> np.ndarray:
    """The episode's frames of camera ``name``; video frame i must lie at ``from_timestamp +
    timestamp[i]`` (where LeRobot looks it up) within half a frame."""
    n = len(rel)
    shape = tuple(int(x) for x in ft["shape"])
    if ft["dtype"] == "image":
        return _png_frames(name, table, root, shape, e)
    tpl = info.get("video_path")
    k = f"videos/{name}/"
    miss = [c for c in ("chunk_index", "file_index", "from_timestamp") if k + c not in ep]
    if not tpl or miss:
        raise LeRobotFormatError(f"episode {e}: video feature {name!r} without its file in meta/episodes "
                                 f"(missing {[k + c for c in miss]}) or info.json video_path")
    path = root / tpl.format(video_key=name, chunk_index=int(ep[k + "chunk_index"]),
                             file_index=int(ep[k + "file_index"]))
    t0 = float(ep[k + "from_timestamp"])
    half = 0.5 / fps
    t1 = ep.get(k + "to_timestamp")
    if t1 is not None and abs((float(t1) - t0) - n / fps) > half:
        raise LeRobotFormatError(f"mismatched video timestamps: episode {e} of {name} spans {float(t1) - t0:.4f} s "
                                 f"of {path.name} ({t0:.4f}..{float(t1):.4f}) but has {n} frames at {fps:g} fps "
                                 f"({n / fps:.4f} s)")
    r = readers.get(path)
    if r is None:
        for old in list(readers):  # one open file per camera is enough (episodes are read in order)
            if old.parent.parent == path.parent.parent:
                readers.pop(old).close()
        r = readers[path] = fmt.VideoReader(path)
    frames, ts = r.frames(t0, n, fps)
    if len(frames) != n:
        raise LeRobotFormatError(f"mismatched video timestamps: {path} holds {len(frames)} frames from "
                                 f"{t0:.4f} s, episode {e} has {n} (from_timestamp or the video is wrong)")
    want = t0 + rel
    bad = np.flatnonzero(np.abs(ts - want) > half)
    if bad.size:
        i = int(bad[0])
        raise LeRobotFormatError(f"mismatched video timestamps: episode {e} frame {i} of {name} lies at "
                                 f"{ts[i]:.4f} s in {path.name}, expected {want[i]:.4f} s (from_timestamp "
                                 f"{t0:.4f} + timestamp {rel[i]:.4f}) within {half:.4f} s")
    if frames.shape[1:] != shape:
        raise LeRobotFormatError(f"{path}: frames are {frames.shape[1:]}, info.json says {name} is {shape}")
    return frames


def _png_frames(name: str, table, root: Path, shape: tuple[int, ...], e: int) -> np.ndarray:
    import cv2
    if name not in table.column_names:
        raise LeRobotFormatError(f"image feature {name!r} has no column in the data file")
    out = np.empty((table.num_rows, *shape), np.uint8)
    for i, v in enumerate(table.column(name).to_pylist()):
        buf = (v or {}).get("bytes") if isinstance(v, dict) else v
        if buf is None and isinstance(v, dict) and v.get("path"):
            p = Path(v["path"])
            buf = (p if p.is_absolute() else root / p).read_bytes()
        img = None if buf is None else cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise LeRobotFormatError(f"episode {e} frame {i} of {name}: not a readable image")
        img = img[..., ::-1]
        if img.shape != shape:
            raise LeRobotFormatError(f"episode {e} frame {i} of {name} is {img.shape}, info.json says {shape}")
        out[i] = img
    return out


__all__ = ["import_lerobot", "plan_import", "LeRobotFormatError"]
