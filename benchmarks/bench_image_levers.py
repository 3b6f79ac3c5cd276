"""What each lever of the CPU image recipe does to training speed: samples/s of one image
diffusion training step (forward, backward, AdamW) on real batches of the two-camera store,
every configuration measured in the same run, and the batch-assembly time of frames decoded
per batch vs decoded once and held in RAM.

    cd benchmarks
    ../scripts/isolated.sh ../.venv/bin/python bench_image_levers.py                 # ~5 min
    ../scripts/isolated.sh ../.venv/bin/python bench_image_levers.py --compile       # + torch.compile

The store is the one bench_image_policies.py records (data/bench/so101_pick_cube_cameras.zarr,
two 96x96 cameras). Success per lever needs a full training run each; the recipe's success
figures are bench_image_policies.py's. Writes results/bench_image_levers.json.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _common import print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
RECIPE = dict(image=64, crop=56, widths=[16, 32, 64], pool="spatial_softmax", shared=False, n_obs=2,
              channels_last=False, compile=False)
CONFIGS = {
    "before: 96x96, crop 84, CNN [32,64,128]": dict(RECIPE, image=96, crop=84, widths=[32, 64, 128]),
    "64x64, crop 56, CNN [32,64,128]": dict(RECIPE, widths=[32, 64, 128]),
    "recipe: 64x64, crop 56, CNN [16,32,64]": dict(RECIPE),
    "recipe, deeper CNN [16,32,64,128]": dict(RECIPE, widths=[16, 32, 64, 128]),
    "recipe, 48x48, crop 42": dict(RECIPE, image=48, crop=42),
    "recipe, one shared CNN": dict(RECIPE, shared=True),
    "recipe, average pooling": dict(RECIPE, pool="avg"),
    "recipe, 1 observation step": dict(RECIPE, n_obs=1),
    "recipe, channels-last": dict(RECIPE, channels_last=True),
}


def build(store, c: dict, batch: int, seed: int = 0):
    import torch

    from robot_rl.data.sampler import SequenceSampler
    from robot_rl.policies.common.normalizer import Normalizer
    from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy
    state = {"joint_pos": 5, "gripper": 1, "ee_pos": 3, "ee_quat": 4}
    cams = ["image_front", "image_wrist"]
    smp = SequenceSampler(store, list(state) + cams, n_obs_steps=c["n_obs"], horizon=16,
                          image_size=None if c["image"] == 96 else c["image"])
    arrays = smp.arrays
    norm = Normalizer.fit({k: np.asarray(arrays[k]).reshape(len(arrays[k]), -1) for k in list(state) + ["action"]},
                          "minmax")
    torch.manual_seed(seed)
    cfg = DiffusionConfig(state_keys=list(state), state_dims=state, cameras=cams, action_dim=7,
                          n_obs_steps=c["n_obs"], horizon=16, n_action_steps=8, crop=c["crop"],
                          cnn_widths=c["widths"], cnn_pool=c["pool"], shared_cnn=c["shared"])
    pol = DiffusionPolicy(cfg, norm)
    if c["channels_last"]:
        pol = pol.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(seed)
    batches = [smp.get_batch(rng.integers(0, len(smp), batch)) for _ in range(4)]
    tens = [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()} for b in batches]
    return pol, tens, sum(p.numel() for p in pol.parameters())


def time_steps(pol, tens, steps: int, compile_: bool) -> tuple[float, float]:
    import torch
    opt = torch.optim.AdamW(pol.parameters(), 1e-3)
    loss_fn = pol.loss
    t_compile = 0.0
    if compile_:
        loss_fn = torch.compile(pol.loss)
        t0 = time.perf_counter()
        loss_fn(tens[0]).backward()
        opt.zero_grad()
        t_compile = time.perf_counter() - t0
    pol.train()
    for b in tens[:2]:  # warm-up
        loss_fn(b).backward()
        opt.step()
        opt.zero_grad()
    t0 = time.perf_counter()
    for i in range(steps):
        loss_fn(tens[i % len(tens)]).backward()
        opt.step()
        opt.zero_grad()
    return (time.perf_counter() - t0) / steps, t_compile


def data_path(store_path: Path, batch: int, n: int = 20) -> list[dict]:
    """Batch assembly: 96 -> 64 frames decoded + resized per batch vs once, held in RAM."""
    from robot_rl.data.sampler import SequenceSampler
    keys = ["joint_pos", "gripper", "ee_pos", "ee_quat", "image_front", "image_wrist"]
    rows = []
    for name, mb in (("decoded + resized per batch", 0), ("decoded once, held in RAM (uint8)", 4096)):
        t0 = time.perf_counter()
        smp = SequenceSampler(store_path, keys, n_obs_steps=2, horizon=16, image_size=64, preload_images_mb=mb)
        setup = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(n):
            smp.get_batch(rng.integers(0, len(smp), batch))
        per = (time.perf_counter() - t0) / n
        ram = sum(v.nbytes for k, v in smp.arrays.items() if k.startswith("image_") and isinstance(v, np.ndarray))
        rows.append({"data path": name, "setup_s": setup, "batch_ms": 1e3 * per, "image_ram_mb": ram / 2 ** 20})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=str(ROOT / "data" / "bench" / "so101_pick_cube_cameras.zarr"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the recipe's step")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from robot_rl.data.store import EpisodeStore
    configs = dict(CONFIGS)
    if args.compile:
        configs["recipe, torch.compile"] = dict(RECIPE, compile=True)
    rows = []
    with EpisodeStore.open(args.store) as st:
        for name, c in configs.items():
            pol, tens, n_par = build(st, c, args.batch)
            step_s, t_comp = time_steps(pol, tens, args.steps, c["compile"])
            rows.append({"config": name, "parameters_M": n_par / 1e6, "step_ms": 1e3 * step_s,
                         "samples_per_s": args.batch / step_s, "compile_s": t_comp or None, **c})
            print(f"{name}: {1e3 * step_s:.0f} ms/step, {args.batch / step_s:.0f} samples/s", flush=True)
    base = next(r for r in rows if r["config"].startswith("before"))["samples_per_s"]
    for r in rows:
        r["speedup_vs_before"] = r["samples_per_s"] / base
    print_table(rows, ["config", "parameters_M", "step_ms", "samples_per_s", "speedup_vs_before", "compile_s"],
                f"image diffusion training step, batch {args.batch}, {args.threads} threads, two cameras")
    drows = data_path(Path(args.store), args.batch)
    print_table(drows, ["data path", "setup_s", "batch_ms", "image_ram_mb"], "batch assembly (96 -> 64)")
    write_json("bench_image_levers", {"batch": args.batch, "threads": args.threads, "steps": args.steps,
                                      "cpu": os.cpu_count(), "configs": rows, "data": drows})


if __name__ == "__main__":
    main()
