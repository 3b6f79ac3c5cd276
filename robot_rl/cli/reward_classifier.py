"""``robot-rl reward-classifier train``: a success classifier on camera images (the learned
reward of online RL on a real robot), trained from the labelled frames of an episode store.

    robot-rl reward-classifier train store=PATH cameras=[front] out=runs/reward steps=2000
        [batch_size=64 val_fraction=0.2 seed=0 lr=0.0003 threshold=0.5 task=NAME
         labels=auto|step|episode positive_last_k=3 negative_margin=6 device=cuda|cpu progress=true]

The labelling rule and the checkpoint format: :mod:`robot_rl.rl.reward_classifier`.
"""
from __future__ import annotations

from typing import Any

import yaml

from robot_rl.cli.common import CLIError, usage_lines

TRAIN_KEYS: dict[str, Any] = {
    "store": None, "cameras": None, "out": "runs/reward_classifier", "steps": 2000, "batch_size": 64,
    "val_fraction": 0.2, "seed": 0, "lr": 3e-4, "threshold": 0.5, "task": None, "labels": "auto",
    "positive_last_k": 3, "negative_margin": 6, "device": None, "progress": True,
}
STRINGS = ("store", "out", "task", "labels", "device")
INTS = ("steps", "batch_size", "seed", "positive_last_k", "negative_margin")
FLOATS = ("val_fraction", "lr", "threshold")
USAGE = usage_lines(__doc__, "robot-rl reward-classifier train")
METRIC_ROWS = ("val_balanced_accuracy", "val_accuracy", "val_precision", "val_recall", "val_specificity",
               "val_n_pos", "val_n_neg", "train_n_pos", "train_n_neg", "train_episodes", "val_episodes",
               "n_ignored", "label_source", "threshold", "steps", "train_loss", "train_time_s", "device")


def parse_train_args(args: list[str]) -> dict[str, Any]:
    """``key=value`` arguments -> settings (defaults filled in, types checked)."""
    cfg = dict(TRAIN_KEYS)
    for a in args:
        if "=" not in a:
            raise CLIError(f"expected key=value, got {a!r}\nusage: {USAGE}")
        k, v = a.split("=", 1)
        if k not in TRAIN_KEYS:
            raise CLIError(f"unknown setting {k!r} for 'reward-classifier train'; "
                           f"valid settings: {', '.join(TRAIN_KEYS)}")
        if k in STRINGS:
            cfg[k] = None if v in ("", "null", "None") and k not in ("store", "out") else v
            continue
        try:
            cfg[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise CLIError(f"{k}={v!r} is not a valid value: {e}") from None
    if not cfg["store"]:
        raise CLIError(f"'reward-classifier train' needs an episode store: store=PATH\nusage: {USAGE}")
    cams = cfg["cameras"]
    if isinstance(cams, str):
        cams = [cams]
    if not (isinstance(cams, list) and cams and all(isinstance(c, str) and c for c in cams)):
        raise CLIError(f"cameras must be a non-empty list of camera names like [front] or [front,wrist], got {cams!r}")
    cfg["cameras"] = cams
    for k in INTS:
        if not isinstance(cfg[k], int) or isinstance(cfg[k], bool):
            raise CLIError(f"{k} must be an integer, got {cfg[k]!r}")
    for k in FLOATS:
        if not isinstance(cfg[k], (int, float)) or isinstance(cfg[k], bool):
            raise CLIError(f"{k} must be a number, got {cfg[k]!r}")
        cfg[k] = float(cfg[k])
    if not isinstance(cfg["progress"], bool):
        raise CLIError(f"progress must be true or false, got {cfg['progress']!r}")
    return cfg


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_metrics(metrics: dict[str, Any]) -> None:
    rows = [(k, _fmt(metrics.get(k))) for k in METRIC_ROWS if k in metrics]
    w = max(len(k) for k, _ in rows)
    print(f"{'metric'.ljust(w)}  value")
    print(f"{'-' * w}  {'-' * 10}")
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")


def cmd_reward_classifier(args: list[str]) -> int:
    if not args or args[0] != "train":
        raise CLIError(f"usage: {USAGE}")
    cfg = parse_train_args(args[1:])
    from robot_rl.rl.reward_classifier import RewardClassifierError, train_reward_classifier
    try:
        metrics = train_reward_classifier(
            cfg["store"], cfg["cameras"], cfg["out"], steps=cfg["steps"], batch_size=cfg["batch_size"],
            val_fraction=cfg["val_fraction"], seed=cfg["seed"], device=cfg["device"], progress=cfg["progress"],
            lr=cfg["lr"], threshold=cfg["threshold"], task=cfg["task"], labels=cfg["labels"],
            positive_last_k=cfg["positive_last_k"], negative_margin=cfg["negative_margin"])
    except RewardClassifierError as e:
        raise CLIError(str(e)) from None
    print_metrics(metrics)
    print(f"reward classifier {cfg['out']} (model.safetensors + config.json)")
    return 0
