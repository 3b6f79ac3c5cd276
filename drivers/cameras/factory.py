"""``make_camera(config)``: the backend for a source, from a small registry.

Sources with a ``scheme:`` prefix that OpenCV does not read (``realsense:<serial>``) pick
their backend by the prefix; everything else (device index, ``/dev/videoN``, file, URL)
goes to :class:`~robot_rl.drivers.cameras.opencv.OpenCVCamera`. Third parties add backends
with :func:`register_camera_backend` or an entry point in the group ``robot_rl.cameras``
(name = prefix, value = a callable taking a CameraConfig).
"""
from __future__ import annotations

from typing import Callable

from robot_rl.drivers.cameras.base import CameraConfig, CameraError, ThreadedCamera

CameraFactory = Callable[[CameraConfig], ThreadedCamera]
_BACKENDS: dict[str, CameraFactory] = {}
URL_SCHEMES = ("http", "https", "rtsp", "rtmp", "udp", "tcp", "file")


def register_camera_backend(prefix: str, factory: CameraFactory) -> None:
    """Route sources ``"<prefix>:..."`` to `factory`."""
    _BACKENDS[prefix] = factory


def _realsense(config: CameraConfig) -> ThreadedCamera:
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        raise CameraError(f"camera {config.name!r}: source {config.source!r} needs the RealSense SDK, but "
                          "pyrealsense2 is not installed (pip install pyrealsense2); no RealSense backend "
                          "ships with robot_rl yet") from None
    raise CameraError(f"camera {config.name!r}: pyrealsense2 is installed, but robot_rl has no RealSense "
                      "backend yet; use the camera's V4L2 node (/dev/videoN) meanwhile")


register_camera_backend("realsense", _realsense)


def _entry_point(prefix: str) -> CameraFactory | None:
    from importlib.metadata import entry_points
    for ep in entry_points(group="robot_rl.cameras"):
        if ep.name == prefix:
            return ep.load()
    return None


def make_camera(config: CameraConfig) -> ThreadedCamera:
    """A camera (not yet connected) for `config`'s source."""
    src = config.source
    if isinstance(src, str) and ":" in src and "://" not in src and not src.startswith(("/", ".")):
        prefix = src.split(":", 1)[0]
        if len(prefix) > 1:  # not a Windows drive letter
            factory = _BACKENDS.get(prefix) or _entry_point(prefix)
            if factory is None:
                known = sorted(set(_BACKENDS) | {"<index>", "/dev/videoN", "<file>", "http://", "rtsp://"})
                raise CameraError(f"camera {config.name!r}: no camera backend for {src!r}; sources: {', '.join(known)}")
            return factory(config)
    from robot_rl.drivers.cameras.opencv import OpenCVCamera
    return OpenCVCamera(config)
