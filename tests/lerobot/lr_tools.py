"""Run by the lerobot venv: lerobot's own dataset tools on a dataset, then load what they wrote.

    python lr_tools.py ROOT REPO_ID OUT_DIR DROP_EPISODE

- delete_episodes(dataset, [DROP_EPISODE]) -> OUT_DIR/deleted (re-cuts the videos, re-indexes the
  data and rewrites the per-episode metadata and stats);
- merge_datasets([dataset, deleted]) -> OUT_DIR/merged (aggregate_datasets: concatenates data,
  videos, tasks and merges the stats).
OUT_DIR/tools.json: counts, tasks and stats of both; OUT_DIR/tools.npz: their state / action /
episode_index columns ("deleted/<key>", "merged/<key>").
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.dataset_tools import delete_episodes, merge_datasets
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def summary(ds: LeRobotDataset, name: str, arrays: dict) -> dict:
    cols = ds.hf_dataset.with_format("numpy")
    for k in ("observation.state", "action", "episode_index", "index", "task_index"):
        arrays[f"{name}/{k}"] = np.asarray(cols[k])
    items = [ds[i] for i in (0, len(ds) - 1)]  # decodes the (re-cut) videos at both ends
    return {"num_episodes": ds.num_episodes, "num_frames": ds.num_frames,
            "tasks": ds.meta.tasks.index.tolist(), "item_tasks": [it["task"] for it in items],
            "camera_shapes": {k: list(items[-1][k].shape) for k in ds.meta.camera_keys},
            "action_mean": np.asarray(ds.meta.stats["action"]["mean"]).tolist(),
            "action_count": np.asarray(ds.meta.stats["action"]["count"]).tolist()}


def main() -> None:
    root, repo_id, out, drop = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    ds = LeRobotDataset(repo_id, root=root)
    arrays: dict = {}
    res = {}
    deleted = delete_episodes(ds, [drop], output_dir=out / "deleted", repo_id=f"{repo_id}_deleted")
    deleted = LeRobotDataset(f"{repo_id}_deleted", root=out / "deleted")
    res["deleted"] = summary(deleted, "deleted", arrays)
    merged = merge_datasets([ds, deleted], output_repo_id=f"{repo_id}_merged", output_dir=out / "merged")
    res["merged"] = summary(merged, "merged", arrays)
    (out / "tools.json").write_text(json.dumps(res, indent=1))
    np.savez(out / "tools.npz", **arrays)


if __name__ == "__main__":
    main()
