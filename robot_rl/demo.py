"""The main job on the sim twin, end to end (``make demo``).

Stage 1 (now): a scripted expert -- standing in for a person with a teleop device --
drives the ``so101`` twin through ``pick_cube`` via end-effector delta actions; every
step (joint state, EE pose, gripper, privileged object state, front + wrist camera
images, action, reward) goes into a crash-safe episode store. The summary is printed
and one episode is rendered to mp4 + a PNG contact sheet.

Later stages (train, deploy through the inference node, improve online) append here.

    python -m robot_rl.demo [--robot so101] [--task pick_cube] [--episodes 50] [--out out/demo]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf


def stage(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="so101")
    ap.add_argument("--task", default="pick_cube")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--out", default="out/demo")
    args = ap.parse_args(argv)

    from robot_rl.cli.info import print_summary
    from robot_rl.cli.main import compose
    from robot_rl.cli.record import record_sim
    from robot_rl.cli.view import view

    t_start = time.perf_counter()
    out = Path(args.out)
    store_path = out / f"{args.robot}_{args.task}.zarr"
    if store_path.exists():
        shutil.rmtree(store_path)  # the demo starts from scratch each run
    out.mkdir(parents=True, exist_ok=True)

    stage(f"1/1 record {args.episodes} expert demonstrations: {args.robot} / {args.task}")
    t0 = time.perf_counter()
    cfg = compose("record", [f"robot={args.robot}", f"task={args.task}", f"episodes={args.episodes}",
                             f"out={store_path}"])
    summary = record_sim(cfg)
    dt = time.perf_counter() - t0
    print_summary(summary)
    print(f"recorded {summary['steps']} steps in {dt:.1f} s ({summary['steps'] / dt:.0f} steps/s "
          f"with two {cfg.image_size}x{cfg.image_size} cameras)")

    files = view(str(store_path), OmegaConf.create({"episode": 0, "format": "mp4", "out": str(out),
                                                     "fps": None, "sheet_frames": 12, "scale": 2}))
    for f in files:
        print(f"wrote {f}")

    stage("done")
    print(f"demo finished in {time.perf_counter() - t_start:.1f} s; outputs in {out}/")
    print(f"inspect: robot-rl info {store_path}    view: robot-rl view {store_path} episode=3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
