"""`robot-rl bench inference` on an image checkpoint: the latency section renders the
policy's cameras along its own rollouts (at the recorded size, resized like training), and
reports the observation encoder's time, computed once per query however many network
evaluations the sampler makes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.policies.base import save_checkpoint
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robot_rl.spec import load_spec

STATE = {"joint_pos": 5, "gripper": 1, "ee_pos": 3, "ee_quat": 4}


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = {k: rng.normal(size=(64, d)).astype(np.float32) for k, d in STATE.items()}
    data["action"] = rng.uniform(-1, 1, size=(64, 7)).astype(np.float32)
    norm = Normalizer.fit(data, "minmax")
    torch.manual_seed(0)
    cfg = DiffusionConfig(state_keys=list(STATE), state_dims=dict(STATE), cameras=["image_front", "image_wrist"],
                          action_dim=7, n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=[16, 32],
                          feature_dim=16, step_embed_dim=16, num_train_timesteps=100, num_inference_steps=4,
                          cnn_widths=[8, 16], cnn_keypoints=8, crop=20)
    policy = DiffusionPolicy(cfg, norm).eval()
    spec = load_spec("so101").with_cameras(["front", "wrist"], 32, 32)
    path = tmp_path_factory.mktemp("ck") / "image_diffusion"
    save_checkpoint(policy, path, spec, {"task": "reach", "action_mode": "ee_delta", "execution": "chunk",
                                         "image_size": 24, "image_resize": "area",
                                         "image_source_size": {"image_front": [32, 32], "image_wrist": [32, 32]}})
    return path


def test_latency_of_an_image_policy_reports_the_encoder_once_per_query(image_checkpoint, tmp_path, monkeypatch):
    from robot_rl.runtime import bench

    seen = []
    real = bench._observation_stream

    def stream(*a, **kw):
        out = real(*a, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(bench, "_observation_stream", stream)
    monkeypatch.setattr(bench, "latency_configs", lambda diffusion, replan: {
        "cold DDIM-4": dict(mode="cold", scheduler="ddim", num_steps=4),
        # an untrained network disagrees with every warm start: no fallback, so 1 NFE stays 1
        "RTI warm 1 NFE": dict(mode="warm", warm_steps=1, fallback_threshold=float("inf")),
        "RTI warm 3 NFE": dict(mode="warm", warm_steps=3)})
    rep = bench.run_bench(str(image_checkpoint), sections=["latency", "loop"], queries=12, out=tmp_path,
                          progress=False)
    # the stream carries both cameras at the size the policy sees (rendered 32, resized 24)
    item = seen[0][0]
    assert item["image_front"].shape == item["image_wrist"].shape == (2, 24, 24, 3)
    assert item["image_front"].dtype == np.uint8 and item["image_front"].std() > 0
    assert rep["cameras"] == ["front", "wrist"] and rep["image_size"] == 24 and rep["camera_size"] == 32
    assert "loop" not in rep  # its worker feeds state only: skipped, said so
    lat = rep["latency"]
    assert lat["cold DDIM-4"]["nfe_per_query"] == 4 and lat["RTI warm 1 NFE"]["nfe_per_query"] == 1
    assert lat["RTI warm 3 NFE"]["nfe_per_query"] >= 3  # 3, or 3 + a cold redo after a fallback
    for name, v in lat.items():
        # one observation encoding per query, shared by every network evaluation of that query
        assert v["encoder_calls_per_query"] == 1.0, name
        assert 0 < v["encoder_share"] < 1 and 0 < v["encoder_ms_mean"] < v["mean_ms"], name
    # more network evaluations, the same single encoding: the encoder's share falls
    assert lat["cold DDIM-4"]["encoder_share"] < lat["RTI warm 1 NFE"]["encoder_share"]
    assert (tmp_path / "inference.json").exists()


def test_latency_of_an_onnx_export_runs_the_same_samplers_without_rtc(image_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from robot_rl.policies.export import export_onnx
    from robot_rl.runtime import bench

    export_onnx(image_checkpoint, tmp_path / "onnx")
    monkeypatch.setattr(bench, "latency_configs", lambda diffusion, replan: {
        "cold DDIM-4": dict(mode="cold", scheduler="ddim", num_steps=4),
        "RTI warm 1 NFE": dict(mode="warm", warm_steps=1, fallback_threshold=float("inf")),
        "RTC": dict(mode="rtc")})
    rep = bench.run_bench(str(tmp_path / "onnx"), sections=["latency"], queries=8, out=tmp_path / "b", progress=False)
    assert rep["backend"] == "onnxruntime"
    # real-time chunking guides with the denoiser's gradients, which an ONNX graph does not give
    assert sorted(rep["latency"]) == ["RTI warm 1 NFE", "cold DDIM-4"]
    assert rep["latency"]["RTI warm 1 NFE"]["nfe_per_query"] == 1
    assert rep["latency"]["cold DDIM-4"]["encoder_calls_per_query"] == 1.0
