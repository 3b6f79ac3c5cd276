"""`robot-rl train`: the training loop, its outputs, resume, refusals, and an image-based
diffusion policy trained and evaluated end to end on CPU (the CI smoke test)."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from robot_rl.cli.main import main
from robot_rl.data import SequenceSampler
from robot_rl.learn.train import EMA, Prefetcher, lr_factor
from robot_rl.policies.base import load_checkpoint


@pytest.fixture(scope="module")
def pick_store(tmp_path_factory):
    """Six real pick_cube expert episodes with two 32x32 cameras."""
    path = tmp_path_factory.mktemp("train") / "pick.zarr"
    rc = main(["record", "sim", "task=pick_cube", "episodes=6", "cameras=[front,wrist]", "image_size=32",
               f"out={path}", "progress=false"])
    assert rc == 0
    return path


def rows(out):
    return list(csv.DictReader(open(out / "log.csv")))


def test_train_writes_logs_checkpoints_and_evaluates(pick_store, tmp_path, capsys):
    out = tmp_path / "bc"
    rc = main(["train", "policy=mlp_bc", f"dataset={pick_store}", "steps=40", "batch_size=32", "log_every=10",
               f"out={out}", "eval_episodes=2", "eval_n_envs=2", "eval_videos=1", "progress=false", "save_every=20"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "trained mlp_bc on pick_cube: 40 steps" in text and "eval: success" in text
    log = rows(out)
    train_rows = [r for r in log if r["loss"]]
    assert [int(r["step"]) for r in train_rows] == [10, 20, 30, 40]
    assert float(train_rows[-1]["loss"]) < float(train_rows[0]["loss"])
    assert all(0 <= float(r["data_wait_share"]) < 1 for r in train_rows)
    # warm-up then cosine: the LR rises, then falls towards zero
    lrs = [float(r["lr"]) for r in train_rows]
    assert lrs[-1] < max(lrs)
    ev = [r for r in log if r["eval_success"]]
    assert len(ev) == 1 and 0 <= float(ev[0]["eval_success"]) <= 1
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "eval").glob("step_*/eval.json")) and list((out / "eval").glob("step_*/*.mp4"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 40 and 0 <= summary["data_wait_share"] < 1
    pol, cfg = load_checkpoint(out / "checkpoints" / "last", device="cpu")
    assert cfg["metadata"]["task"] == "pick_cube" and cfg["metadata"]["action_mode"] == "ee_delta"
    assert cfg["metadata"]["episodes"] == 6 and cfg["metadata"]["step"] == 40
    assert (out / "checkpoints" / "best" / "model.safetensors").exists()
    # the checkpoint holds the EMA weights, not the raw ones
    from safetensors.torch import load_file
    state = load_file(str(out / "train_state" / "state.safetensors"))
    raw = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    k0 = next(k for k in raw if k.endswith("weight"))
    assert not torch.equal(raw[k0], ema[k0])
    assert torch.equal(pol.state_dict()[k0].cpu(), ema[k0])


def test_resume_continues_and_refuses_other_settings(pick_store, tmp_path, capsys):
    out = tmp_path / "bc"
    common = ["policy=mlp_bc", f"dataset={pick_store}", "batch_size=16", "log_every=10", f"out={out}",
              "eval_final=false", "progress=false", "save_every=10"]
    assert main(["train", *common, "steps=20"]) == 0
    st = json.loads((out / "train_state" / "state.json").read_text())
    assert st["step"] == 20
    assert main(["train", *common, "steps=40", "resume=true"]) == 0
    assert "resumed from" in capsys.readouterr().out
    steps = [int(r["step"]) for r in rows(out) if r["loss"]]
    assert steps == [10, 20, 30, 40]
    st = json.loads((out / "train_state" / "state.json").read_text())
    assert st["step"] == 40 and st["ema_updates"] == 40
    # AdamW's own step counter came back with the optimiser state
    from safetensors.torch import load_file
    t = load_file(str(out / "train_state" / "state.safetensors"))
    assert float(t["opt.0.step"]) == 40
    rc = main(["train", *common, "steps=60", "resume=true", "policy.horizon=8"])
    assert rc == 2
    assert "cannot resume" in capsys.readouterr().err


def test_train_refusals(pick_store, tmp_path, capsys):
    cases = [
        (["train", "policy=mlp_bc", f"dataset={tmp_path / 'nope.zarr'}"], "no episode store"),
        (["train", "policy=nope", f"dataset={pick_store}"], "policy"),
        (["train", "policy=mlp_bc", f"dataset={pick_store}", "task=push"], "no successful episodes of task 'push'"),
        (["train", "policy=mlp_bc", f"dataset={pick_store}", "max_episodes=50"], "asked for 50 episodes"),
        (["train", "policy=mlp_bc", f"dataset={pick_store}", "policy.state_keys=[joint_pos,torque]"], "lacks ['torque']"),
        (["train", "policy=mlp_bc"], "needs an episode store"),
        (["train", "policy=mlp_bc", f"dataset={pick_store}", "steps=null"], "steps=N or max_minutes=M"),
    ]
    for argv, msg in cases:
        rc = main([*argv, f"out={tmp_path / 'x'}", "progress=false"])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (argv, err)
        assert "Traceback" not in err


def test_image_diffusion_policy_trains_and_evaluates_on_cpu(pick_store, tmp_path, capsys):
    """The CI smoke test of the image-based diffusion policy: front + wrist cameras, random
    crop, ResNet encoders, trained a few steps and evaluated in the rendering twin."""
    out = tmp_path / "dp_img"
    rc = main(["train", "policy=diffusion", f"dataset={pick_store}", "policy.cameras=[front,wrist]", "policy.crop=28",
               "policy.state_keys=[joint_pos,gripper]", "policy.feature_dim=32", "policy.down_dims=[16,32]",
               "steps=6", "batch_size=8", "log_every=2", f"out={out}", "eval_episodes=2", "eval_n_envs=2",
               "eval_videos=0", "progress=false", "policy.num_inference_steps=2"])
    assert rc == 0, capsys.readouterr().err
    pol, cfg = load_checkpoint(out / "checkpoints" / "last", device="cpu")
    assert pol.config.cameras == ["image_front", "image_wrist"] and cfg["metadata"]["image_size"] == 32
    assert any(n.startswith("encoder.cnns.image_wrist") for n, _ in pol.named_parameters())
    ev = json.loads(next((out / "eval").glob("step_*/eval.json")).read_text())
    assert ev["episodes"] == 2
    obs = {"joint_pos": np.zeros((2, 5), np.float32), "gripper": np.zeros((2, 1), np.float32),
           "image_front": np.zeros((2, 32, 32, 3), np.uint8), "image_wrist": np.zeros((2, 32, 32, 3), np.uint8)}
    assert pol.predict_chunk(obs, torch.Generator().manual_seed(0)).shape == (pol.chunk_len, 7)


def test_prefetcher_and_schedules(pick_store):
    s = SequenceSampler(pick_store, obs_keys=["joint_pos"], n_obs_steps=2, horizon=8)
    pre = Prefetcher(s, 16, seed=0, device=torch.device("cpu"))
    try:
        b = pre.next()
        assert b["joint_pos"].shape == (16, 2, 5) and b["action"].shape == (16, 8, 7) and b["is_pad"].dtype == torch.bool
    finally:
        pre.close()
    assert lr_factor(0.0, 0.1) < lr_factor(0.05, 0.1) < lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.5) and lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-9)
    net = torch.nn.Linear(3, 3)
    ema = EMA(net)
    decays = []
    for _ in range(5):
        decays.append(ema.decay())
        before = [p.clone() for p in ema.model.parameters()]
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        ema.update(net)
        for b0, pe, pn in zip(before, ema.model.parameters(), net.parameters()):
            assert torch.allclose(pe, decays[-1] * b0 + (1 - decays[-1]) * pn)
    assert decays[0] == 0.0 and all(a < b for a, b in zip(decays, decays[1:]))
    assert math.isclose(EMA(net, max_decay=0.5).decay(), 0.0)


@pytest.fixture(scope="module")
def jpeg_store(tmp_path_factory):
    """Three short pick_cube-shaped episodes whose front camera is stored at 32x24 (JPEG),
    while the robot spec's cameras are 96x96."""
    from robot_rl.data import EpisodeStore
    path = tmp_path_factory.mktemp("train_jpeg") / "jpeg.zarr"
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, "so101", image_codecs={"image_front": "jpeg:90"}) as st:
        for _ in range(3):
            ep = st.start_episode("pick_cube", source="expert", extra={"action_mode": "ee_delta"})
            for t in range(24):
                ep.add_step({"image_front": rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
                             "joint_pos": rng.normal(size=5).astype(np.float32),
                             "gripper": rng.random(1).astype(np.float32),
                             "action": rng.normal(size=7).astype(np.float32)}, timestamp=t / 10)
            ep.commit(success=True)
    return path


def test_images_of_another_size_resize_only_when_asked(jpeg_store, tmp_path, capsys):
    common = ["train", "policy=diffusion", f"dataset={jpeg_store}", "policy.cameras=[front]",
              "policy.state_keys=[joint_pos,gripper]", "policy.feature_dim=16", "policy.down_dims=[16,32]",
              "policy.horizon=8", "steps=2", "batch_size=4", "log_every=1", "eval_final=false", "progress=false",
              "tensorboard=false"]
    rc = main([*common, f"out={tmp_path / 'refused'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "stores image_front at 32x24 but its robot spec's camera 'front' is 96x96" in err, err
    assert "image_size=96" in err and "Traceback" not in err
    assert main([*common, f"out={tmp_path / 'bad'}", "image_size=[1,2,3]"]) == 2
    assert "image_size must be" in capsys.readouterr().err
    out = tmp_path / "small"
    rc = main([*common, f"out={tmp_path / 'held'}", "image_size=16"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "images image_front decoded and resized to 16x16 once, held in memory" in text.out
    rc = main([*common, f"out={out}", "image_size=16", "loader_threads=2", "preload_images_mb=0"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "image_front 32x24 decoded and resized to 16x16 by 2 loader threads" in text.out
    pol, cfg = load_checkpoint(out / "checkpoints" / "last", device="cpu")
    meta = cfg["metadata"]
    assert meta["image_size"] == 16 and meta["image_source_size"] == {"image_front": [32, 24]}
    assert meta["image_resize"] == "area"
    obs = {"joint_pos": np.zeros((2, 5), np.float32), "gripper": np.zeros((2, 1), np.float32),
           "image_front": np.zeros((2, 16, 16, 3), np.uint8)}
    assert pol.predict_chunk(obs, torch.Generator().manual_seed(0)).shape == (pol.chunk_len, 7)
    # non-square: [width, height]; resuming with another size is refused
    out2 = tmp_path / "wide"
    assert main([*common, f"out={out2}", "image_size=[32,24]"]) == 0
    _, cfg2 = load_checkpoint(out2 / "checkpoints" / "last", device="cpu")
    assert cfg2["metadata"]["image_size"] == [32, 24] and cfg2["metadata"]["image_resize"] is None
    capsys.readouterr()
    assert main([*common, f"out={out}", "image_size=8", "steps=4", "resume=true"]) == 2
    assert "image_size=16, not 8" in capsys.readouterr().err


def test_prefetcher_threads_keep_the_batch_order(jpeg_store):
    from robot_rl.data import EpisodeStore
    with EpisodeStore.open(jpeg_store) as st:
        s = SequenceSampler(st, obs_keys=["image_front", "joint_pos"], n_obs_steps=2, horizon=8, image_size=(12, 16),
                            preload_images_mb=0)
        assert s.lazy_images == ["image_front"]
        seqs = []
        for threads in (1, 3):
            pre = Prefetcher(s, 16, seed=5, device=torch.device("cpu"), loader_threads=threads, depth=2)
            assert pre.loader_threads == threads
            try:
                seqs.append([pre.next() for _ in range(12)])  # more than one pass over the 72 windows
            finally:
                pre.close()
        for a, b in zip(*seqs):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), k
        assert seqs[0][0]["image_front"].shape == (16, 2, 12, 16, 3)
        pre = Prefetcher(s, 4, 0, torch.device("cpu"))
        assert pre.loader_threads >= 1
        pre.close()
    s2 = SequenceSampler(jpeg_store, obs_keys=["joint_pos"], n_obs_steps=2, horizon=8)
    pre = Prefetcher(s2, 8, 0, torch.device("cpu"))
    try:
        assert pre.loader_threads == 1
    finally:
        pre.close()


def test_image_preset_sets_the_cpu_recipe_and_its_image_size(jpeg_store, tmp_path, capsys):
    """policy=diffusion_image: the narrow per-camera CNN, crop and batch of the CPU recipe, and
    its own image_size (frames resized once, held in memory) unless the run sets one."""
    out = tmp_path / "preset"
    rc = main(["train", "policy=diffusion_image", f"dataset={jpeg_store}", "policy.observations=null",
               "policy.cameras=[front]", "policy.state_keys=[joint_pos,gripper]", "policy.image_size=16",
               "policy.crop=12", "policy.down_dims=[16,32]", "policy.horizon=8", "steps=2", "log_every=1",
               "eval_final=false", "progress=false", "tensorboard=false", f"out={out}"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "images image_front decoded and resized to 16x16 once, held in memory" in text.out
    pol, cfg = load_checkpoint(out / "checkpoints" / "last", device="cpu")
    assert cfg["metadata"]["image_size"] == 16 and cfg["metadata"]["image_resize"] == "area"
    assert pol.config.cnn_widths == [16, 32, 64] and pol.config.crop == 12 and pol.config.cameras == ["image_front"]
    assert len(pol.encoder.cnn("image_front").blocks) == 3
