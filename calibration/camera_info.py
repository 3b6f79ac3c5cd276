"""Camera intrinsics in the ROS ``camera_info`` YAML format (what ``camera_calibration`` and
``camera_info_manager`` write), without rclpy::

    image_width: 640
    image_height: 480
    camera_name: front
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, t1, t2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    projection_matrix: {rows: 3, cols: 4, data: [fx', 0, cx', 0, 0, fy', cy', 0, 0, 0, 1, 0]}

The camera node publishes ``/camera/<name>/camera_info`` from such a file (``--calibration``);
without one it publishes none, since intrinsics it would have to guess are worse than none.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


class CalibrationError(ValueError):
    """A calibration file is missing, malformed or does not fit the camera."""


@dataclass
class CameraIntrinsics:
    width: int
    height: int
    K: np.ndarray  # 3x3
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = "plumb_bob"
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None  # 3x4; None: [K | 0]
    camera_name: str = ""

    def projection(self) -> np.ndarray:
        if self.P is not None:
            return self.P
        p = np.zeros((3, 4))
        p[:, :3] = self.K
        return p

    def to_dict(self) -> dict[str, Any]:
        def mat(a: np.ndarray) -> dict[str, Any]:
            a = np.atleast_2d(np.asarray(a, np.float64))
            return {"rows": int(a.shape[0]), "cols": int(a.shape[1]), "data": [float(x) for x in a.reshape(-1)]}
        return {"image_width": int(self.width), "image_height": int(self.height), "camera_name": self.camera_name,
                "camera_matrix": mat(self.K), "distortion_model": self.distortion_model,
                "distortion_coefficients": mat(self.D.reshape(1, -1)), "rectification_matrix": mat(self.R),
                "projection_matrix": mat(self.projection())}

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "camera_info") -> "CameraIntrinsics":
        if not isinstance(d, Mapping):
            raise CalibrationError(f"{where}: expected a mapping (ROS camera_info YAML), got {type(d).__name__}")

        def mat(name: str, shape: tuple[int, int] | None, required: bool = True) -> np.ndarray | None:
            m = d.get(name)
            if m is None:
                if required:
                    raise CalibrationError(f"{where}: '{name}' is missing")
                return None
            data = m.get("data") if isinstance(m, Mapping) else m
            try:
                a = np.asarray(data, np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise CalibrationError(f"{where}: {name}.data must be a list of numbers") from None
            if not np.all(np.isfinite(a)):
                raise CalibrationError(f"{where}: {name} holds a non-finite value")
            if shape is not None:
                if a.size != shape[0] * shape[1]:
                    raise CalibrationError(f"{where}: {name} must have {shape[0]}x{shape[1]} values, got {a.size}")
                a = a.reshape(shape)
            return a

        try:
            w, h = int(d["image_width"]), int(d["image_height"])
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"{where}: image_width and image_height must be integers") from None
        if w <= 0 or h <= 0:
            raise CalibrationError(f"{where}: image size must be positive, got {w}x{h}")
        K = mat("camera_matrix", (3, 3))
        if not (K[0, 0] > 0 and K[1, 1] > 0 and math.isclose(K[2, 2], 1.0)):
            raise CalibrationError(f"{where}: camera_matrix must have fx, fy > 0 and K[2,2] = 1, got {K.tolist()}")
        model = str(d.get("distortion_model", "plumb_bob"))
        if model not in DISTORTION_MODELS:
            raise CalibrationError(f"{where}: distortion_model {model!r} unknown; one of {list(DISTORTION_MODELS)}")
        D = mat("distortion_coefficients", None, required=False)
        R = mat("rectification_matrix", (3, 3), required=False)
        P = mat("projection_matrix", (3, 4), required=False)
        return cls(w, h, K, np.zeros(5) if D is None else D, model, np.eye(3) if R is None else R, P,
                   str(d.get("camera_name", "")))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CameraIntrinsics":
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"no camera calibration file at {p}")
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise CalibrationError(f"{p}: not valid YAML: {e}") from None
        return cls.from_dict(d, where=str(p))

    def check_size(self, width: int, height: int, what: str = "the camera") -> None:
        if (width, height) != (self.width, self.height):
            raise CalibrationError(f"calibration is for {self.width}x{self.height} but {what} delivers "
                                   f"{width}x{height}; recalibrate at this resolution")


def pinhole(width: int, height: int, fovy_deg: float, name: str = "") -> CameraIntrinsics:
    """Ideal pinhole intrinsics of a camera with vertical field of view ``fovy_deg`` (the
    twin's cameras: MuJoCo renders exactly this)."""
    fy = height / 2 / math.tan(math.radians(fovy_deg) / 2)
    K = np.array([[fy, 0, (width - 1) / 2], [0, fy, (height - 1) / 2], [0, 0, 1.0]])
    return CameraIntrinsics(int(width), int(height), K, camera_name=name)
