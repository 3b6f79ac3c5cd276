"""Rollouts of a sampler + executor on the twin with an injected inference delay, in
simulated time (what the benchmark's success-vs-delay sweep runs).

A query made from the observation at control step k delivers its chunk at step k + d,
whatever the CPU does: the twin waits for nobody, the chunk executor keeps executing the
previous chunk meanwhile (or holds when it has nothing), and stale rows are dropped on
arrival -- exactly what happens on a robot whose inference takes d control periods, but
deterministic and independent of this machine's speed. ``n_envs`` twins run side by
side; the queries of every env that needs one at a step are batched into one sampler call.

Besides success, each run records what the robot was actually commanded: network
evaluations per query and per executed action, holds (underruns), stale drops, fallbacks,
and the discontinuity at chunk boundaries (acceleration and jerk of the executed action
sequence at the steps where a new chunk took over, against the steps inside chunks).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from robot_rl.runtime.executor import ChunkExecutor, ExecutorSettings
from robot_rl.runtime.samplers import SamplerSettings, make_sampler


@dataclass
class DelayRun:
    label: str
    delay: int
    episodes: int
    successes: list[bool]
    success_rate: float
    ci95: tuple[float, float]
    mean_success_steps: float | None
    queries: int  # chunks computed (per env)
    nfe: int
    executed: int  # control steps that executed a queued action (not a hold)
    holds: int  # control steps with nothing queued (start of episode, sync waits, underruns)
    underruns: int  # holds after the first chunk of an episode arrived
    stale_dropped: int
    fallbacks: int
    cold_queries: int
    nfe_per_query: float
    nfe_per_action: float
    jerk: dict[str, float]  # boundary / inside max and p95, ratio
    wall_s: float
    sampler: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def _jerk_stats(traces: list[tuple[np.ndarray, np.ndarray]], cont: np.ndarray) -> dict[str, float]:
    """Max and p95 of |acceleration| and |jerk| (finite differences of the executed actions,
    continuous dimensions, inf-norm) in windows touching a chunk boundary vs. inside chunks."""
    acc_b, acc_i, jerk_b, jerk_i = [], [], [], []
    for acts, bnd in traces:
        a = acts[:, cont].astype(np.float64)
        n = len(a)
        if n < 4:
            continue
        acc = np.abs(a[2:] - 2 * a[1:-1] + a[:-2]).max(1)  # at steps 2..n-1
        jerk = np.abs(a[3:] - 3 * a[2:-1] + 3 * a[1:-2] - a[:-3]).max(1)  # at steps 3..n-1
        b = bnd.astype(bool)
        for k, v in zip(range(2, n), acc):
            (acc_b if b[k - 1:k + 1].any() else acc_i).append(v)
        for k, v in zip(range(3, n), jerk):
            (jerk_b if b[k - 2:k + 1].any() else jerk_i).append(v)

    def stat(x):
        return (float(np.max(x)), float(np.percentile(x, 95))) if x else (float("nan"), float("nan"))
    out = {}
    for name, b, i in (("acc", acc_b, acc_i), ("jerk", jerk_b, jerk_i)):
        (bm, b95), (im, i95) = stat(b), stat(i)
        out.update({f"{name}_boundary_max": bm, f"{name}_boundary_p95": b95, f"{name}_inside_max": im,
                    f"{name}_inside_p95": i95, f"{name}_ratio_max": bm / im if im > 0 else float("nan"),
                    f"{name}_ratio_p95": b95 / i95 if i95 > 0 else float("nan"), f"{name}_boundary_n": len(b)})
    return out


def rollout_with_delay(policy, task: str, spec, *, sampler: SamplerSettings | dict | None = None,
                       executor: ExecutorSettings | dict | None = None, delay: int = 0, episodes: int = 50,
                       seed: int = 100_000, n_envs: int = 8, generator_seed: int = 0, label: str = "",
                       action_mode: str = "ee_delta", max_episode_steps: int | None = None,
                       progress: bool = True, torch_threads: int | None = 1,
                       reset_sampler: bool = True, image_size=None, camera_size=None) -> DelayRun:
    """An image policy sees its cameras at `image_size`, rendered at `camera_size` and resized
    when that differs (see ``robot_rl.learn.evaluate.checkpoint_image_sizes``).

    `reset_sampler=False` keeps each env's previous chunk across episodes (step indices
    keep counting): the first warm query of an episode then starts from the last chunk of the
    previous one -- the situation the warm sampler's fallback check exists for."""
    from tqdm import tqdm

    from robot_rl.learn.evaluate import _EnvList, camera_plan, push_history, start_history, wilson_interval
    from robot_rl.spec import resolve_spec
    if isinstance(sampler, dict):
        sampler = SamplerSettings.from_dict(sampler)
    if isinstance(executor, dict):
        executor = ExecutorSettings.from_dict(executor)
    sampler = sampler or SamplerSettings(mode="cold")
    executor = executor or ExecutorSettings()
    d = int(delay)
    if d < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    pc = policy.config
    A = int(pc.action_dim)
    n_envs = max(1, min(int(n_envs), episodes))
    dt = 1.0 / float(spec.control_hz)
    discrete = [A - 1] if spec.gripper is not None else []
    cont = np.ones(A, bool)
    cont[discrete] = False
    smp = make_sampler(policy, sampler, batch=n_envs, discrete_dims=discrete, action_mode=action_mode)
    exs = [ChunkExecutor(A, dt, executor, discrete) for _ in range(n_envs)]
    cameras = [c.removeprefix("image_") for c in pc.cameras]
    render, resize = camera_plan(pc.cameras, image_size, camera_size)
    if cameras:
        spec = resolve_spec(spec, action_mode, cameras, render)
    pool = _EnvList(n_envs, resize=resize, task=task, robot=spec, action_mode=action_mode, cameras=cameras,
                    max_episode_steps=max_episode_steps)
    keys = list(pc.state_keys) + list(pc.cameras)
    T = int(pc.n_obs_steps)
    gen = torch.Generator()
    gen.manual_seed(int(generator_seed))

    hist: dict[str, np.ndarray] = {}
    slot_ep = np.full(n_envs, -1, np.int64)
    step = np.zeros(n_envs, np.int64)  # control steps into the episode
    base = np.zeros(n_envs, np.int64)  # sampler step index of the episode's first step
    pending: list[list[tuple[int, int, np.ndarray]]] = [[] for _ in range(n_envs)]  # (arrive, obs step, chunk)
    last_grip = np.zeros(n_envs, np.float32)
    acts: list[list[np.ndarray]] = [[] for _ in range(n_envs)]
    bnds: list[list[bool]] = [[] for _ in range(n_envs)]
    n_bnd = np.zeros(n_envs, np.int64)
    successes = [False] * episodes
    lengths = [0] * episodes
    traces: list[tuple[np.ndarray, np.ndarray]] = []
    tot = dict(queries=0, nfe=0, executed=0, holds=0, fallbacks=0, cold=0)
    next_ep = 0

    def start(i: int) -> None:
        nonlocal next_ep
        ep = next_ep
        next_ep += 1
        slot_ep[i] = ep
        obs = pool.reset(i, seed + ep)
        start_history(hist, keys, i, obs, n_envs, T)
        base[i] = base[i] + step[i] if not reset_sampler else 0
        step[i] = 0
        pending[i].clear()
        exs[i].reset()  # (its counts run on over episodes)
        if reset_sampler:
            smp.reset([i])
        last_grip[i] = float(obs["gripper"][0]) if "gripper" in obs else 0.0
        acts[i], bnds[i] = [], []
        n_bnd[i] = 0

    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    was_training = policy.training
    policy.eval()
    t0 = time.perf_counter()
    bar = tqdm(total=episodes, desc=label or f"{sampler.mode}/{executor.execution} d={d}", unit="ep",
               disable=not progress, leave=False)
    done = n_succ = 0
    try:
        for i in range(n_envs):
            start(i)
        while (slot_ep >= 0).any():
            active = np.flatnonzero(slot_ep >= 0)
            tnow = step * dt
            for i in active:  # chunks arriving now
                keep = []
                for arrive, k_obs, chunk in pending[i]:
                    if arrive <= step[i]:
                        exs[i].submit(chunk, k_obs * dt, tnow[i])
                    else:
                        keep.append((arrive, k_obs, chunk))
                pending[i] = keep
            need = [i for i in active if exs[i].should_query(tnow[i], d)]
            if need:
                idx = np.asarray(need)
                res = smp.query({k: hist[k][idx] for k in keys}, base[idx] + step[idx], np.full(len(idx), d), idx, gen)
                tot["queries"] += len(idx)
                tot["nfe"] += int(res.nfe.sum())
                tot["fallbacks"] += int(res.fallback.sum())
                tot["cold"] += int(res.cold.sum())
                for j, i in enumerate(idx):
                    exs[i].query_started(tnow[i])
                    if d == 0:
                        exs[i].submit(res.chunks[j], tnow[i], tnow[i])
                    else:
                        pending[i].append((int(step[i]) + d, int(step[i]), res.chunks[j]))
            actions = np.zeros((n_envs, A), np.float32)
            for i in active:
                a = exs[i].action_at(tnow[i])
                if a is None:
                    a = np.zeros(A, np.float32)
                    if discrete:
                        a[discrete] = last_grip[i]
                    tot["holds"] += 1
                else:
                    tot["executed"] += 1
                actions[i] = np.clip(a, -1.0, 1.0)
                if discrete:
                    actions[i, discrete] = np.clip(a[discrete], 0.0, 1.0)
                    last_grip[i] = actions[i, discrete[0]]
                nb = len(exs[i].boundaries)
                is_b = nb > n_bnd[i] and abs(exs[i].boundaries[-1] - tnow[i]) < 0.5 * dt and n_bnd[i] > 0
                if nb > n_bnd[i] and exs[i].boundaries[-1] <= tnow[i] + 0.5 * dt:
                    n_bnd[i] = nb
                acts[i].append(actions[i].copy())
                bnds[i].append(bool(is_b))
            results = pool.step(actions, slot_ep >= 0)
            for i, (obs, reward, terminated, truncated, info) in results.items():
                step[i] += 1
                ep = int(slot_ep[i])
                if terminated or truncated:
                    ok = bool(info.get("success", terminated))
                    successes[ep] = ok
                    lengths[ep] = int(step[i])
                    traces.append((np.asarray(acts[i]), np.asarray(bnds[i])))
                    done += 1
                    n_succ += int(ok)
                    bar.update(1)
                    bar.set_postfix(success=f"{n_succ}/{done}")
                    slot_ep[i] = -1
                    if next_ep < episodes:
                        start(i)
                    continue
                push_history(hist, keys, i, obs)
    finally:
        wall = time.perf_counter() - t0
        bar.close()
        pool.close()
        torch.set_num_threads(threads)
        policy.train(was_training)
    underruns = sum(e.counts["underruns"] for e in exs)
    stale = sum(e.counts["stale_dropped"] for e in exs)
    succ_steps = [n for n, s in zip(lengths, successes) if s]
    return DelayRun(
        label=label, delay=d, episodes=episodes, successes=successes, success_rate=n_succ / episodes,
        ci95=wilson_interval(n_succ, episodes), mean_success_steps=float(np.mean(succ_steps)) if succ_steps else None,
        queries=tot["queries"], nfe=tot["nfe"], executed=tot["executed"], holds=tot["holds"],
        underruns=underruns, stale_dropped=stale, fallbacks=tot["fallbacks"], cold_queries=tot["cold"],
        nfe_per_query=tot["nfe"] / max(1, tot["queries"]), nfe_per_action=tot["nfe"] / max(1, tot["executed"]),
        jerk=_jerk_stats(traces, cont), wall_s=wall, sampler=sampler.to_dict(), executor=executor.to_dict())
