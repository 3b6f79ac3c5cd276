"""LeRobotDataset v3.0 export / import (robot_rl/data/lerobot*.py): a recorded two-camera
store -> LeRobot (video and image mode) -> store again. Reports round-trip exactness per
numeric key (max abs difference: must be 0), image PSNR per camera (whole-set and worst
frame), export episodes/s and MB/s, import episodes/s.

    .venv/bin/python benchmarks/bench_lerobot.py [--episodes 50] [--size 480x640]
                                                 [--modes video,image] [--quick]
                                                 [--store PATH] [--out results/lerobot.json]

The store is recorded once from the twin's scripted pick_cube expert (so101, cameras
front + wrist at --size, 20 Hz, the store's default image codec: JPEG q90 at this size)
and cached under out/bench/. MB/s counts the uncompressed frames + state the export reads
(and the import writes); the dataset's size on disk is reported next to it.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_table, write_json  # noqa: E402

from robot_rl.data.lerobot import export_lerobot, import_lerobot  # noqa: E402
from robot_rl.data.store import EpisodeStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMS = ["front", "wrist"]


def record(path: Path, episodes: int, h: int, w: int) -> None:
    """Scripted pick_cube episodes (successes only), as ``robot-rl record sim`` stores them."""
    from tqdm import tqdm
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.experts import rollout_expert
    env = RobotEnv(task="pick_cube", robot="so101", cameras=CAMS, image_size=(w, h), terminate_on_success=False)
    tmp = path.with_name(path.name + ".recording")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with EpisodeStore.create(tmp, env.robot_spec) as st:
            seed = 0
            for _ in tqdm(range(episodes), desc=f"record {episodes} episodes {h}x{w}", unit="ep"):
                while True:
                    ep = st.start_episode(task="pick_cube", source="expert", fps=20.0,
                                          extra={"seed": seed, "env": "sim", "action_mode": "ee_delta"})
                    t = [0.0]

                    def on_step(o, a, r, i, ep=ep, t=t):
                        ep.add_step({**o, "action": a, "reward": float(r)}, timestamp=t[0])
                        t[0] += 0.05
                    res = rollout_expert(env, seed, on_step=on_step, extra_steps=2)
                    seed += 1
                    if res["success"]:
                        ep.commit(success=True)
                        break
                    ep.discard()
        os.rename(tmp, path)
    finally:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)


def raw_mb(st: EpisodeStore) -> float:
    return sum(ks.row_bytes for ks in st.schema.values()) * st.n_steps / 1e6


def compare(a: EpisodeStore, b: EpisodeStore, block: int = 64) -> tuple[dict[str, float], dict[str, dict]]:
    """Max abs difference per numeric key; PSNR (dB, whole set and worst frame) per image key."""
    diffs, psnr = {}, {}
    for k, ks in a.schema.items():
        if ks.image:
            se, worst = 0.0, math.inf
            for lo in range(0, a.n_steps, block):
                rows = np.arange(lo, min(a.n_steps, lo + block))
                x = a.read_frames(k, rows).astype(np.float64)
                y = b.read_frames(k, rows).astype(np.float64)
                mse = ((x - y) ** 2).reshape(len(rows), -1).mean(1)
                se += mse.sum()
                worst = min(worst, float(np.min([math.inf if m == 0 else 10 * math.log10(255 ** 2 / m) for m in mse])))
            m = se / a.n_steps
            psnr[k] = {"psnr_db": math.inf if m == 0 else 10 * math.log10(255 ** 2 / m), "psnr_min_db": worst}
        else:
            x, y = np.asarray(a.data[k][:a.n_steps]), np.asarray(b.data[k][:b.n_steps])
            same = x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x.view(np.uint8), y.view(np.uint8))
            diffs[k] = 0.0 if same else float(np.nanmax(np.abs(x.astype(np.float64) - y)))
    return diffs, psnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--size", default="480x640", help="camera HxW")
    ap.add_argument("--modes", default="video,image", help="video (MP4) and/or image (PNG in parquet)")
    ap.add_argument("--vcodec", default="auto", choices=["auto", "av1", "h264"])
    ap.add_argument("--quick", action="store_true", help="5 episodes at 96x128")
    ap.add_argument("--store", default=None, help="the recorded store (default: cached under out/bench/)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/lerobot.json"))
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.size = 5, "96x128"
    h, w = (int(x) for x in args.size.split("x"))
    bench = ROOT / "out/bench"
    store = Path(args.store) if args.store else bench / f"lerobot_so101_pick_cube_{args.episodes}ep_{h}x{w}.zarr"
    if not (store / "zarr.json").is_file():
        record(store, args.episodes, h, w)
    src = EpisodeStore.open(store)
    raw = raw_mb(src)
    print(f"store {store}: {src.n_episodes} episodes, {src.n_steps} steps, cameras {CAMS} {h}x{w} "
          f"({src.codecs}), {raw:.0f} MB uncompressed")
    work = bench / "lerobot_work"
    shutil.rmtree(work, ignore_errors=True)
    rows, exact, images = [], {}, []
    try:
        for mode in [m for m in args.modes.split(",") if m]:
            video = mode == "video"
            out, back = work / f"lerobot_{mode}", work / f"back_{mode}.zarr"
            t = time.perf_counter()
            s = export_lerobot(store, out, repo_id=f"bench/pick_cube_{mode}", video=video, vcodec=args.vcodec)
            te = time.perf_counter() - t
            t = time.perf_counter()
            r = import_lerobot(out, back, robot="so101")
            ti = time.perf_counter() - t
            diffs, psnr = compare(src, EpisodeStore.open(back))
            rows.append({"mode": mode, "codec": s["vcodec"] if video else "png", "episodes": s["episodes"],
                         "frames": s["frames"], "dataset_MB": round(s["mb"], 1), "export_s": round(te, 1),
                         "export_ep_s": s["episodes"] / te, "export_MB_s": raw / te, "import_s": round(ti, 1),
                         "import_ep_s": r["episodes"] / ti, "import_MB_s": raw / ti,
                         "numeric_exact": all(v == 0 for v in diffs.values())})
            exact[mode] = diffs
            for k, p in psnr.items():
                images.append({"mode": mode, "camera": k, **{n: round(v, 2) for n, v in p.items()}})
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(back, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, list(rows[0]), title="store -> LeRobot v3.0 -> store")
    keys = sorted(next(iter(exact.values())))
    print_table([{"key": k, **{f"max_abs_diff_{m}": exact[m][k] for m in exact}} for k in keys],
                ["key"] + [f"max_abs_diff_{m}" for m in exact], title="round trip, numeric keys (must be 0)")
    print_table(images, ["mode", "camera", "psnr_db", "psnr_min_db"], title="round trip, images (vs the store)")
    write_json("lerobot", {"store": str(store), "episodes": src.n_episodes, "steps": src.n_steps,
                           "camera_hw": [h, w], "store_codecs": src.codecs, "raw_MB": raw, "runs": rows,
                           "numeric_max_abs_diff": exact, "images": images}, out=args.out)
    if not all(r["numeric_exact"] for r in rows):
        raise SystemExit("numeric keys did not round-trip exactly")


if __name__ == "__main__":
    main()
