"""Episode store: sustained write throughput, caller-side add_step latency, compression,
commit latency, a naive synchronous zarr writer as baseline (same run), read / sampler
speed, the SIGKILL campaign (committed episodes survived / lost) and an image codec
comparison (lossless vs JPEG on 640x480 camera-like frames).

    .venv/bin/python benchmarks/bench_store.py [--quick] [--episodes 20] [--steps 200]
                                               [--kills 25] [--images auto|sim|synthetic]
                                               [--codec lossless|jpeg] [--only SECTIONS]
                                               [--out FILE]

``--codec jpeg`` runs the kill campaign on a compressed store: ``--kill-cameras`` (2)
JPEG q90 cameras of ``--kill-image`` (480x640) instead of one small lossless image.
``--only kill,codecs`` runs just those sections (write,read,kill,codecs).

Steps are two 96x96x3 uint8 cameras + state (joint_pos/vel 6, ee_pos 3, ee_quat 4,
gripper, object_state 7, action 7, reward). Images come from the MuJoCo twin's scripted
expert when ``robot_rl.sim`` imports (``--images auto``), else synthetic frames (smooth
scene + moving objects + sensor noise). Frames are produced before timing starts.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_table, write_json  # noqa: E402

import zarr  # noqa: E402

from robot_rl.data import EpisodeStore, SequenceSampler  # noqa: E402
from robot_rl.data.codecs import jpeg_encode_frame  # noqa: E402
from robot_rl.data.store import image_codec, state_codec  # noqa: E402

H = W = 96


# ------------------------------------------------------------------------------ data
def synthetic_frames(n: int, seed: int, noise: float = 2.0) -> np.ndarray:
    """A table scene with a moving cube and arm, lighting ripple and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack([60 + 80 * yy / H, 70 + 40 * xx / W, 90 + 30 * (yy + xx) / (H + W)], -1)
    base[yy > H * 0.55] = [150, 120, 90]
    out = np.empty((n, H, W, 3), np.uint8)
    ph = rng.uniform(0, 6.28)
    for t in range(n):
        img = base.copy()
        cx, cy = W / 2 + 25 * np.sin(t / 15 + ph), H * 0.65 + 8 * np.cos(t / 20 + ph)
        img[(np.abs(xx - cx) < 7) & (np.abs(yy - cy) < 7)] = [200, 40, 40]
        ax, ay = W / 2 + 20 * np.sin(t / 25 + ph), H * 0.5 + 10 * np.sin(t / 30)
        d = np.abs((xx - W / 2) * ay - yy * (ax - W / 2)) / np.hypot(ax - W / 2, ay)
        img[(d < 4) & (yy < ay)] = [180, 180, 190]
        img = img * (1 + 0.1 * np.sin(xx / 9 + t / 10))[..., None] + rng.normal(0, noise, img.shape)
        out[t] = np.clip(img, 0, 255)
    return out


def sim_frames(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Front and wrist frames from scripted pick_cube episodes of the twin (>= n frames)."""
    from robot_rl.sim import make_env
    from robot_rl.sim.experts import rollout_expert
    env = make_env("pick_cube", cameras=["front", "wrist"], image_size=96)
    front, wrist = [], []
    seed = 0
    while len(front) < n:
        rollout_expert(env, seed, on_step=lambda o, a, r, i: (front.append(o["image_front"]),
                                                              wrist.append(o["image_wrist"])))
        seed += 1
    env.close()
    return np.stack(front[:n]), np.stack(wrist[:n])


def make_pool(steps: int, images: str) -> tuple[dict[str, np.ndarray], str]:
    pool_n = max(steps, 200)
    src = "synthetic"
    if images in ("auto", "sim"):
        try:
            f, w = sim_frames(pool_n)
            src = "sim (MuJoCo twin, scripted pick_cube)"
        except Exception as e:  # noqa: BLE001
            if images == "sim":
                raise
            print(f"(robot_rl.sim not usable: {e!r}; using synthetic frames)")
    if src == "synthetic":
        f, w = synthetic_frames(pool_n, 1), synthetic_frames(pool_n, 2)
    rng = np.random.default_rng(0)
    t = np.arange(pool_n)[:, None]
    pool = {
        "image_front": f, "image_wrist": w,
        "joint_pos": np.sin(t / 20 + np.arange(6)).astype(np.float32),
        "joint_vel": np.cos(t / 20 + np.arange(6)).astype(np.float32),
        "ee_pos": (0.2 + 0.05 * np.sin(t / 30 + np.arange(3))).astype(np.float32),
        "ee_quat": np.tile(np.float32([1, 0, 0, 0]), (pool_n, 1)),
        "gripper": (np.sin(t[:, 0] / 40) > 0).astype(np.float32),
        "object_state": (0.1 * np.sin(t / 50 + np.arange(7))).astype(np.float32),
        "action": rng.normal(0, 0.3, (pool_n, 7)).astype(np.float32),
        "reward": rng.random(pool_n).astype(np.float32),
    }
    return pool, src


def step_at(pool: dict[str, np.ndarray], ep: int, t: int) -> dict[str, np.ndarray]:
    i = (t + 37 * ep) % len(pool["action"])
    return {k: v[i] for k, v in pool.items()}


# ------------------------------------------------------------------------------ runs
def run_store(root: Path, pool, episodes: int, steps: int, fsync_data: bool = False,
              hz: float | None = None) -> dict:
    """Record as fast as possible (hz=None) or paced like a control loop at ``hz``."""
    path = root / f"store_fsync{int(fsync_data)}_{hz or 0:g}hz"
    lat = np.empty(episodes * steps)
    commits = []
    t0 = time.perf_counter()
    with EpisodeStore.create(path, "so101", fsync_data=fsync_data) as st:
        k = 0
        for e in range(episodes):
            ep = st.start_episode("pick_cube", source="expert", fps=20.0)
            t_next = time.perf_counter()
            for t in range(steps):
                if hz:  # sleep like a control loop (a busy-wait would hog the GIL)
                    t_next += 1.0 / hz
                    time.sleep(max(0.0, t_next - time.perf_counter()))
                s = step_at(pool, e, t)
                a = time.perf_counter()
                ep.add_step(s, timestamp=e * 100 + t * 0.05)
                lat[k] = time.perf_counter() - a
                k += 1
            a = time.perf_counter()
            ep.commit(success=True)
            commits.append(time.perf_counter() - a)
        stall = st.writer_stall_s
    elapsed = time.perf_counter() - t0  # includes the final flush + close
    with EpisodeStore.open(path) as st:
        summ = st.summary()
        # exactness spot check
        got = st.episode(episodes - 1, keys=["image_front", "action"])
        ref = [step_at(pool, episodes - 1, t) for t in range(steps)]
        assert np.array_equal(got["image_front"], np.stack([r["image_front"] for r in ref]))
        assert np.array_equal(got["action"], np.stack([r["action"] for r in ref]))
    n = episodes * steps
    return {
        "writer": "EpisodeStore" + (" fsync_data" if fsync_data else "") + (f" paced {hz:g} Hz" if hz else ""),
        "steps": n, "elapsed_s": elapsed, "steps_per_s": n / elapsed,
        "add_p50_ms": float(np.percentile(lat, 50) * 1e3), "add_p99_ms": float(np.percentile(lat, 99) * 1e3),
        "add_max_ms": float(lat.max() * 1e3),
        "commit_p50_ms": float(np.percentile(commits, 50) * 1e3), "commit_max_ms": float(max(commits) * 1e3),
        "backpressure_s": stall,
        "bytes_per_step": summ["bytes_total"] / n,
        "ratio_front": summ["image_compression_ratio"].get("image_front"),
        "ratio_wrist": summ["image_compression_ratio"].get("image_wrist"),
        "ratio_all_data": sum(v["raw_bytes"] for v in summ["keys"].values()) / summ["bytes_data"],
        "_path": str(path),
    }


def run_naive(root: Path, pool, episodes: int, steps: int) -> dict:
    """Append every step straight to zarr arrays, synchronously: resize + write per key."""
    path = root / "naive"
    g = zarr.open_group(path, mode="w")
    data, meta = g.create_group("data"), g.create_group("meta")
    first = step_at(pool, 0, 0)
    first["timestamp"] = np.float64(0)
    arrs = {}
    for k, v in first.items():
        v = np.asarray(v)
        img = v.dtype == np.uint8 and v.ndim == 3
        chunk = 37 if img else 1024
        arrs[k] = data.create_array(k, shape=(0,) + v.shape, dtype=v.dtype, chunks=(chunk,) + v.shape,
                                    compressors=[image_codec() if img else state_codec()])
    ends = meta.create_array("episode_ends", shape=(0,), dtype="int64", chunks=(1024,))
    lat = np.empty(episodes * steps)
    n = 0
    t0 = time.perf_counter()
    for e in range(episodes):
        for t in range(steps):
            s = step_at(pool, e, t)
            s["timestamp"] = np.float64(e * 100 + t * 0.05)
            a = time.perf_counter()
            for k, v in s.items():
                arrs[k].resize((n + 1,) + arrs[k].shape[1:])
                arrs[k][n] = v
            lat[n] = time.perf_counter() - a
            n += 1
        ends.resize((e + 1,))
        ends[e] = n
    elapsed = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"writer": "naive zarr (sync, per step)", "steps": n, "elapsed_s": elapsed,
            "steps_per_s": n / elapsed, "add_p50_ms": float(np.percentile(lat, 50) * 1e3),
            "add_p99_ms": float(np.percentile(lat, 99) * 1e3), "add_max_ms": float(lat.max() * 1e3),
            "bytes_per_step": size / n}


def run_read(path: str) -> dict:
    with EpisodeStore.open(path) as st:
        t0 = time.perf_counter()
        n = sum(len(st.episode(i)["timestamp"]) for i in range(len(st)))
        read_sps = n / (time.perf_counter() - t0)
        out = {"read_all_keys_steps_per_s": read_sps}
        for in_memory in (True, False):
            t0 = time.perf_counter()
            smp = SequenceSampler(st, ["image_front", "image_wrist", "joint_pos"], "action",
                                  n_obs_steps=2, horizon=16, in_memory=in_memory)
            load = time.perf_counter() - t0
            idx = np.random.default_rng(0).integers(0, len(smp), 2000 if in_memory else 200)
            t0 = time.perf_counter()
            for i in idx:
                smp[int(i)]
            out[f"sampler_{'memory' if in_memory else 'lazy'}_items_per_s"] = len(idx) / (time.perf_counter() - t0)
            out[f"sampler_{'memory' if in_memory else 'lazy'}_load_s"] = load
    return out


def camera_frames(n: int) -> np.ndarray:
    """Synthetic 640x480 camera frames with sigma=3 noise (no MuJoCo)."""
    from robot_rl.drivers.virtual.camera import camera_like_frames
    return camera_like_frames(n)


def twin_camera_frames(n: int, h: int = 480, w: int = 640, sigma: float = 3.0, seed: int = 0) -> np.ndarray:
    """The twin's front camera at 640x480 while the pick_cube expert works (one frame per
    30 fps slot), plus Gaussian sensor noise ``sigma``: camera-like frames of the real scene."""
    from robot_rl.drivers.virtual.camera import TwinCameraSource
    rng = np.random.default_rng(seed)
    src = TwinCameraSource("pick_cube", "front", w, h, fps=30.0, seed=seed)
    try:
        out = np.empty((n, h, w, 3), np.uint8)
        for t in range(n):
            img = src.frame(t * 3).astype(np.float32)  # every 3rd slot: 10 frames per second of motion
            out[t] = np.clip(np.round(img + rng.normal(0, sigma, img.shape)), 0, 255)
        return out
    finally:
        src.close()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")


def run_codecs(root: Path, n_frames: int, reads: int, fps: float = 30.0, cameras: int = 2,
               images: str = "twin") -> list[dict]:
    """Lossless vs jpeg:90 on 640x480 frames: ratio, PSNR, codec encode / decode ms per
    frame (one thread, no I/O), store write time per frame, read_frames -> 96x96 frames/s
    (one thread, random rows) and full-size read_frames frames/s."""
    import imagecodecs
    import numcodecs

    frames = twin_camera_frames(n_frames) if images == "twin" else camera_frames(n_frames)
    blosc = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.BITSHUFFLE)
    rows_out = []
    rng = np.random.default_rng(0)
    for codec in ("lossless", "jpeg:90"):
        # pure codec cost, one thread
        if codec == "lossless":
            chunk = frames[:10]
            t0 = time.perf_counter()
            enc = [blosc.encode(chunk) for _ in range(3)]
            enc_ms = (time.perf_counter() - t0) / (3 * len(chunk)) * 1e3
            t0 = time.perf_counter()
            for _ in range(3):
                blosc.decode(enc[0])
            dec_ms = (time.perf_counter() - t0) / (3 * len(chunk)) * 1e3
        else:
            sub = frames[:20]
            t0 = time.perf_counter()
            enc = [jpeg_encode_frame(f, 90) for f in sub]
            enc_ms = (time.perf_counter() - t0) / len(sub) * 1e3
            t0 = time.perf_counter()
            for e in enc:
                imagecodecs.jpeg8_decode(e)
            dec_ms = (time.perf_counter() - t0) / len(sub) * 1e3
        # through the store
        path = root / f"codec_{codec.replace(':', '')}"
        t0 = time.perf_counter()
        with EpisodeStore.create(path, "so101", image_codecs={"cam": codec}) as st:
            ep = st.start_episode("pick_cube", fps=fps)
            for t in range(n_frames):
                ep.add_step({"cam": frames[t]}, timestamp=t / fps)
            ep.commit(success=True)
        write_ms = (time.perf_counter() - t0) / n_frames * 1e3
        with EpisodeStore.open(path) as st:
            k = st.summary()["keys"]["cam"]
            back = st.data["cam"][:]
            idx = rng.integers(0, n_frames, reads)
            st.read_frames("cam", idx[:8], size=(96, 96))  # warm-up
            t0 = time.perf_counter()
            for i in range(0, reads, 8):
                st.read_frames("cam", idx[i:i + 8], size=(96, 96))
            small_fps = reads / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(0, reads, 8):
                st.read_frames("cam", idx[i:i + 8])
            full_fps = reads / (time.perf_counter() - t0)
        bpf = k["bytes"] / n_frames
        rows_out.append({
            "codec": codec, "frames": n_frames, "ratio": k["compression_ratio"],
            "raw_fraction": 1 / k["compression_ratio"], "psnr_db": _psnr(back, frames),
            "encode_ms_per_frame": enc_ms, "decode_ms_per_frame": dec_ms,
            "store_write_ms_per_frame": write_ms,
            "read_frames_96px_fps": small_fps, "read_frames_full_fps": full_fps,
            "kB_per_frame": bpf / 1e3,
            f"GB_per_hour_{cameras}cams_{fps:g}fps": bpf * cameras * fps * 3600 / 1e9,
        })
    return rows_out


def run_kills(root: Path, kills: int, codec: str = "lossless", image_shape: tuple[int, int, int] = (480, 640, 3),
              cameras: int = 2) -> dict:
    spec = importlib.util.spec_from_file_location(
        "_store_writer_proc", Path(__file__).resolve().parents[1] / "tests" / "_store_writer_proc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    log = logging.getLogger("robot_rl.data.store")
    level = log.level
    log.setLevel(logging.ERROR)  # the torn-tail warnings after each kill are expected
    try:
        return mod.kill_campaign(root / "killed", n_kills=kills, seed=7, rng_seed=7, codec=codec,
                                 image_shape=image_shape, cameras=cameras,
                                 max_delay=0.4 if codec == "lossless" else 1.5)
    finally:
        log.setLevel(level)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--baseline-episodes", type=int, default=2,
                    help="episodes for the (slow) naive writer baseline")
    ap.add_argument("--fsync-episodes", type=int, default=5, help="episodes for the fsync_data=True run")
    ap.add_argument("--paced-hz", type=float, default=500.0,
                    help="control-loop rate of the paced run (commit latency when the writer keeps up)")
    ap.add_argument("--paced-episodes", type=int, default=5)
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--images", choices=["auto", "sim", "synthetic"], default="auto")
    ap.add_argument("--codec", choices=["lossless", "jpeg"], default="lossless",
                    help="kill campaign store: one small lossless image (default) or JPEG q90 cameras")
    ap.add_argument("--kill-image", default="480x640", help="HxW of the JPEG cameras of --codec jpeg")
    ap.add_argument("--kill-cameras", type=int, default=2, help="number of JPEG cameras of --codec jpeg")
    ap.add_argument("--codec-frames", type=int, default=60, help="640x480 frames of the codec comparison")
    ap.add_argument("--codec-images", choices=("twin", "synthetic"), default="twin",
                    help="codec comparison frames: the twin's front camera + sigma=3 noise, or a synthetic scene")
    ap.add_argument("--codec-reads", type=int, default=400, help="random read_frames rows per codec")
    ap.add_argument("--only", default="write,read,kill,codecs",
                    help="comma-separated sections to run: write,read,kill,codecs")
    ap.add_argument("--quick", action="store_true", help="small run: 5x100 steps, 5 kills")
    ap.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/store.json)")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.steps, args.kills = 5, 100, 5
        args.baseline_episodes, args.fsync_episodes, args.paced_episodes = 1, 2, 2
        args.codec_frames, args.codec_reads = 20, 160
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    bad = only - {"write", "read", "kill", "codecs"}
    if bad:
        ap.error(f"--only: unknown sections {sorted(bad)}")
    if "read" in only:
        only.add("write")  # reads the store the write section recorded
    try:
        kh, kw = (int(x) for x in args.kill_image.lower().split("x"))
    except ValueError:
        ap.error(f"--kill-image must be HxW, e.g. 480x640, got {args.kill_image!r}")

    root = Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.dir))
    try:
        rows: list[dict] = []
        reads = naive = ours = None
        img_src = None
        if "write" in only:
            pool, img_src = make_pool(args.steps, args.images)
            print(f"images: {img_src}; {args.episodes} episodes x {args.steps} steps")
            ours = run_store(root, pool, args.episodes, args.steps)
            durable = run_store(root, pool, args.fsync_episodes, args.steps, fsync_data=True)
            paced = run_store(root, pool, args.paced_episodes, args.steps, hz=args.paced_hz)
            naive = run_naive(root, pool, args.baseline_episodes, args.steps)
            rows = [ours, durable, paced, naive]
            print_table(rows, ["writer", "steps", "steps_per_s", "add_p50_ms", "add_p99_ms", "add_max_ms",
                               "commit_p50_ms", "commit_max_ms", "bytes_per_step", "ratio_front", "ratio_wrist"],
                        title="write (two 96x96x3 cameras + state; steps_per_s includes commits and the final flush)")
            print(f"speed-up vs naive synchronous zarr writer: {ours['steps_per_s'] / naive['steps_per_s']:.1f}x; "
                  f"add_step p99 {naive['add_p99_ms'] / ours['add_p99_ms']:.0f}x lower")
        if "read" in only and ours is not None:
            reads = run_read(ours["_path"])
            print_table([reads], list(reads), title="read")
        codecs = None
        if "codecs" in only:
            codecs = run_codecs(root, args.codec_frames, args.codec_reads, images=args.codec_images)
            print_table(codecs, list(codecs[0]),
                        title=f"image codecs (640x480x3 camera frames ({args.codec_images}), Gaussian noise sigma=3; "
                              "encode/decode: codec only, one thread; read_frames: one thread, random rows)")
        kill_image = (kh, kw, 3)
        kills = run_kills(root, args.kills, args.codec, kill_image, args.kill_cameras) \
            if args.kills and "kill" in only else None
        if kills:
            what = "one 12x16 lossless image" if args.codec == "lossless" else \
                f"{args.kill_cameras} JPEG q90 cameras {kw}x{kh}"
            print_table([kills], ["kills", "codec", "episodes_reported_committed", "episodes_in_store",
                                  "episodes_lost", "readable_after_every_kill", "appendable_after", "elapsed_s"],
                        title=f"SIGKILL campaign (one store, killed again and again; {what})")
            print(f"{kills['episodes_lost']} committed episodes lost "
                  f"({kills['episodes_reported_committed']} reported committed)")
            print("kills landed in:", kills["kills_landed_in"])
            for p in kills["problems"]:
                print("PROBLEM:", p)
        for r in rows:
            r.pop("_path", None)
        write_json("store" if only == {"write", "read", "kill", "codecs"} else "store_" + "_".join(sorted(only)), {
            "config": {"episodes": args.episodes, "steps": args.steps, "images": img_src,
                       "paced_hz": args.paced_hz, "paced_episodes": args.paced_episodes,
                       "baseline_episodes": args.baseline_episodes, "fsync_episodes": args.fsync_episodes,
                       "image_codec": str(image_codec()), "state_codec": str(state_codec()),
                       "sections": sorted(only), "kill_codec": args.codec,
                       "kill_image": list(kill_image) if args.codec == "jpeg" else [12, 16, 3],
                       "kill_cameras": args.kill_cameras if args.codec == "jpeg" else 1,
                       "codec_frames": args.codec_frames, "codec_images": f"{args.codec_images} 640x480, sigma=3 noise",
                       "cpus": os.cpu_count()},
            "write": rows, "speedup_vs_naive": (ours["steps_per_s"] / naive["steps_per_s"]) if naive else None,
            "read": reads, "codecs": codecs, "kill": kills,
        }, args.out)
        if kills and (kills["episodes_lost"] or not kills["readable_after_every_kill"] or kills["problems"]):
            sys.exit(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
