"""A virtual camera: frames from the twin (or a synthetic pattern) served as HTTP MJPEG.

    server = MJPEGServer(SyntheticSource(640, 480), fps=30).start()
    OpenCVCamera(CameraConfig("front", server.url, 640, 480, fps=30))   # like a real IP camera

The server paces frames on a monotonic schedule (slot k at ``t0 + k / fps``: no drift),
encodes each frame once and shares it with every client. Camera-like impairments are
optional and seeded: sensor noise, exposure jitter, dropped frames and stalls.

Endpoints: ``/stream.mjpg`` (also ``/``) the ``multipart/x-mixed-replace`` stream,
``/snapshot.jpg`` the newest frame, ``/stats`` JSON counters.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

BOUNDARY = "robotrlframe"


class FrameSource(Protocol):
    """What the server renders: ``frame(index, t)`` -> HxWx3 uint8 RGB for frame `index`
    at stream time `t` seconds (= index / fps)."""
    width: int
    height: int

    def frame(self, index: int, t: float) -> np.ndarray: ...

    def close(self) -> None: ...


# -- synthetic source --------------------------------------------------------------------
CODE_BITS = 32


def _code_block(width: int) -> int:
    return max(8, min(16, width // (CODE_BITS + 4)))


class SyntheticSource:
    """A fast pattern (no MuJoCo): a colour gradient, a moving bar, and the frame number
    written as a row of black/white blocks along the top edge (32 bits, >= 8x8 px each,
    survives JPEG, noise and gain jitter). :func:`decode_frame_number` reads it back."""

    def __init__(self, width: int = 640, height: int = 480):
        if width < _code_block(width) * (CODE_BITS + 2) or height < 4 * _code_block(width):
            raise ValueError(f"SyntheticSource needs at least {8 * (CODE_BITS + 2)}x32 pixels, got {width}x{height}")
        self.width, self.height = width, height
        y, x = np.mgrid[0:height, 0:width]
        self._background = np.stack([
            (255 * x / max(1, width - 1)), (255 * y / max(1, height - 1)),
            np.full_like(x, 96, dtype=np.float64)], axis=-1).astype(np.uint8)

    def frame(self, index: int, t: float = 0.0) -> np.ndarray:
        img = self._background.copy()
        bar = (index * 7) % self.width
        img[:, bar:bar + 12] = (255, 255, 255)
        encode_frame_number(img, index)
        return img

    def close(self) -> None:
        pass


def encode_frame_number(img: np.ndarray, n: int) -> None:
    """Write `n` (mod 2**32) into the top rows of `img` in place: a black border and one block per bit."""
    b = _code_block(img.shape[1])
    img[: 3 * b, : b * (CODE_BITS + 2)] = 0
    for i in range(CODE_BITS):
        if (n >> (CODE_BITS - 1 - i)) & 1:
            x = b * (i + 1)
            img[b: 2 * b, x: x + b] = 255


def decode_frame_number(img: np.ndarray) -> int:
    """The frame number :func:`encode_frame_number` wrote (reads block centres, thresholds at 128)."""
    b = _code_block(img.shape[1])
    q = max(1, b // 4)
    n = 0
    for i in range(CODE_BITS):
        x = b * (i + 1)
        v = float(img[b + q: 2 * b - q, x + q: x + b - q].mean())
        n = (n << 1) | int(v > 128)
    return n


def camera_like_frames(n: int, h: int = 480, w: int = 640, sigma: float = 3.0, seed: int = 0) -> np.ndarray:
    """``n`` synthetic camera frames without MuJoCo: shaded room, textured table, checker
    poster, a moving cube, Gaussian sensor noise ``sigma`` (codec tests and benchmarks)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([60 + 80 * yy / h, 70 + 40 * xx / w, 90 + 30 * (yy + xx) / (h + w)], -1)
    table = yy > h * 0.55
    base[table] = [150, 120, 90]
    base[table] += (12 * np.sin(xx / 7 + 3 * np.sin(yy / 23)))[table][:, None]
    poster = (((xx // 16) + (yy // 16)) % 2 == 0) & (w * 0.05 < xx) & (xx < w * 0.3) & (h * 0.05 < yy) & (yy < h * 0.4)
    base[poster] = [30, 30, 30]
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        img = base.copy()
        cx, cy = w / 2 + w / 4 * np.sin(t / 15), h * 0.7 + h / 12 * np.cos(t / 20)
        img[(np.abs(xx - cx) < w / 14) & (np.abs(yy - cy) < w / 14)] = [200, 40, 40]
        img = img * (1 + 0.05 * np.sin(xx / 40 + t / 10))[..., None] + rng.normal(0, sigma, img.shape)
        out[t] = np.clip(img, 0, 255)
    return out


# -- twin source -------------------------------------------------------------------------
class TwinCameraSource:
    """A camera of the MuJoCo twin watching the task's scripted expert at work.

    Frame `index` shows the scene at sim time ``index / fps``: the expert steps the env at
    its control rate and every camera frame is rendered from the current state (a 30 fps
    camera on a 20 Hz arm renders some states twice, as a real one would). Episodes restart
    with a new seed when they end.
    """

    def __init__(self, task: str = "pick_cube", camera: str = "front", width: int = 640, height: int = 480,
                 fps: float = 30.0, robot: str = "so101", seed: int = 0):
        from robot_rl.sim import make_env
        self.width, self.height, self.fps, self.camera = width, height, fps, camera
        # resolve_spec passes image_size on as (width, height); the env sizes the offscreen
        # framebuffer to max(width, height), so any WxH renders
        self.env = make_env(task, robot=robot, cameras=[camera], image_size=(width, height),
                            render_size=max(width, height))
        self._seed = seed
        self._steps = 0
        self._render_s: list[float] = []
        try:
            self._reset()
        finally:
            _release_gl()

    def _reset(self) -> None:
        self._obs, _ = self.env.reset(seed=self._seed)
        self._expert = self.env.make_expert(self._seed)
        self._seed += 1

    def _step(self) -> None:
        env = self.env
        action = self._expert.act(self._obs)
        env.twin.step(env.action_mode, action)
        _, terminated, truncated, info = env.after_physics_step()
        self._steps += 1
        # the expert needs state only: skip rendering the env's image observations
        obs = env.twin.observe()
        obs["object_state"] = env.task.object_state()
        self._obs = obs
        if terminated or truncated or info["step"] > env.max_episode_steps:
            self._reset()

    def frame(self, index: int, t: float | None = None) -> np.ndarray:
        t = index / self.fps if t is None else t
        target = int(t / self.env.twin.control_dt)
        try:
            while self._steps < target:
                self._step()
            t0 = time.perf_counter()
            img = self.env.twin.render(self.camera, self.width, self.height)
            _push(self._render_s, time.perf_counter() - t0)
        finally:
            _release_gl()
        return img

    @property
    def render_ms(self) -> float:
        """Mean render time of the last 100 frames, milliseconds."""
        return 1e3 * float(np.mean(self._render_s)) if self._render_s else float("nan")

    def close(self) -> None:
        self.env.close()


class LiveSceneSource:
    """A camera watching a live MuJoCo scene that another thread steps (the virtual SO-101's
    follower): each frame copies the scene's state (``sync(data)`` fills a private MjData of
    the same model, under the scene's lock), computes its kinematics and renders `camera`.

    Serve it with ``MJPEGServer(source, fps=..., lookahead=1)``: a live camera renders a
    frame just before its slot, never several frames ahead (that would be stale).
    `watched` (optional, e.g. "the server has stream clients"): while it says no, the scene
    is rendered at most every `idle_period_s` and the last image repeated in between (a rig
    nobody looks at costs little CPU; ``/snapshot.jpg`` may then be that old).
    """

    def __init__(self, model, sync, camera: str, width: int, height: int, *, watched=None,
                 idle_period_s: float = 0.5):
        import mujoco
        self._mj = mujoco
        try:
            model.camera(camera)
        except KeyError:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise ValueError(f"the scene has no camera {camera!r} (cameras: {names})") from None
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ValueError(f"camera {camera!r}: {width}x{height} exceeds the scene's offscreen buffer "
                             f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}")
        self.model, self.sync, self.camera = model, sync, camera
        self.width, self.height = int(width), int(height)
        self._data = mujoco.MjData(model)
        self._renderer = None
        self._render_s: list[float] = []
        self.watched, self.idle_period_s = watched, float(idle_period_s)
        self._last: np.ndarray | None = None
        self._last_t = -math.inf
        self.renders = 0

    def frame(self, index: int = 0, t: float | None = None) -> np.ndarray:
        now = time.monotonic()
        if (self._last is not None and self.watched is not None and now - self._last_t < self.idle_period_s
                and not self.watched()):
            return self._last
        mj = self._mj
        self.sync(self._data)
        mj.mj_kinematics(self.model, self._data)
        mj.mj_comPos(self.model, self._data)
        mj.mj_camlight(self.model, self._data)
        try:
            if self._renderer is None:  # made on the thread that renders (the server's producer)
                self._renderer = r = mj.Renderer(self.model, self.height, self.width)
                r.scene.flags[mj.mjtRndFlag.mjRND_SHADOW] = False
                r.scene.flags[mj.mjtRndFlag.mjRND_REFLECTION] = False
                r.scene.flags[mj.mjtRndFlag.mjRND_SKYBOX] = False
            t0 = time.perf_counter()
            self._renderer.update_scene(self._data, camera=self.camera)
            img = self._renderer.render().copy()
            _push(self._render_s, time.perf_counter() - t0)
        finally:
            _release_gl()
        self._last, self._last_t = img, now
        self.renders += 1
        return img

    @property
    def render_ms(self) -> float:
        return 1e3 * float(np.mean(self._render_s)) if self._render_s else float("nan")

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _release_gl() -> None:
    """Let go of the GL context on this thread. An EGL context is current to one thread at
    a time and mujoco's Renderer does not let go after rendering, so a source built on one
    thread (the caller's) and rendered on another (the server's producer) would fail with
    EGL_BAD_ACCESS. Other backends need nothing."""
    if os.environ.get("MUJOCO_GL") == "egl":
        from mujoco.egl import egl_ext
        egl_ext.eglReleaseThread()


# -- impairments -------------------------------------------------------------------------
@dataclass
class Impairments:
    """Camera-like defects, all off by default and driven by one seed.

    noise_sigma: Gaussian sensor noise (grey levels); drawn from a precomputed table,
        a random window per frame (~1 ms at 640x480 instead of ~10 ms for fresh normals).
    exposure_jitter: per-frame gain ~ N(1, jitter) (a lookup table, clipped to [0.5, 1.5]).
    drop_prob: probability a frame is never sent (its number is still used up, so the
        receiver sees a gap).
    """
    noise_sigma: float = 0.0
    exposure_jitter: float = 0.0
    drop_prob: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.noise_sigma < 0 or self.exposure_jitter < 0 or not 0 <= self.drop_prob < 1:
            raise ValueError(f"bad impairments {self}: noise and jitter must be >= 0, drop in [0, 1)")
        self._rng = np.random.default_rng(self.seed)
        self._noise: np.ndarray | None = None

    def drop(self) -> bool:
        return self.drop_prob > 0 and self._rng.random() < self.drop_prob

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.exposure_jitter > 0:
            gain = float(np.clip(self._rng.normal(1.0, self.exposure_jitter), 0.5, 1.5))
            lut = np.clip(np.arange(256) * gain, 0, 255).astype(np.uint8)
            img = cv2.LUT(img, lut)
        if self.noise_sigma > 0:
            h, w, c = img.shape
            pad = 64
            if self._noise is None or self._noise.shape[0] < h + pad or self._noise.shape[1] < w + pad:
                table = self._rng.normal(0, self.noise_sigma, (h + pad, w + pad, c))
                self._noise = np.clip(np.round(table), -127, 127).astype(np.int16)
            dy, dx = (int(v) for v in self._rng.integers(0, pad, 2))
            img = cv2.add(img, self._noise[dy: dy + h, dx: dx + w], dtype=cv2.CV_8U)
        return img


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image (OpenCV's libjpeg-turbo; it wants BGR)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# -- server ------------------------------------------------------------------------------
class MJPEGServer:
    """Serve `frame_source` as MJPEG over HTTP on `host`:`port` (0 = a free port) at `fps`.

    A producer thread renders, impairs and JPEG-encodes frame k (the source's frame k is
    the scene at time ``k / fps``) up to `lookahead` frames ahead of its slot, and a pacer
    thread releases frame k at ``t0 + k / fps``, like a sensor's readout clock: a moment's
    CPU starvation of the renderer is absorbed instead of skipping a slot. A slot whose frame
    is not ready is skipped and counted as an ``overrun`` (the frame number stays locked to
    the clock); the producer then jumps ahead to the next slot it can make. Every client
    handler sends each new frame once; a slow client skips to the newest frame.
    ``stall()`` stops sending (connections stay open, as a hung camera's do);
    ``resume()`` starts again; `stall_after_s` stalls automatically that long after start.
    """

    def __init__(self, frame_source: FrameSource, host: str = "127.0.0.1", port: int = 0, fps: float = 30.0,
                 quality: int = 90, impairments: Impairments | None = None, stall_after_s: float | None = None,
                 lookahead: int = 8):
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1 frame, got {lookahead}")
        self.lookahead = int(lookahead)
        self._ready: dict[int, bytes | None] = {}  # frame index -> JPEG (None: dropped on purpose)
        self._slot = 0                              # the slot the pacer releases next
        self._t0 = 0.0
        self.source, self.host, self.fps, self.quality = frame_source, host, float(fps), int(quality)
        self.impairments = impairments or Impairments()
        self.stall_after_s = stall_after_s
        self._requested_port = port
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = -1                 # sequence number of the newest published frame
        self._stamp = 0.0              # its wall-clock time (unix seconds)
        self._stop = threading.Event()
        self._stalled = threading.Event()
        self._counts = {"frames_published": 0, "frames_served": 0, "dropped_injected": 0, "overruns": 0, "clients": 0}
        self._encode_s: list[float] = []
        self._source_s: list[float] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "MJPEGServer":
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer((self.host, self._requested_port), Handler)
        self._httpd.daemon_threads = True
        self._threads = [threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                          name="mjpeg-http", daemon=True),
                         threading.Thread(target=self._produce, name="mjpeg-producer", daemon=True),
                         threading.Thread(target=self._pace, name="mjpeg-pacer", daemon=True)]
        self._t0 = time.monotonic() + 0.25  # slot 0: the producer gets a head start of a few frames
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        """Stop producing, close every connection and the listening socket."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> "MJPEGServer":
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("MJPEGServer is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The stream's URL (``http://host:port/stream.mjpg``)."""
        return f"http://{self.host}:{self.port}/stream.mjpg"

    # -- impairment controls ------------------------------------------------------------
    def stall(self) -> None:
        """Stop sending frames; clients stay connected and hear nothing."""
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def stats(self) -> dict:
        with self._cond:
            d = dict(self._counts)
            d.update(seq=self._seq, stalled=self.stalled, fps=self.fps,
                     encode_ms=_mean_ms(self._encode_s), source_ms=_mean_ms(self._source_s))
        return d

    # -- producer ----------------------------------------------------------------------
    def _produce(self) -> None:
        """Render + impair + encode frames ahead of their slots (at most `lookahead` ahead)."""
        period = 1.0 / self.fps
        k = 0
        while not self._stop.is_set():
            with self._cond:
                # wait for room: frames up to slot + lookahead may be made in advance
                while not self._stop.is_set() and k >= self._slot + self.lookahead:
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    break
                # a frame whose slot has passed is useless: jump to the next slot still ahead
                k = max(k, self._slot + (1 if time.monotonic() > self._t0 + self._slot * period else 0))
            frame = self._make_frame(k)
            if frame is False:  # the source failed (logged): stop serving
                return
            with self._cond:
                self._ready[k] = frame
                self._cond.notify_all()
            k += 1

    def _pace(self) -> None:
        """Release frame k at t0 + k / fps; count a slot whose frame is not ready as an overrun."""
        period = 1.0 / self.fps
        while not self._stop.is_set():
            with self._cond:
                k = self._slot
            if self._stop.wait(max(0.0, self._t0 + k * period - time.monotonic())):
                break
            if self.stall_after_s is not None and time.monotonic() - self._t0 >= self.stall_after_s:
                self.stall_after_s = None
                self._stalled.set()
            with self._cond:
                ready = k in self._ready
                jpeg = self._ready.pop(k, None)
                for old in [i for i in self._ready if i < k]:  # made too late (never released)
                    del self._ready[old]
                if not ready:
                    self._counts["overruns"] += 1
                elif jpeg is not None and not self._stalled.is_set():
                    self._jpeg, self._seq, self._stamp = jpeg, self._seq + 1, time.time()
                    self._counts["frames_published"] += 1
                self._slot = k + 1
                self._cond.notify_all()

    def _make_frame(self, index: int) -> "bytes | None | bool":
        """Render, impair and encode frame `index`: JPEG bytes, None when dropped on purpose,
        False when the source failed."""
        t = time.perf_counter()
        try:
            img = self.source.frame(index, index / self.fps)
        except Exception:  # a broken source must not kill the server silently
            log.exception("virtual camera: the frame source failed on frame %d", index)
            self._stop.set()
            return False
        t1 = time.perf_counter()
        if self.impairments.drop():
            with self._cond:
                self._counts["dropped_injected"] += 1
            return None
        jpeg = encode_jpeg(self.impairments.apply(img), self.quality)
        t2 = time.perf_counter()
        with self._cond:
            _push(self._source_s, t1 - t)
            _push(self._encode_s, t2 - t1)
        return jpeg

    def _next_frame(self, after_seq: int, timeout: float = 0.25) -> tuple[int, float, bytes] | None:
        """The newest frame newer than `after_seq`, or None after `timeout` (or when stopping)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after_seq or self._stop.is_set(), timeout)
            if self._seq <= after_seq or self._stop.is_set() or self._jpeg is None:
                return None
            return self._seq, self._stamp, self._jpeg

    def _count(self, key: str, n: int = 1) -> None:
        with self._cond:
            self._counts[key] += n


def _push(window: list[float], v: float, n: int = 100) -> None:
    window.append(v)
    del window[:-n]


def _mean_ms(window: list[float]) -> float:
    return round(1e3 * sum(window) / len(window), 3) if window else math.nan


class _Handler(BaseHTTPRequestHandler):
    owner: MJPEGServer
    timeout = 10  # a client that stops reading for this long is dropped

    def log_message(self, format, *args):  # quiet: the default writes every request to stderr
        log.debug("virtual camera %s: " + format, self.client_address[0], *args)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/stream.mjpg"):
            self._stream()
        elif path == "/snapshot.jpg":
            got = self.owner._next_frame(-1, timeout=2.0)
            if got is None:
                self.send_error(503, "no frame yet")
                return
            self._send(200, "image/jpeg", got[2])
        elif path == "/stats":
            self._send(200, "application/json", json.dumps(self.owner.stats()).encode())
        else:
            self.send_error(404, "try /stream.mjpg, /snapshot.jpg or /stats")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        owner = self.owner
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store")
        self.send_header("Pragma", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        owner._count("clients")
        last = owner._seq  # from the next fresh frame on: a stalled camera sends nothing, not an old frame
        try:
            while not owner._stop.is_set():
                got = owner._next_frame(last)
                if got is None:
                    continue
                last, stamp, jpeg = got
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                        f"X-Timestamp: {stamp:.6f}\r\nX-Frame-Seq: {last}\r\n\r\n").encode()
                self.wfile.write(head + jpeg + b"\r\n")
                self.wfile.flush()
                owner._count("frames_served")
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass
        finally:
            owner._count("clients", -1)
        self.close_connection = True
