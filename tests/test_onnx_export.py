"""ONNX export and the onnxruntime backend: parity with torch (networks, cold DDIM, the RTI
warm start), the manifest, ``robot-rl export`` / ``robot-rl eval backend=onnxruntime``, the
inference worker, and one clear error per bad input."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from robot_rl.cli.main import main  # noqa: E402
from robot_rl.policies.act import ACTConfig, ACTPolicy  # noqa: E402
from robot_rl.policies.base import CheckpointError, PolicyConfig, load_checkpoint, save_checkpoint  # noqa: E402
from robot_rl.policies.common.normalizer import Normalizer  # noqa: E402
from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy  # noqa: E402
from robot_rl.policies.mlp_bc import MLPBCPolicy  # noqa: E402
from robot_rl.policies.export import (MANIFEST, OnnxBackendError, export_onnx, load_onnx_policy,  # noqa: E402
                                      load_policy)
from robot_rl.runtime.samplers import SamplerError, make_sampler  # noqa: E402
from robot_rl.runtime.worker import InferenceWorker  # noqa: E402
from robot_rl.spec import load_spec  # noqa: E402

SPEC = load_spec("so101")
DIMS = {"joint_pos": 5, "gripper": 1, "ee_pos": 3}  # so101's proprio keys (the twin observes them)
IMG = 32  # the image policies' frames (metadata image_size)
TOL = 1e-4


def _normalizer(seed: int = 0) -> Normalizer:
    rng = np.random.default_rng(seed)
    act = rng.uniform(-1, 1, (64, 7))
    act[:, -1] = rng.uniform(0, 1, 64)
    return Normalizer.fit({**{k: rng.uniform(-1, 1, (64, d)) for k, d in DIMS.items()}, "action": act})


def _save(policy, path, **meta):
    return save_checkpoint(policy, path, SPEC, {"action_mode": "ee_delta", **meta})


@pytest.fixture(scope="module")
def image_diffusion(tmp_path_factory):
    """(checkpoint, export dir): a tiny U-Net diffusion policy on joints + gripper + a camera."""
    torch.manual_seed(0)
    cfg = DiffusionConfig(state_keys=["joint_pos", "gripper"], state_dims=DIMS, cameras=["image_front"], action_dim=7,
                          n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=[16, 32], feature_dim=16,
                          step_embed_dim=16, cnn_widths=[8, 16], cnn_keypoints=4, crop=28, num_train_timesteps=20,
                          num_inference_steps=4)
    d = tmp_path_factory.mktemp("onnx_dp")
    ck = _save(DiffusionPolicy(cfg, _normalizer()), d / "ck", image_size=IMG, task="pick_cube")
    export_onnx(ck, d / "onnx")
    return ck, d / "onnx"


@pytest.fixture(scope="module")
def state_diffusion(tmp_path_factory):
    """(checkpoint, export dir): a tiny transformer-denoiser diffusion policy on proprio keys."""
    torch.manual_seed(1)
    cfg = DiffusionConfig(state_keys=list(DIMS), state_dims=DIMS, action_dim=7, n_obs_steps=2, horizon=8,
                          n_action_steps=4, denoiser="transformer", d_model=32, n_heads=2, n_layers=1,
                          feature_dim=16, num_train_timesteps=50, num_inference_steps=3)
    d = tmp_path_factory.mktemp("onnx_tdp")
    ck = _save(DiffusionPolicy(cfg, _normalizer(1)), d / "ck", task="pick_cube", execution="chunk")
    return ck, d


@pytest.fixture(scope="module")
def act(tmp_path_factory):
    """(checkpoint, export dir): a tiny image ACT."""
    torch.manual_seed(2)
    cfg = ACTConfig(state_keys=["joint_pos", "gripper"], state_dims=DIMS, cameras=["image_front"], action_dim=7,
                    n_obs_steps=1, horizon=8, n_action_steps=4, dim_model=32, n_heads=2, n_encoder_layers=1,
                    n_decoder_layers=1, n_vae_encoder_layers=1, dim_feedforward=64, latent_dim=8, feature_dim=16,
                    cnn_widths=[8, 16], cnn_keypoints=4, dropout=0.0)
    d = tmp_path_factory.mktemp("onnx_act")
    ck = _save(ACTPolicy(cfg, _normalizer(2)), d / "ck", image_size=IMG, task="pick_cube")
    export_onnx(ck, d / "onnx")
    return ck, d / "onnx"


def observations(policy, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` observation histories in robot units (uint8 frames for cameras)."""
    rng = np.random.default_rng(seed)
    c = policy.config
    obs = {k: rng.uniform(-1, 1, (n, c.n_obs_steps, c.state_dims[k])).astype(np.float32) for k in c.state_keys}
    for k in c.cameras:
        obs[k] = rng.integers(0, 256, (n, c.n_obs_steps, IMG, IMG, 3), dtype=np.uint8)
    return obs


def both(ck, export_dir):
    torch_policy, _ = load_checkpoint(ck, device="cpu")
    onnx_policy, manifest = load_onnx_policy(export_dir, SPEC, threads=1)
    return torch_policy, onnx_policy, manifest


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- parity -------------------------------------------------------------------------------------------
def test_diffusion_encoder_and_denoiser_match_torch(image_diffusion):
    tp, op, _ = both(*image_diffusion)
    assert isinstance(op, DiffusionPolicy) and op.backend == "onnxruntime" and tp.backend == "torch"
    assert not list(op.parameters()), "the ONNX policy holds no (stale) torch weights"
    obs = observations(tp, 400)
    with torch.no_grad():
        for sl in (slice(0, 1), slice(1, 400)):  # batch 1 and a large batch: the batch axis is dynamic
            part = {k: v[sl] for k, v in obs.items()}
            c_t, c_o = tp.encode_obs(tp.obs_to_tensors(part)), op.encode_obs(op.obs_to_tensors(part))
            assert c_o.shape == c_t.shape and (c_o - c_t).abs().max() < TOL
        T = tp.config.num_train_timesteps
        x = torch.randn(399, 8, 7, generator=gen())
        t = torch.randint(0, T, (399,), generator=gen())
        out_t, out_o = tp.denoise(x, t, c_t), op.denoise(x, t, c_t)
        assert (out_o - out_t).abs().max() < TOL
        assert (op.denoise(x[:3], 5, c_t[:3]) - tp.denoise(x[:3], 5, c_t[:3])).abs().max() < TOL  # an int step


def test_act_matches_torch(act):
    tp, op, m = both(*act)
    assert isinstance(op, ACTPolicy) and sorted(m["files"]) == ["policy"]
    obs = observations(tp, 300, seed=3)
    a_t, a_o = tp.predict_chunks(obs), op.predict_chunks(obs)
    assert a_o.shape == (300, tp.chunk_len, 7) and np.abs(a_o - a_t).max() < TOL
    one = {k: v[0] for k, v in obs.items()}  # unbatched (n_obs_steps, ...) history
    assert np.abs(op.predict_chunk(one) - tp.predict_chunk(one)).max() < TOL


def test_mlp_bc_matches_torch(tmp_path):
    torch.manual_seed(3)
    cfg = PolicyConfig(state_keys=list(DIMS), state_dims=DIMS, action_dim=7, n_obs_steps=2, horizon=8)
    ck = _save(MLPBCPolicy(cfg, _normalizer(3)), tmp_path / "ck")
    export_onnx(ck, tmp_path / "onnx")
    tp, op, m = both(ck, tmp_path / "onnx")
    assert isinstance(op, MLPBCPolicy) and sorted(m["files"]) == ["policy"]
    obs = observations(tp, 500, seed=4)
    assert np.abs(op.predict_chunks(obs) - tp.predict_chunks(obs)).max() < TOL


def test_cold_ddim_and_rti_warm_start_match_torch(image_diffusion):
    tp, op, _ = both(*image_diffusion)
    obs = observations(tp, 16, seed=5)
    a_t, a_o = tp.predict_chunks(obs, gen(1)), op.predict_chunks(obs, gen(1))
    assert np.abs(a_o - a_t).max() < TOL
    settings = dict(mode="warm", warm_steps=2, k_prime=10, fallback_threshold=0.5, discrete="scale_snap")
    samplers = [make_sampler(p, settings, batch=4, spec=SPEC, action_mode="ee_delta") for p in (tp, op)]
    gens = [gen(2), gen(2)]
    for q in range(6):  # episode starts (hold), warm continuations with delays, a reset in the middle
        o = {k: v[q:q + 4] for k, v in obs.items()}
        if q == 3:
            for s in samplers:
                s.reset([1])
        res = [s.query(o, [q * 2] * 4, [1, 0, 2, 1], None, g) for s, g in zip(samplers, gens)]
        assert np.abs(res[1].chunks - res[0].chunks).max() < TOL
        assert list(res[1].nfe) == list(res[0].nfe) and list(res[1].fallback) == list(res[0].fallback)
    assert samplers[1].counts == samplers[0].counts and samplers[0].counts["warm"] > 0


# -- the manifest ---------------------------------------------------------------------------------------
def test_manifest_describes_the_export(image_diffusion):
    ck, d = image_diffusion
    m = json.loads((d / MANIFEST).read_text())
    cfg = json.loads((ck / "config.json").read_text())
    assert m["policy"] == "diffusion" and m["config"] == cfg["config"] and m["opset"] == 17
    assert m["robot_fingerprint"] == SPEC.fingerprint() and m["robot_spec"] == cfg["robot_spec"]
    assert m["metadata"]["image_size"] == IMG and m["metadata"]["task"] == "pick_cube"
    assert set(m["normalizer"]) == {"joint_pos", "gripper", "ee_pos", "action"}
    assert m["normalizer"]["action"]["mode"] == "minmax" and len(m["normalizer"]["action"]["scale"]) == 7
    assert sorted(m["files"]) == ["denoiser", "encoder"]
    for name, f in m["files"].items():
        assert f["sha256"] == hashlib.sha256((d / f["file"]).read_bytes()).hexdigest()
    enc = m["files"]["encoder"]
    assert [i["name"] for i in enc["inputs"]] == ["joint_pos", "gripper", "image_front"]
    assert enc["inputs"][2] == {"name": "image_front", "shape": ["batch", 2, IMG, IMG, 3], "dtype": "uint8"}
    assert [i["name"] for i in m["files"]["denoiser"]["inputs"]] == ["x_t", "t", "cond"]
    assert all(0 <= v < TOL for v in m["parity"]["max_abs_diff"].values())
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])


# -- refusals ---------------------------------------------------------------------------------------------
def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite_sha(d, name):
    m = json.loads((d / MANIFEST).read_text())
    m["files"][name]["sha256"] = hashlib.sha256((d / f"{name}.onnx").read_bytes()).hexdigest()
    (d / MANIFEST).write_text(json.dumps(m))


def test_bad_exports_are_one_clear_error_each(image_diffusion, tmp_path):
    ck, good = image_diffusion
    # a file that changed after export: its sha256 no longer matches
    d = _copy(good, tmp_path / "sha")
    raw = bytearray((d / "denoiser.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "denoiser.onnx").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"corrupt ONNX file .*denoiser\.onnx: sha256 .* does not match"):
        load_onnx_policy(d)
    # a corrupt file whose manifest agrees (truncated, sha rewritten): onnxruntime refuses it
    d = _copy(good, tmp_path / "trunc")
    raw = (d / "encoder.onnx").read_bytes()
    (d / "encoder.onnx").write_bytes(raw[: len(raw) // 3])
    _rewrite_sha(d, "encoder")
    with pytest.raises(CheckpointError, match=r"corrupt ONNX file .*encoder\.onnx: onnxruntime cannot load it"):
        load_onnx_policy(d)
    # a missing file
    d = _copy(good, tmp_path / "missing")
    (d / "encoder.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"encoder\.onnx is missing"):
        load_onnx_policy(d)
    # no export at all / broken JSON
    with pytest.raises(CheckpointError, match="no ONNX export"):
        load_onnx_policy(tmp_path / "nothing")
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_onnx_policy(d)
    # a manifest for another robot: both robots and fingerprints named
    with pytest.raises(CheckpointError, match=r"'so101' \(fingerprint \w+\).*'arm6' \(fingerprint \w+\)"):
        load_policy(good, spec=load_spec("arm6"))
    # a checkpoint needing a camera the robot lacks (either backend)
    for path in (good, ck):
        with pytest.raises(CheckpointError, match=r"needs cameras \['front'\] that robot 'so101' lacks"):
            load_policy(path, spec=SPEC.with_cameras(["wrist"]))
    # backends that do not fit the path
    with pytest.raises(CheckpointError, match="is an ONNX export: load it with backend=onnxruntime"):
        load_policy(good, backend="torch")
    with pytest.raises(CheckpointError, match="torch checkpoint: use backend=torch, or export it"):
        load_policy(ck, backend="onnxruntime")
    with pytest.raises(CheckpointError, match="backend must be one of auto, torch, onnxruntime; got 'tensorrt'"):
        load_policy(good, backend="tensorrt")


def test_missing_onnxruntime_names_the_extra(image_diffusion, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(CheckpointError, match=r"pip install robot-rl\[onnx\]"):
        load_policy(image_diffusion[1])


def test_rtc_needs_torch_gradients(image_diffusion):
    _, op, _ = both(*image_diffusion)
    s = make_sampler(op, dict(mode="rtc", k_prime=10), spec=SPEC, action_mode="ee_delta")
    obs = observations(op, 1)
    s.query(obs, [0], [0], None, gen())  # an episode start: warm-started from holding still, no guidance
    with pytest.raises(OnnxBackendError, match="no gradients, which real-time chunking .* needs"):
        s.query(obs, [1], [0], None, gen())
    with pytest.raises(OnnxBackendError, match="inference only"):
        op.loss({})


def test_inputs_the_graphs_do_not_take_are_named(image_diffusion):
    _, op, _ = both(*image_diffusion)
    obs = observations(op, 2)
    big = {**obs, "image_front": np.zeros((2, 2, 48, 48, 3), np.uint8)}
    with pytest.raises(ValueError, match=r"image_front: encoder\.onnx takes \(batch, 2, 32, 32, 3\), got \(2, 2, 48, 48, 3\)"):
        op.predict_chunks(big)
    with pytest.raises(ValueError, match="image_front: encoder.onnx takes uint8"):
        op.predict_chunks({**obs, "image_front": obs["image_front"].astype(np.float32) / 255})


# -- the worker, the CLI and eval --------------------------------------------------------------------------
def test_worker_runs_an_export_and_refuses_rtc(state_diffusion):
    ck, d = state_diffusion
    out = d / "onnx"
    export_onnx(ck, out)
    obs = {k: v[0] for k, v in observations(load_checkpoint(ck, device="cpu")[0], 1, seed=9).items()}
    chunks = {}
    for backend, path, kind in (("torch", ck, "thread"), ("onnxruntime", out, "thread"),
                                ("onnxruntime", out, "process")):
        # warm starts without re-noising: no random numbers, the same chunks on both backends
        settings = {"mode": "warm", "renoise": False, "fallback_threshold": float("inf")}
        with InferenceWorker(path, SPEC, settings, kind=kind, backend="auto") as w:
            assert w.info["backend"] == backend
            for step in range(2):
                assert w.submit(obs, 0.0, step, 0)
                while (r := w.poll()) is None:
                    pass
                assert r.error is None, r.error
            chunks[backend, kind] = r.chunk
            if backend == "torch":
                assert w.check_sampler(mode="rtc").mode == "rtc"
            else:  # a run-time switch to rtc is refused like a start-up one
                with pytest.raises(SamplerError, match="'rtc' needs gradients"):
                    w.check_sampler(mode="rtc")
    assert np.abs(chunks["onnxruntime", "thread"] - chunks["torch", "thread"]).max() < TOL
    assert np.array_equal(chunks["onnxruntime", "process"], chunks["onnxruntime", "thread"])
    with pytest.raises(SamplerError, match="'rtc' needs gradients through the denoiser"):
        InferenceWorker(out, SPEC, {"mode": "rtc"}, kind="thread")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_export_then_eval_with_onnxruntime(state_diffusion, tmp_path, capsys):
    ck, _ = state_diffusion
    out = tmp_path / "exported"
    assert main(["export", str(ck), "format=onnx", f"out={out}"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out / 'encoder.onnx'}" in text and f"wrote {out / MANIFEST}" in text
    assert "onnxruntime vs torch, max abs diff" in text
    rc = main(["eval", str(out), "backend=onnxruntime", "episodes=2", "n_envs=2", "videos=0",
               "max_episode_steps=12", "progress=false", "deployable=true"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.startswith("success ") and "/2)" in text
    ev = json.loads((out / "eval_pick_cube" / "eval.json").read_text())
    assert ev["episodes"] == 2 and ev["task"] == "pick_cube"
    # one line each: bad format, a missing checkpoint, eval of an export with backend=torch, a bad backend
    assert main(["export", str(ck), "format=tflite"]) == 2
    assert "format must be one of onnx" in _error_line(capsys)
    assert main(["export", str(tmp_path / "nope"), "format=onnx"]) == 2
    assert "no checkpoint" in _error_line(capsys)
    assert main(["export"]) == 2 and "CHECKPOINT" in _error_line(capsys)
    assert main(["eval", str(out), "backend=torch", "progress=false"]) == 2
    assert "is an ONNX export" in _error_line(capsys)
    assert main(["eval", str(out), "backend=tvm", "progress=false"]) == 2
    assert "backend must be one of" in _error_line(capsys)
