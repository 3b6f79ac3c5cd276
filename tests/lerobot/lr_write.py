"""Run by the lerobot venv: write a LeRobotDataset v3.0 with lerobot's own recording API.

    python lr_write.py SPEC.json DATA.npz ROOT

SPEC.json: {"repo_id", "fps", "robot_type", "use_videos", "features": {name: {dtype, shape, names}},
"episodes": [{"task": str, "length": int}, ...], "vcodec": optional}. DATA.npz holds, for episode e
and feature k, the array "e{e}/{k}" with `length` rows (images uint8 H x W x 3). Every frame goes
through `add_frame({..., "task": ...})`, each episode through `save_episode()`, then `finalize()`:
the path a LeRobot user's recording takes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    data = np.load(sys.argv[2])
    features = {k: {**v, "shape": tuple(v["shape"])} for k, v in spec["features"].items()}
    ds = LeRobotDataset.create(spec["repo_id"], int(spec["fps"]), features=features, root=sys.argv[3],
                               robot_type=spec.get("robot_type"), use_videos=bool(spec["use_videos"]),
                               **({"vcodec": spec["vcodec"]} if spec.get("vcodec") else {}))
    for e, ep in enumerate(spec["episodes"]):
        for i in range(int(ep["length"])):
            ds.add_frame({**{k: data[f"e{e}/{k}"][i] for k in spec["features"]}, "task": ep["task"]})
        ds.save_episode()
    ds.finalize()


if __name__ == "__main__":
    main()
