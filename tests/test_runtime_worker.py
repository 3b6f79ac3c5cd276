"""InferenceWorker: thread and spawn-process kinds, the no-pickle wire format, settings
changes, errors as results, refusing a checkpoint for another robot."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_rl.policies.base import CheckpointError, save_checkpoint
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robot_rl.runtime.samplers import SamplerError
from robot_rl.runtime.worker import InferenceWorker, WorkerDead, coerce_settings, pack, unpack
from robot_rl.spec import load_spec

TINY_KEYS = {"joint_pos": 5, "gripper": 1}
CHUNK_LEN = 7  # horizon 8 - n_obs_steps 2 + 1
NUM_STEPS = 4  # cold network evaluations


def make_tiny_checkpoint(path: Path, action_dim: int = 7, action_lo: float = -1.0, action_hi: float = 1.0,
                         zero_action_scale: bool = False, action_mode: str = "ee_delta") -> Path:
    """An untrained tiny state diffusion policy for so101 (joint_pos + gripper in), saved.
    Its normaliser maps the network's [-1, 1] to [action_lo, action_hi] (the gripper dim to
    [0, 1] unless the range is widened); ``zero_action_scale`` makes every action inf/NaN."""
    rng = np.random.default_rng(0)
    n = 64
    act = rng.uniform(action_lo, action_hi, (n, action_dim))
    if action_lo == -1.0 and action_hi == 1.0:
        act[:, -1] = rng.uniform(0, 1, n)
    data = {"joint_pos": rng.uniform(-1, 1, (n, 5)), "gripper": rng.uniform(0, 1, (n, 1)), "action": act}
    norm = Normalizer.fit(data)
    if zero_action_scale:
        norm = Normalizer({**norm.scale, "action": np.zeros(action_dim, np.float32)}, norm.offset, norm.modes)
    cfg = DiffusionConfig(state_keys=list(TINY_KEYS), state_dims=dict(TINY_KEYS), action_dim=action_dim,
                          n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=[16, 32], feature_dim=16,
                          step_embed_dim=16, num_train_timesteps=50, num_inference_steps=NUM_STEPS)
    torch.manual_seed(0)
    pol = DiffusionPolicy(cfg, norm).eval()
    return save_checkpoint(pol, path, load_spec("so101"), metadata={"action_mode": action_mode})


def obs_history(rng=None) -> dict[str, np.ndarray]:
    rng = rng or np.random.default_rng(1)
    return {"joint_pos": rng.uniform(-0.5, 0.5, (2, 5)).astype(np.float32),
            "gripper": rng.uniform(0, 1, (2, 1)).astype(np.float32)}


def wait_result(w: InferenceWorker, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = w.poll()
        if r is not None:
            return r
        time.sleep(0.002)
    raise AssertionError("the worker did not answer")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("worker") / "tiny")


def test_wire_format_round_trips_arrays_without_pickle():
    arrays = {"f": np.arange(12, dtype=np.float32).reshape(3, 4), "u8": np.full((2, 2, 3), 7, np.uint8),
              "i64": np.array([-1, 2**40], np.int64), "empty": np.zeros((0, 7), np.float32),
              "t": np.arange(6, dtype=np.float64).reshape(2, 3).T}  # non-contiguous
    frame = pack({"type": "query", "step": 3, "x": float("inf")}, arrays)
    (n,) = struct.unpack_from("<I", frame)
    header = json.loads(frame[4:4 + n])  # plain JSON, then raw bytes
    assert header["type"] == "query" and len(header["arrays"]) == len(arrays)
    h, got = unpack(frame)
    assert h["step"] == 3 and h["x"] == float("inf")
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape
        np.testing.assert_array_equal(got[k], a)
        assert got[k].flags.writeable
    with pytest.raises(TypeError, match="object"):
        pack({}, {"o": np.array([{}, None], dtype=object)})


def test_coerce_settings_types():
    from robot_rl.runtime.samplers import SamplerSettings
    assert coerce_settings(SamplerSettings, {"warm_steps": 3.0, "discrete_scale": 1, "num_steps": None,
                                             "renoise": np.bool_(False)}) == \
        {"warm_steps": 3, "discrete_scale": 1.0, "num_steps": None, "renoise": False}
    for bad in ({"warm_steps": 2.5}, {"mode": 3}, {"renoise": 1}, {"k_prime": "30"}, {"nope": 1}):
        with pytest.raises(ValueError):
            coerce_settings(SamplerSettings, bad)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_worker_chunks_settings_errors_and_close(ckpt, kind):
    spec = load_spec("so101")
    # untrained: its first estimate is far from any warm start, so never fall back here
    w = InferenceWorker(ckpt, spec, {"mode": "warm", "warm_steps": 2, "fallback_threshold": float("inf")}, kind=kind)
    try:
        assert (w.action_dim, w.chunk_len, w.n_obs_steps, w.state_keys) == (7, CHUNK_LEN, 2, list(TINY_KEYS))
        obs = obs_history()
        assert not w.busy
        assert w.submit(obs, t_obs=12.5, step=0, delay_steps=0)
        assert w.busy and not w.submit(obs, 12.5, 0, 0), "one query at a time"
        r = wait_result(w)
        assert not w.busy and w.poll() is None, "a result is returned once"
        assert r.error is None and r.chunk.shape == (CHUNK_LEN, 7) and r.chunk.dtype == np.float32
        assert np.all(np.isfinite(r.chunk))
        assert (r.t_obs, r.step) == (12.5, 0)
        # no previous chunk: the first query warm-starts from holding still (the checkpoint's
        # action mode), with the warm query's 2 evaluations instead of a cold sample's NUM_STEPS
        assert not r.cold and r.nfe == 2
        assert r.latency_s >= r.compute_s > 0
        # the second query continues the first: a warm start with 2 evaluations
        assert w.submit(obs, 12.55, 1, 1)
        r = wait_result(w)
        assert r.error is None and not r.cold and r.nfe == 2 and r.chunk.shape == (CHUNK_LEN, 7)
        # bad settings raise here, in the caller, and change nothing
        before = w.sampler_settings
        with pytest.raises(SamplerError, match="k_prime"):
            w.update_sampler(k_prime=1000)  # the policy has 50 training steps
        with pytest.raises(ValueError, match="unknown"):
            w.update_sampler(warm_step=3)
        with pytest.raises(ValueError, match="warm_steps"):
            w.update_sampler(warm_steps=2.5)
        assert w.sampler_settings == before, "a refused change applies nothing"
        # a valid change applies before the next query
        w.update_sampler(mode="cold")
        assert w.submit(obs, 12.6, 2, 1)
        r = wait_result(w)
        assert r.cold and r.nfe == NUM_STEPS
        w.update_sampler(mode="warm")
        w.update_sampler(start="cold")
        w.reset()  # new episode: nothing to warm-start from, and starts set to cold
        assert w.submit(obs, 0.0, 0, 0)
        r = wait_result(w)
        assert r.cold and r.nfe == NUM_STEPS
        # a sampler exception is a result, and the worker keeps serving
        assert w.submit({"joint_pos": obs["joint_pos"]}, 0.05, 1, 0)
        r = wait_result(w)
        assert r.chunk is None and "gripper" in r.error
        assert w.submit(obs, 0.1, 2, 0)
        r = wait_result(w)
        assert r.error is None and r.chunk.shape == (CHUNK_LEN, 7)
        if kind == "process":  # a dead child: the query in flight fails, later submits raise
            assert w.submit(obs, 0.15, 3, 0)
            w._proc.kill()
            r = wait_result(w)
            assert r.chunk is None and "died" in r.error
            with pytest.raises(WorkerDead):
                w.submit(obs, 0.2, 4, 0)
    finally:
        w.close()
    w.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(obs, 0.0, 0, 0)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_checkpoint_for_another_robot_is_refused(ckpt, kind):
    with pytest.raises(CheckpointError, match="arm6"):
        InferenceWorker(ckpt, load_spec("arm6"), kind=kind)


def test_missing_checkpoint_and_bad_settings(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        InferenceWorker(tmp_path / "nothing", load_spec("so101"))
    with pytest.raises(SamplerError, match="mode"):
        InferenceWorker(ckpt, load_spec("so101"), {"mode": "lukewarm"})
    with pytest.raises(ValueError, match="kind"):
        InferenceWorker(ckpt, load_spec("so101"), kind="fiber")


def test_injected_delay_counts_in_latency_not_compute(ckpt):
    with InferenceWorker(ckpt, load_spec("so101"), {"mode": "cold"}, injected_delay_s=0.15) as w:
        w.submit(obs_history(), 0.0, 0, 0)
        r = wait_result(w)
    assert r.error is None
    assert r.latency_s >= r.compute_s + 0.15
    assert r.compute_s < r.latency_s - 0.1
