"""ONNX export + the onnxruntime backend vs torch, on recorded observations.

Exports a checkpoint (``robot_rl.policies.export.export_onnx``), loads both backends, then:

* parity on ``--n`` recorded observation histories (windows of an episode store with the
  policy's keys, frames resized to the policy's image size when the store's differ): max abs
  difference torch vs onnxruntime of the encoder output, the denoiser output (on torch's
  conditioning, random x_t and steps) and the full chunk (the policy's own cold sampling from
  the same noise; normalised, and in robot units), for diffusion; of the normalised chunk and
  the chunk in robot units for ACT / MLP-BC;
* latency at batch 1 with 1 intra-op thread (torch and onnxruntime alike), p50 / p99 over
  ``--queries`` consecutive observations, through the samplers of robot_rl.runtime.samplers:
  cold DDIM with ``--cold-steps`` steps and the RTI warm start with 1 network evaluation
  (diffusion), one forward pass (ACT / MLP-BC); and the encoder's share of each (its own
  p50 over the same observations / the query's p50).

    cd benchmarks
    ../scripts/isolated.sh ../.venv/bin/python bench_onnx.py          # bench_image_policies.py's diffusion / pick_cube
    ../scripts/isolated.sh ../.venv/bin/python bench_onnx.py --checkpoint ../runs/x/checkpoints/last \\
        --store ../data/x.zarr --n 1000 --queries 200

Writes results/bench_onnx.json (or --json); the export goes to --export-dir (default: a
temporary folder).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import print_table, write_json

ROOT = Path(__file__).resolve().parent.parent


def recorded_observations(store: str, policy, ck: dict, n: int, seed: int) -> dict[str, np.ndarray]:
    """{key: (n, n_obs_steps, ...)}: n windows (random, in store order) of the store, frames at
    the policy's image size (the sampler resizes them with area interpolation, as in training)."""
    from robot_rl.data.sampler import SequenceSampler
    from robot_rl.data.store import EpisodeStore
    from robot_rl.policies.export import image_hw
    c = policy.config
    keys = list(c.state_keys) + list(c.cameras)
    with EpisodeStore.open(store) as st:
        sampler = SequenceSampler(st, obs_keys=keys, action_key=c.action_key, n_obs_steps=c.n_obs_steps,
                                  horizon=c.horizon, in_memory=not c.cameras,
                                  image_size={k: image_hw(ck, k) for k in c.cameras} or None)
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(sampler), size=min(n, len(sampler)), replace=False))
        obs = {k: [] for k in keys}
        for lo in range(0, len(idx), 100):
            b = sampler.get_batch(idx[lo:lo + 100])
            for k in keys:
                obs[k].append(b[k])
    out = {k: np.concatenate(v) for k, v in obs.items()}
    for k in c.state_keys:
        out[k] = out[k].astype(np.float32)
    return out


def take(obs: dict, sl) -> dict:
    return {k: v[sl] for k, v in obs.items()}


def parity(tp, op, obs: dict, seed: int, batch: int = 50) -> dict[str, float]:
    """Max abs differences torch vs onnxruntime over every observation."""
    import torch

    from robot_rl.runtime.samplers import is_diffusion
    n = len(next(iter(obs.values())))
    d: dict[str, float] = {}

    def upd(name: str, a, b) -> None:
        a = a.detach().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
        b = b.detach().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
        d[name] = max(d.get(name, 0.0), float(np.abs(a - b).max()))

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lo in range(0, n, batch):
            o = take(obs, slice(lo, lo + batch))
            if is_diffusion(tp):
                ct, co = tp.encode_obs(tp.obs_to_tensors(o)), op.encode_obs(op.obs_to_tensors(o))
                upd("encoder", ct, co)
                b = ct.shape[0]
                x = torch.randn(b, tp.config.horizon, tp.config.action_dim, generator=g)
                t = torch.randint(0, tp.config.num_train_timesteps, (b,), generator=g)
                upd("denoiser", tp.denoise(x, t, ct), op.denoise(x, t, ct))
                s = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
                # the whole cold sample (the policy's scheduler and steps) from the same noise: normalised,
                # then in robot units (the action normaliser's scale magnifies differences there)
                upd("chunk_normalised", tp.sample(ct, generator=torch.Generator().manual_seed(s)),
                    op.sample(co, generator=torch.Generator().manual_seed(s)))
                upd("chunk", tp.predict_chunks(o, torch.Generator().manual_seed(s)),
                    op.predict_chunks(o, torch.Generator().manual_seed(s)))
            else:
                upd("chunk_normalised", tp.normalized_chunks(tp.obs_to_tensors(o)),
                    op.normalized_chunks(op.obs_to_tensors(o)))
                upd("chunk", tp.predict_chunks(o), op.predict_chunks(o))
    return d


def percentiles(ts: list[float]) -> tuple[float, float]:
    a = 1e3 * np.asarray(ts)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def latency(policy, obs: dict, settings: dict | None, spec, action_mode: str | None, queries: int,
            warmup: int = 5) -> dict[str, float]:
    """Batch-1 sampler queries, one control step apart (a warm start always continues the
    previous chunk), over the observations in turn: p50 / p99 ms, and the encoder's."""
    import torch

    from robot_rl.runtime.samplers import is_diffusion, make_sampler
    n = len(next(iter(obs.values())))
    q = min(queries, n)
    sampler = make_sampler(policy, settings, spec=spec, action_mode=action_mode)
    g = torch.Generator().manual_seed(0)
    total, enc = [], []
    for i in range(warmup + q):
        o = take(obs, slice(i % n, i % n + 1))
        t0 = time.perf_counter()
        sampler.query(o, [i], [0], None, g)
        t1 = time.perf_counter()
        with torch.no_grad():
            if is_diffusion(policy):
                policy.encode_obs(policy.obs_to_tensors(o))
        t2 = time.perf_counter()
        if i >= warmup:
            total.append(t1 - t0)
            enc.append(t2 - t1)
    p50, p99 = percentiles(total)
    row = {"p50_ms": p50, "p99_ms": p99, "nfe_per_query": sampler.counts["nfe"] / max(1, sampler.counts["chunks"])}
    if is_diffusion(policy):
        e50, _ = percentiles(enc)
        row.update(encoder_p50_ms=e50, encoder_share=e50 / p50 if p50 > 0 else float("nan"))
    return row


def run(args: argparse.Namespace, out: Path) -> None:
    """Export into `out`, then parity and latency (printed, and the JSON written)."""
    from robot_rl.policies.base import load_checkpoint
    from robot_rl.policies.export import export_onnx, load_onnx_policy
    from robot_rl.runtime.samplers import SamplerSettings, is_diffusion
    from robot_rl.spec import RobotSpec

    t0 = time.perf_counter()
    manifest = export_onnx(args.checkpoint, out, opset=args.opset)
    export_s = time.perf_counter() - t0
    m = json.loads(manifest.read_text())
    tp, ck = load_checkpoint(args.checkpoint, device="cpu")
    op, _ = load_onnx_policy(out, threads=1)
    spec = RobotSpec.from_dict(ck["robot_spec"])
    meta = ck.get("metadata") or {}
    print(f"exported {args.checkpoint} ({ck['policy']}) to {out} in {export_s:.1f} s: "
          + ", ".join(f"{f['file']} {f['bytes'] / 1e6:.2f} MB" for f in m["files"].values()))

    obs = recorded_observations(args.store, tp, ck, args.n, args.seed)
    n = len(next(iter(obs.values())))
    diffs = parity(tp, op, obs, args.seed)
    print_table([{"output": k, "max_abs_diff": v, "within_1e-4": "yes" if v <= 1e-4 else "NO"} for k, v in diffs.items()],
                ["output", "max_abs_diff", "within_1e-4"],
                f"torch vs onnxruntime on {n} recorded observations ({Path(args.store).name})")

    action_mode = meta.get("action_mode")
    if is_diffusion(tp):
        T = int(tp.config.num_train_timesteps)
        k_prime = args.k_prime or min(SamplerSettings().k_prime, T - 1)
        modes = {f"cold DDIM-{args.cold_steps}": dict(mode="cold", scheduler="ddim", num_steps=args.cold_steps),
                 "RTI warm, 1 NFE": dict(mode="warm", warm_steps=1, k_prime=k_prime, fallback_threshold=float("inf"))}
    else:
        modes = {"one forward pass": dict(mode="cold")}
    rows = []
    for name, settings in modes.items():
        res = {b: latency(p, obs, settings, spec, action_mode, args.queries) for b, p in (("torch", tp), ("onnxruntime", op))}
        row = {"sampler": name, "nfe": res["torch"]["nfe_per_query"]}
        for b, r in res.items():
            row[f"{b}_p50_ms"], row[f"{b}_p99_ms"] = r["p50_ms"], r["p99_ms"]
            if "encoder_share" in r:
                row[f"{b}_encoder_share"] = r["encoder_share"]
        row["speedup_p50"] = res["torch"]["p50_ms"] / res["onnxruntime"]["p50_ms"]
        rows.append(row)
    cols = ["sampler", "nfe", "torch_p50_ms", "torch_p99_ms", "onnxruntime_p50_ms", "onnxruntime_p99_ms", "speedup_p50"]
    if is_diffusion(tp):
        cols[-1:-1] = ["torch_encoder_share", "onnxruntime_encoder_share"]
    print_table(rows, cols, f"batch-1 latency, 1 thread, {min(args.queries, n)} queries (CPU)")
    write_json("bench_onnx", {
        "command": "bench_onnx.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                if v is not None),
        "checkpoint": str(args.checkpoint), "store": str(args.store), "policy": ck["policy"],
        "export": {"dir": args.export_dir, "seconds": export_s, "opset": m["opset"],
                   "files": {k: {"file": f["file"], "bytes": f["bytes"]} for k, f in m["files"].items()},
                   "parity_at_export": m["parity"], "versions": m["versions"]},
        "observations": n, "max_abs_diff": diffs, "latency": rows, "torch_threads": 1, "onnxruntime_threads": 1,
    }, args.json)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint",
                    default=str(ROOT / "runs" / "bench_image" / "diffusion_pick_cube" / "checkpoints" / "last"),
                    help="a torch checkpoint folder (config.json + model.safetensors); default: bench_image_policies.py's "
                         "camera-only diffusion policy on pick_cube")
    ap.add_argument("--store", default=str(ROOT / "data" / "bench" / "so101_pick_cube_cameras.zarr"),
                    help="an episode store with the policy's observation keys; default: bench_image_policies.py's demos")
    ap.add_argument("--n", type=int, default=1000, help="recorded observations for the parity check")
    ap.add_argument("--queries", type=int, default=200, help="timed batch-1 queries per sampler and backend")
    ap.add_argument("--cold-steps", type=int, default=10, help="DDIM steps of the cold sampler")
    ap.add_argument("--k-prime", type=int, default=None, help="the warm start's K' (default: the sampler's, "
                                                             "capped below num_train_timesteps)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--export-dir", default=None, help="where the export goes (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="output JSON (default: results/bench_onnx.json)")
    args = ap.parse_args()
    for what, path in (("checkpoint", Path(args.checkpoint) / "config.json"), ("store", Path(args.store))):
        if not path.exists():
            sys.exit(f"no {what} at {path.parent if what == 'checkpoint' else path}: pass --{what}, or train and record "
                     "the defaults first (`../scripts/isolated.sh ../.venv/bin/python bench_policies.py --runs "
                     "diffusion:pick_cube:15`)")
    import torch
    torch.set_num_threads(1)
    out = Path(args.export_dir or tempfile.mkdtemp(prefix="bench_onnx_"))
    try:
        run(args, out)
    finally:
        if not args.export_dir:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
