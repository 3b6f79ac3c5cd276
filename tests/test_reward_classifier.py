"""Reward classifier: labels from a real twin store, training, held-out accuracy on fresh
rollouts, checkpoint round trip, the gym wrapper as a reward, and the one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_rl.data import EpisodeStore
from robot_rl.rl.reward_classifier import (ClassifierReward, ClassifierRewardWrapper, LabelRule,
                                           RewardClassifierError, binary_metrics, frame_labels,
                                           load_reward_classifier, save_reward_classifier,
                                           train_reward_classifier)
from robot_rl.sim import make_env
from robot_rl.sim.experts import failure_rollout, rollout_expert

SIZE = 48  # px: small frames keep the test fast
HOLD = 8  # steps the expert holds the cube up after success
K, MARGIN = 6, 9  # positive_last_k (<= HOLD: every positive frame really shows success), negative_margin
FAILURE_STEPS = 60


def make_twin(size: int = SIZE):
    return make_env("pick_cube", "so101", cameras=["front"], image_size=size, terminate_on_success=False)


def record_store(path: Path, successes: int, failures: int, seed0: int = 0) -> Path:
    """Expert successes (held HOLD steps) committed success=True, then failures (alternately
    open-gripper and random) committed success=False."""
    env = make_twin()
    try:
        with EpisodeStore.create(path, env.robot_spec) as st:
            for i in range(successes):
                ep = st.start_episode(task="pick_cube", source="expert")
                res = rollout_expert(env, seed0 + i, extra_steps=HOLD, on_step=lambda o, a, r, info, ep=ep: ep.add_step(
                    {"image_front": o["image_front"], "action": a}, timestamp=ep.n_steps * 0.05))
                assert res["success"]
                ep.commit(success=True)
            for i in range(failures):
                ep = st.start_episode(task="pick_cube", source="policy")
                ok = failure_rollout(env, seed0 + 500 + i, ("open_gripper", "random")[i % 2],
                                     lambda o, a, r, info, ep=ep: ep.add_step(
                                         {"image_front": o["image_front"], "action": a}, timestamp=ep.n_steps * 0.05),
                                     FAILURE_STEPS)
                assert not ok
                ep.commit(success=False)
    finally:
        env.close()
    return path


def fresh_frames(seeds: range) -> tuple[np.ndarray, np.ndarray, list[tuple[str, slice]]]:
    """Held-out rollouts (seeds unseen in training): frames, labels by the training rule
    (-1 = ignored) and (kind, slice) per episode."""
    env = make_twin()
    frames: list[np.ndarray] = []
    labels: list[int] = []
    episodes: list[tuple[str, slice]] = []
    try:
        for s in seeds:
            lo = len(frames)
            res = rollout_expert(env, s, extra_steps=HOLD, on_step=lambda o, *_: frames.append(o["image_front"]))
            assert res["success"]
            n = len(frames) - lo
            labels += [1 if j >= n - K else 0 if j < n - MARGIN else -1 for j in range(n)]
            episodes.append(("expert", slice(lo, len(frames))))
            for kind in ("open_gripper", "random"):
                lo = len(frames)
                failure_rollout(env, s + 500, kind, lambda o, *_: frames.append(o["image_front"]), FAILURE_STEPS)
                labels += [0] * (len(frames) - lo)
                episodes.append((kind, slice(lo, len(frames))))
    finally:
        env.close()
    return np.stack(frames), np.array(labels), episodes


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return record_store(tmp_path_factory.mktemp("rc") / "pick.zarr", successes=8, failures=6)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rc_model") / "reward"
    metrics = train_reward_classifier(store, ["front"], out, steps=800, batch_size=32, val_fraction=0.2, seed=0,
                                      device="cpu", progress=False, positive_last_k=K, negative_margin=MARGIN)
    return out, metrics


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


def image_store(path: Path, episodes: list[tuple[int, bool]], step_success: bool = False) -> Path:
    """A store of random 48x48 frames: (length, committed success) per episode; with
    ``step_success`` a per-step ``success`` key, true on every 3rd step."""
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, "so101") as st:
        for n, ok in episodes:
            ep = st.start_episode(task="pick_cube", source="teleop")
            for t in range(n):
                step = {"image_front": rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)}
                if step_success:
                    step["success"] = np.array(t % 3 == 2)
                ep.add_step(step, timestamp=t * 0.05)
            ep.commit(success=ok)
    return path


# -- labels ------------------------------------------------------------------------------
def test_episode_labels_follow_the_rule(store):
    with EpisodeStore.open(store) as st:
        labels, source = frame_labels(st, LabelRule(positive_last_k=K, negative_margin=MARGIN))
        assert source == "episode"  # the store has no per-step success key
        for m in st.episodes_meta():
            lab, n = labels[m["start"]:m["end"]], m["length"]
            if m["success"]:
                assert lab[n - K:].tolist() == [1] * K
                assert lab[n - MARGIN:n - K].tolist() == [-1] * (MARGIN - K)
                assert lab[:n - MARGIN].tolist() == [0] * (n - MARGIN)
            else:
                assert (lab == 0).all()


def test_episode_positives_are_real_success_frames(tmp_path):
    """With HOLD >= K the positive frames are exactly frames whose state is a success."""
    env = make_twin()
    succ = []
    prev = [False]

    def on_step(o, a, r, info):
        succ.append(prev[0])  # the success of the state this frame shows
        prev[0] = info["success"]

    rollout_expert(env, 3, extra_steps=HOLD, on_step=on_step)
    env.close()
    assert succ[-K:] == [True] * K and not any(succ[:-MARGIN])


def test_per_step_success_key_is_used_when_present(tmp_path):
    path = image_store(tmp_path / "s.zarr", [(9, False), (6, True)], step_success=True)
    with EpisodeStore.open(path) as st:
        labels, source = frame_labels(st)
        assert source == "step"
        assert labels.tolist() == [0, 0, 1] * 5
        labels, source = frame_labels(st, LabelRule(labels="episode", positive_last_k=2, negative_margin=3))
        assert source == "episode" and labels.tolist() == [0] * 9 + [0, 0, 0, -1, 1, 1]
    path = image_store(tmp_path / "e.zarr", [(4, True)])
    with EpisodeStore.open(path) as st, pytest.raises(RewardClassifierError) as e:
        frame_labels(st, LabelRule(labels="step"))
    assert "no per-step key 'success'" in one_line(e)


def test_binary_metrics():
    m = binary_metrics(np.array([0.9, 0.8, 0.2, 0.1, 0.7]), np.array([1, 0, 1, 0, 0]))
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 2, 1, 1)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == 0.5
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert binary_metrics(np.array([0.1]), np.array([0]))["precision"] is None


# -- training and accuracy -----------------------------------------------------------------
def test_training_writes_a_checkpoint_and_validates_on_held_out_episodes(trained):
    out, m = trained
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "robot_rl.reward_classifier" and cfg["model"]["cameras"] == ["front"]
    assert cfg["model"]["image_shapes"] == {"front": [SIZE, SIZE, 3]} and cfg["robot"] == "so101"
    assert cfg["task"] == "pick_cube" and cfg["labels"]["applied"] == "episode"
    assert cfg["threshold"] == 0.5 and cfg["metrics"]["val_n_pos"] == m["val_n_pos"]
    assert (out / "model.safetensors").is_file()
    # 8 successes + 6 failures split by episode, stratified: both classes in validation
    assert m["train_episodes"] + m["val_episodes"] == 14 and m["val_n_pos"] > 0 and m["val_n_neg"] > 0
    assert m["train_n_pos"] + m["val_n_pos"] == 8 * K and m["n_ignored"] == 8 * (MARGIN - K)
    assert m["val_balanced_accuracy"] >= 0.85, m  # chance: 0.5


def test_classifier_is_accurate_on_fresh_rollouts(trained):
    out, _ = trained
    clf = load_reward_classifier(out, device="cpu")
    frames, labels, episodes = fresh_frames(range(900, 903))
    probs = clf.prob_batch({"image_front": frames})
    keep = labels >= 0
    m = binary_metrics(probs[keep], labels[keep], clf.threshold)
    assert m["balanced_accuracy"] >= 0.85 and m["specificity"] >= 0.97, m  # chance: 0.5
    # as a reward: fires in every success; in failures (almost) never (over 11 training seeds:
    # at most 1 of these 6 failure episodes had a false frame)
    fired = {i: bool((probs[sl] > clf.threshold).any()) for i, (_, sl) in enumerate(episodes)}
    assert all(fired[i] for i, (kind, _) in enumerate(episodes) if kind == "expert")
    assert sum(fired[i] for i, (kind, _) in enumerate(episodes) if kind != "expert") <= 1


def test_save_load_round_trip_gives_identical_probabilities(trained, tmp_path):
    out, _ = trained
    a = load_reward_classifier(out, device="cpu")
    rng = np.random.default_rng(1)
    batch = {"image_front": rng.integers(0, 255, (5, SIZE, SIZE, 3), dtype=np.uint8)}
    save_reward_classifier(a.model, tmp_path / "copy", a.config)
    b = load_reward_classifier(tmp_path / "copy", device="cpu")
    pa, pb = a.prob_batch(batch), b.prob_batch(batch)
    assert pa.shape == (5,) and np.array_equal(pa, pb)
    one = {"image_front": batch["image_front"][2]}
    assert a.prob(one) == pytest.approx(float(pa[2]), abs=1e-6) and a.prob(one) == a.prob(one)  # eval: no augmentation
    assert a(one) == (1.0 if pa[2] > a.threshold else 0.0)
    assert load_reward_classifier(out, device="cpu", threshold=0.99).threshold == 0.99


# -- as the env's reward ---------------------------------------------------------------------
def test_wrapper_replaces_reward_and_terminates_on_classifier_success(trained):
    out, _ = trained
    env = ClassifierRewardWrapper(make_twin(), out, terminate=True)
    try:
        obs, info = env.reset(seed=950)
        assert info["success"] is False and info["true_success"] is False and 0 <= info["classifier_prob"] <= 1
        expert = env.unwrapped.make_expert(950)
        rewards, env_rewards = [], []
        for _ in range(150):
            obs, r, terminated, truncated, info = env.step(expert.act(obs))
            rewards.append(r)
            env_rewards.append(info["env_reward"])
            assert r == (1.0 if info["success"] else 0.0) and info["success"] == (info["classifier_prob"] > 0.5)
            assert isinstance(info["true_success"], bool)
            if terminated or truncated:
                break
        assert terminated and rewards[-1] == 1.0 and sum(rewards) == 1.0  # ends at the first classifier success
        assert 0 < min(env_rewards[:-1]) and max(env_rewards[:-1]) < 1  # the twin's dense reward was replaced
        # ... which is (about) when the cube really is up: success is a lift of 5 cm
        assert obs["object_state"][2] - 0.015 > 0.035, obs["object_state"][:3]
        # a failure never earns reward and does not end early
        obs, info = env.reset(seed=951)
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs, r, terminated, truncated, info = env.step(rng.uniform(env.action_space.low, env.action_space.high))
            assert r == 0.0 and not terminated and info["true_success"] is False
    finally:
        env.close()


def test_wrapper_without_terminate_keeps_going(trained):
    out, _ = trained
    env = ClassifierRewardWrapper(make_twin(), load_reward_classifier(out, device="cpu"), terminate=False)
    try:
        obs, _ = env.reset(seed=952)
        expert = env.unwrapped.make_expert(952)
        rewards = []
        for _ in range(60):
            obs, r, terminated, truncated, info = env.step(expert.act(obs))
            rewards.append(r)
            assert not terminated
        assert sum(rewards) >= 3  # the cube stays up: reward on every step after success
    finally:
        env.close()


# -- errors: one line each -------------------------------------------------------------------
def test_missing_camera_is_one_line(store, tmp_path):
    with pytest.raises(RewardClassifierError) as e:
        train_reward_classifier(store, ["wrist"], tmp_path / "m", steps=2, progress=False)
    msg = one_line(e)
    assert "no camera 'wrist'" in msg and "front" in msg
    assert not (tmp_path / "m").exists()


def test_store_without_positives_or_negatives_is_refused(tmp_path):
    no_pos = image_store(tmp_path / "fail.zarr", [(10, False), (12, False)])
    with pytest.raises(RewardClassifierError) as e:
        train_reward_classifier(no_pos, ["front"], tmp_path / "m", steps=2, progress=False)
    assert "no positive (success) frames" in one_line(e)
    no_neg = image_store(tmp_path / "short.zarr", [(5, True), (6, True)])
    with pytest.raises(RewardClassifierError) as e:
        train_reward_classifier(no_neg, ["front"], tmp_path / "m", steps=2, progress=False)
    assert "no negative frames" in one_line(e)
    assert not (tmp_path / "m").exists()


def test_corrupt_or_missing_checkpoint_is_one_line(trained, tmp_path):
    out, _ = trained
    with pytest.raises(RewardClassifierError) as e:
        load_reward_classifier(tmp_path / "nothing")
    assert "no reward classifier at" in one_line(e)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((out / "config.json").read_text())
    (bad / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:200])
    with pytest.raises(RewardClassifierError) as e:
        load_reward_classifier(bad)
    assert "model.safetensors is corrupt" in one_line(e)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(RewardClassifierError) as e:
        load_reward_classifier(bad)
    assert "config.json is not valid JSON" in one_line(e)
    (bad / "config.json").write_text(json.dumps({"format": "robot_rl.policy"}))
    with pytest.raises(RewardClassifierError) as e:
        load_reward_classifier(bad)
    assert "format 'robot_rl.policy'" in one_line(e)


def test_wrong_observation_is_one_line(trained):
    clf = load_reward_classifier(trained[0], device="cpu")
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    with pytest.raises(RewardClassifierError) as e:
        clf.prob({"image_wrist": img})
    assert "no 'image_front'" in one_line(e)
    with pytest.raises(RewardClassifierError) as e:
        clf.prob({"image_front": np.zeros((96, 96, 3), np.uint8)})
    assert "48x48x3 uint8" in one_line(e)
    with pytest.raises(RewardClassifierError) as e:
        clf.prob_batch({"image_front": img})
    assert "leading batch axis" in one_line(e)
    with pytest.raises(RewardClassifierError) as e:
        ClassifierRewardWrapper(make_twin(size=64), clf)
    assert "renders (64, 64, 3) images" in one_line(e)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_trains_and_prints_metrics(store, tmp_path, capsys):
    from robot_rl.cli.main import CLIError
    from robot_rl.cli.reward_classifier import cmd_reward_classifier
    out = tmp_path / "cli_model"
    assert cmd_reward_classifier(["train", f"store={store}", "cameras=[front]", f"out={out}", "steps=5",
                                  "batch_size=8", "progress=false", f"positive_last_k={K}",
                                  f"negative_margin={MARGIN}"]) == 0
    text = capsys.readouterr().out
    assert "val_balanced_accuracy" in text and "train_n_pos" in text and str(out) in text
    assert isinstance(load_reward_classifier(out, device="cpu"), ClassifierReward)
    for args, expect in ([["train", f"store={store}", "cameras=[wrist]"], "no camera 'wrist'"],
                         [["train", f"store={store}", "camera=[front]"], "unknown setting 'camera'"],
                         [["train", "cameras=[front]"], "needs an episode store"],
                         [["train", f"store={store}", "cameras=[front]", "steps=many"], "steps must be an integer"],
                         [["fit"], "usage: robot-rl reward-classifier train"]):
        with pytest.raises(CLIError) as e:
            cmd_reward_classifier(args)
        assert expect in str(e.value).splitlines()[0], (args, str(e.value))


def test_model_forward_shapes_and_augmentation_only_in_training():
    from robot_rl.rl.reward_classifier import RewardClassifier
    torch.manual_seed(0)
    m = RewardClassifier(["front", "wrist"], {"front": (32, 40, 3), "wrist": (24, 24, 3)})
    x = {"front": torch.randint(0, 255, (4, 32, 40, 3), dtype=torch.uint8),
         "wrist": torch.randint(0, 255, (4, 24, 24, 3), dtype=torch.uint8)}
    m.eval()
    assert m(x).shape == (4,) and torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))  # random shifts


def test_random_shift_is_a_crop_of_the_padded_image():
    from robot_rl.rl.reward_classifier import random_shift
    torch.manual_seed(0)
    x = torch.rand(16, 3, 10, 12)
    y = random_shift(x, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for i in range(16):
        hits = [(t, l) for t in range(5) for l in range(5) if torch.equal(y[i], padded[i, :, t:t + 10, l:l + 12])]
        assert hits, i
        offsets.add(hits[0])
    assert len(offsets) > 1 and torch.equal(random_shift(x, pad=0), x)
