import numpy as np
import pytest
import torch

from robot_rl.policies.common.encoders import ObservationEncoder, RandomCrop, ResNetEncoder, SpatialSoftmax


def test_spatial_softmax_finds_the_bright_spot():
    ss = SpatialSoftmax(1, keypoints=1)
    with torch.no_grad():
        ss.proj.weight.fill_(1.0)
        ss.proj.bias.zero_()
        ss.temperature.fill_(0.01)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 2, 6] = 10.0  # row 2 (y), column 6 (x)
    ex, ey = ss(x)[0]
    assert abs(ex.item() - (-1 + 2 * 6 / 8)) < 1e-3 and abs(ey.item() - (-1 + 2 * 2 / 8)) < 1e-3


def test_random_crop_train_vs_eval():
    img = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    crop = RandomCrop(8)
    crop.eval()
    assert torch.equal(crop(img), img[:, :, 1:9, 1:9])
    crop.train()
    torch.manual_seed(0)
    outs = {tuple(crop(img)[0, 0, 0, :2].tolist()) for _ in range(20)}
    assert len(outs) > 1  # different offsets
    out = crop(img)
    assert out.shape == (2, 3, 8, 8)
    # every crop is a contiguous window of the original
    r0, c0 = divmod(int(out[0, 0, 0, 0].item()), 10)
    assert torch.equal(out[0], img[0, :, r0:r0 + 8, c0:c0 + 8])


def test_observation_encoder_shapes_and_gradients():
    enc = ObservationEncoder({"joint_pos": 5, "gripper": 1}, ["image_front", "image_wrist"], feature_dim=32, crop=84)
    obs = {"joint_pos": torch.randn(4, 2, 5), "gripper": torch.rand(4, 2, 1),
           "image_front": torch.randint(0, 255, (4, 2, 96, 96, 3), dtype=torch.uint8),
           "image_wrist": torch.randint(0, 255, (4, 2, 96, 96, 3), dtype=torch.uint8)}
    f = enc(obs)
    assert f.shape == (4, 2, enc.out_dim) and enc.out_dim == 96
    f.sum().backward()
    assert enc.cnns["image_front"].stem[0].weight.grad is not None
    shared = ObservationEncoder({}, ["a", "b"], feature_dim=16, shared_cnn=True)
    assert shared.cnn("a") is shared.cnn("b") and list(shared.cnns) == ["shared"]
    # the shared CNN's weights appear once in the state dict (safetensors refuses aliases)
    assert sum(k.endswith("stem.0.weight") for k in shared.state_dict()) == 1


def test_shared_cnn_batches_cameras_to_the_same_features_as_one_at_a_time():
    torch.manual_seed(0)
    enc = ObservationEncoder({"q": 3}, ["a", "b"], feature_dim=8, shared_cnn=True, widths=(8, 16), keypoints=4).eval()
    obs = {"q": torch.randn(2, 2, 3), "a": torch.randint(0, 255, (2, 2, 32, 32, 3), dtype=torch.uint8),
           "b": torch.randint(0, 255, (2, 2, 32, 32, 3), dtype=torch.uint8)}
    f = enc(obs)
    one = enc.cnn("a")
    fa = one(obs["a"].reshape(4, 32, 32, 3)).reshape(2, 2, -1)
    fb = one(obs["b"].reshape(4, 32, 32, 3)).reshape(2, 2, -1)
    torch.testing.assert_close(f[..., 8:16], fa, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f[..., 16:], fb, atol=1e-5, rtol=1e-5)


def test_cnn_widths_set_depth_and_pooling_is_selectable():
    narrow = ResNetEncoder(out_dim=8, widths=(8, 16), pool="avg")
    deep = ResNetEncoder(out_dim=8, widths=(8, 16, 32, 64))
    assert len(narrow.blocks) == 2 and len(deep.blocks) == 4
    assert narrow.pool.out_dim == 16 and deep.pool.out_dim == 64  # avg: channels; softmax: 2 x keypoints
    x = torch.randint(0, 255, (3, 48, 48, 3), dtype=torch.uint8)
    assert narrow(x).shape == deep(x).shape == (3, 8)
    with pytest.raises(ValueError, match="pool must be one of"):
        ResNetEncoder(widths=(8,), pool="max")
    with pytest.raises(ValueError, match="widths"):
        ResNetEncoder(widths=())


def test_resnet_accepts_hwc_uint8():
    enc = ResNetEncoder(out_dim=8)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8))
    assert enc(x).shape == (3, 8)
