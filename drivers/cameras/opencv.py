"""OpenCV capture: V4L2 devices, video files and network streams (HTTP MJPEG, RTSP).

    with OpenCVCamera(CameraConfig("front", "/dev/video0", 640, 480, fps=30, fourcc="MJPG")) as cam:
        frame = cam.read_latest()          # newest RGB frame, refused if stale
        print(cam.stats()["achieved_fps"])

Devices (an int index or ``/dev/videoN``) open with ``CAP_V4L2``; files and URLs with
``CAP_FFMPEG`` (URLs with open / read timeouts, so a dead stream fails instead of hanging).
Every cause of failure is checked before OpenCV is asked (the device node exists and is
accessible, the file exists, the URL's host accepts connections), because OpenCV only
says "not opened".
"""
from __future__ import annotations

import glob
import os
import socket
import sys
import time
from urllib.parse import urlparse

import cv2
import numpy as np

from robot_rl.drivers.cameras.base import (CameraConfig, CameraError, EndOfStreamError, Negotiated,
                                           ThreadedCamera)

URL_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtmp": 1935}


def source_kind(source: int | str) -> str:
    """'device', 'url' or 'file'."""
    if isinstance(source, int) or str(source).startswith("/dev/"):
        return "device"
    if "://" in str(source):
        return "url"
    return "file"


def _fourcc_str(code: float) -> str | None:
    c = int(code)
    if c <= 0:
        return None
    s = "".join(chr((c >> (8 * i)) & 0xFF) for i in range(4))
    return s if s.isprintable() else None


class OpenCVCamera(ThreadedCamera):
    """A camera read through ``cv2.VideoCapture`` (see the module docstring)."""

    def __init__(self, config: CameraConfig):
        super().__init__(config)
        self.kind = source_kind(config.source)
        self._cap: cv2.VideoCapture | None = None
        self._file_frames = 0      # frames in the file (as the container says)
        self._play_fps: float | None = None
        self._t0: float | None = None
        self._k = 0                # pacing slot of the next file frame
        self._loops = 0

    @property
    def _live(self) -> bool:
        return self.kind != "file" or self.config.realtime

    # -- open ------------------------------------------------------------------------------
    def _open(self) -> Negotiated:
        if self.kind == "device":
            cap, backend = self._open_device(), "V4L2"
        elif self.kind == "url":
            cap, backend = self._open_url(), "FFMPEG"
        else:
            cap, backend = self._open_file(), "FFMPEG"
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        n = Negotiated(width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                       fps=float(fps) if fps and fps > 0 and np.isfinite(fps) else None,
                       fourcc=_fourcc_str(cap.get(cv2.CAP_PROP_FOURCC)), backend=backend)
        c = self.config
        if self.kind == "file":
            self._file_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self._play_fps = c.fps or n.fps or 30.0
            n.extra["file_fps"], n.extra["file_frames"] = n.fps, self._file_frames
            n.fps = self._play_fps if c.realtime else n.fps
            self._t0, self._k = None, 0
        elif self.kind == "url":
            # FFmpeg's MJPEG-over-HTTP demuxer has no frame rate: it reports a default (25)
            n.extra["reported_fps"] = n.fps
            n.fps = None if urlparse(str(c.source)).scheme in ("http", "https") else n.fps
        return n

    def _open_device(self) -> cv2.VideoCapture:
        c = self.config
        src = c.source
        path = f"/dev/video{src}" if isinstance(src, int) else str(src)
        if sys.platform.startswith("linux"):
            if not os.path.exists(path):
                found = sorted(glob.glob("/dev/video*"))
                raise CameraError(f"camera {c.name!r}: no video device {path} (wrong index or path, or unplugged); "
                                  f"video devices here: {', '.join(found) if found else 'none'}")
            if not os.access(path, os.R_OK | os.W_OK):
                raise CameraError(f"camera {c.name!r}: no permission to open {path}; add your user to the "
                                  "'video' group (sudo usermod -aG video $USER, then log in again)")
            cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(src if isinstance(src, int) else path)
        if not cap.isOpened():
            raise CameraError(f"camera {c.name!r}: could not open {path} with V4L2: busy (another program "
                              "is using it?) or not a capture device (try another /dev/video node)")
        if c.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*c.fourcc))
        if c.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
        if c.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
        if c.fps:
            cap.set(cv2.CAP_PROP_FPS, c.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(c.read_timeout_s * 1000))
        if c.fourcc and _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC)) != c.fourcc:
            cap.release()
            raise CameraError(f"camera {c.name!r}: {path} does not support pixel format {c.fourcc!r} "
                              f"(it gave {_fourcc_str(cap.get(cv2.CAP_PROP_FOURCC))!r}); "
                              "list formats with `v4l2-ctl -d DEV --list-formats-ext`")
        return cap

    def _open_url(self) -> cv2.VideoCapture:
        c = self.config
        url = str(c.source)
        u = urlparse(url)
        port = u.port or URL_PORTS.get(u.scheme)
        if u.hostname and port:
            try:
                socket.create_connection((u.hostname, port), timeout=c.open_timeout_s).close()
            except OSError as e:
                reason = e.strerror or type(e).__name__
                raise CameraError(f"camera {c.name!r}: URL {url} unreachable: {u.hostname}:{port}: {reason} "
                                  "(is the camera or stream server running, and the address right?)") from None
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(c.open_timeout_s * 1000),
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(c.read_timeout_s * 1000)])
        if not cap.isOpened():
            raise CameraError(f"camera {c.name!r}: {url} accepts connections but gives no video stream within "
                              f"{c.open_timeout_s:g} s (wrong path, or not MJPEG/RTSP?)")
        return cap

    def _open_file(self) -> cv2.VideoCapture:
        c = self.config
        path = str(c.source)
        if not os.path.isfile(path):
            raise CameraError(f"camera {c.name!r}: video file {path} does not exist")
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise CameraError(f"camera {c.name!r}: could not decode video file {path} "
                              "(not a video, or a codec this OpenCV build lacks)")
        return cap

    # -- capture ---------------------------------------------------------------------------
    def _pace(self) -> None:
        if self.kind != "file" or not self.config.realtime or not self._play_fps:
            return
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        delay = self._t0 + self._k / self._play_fps - now
        self._k += 1
        if delay > 0:
            self._stop.wait(delay)

    def _grab(self) -> bool:
        cap = self._cap
        if cap is None:
            return False
        if cap.grab():
            return True
        if self.kind != "file":
            return False
        if self.config.loop:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._loops += 1
            if cap.grab():
                return True
        raise EndOfStreamError(f"{self._who()}: end of file after {self._seq + 1} frames")

    def _retrieve(self) -> np.ndarray | None:
        assert self._cap is not None
        ok, img = self._cap.retrieve()
        if not ok or img is None:
            return None
        if img.ndim == 2:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        if img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def _position(self) -> int | None:
        if self.kind != "file" or self._cap is None:
            return None
        return int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def stats(self) -> dict:
        d = super().stats()
        if self.kind == "file":
            d["file_frames"], d["loops"] = self._file_frames, self._loops
        return d
