"""Does data loading ever dominate a training step?

For a state-based and an image-based (front + wrist 96x96) diffusion policy on pick_cube
demonstrations, measures in one run:

- batch assembly: ``SequenceSampler.get_batch`` (one vectorised gather per key) against
  the naive baseline of stacking ``sampler[i]`` item by item;
- real training steps (loss, backward, AdamW) fed by the trainer's ``Prefetcher``
  thread: step time and the share of it spent waiting for the next batch.

    cd benchmarks && ../scripts/isolated.sh ../.venv/bin/python bench_data_loading.py
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from _common import print_table, write_json

ROOT = Path(__file__).resolve().parent.parent


def image_store(path: Path, episodes: int) -> Path:
    if not path.exists():
        from robot_rl.cli.main import main
        assert main(["record", "sim", "task=pick_cube", f"episodes={episodes}", "cameras=[front,wrist]",
                     "image_size=96", f"out={path}", "progress=false"]) == 0
    return path


def measure(name: str, store: Path, pcfg: dict, batch: int, steps: int) -> dict:
    from robot_rl.data import EpisodeStore, SequenceSampler
    from robot_rl.learn.train import Prefetcher, build_policy, policy_keys
    state_keys, cams = policy_keys(pcfg)
    with EpisodeStore.open(store) as st:
        sampler = SequenceSampler(st, obs_keys=state_keys + cams, n_obs_steps=pcfg["n_obs_steps"],
                                  horizon=pcfg["horizon"])
        policy = build_policy(pcfg, sampler, st)
    rng = np.random.default_rng(0)
    idx = [rng.integers(0, len(sampler), batch) for _ in range(10)]
    t0 = time.perf_counter()
    for ix in idx:
        sampler.get_batch(ix)
    vec_ms = (time.perf_counter() - t0) / len(idx) * 1e3
    t0 = time.perf_counter()
    for ix in idx[:3]:
        items = [sampler[int(i)] for i in ix]
        {k: np.stack([it[k] for it in items]) for k in items[0]}
    naive_ms = (time.perf_counter() - t0) / 3 * 1e3
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    pre = Prefetcher(sampler, batch, seed=0, device=torch.device("cpu"))
    try:
        for _ in range(2):  # warm-up
            loss = policy.loss(pre.next())
            loss.backward()
            opt.step()
            opt.zero_grad()
        pre.wait_s = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            b = pre.next()
            loss = policy.loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
        total = time.perf_counter() - t0
    finally:
        pre.close()
    return {"policy": name, "batch": batch, "windows": len(sampler), "get_batch_ms": vec_ms,
            "naive_stack_ms": naive_ms, "speedup": naive_ms / vec_ms, "step_ms": total / steps * 1e3,
            "wait_ms": pre.wait_s / steps * 1e3, "wait_share_pct": 100 * pre.wait_s / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-store", default=str(ROOT / "data" / "bench" / "so101_pick_cube.zarr"))
    ap.add_argument("--image-store", default=str(ROOT / "data" / "bench" / "so101_pick_cube_img.zarr"))
    ap.add_argument("--image-episodes", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    import yaml
    base = yaml.safe_load((ROOT / "robot_rl" / "conf" / "policy" / "diffusion.yaml").read_text())
    state = measure("diffusion, state", Path(args.state_store), base, 256, 60)
    img_cfg = {**base, "cameras": ["front", "wrist"], "crop": 84, "state_keys": ["joint_pos", "gripper"]}
    img = measure("diffusion, 2x96x96 images", image_store(Path(args.image_store), args.image_episodes), img_cfg, 64, 8)
    rows = [state, img]
    print_table(rows, ["policy", "batch", "windows", "get_batch_ms", "naive_stack_ms", "speedup", "step_ms",
                       "wait_ms", "wait_share_pct"], "data loading vs training step (CPU, prefetch thread)")
    write_json("bench_data_loading", {"rows": rows, "torch_threads": torch.get_num_threads()}, args.out)


if __name__ == "__main__":
    main()
