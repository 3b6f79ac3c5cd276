"""Run by the lerobot venv: load a LeRobotDataset v3.0 from disk with lerobot's own classes and
write what a LeRobot user gets from it, for the core-venv tests to compare.

    python lr_read.py ROOT REPO_ID OUT_DIR [DELTA.json]

OUT_DIR/read.json : counts, fps, features, camera keys, meta.tasks (index and column types),
                    per-episode metadata, each item's `task` (value and type), meta.stats and the
                    per-episode stats aggregated by lerobot's aggregate_stats, a DataLoader batch
OUT_DIR/frames.npz: every frame through `dataset[i]`, stacked per key (images uint8 H x W x C)
OUT_DIR/delta.npz : with DELTA.json ({"delta_timestamps": {...}, "probe": [indices]}), the items
                    of `LeRobotDataset(..., delta_timestamps=...)` at the probe indices as
                    "<index>/<key>" (windows and their `<key>_is_pad`)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.datasets.compute_stats import aggregate_stats
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def to_np(v, image: bool) -> np.ndarray:
    a = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    if image:  # lerobot gives float32 C x H x W in 0..1 (uint8 / 255): back to the bytes
        a = np.clip(np.rint(np.moveaxis(a, -3, -1) * 255.0), 0, 255).astype(np.uint8)
    return a


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return np.asarray(x).tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def main() -> None:
    root, repo_id, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    ds = LeRobotDataset(repo_id, root=root)
    cams = set(ds.meta.camera_keys)
    tasks = ds.meta.tasks
    res = {"num_episodes": ds.num_episodes, "num_frames": ds.num_frames, "len": len(ds), "fps": ds.fps,
           "robot_type": ds.meta.robot_type, "features": ds.features, "camera_keys": sorted(cams),
           "video_keys": sorted(ds.meta.video_keys),
           "tasks": {"index": [[v, type(v).__name__] for v in tasks.index.tolist()],
                     "task_index": tasks["task_index"].tolist()}}
    eps = ds.meta.episodes
    res["episodes"] = [{k: jsonable(eps[i][k]) for k in ("episode_index", "tasks", "length",
                                                           "dataset_from_index", "dataset_to_index")}
                       for i in range(len(eps))]
    frames: dict[str, list] = {}
    item_tasks = []
    for i in range(len(ds)):
        item = ds[i]
        item_tasks.append([item["task"], type(item["task"]).__name__])
        for k, v in item.items():
            if isinstance(v, torch.Tensor):
                frames.setdefault(k, []).append(to_np(v, k in cams))
    np.savez(out / "frames.npz", **{k: np.stack(v) for k, v in frames.items()})
    res["item_tasks"] = item_tasks
    res["stats"] = jsonable(ds.meta.stats)
    # the per-episode stats (meta/episodes/*.parquet, stats/<feature>/<stat>) merged by lerobot's
    # aggregate_stats, as lerobot does when it merges or splits datasets
    import pyarrow.parquet as pq
    rows = [r for p in sorted((root / "meta" / "episodes").rglob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    ep_stats = []
    for row in sorted(rows, key=lambda r: r["episode_index"]):
        s: dict = {}
        for col, val in row.items():
            if col.startswith("stats/"):
                _, feat, stat = col.split("/")
                s.setdefault(feat, {})[stat] = np.asarray(val)
        ep_stats.append(s)
    res["episode_stats_features"] = sorted(ep_stats[0]) if ep_stats else []
    res["aggregated_stats"] = jsonable(aggregate_stats(ep_stats)) if ep_stats and ep_stats[0] else None

    if len(sys.argv) > 4:
        spec = json.loads(Path(sys.argv[4]).read_text())
        dts = spec["delta_timestamps"]
        dsd = LeRobotDataset(repo_id, root=root, delta_timestamps=dts)
        win = {}
        for i in spec["probe"]:
            item = dsd[int(i)]
            for k, v in item.items():
                if isinstance(v, torch.Tensor):
                    win[f"{i}/{k}"] = to_np(v, k in cams)
        np.savez(out / "delta.npz", **win)
        batch = next(iter(torch.utils.data.DataLoader(dsd, batch_size=4, shuffle=False, num_workers=0)))
        res["batch"] = {k: (list(v.shape) if isinstance(v, torch.Tensor) else [type(x).__name__ for x in v])
                        for k, v in batch.items()}
        res["batch_task"] = list(batch["task"])
    (out / "read.json").write_text(json.dumps(jsonable(res), indent=1))


if __name__ == "__main__":
    main()
