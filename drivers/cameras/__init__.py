"""Camera capture: ``make_camera(CameraConfig(...))`` -> a threaded camera with
``connect / read_latest / wait_next / stats / disconnect``.

Backends: OpenCV (V4L2 devices, video files, HTTP MJPEG / RTSP URLs). A virtual camera
to test against is ``robot_rl.drivers.virtual.camera.MJPEGServer``.
"""
from robot_rl.drivers.cameras.base import (CameraConfig, CameraError, EndOfStreamError, Frame, ResolutionError,
                                           StaleFrameError, ThreadedCamera)
from robot_rl.drivers.cameras.factory import make_camera, register_camera_backend


def __getattr__(name: str):
    if name == "OpenCVCamera":  # imports cv2: only when asked for
        from robot_rl.drivers.cameras.opencv import OpenCVCamera
        return OpenCVCamera
    raise AttributeError(name)


__all__ = ["CameraConfig", "CameraError", "EndOfStreamError", "Frame", "OpenCVCamera", "ResolutionError",
           "StaleFrameError", "ThreadedCamera", "make_camera", "register_camera_backend"]
