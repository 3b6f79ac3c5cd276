"""Image codecs of the episode store: a zarr v3 JPEG codec (``robot_rl.jpeg``) and the
per-key codec names ("lossless", "jpeg:<quality>").

The JPEG codec is an ArrayBytesCodec that encodes ONE frame per chunk (chunk shape
``(1, H, W, C)`` / ``(H, W, C)`` / ``(H, W)``, uint8, C in 1 or 3) as a baseline JPEG
with imagecodecs (libjpeg-turbo). The store uses it as the inner codec of a sharded
array: shard = one time-chunk of frames, inner chunk = one frame, so a frame can be
read (or its JPEG bytes fetched) alone and a partial shard write never re-encodes the
frames it does not touch.

Importing this module registers the codec with zarr; plain zarr readers of a JPEG
store must ``import robot_rl.data.codecs`` (or ``robot_rl.data.store``) first.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

JPEG_CODEC_ID = "robot_rl.jpeg"
LOSSLESS = "lossless"
DEFAULT_JPEG_QUALITY = 90
JPEG_MIN_SIDE = 224  # default: images whose smaller side is >= this are stored as jpeg:90
SUBSAMPLINGS = {"444": (1, 1), "422": (2, 1), "420": (2, 2)}
_JPEG_RE = re.compile(r"^jpeg(?::(.*))?$")


def frame_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W, C) of a one-frame chunk shape, or ValueError."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) >= 3 and int(np.prod(shape[:-3], dtype=np.int64)) == 1 and shape[-1] in (1, 3):
        return shape[-3], shape[-2], shape[-1]
    raise ValueError(f"{JPEG_CODEC_ID}: a chunk must be one uint8 frame (H, W), (H, W, 1|3) or "
                     f"(1, H, W, 1|3); got chunk shape {shape}")


def parse_codec_name(name: Any) -> str:
    """Normalise a per-key codec name: "lossless" or "jpeg" / "jpeg:<q>" (q in 1..100)
    -> "lossless" / "jpeg:<q>". ValueError with the reason otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"codec must be a string ('lossless', 'jpeg' or 'jpeg:<quality>'), got {name!r}")
    s = name.strip().lower()
    if s == LOSSLESS:
        return LOSSLESS
    m = _JPEG_RE.match(s)
    if not m:
        raise ValueError(f"unknown codec {name!r}: use 'lossless', 'jpeg' (quality {DEFAULT_JPEG_QUALITY}) "
                         f"or 'jpeg:<quality>' with quality 1..100")
    q = m.group(1)
    if q is None:
        return f"jpeg:{DEFAULT_JPEG_QUALITY}"
    if not q.isdigit() or not 1 <= int(q) <= 100:
        raise ValueError(f"codec {name!r}: jpeg quality must be an integer 1..100, got {q!r}")
    return f"jpeg:{int(q)}"


def jpeg_quality(codec: str) -> int | None:
    """Quality of a normalised "jpeg:<q>" name; None for "lossless"."""
    return int(codec.split(":", 1)[1]) if codec.startswith("jpeg:") else None


def jpeg_encode_frame(frame: np.ndarray, quality: int, subsampling: str = "444") -> bytes:
    """One (H, W) / (H, W, 1|3) uint8 frame -> baseline JPEG bytes."""
    h, w, c = frame_shape(frame.shape)
    frame = np.ascontiguousarray(frame, dtype=np.uint8).reshape((h, w) if c == 1 else (h, w, c))
    if c == 1:
        return bytes(imagecodecs.jpeg8_encode(frame, level=quality))
    return bytes(imagecodecs.jpeg8_encode(frame, level=quality, subsampling=SUBSAMPLINGS[subsampling]))


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """zarr v3 array->bytes codec: one uint8 frame per chunk as a baseline JPEG."""

    is_fixed_size = False

    quality: int
    subsampling: str

    def __init__(self, *, quality: int = DEFAULT_JPEG_QUALITY, subsampling: str = "444") -> None:
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
            raise ValueError(f"{JPEG_CODEC_ID}: quality must be an integer 1..100, got {quality!r}")
        if subsampling not in SUBSAMPLINGS:
            raise ValueError(f"{JPEG_CODEC_ID}: subsampling must be one of {list(SUBSAMPLINGS)}, "
                             f"got {subsampling!r}")
        object.__setattr__(self, "quality", int(quality))
        object.__setattr__(self, "subsampling", str(subsampling))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, cfg = parse_named_configuration(data, JPEG_CODEC_ID, require_configuration=False)
        return cls(**(cfg or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": JPEG_CODEC_ID,
                "configuration": {"quality": self.quality, "subsampling": self.subsampling}}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        native = dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else np.dtype(dtype)
        if np.dtype(native) != np.uint8:
            raise ValueError(f"{JPEG_CODEC_ID} encodes uint8 frames only, the array is {native}")

    def _encode_frame(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        data = jpeg_encode_frame(chunk_array.as_numpy_array(), self.quality, self.subsampling)
        return chunk_spec.prototype.buffer.from_bytes(data)

    def _decode_frame(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        shape = tuple(chunk_spec.shape)
        h, w, c = frame_shape(shape)
        img = np.asarray(imagecodecs.jpeg8_decode(chunk_bytes.as_numpy_array().tobytes()))
        if img.dtype != np.uint8 or img.size != h * w * c:
            raise ValueError(f"{JPEG_CODEC_ID}: decoded frame has shape {img.shape} dtype {img.dtype}, "
                             f"the chunk is {shape} uint8")
        return chunk_spec.prototype.nd_buffer.from_numpy_array(img.reshape(shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        # libjpeg releases the GIL: encode off the event loop so chunks encode in parallel
        return await asyncio.to_thread(self._encode_frame, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_frame, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"{JPEG_CODEC_ID} output size is data dependent")


register_codec(JPEG_CODEC_ID, JpegCodec)

__all__ = ["JpegCodec", "JPEG_CODEC_ID", "LOSSLESS", "DEFAULT_JPEG_QUALITY", "JPEG_MIN_SIDE",
           "parse_codec_name", "jpeg_quality", "jpeg_encode_frame", "frame_shape"]
