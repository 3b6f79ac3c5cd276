"""Recorder contract: CompressedImage topics and the image `size:` option (resizing happens
where the contract says, never by accident)."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from robot_rl.data.contract import (COMPRESSED_IMAGE, Contract, ContractError, MessageError, resize_image)


def _contract(typ: str, field) -> Contract:
    return Contract.from_dict({"name": "t", "fps": 30, "topics": [
        {"topic": "/camera/{camera}/image_raw/compressed" if typ == COMPRESSED_IMAGE else "/camera/{camera}/image_raw",
         "type": typ, "policy": "drop", "fields": {"image_{camera}": field}}]})


def _frame(h=120, w=160, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.int16)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def _compressed(img: np.ndarray, fmt: str, ext: str) -> SimpleNamespace:
    ok, buf = cv2.imencode(ext, img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
    assert ok
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=3, nanosec=5)), format=fmt,
                           data=buf.reshape(-1))


def _psnr(a, b) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b) ** 2)))


@pytest.mark.parametrize("fmt,ext", [("jpeg", ".jpg"), ("rgb8; jpeg compressed bgr8", ".jpg"), ("png", ".png")])
def test_compressed_image_decodes_to_rgb(fmt, ext):
    img = _frame()
    tb = _contract(COMPRESSED_IMAGE, "rgb").bind("so101", cameras=["front"]).topics["/camera/front/image_raw/compressed"]
    assert tb.has_header and tb.stamp_ns(_compressed(img, fmt, ext), 0) == 3_000_000_005
    out = tb.extract(_compressed(img, fmt, ext))["image_front"]
    assert out.shape == img.shape and out.dtype == np.uint8
    if ext == ".png":
        np.testing.assert_array_equal(out, img)  # lossless, and RGB (not BGR)
    else:
        assert _psnr(out, img) > 35


def test_compressed_image_bad_payloads_are_clear_errors():
    tb = _contract(COMPRESSED_IMAGE, "rgb").bind("so101", cameras=["front"]).topics["/camera/front/image_raw/compressed"]
    msg = _compressed(_frame(), "jpeg", ".jpg")
    with pytest.raises(MessageError, match="unsupported CompressedImage format 'tiff'"):
        tb.extract(SimpleNamespace(header=msg.header, format="tiff", data=msg.data))
    tb2 = _contract(COMPRESSED_IMAGE, "rgb").bind("so101", cameras=["front"]).topics["/camera/front/image_raw/compressed"]
    with pytest.raises(MessageError, match="does not decode"):
        tb2.extract(SimpleNamespace(header=msg.header, format="jpeg", data=np.frombuffer(b"not a jpeg at all", np.uint8)))


def test_size_resizes_where_the_contract_says():
    img = _frame(480, 640)
    c = _contract(COMPRESSED_IMAGE, {"field": "rgb", "size": [96, 128]})
    tb = c.bind("so101", cameras=["front"]).topics["/camera/front/image_raw/compressed"]
    out = tb.extract(_compressed(img, "jpeg", ".jpg"))["image_front"]
    assert out.shape == (96, 128, 3)
    ref = cv2.resize(img, (128, 96), interpolation=cv2.INTER_AREA)
    assert _psnr(out, ref) > 35
    # written back out, the size survives
    assert Contract.from_dict(c.to_dict()).topics[0].fields[0].size == (96, 128)
    # raw Image topics resize the same way
    raw = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0)), encoding="rgb8",
                          height=480, width=640, step=640 * 3, data=img.tobytes())
    tbr = _contract("sensor_msgs/msg/Image", {"field": "rgb", "size": [96, 128]}).bind(
        "so101", cameras=["front"]).topics["/camera/front/image_raw"]
    np.testing.assert_array_equal(tbr.extract(raw)["image_front"], ref)
    # without size nothing is resized
    tbn = _contract("sensor_msgs/msg/Image", "rgb").bind("so101", cameras=["front"]).topics["/camera/front/image_raw"]
    assert tbn.extract(raw)["image_front"].shape == (480, 640, 3)
    assert resize_image(img, (480, 640)) is img


@pytest.mark.parametrize("size,match", [([96], "size must be"), ([0, 96], "size must be"), ("96x96", "size must be"),
                                        ([96.0, 96], "size must be")])
def test_bad_size_is_a_contract_error(size, match):
    with pytest.raises(ContractError, match=match):
        _contract(COMPRESSED_IMAGE, {"field": "rgb", "size": size})


def test_size_only_for_images():
    with pytest.raises(ContractError, match="not an image type"):
        Contract.from_dict({"name": "t", "topics": [{"topic": "/x", "type": "std_msgs/msg/Float32MultiArray",
                                                     "fields": {"x": {"field": "data", "size": [2, 2]}}}]})


def test_inference_node_resizes_camera_frames_only_by_the_checkpoints_rule():
    from robot_rl.ros.inference_node import CameraFrames
    img = _frame(480, 640)
    # trained from 640x480 frames resized (area) to 96x96: deployment resizes the same way
    f = CameraFrames({"image_size": 96, "image_resize": "area"})
    np.testing.assert_array_equal(f("image_front", img), cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA))
    assert f.counts == {"resized": 1, "refused_size": 0}
    # non-square sizes are [width, height] in the metadata
    assert CameraFrames({"image_size": [128, 96], "image_resize": "area"})("image_front", img).shape == (96, 128, 3)
    # trained on 96x96 frames as stored: a 640x480 camera is refused, not silently resized
    g = CameraFrames({"image_size": 96, "image_resize": None})
    with pytest.raises(ValueError, match="camera sends 640x480 but the policy was trained at 96x96"):
        g("image_front", img)
    assert g.counts["refused_size"] == 1
    small = _frame(96, 96)
    assert g("image_front", small) is small
    assert CameraFrames(None)("image_front", img) is img  # no size known: as sent
