"""Does data loading ever dominate a training step?

For a state-based and an image-based (front + wrist 96x96) diffusion policy on pick_cube
demonstrations, measures in one run:

- batch assembly: ``SequenceSampler.get_batch`` (one vectorised gather per key) against
  the naive baseline of stacking ``sampler[i]`` item by item;
- real training steps (loss, backward, AdamW) fed by the trainer's ``Prefetcher``
  thread: step time and the share of it spent waiting for the next batch.

and, for camera-sized sources, a store with two 640x480 JPEG (q90) cameras (twin renders +
sigma=3 Gaussian noise, so JPEG sees sensor-like texture) training a 96x96 image diffusion
policy: the sampler keeps the frames on disk and the Prefetcher's loader threads decode +
resize each batch (``EpisodeStore.read_frames``, libjpeg DCT-scaled decode + INTER_AREA):

- training steps as above (target: waiting for data < 5% of the step);
- "training-time decode + resize of 640x480 JPEG to 96x96 on one core" (``read_frames``
  on one thread, cv2 and torch at one thread; target >= 400 frames/s) against the
  baseline of a full-size decode followed by ``cv2.resize`` (no DCT scaling), same run;
  frames per wall second and per CPU second of the process (on a shared machine the
  thread may not get a whole core: ``cpu_per_wall``).

``wait_share_pct`` is the share of the step the loop waited for a batch; ``loader_cpu_pct``
the one-thread batch assembly time per step over the step time (CPU the loader threads take
from training on a CPU-only machine).

    cd benchmarks && ../scripts/isolated.sh ../.venv/bin/python bench_data_loading.py
    ../scripts/isolated.sh ../.venv/bin/python bench_data_loading.py --cases jpeg   # only the 640x480 case
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


def jpeg_store(path: Path, episodes: int, width: int, height: int, noise: float) -> Path:
    """Expert pick_cube episodes with front + wrist cameras rendered at width x height,
    plus Gaussian noise (sigma=``noise``), stored as JPEG q90."""
    if path.exists():
        return path
    from robot_rl.data import EpisodeStore
    from robot_rl.sim import make_env
    from robot_rl.sim.experts import rollout_expert
    env = make_env("pick_cube", cameras=["front", "wrist"], image_size=(width, height), terminate_on_success=False)
    rng = np.random.default_rng(0)
    tmp = path.with_name(path.name + ".writing")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    t0 = time.perf_counter()
    with EpisodeStore.create(tmp, env.robot_spec, image_codecs={"image_front": "jpeg:90",
                                                                 "image_wrist": "jpeg:90"}) as st:
        seed, done = 0, 0
        while done < episodes:
            ep = st.start_episode("pick_cube", source="expert", fps=env.robot_spec.control_hz,
                                  extra={"seed": seed, "action_mode": "ee_delta"})
            t = [0.0]

            def on_step(obs, action, reward, info, ep=ep, t=t):
                step = dict(obs)
                for k in ("image_front", "image_wrist"):
                    noisy = obs[k].astype(np.float32) + rng.normal(0, noise, obs[k].shape).astype(np.float32)
                    step[k] = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
                ep.add_step({**step, "action": action, "reward": float(reward)}, timestamp=t[0])
                t[0] += 1 / env.robot_spec.control_hz

            res = rollout_expert(env, seed, on_step=on_step, extra_steps=2)
            seed += 1
            if res["success"]:
                ep.commit(success=True)
                done += 1
            else:
                ep.discard()
        n = st.n_steps
    env.close()
    tmp.rename(path)
    print(f"recorded {episodes} episodes ({n} steps, 2 x {width}x{height} JPEG) in {time.perf_counter() - t0:.0f} s")
    return path


def decode_rates(store: Path, size: tuple[int, int], frames: int) -> list[dict]:
    """Frames/s of decode + resize to ``size`` (h, w) on one thread: ``read_frames`` (DCT-scaled
    decode) vs full-size decode + cv2.resize, over the same random rows."""
    import cv2
    from robot_rl.data import EpisodeStore
    prev_cv, prev_torch = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rows = []
    try:
        with EpisodeStore.open(store) as st:
            key = "image_front"
            src = st.schema[key].shape
            codec = st.codec(key)
            idx = np.random.default_rng(1).integers(0, st.n_steps, frames)
            batches = np.array_split(idx, max(1, frames // 64))
            st.read_frames(key, batches[0][:4], size)  # warm-up (imports, file cache)

            def full_then_resize(b):
                full = st.read_frames(key, b)  # full-size decode, no DCT scaling
                return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in full])

            for name, fn in (("read_frames (DCT-scaled decode + INTER_AREA)", lambda b: st.read_frames(key, b, size)),
                             ("baseline: full decode + cv2.resize", full_then_resize)):
                t0, cpu0 = time.perf_counter(), time.process_time()
                for b in batches:
                    out = fn(b)
                    assert out.shape == (len(b), size[0], size[1], 3)
                dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                rows.append({"path": name, "source": f"{src[1]}x{src[0]} {codec}", "target": f"{size[1]}x{size[0]}",
                             "frames": int(frames), "frames_per_s": frames / dt, "ms_per_frame": dt / frames * 1e3,
                             "cpu_per_wall": cpu / dt, "frames_per_cpu_s": frames / max(cpu, 1e-9)})
    finally:
        cv2.setNumThreads(prev_cv)
        torch.set_num_threads(prev_torch)
    rows[0]["speedup"] = rows[0]["frames_per_s"] / rows[1]["frames_per_s"]
    return rows


def measure(name: str, store: Path, pcfg: dict, batch: int, steps: int, image_size: tuple[int, int] | None = None,
            loader_threads: int | None = None) -> dict:
    from robot_rl.data import EpisodeStore, SequenceSampler
    from robot_rl.learn.train import Prefetcher, build_policy, policy_keys
    state_keys, cams = policy_keys(pcfg)
    st = EpisodeStore.open(store)
    sampler = SequenceSampler(st, obs_keys=state_keys + cams, n_obs_steps=pcfg["n_obs_steps"],
                              horizon=pcfg["horizon"], image_size=image_size)
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
    pre = Prefetcher(sampler, batch, seed=0, device=torch.device("cpu"), loader_threads=loader_threads)
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
        st.close()
    return {"policy": name, "batch": batch, "windows": len(sampler), "loader_threads": pre.loader_threads,
            "lazy_images": ",".join(sampler.lazy_images) or "-", "get_batch_ms": vec_ms,
            "naive_stack_ms": naive_ms, "speedup": naive_ms / vec_ms, "step_ms": total / steps * 1e3,
            "wait_ms": pre.wait_s / steps * 1e3, "wait_share_pct": 100 * pre.wait_s / total,
            # batch assembly on one thread (the loader threads' CPU work per step) vs the step
            "loader_cpu_pct": 100 * vec_ms / (total / steps * 1e3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-store", default=str(ROOT / "data" / "bench" / "so101_pick_cube.zarr"))
    ap.add_argument("--image-store", default=str(ROOT / "data" / "bench" / "so101_pick_cube_img.zarr"))
    ap.add_argument("--image-episodes", type=int, default=30)
    ap.add_argument("--cases", default="state,image,jpeg",
                    help="comma list of: state (state policy), image (2x96x96 lossless store), jpeg (2x640x480 JPEG "
                         "store -> 96x96 policy, plus the one-core decode rates)")
    ap.add_argument("--jpeg-store", default=str(ROOT / "data" / "bench" / "so101_pick_cube_640x480_jpeg.zarr"))
    ap.add_argument("--jpeg-episodes", type=int, default=10, help="episodes recorded for the 640x480 store")
    ap.add_argument("--jpeg-size", default="640x480", help="WxH of the recorded cameras")
    ap.add_argument("--noise", type=float, default=3.0, help="sigma of the Gaussian noise added to the renders")
    ap.add_argument("--policy-size", type=int, default=96, help="square image size the policy trains at")
    ap.add_argument("--jpeg-steps", type=int, default=8, help="timed training steps of the 640x480 case")
    ap.add_argument("--jpeg-batch", type=int, default=64)
    ap.add_argument("--decode-frames", type=int, default=640, help="frames decoded per path in the one-core rate")
    ap.add_argument("--loader-threads", type=int, default=None, help="Prefetcher loader threads (default: trainer's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if cases - {"state", "image", "jpeg"}:
        ap.error(f"unknown cases {sorted(cases - {'state', 'image', 'jpeg'})}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    import yaml
    base = yaml.safe_load((ROOT / "robot_rl" / "conf" / "policy" / "diffusion.yaml").read_text())
    img_cfg = {**base, "cameras": ["front", "wrist"], "crop": 84, "state_keys": ["joint_pos", "gripper"]}
    rows, decode, payload = [], [], {}
    if "state" in cases:
        rows.append(measure("diffusion, state", Path(args.state_store), base, 256, 60))
    if "image" in cases:
        rows.append(measure("diffusion, 2x96x96 images", image_store(Path(args.image_store), args.image_episodes),
                            img_cfg, 64, 8))
    if "jpeg" in cases:
        w, h = (int(x) for x in args.jpeg_size.lower().split("x"))
        p = args.policy_size
        store = jpeg_store(Path(args.jpeg_store), args.jpeg_episodes, w, h, args.noise)
        crop = int(round(p * 84 / 96))
        rows.append(measure(f"diffusion, 2x{w}x{h} JPEG -> {p}x{p}", store, {**img_cfg, "crop": crop},
                            args.jpeg_batch, args.jpeg_steps, image_size=(p, p), loader_threads=args.loader_threads))
        decode = decode_rates(store, (p, p), args.decode_frames)
        payload = {"jpeg_store": str(store), "jpeg_episodes": args.jpeg_episodes, "noise_sigma": args.noise,
                   "decode_target_fps": 400, "wait_share_target_pct": 5.0}
    print_table(rows, ["policy", "batch", "windows", "lazy_images", "loader_threads", "get_batch_ms",
                       "naive_stack_ms", "speedup", "step_ms", "wait_ms", "wait_share_pct", "loader_cpu_pct"],
                "data loading vs training step (CPU, Prefetcher loader threads)")
    if decode:
        print_table(decode, ["path", "source", "target", "frames", "frames_per_s", "ms_per_frame", "cpu_per_wall",
                             "frames_per_cpu_s", "speedup"], "training-time decode + resize on one core (cv2 and torch at 1 thread)")
    write_json("bench_data_loading", {"rows": rows, "decode": decode, "torch_threads": torch.get_num_threads(),
                                      "cpu_count": os.cpu_count(), **payload}, args.out)


if __name__ == "__main__":
    main()
