"""``robot-rl info``: what an episode store holds.

    robot-rl info PATH [json=true]

Episodes, steps, duration and success rate (per task and per source), the robot spec's
fingerprint, and per key its dtype, shape, codec, bytes on disk and compression ratio;
``json=true`` prints the same summary as JSON.
"""
from __future__ import annotations

import json

from robot_rl.data.store import EpisodeStore


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def print_summary(s: dict) -> None:
    sr = s.get("success_rate")
    print(f"store     {s['path']}")
    print(f"robot     {s['robot']} (spec {s['robot_fingerprint']})")
    print(f"episodes  {s['episodes']}    steps {s['steps']}    duration {s.get('duration_s', 0):.1f} s")
    print(f"success   {'-' if sr is None else f'{100 * sr:.1f}%'} ({s.get('successes', 0)}/{s['episodes']})")
    for task, d in sorted(s.get("per_task", {}).items()):
        print(f"  task {task:<12} {d['episodes']:>5} episodes  {d['steps']:>7} steps  "
              f"success {100 * d['success_rate']:.1f}%")
    src = {k: v for k, v in s.get("per_source", {}).items() if v}
    if src:
        print("sources   " + ", ".join(f"{k}: {v}" for k, v in src.items()))
    print(f"size      {_mb(s.get('bytes_total'))} on disk")
    keys = s.get("keys", {})
    if keys:
        print(f"  {'key':<16} {'dtype':<8} {'shape':<14} {'codec':<9} {'on disk':>10} {'ratio':>6}")
        for k, d in keys.items():
            ratio = d.get("compression_ratio")
            codec = d.get("codec") or ("-" if not d.get("image") else "lossless")
            print(f"  {k:<16} {d['dtype']:<8} {str(tuple(d['shape'])):<14} {codec:<9} {_mb(d['bytes']):>10} "
                  f"{'' if ratio is None else f'{ratio:.1f}x':>6}")


def info(path: str, as_json: bool = False) -> dict:
    with EpisodeStore.open(path) as store:
        s = store.summary()
    if as_json:
        print(json.dumps(s, indent=2, default=str))
    else:
        print_summary(s)
    return s
