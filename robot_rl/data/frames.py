"""Image resizing shared by everything that changes a frame's size: the recorder contract
(``size:``), the episode store's ``read_frames``, the training sampler and the inference
node. One function, so a policy sees frames resized exactly as it was trained on them."""
from __future__ import annotations

import numpy as np


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` (HxW or HxWxC uint8) resized to ``size`` = (h, w) with area interpolation;
    the same array when it already has that size."""
    h, w = int(size[0]), int(size[1])
    if img.shape[:2] == (h, w):
        return img
    import cv2
    out = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
    return out.reshape(h, w, -1) if img.ndim == 3 else out  # cv2 drops a single channel


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``(n, H, W, C)`` frames resized to ``size`` = (h, w) (see :func:`resize_image`);
    unchanged when they fit or ``size`` is None."""
    frames = np.asarray(frames)
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    h, w = int(size[0]), int(size[1])
    out = np.empty((len(frames), h, w) + frames.shape[3:], frames.dtype)
    for i, f in enumerate(frames):
        out[i] = resize_image(f, (h, w))
    return out
