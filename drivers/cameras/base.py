"""Camera capture: config, frames, errors, and the threaded capture loop every backend shares.

A backend (``OpenCVCamera``, later RealSense ...) implements five hooks -- open, grab,
retrieve, position, release -- and :class:`ThreadedCamera` does the rest: a daemon thread
grabs continuously into a small ring of recent frames, stamps each with the host time
right after ``grab()`` returns, measures the achieved rate, detects gaps and stalls, and
reconnects with backoff.

Consumers that want the newest image call :meth:`ThreadedCamera.read_latest` (it refuses
stale frames); consumers that want every frame call :meth:`ThreadedCamera.wait_next`.
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.drivers.cameras.stamps import StampFilter

log = logging.getLogger(__name__)


class CameraError(RuntimeError):
    """A camera could not be opened, delivers the wrong thing, or died (one clear cause)."""


class StaleFrameError(CameraError):
    """The newest frame is older than the allowed age (the stream stalled or is too slow)."""


class ResolutionError(CameraError):
    """The source delivers another width x height than requested (strict_resolution)."""


class EndOfStreamError(CameraError):
    """A video file ended (and ``loop`` is off): no more frames will come."""


@dataclass
class CameraConfig:
    """One camera.

    source: an int index or ``/dev/videoN`` (V4L2), a video file path, an ``http://``
        MJPEG or ``rtsp://`` URL, or ``realsense:<serial>``.
    width, height, fps: requested; None = whatever the source gives. For files, `fps`
        (if set) is the replay rate, else the file's own.
    fourcc: pixel format to ask a V4L2 device for (e.g. "MJPG").
    max_age_s: how old the newest frame may be before it is stale; default 2 / fps
        (fps = requested, else negotiated), else 0.2 s.
    strict_resolution: a source delivering another width x height is an error.
    reconnect: after a read failure, reopen with backoff ``reconnect_backoff_s * 2**k``
        (capped at 5 s) up to `max_reconnects` attempts, then give up.
    open_timeout_s / read_timeout_s: for network streams (connect, and a read that hangs).
    loop / realtime: for files, start again at the end; pace frames at the file's rate.
    buffer_frames: recent frames kept for :meth:`ThreadedCamera.wait_next`.
    stamp_filter: live sources: stamp frames on the camera's own frame clock, estimated
        from the receive times (:mod:`robot_rl.drivers.cameras.stamps`), instead of the
        raw receive time, whose scheduling jitter makes a dataset grid take one frame twice.
    """
    name: str
    source: int | str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    max_age_s: float | None = None
    strict_resolution: bool = True
    reconnect: bool = True
    reconnect_backoff_s: float = 0.25
    max_reconnects: int = 5
    open_timeout_s: float = 5.0
    read_timeout_s: float = 2.0
    loop: bool = False
    realtime: bool = True
    buffer_frames: int = 16
    stamp_filter: bool = True

    def __post_init__(self):
        bad = []
        for key in ("width", "height"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v <= 0):
                bad.append(f"{key} must be a positive int, got {v!r}")
        if self.fps is not None and not self.fps > 0:
            bad.append(f"fps must be > 0, got {self.fps!r}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            bad.append(f"fourcc must be 4 characters (e.g. 'MJPG'), got {self.fourcc!r}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            bad.append(f"max_age_s must be > 0, got {self.max_age_s!r}")
        if self.buffer_frames < 1 or self.max_reconnects < 0:
            bad.append("buffer_frames must be >= 1 and max_reconnects >= 0")
        if isinstance(self.source, str) and self.source.strip().isdigit():
            self.source = int(self.source)
        if bad:
            raise CameraError(f"camera {self.name!r}: bad config: " + "; ".join(bad))


@dataclass
class Frame:
    """One captured image.

    image: HxWx3 uint8 RGB. stamp_ns: host time of the frame (wall clock, ns): the receive
    time with its scheduling jitter filtered out (``stamp_filter``), else the raw receive
    time. recv_ns: the raw receive time (``time.time_ns()`` right after grab). seq:
    0-based counter of delivered frames. source_pos: the frame's 0-based index in a video
    file, else None.
    """
    image: np.ndarray
    stamp_ns: int
    seq: int
    source_pos: int | None = None
    recv_ns: int | None = None


@dataclass
class Negotiated:
    """What the source agreed to (read back after asking), filled by ``_open``."""
    width: int
    height: int
    fps: float | None
    fourcc: str | None = None
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


FPS_WINDOW_S = 2.0      # achieved fps is measured over this many seconds of stamps
SHORTFALL_RATIO = 0.9   # achieved < 90 % of requested (over >= 1 s) = fps shortfall


class ThreadedCamera(ABC):
    """The capture loop shared by backends; see the module docstring. Thread-safe readers."""

    def __init__(self, config: CameraConfig):
        self.config = config
        self.negotiated: Negotiated | None = None
        self._cond = threading.Condition()
        self._ring: deque[list] = deque()        # [Frame, consumed]
        self._seq = -1
        self._stamps: deque[int] = deque()       # stamps of the last FPS_WINDOW_S seconds
        self._periods: deque[float] = deque(maxlen=31)
        self._counts = {"frames": 0, "dropped_unread": 0, "dropped_gaps": 0, "reconnects": 0, "reconnected": 0}
        self._last_error: str | None = None
        self._dead: CameraError | None = None
        self._ended: EndOfStreamError | None = None
        self._shortfall_warned = False
        self._resync = False                     # next frame follows a reconnect: no gap count
        self._stamp_filter: StampFilter | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- backend hooks ---------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> Negotiated:
        """Open the source, negotiate the format; raise CameraError naming the cause."""

    @abstractmethod
    def _grab(self) -> bool:
        """Wait for the next frame; False on a read failure; raise EndOfStreamError at the end."""

    @abstractmethod
    def _retrieve(self) -> np.ndarray | None:
        """The grabbed frame as HxWx3 uint8 RGB (None if it cannot be decoded)."""

    def _position(self) -> int | None:
        return None

    @abstractmethod
    def _release(self) -> None:
        """Close the source (idempotent)."""

    def _pace(self) -> None:
        """Called before each grab: file backends sleep here to replay in real time."""

    @property
    def _live(self) -> bool:
        """True for devices and streams (stamps measure the source); False for files
        replayed as fast as possible."""
        return True

    # -- public API ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_connected(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def max_age_s(self) -> float:
        if self.config.max_age_s is not None:
            return self.config.max_age_s
        fps = self.config.fps or (self.negotiated.fps if self.negotiated else None)
        return 2.0 / fps if fps else 0.2

    def connect(self) -> "ThreadedCamera":
        """Open the source, read one frame (checks the resolution), start the capture thread."""
        if self.is_connected:
            return self
        self._stop.clear()
        self._dead = self._ended = None
        try:
            self.negotiated = self._open()
            self._read_one(first=True)
        except EndOfStreamError as e:
            self._release()
            raise CameraError(f"{self._who()}: the video holds no frames ({e})") from None
        except CameraError:
            self._release()
            raise
        n, c = self.negotiated, self.config
        if c.stamp_filter and self._live:
            fps = c.fps or n.fps
            self._stamp_filter = StampFilter(1.0 / fps if fps else None)
        log.info("camera %s: %dx%d @ %s fps (requested %sx%s @ %s fps) via %s", c.name, n.width, n.height,
                 _fmt(n.fps), c.width, c.height, c.fps, n.backend)
        self._thread = threading.Thread(target=self._run, name=f"camera-{c.name}", daemon=True)
        self._thread.start()
        return self

    def disconnect(self) -> None:
        """Stop the capture thread and release the source."""
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout=max(5.0, self.config.read_timeout_s + 1.0))
        self._thread = None
        self._release()
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> "ThreadedCamera":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def read_latest(self, max_age_s: float | None = None) -> Frame:
        """The newest frame. Raises StaleFrameError if it is older than `max_age_s`
        (default ``config.max_age_s``), CameraError if the camera died, EndOfStreamError
        if a file ended and its last frame is stale."""
        max_age = self.max_age_s if max_age_s is None else max_age_s
        with self._cond:
            if not self._ring:
                raise self._dead or CameraError(f"{self._who()}: not connected (call connect())")
            item = self._ring[-1]
            age = (time.time_ns() - item[0].stamp_ns) / 1e9
            if age > max_age:
                if self._dead is not None:
                    raise self._dead
                if self._ended is not None:
                    raise self._ended
                raise StaleFrameError(f"{self._who()}: newest frame (seq {item[0].seq}) is {age:.3f} s old "
                                      f"> max_age {max_age:.3f} s: the stream stalled"
                                      + (f" ({self._last_error})" if self._last_error else ""))
            item[1] = True
            return item[0]

    def wait_next(self, after_seq: int, timeout: float | None = None) -> Frame:
        """The first frame with seq > `after_seq` still held (the next one if the reader
        keeps up: ``buffer_frames`` of slack). Raises StaleFrameError after `timeout`
        seconds (default ``max(1, 5 * max_age_s)``), EndOfStreamError at the end of a file,
        CameraError if the camera died."""
        timeout = max(1.0, 5 * self.max_age_s) if timeout is None else timeout
        with self._cond:
            ok = self._cond.wait_for(lambda: self._seq > after_seq or self._dead or self._ended
                                     or self._stop.is_set(), timeout)
            if self._seq > after_seq:
                for item in self._ring:
                    if item[0].seq > after_seq:
                        item[1] = True
                        return item[0]
            if self._dead is not None:
                raise self._dead
            if self._ended is not None:
                raise self._ended
            if self._stop.is_set():
                raise CameraError(f"{self._who()}: disconnected")
            assert not ok
            raise StaleFrameError(f"{self._who()}: no frame after seq {after_seq} within {timeout:.2f} s"
                                  + (f" ({self._last_error})" if self._last_error else ""))

    def stats(self) -> dict[str, Any]:
        """Counters and rates (see the keys); cheap, safe from any thread."""
        c, n = self.config, self.negotiated
        with self._cond:
            now = time.time_ns()
            last = self._ring[-1][0] if self._ring else None
            age = (now - last.stamp_ns) / 1e9 if last else None
            fps = self._achieved_fps(now)
            unread = self._counts["dropped_unread"]
            return {
                "name": c.name, "source": c.source, "backend": n.backend if n else None,
                "connected": self.is_connected,
                "frames": self._counts["frames"],
                "dropped": unread + self._counts["dropped_gaps"],
                "dropped_unread": unread, "dropped_gaps": self._counts["dropped_gaps"],
                "reconnects": self._counts["reconnects"], "reconnected": self._counts["reconnected"],
                "achieved_fps": fps, "fps_shortfall": self._shortfall(fps, now),
                "requested": {"width": c.width, "height": c.height, "fps": c.fps, "fourcc": c.fourcc},
                "negotiated": ({"width": n.width, "height": n.height, "fps": n.fps, "fourcc": n.fourcc}
                               if n else None),
                "age_s": age, "stale": age is None or age > self.max_age_s,
                "ended": self._ended is not None, "dead": self._dead is not None,
                "last_error": self._last_error,
                "stamp_period_ms": (None if self._stamp_filter is None or self._stamp_filter.period is None
                                    else round(self._stamp_filter.period / 1e6, 4)),
                "source_skipped_slots": None if self._stamp_filter is None else self._stamp_filter.skipped_slots,
            }

    # -- capture loop ----------------------------------------------------------------------
    def _who(self) -> str:
        return f"camera {self.config.name!r} ({self.config.source})"

    def _read_one(self, first: bool = False) -> bool:
        self._pace()
        if not self._grab():
            if first:
                raise CameraError(f"{self._who()}: opened, but no frame arrived within "
                                  f"{self.config.read_timeout_s:.1f} s")
            return False
        stamp = time.time_ns()
        img = self._retrieve()
        if img is None:
            if first:
                raise CameraError(f"{self._who()}: opened, but the first frame could not be decoded")
            return False
        self._check_shape(img)
        self._publish(img, stamp, self._position())
        return True

    def _check_shape(self, img: np.ndarray) -> None:
        c, n = self.config, self.negotiated
        h, w = img.shape[:2]
        assert n is not None
        if (n.width, n.height) != (w, h):
            n.width, n.height = w, h  # what the source really delivers wins over what it reported
        want = (c.width or w, c.height or h)
        if want != (w, h):
            msg = (f"{self._who()}: unsupported resolution: requested {want[0]}x{want[1]}, "
                   f"the source delivers {w}x{h}")
            if c.strict_resolution:
                raise ResolutionError(msg + " (set strict_resolution=False to accept it)")
            if not n.extra.get("resolution_warned"):
                n.extra["resolution_warned"] = True
                log.warning("%s; using %dx%d", msg, w, h)

    def _publish(self, img: np.ndarray, recv: int, pos: int | None) -> None:
        with self._cond:
            self._seq += 1
            stamp = recv if self._stamp_filter is None else self._stamp_filter(recv)
            frame = Frame(img, stamp, self._seq, pos, recv)
            if self._live and self._ring and not self._resync:
                dt = (stamp - self._ring[-1][0].stamp_ns) / 1e9
                # the source's period: the median of the recent ones (a steady 15 fps source
                # is a shortfall, not drops); gaps are counted once 10 periods are known
                ref = statistics.median(self._periods) if len(self._periods) >= 10 else None
                if ref and dt > 1.5 * ref:
                    self._counts["dropped_gaps"] += max(0, int(dt / ref + 0.5) - 1)
                self._periods.append(dt)
            self._resync = False
            self._ring.append([frame, False])
            while len(self._ring) > self.config.buffer_frames:
                if not self._ring.popleft()[1]:
                    self._counts["dropped_unread"] += 1
            self._counts["frames"] += 1
            self._stamps.append(stamp)
            while self._stamps and stamp - self._stamps[0] > FPS_WINDOW_S * 1e9:
                self._stamps.popleft()
            self._cond.notify_all()
        self._warn_shortfall(stamp)

    def _achieved_fps(self, now: int) -> float | None:
        st = [s for s in self._stamps if now - s <= FPS_WINDOW_S * 1e9]
        if len(st) < 2 or st[-1] == st[0]:
            return None
        return (len(st) - 1) / ((st[-1] - st[0]) / 1e9)

    def _shortfall(self, fps: float | None, now: int) -> bool:
        """The source's steady rate (1 / median period, so a stall or a reconnect is not
        mistaken for it) is under 90 % of the requested rate, over >= 1 s of frames."""
        want = self.config.fps
        if not want or not self._live or fps is None or len(self._periods) < 10:
            return False
        span = (self._stamps[-1] - self._stamps[0]) / 1e9
        steady = 1.0 / max(1e-9, statistics.median(self._periods))
        return span >= 1.0 and steady < SHORTFALL_RATIO * want

    def _warn_shortfall(self, now: int) -> None:
        if self._shortfall_warned:
            return
        with self._cond:
            fps = self._achieved_fps(now)
            short = self._shortfall(fps, now)
        if short:
            self._shortfall_warned = True
            log.warning("%s: delivers %.1f fps, %s requested (fps shortfall)", self._who(),
                        1.0 / statistics.median(self._periods), _fmt(self.config.fps))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._read_one():
                    continue
                failure = "read failed (no frame within the read timeout, or the stream closed)"
            except EndOfStreamError as e:
                with self._cond:
                    self._ended = e
                    self._cond.notify_all()
                return
            except ResolutionError as e:
                return self._die(e)
            except CameraError as e:
                failure = str(e)
            if self._stop.is_set():
                return
            self._last_error = failure
            if not self.config.reconnect:
                return self._die(CameraError(f"{self._who()}: {failure}; reconnect is off"))
            if not self._reconnect():
                if not self._stop.is_set():
                    self._die(CameraError(f"{self._who()}: stream lost ({failure}); gave up after "
                                          f"{self.config.max_reconnects} reconnect attempts; last error: "
                                          f"{self._last_error}"))
                return

    def _reconnect(self) -> bool:
        c = self.config
        for attempt in range(c.max_reconnects):
            if self._stop.wait(min(5.0, c.reconnect_backoff_s * 2 ** attempt)):
                return False
            with self._cond:
                self._counts["reconnects"] += 1
            self._release()
            try:
                self.negotiated = self._open()
            except CameraError as e:
                self._last_error = str(e)
                log.warning("%s: reconnect attempt %d/%d failed: %s", self._who(), attempt + 1, c.max_reconnects, e)
                continue
            with self._cond:
                self._counts["reconnected"] += 1
                self._periods.clear()
                if self._stamp_filter is not None:
                    self._stamp_filter.reset()
                self._resync = True
            log.info("%s: reconnected (attempt %d)", self._who(), attempt + 1)
            return True
        return False

    def _die(self, err: CameraError) -> None:
        log.error("%s", err)
        with self._cond:
            self._dead = err
            self._last_error = str(err)
            self._cond.notify_all()
        self._release()


def _fmt(fps: float | None) -> str:
    return "?" if fps is None else f"{fps:g}"
