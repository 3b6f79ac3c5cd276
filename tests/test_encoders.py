import numpy as np
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
    assert shared.cnns["a"] is shared.cnns["b"]


def test_resnet_accepts_hwc_uint8():
    enc = ResNetEncoder(out_dim=8)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8))
    assert enc(x).shape == (3, 8)
