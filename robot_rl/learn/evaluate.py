"""Policy evaluation in the MuJoCo twin: success rate with a 95% Wilson interval.

Episode ``i`` runs from seed ``seed + i`` (a held-out seed set: demonstrations are
recorded from small seeds). ``n_envs`` twins run side by side in this process and every
step the policy is queried once, batched over all the envs that need a new chunk.

Two ways of executing chunks:

* ``chunk``: run rows ``0 .. n_action_steps - 1`` of a chunk, then query again
  (diffusion policy style);
* ``ensemble``: query every step and execute the temporal ensemble of all overlapping
  chunks (ACT style, :class:`~robot_rl.policies.common.ensemble.TemporalEnsembler`).

Results are deterministic for a given policy, seed set, ``n_envs`` and ``generator_seed``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

EXECUTIONS = ("chunk", "ensemble")


class EvalError(ValueError):
    """An evaluation that cannot run as asked (bad settings, policy and env do not fit)."""


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``(0, 1)`` when n == 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..{n}, got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalResult:
    task: str
    robot: str
    episodes: int
    seeds: list[int]
    successes: list[bool]
    returns: list[float]
    lengths: list[int]  # control steps
    episode_time_s: list[float]  # simulated seconds to success or timeout
    success_rate: float
    ci95: tuple[float, float]
    mean_episode_time_s: float
    wall_s: float
    policy_queries: int  # batched predict_chunks calls
    chunks_predicted: int  # chunks over all envs (sum of the batch sizes)
    execution: str
    n_action_steps: int
    chunk_len: int
    n_envs: int
    action_mode: str
    control_hz: float
    max_episode_steps: int
    generator_seed: int
    videos: list[str] = field(default_factory=list)

    @property
    def n_successes(self) -> int:
        return int(sum(self.successes))

    @property
    def mean_success_time_s(self) -> float | None:
        t = [t for t, s in zip(self.episode_time_s, self.successes) if s]
        return float(np.mean(t)) if t else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        d["n_successes"] = self.n_successes
        d["mean_success_time_s"] = self.mean_success_time_s
        d["episodes_per_s"] = self.episodes / self.wall_s if self.wall_s > 0 else None
        return d

    def summary_line(self) -> str:
        lo, hi = self.ci95
        return (f"success {100 * self.success_rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
                f"({self.n_successes}/{self.episodes})  mean episode {self.mean_episode_time_s:.1f} s")


# -- envs ---------------------------------------------------------------------------
class _EnvList:
    """``n`` RobotEnvs stepped in this process; only the envs that are running step.

    Measured against gymnasium's vector envs (autoreset disabled so each episode gets its
    own seed) on 2 cores, pick_cube, MLP-BC, 64 episodes, 8 envs: this 16-25 ep/s, 'sync'
    12-13 ep/s, 'async' 8-15 ep/s; with cameras all three were within noise, and 'async'
    (fork) hangs once this process holds an EGL context. Hence a plain list.

    `resize`: (image keys, (h, w)): those frames are resized with area interpolation before
    they are returned (a policy trained on frames resized from the recorded size).
    """

    def __init__(self, n: int, resize: tuple[Sequence[str], tuple[int, int]] | None = None, **env_kwargs):
        from robot_rl.sim.env import RobotEnv
        self.envs = [RobotEnv(**env_kwargs) for _ in range(n)]
        self.resize = resize

    def _fit(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.resize is None:
            return obs
        from robot_rl.data.frames import resize_image
        keys, hw = self.resize
        return {**obs, **{k: resize_image(np.asarray(obs[k]), hw) for k in keys if k in obs}}

    def reset(self, i: int, seed: int) -> dict[str, np.ndarray]:
        return self._fit(self.envs[i].reset(seed=seed)[0])

    def step(self, actions: np.ndarray, active: np.ndarray) -> dict[int, tuple]:
        out = {}
        for i in np.flatnonzero(active):
            obs, *rest = self.envs[i].step(actions[i])
            out[i] = (self._fit(obs), *rest)
        return out

    def render(self, i: int) -> np.ndarray:
        return self.envs[i].render()

    def close(self) -> None:
        for e in self.envs:
            e.close()


def start_history(hist: dict[str, np.ndarray], keys, i: int, obs, n_envs: int, T: int) -> None:
    """Env i's history after a reset: T copies of its first observation (arrays allocated
    as (n_envs, T, ...) on first use)."""
    for k in keys:
        x = np.asarray(obs[k])
        if k not in hist:
            hist[k] = np.zeros((n_envs, T) + x.shape, x.dtype)
        hist[k][i] = x


def push_history(hist: dict[str, np.ndarray], keys, i: int, obs) -> None:
    """Append env i's newest observation to its (n_envs, T, ...) histories, dropping the oldest."""
    for k in keys:
        h = hist[k][i]
        h[:-1] = h[1:].copy()
        h[-1] = obs[k]


# -- videos -------------------------------------------------------------------------
def _label(frame: np.ndarray, text: str, color: tuple[int, int, int] | None = None) -> np.ndarray:
    from PIL import Image, ImageDraw
    img = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
    draw = ImageDraw.Draw(img)
    if color is not None:
        w, h = img.size
        b = max(2, w // 40)
        draw.rectangle([0, 0, w - 1, h - 1], outline=color, width=b)
    draw.text((4, 3), text, fill=(255, 255, 255) if color is None else color)
    return np.asarray(img)


def _write_video(frames: list[np.ndarray], path: Path, fps: float) -> None:
    import imageio.v2 as imageio
    arr = np.stack(frames)
    h, w = arr.shape[1:3]
    if h % 2 or w % 2:  # libx264 wants even sizes
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    imageio.mimwrite(path, list(arr), fps=fps, codec="libx264", quality=8, macro_block_size=1)


# -- evaluation ---------------------------------------------------------------------
def _wh(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def camera_plan(image_keys: Sequence[str], image_size: Any, camera_size: Any = None
                ) -> tuple[Any, tuple[Sequence[str], tuple[int, int]] | None]:
    """(size the twin's cameras render, ``_EnvList`` resize or None) for a policy that sees
    ``image_size`` (int: square, or (width, height)) from cameras of ``camera_size`` (None:
    the same)."""
    if camera_size is None or image_size is None or _wh(camera_size) == _wh(image_size):
        return (image_size if image_size is not None else camera_size), None
    w, h = _wh(image_size)
    return camera_size, (list(image_keys), (h, w))


def checkpoint_image_sizes(meta: Mapping[str, Any], spec, cameras: Sequence[str]) -> tuple[Any, Any]:
    """(image_size the policy sees, camera_size the cameras give) from a checkpoint's metadata
    (sizes as ints when square, else (width, height)): ``image_size`` (else the spec's first
    camera), and for a policy trained on frames resized with area interpolation
    (``image_resize == "area"``), the recorded size, so that the twin renders what was
    recorded and the frames are resized as in training (and on the robot by the inference
    node)."""
    def norm(v):
        if v is None:
            return None
        if isinstance(v, (int, np.integer)):
            return int(v)
        return int(v[0]) if int(v[0]) == int(v[1]) else (int(v[0]), int(v[1]))
    size = norm(meta.get("image_size"))
    if size is None and cameras:
        c = spec.camera(cameras[0])
        size = (c.width, c.height)
    src = meta.get("image_source_size") or {}
    camera = None
    if meta.get("image_resize") == "area" and cameras and f"image_{cameras[0]}" in src:
        camera = norm(src[f"image_{cameras[0]}"])
    return size, camera


def evaluate(policy, task: str, spec_or_robot, *, episodes: int = 50, seed: int = 100_000, n_envs: int = 8,
             execution: str = "chunk", n_action_steps: int | None = None, action_mode: str = "ee_delta",
             cameras: Sequence[str] | None = None, image_size: int | tuple[int, int] | None = None,
             videos: int = 0, video_dir: str | Path | None = None, render_size: int = 160,
             progress: bool = True, generator_seed: int = 0, max_episode_steps: int | None = None,
             torch_threads: int | None = 1, camera_size: int | tuple[int, int] | None = None,
             randomization: Any = None, calibration: Any = None, sim: str = "mujoco") -> EvalResult:
    """Roll `policy` out for `episodes` episodes of `task` on the twin of `spec_or_robot`
    (a RobotSpec or robot name). `cameras` default to the policy's (``image_front`` ->
    ``front``); the first `videos` episodes are written to `video_dir` as
    ``episode_<seed>_{success|fail}.mp4``.

    `image_size` (int: square, or (width, height)) is what the policy sees. `camera_size`:
    what the twin's cameras render, when that differs (a policy trained on frames resized
    from the recorded size): each frame is then resized to `image_size` with area
    interpolation, as the loader did in training and the inference node does on a robot.
    `randomization`: domain randomization of every twin (robot_rl.sim.randomization: a name,
    a YAML file or a mapping), drawn per episode from its seed. `calibration`: a calibrated
    twin (a calibration folder or a dynamics.yaml, ``RobotEnv(calibration=)``).

    `torch_threads`: torch's intra-op threads while a CPU policy is evaluated (restored
    afterwards; None leaves them alone). One is the default: small batched queries
    interleaved with physics gain nothing from more, and on a busy 2-core machine two
    threads made evaluation 2-5x slower.

    `sim`: ``mujoco`` (the MuJoCo twin, one model per env) or ``isaac`` (the Isaac Lab twin,
    sim/isaac: `n_envs` worlds in one Isaac Lab env; state policies only)."""
    from tqdm import tqdm

    from robot_rl.policies.common.ensemble import TemporalEnsembler
    from robot_rl.sim.env import STATE_KEYS
    from robot_rl.sim.tasks import TASKS
    from robot_rl.spec import resolve_spec

    if execution not in EXECUTIONS:
        raise EvalError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
    if episodes < 1:
        raise EvalError(f"episodes must be >= 1, got {episodes}")
    if n_envs < 1:
        raise EvalError(f"n_envs must be >= 1, got {n_envs}")
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; available: {sorted(TASKS)}")
    videos = max(0, min(int(videos), episodes))
    if videos and video_dir is None:
        raise EvalError("videos > 0 needs a video_dir")
    pc = policy.config
    if cameras is None:
        cameras = [c.removeprefix("image_") for c in pc.cameras]
    cameras = list(cameras)
    unknown_state = [k for k in pc.state_keys if k not in STATE_KEYS]
    if unknown_state:
        raise EvalError(f"policy state keys {unknown_state} are not twin observations {list(STATE_KEYS)}")
    need_cams = [c.removeprefix("image_") for c in pc.cameras]
    missing = [c for c in need_cams if c not in cameras]
    if missing:
        raise EvalError(f"the policy needs cameras {need_cams}; evaluating with {cameras} lacks {missing}")
    render, resize = camera_plan(pc.cameras, image_size, camera_size)
    spec = resolve_spec(spec_or_robot, action_mode, cameras, render)
    adim = spec.action_dim(action_mode)
    if adim != pc.action_dim:
        raise EvalError(f"policy predicts {pc.action_dim}-dim actions but {spec.name!r} in "
                        f"{action_mode!r} mode takes {adim}")

    chunk_len = int(policy.chunk_len)
    n_exec = int(pc.n_action_steps if n_action_steps is None else n_action_steps)
    n_exec = max(1, min(n_exec, chunk_len))
    T = int(pc.n_obs_steps)
    n_envs = min(int(n_envs), episodes)
    keys = list(pc.state_keys) + list(pc.cameras)

    env_kwargs = dict(task=task, robot=spec, action_mode=action_mode, cameras=cameras, randomization=randomization, calibration=calibration,
                      max_episode_steps=max_episode_steps, render_size=render_size)
    dt = 1.0 / float(spec.control_hz)
    fps = float(spec.control_hz)
    vdir = Path(video_dir) if videos else None
    if vdir is not None:
        vdir.mkdir(parents=True, exist_ok=True)
    if sim == "isaac":
        from robot_rl.sim.isaac.env import IsaacEnvList
        pool = IsaacEnvList(n_envs, resize=resize, seed=seed, **env_kwargs)
    elif sim == "mujoco":
        pool = _EnvList(n_envs, resize=resize, **env_kwargs)
    else:
        raise EvalError(f"sim must be mujoco or isaac, got {sim!r}")
    max_steps = pool.envs[0].max_episode_steps

    gen = torch.Generator(device=policy.device)
    gen.manual_seed(int(generator_seed))
    policy.reset()
    ens = TemporalEnsembler(chunk_len, pc.action_dim, batch=n_envs,
                            k=float(getattr(pc, "temporal_ensemble_k", 0.01))) if execution == "ensemble" else None

    hist: dict[str, np.ndarray] = {}
    slot_ep = np.full(n_envs, -1, np.int64)  # episode index running in each slot (-1 idle)
    pos = np.zeros(n_envs, np.int64)  # next chunk row to execute (chunk mode)
    chunks = np.zeros((n_envs, chunk_len, pc.action_dim), np.float32)
    successes = [False] * episodes
    returns = [0.0] * episodes
    lengths = [0] * episodes
    frames: dict[int, list[np.ndarray]] = {}
    video_paths: list[str] = []
    queries = n_chunks = 0
    next_ep = 0
    done = n_succ = 0

    def start(i: int) -> None:
        nonlocal next_ep
        ep = next_ep
        next_ep += 1
        slot_ep[i] = ep
        obs = pool.reset(i, seed + ep)
        start_history(hist, keys, i, obs, n_envs, T)
        pos[i] = n_exec  # query on the first step
        if ens is not None:
            m = np.zeros(n_envs, bool)
            m[i] = True
            ens.reset(m)
        if ep < videos:
            frames[ep] = [pool.render(i)]

    def finish(i: int, success: bool) -> None:
        nonlocal done, n_succ
        ep = int(slot_ep[i])
        successes[ep] = bool(success)
        done += 1
        n_succ += int(success)
        slot_ep[i] = -1
        if ep in frames:
            raw = frames.pop(ep)
            color = (40, 220, 60) if success else (230, 40, 40)
            tag = "SUCCESS" if success else "FAIL"
            fr = [_label(f, f"seed {seed + ep}  t={t * dt:.2f}s") for t, f in enumerate(raw[:-1])]
            last = _label(raw[-1], f"seed {seed + ep}  t={(len(raw) - 1) * dt:.2f}s\n{tag}", color)
            fr += [last] * (1 + max(1, int(fps // 2)))  # hold the outcome for half a second
            path = vdir / f"episode_{seed + ep}_{'success' if success else 'fail'}.mp4"
            _write_video(fr, path, fps)
            video_paths.append(str(path))

    was_training = policy.training
    policy.eval()  # eval-time behaviour (centre crops, no dropout), restored afterwards
    threads = torch.get_num_threads()
    if torch_threads is not None and policy.device.type == "cpu":
        torch.set_num_threads(max(1, int(torch_threads)))
    t0 = time.perf_counter()
    bar = tqdm(total=episodes, desc=f"eval {spec.name}/{task}", unit="ep", disable=not progress)
    try:
        for i in range(n_envs):
            start(i)
        while (slot_ep >= 0).any():
            active = slot_ep >= 0
            need = active if ens is not None else active & (pos >= n_exec)
            idx = np.flatnonzero(need)
            if len(idx):
                out = policy.predict_chunks({k: hist[k][idx] for k in keys}, gen)
                out = np.asarray(out, np.float32)
                if out.shape != (len(idx), chunk_len, pc.action_dim):
                    raise ValueError(f"predict_chunks returned shape {out.shape}, expected "
                                     f"{(len(idx), chunk_len, pc.action_dim)}")
                chunks[idx] = out
                pos[idx] = 0
                queries += 1
                n_chunks += len(idx)
            if ens is not None:
                actions = ens.update(chunks).astype(np.float32)
            else:
                actions = chunks[np.arange(n_envs), np.minimum(pos, chunk_len - 1)]
                pos += 1
            results = pool.step(actions, active)
            for i, (obs, reward, terminated, truncated, info) in results.items():
                ep = int(slot_ep[i])
                returns[ep] += float(reward)
                lengths[ep] += 1
                if ep in frames:
                    frames[ep].append(pool.render(i))
                if terminated or truncated:
                    finish(i, bool(info.get("success", terminated)))
                    bar.update(1)
                    bar.set_postfix(success=f"{n_succ}/{done} ({n_succ / done:.0%})")
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

    times = [n * dt for n in lengths]
    rate = n_succ / episodes
    return EvalResult(
        task=task, robot=spec.name, episodes=episodes, seeds=[seed + i for i in range(episodes)],
        successes=successes, returns=returns, lengths=lengths, episode_time_s=times,
        success_rate=rate, ci95=wilson_interval(n_succ, episodes), mean_episode_time_s=float(np.mean(times)),
        wall_s=wall, policy_queries=queries, chunks_predicted=n_chunks, execution=execution,
        n_action_steps=n_exec if execution == "chunk" else 1, chunk_len=chunk_len, n_envs=n_envs,
        action_mode=action_mode, control_hz=float(spec.control_hz), max_episode_steps=int(max_steps),
        generator_seed=int(generator_seed), videos=sorted(video_paths))


# -- report -------------------------------------------------------------------------
def write_report(result: EvalResult, out_dir: str | Path, title: str | None = None) -> list[Path]:
    """``eval.json`` (the result) and ``eval.png`` (a summary figure) in `out_dir`."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "eval.json"
    jpath.write_text(json.dumps(result.to_dict(), indent=2))

    r = result
    lo, hi = r.ci95
    succ = np.asarray(r.successes, bool)
    times = np.asarray(r.episode_time_s, float)
    green, red = "#2ca02c", "#d62728"
    fig = Figure(figsize=(11, 6.5), dpi=100)
    fig.suptitle(title or f"{r.robot} / {r.task}: {r.summary_line()}", fontsize=12)
    gs = fig.add_gridspec(2, 3, height_ratios=[1, 0.35], width_ratios=[0.6, 1.4, 1.2], hspace=0.45, wspace=0.35)

    ax = fig.add_subplot(gs[0, 0])
    ax.bar([0], [100 * r.success_rate], width=0.6, color=green, alpha=0.8)
    ax.errorbar([0], [100 * r.success_rate], yerr=[[100 * (r.success_rate - lo)], [100 * (hi - r.success_rate)]],
                color="black", capsize=8, lw=1.5)
    ax.set_xlim(-0.7, 0.7)
    ax.set_ylim(0, 105)
    ax.set_xticks([0], ["success"])
    ax.set_ylabel("%")
    ax.set_title("success rate, 95% CI", fontsize=10)

    ax = fig.add_subplot(gs[0, 1])
    bins = np.linspace(0, max(r.max_episode_steps / r.control_hz, times.max() if len(times) else 1.0), 21)
    ax.hist([times[succ], times[~succ]], bins=bins, stacked=True, color=[green, red],
            label=[f"success ({succ.sum()})", f"failure ({(~succ).sum()})"])
    ax.set_xlabel("episode time (s, simulated)")
    ax.set_ylabel("episodes")
    ax.legend(fontsize=8)
    ax.set_title("time to success / timeout", fontsize=10)

    ax = fig.add_subplot(gs[0, 2])
    ax.axis("off")
    st = r.mean_success_time_s
    lines = [
        f"task            {r.task}",
        f"robot           {r.robot} ({r.action_mode}, {r.control_hz:g} Hz)",
        f"episodes        {r.episodes} (seeds {r.seeds[0]}..{r.seeds[-1]})",
        f"successes       {r.n_successes}",
        f"success rate    {100 * r.success_rate:.1f}%",
        f"95% CI          [{100 * lo:.1f}, {100 * hi:.1f}]%",
        f"mean episode    {r.mean_episode_time_s:.2f} s",
        f"mean success    {'-' if st is None else f'{st:.2f} s'}",
        f"mean return     {np.mean(r.returns):.2f}",
        f"execution       {r.execution}" + (f" ({r.n_action_steps}/{r.chunk_len} steps)"
                                            if r.execution == "chunk" else f" (chunk {r.chunk_len})"),
        f"policy queries  {r.policy_queries} ({r.chunks_predicted} chunks)",
        f"envs            {r.n_envs}",
        f"wall time       {r.wall_s:.1f} s ({r.episodes / max(r.wall_s, 1e-9):.2f} ep/s)",
    ]
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8.5,
            transform=ax.transAxes)

    ax = fig.add_subplot(gs[1, :])
    strip = np.where(succ, 1.0, 0.0)[None, :]
    from matplotlib.colors import ListedColormap
    ax.imshow(strip, aspect="auto", cmap=ListedColormap([red, green]), vmin=0, vmax=1,
              extent=(-0.5, len(succ) - 0.5, 0, 1), interpolation="nearest")
    ax.set_yticks([])
    ax.set_xlabel(f"episode (seed - {r.seeds[0]})")
    ax.set_title("per-episode outcome (green success, red failure)", fontsize=10)

    ppath = out / "eval.png"
    fig.savefig(ppath)
    return [jpath, ppath]
