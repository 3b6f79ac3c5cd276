"""``robot-rl bench inference CHECKPOINT task=...``: every way of running a chunk policy,
measured on the same checkpoint and the same seeds.

Sections (``sections=[...]``):

* ``latency`` -- batch-1 query latency (p50 / p95 / p99 / max over ``queries`` queries each,
  one torch thread) of every sampler, queried on a recorded observation stream the way the
  executor queries it (the step advancing ``replan_every`` steps per query, so warm starts
  shift like they do on the robot);
* ``quality`` -- success at zero delay for the samplers: cold DDPM-100 (the reference),
  cold DDIM at 1, 2, 3 and 10 steps, RTI warm starts with 1-3 network evaluations and its
  variants (K', re-noising, discrete-dimension handling), real-time chunking; plus the
  fallback check (warm starts carried over from the previous episode);
* ``delay`` -- success, holds, stale drops, network evaluations per executed action and
  chunk-boundary jerk for each execution mode over injected delays ``delays`` (in control
  steps, simulated time: see :mod:`robot_rl.runtime.simulate`);
* ``loop`` -- period error of a 50 Hz control loop while inference runs in a thread or in a
  process (:mod:`robot_rl.runtime.rt_bench`).

Prints tables, writes ``inference.json`` and draws ``success_vs_delay.png`` and
``latency.png`` in ``out``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = ("latency", "quality", "delay", "loop")


class BenchError(ValueError):
    pass


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[("-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)))
                                           for v in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w[i]) for i, h in enumerate(cells[0])),
             "  ".join("-" * w[i] for i in range(len(w)))]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in cells[1:]]
    return "\n".join(lines)


# -- configurations ---------------------------------------------------------------------
def start_configs() -> dict[str, dict]:
    """RTI 1 NFE with the other ways of starting an episode than the default warm start from
    holding still: the policy's cold sampler, or a 1-3 step DDIM sample (``start_steps``)."""
    out = {"RTI warm 1 NFE, cold start": dict(mode="warm", warm_steps=1, start="cold")}
    for k in (1, 2, 3):
        out[f"RTI warm 1 NFE, DDIM-{k} start"] = dict(mode="warm", warm_steps=1, start="cold", start_steps=k)
    return out


def latency_configs(diffusion: bool, replan: int) -> dict[str, dict]:
    if not diffusion:
        return {"cold": dict(mode="cold"), "rtc (blend)": dict(mode="rtc")}
    return {
        "cold DDPM-100": dict(mode="cold", scheduler="ddpm", num_steps=100),
        "cold DDIM-10": dict(mode="cold", scheduler="ddim", num_steps=10),
        "cold DDIM-3": dict(mode="cold", scheduler="ddim", num_steps=3),
        "cold DDIM-2": dict(mode="cold", scheduler="ddim", num_steps=2),
        "cold DDIM-1": dict(mode="cold", scheduler="ddim", num_steps=1),
        "RTI warm 1 NFE": dict(mode="warm", warm_steps=1),
        "RTI warm 2 NFE": dict(mode="warm", warm_steps=2),
        "RTI warm 3 NFE": dict(mode="warm", warm_steps=3),
        **start_configs(),
        "RTC (5 steps + VJP)": dict(mode="rtc"),
    }


def quality_configs(diffusion: bool) -> dict[str, dict]:
    if not diffusion:
        return {"cold": dict(mode="cold"), "rtc (blend)": dict(mode="rtc")}
    c = latency_configs(True, 0)
    c.update({
        "RTI 2 NFE, K'=15": dict(mode="warm", warm_steps=2, k_prime=15),
        "RTI 2 NFE, K'=50": dict(mode="warm", warm_steps=2, k_prime=50),
        "RTI 2 NFE, no re-noise": dict(mode="warm", warm_steps=2, renoise=False),
        "RTI 2 NFE, discrete none": dict(mode="warm", warm_steps=2, discrete="none"),
        "RTI 2 NFE, discrete scale 0.5": dict(mode="warm", warm_steps=2, discrete="scale", discrete_scale=0.5),
        "RTI 2 NFE, discrete scale 0": dict(mode="warm", warm_steps=2, discrete="scale", discrete_scale=0.0),
        "RTI 2 NFE, scale 0.5 + snap": dict(mode="warm", warm_steps=2, discrete="scale_snap", discrete_scale=0.5),
    })
    return c


def delay_modes(diffusion: bool, replan: int, n_action_steps: int) -> dict[str, tuple[dict, dict]]:
    """name -> (sampler settings, executor settings)."""
    a = dict(execution="async", replan_every=replan)
    m = {
        "sync": (dict(mode="cold"), dict(execution="sync", n_action_steps=n_action_steps)),
        "naive async": (dict(mode="cold"), dict(a, align=False)),
        "aligned async (cold)": (dict(mode="cold"), dict(a)),
    }
    if diffusion:
        m["RTI warm (delay-aware)"] = (dict(mode="warm"), dict(a))
        m["RTC"] = (dict(mode="rtc"), dict(a))
    else:
        m["temporal ensemble"] = (dict(mode="cold"), dict(execution="ensemble"))
        m["RTC (blend)"] = (dict(mode="rtc"), dict(a))
    return m


# -- sections ---------------------------------------------------------------------------
def _observation_stream(policy, task: str, spec, n: int = 200, seed: int = 100_000, image_size=None,
                        camera_size=None) -> list[dict]:
    """Observation histories along rollouts of the policy itself (cold sampling); the first
    of each episode carries ``"_start": True``. An image policy's cameras are rendered (at
    `camera_size`, resized to `image_size` when they differ, as in evaluation)."""
    import torch

    from robot_rl.learn.evaluate import _EnvList, camera_plan
    from robot_rl.spec import resolve_spec
    pc = policy.config
    cams = [c.removeprefix("image_") for c in pc.cameras]
    render, resize = camera_plan(pc.cameras, image_size, camera_size)
    pool = _EnvList(1, resize=resize, task=task, robot=resolve_spec(spec, "ee_delta", cams, render) if cams else spec,
                    action_mode="ee_delta", cameras=cams)
    env = pool.envs[0]
    keys = list(pc.state_keys) + list(pc.cameras)
    out, ep = [], 0
    gen = torch.Generator().manual_seed(0)
    try:
        while len(out) < n:
            obs = pool.reset(0, seed + ep)
            ep += 1
            hist = {k: np.stack([obs[k]] * pc.n_obs_steps) for k in keys}
            chunk, j = None, 0
            for t in range(env.max_episode_steps):
                out.append({k: v.copy() for k, v in hist.items()} | {"_start": t == 0})
                if chunk is None or j >= pc.n_action_steps:
                    chunk, j = policy.predict_chunk(hist, gen), 0
                obs, _, term, trunc, _ = pool.step(chunk[j][None], np.ones(1, bool))[0]
                j += 1
                for k in hist:
                    hist[k] = np.concatenate([hist[k][1:], obs[k][None]])
                if term or trunc or len(out) >= n:
                    break
    finally:
        env.close()
    return out


def _pcts(x: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(x, 50)), "p95_ms": float(np.percentile(x, 95)),
            "p99_ms": float(np.percentile(x, 99)), "max_ms": float(x.max()), "mean_ms": float(x.mean())}


def bench_latency(policy, stream: list[dict], configs: dict[str, dict], queries: int, replan: int,
                  spec, progress: bool = True, action_mode: str = "ee_delta") -> dict[str, dict]:
    import torch
    res = {}
    gen = torch.Generator().manual_seed(0)
    # the observation encoding's share: encode_obs timed where the samplers call it (once per query)
    enc_times: list[float] = []
    encode = getattr(policy, "encode_obs", None)
    if encode is not None:
        def timed_encode(obs):
            t = time.perf_counter()
            try:
                return encode(obs)
            finally:
                enc_times.append(time.perf_counter() - t)
        policy.encode_obs = timed_encode
    try:
        for name, cfg in configs.items():
            res[name] = _latency_one(policy, stream, name, cfg, queries, replan, spec, progress, action_mode, gen,
                                     enc_times if encode is not None else None)
    finally:
        if encode is not None:
            del policy.encode_obs  # the bound method again
    return res


def _latency_one(policy, stream: list[dict], name: str, cfg: dict, queries: int, replan: int, spec, progress: bool,
                 action_mode: str, gen, enc_times: list[float] | None) -> dict:
    """One sampler's batch-1 latency over the stream; with `enc_times` (appended to by the
    timed ``encode_obs``), the encoder's time per query and its share."""
    from tqdm import tqdm

    from robot_rl.runtime.samplers import make_sampler
    n = queries if cfg.get("num_steps", 0) < 50 else max(100, queries // 5)
    smp = make_sampler(policy, cfg, spec=spec, action_mode=action_mode)
    times, nfe, cold, enc = [], [], [], []  # cold: an episode's first query, or a fallback
    step, pos = 0, 0
    for q in tqdm(range(n + 5), desc=f"latency {name}", leave=False, disable=not progress):
        item = stream[pos % len(stream)]
        # a new episode (or the stream wrapping round): the sampler starts afresh, as deployed
        if item["_start"] or pos % len(stream) < (pos - replan) % len(stream):
            smp.reset()
        obs = {k: v[None] for k, v in item.items() if k != "_start"}
        n_enc = len(enc_times) if enc_times is not None else 0
        t0 = time.perf_counter()
        r = smp.query(obs, [step], [0], None, gen)
        dt = time.perf_counter() - t0
        e = sum(enc_times[n_enc:]) if enc_times is not None else 0.0
        calls = len(enc_times) - n_enc if enc_times is not None else 0
        # next query: `replan` steps on, but never past the next episode's first step
        nxt = pos + 1
        while nxt < pos + replan and not stream[nxt % len(stream)]["_start"]:
            nxt += 1
        step += nxt - pos
        pos = nxt
        if q >= 5:  # warm-up queries not timed
            times.append(dt)
            nfe.append(int(r.nfe[0]))
            cold.append(bool(r.cold[0] or r.start[0]))
            enc.append((e, calls))
    x = np.asarray(times) * 1e3
    out = _pcts(x) | {"queries": len(x), "nfe_per_query": float(np.mean(nfe)), "settings": cfg,
                      "start_or_cold_queries": int(np.sum(cold))}
    if enc_times is not None:
        e_ms = np.asarray([a for a, _ in enc]) * 1e3
        out |= {"encoder_ms_mean": float(e_ms.mean()), "encoder_ms_p99": float(np.percentile(e_ms, 99)),
                "encoder_share": float(e_ms.sum() / x.sum()) if x.sum() > 0 else float("nan"),
                "encoder_calls_per_query": float(np.mean([c for _, c in enc]))}
    w = x[~np.asarray(cold)]
    if cfg.get("mode") != "cold" and len(w):
        out["steady"] = _pcts(w) | {"queries": len(w)}
    return out


def run_bench(checkpoint: str, task: str | None = None, *, episodes: int = 100, delays=(0, 1, 2, 4, 8),
              queries: int = 1000, replan_every: int = 4, seed: int = 100_000, n_envs: int = 8,
              sections=SECTIONS, out: str | Path | None = None, loop_seconds: float = 20.0,
              loop_rate: float = 50.0, progress: bool = True, backend: str = "auto") -> dict[str, Any]:
    """`backend`: torch, onnxruntime (an ONNX export folder) or auto (see
    ``robot_rl.policies.export.load_policy``)."""
    import torch

    from robot_rl.policies.export import load_policy
    from robot_rl.runtime.samplers import is_diffusion
    from robot_rl.runtime.simulate import rollout_with_delay
    from robot_rl.sim.tasks import TASKS
    from robot_rl.spec import RobotSpec

    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise BenchError(f"unknown sections {bad}; sections: {list(SECTIONS)}")
    policy, ck = load_policy(checkpoint, backend=backend, device="cpu", threads=1)
    spec = RobotSpec.from_dict(ck["robot_spec"])
    meta = ck.get("metadata") or {}
    task = task or meta.get("task")
    if task not in TASKS:
        raise BenchError(f"unknown task {task!r}; pass task=<{'|'.join(sorted(TASKS))}>")
    from robot_rl.learn.evaluate import checkpoint_image_sizes
    cams = [c.removeprefix("image_") for c in policy.config.cameras]
    image_size, camera_size = checkpoint_image_sizes(meta, spec, cams)
    if cams and "loop" in sections:
        print("loop section skipped: its control-loop worker feeds state observations only (image policies: "
              "the latency section gives the query time, the inference node's /diagnostics the live figures)")
        sections = [s for s in sections if s != "loop"]
    torch.set_num_threads(1)
    diffusion = is_diffusion(policy)

    def runnable(configs: dict) -> dict:
        """Without the rtc rows on an ONNX diffusion export (its guidance needs the denoiser's gradients)."""
        if policy.backend == "torch" or not diffusion:
            return configs
        mode = (lambda v: (v[0] if isinstance(v, tuple) else v).get("mode"))
        return {k: v for k, v in configs.items() if mode(v) != "rtc"}
    out = Path(out) if out else Path(checkpoint) / "bench_inference"
    out.mkdir(parents=True, exist_ok=True)
    n_act = int(policy.config.n_action_steps)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "policy": ck.get("policy"), "task": task,
                              "backend": policy.backend, "robot": spec.name, "control_hz": spec.control_hz, "episodes": episodes,
                              "seed": seed, "replan_every": replan_every, "chunk_len": int(policy.chunk_len),
                              "delays": list(delays), "torch_threads": 1, "cameras": cams,
                              "image_size": image_size, "camera_size": camera_size}

    def roll(name, smp, ex, d, **kw):
        r = rollout_with_delay(policy, task, spec, sampler=smp, executor=ex, delay=d, episodes=episodes, seed=seed,
                               n_envs=n_envs, label=f"{name} d={d}", progress=progress, image_size=image_size,
                               camera_size=camera_size, **kw)
        return r.to_dict()

    if "latency" in sections:
        stream = _observation_stream(policy, task, spec, image_size=image_size, camera_size=camera_size)
        report["latency"] = bench_latency(policy, stream, runnable(latency_configs(diffusion, replan_every)), queries,
                                          replan_every, spec, progress)  # the stream is ee_delta
        rows = []
        for k, v in report["latency"].items():
            rows.append([k, "all", v["nfe_per_query"], v["p50_ms"], v["p95_ms"], v["p99_ms"], v["max_ms"],
                         v.get("encoder_ms_mean"), v.get("encoder_share"), v["queries"]])
            if "steady" in v:
                s = v["steady"]
                rows.append(["", "steady", "", s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"], None, None,
                             s["queries"]])
        print(_table(f"\nquery latency, batch 1, 1 thread ({task}{', cameras ' + '+'.join(cams) if cams else ''}); "
                     "'all' includes each episode's first query; encoder = observation encoding, once per query",
                     ["sampler", "queries", "NFE/query", "p50 ms", "p95 ms", "p99 ms", "max ms", "encoder ms",
                      "encoder share", "n"], rows), flush=True)
    if "quality" in sections:
        q = {}
        ex = dict(execution="async", replan_every=replan_every)
        for name, cfg in runnable(quality_configs(diffusion)).items():
            q[name] = roll(name, cfg, ex, 0)
        if diffusion:
            q["RTI (default), carried over episodes, fallback on"] = roll("carry", dict(mode="warm"), ex, 0,
                                                                      reset_sampler=False)
            q["RTI (default), carried over episodes, fallback off"] = roll(
                "carry-nofb", dict(mode="warm", fallback_threshold=float("inf")), ex, 0, reset_sampler=False)
        report["quality"] = q
        rows = [[k, 100 * v["success_rate"], f"[{100 * v['ci95'][0]:.0f}, {100 * v['ci95'][1]:.0f}]",
                 v["nfe_per_query"], v["nfe_per_action"], v["fallbacks"], v["queries"]] for k, v in q.items()]
        print(_table(f"\nsuccess at d=0, {episodes} episodes, replan every {replan_every} ({task})",
                     ["sampler", "success %", "95% CI", "NFE/query", "NFE/action", "fallbacks", "queries"], rows),
              flush=True)
    if "delay" in sections:
        dres: dict[str, dict] = {}
        for name, (smp, ex) in runnable(delay_modes(diffusion, replan_every, n_act)).items():
            dres[name] = {str(d): roll(name, smp, ex, d) for d in delays}
        report["delay"] = dres
        rows = []
        for name, per in dres.items():
            for d, v in per.items():
                j = v["jerk"]
                rows.append([name, d, 100 * v["success_rate"], v["nfe_per_action"], v["holds"], v["underruns"],
                             v["stale_dropped"], j["jerk_boundary_max"], j["jerk_inside_max"], j["jerk_ratio_max"],
                             j["jerk_ratio_p95"]])
        print(_table(f"\nsuccess vs injected delay, {episodes} episodes ({task})",
                     ["mode", "d", "success %", "NFE/action", "holds", "underruns", "stale", "jerk bnd max",
                      "jerk in max", "ratio max", "ratio p95"], rows), flush=True)
    if "loop" in sections:
        from robot_rl.runtime.rt_bench import measure_control_loop
        lres = {}
        runs = [("no inference (baseline)", "thread", dict(mode="cold"), True, 50)]
        for kind in ("thread", "process"):
            for smp_name, smp in (("RTI warm", dict(mode="warm")), ("cold DDIM-10", dict(mode="cold"))):
                runs.append((f"{kind} / {smp_name}", kind, smp, False, 50))
        runs.append(("process / cold DDIM-10, no SCHED_FIFO", "process", dict(mode="cold"), False, 0))
        every = dict(replan_every=1)  # stress: a cold query every control step, inference never idle
        for kind in ("thread", "process"):
            runs.append((f"{kind} / cold DDIM-10, query every step", kind, dict(mode="cold"), False, 50, every))
        for name, kind, smp, baseline, prio, *ex in runs:
            lres[name] = measure_control_loop(checkpoint, spec, kind, rate_hz=loop_rate, seconds=loop_seconds,
                                              sampler=smp, executor=ex[0] if ex else None, baseline=baseline,
                                              rt_priority=prio)
        report["loop"] = lres
        rows = [[k, "yes" if v.get("rt_fifo") else "no", v.get("period_err_ms_p50"), v.get("period_err_ms_p99"),
                 v.get("period_err_ms_max"), v.get("missed_deadlines"), v.get("queries"),
                 v.get("query_latency_ms_p99")] for k, v in lres.items()]
        print(_table(f"\ncontrol loop at {loop_rate:g} Hz while inference runs ({loop_seconds:g} s each)",
                     ["worker / sampler", "FIFO", "period err p50 ms", "p99 ms", "max ms", "missed", "queries",
                      "latency p99 ms"], rows), flush=True)
    path = out / "inference.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    files = [path] + plot_report(report, out)
    report["files"] = [str(f) for f in files]
    for f in files:
        print(f"wrote {f}")
    return report


def plot_report(report: dict, out: Path) -> list[Path]:
    from matplotlib.figure import Figure
    files = []
    if "delay" in report:
        fig = Figure(figsize=(11, 4.5), dpi=100)
        ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for name, per in report["delay"].items():
            ds = [int(d) for d in per]
            sr = [100 * per[d]["success_rate"] for d in per]
            lo = [100 * per[d]["ci95"][0] for d in per]
            hi = [100 * per[d]["ci95"][1] for d in per]
            line, = ax.plot(ds, sr, "o-", label=name)
            ax.fill_between(ds, lo, hi, color=line.get_color(), alpha=0.12)
            ax2.plot(ds, [per[d]["jerk"]["jerk_ratio_max"] for d in per], "o-", label=name)
        ax.set_xlabel("injected inference delay d (control steps)")
        ax.set_ylabel("success %")
        ax.set_ylim(0, 105)
        ax.set_title(f"{report['task']}: success vs delay (95% CI)", fontsize=10)
        ax.legend(fontsize=7)
        ax2.axhline(2.0, color="grey", ls="--", lw=1)
        ax2.set_xlabel("d (control steps)")
        ax2.set_ylabel("max jerk at chunk boundaries / inside chunks")
        ax2.set_title("chunk-boundary discontinuity (target <= 2)", fontsize=10)
        fig.tight_layout()
        p = out / "success_vs_delay.png"
        fig.savefig(p)
        files.append(p)
    if "latency" in report:
        lat = report["latency"]
        fig = Figure(figsize=(10, 4.5), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        names = list(lat)
        y = np.arange(len(names))
        for key, off, c in (("p50_ms", -0.25, "#1f77b4"), ("p99_ms", 0.0, "#ff7f0e"), ("max_ms", 0.25, "#d62728")):
            ax.barh(y + off, [lat[n][key] for n in names], height=0.25, color=c, label=key.replace("_ms", ""))
        st = [(i, lat[n]["steady"]["p99_ms"]) for i, n in enumerate(names) if "steady" in lat[n]]
        if st:
            ax.plot([v for _, v in st], [i for i, _ in st], "kD", ms=6,
                    label="p99 of warm queries only (without each episode's first query)")
        period = 1e3 / float(report["control_hz"])
        ax.axvline(period, color="grey", ls="--", lw=1, label=f"control period {period:.0f} ms")
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("query latency (ms, log scale), batch 1, 1 CPU thread")
        ax.legend(fontsize=8)
        ax.set_title(f"{report['policy']} on {report['task']}: query latency", fontsize=10)
        fig.tight_layout()
        p = out / "latency.png"
        fig.savefig(p)
        files.append(p)
    return files
