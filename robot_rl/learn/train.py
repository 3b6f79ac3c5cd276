"""Imitation training: ``robot-rl train policy=diffusion|act|mlp_bc dataset=PATH``.

Readable top to bottom:

1. open the episode store, pick the task's episodes (optionally the first N), and load
   the windows the policy needs into memory (``SequenceSampler``) -- except camera frames
   stored at another size than the policy's ``image_size`` or JPEG-coded: those are read,
   decoded and resized (area interpolation) per batch by the loader threads. The size the
   policy sees is set explicitly (``image_size``) or is the stored one, which must then
   match the robot spec's cameras; the checkpoint metadata records ``image_size``, the
   stored ``image_source_size`` and the ``image_resize`` used;
2. build the policy (state dims and action dim from the store, normaliser fitted on the
   training episodes) from the hydra config ``conf/policy/<name>.yaml``;
3. train with AdamW, linear warm-up then cosine decay, and an EMA copy of the weights
   (Diffusion Policy's power-law warm-up of the EMA decay). The schedule follows
   whichever budget binds first: ``steps`` or ``max_minutes`` of wall time. Batches come
   from background loader threads (in a seed-fixed order) so the step never waits on indexing or decoding; the share of step time
   spent waiting for data is measured and logged. Mixed precision (bf16, or fp16 with a
   grad scaler) on CUDA;
4. every ``eval_every`` steps, evaluate the EMA policy in the twin on held-out seeds
   (success rate with a 95% interval, return, videos) and keep the best checkpoint;
5. log to ``log.csv`` and TensorBoard (``tb/``), save checkpoints (safetensors + JSON,
   no pickle) and a resumable training state, and draw ``training.png``.
6. with several processes (``nproc=N``, or torchrun; ``robot_rl.learn.distributed``) each
   rank trains on its ``batch_size / N`` slice of the same seeded global batches and
   DistributedDataParallel averages the gradients, so a step is the step of one process
   with the whole batch (the same batches, for the same seed); rank 0 alone keeps the EMA,
   logs, evaluates and saves. One process sets up nothing of this.

Output folder::

    OUT/config.yaml              the resolved configuration
    OUT/log.csv, OUT/tb/         training and evaluation logs
    OUT/checkpoints/last/        EMA weights at the end (what ``robot-rl eval`` takes)
    OUT/checkpoints/best/        EMA weights with the best periodic evaluation
    OUT/train_state/             weights, EMA, optimiser, step, RNG: ``resume=true`` continues here
    OUT/eval/step_<N>/           periodic evaluation reports and videos
    OUT/training.png             loss and success rate vs steps and wall time
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robot_rl.data.sampler import SequenceSampler
from robot_rl.learn import distributed
from robot_rl.data.store import EpisodeStore
from robot_rl.policies import base as policy_base
from robot_rl.policies.base import POLICIES, Policy, import_policies, save_checkpoint
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.spec import RobotSpec

# policy yaml keys that are training settings, not policy config fields
TRAIN_KEYS = ("name", "optim", "execution", "observations", "image_size")


class TrainError(ValueError):
    """A training setting or dataset that cannot work (printed as one line by the CLI)."""


# -- data ------------------------------------------------------------------------------------
def select_episodes(store: EpisodeStore, task: str | None, max_episodes: int | None,
                    successful_only: bool = True) -> tuple[np.ndarray, str]:
    """Indices of the episodes to train on, and the task they show."""
    meta = store.episodes_meta()
    if not meta:
        raise TrainError(f"{store.path} holds no episodes")
    tasks = sorted({m["task"] for m in meta})
    if task is None:
        if len(tasks) > 1:
            raise TrainError(f"{store.path} holds several tasks {tasks}; choose one with task=...")
        task = tasks[0]
    sel = [m["index"] for m in meta if m["task"] == task and (m["success"] or not successful_only)]
    if not sel:
        raise TrainError(f"{store.path} has no {'successful ' if successful_only else ''}episodes of task "
                         f"{task!r}; it has {tasks}")
    if max_episodes:
        if len(sel) < max_episodes:
            raise TrainError(f"asked for {max_episodes} episodes of {task!r}, {store.path} has {len(sel)}")
        sel = sel[: int(max_episodes)]
    return np.asarray(sel, np.int64), task


def policy_keys(pcfg: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(state keys, ``image_<camera>`` keys) of a policy config: its observation set, or its
    own lists (robot_rl.observations.resolve)."""
    from robot_rl.observations import resolve
    try:
        state, cams, _ = resolve(pcfg)
    except ValueError as e:
        raise TrainError(str(e)) from None
    return state, cams


def default_loader_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Prefetcher:
    """Random batches from a sampler, assembled into tensors by ``loader_threads`` background
    threads; ``wait_s`` accumulates the time the training loop spent blocked on ``next()``.

    The batch *order* is fixed by ``seed`` alone: batch ``b``'s windows are drawn in
    sequence (a permutation per pass) whatever thread assembles it, and ``next()`` hands the
    batches out in order ``0, 1, 2 ...`` -- the same batches for any ``loader_threads``.
    Threads pay off when the sampler decodes and resizes images per batch
    (``sampler.lazy_images``): numpy gathers, libjpeg and cv2 release the GIL. ``None``
    (default): ``min(4, cores)`` threads for such a sampler, one otherwise. At most
    ``max(depth, loader_threads)`` batches are assembled ahead of the loop.

    ``shard=(rank, n)``: one of ``n`` training processes. Each draws the same sequence of
    ``batch_size``-window (global) batches from the same ``seed`` and keeps its own ``1/n``
    slice, so the processes together train on exactly the batches one process would, each
    window once per pass, and no window twice in a step."""

    def __init__(self, sampler: SequenceSampler, batch_size: int, seed: int, device: torch.device, depth: int = 4,
                 loader_threads: int | None = None, shard: tuple[int, int] = (0, 1)):
        self.sampler, self.batch_size, self.device = sampler, int(batch_size), device
        self.rank, self.world = int(shard[0]), int(shard[1])
        if self.batch_size % self.world:
            raise TrainError(f"a batch of {self.batch_size} does not split over {self.world} processes")
        if loader_threads is None:
            loader_threads = default_loader_threads() if getattr(sampler, "lazy_images", None) else 1
        if int(loader_threads) < 1:
            raise TrainError(f"loader_threads must be >= 1, got {loader_threads}")
        self.loader_threads = int(loader_threads)
        self.depth = max(int(depth), self.loader_threads)
        self.rng = np.random.default_rng(seed)
        self.wait_s = 0.0
        self._n = len(sampler)
        if self._n == 0:
            raise TrainError("the sampler holds no training windows (episodes too short for the horizon?)")
        self._perm, self._pos = self.rng.permutation(self._n), 0
        self._cv = threading.Condition()
        self._issued = 0  # batches whose indices were drawn
        self._taken = 0  # batches handed to the loop
        self._ready: dict[int, dict[str, torch.Tensor]] = {}
        self._stop = threading.Event()
        self._err: BaseException | None = None
        self._threads = [threading.Thread(target=self._run, name=f"prefetch-{i}", daemon=True)
                         for i in range(self.loader_threads)]
        for t in self._threads:
            t.start()

    def _draw(self) -> np.ndarray:
        """The next batch's window indices (caller holds the lock)."""
        n, bs = self._n, self.batch_size
        if self._pos + bs > n:
            self._perm, self._pos = self.rng.permutation(n), 0
        idx = self._perm[self._pos: self._pos + bs] if bs <= n else self.rng.integers(0, n, bs)
        self._pos += bs
        part = bs // self.world  # this process's slice of the global batch
        return idx[self.rank * part: (self.rank + 1) * part]

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._stop.is_set() and self._issued - self._taken >= self.depth:
                        self._cv.wait(0.1)
                    if self._stop.is_set():
                        return
                    b, idx = self._issued, self._draw()
                    self._issued += 1
                batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.sampler.get_batch(idx).items()}
                if self.device.type == "cuda":
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                with self._cv:
                    self._ready[b] = batch
                    self._cv.notify_all()
        except BaseException as e:  # surfaced in next()
            with self._cv:
                self._err = e
                self._cv.notify_all()

    def next(self) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        with self._cv:
            while self._taken not in self._ready:
                if self._err is not None:
                    raise self._err
                if not any(t.is_alive() for t in self._threads):
                    raise TrainError("the batch loader threads stopped")
                self._cv.wait(0.5)
            batch = self._ready.pop(self._taken)
            self._taken += 1
            self._cv.notify_all()
        self.wait_s += time.perf_counter() - t0
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def close(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=5)


# -- model pieces ----------------------------------------------------------------------------
class EMA:
    """Exponential moving average of the weights, with the decay warmed up as
    ``1 - (1 + step / inv_gamma) ** -power`` (capped at ``max_decay``), so early averages
    do not drag in the random initialisation."""

    def __init__(self, model: torch.nn.Module, power: float = 0.75, inv_gamma: float = 1.0,
                 max_decay: float = 0.9999, min_decay: float = 0.0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma, self.max_decay, self.min_decay = power, inv_gamma, max_decay, min_decay
        self.updates = 0

    def decay(self) -> float:
        d = 1 - (1 + self.updates / self.inv_gamma) ** -self.power
        return float(min(self.max_decay, max(self.min_decay, d)))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.decay()
        ema_p = [p for p in self.model.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src_p, 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.updates += 1


def lr_factor(progress: float, warmup_frac: float) -> float:
    """Linear warm-up over the first ``warmup_frac`` of training, then cosine to zero."""
    if progress < warmup_frac:
        return max(progress / max(warmup_frac, 1e-9), 1e-3)
    p = (progress - warmup_frac) / max(1 - warmup_frac, 1e-9)
    return 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def check_keys(store: EpisodeStore, keys: list[str], policy_name: str) -> None:
    missing = [k for k in keys if k not in store.schema]
    if missing:
        raise TrainError(f"{store.path} lacks {missing} (the {policy_name} config asks for them); "
                         f"it has {sorted(store.schema)}")


def build_policy(pcfg: Mapping[str, Any], sampler: SequenceSampler, store: EpisodeStore) -> Policy:
    import_policies()
    name = pcfg.get("name")
    if name not in POLICIES:
        raise TrainError(f"unknown policy {name!r}; available: {sorted(POLICIES)}")
    cls = POLICIES[name]
    state_keys, cams = policy_keys(pcfg)
    fields = {k: v for k, v in pcfg.items() if k not in TRAIN_KEYS}
    fields["state_keys"], fields["cameras"] = state_keys, cams
    schema = store.schema
    check_keys(store, state_keys + cams + [fields.get("action_key", "action")], name)
    fields["state_dims"] = {k: int(np.prod(schema[k].shape) or 1) for k in state_keys}
    fields["action_dim"] = int(schema[fields.get("action_key", "action")].shape[0])
    try:
        config = cls.config_class.from_dict(fields)
    except policy_base.CheckpointError as e:
        raise TrainError(f"policy '{name}': {e}") from None
    arrays = sampler.arrays
    norm = Normalizer.fit({k: np.asarray(arrays[k]).reshape(len(arrays[k]), -1)
                           for k in state_keys + [config.action_key]}, "minmax")
    return cls(config, norm)


# -- saving / resuming -------------------------------------------------------------------------
def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict:
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta["scalars"].items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(path: Path, policy: Policy, ema: EMA | None, opt: torch.optim.Optimizer, step: int,
                     elapsed: float, rng_seed: int, cfg_dict: dict) -> None:
    from safetensors.torch import save_file
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.model.state_dict().items()})
    opt_t, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    state = {"step": step, "elapsed_s": elapsed, "ema_updates": ema.updates if ema else 0, "optimizer": opt_meta,
             "rng_seed": rng_seed, "policy_config": asdict(policy.config), "train_config": cfg_dict}
    save_file(tensors, str(path / "state.safetensors.tmp"))
    (path / "state.json.tmp").write_text(json.dumps(state, indent=1, default=str))
    os.replace(path / "state.safetensors.tmp", path / "state.safetensors")
    os.replace(path / "state.json.tmp", path / "state.json")


def load_train_state(path: Path, policy: Policy, ema: EMA | None, opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file
    meta = json.loads((path / "state.json").read_text())
    if meta["policy_config"] != json.loads(json.dumps(asdict(policy.config), default=str)):
        raise TrainError(f"cannot resume from {path}: it was trained with another policy config; "
                         "use a new out= or the same settings")
    t = load_file(str(path / "state.safetensors"))
    policy.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    if ema is not None:
        ema_sd = {k[4:]: v for k, v in t.items() if k.startswith("ema.")}
        ema.model.load_state_dict(ema_sd or policy.state_dict())  # saved with ema=false: start from the weights
        ema.updates = int(meta["ema_updates"])
    opt.load_state_dict(_unflatten_optimizer(t, meta["optimizer"]))
    torch.set_rng_state(t["rng.torch"])
    return meta


# -- logging ---------------------------------------------------------------------------------
class Logger:
    """One CSV row per logged step (columns fixed at first write) + TensorBoard scalars."""

    COLUMNS = ["step", "elapsed_s", "train_s", "loss", "loss_l1", "loss_kl", "lr", "samples_per_s", "data_wait_share", "ema_decay",
               "eval_success", "eval_ci_lo", "eval_ci_hi", "eval_return", "eval_episode_s"]

    def __init__(self, out: Path, tensorboard: bool = True):
        self.path = out / "log.csv"
        new = not self.path.exists()
        self.f = open(self.path, "a", newline="")
        self.w = csv.DictWriter(self.f, self.COLUMNS, extrasaction="ignore")
        if new:
            self.w.writeheader()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:  # tensorboard not installed: CSV only
                self.tb = None

    def log(self, row: Mapping[str, Any]) -> None:
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.f.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v == v:
                    self.tb.add_scalar(("eval/" if k.startswith("eval_") else "train/") + k, v, row["step"])

    def close(self) -> None:
        self.f.close()
        if self.tb is not None:
            self.tb.close()


def plot_training(out: Path) -> Path | None:
    """training.png: loss and evaluation success vs step and wall time, from log.csv."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(out / "log.csv")))
    if not rows:
        return None

    def col(name):
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows])
    step, t, loss, succ = col("step"), col("train_s") / 60, col("loss"), col("eval_success")
    lo, hi = col("eval_ci_lo"), col("eval_ci_hi")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    m = ~np.isnan(loss)
    axes[0].plot(step[m], loss[m], lw=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].grid(alpha=0.3)
    e = ~np.isnan(succ)
    if e.any():
        axes[1].errorbar(t[e], 100 * succ[e], yerr=[100 * (succ[e] - lo[e]), 100 * (hi[e] - succ[e])],
                         marker="o", capsize=3)
        for x, y, s in zip(t[e], 100 * succ[e], step[e]):
            axes[1].annotate(f"{int(s)}", (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center")
    axes[1].set_ylim(-2, 102)
    axes[1].set_xlabel("training time (min, evaluations excluded)")
    axes[1].set_ylabel("eval success % (95% CI; labels: step)")
    axes[1].grid(alpha=0.3)
    fig.suptitle(out.name)
    fig.tight_layout()
    p = out / "training.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


# -- the loop ---------------------------------------------------------------------------------
def run_eval(policy: Policy, cfg: DictConfig, spec: RobotSpec, task: str, step: int, out: Path,
             execution: str, image_size: int | tuple[int, int] | None = None,
             camera_size: int | tuple[int, int] | None = None) -> Any:
    """`camera_size`: what the twin's cameras render when the policy sees `image_size`
    frames resized from the recorded size (see ``checkpoint_image_sizes``)."""
    from robot_rl.cli.record import randomization_arg
    from robot_rl.learn.evaluate import evaluate, write_report
    d = out / "eval" / f"step_{step:07d}"
    res = evaluate(policy, task, spec, episodes=int(cfg.eval_episodes), seed=int(cfg.eval_seed),
                   n_envs=int(cfg.eval_n_envs), execution=execution, videos=int(cfg.eval_videos),
                   video_dir=d, progress=False, camera_size=camera_size, randomization=randomization_arg(cfg),
                   calibration=cfg.get("calibration"),
                   image_size=image_size if image_size is not None else _image_size(spec, policy))
    write_report(res, d, title=f"{policy.type_name} {task} step {step}")
    return res


def _image_size(spec: RobotSpec, policy: Policy) -> int | tuple[int, int] | None:
    """The spec's size of the policy's first camera: an int when square, else (width, height)."""
    cams = {c.name: c for c in spec.cameras}
    for k in policy.config.cameras:
        c = cams.get(k.removeprefix("image_"))
        if c is not None:
            return int(c.width) if c.width == c.height else (int(c.width), int(c.height))
    return None


def _wh_text(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def parse_image_size(value: Any) -> tuple[int, int] | None:
    """``image_size`` setting (an int: square, or ``[width, height]`` as ``robot-rl eval``
    takes it) -> (height, width)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        v = list(value)
        if len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
            return int(v[1]), int(v[0])
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return int(value), int(value)
    raise TrainError(f"image_size must be a positive int (square) or [width, height], got {value!r}")


def resolve_image_size(store: EpisodeStore, cams: list[str], value: Any) -> tuple[tuple[int, int] | None,
                                                                                  dict[str, tuple[int, int]]]:
    """(size the policy sees as (h, w), or None for the stored size; stored (h, w) per camera key).

    Resizing happens only when ``image_size`` asks for it. Without it, the stored frames
    must all have one size and match the robot spec's cameras (the size evaluation renders
    and deployment delivers): anything else is a TrainError naming both sizes."""
    source = {c: (int(store.schema[c].shape[0]), int(store.schema[c].shape[1])) for c in cams}
    want = parse_image_size(value)
    if not cams or want is not None:
        return want, source
    sizes = sorted(set(source.values()))
    if len(sizes) > 1:
        listed = ", ".join(f"{c} {_wh_text(hw)}" for c, hw in source.items())
        raise TrainError(f"{store.path} stores the policy's cameras at different sizes ({listed}); set "
                         f"image_size=W or image_size=[W,H] to train the policy at one size (resized with area "
                         f"interpolation while training)")
    spec_cams = {c.name: c for c in store.spec.cameras}
    for c, hw in source.items():
        sc = spec_cams.get(c.removeprefix("image_"))
        if sc is not None and (int(sc.height), int(sc.width)) != hw:
            raise TrainError(f"{store.path} stores {c} at {_wh_text(hw)} but its robot spec's camera {sc.name!r} is "
                             f"{sc.width}x{sc.height} (the size evaluation renders and the robot delivers); set "
                             f"image_size={sc.width if sc.width == sc.height else [sc.width, sc.height]} to train at "
                             f"the spec's size, or image_size=[{hw[1]},{hw[0]}] to keep the stored size")
    return None, source


def global_batch_size(cfg: DictConfig) -> int:
    """The batch of one optimiser step (over all processes): ``batch_size``, else the policy's."""
    optim = (cfg.policy.get("optim") if cfg.get("policy") is not None else None) or {}
    return int(cfg.batch_size or optim.get("batch_size", 256))


def train(cfg: DictConfig) -> dict:
    """Run one training job; returns a summary dict (also written to OUT/summary.json).

    ``nproc=N`` (N > 1) outside torchrun starts N local processes that each run this
    function (robot_rl.learn.distributed.launch) and returns rank 0's summary; inside them,
    or under torchrun, this process trains as one rank of a DistributedDataParallel run.
    With one process nothing about DDP is set up."""
    nproc = distributed.requested_nproc(cfg)
    if nproc > 1 and not distributed.launched():
        return distributed.launch(cfg, nproc)
    dist = distributed.Dist.from_env()
    try:
        return _train(cfg, dist)
    finally:
        dist.stop()


def _train(cfg: DictConfig, dist: distributed.Dist) -> dict:
    """One process's training: the whole job, or rank ``dist.rank`` of a DDP run (rank 0 logs,
    evaluates and saves; the others train and leave after the last step)."""
    from tqdm import tqdm
    torch.manual_seed(int(cfg.seed))
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    elif dist.enabled:  # the cores are shared among this machine's ranks
        torch.set_num_threads(dist.threads())
    device = dist.pick_device(cfg.device)
    if dist.enabled:
        dist.start(device, float(cfg.get("ddp_timeout_min") or 60))
    pcfg = OmegaConf.to_container(cfg.policy, resolve=True)
    store = EpisodeStore.open(cfg.dataset)
    try:
        episodes, task = select_episodes(store, cfg.task, cfg.max_episodes)
        spec = store.spec
        state_keys, cams = policy_keys(pcfg)
        check_keys(store, state_keys + cams + [pcfg.get("action_key", "action")], pcfg.get("name"))
        n_obs, horizon = int(pcfg.get("n_obs_steps", 2)), int(pcfg.get("horizon", 16))
        mask = np.zeros(store.n_episodes, bool)
        mask[episodes] = True
        # the run's image_size, else the policy preset's (policy=diffusion_image: 64)
        want_hw, source_hw = resolve_image_size(store, cams, cfg.get("image_size") if cfg.get("image_size") is not None
                                                else pcfg.get("image_size"))
        sampler = SequenceSampler(store, obs_keys=state_keys + cams, action_key=pcfg.get("action_key", "action"),
                                  n_obs_steps=n_obs, horizon=horizon, episode_mask=mask, image_size=want_hw,
                                  preload_images_mb=float(cfg.get("preload_images_mb", 4096) or 0))
        policy = build_policy(pcfg, sampler, store).to(device)
        action_mode = store.episode_meta(int(episodes[0]))["extra"].get("action_mode", "ee_delta")
    except BaseException:
        store.close()
        raise
    if not sampler.lazy_images:  # everything is in memory
        store.close()
    # the size the policy sees (int when square, else [width, height], as robot-rl eval takes it)
    policy_hw = want_hw or (next(iter(source_hw.values())) if source_hw else None)
    policy_image_size = None if policy_hw is None else \
        (policy_hw[0] if policy_hw[0] == policy_hw[1] else [policy_hw[1], policy_hw[0]])
    out = Path(cfg.out)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    optim = pcfg.get("optim") or {}
    lr = float(optim.get("lr", 1e-4))
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=float(optim.get("weight_decay", 1e-6)),
                            betas=tuple(optim.get("betas", (0.95, 0.999))))
    ema = EMA(policy, power=float(cfg.ema_power)) if cfg.ema and dist.is_main else None
    execution = cfg.eval_execution or pcfg.get("execution", "chunk")
    metadata = {"task": task, "action_mode": action_mode, "dataset": str(Path(cfg.dataset).resolve()),
                "episodes": int(len(episodes)), "execution": execution,
                "image_size": policy_image_size,
                # stored camera sizes ([width, height] per key) and how they became image_size
                "image_source_size": {c: [hw[1], hw[0]] for c, hw in source_hw.items()},
                "image_resize": "area" if any(hw != policy_hw for hw in source_hw.values()) else None}

    step, elapsed0 = 0, 0.0
    state_dir = out / "train_state"
    resume = bool(cfg.resume and (state_dir / "state.json").exists())
    if not dist.same_everywhere(resume):  # several nodes: every rank reads the same file
        raise TrainError(f"resume=true: {state_dir} is not visible to every training process; put out= on a "
                         "filesystem all nodes share")
    if resume:  # every rank loads the same state (rank 0 has the EMA)
        meta = load_train_state(state_dir, policy, ema, opt)
        was = (meta.get("train_config") or {}).get("image_size")
        if was != cfg_dict.get("image_size"):
            raise TrainError(f"cannot resume from {state_dir}: it was trained with image_size={was}, not "
                             f"{cfg_dict.get('image_size')}; use a new out= or the same settings")
        step, elapsed0 = int(meta["step"]), float(meta["elapsed_s"])
        if dist.is_main:
            print(f"resumed from {state_dir} at step {step} ({elapsed0 / 60:.1f} min trained)")
    total_steps = int(cfg.steps) if cfg.steps else None
    budget_s = float(cfg.max_minutes) * 60 if cfg.max_minutes else None
    if total_steps is None and budget_s is None:
        raise TrainError("set steps=N or max_minutes=M (or both)")
    warmup = float(cfg.warmup_frac)

    logger = Logger(out, tensorboard=bool(cfg.tensorboard)) if dist.is_main else None
    amp_dtype = None
    scaler = None
    if device.type == "cuda" and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    batch_size = global_batch_size(cfg)  # of one optimiser step, over all ranks
    rank_batch = distributed.batch_per_rank(batch_size, dist.world_size)
    # the batch order follows the seed (a resumed run starts a new one: seed + step); under
    # DDP every rank draws the same global batches and trains on its own slice of each
    loader_threads = cfg.get("loader_threads")
    if loader_threads is None and dist.enabled and sampler.lazy_images:  # the cores are shared among the ranks
        loader_threads = min(4, dist.threads())
    pre = Prefetcher(sampler, batch_size, int(cfg.seed) + step, device,
                     loader_threads=None if loader_threads is None else int(loader_threads),
                     shard=(dist.rank, dist.world_size))
    loss_of = dist.wrap(policy)  # policy.loss; under DDP through DistributedDataParallel
    if dist.enabled:  # and its own noise / augmentation stream (the weights are the same everywhere)
        torch.manual_seed(int(cfg.seed) + step + dist.rank)
    n_params = sum(p.numel() for p in policy.parameters())
    ddp_text = (f"{dist.world_size} processes (DDP, {dist.backend}, {torch.get_num_threads()} threads each), batch "
                f"{batch_size} = {dist.world_size} x {rank_batch}, " if dist.enabled else "")
    if dist.is_main:
        print(f"train {policy.type_name} on {task}: {len(episodes)} episodes, {len(sampler)} windows, "
              f"{n_params / 1e6:.2f}M parameters, device {device}, {ddp_text}"
              + (f"images {', '.join(f'{c} {_wh_text(source_hw[c])}' for c in sampler.lazy_images)} decoded and resized "
                 f"to {_wh_text(policy_hw)} by {pre.loader_threads} loader threads, " if sampler.lazy_images else "")
              + (f"images {', '.join(sampler.preloaded_images)} decoded and resized to {_wh_text(policy_hw)} once, "
                 f"held in memory, " if sampler.preloaded_images else "") +
              f"budget {total_steps or '-'} steps / {cfg.max_minutes or '-'} min")
    bar = tqdm(total=total_steps, initial=step, desc=f"train {policy.type_name}", unit="step",
               disable=not cfg.progress or not dist.is_main, dynamic_ncols=True)
    best = -1.0
    t_start = time.perf_counter() - elapsed0
    eval_s = 0.0
    last_log_t, last_log_step, wait_at_log = time.perf_counter(), step, 0.0
    losses: list[float] = []  # per step, of the global batch
    samples = 0  # windows this rank trained on in this run
    term_sums: dict[str, float] = {}  # per-term loss sums since the last log row (ACT: l1, kl)
    evals: list[dict] = []
    first_step_timed = step
    train_s0 = None
    policy.train()

    next_eval_min = float(cfg.eval_every_min or 0)

    def train_time() -> float:
        """Seconds spent training so far (evaluations excluded)."""
        return time.perf_counter() - t_start - eval_s

    def progress() -> float:
        p = 0.0
        if total_steps:
            p = step / total_steps
        if budget_s:  # training time only: periodic evaluations do not eat the budget
            p = max(p, train_time() / budget_s)
            p = dist.first(p)  # DDP: every rank follows rank 0's clock (same LR, same last step)
        return p

    def log_train_row() -> None:
        """One CSV/TensorBoard row averaging the steps since the previous row."""
        nonlocal last_log_t, last_log_step, wait_at_log
        now = time.perf_counter()
        dt, n = now - last_log_t, step - last_log_step
        row = {"step": step, "elapsed_s": now - t_start, "train_s": train_time(),
               "loss": float(np.mean(losses[-n:])), "lr": opt.param_groups[0]["lr"],
               "samples_per_s": n * batch_size / max(dt, 1e-9),
               "data_wait_share": (pre.wait_s - wait_at_log) / max(dt, 1e-9),
               "ema_decay": ema.decay() if ema else float("nan")}
        row.update({f"loss_{k}": v / n for k, v in term_sums.items()})
        term_sums.clear()
        logger.log(row)
        last_log_t, last_log_step, wait_at_log = now, step, pre.wait_s
        post = {"loss": f"{row['loss']:.4f}", "lr": f"{row['lr']:.1e}"}
        if budget_s:
            post["min"] = f"{train_time() / 60:.1f}/{budget_s / 60:.0f}"
        bar.set_postfix(post)

    def do_eval() -> None:
        nonlocal best, eval_s
        t0 = time.perf_counter()
        model = ema.model if ema else policy
        model.eval()
        from robot_rl.learn.evaluate import checkpoint_image_sizes
        image_size, camera_size = checkpoint_image_sizes(metadata, spec, [c.removeprefix("image_") for c in cams])
        res = run_eval(model, cfg, spec, task, step, out, execution, image_size=image_size, camera_size=camera_size)
        policy.train()
        eval_s += time.perf_counter() - t0
        row = {"step": step, "elapsed_s": time.perf_counter() - t_start, "train_s": train_time(),
               "eval_success": res.success_rate,
               "eval_ci_lo": res.ci95[0], "eval_ci_hi": res.ci95[1],
               "eval_return": float(np.mean(res.returns)), "eval_episode_s": res.mean_episode_time_s}
        logger.log(row)
        evals.append(row)
        bar.write(f"eval step {step}: {res.summary_line()}")
        if res.success_rate > best:
            best = res.success_rate
            save_checkpoint(model, out / "checkpoints" / "best", spec, {**metadata, "step": step,
                                                                         "eval_success": res.success_rate})

    try:
        while progress() < 1.0:
            batch = pre.next()
            if train_s0 is None:
                train_s0, pre.wait_s, first_step_timed = time.perf_counter(), 0.0, step
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(progress(), warmup)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_of(batch)
            if not torch.isfinite(loss):
                raise TrainError(f"the loss became {loss.item()} at step {step}; lower the learning rate "
                                 f"(policy.optim.lr={lr})")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), float(cfg.grad_clip))
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if ema:
                ema.update(policy)
            step += 1
            samples += len(next(iter(batch.values())))
            loss_value, terms = dist.average(loss.item(), getattr(policy, "last_loss_terms", None) or {})
            losses.append(loss_value)
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + float(v)
            bar.update(1)
            if step % int(cfg.log_every) == 0 and dist.is_main:
                log_train_row()
            due = bool(cfg.eval_every) and step % int(cfg.eval_every) == 0
            if cfg.eval_every_min and dist.first(train_time() >= next_eval_min * 60):
                due, next_eval_min = True, next_eval_min + float(cfg.eval_every_min)
            if due and progress() < 1.0:
                if dist.is_main:
                    do_eval()
                dist.barrier()  # the other ranks wait for rank 0's evaluation
                last_log_t = time.perf_counter()
            if cfg.save_every and step % int(cfg.save_every) == 0 and dist.is_main:
                save_train_state(state_dir, policy, ema, opt, step,
                                 time.perf_counter() - t_start, int(cfg.seed), cfg_dict)
        if step > last_log_step and dist.is_main:  # the tail since the last row (short runs get a row too)
            log_train_row()
        bar.close()
        train_end = time.perf_counter()
        samples = int(dist.total(samples))
        digests = dist.replica_digests(policy)
        if not dist.is_main:  # rank 0 saves, evaluates and writes the summary; nothing to wait for
            return {"rank": dist.rank, "world_size": dist.world_size, "steps": step}
        final_model = ema.model if ema else policy
        final_model.eval()
        save_checkpoint(final_model, out / "checkpoints" / "last", spec, {**metadata, "step": step})
        save_train_state(state_dir, policy, ema, opt, step, train_end - t_start, int(cfg.seed), cfg_dict)
        steps_timed = step - first_step_timed
        loop_s = (train_end - train_s0 - eval_s) if train_s0 else 0.0
        summary = {"policy": policy.type_name, "task": task, "episodes": int(len(episodes)), "steps": step,
                   "train_wall_s": train_end - t_start - eval_s, "eval_wall_s": eval_s,
                   "steps_per_s": steps_timed / max(loop_s, 1e-9),
                   "samples_per_s": steps_timed * batch_size / max(loop_s, 1e-9),
                   "data_wait_share": pre.wait_s / max(loop_s, 1e-9),
                   "final_loss": float(np.mean(losses[-50:])) if losses else None,
                   "parameters": n_params, "device": str(device), "checkpoint": str(out / "checkpoints" / "last"),
                   "batch_size": batch_size, "samples": samples, "world_size": dist.world_size, "evals": evals}
        if dist.enabled:
            summary["ddp"] = {"backend": dist.backend, "batch_size_per_rank": rank_batch,
                              "threads_per_rank": torch.get_num_threads(), "replica_digests": digests,
                              "replicas_identical": len(set(digests)) == 1}
            if len(set(digests)) > 1:
                print(f"warning: the {dist.world_size} replicas' weights differ at the end ({digests}); the "
                      f"checkpoint holds rank 0's", file=sys.stderr)
        if cfg.eval_final and cfg.eval_episodes:
            # the checkpoint above is already on disk, whatever the evaluation does; this
            # rewrite only adds the final success rate to its metadata
            do_eval()
            summary["final_eval"] = evals[-1]
            save_checkpoint(final_model, out / "checkpoints" / "last", spec,
                            {**metadata, "step": step, "eval_success": evals[-1]["eval_success"]})
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        plot_training(out)
        return summary
    finally:
        pre.close()
        if sampler.lazy_images:
            store.close()
        if logger is not None:
            logger.close()
        bar.close()
