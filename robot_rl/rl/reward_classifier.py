"""A learned reward: camera images -> probability that the task is done (HIL-SERL style).

On a real robot nothing computes ``task.success()``; a small binary classifier on the camera
images, trained on labelled frames of an episode store, stands in for it. Used as the RL
reward it gives ``1.0`` when the success probability exceeds a threshold, else ``0.0``
(:class:`ClassifierReward`, :class:`ClassifierRewardWrapper`).

Labelling rule (which frames of a store are positive)
-----------------------------------------------------
- **per-step labels** (``labels="auto"`` when the store has a per-step key ``success``, or
  ``labels="step"``): a frame is positive when its ``success`` value is true (> 0.5), else
  negative. Record it by mapping a ``/success`` (std_msgs/Bool) topic to a ``success`` key
  in the recording contract. The ``reward`` key that ``robot-rl record sim`` and the sim
  contract store is *not* used: it is a shaped reward of the step's transition, not a
  success flag of the frame.
- **episode labels** (otherwise, or ``labels="episode"``), from the success flag each episode
  was committed with: in an episode committed with ``success=True`` the last
  ``positive_last_k`` frames are positive (record a few steps held after success:
  ``robot-rl record sim hold_steps=...``), frames before the last ``negative_margin`` are
  negative, and the frames in between are ignored (the moment of success is not known
  exactly). Every frame of an episode committed with ``success=False`` is negative.

Training (:func:`train_reward_classifier`): episode-level train/validation split (stratified
by whether an episode holds positive frames), class-balanced batches (half positives; they
are rare), random-shift augmentation (replicate-pad 4 px, random crop back), BCE loss.
A checkpoint is a folder: ``model.safetensors`` + ``config.json`` (no pickle).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.data.store import EpisodeStore
from robot_rl.rl.nets import random_shift

log = logging.getLogger(__name__)

FORMAT = "robot_rl.reward_classifier"
FORMAT_VERSION = 1
IMAGE_PREFIX = "image_"
LABEL_SOURCES = ("auto", "step", "episode")
POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


class RewardClassifierError(ValueError):
    """The reward classifier cannot be trained or used as asked; the message says why."""


def camera_key(camera: str) -> str:
    """``front`` -> ``image_front`` (the store / observation key); ``image_front`` is kept."""
    return camera if camera.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + camera


def camera_name(camera: str) -> str:
    """``image_front`` -> ``front``."""
    return camera[len(IMAGE_PREFIX):] if camera.startswith(IMAGE_PREFIX) else camera


# ---------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelRule:
    """How frames are labelled (see the module doc)."""

    labels: str = "auto"  # auto | step | episode
    step_key: str = "success"
    positive_last_k: int = 3
    negative_margin: int = 6

    def __post_init__(self) -> None:
        if self.labels not in LABEL_SOURCES:
            raise RewardClassifierError(f"labels must be one of {list(LABEL_SOURCES)}, got {self.labels!r}")
        if self.positive_last_k < 1:
            raise RewardClassifierError(f"positive_last_k must be >= 1, got {self.positive_last_k}")
        if self.negative_margin < self.positive_last_k:
            raise RewardClassifierError(
                f"negative_margin ({self.negative_margin}) must be >= positive_last_k ({self.positive_last_k}): "
                f"the last positive_last_k frames of a successful episode cannot also be negatives")


def frame_labels(store: EpisodeStore, rule: LabelRule = LabelRule(),
                 episodes: Sequence[int] | None = None) -> tuple[np.ndarray, str]:
    """(label per committed row: 1 positive, 0 negative, -1 ignored; ``"step"`` or
    ``"episode"``: which rule was applied). Rows of episodes not in ``episodes`` are -1."""
    per_step = rule.labels == "step" or (rule.labels == "auto" and rule.step_key in store.schema)
    labels = np.full(store.n_steps, IGNORED, np.int8)
    keep = range(store.n_episodes) if episodes is None else episodes
    if per_step:
        ks = store.schema.get(rule.step_key)
        if ks is None:
            raise RewardClassifierError(f"labels=step: episode store {store.path} has no per-step key "
                                        f"{rule.step_key!r}; it has {store.keys}")
        if int(np.prod(ks.shape, dtype=np.int64)) != 1:
            raise RewardClassifierError(f"per-step label key {rule.step_key!r} must hold one value per step, "
                                        f"it has shape {ks.shape}")
        flags = np.asarray(store.data[rule.step_key][: store.n_steps]).reshape(-1).astype(np.float64) > 0.5
        for i in keep:
            m = store.episode_meta(i)
            labels[m["start"]:m["end"]] = flags[m["start"]:m["end"]]
        return labels, "step"
    for i in keep:
        m = store.episode_meta(i)
        lo, hi = m["start"], m["end"]
        if not m["success"]:
            labels[lo:hi] = NEGATIVE
            continue
        labels[lo:max(lo, hi - rule.negative_margin)] = NEGATIVE
        labels[max(lo, hi - rule.positive_last_k):hi] = POSITIVE
    return labels, "episode"


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------
class RewardClassifier(nn.Module):
    """uint8 images ``{camera: (B, H, W, C)}`` -> success logits ``(B,)``.

    Per camera: 3x3 convolutions of stride 2, each with GroupNorm (batch-size independent:
    training batches are class-balanced, deployment sees single frames) and ReLU, then
    global average pooling; the camera features are concatenated and go through a
    one-hidden-layer MLP. In training mode each image is randomly shifted (replicate-pad
    ``shift_pad`` px, random crop back)."""

    def __init__(self, cameras: Sequence[str], image_shapes: Mapping[str, Sequence[int]],
                 channels: Sequence[int] = (16, 32, 64, 64), hidden: int = 128, shift_pad: int = 4):
        super().__init__()
        if not cameras:
            raise RewardClassifierError("a reward classifier needs at least one camera")
        self.cameras = [camera_name(c) for c in cameras]
        self.image_shapes = {c: tuple(int(x) for x in image_shapes[c]) for c in self.cameras}
        self.channels, self.hidden, self.shift_pad = [int(c) for c in channels], int(hidden), int(shift_pad)
        self.encoders = nn.ModuleDict({c: self._encoder(self.image_shapes[c][2]) for c in self.cameras})
        self.head = nn.Sequential(nn.Linear(self.channels[-1] * len(self.cameras), self.hidden), nn.ReLU(),
                                  nn.Linear(self.hidden, 1))

    def _encoder(self, in_channels: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        cin = in_channels
        for c in self.channels:
            layers += [nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.GroupNorm(max(1, min(8, c // 8)), c), nn.ReLU()]
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return nn.Sequential(*layers)

    def config(self) -> dict[str, Any]:
        return {"cameras": self.cameras, "image_shapes": {c: list(s) for c, s in self.image_shapes.items()},
                "channels": self.channels, "hidden": self.hidden, "shift_pad": self.shift_pad}

    def forward(self, images: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feats = []
        for c in self.cameras:
            x = images[c].permute(0, 3, 1, 2).float() / 255.0  # (B, C, H, W) in [0, 1]
            if self.training and self.shift_pad > 0:
                x = random_shift(x, self.shift_pad)
            feats.append(self.encoders[c](x))
        return self.head(torch.cat(feats, dim=-1)).squeeze(-1)


# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------
def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """accuracy, precision, recall, specificity, balanced_accuracy, n_pos, n_neg of the
    decisions ``probs > threshold`` against ``labels`` (1/0). Undefined ratios are None."""
    pred = np.asarray(probs) > threshold
    y = np.asarray(labels).astype(bool)
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    recall, specificity = ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {"accuracy": ratio(tp + tn, len(y)), "precision": ratio(tp, tp + fp), "recall": recall,
            "specificity": specificity,
            "balanced_accuracy": None if recall is None or specificity is None else (recall + specificity) / 2,
            "n_pos": int(y.sum()), "n_neg": int((~y).sum()), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
@dataclass
class LabelledFrames:
    """The labelled frames of a store, in memory: images per camera (N, H, W, C) uint8,
    labels (N,) 0/1, episode index (N,) of each frame."""

    images: dict[str, np.ndarray]
    labels: np.ndarray
    episodes: np.ndarray
    label_source: str
    n_ignored: int
    task: str
    robot: str
    robot_fingerprint: str


def load_labelled_frames(store_path: str | os.PathLike, cameras: Sequence[str], rule: LabelRule = LabelRule(),
                         task: str | None = None) -> LabelledFrames:
    """Read the labelled frames of ``cameras`` (only episodes of ``task`` when given) into
    memory; refuses a store that lacks a camera or has no positive or no negative frames."""
    cams = [camera_name(c) for c in cameras]
    if not cams:
        raise RewardClassifierError("no cameras given: name the image keys to classify, e.g. cameras=[front]")
    with EpisodeStore.open(store_path) as st:
        images = [k for k, ks in st.schema.items() if ks.image]
        missing = [c for c in cams if camera_key(c) not in st.schema]
        if missing:
            have = [camera_name(k) for k in images]
            raise RewardClassifierError(f"episode store {st.path} has no camera {missing[0]!r} "
                                        f"(key {camera_key(missing[0])!r}); its cameras: {have or 'none'}")
        not_img = [c for c in cams if not st.schema[camera_key(c)].image]
        if not_img:
            raise RewardClassifierError(f"key {camera_key(not_img[0])!r} of {st.path} is not an image "
                                        f"(uint8 HxWxC); its cameras: {[camera_name(k) for k in images]}")
        if st.n_episodes == 0:
            raise RewardClassifierError(f"episode store {st.path} has no episodes")
        metas = st.episodes_meta()
        tasks = sorted({m["task"] for m in metas})
        if task is None and len(tasks) > 1:
            raise RewardClassifierError(f"episode store {st.path} holds several tasks {tasks}: pick one with task=NAME")
        eps = [m["index"] for m in metas if task is None or m["task"] == task]
        if not eps:
            raise RewardClassifierError(f"episode store {st.path} has no episode of task {task!r}; it has {tasks}")
        labels, source = frame_labels(st, rule, eps)
        n_pos, n_neg = int(np.sum(labels == POSITIVE)), int(np.sum(labels == NEGATIVE))
        if n_pos == 0:
            how = (f"no step has a true {rule.step_key!r}" if source == "step" else
                   "no episode was committed with success=True")
            raise RewardClassifierError(f"episode store {st.path} has no positive (success) frames: {how}")
        if n_neg == 0:
            how = (f"every step has a true {rule.step_key!r}" if source == "step" else
                   f"no failed episodes and every successful one is at most negative_margin="
                   f"{rule.negative_margin} steps long")
            raise RewardClassifierError(f"episode store {st.path} has no negative frames: {how}; record failed "
                                        f"episodes (commit them with success=False)")
        if source == "episode" and not any(not metas[i]["success"] for i in eps):
            log.warning("episode store %s has no failed episodes: negatives come only from the early frames "
                        "of successful ones; the classifier will not have seen failures", st.path)
        rows = np.flatnonzero(labels != IGNORED)
        n_ignored = sum(int(np.sum(labels[metas[i]["start"]:metas[i]["end"]] == IGNORED)) for i in eps)
        out = {c: np.empty((len(rows),) + st.schema[camera_key(c)].shape, np.uint8) for c in cams}
        ep_of = np.empty(len(rows), np.int64)
        j = 0
        for i in eps:
            m = metas[i]
            sel = np.flatnonzero(labels[m["start"]:m["end"]] != IGNORED)
            if not len(sel):
                continue
            for c in cams:
                out[c][j:j + len(sel)] = np.asarray(st.data[camera_key(c)][m["start"]:m["end"]])[sel]
            ep_of[j:j + len(sel)] = i
            j += len(sel)
        return LabelledFrames(images=out, labels=labels[rows].astype(np.int64), episodes=ep_of, label_source=source,
                              n_ignored=n_ignored, task=task or tasks[0], robot=st.spec.name,
                              robot_fingerprint=st.spec.fingerprint())


def split_episodes(frames: LabelledFrames, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame masks (train, val) from an episode-level split, stratified by whether an episode
    holds positive frames; at least one validation episode of each kind that has >= 2."""
    if not 0 <= val_fraction < 1:
        raise RewardClassifierError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    eps = np.unique(frames.episodes)
    has_pos = np.array([frames.labels[frames.episodes == e].any() for e in eps])
    val_eps: list[int] = []
    for group in (eps[has_pos], eps[~has_pos]):
        n = len(group)
        k = int(round(n * val_fraction))
        if val_fraction > 0 and n >= 2:
            k = max(1, k)
        k = min(k, max(0, n - 1))
        val_eps.extend(rng.permutation(group)[:k].tolist())
    val = np.isin(frames.episodes, val_eps)
    return ~val, val


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
def _pick_device(device: str | torch.device | None) -> torch.device:
    try:
        return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        raise RewardClassifierError(f"bad device {device!r}: {str(e).splitlines()[0]}") from None


def _batch(frames: LabelledFrames, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    return {c: torch.from_numpy(a[idx]).to(device, non_blocking=True) for c, a in frames.images.items()}


@torch.inference_mode()
def predict_probs(model: RewardClassifier, frames: LabelledFrames, idx: np.ndarray, device: torch.device,
                  batch_size: int = 256) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = [torch.sigmoid(model(_batch(frames, idx[i:i + batch_size], device))).float().cpu().numpy()
           for i in range(0, len(idx), batch_size)]
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_reward_classifier(store_path: str | os.PathLike, cameras: Sequence[str], out_dir: str | os.PathLike, *,
                            steps: int = 2000, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0,
                            device: str | torch.device | None = None, progress: bool = True, lr: float = 3e-4,
                            threshold: float = 0.5, task: str | None = None, labels: str = "auto",
                            positive_last_k: int = 3, negative_margin: int = 6,
                            channels: Sequence[int] = (16, 32, 64, 64), hidden: int = 128) -> dict[str, Any]:
    """Train a reward classifier on the labelled frames of ``cameras`` in an episode store,
    save it to ``out_dir`` (``model.safetensors`` + ``config.json``) and return its metrics
    on the held-out episodes (``val_*``: accuracy, precision, recall, balanced_accuracy,
    n_pos, n_neg; None where undefined) plus training facts."""
    from tqdm import tqdm

    if steps < 1 or batch_size < 2:
        raise RewardClassifierError(f"steps must be >= 1 and batch_size >= 2, got steps={steps} "
                                    f"batch_size={batch_size}")
    if not 0 < threshold < 1:
        raise RewardClassifierError(f"threshold must be in (0, 1), got {threshold}")
    if not 0 <= val_fraction < 1:
        raise RewardClassifierError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rule = LabelRule(labels=labels, positive_last_k=int(positive_last_k), negative_margin=int(negative_margin))
    dev = _pick_device(device)
    frames = load_labelled_frames(store_path, cameras, rule, task=task)
    train_m, val_m = split_episodes(frames, val_fraction, seed)
    pos = np.flatnonzero(train_m & (frames.labels == POSITIVE))
    neg = np.flatnonzero(train_m & (frames.labels == NEGATIVE))
    if not len(pos) or not len(neg):
        raise RewardClassifierError(f"the training split has {len(pos)} positive and {len(neg)} negative frames; "
                                    f"record more episodes or lower val_fraction")

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cams = list(frames.images)
    model = RewardClassifier(cams, {c: a.shape[1:] for c, a in frames.images.items()}, channels, hidden).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n_pos = batch_size // 2
    target = torch.cat([torch.ones(n_pos), torch.zeros(batch_size - n_pos)]).to(dev)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="train reward classifier", unit="step", disable=not progress)
    ema_loss = ema_acc = None
    for step in bar:
        idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, batch_size - n_pos)])
        logits = model(_batch(frames, idx, dev))
        loss = F.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = float(((logits > 0).float() == target).float().mean())
        li = loss.item()
        ema_loss = li if ema_loss is None else 0.95 * ema_loss + 0.05 * li
        ema_acc = acc if ema_acc is None else 0.95 * ema_acc + 0.05 * acc
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}")
    bar.close()
    train_s = time.perf_counter() - t0

    val_idx = np.flatnonzero(val_m)
    val = binary_metrics(predict_probs(model, frames, val_idx, dev), frames.labels[val_idx], threshold)
    metrics: dict[str, Any] = {
        **{f"val_{k}": v for k, v in val.items()},
        "train_n_pos": int(len(pos)), "train_n_neg": int(len(neg)),
        "train_episodes": int(len(np.unique(frames.episodes[train_m]))),
        "val_episodes": int(len(np.unique(frames.episodes[val_m]))),
        "n_ignored": frames.n_ignored, "label_source": frames.label_source, "threshold": float(threshold),
        "steps": int(steps), "train_loss": ema_loss, "train_time_s": train_s, "device": str(dev),
    }
    if not len(val_idx):
        log.warning("no validation episodes (val_fraction=%s): val metrics are undefined", val_fraction)
    config = {
        "threshold": float(threshold), "task": frames.task, "robot": frames.robot,
        "robot_fingerprint": frames.robot_fingerprint, "labels": {**asdict(rule), "applied": frames.label_source},
        "train": {"store": str(Path(store_path).absolute()), "steps": int(steps),
                  "batch_size": int(batch_size), "lr": lr, "val_fraction": val_fraction, "seed": int(seed)},
        "metrics": metrics,
    }
    save_reward_classifier(model, out_dir, config)
    return metrics


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def save_reward_classifier(model: RewardClassifier, out_dir: str | os.PathLike,
                           extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir/model.safetensors`` + ``out_dir/config.json`` (temp files + rename)."""
    from robot_rl.policies.base import write_checkpoint_dir

    cfg = {"threshold": 0.5, **dict(extra or {}), "format": FORMAT, "format_version": FORMAT_VERSION,
           "model": model.config()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return write_checkpoint_dir(out_dir, tensors, cfg)


def load_reward_classifier(path: str | os.PathLike, device: str | torch.device | None = None,
                           threshold: float | None = None) -> "ClassifierReward":
    """A saved classifier as a reward (``threshold``: override the saved one). A missing or
    corrupt checkpoint is one RewardClassifierError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from robot_rl.policies.base import read_checkpoint_dir
    p, cfg = read_checkpoint_dir(path, RewardClassifierError, "reward classifier")
    wf = p / "model.safetensors"
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        fmt = cfg.get("format") if isinstance(cfg, dict) else None
        raise RewardClassifierError(f"reward classifier {p}: format {fmt!r}, expected {FORMAT!r}")
    if int(cfg.get("format_version", -1)) > FORMAT_VERSION:
        raise RewardClassifierError(f"reward classifier {p}: format_version {cfg.get('format_version')} is newer "
                                    f"than this robot_rl reads ({FORMAT_VERSION})")
    try:
        mc = cfg["model"]
        model = RewardClassifier(mc["cameras"], mc["image_shapes"], mc["channels"], mc["hidden"], mc["shift_pad"])
    except (KeyError, TypeError, ValueError) as e:
        raise RewardClassifierError(f"reward classifier {p}: config.json has a malformed 'model' entry "
                                    f"({e!r})") from None
    try:
        tensors = load_file(str(wf))
    except (SafetensorError, OSError, ValueError) as e:
        raise RewardClassifierError(f"reward classifier {p}: model.safetensors is corrupt ({e})") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise RewardClassifierError(f"reward classifier {p}: weights do not fit its config ({first})") from None
    dev = _pick_device(device)
    thr = cfg.get("threshold", 0.5) if threshold is None else threshold
    return ClassifierReward(model.to(dev).eval(), cfg, dev, thr)


# ---------------------------------------------------------------------------------------
# using it
# ---------------------------------------------------------------------------------------
class ClassifierReward:
    """A trained classifier as a reward: ``prob(obs)`` success probability of one
    observation (a dict holding ``image_<camera>`` HxWxC uint8 for each trained camera),
    ``prob_batch(obs)`` of a batch (arrays with a leading batch axis), ``success(obs)`` =
    ``prob > threshold``, and ``reward = classifier(obs)`` = 1.0 / 0.0."""

    def __init__(self, model: RewardClassifier, config: Mapping[str, Any], device: torch.device, threshold: float):
        if not 0 < float(threshold) < 1:
            raise RewardClassifierError(f"threshold must be in (0, 1), got {threshold}")
        self.model, self.config, self.device, self.threshold = model, dict(config), device, float(threshold)
        self.cameras = list(model.cameras)
        self.image_shapes = dict(model.image_shapes)

    @property
    def keys(self) -> list[str]:
        return [camera_key(c) for c in self.cameras]

    def _images(self, obs: Mapping[str, Any], batched: bool) -> dict[str, torch.Tensor]:
        out = {}
        for c in self.cameras:
            k = camera_key(c)
            if k not in obs:
                raise RewardClassifierError(f"the observation has no {k!r}: the reward classifier needs cameras "
                                            f"{self.cameras}; it has {sorted(obs)}")
            a = np.asarray(obs[k])
            shape = self.image_shapes[c]
            got = a.shape[1:] if batched else a.shape
            if a.dtype != np.uint8 or tuple(got) != shape:
                raise RewardClassifierError(
                    f"{k}: the reward classifier was trained on {shape[0]}x{shape[1]}x{shape[2]} uint8 images, "
                    f"got shape {a.shape} dtype {a.dtype}" + (" (expected a leading batch axis)" if batched else ""))
            out[c] = torch.from_numpy(np.ascontiguousarray(a if batched else a[None])).to(self.device)
        if batched and len({t.shape[0] for t in out.values()}) > 1:
            raise RewardClassifierError(f"camera batches differ in size: { {c: t.shape[0] for c, t in out.items()} }")
        return out

    @torch.inference_mode()
    def prob_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        """(B,) success probabilities of a batch of observations."""
        return torch.sigmoid(self.model(self._images(obs, batched=True))).float().cpu().numpy()

    @torch.inference_mode()
    def prob(self, obs: Mapping[str, Any]) -> float:
        """Success probability of one observation."""
        return float(torch.sigmoid(self.model(self._images(obs, batched=False)))[0])

    def success(self, obs: Mapping[str, Any]) -> bool:
        return self.prob(obs) > self.threshold

    def __call__(self, obs: Mapping[str, Any]) -> float:
        """The reward: 1.0 when the classifier says success, else 0.0."""
        return 1.0 if self.success(obs) else 0.0

    def __repr__(self) -> str:
        return (f"<ClassifierReward cameras={self.cameras} shapes={self.image_shapes} "
                f"threshold={self.threshold} device={self.device}>")


class ClassifierRewardWrapper(gym.Wrapper):
    """Replaces an env's reward by a reward classifier's decision (1.0 / 0.0).

    ``info["success"]`` (and ``is_success``) become the classifier's decision,
    ``info["true_success"]`` keeps the env's own (None when it has none, as on a real robot),
    ``info["classifier_prob"]`` the probability and ``info["env_reward"]`` the env's reward.
    ``terminate=True`` ends the episode when the classifier says success. The env's own
    ``terminated`` passes through: make a twin with ``terminate_on_success=False`` so that
    only the classifier decides when an episode ends."""

    def __init__(self, env: gym.Env, classifier: ClassifierReward | str | os.PathLike, terminate: bool = True):
        super().__init__(env)
        self.classifier = classifier if isinstance(classifier, ClassifierReward) else load_reward_classifier(classifier)
        self.terminate = bool(terminate)
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict):
            for c in self.classifier.cameras:
                k, want = camera_key(c), self.classifier.image_shapes[c]
                if k not in space.spaces:
                    raise RewardClassifierError(f"the env observes no {k!r}: the reward classifier needs cameras "
                                                f"{self.classifier.cameras}; the env has {sorted(space.spaces)}")
                if tuple(space.spaces[k].shape) != want:
                    raise RewardClassifierError(f"{k}: the env renders {tuple(space.spaces[k].shape)} images, the "
                                                f"reward classifier was trained on {want}")

    def _relabel(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        info = dict(info)
        p = self.classifier.prob(obs)
        ok = p > self.classifier.threshold
        info["true_success"] = info.get("success")
        info["classifier_prob"] = p
        info["success"] = info["is_success"] = ok
        return info

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return obs, self._relabel(obs, info)

    def step(self, action: Any):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        info = self._relabel(obs, info)
        info["env_reward"] = float(env_reward)
        if self.terminate and info["success"]:
            terminated = True
        return obs, 1.0 if info["success"] else 0.0, bool(terminated), bool(truncated), info


__all__ = ["RewardClassifierError", "LabelRule", "frame_labels", "RewardClassifier", "binary_metrics",
           "LabelledFrames", "load_labelled_frames", "split_episodes", "train_reward_classifier",
           "save_reward_classifier", "load_reward_classifier", "ClassifierReward", "ClassifierRewardWrapper",
           "camera_key", "camera_name", "FORMAT", "FORMAT_VERSION"]
