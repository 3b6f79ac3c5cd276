"""Reward classifier on pick_cube (so101 twin, front camera): how well a classifier trained
from episode-level success flags replaces the twin's true success as the RL reward.

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_reward_classifier.py [--successes 30 --failures 30
        --size 96 --steps 1500 --fresh 20 --threads 1 --out FILE]

1. records ``successes`` scripted-expert episodes (held ``hold`` steps after success, like
   ``robot-rl record sim hold_steps=5``) committed success=True and ``failures`` failed ones
   committed success=False (alternately the expert's motion with the fingers kept open -- it
   lifts an empty hand -- and uniformly random actions, ``failure_steps`` steps each);
2. trains with the default labelling rule (last 3 frames of a success positive, frames before
   the last 6 negative, failures negative) and reports held-out (validation episodes) frame
   metrics;
3. runs fresh rollouts (unseen seeds) through ``ClassifierRewardWrapper`` and compares the
   classifier's decision with the twin's true success: per frame, and per episode as a
   reward (does it fire in successful episodes, does it fire falsely in failures, how many
   steps before/after the true success it fires);
4. times inference (one frame, and batches of 64).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import print_table, write_json

from robot_rl.sim.experts import failure_rollout


def record(path: Path, args) -> dict:
    from robot_rl.data import EpisodeStore
    from robot_rl.sim import make_env
    from robot_rl.sim.experts import rollout_expert
    env = make_env("pick_cube", "so101", cameras=["front"], image_size=args.size, terminate_on_success=False)
    t0 = time.perf_counter()
    n_succ = n_fail = 0
    try:
        with EpisodeStore.create(path, env.robot_spec) as st:
            def adder(ep):
                return lambda o, a, r, info: ep.add_step({"image_front": o["image_front"], "joint_pos": o["joint_pos"],
                                                          "action": a}, timestamp=ep.n_steps * 0.05)
            for seed in range(args.successes):
                ep = st.start_episode(task="pick_cube", source="expert")
                ok = rollout_expert(env, seed, on_step=adder(ep), extra_steps=args.hold)["success"]
                ep.commit(success=ok)
                n_succ += ok
            for i in range(args.failures):
                ep = st.start_episode(task="pick_cube", source="policy")
                ok = failure_rollout(env, 10_000 + i, ("open_gripper", "random")[i % 2], adder(ep), args.failure_steps)
                ep.commit(success=ok)
                n_fail += not ok
            steps = st.n_steps
    finally:
        env.close()
    return {"record_s": time.perf_counter() - t0, "successful_episodes": n_succ, "failed_episodes": n_fail,
            "frames": steps}


def fresh_rollouts(clf, args) -> tuple[list[dict], dict]:
    """Unseen seeds through the wrapper (terminate=False, so whole episodes are scored)."""
    from robot_rl.rl.reward_classifier import ClassifierRewardWrapper, binary_metrics
    from robot_rl.sim import make_env
    env = ClassifierRewardWrapper(make_env("pick_cube", "so101", cameras=["front"], image_size=args.size,
                                           terminate_on_success=False), clf, terminate=False)
    episodes: list[dict] = []
    probs: list[float] = []
    truth: list[bool] = []
    try:
        for i in range(args.fresh):
            for kind in ("expert", "open_gripper", "random"):
                seed = 50_000 + 3 * i + ("expert", "open_gripper", "random").index(kind)
                fired: list[bool] = []
                true: list[bool] = []
                if kind == "expert":
                    obs, info = env.reset(seed=seed)
                    expert, hold = env.unwrapped.make_expert(seed), 0
                    for _ in range(env.unwrapped.max_episode_steps):
                        obs, r, terminated, truncated, info = env.step(expert.act(obs))
                        fired.append(info["success"])
                        true.append(info["true_success"])
                        probs.append(info["classifier_prob"])
                        hold += info["true_success"]
                        if hold > args.hold or truncated:
                            break
                else:
                    def on_step(o, a, r, info):
                        fired.append(info["success"])
                        true.append(info["true_success"])
                        probs.append(info["classifier_prob"])
                    failure_rollout(env, seed, kind, on_step, args.failure_steps)
                truth += true
                first_true = true.index(True) if any(true) else None
                first_fire = fired.index(True) if any(fired) else None
                episodes.append({"kind": kind, "success": any(true), "fired": any(fired),
                                 "lag": None if first_true is None or first_fire is None else first_fire - first_true})
    finally:
        env.close()
    frame = binary_metrics(np.array(probs), np.array(truth), clf.threshold)
    return episodes, frame


def time_inference(clf, size: int) -> dict:
    rng = np.random.default_rng(0)
    one = {"image_front": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)}
    batch = {"image_front": rng.integers(0, 255, (64, size, size, 3), dtype=np.uint8)}
    for _ in range(10):
        clf.prob(one)
    t = []
    for _ in range(200):
        t0 = time.perf_counter()
        clf.prob(one)
        t.append(time.perf_counter() - t0)
    clf.prob_batch(batch)
    t0 = time.perf_counter()
    for _ in range(10):
        clf.prob_batch(batch)
    return {"single_ms_median": 1e3 * float(np.median(t)), "single_ms_p95": 1e3 * float(np.percentile(t, 95)),
            "batch64_ms_per_frame": 1e3 * (time.perf_counter() - t0) / 640}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--successes", type=int, default=30)
    ap.add_argument("--failures", type=int, default=30)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--hold", type=int, default=5, help="steps recorded after success (record sim hold_steps)")
    ap.add_argument("--failure-steps", type=int, default=80)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--fresh", type=int, default=20, help="fresh episodes of each kind")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: OpenMP threads spin badly on a shared 2-core machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from robot_rl.rl.reward_classifier import load_reward_classifier, train_reward_classifier

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_reward_classifier_") as tmp:
        rec = record(Path(tmp) / "pick.zarr", args)
        m = train_reward_classifier(Path(tmp) / "pick.zarr", ["front"], Path(tmp) / "model", steps=args.steps,
                                    batch_size=args.batch_size, seed=args.seed, progress=True)
        clf = load_reward_classifier(Path(tmp) / "model")
        t0 = time.perf_counter()
        episodes, frame = fresh_rollouts(clf, args)
        fresh_s = time.perf_counter() - t0
        timing = time_inference(clf, args.size)

    val_row = {k: m[f"val_{k}"] for k in ("balanced_accuracy", "accuracy", "precision", "recall", "n_pos", "n_neg")}
    print_table([{"frames": f"held-out episodes ({m['val_episodes']})", **val_row},
                 {"frames": "fresh rollouts vs true success", **{k: frame[k] for k in val_row}}],
                ["frames", "balanced_accuracy", "accuracy", "precision", "recall", "n_pos", "n_neg"],
                f"Reward classifier, pick_cube so101, front camera {args.size}x{args.size}: per frame "
                f"(threshold {clf.threshold})")

    rows = []
    for kind in ("expert", "open_gripper", "random"):
        eps = [e for e in episodes if e["kind"] == kind]
        lags = [e["lag"] for e in eps if e["lag"] is not None]
        rows.append({"episodes": kind, "n": len(eps), "truly_successful": sum(e["success"] for e in eps),
                     "classifier_fired": sum(e["fired"] for e in eps),
                     "fire_lag_mean": float(np.mean(lags)) if lags else None,
                     "fire_lag_min": int(min(lags)) if lags else None,
                     "fire_lag_max": int(max(lags)) if lags else None})
    tp = sum(e["fired"] and e["success"] for e in episodes)
    fp = sum(e["fired"] and not e["success"] for e in episodes)
    fn = sum(not e["fired"] and e["success"] for e in episodes)
    n_fail = sum(not e["success"] for e in episodes)
    as_reward = {"episode_precision": tp / (tp + fp) if tp + fp else None,
                 "episode_recall": tp / (tp + fn) if tp + fn else None,
                 "false_fire_rate_on_failures": fp / n_fail if n_fail else None}
    print_table(rows, ["episodes", "n", "truly_successful", "classifier_fired", "fire_lag_mean", "fire_lag_min",
                       "fire_lag_max"],
                "As the reward, fresh rollouts (fire lag: first classifier success - first true success, steps)")
    print(f"episode precision {as_reward['episode_precision']}, recall {as_reward['episode_recall']}, "
          f"false fires on failures {as_reward['false_fire_rate_on_failures']}")

    cost = {"record_s": rec["record_s"], "train_s": m["train_time_s"], "train_steps": m["steps"],
            "train_ms_per_step": 1e3 * m["train_time_s"] / m["steps"], **timing, "fresh_rollouts_s": fresh_s,
            "total_s": time.perf_counter() - t_start}
    print_table([cost], list(cost), f"Cost ({args.threads} torch threads, device {m['device']})")
    write_json("reward_classifier", {
        "settings": vars(args), "store": rec, "train_metrics": m, "fresh_frame_metrics": frame,
        "fresh_episodes": rows, "as_reward": as_reward, "cost": cost}, args.out)


if __name__ == "__main__":
    main()
