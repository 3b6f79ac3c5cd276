"""Camera capture against real files and a real MJPEG server on loopback (no mocks)."""
from __future__ import annotations

import json
import time
import urllib.request

import cv2
import numpy as np
import pytest

from robot_rl.drivers.cameras import (CameraConfig, CameraError, EndOfStreamError, OpenCVCamera, ResolutionError,
                                      StaleFrameError, make_camera)
from robot_rl.drivers.virtual.camera import (Impairments, MJPEGServer, SyntheticSource, decode_frame_number,
                                             encode_jpeg)

W, H = 640, 480


@pytest.fixture(scope="module")
def synthetic() -> SyntheticSource:
    return SyntheticSource(W, H)


@pytest.fixture(scope="module")
def video_file(tmp_path_factory, synthetic) -> tuple[str, int, float]:
    """An MJPG .avi of 30 frames at 20 fps whose pixels carry the frame number."""
    path = str(tmp_path_factory.mktemp("video") / "numbers.avi")
    n, fps = 30, 20.0
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    for i in range(n):
        w.write(cv2.cvtColor(synthetic.frame(i), cv2.COLOR_RGB2BGR))
    w.release()
    return path, n, fps


def read_all(cam, timeout: float = 2.0) -> list:
    frames, seq = [], -1
    while True:
        try:
            f = cam.wait_next(seq, timeout)
        except EndOfStreamError:
            return frames
        frames.append(f)
        seq = f.seq


def read_for(cam, seconds: float) -> list:
    frames, seq, t0 = [], -1, time.monotonic()
    while time.monotonic() - t0 < seconds:
        f = cam.wait_next(seq, 1.0)
        frames.append(f)
        seq = f.seq
    return frames


def assert_none_lost(numbers: list[int], server: MJPEGServer) -> None:
    """In order, and every frame number the server produced arrived: the only gaps allowed
    are slots the server itself was too late to render (``overruns``, on a loaded machine)."""
    steps = np.diff(numbers)
    assert (steps >= 1).all(), f"out of order: {numbers}"
    assert int((steps - 1).sum()) <= server.stats()["overruns"], f"frames lost: {numbers}"


def wait_until(pred, timeout: float, step: float = 0.01) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(step)
    return pred()


# -- the synthetic pattern ----------------------------------------------------------------
def test_frame_number_survives_jpeg_noise_and_jitter(synthetic):
    imp = Impairments(noise_sigma=4, exposure_jitter=0.08, seed=1)
    for n in (0, 1, 12345, 2**31 + 7):
        img = imp.apply(synthetic.frame(n))
        jpeg = np.frombuffer(encode_jpeg(img, 60), np.uint8)
        decoded = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert decode_frame_number(decoded) == n
    a, b = imp.apply(synthetic.frame(5)), imp.apply(synthetic.frame(5))
    assert a.dtype == np.uint8 and not np.array_equal(a, b)  # fresh noise and gain every frame


# -- files --------------------------------------------------------------------------------
def test_file_every_frame_in_order_paced_at_file_fps(video_file):
    path, n, fps = video_file
    with OpenCVCamera(CameraConfig("file", path, W, H)) as cam:
        frames = read_all(cam)
        s = cam.stats()
    assert [f.seq for f in frames] == list(range(n))
    assert [decode_frame_number(f.image) for f in frames] == list(range(n))
    assert [f.source_pos for f in frames] == list(range(n))
    assert frames[0].image.shape == (H, W, 3) and frames[0].image.dtype == np.uint8
    # RGB, not BGR: the gradient's red channel grows left to right
    assert frames[0].image[H // 2, -20, 0] > 200 and frames[0].image[H // 2, -20, 2] < 150
    stamps = np.array([f.stamp_ns for f in frames])
    assert (np.diff(stamps) > 0).all()
    period = np.diff(stamps).mean() / 1e9
    assert period == pytest.approx(1 / fps, rel=0.15)
    assert s["frames"] == n and s["dropped"] == 0 and s["ended"]
    assert s["negotiated"]["width"] == W and s["negotiated"]["fps"] == pytest.approx(fps)
    assert s["achieved_fps"] == pytest.approx(fps, rel=0.15)


def test_file_fast_replay_and_loop(video_file):
    path, n, _ = video_file
    cfg = CameraConfig("file", path, realtime=False, loop=True)
    with make_camera(cfg) as cam:
        frames, seq = [], -1
        while len(frames) < 2 * n + 3:
            frames.append(cam.wait_next(seq, 2.0))
            seq = frames[-1].seq
        s = cam.stats()
    assert [f.seq for f in frames] == list(range(2 * n + 3))
    assert [f.source_pos for f in frames] == [i % n for i in range(2 * n + 3)]
    assert [decode_frame_number(f.image) for f in frames[n - 2: n + 2]] == [n - 2, n - 1, 0, 1]
    assert s["loops"] >= 2 and not s["fps_shortfall"]


# -- HTTP MJPEG ---------------------------------------------------------------------------
def test_http_mjpeg_no_lost_frames_at_30fps(synthetic):
    with MJPEGServer(synthetic, fps=30) as server, \
            OpenCVCamera(CameraConfig("front", server.url, W, H, fps=30)) as cam:
        frames = read_for(cam, 2.0)
        s = cam.stats()
    numbers = [decode_frame_number(f.image) for f in frames]
    assert len(frames) >= 50
    assert_none_lost(numbers, server)
    assert [f.seq for f in frames] == list(range(len(frames)))
    stamps = np.array([f.stamp_ns for f in frames])
    assert (np.diff(stamps) > 0).all()
    assert s["achieved_fps"] == pytest.approx(30, rel=0.12)
    assert not s["fps_shortfall"] and not s["stale"] and s["reconnects"] == 0
    assert s["negotiated"]["width"] == W and s["negotiated"]["height"] == H
    assert frames[0].source_pos is None


def test_mjpeg_server_parts_snapshot_and_stats(synthetic):
    """The wire format: multipart parts with Content-Length, monotonic X-Timestamp / X-Frame-Seq."""
    with MJPEGServer(synthetic, fps=30) as server:
        with urllib.request.urlopen(server.url, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
            stamps, seqs = [], []
            for _ in range(5):
                headers = {}
                line = r.readline()
                while line.strip() == b"":
                    line = r.readline()
                assert line.startswith(b"--")
                while (line := r.readline().strip()):
                    k, v = line.decode().split(":", 1)
                    headers[k.lower()] = v.strip()
                body = r.read(int(headers["content-length"]))
                assert body[:2] == b"\xff\xd8" and headers["content-type"] == "image/jpeg"
                stamps.append(float(headers["x-timestamp"]))
                seqs.append(int(headers["x-frame-seq"]))
        assert np.all(np.diff(stamps) > 0) and np.all(np.diff(seqs) > 0)
        base = server.url.rsplit("/", 1)[0]
        with urllib.request.urlopen(base + "/snapshot.jpg", timeout=5) as r:
            img = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (H, W, 3)
        with urllib.request.urlopen(base + "/stats", timeout=5) as r:
            stats = json.loads(r.read())
        assert stats["frames_published"] >= 5 and stats["frames_served"] >= 5 and stats["dropped_injected"] == 0


def test_injected_drops_show_as_gaps(synthetic):
    imp = Impairments(drop_prob=0.3, seed=3)
    with MJPEGServer(synthetic, fps=30, impairments=imp) as server, \
            OpenCVCamera(CameraConfig("front", server.url, W, H)) as cam:
        frames = read_for(cam, 1.5)
        served = server.stats()
    numbers = np.array([decode_frame_number(f.image) for f in frames])
    assert (np.diff(numbers) >= 1).all() and (np.diff(numbers) > 1).any()
    assert served["dropped_injected"] > 0


# -- errors -------------------------------------------------------------------------------
def _closed_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("source, expect", [
    ("/dev/video99", "no video device /dev/video99"),
    (99, "no video device /dev/video99"),
    ("/nonexistent/clip.mp4", "video file /nonexistent/clip.mp4 does not exist"),
    ("closed-port", "unreachable"),
    ("realsense:0123", "pyrealsense2 is not installed"),
])
def test_open_errors_name_the_cause(source, expect):
    if source == "closed-port":
        source = f"http://127.0.0.1:{_closed_port()}/stream.mjpg"
    cam = None
    with pytest.raises(CameraError, match=expect) as info:
        cam = make_camera(CameraConfig("front", source, open_timeout_s=2.0))  # realsense: fails here
        cam.connect()
    assert "front" in str(info.value) and "\n" not in str(info.value)
    assert cam is None or not cam.is_connected


def test_unsupported_resolution(video_file):
    path, _, _ = video_file
    with pytest.raises(ResolutionError, match="requested 1280x720, the source delivers 640x480"):
        OpenCVCamera(CameraConfig("front", path, 1280, 720)).connect()
    with OpenCVCamera(CameraConfig("front", path, 1280, 720, strict_resolution=False, realtime=False)) as cam:
        assert cam.wait_next(-1, 2.0).image.shape == (H, W, 3)


def test_bad_config_is_one_error():
    with pytest.raises(CameraError, match="fourcc must be 4 characters"):
        CameraConfig("front", 0, fourcc="MJPEG")
    with pytest.raises(CameraError, match="no camera backend for 'kinect:1'"):
        make_camera(CameraConfig("front", "kinect:1"))


# -- stalls, shutdowns, slow sources ------------------------------------------------------
def test_stall_goes_stale_then_fresh(synthetic):
    with MJPEGServer(synthetic, fps=30) as server, \
            OpenCVCamera(CameraConfig("front", server.url, W, H, fps=30, max_age_s=0.25, read_timeout_s=3.0)) as cam:
        cam.wait_next(5, 2.0)
        assert cam.read_latest().image.shape == (H, W, 3)
        server.stall()
        t0 = time.monotonic()
        assert wait_until(lambda: cam.stats()["stale"], 1.0)
        assert time.monotonic() - t0 < 0.25 + 0.2
        with pytest.raises(StaleFrameError, match="stalled"):
            cam.read_latest()
        last = cam.stats()["frames"]
        server.resume()
        f = cam.wait_next(last - 1, 2.0)
        assert not cam.stats()["stale"]
        assert cam.read_latest().seq >= f.seq


def test_server_shutdown_reconnects_then_fails(synthetic):
    server = MJPEGServer(synthetic, fps=30).start()
    cfg = CameraConfig("front", server.url, W, H, read_timeout_s=1.0, reconnect_backoff_s=0.05, max_reconnects=3)
    with OpenCVCamera(cfg) as cam:
        cam.wait_next(2, 2.0)
        server.close()
        assert wait_until(lambda: cam.stats()["dead"], 5.0)
        s = cam.stats()
        assert s["reconnects"] == 3 and s["stale"]
        with pytest.raises(CameraError, match="gave up after 3 reconnect attempts.*Connection refused"):
            cam.read_latest()
        with pytest.raises(CameraError, match="gave up"):
            cam.wait_next(10**6, 1.0)


def test_slow_source_reports_fps_shortfall(synthetic, caplog):
    with MJPEGServer(synthetic, fps=15) as server, \
            OpenCVCamera(CameraConfig("front", server.url, W, H, fps=30)) as cam:
        caplog.set_level("WARNING")
        frames = read_for(cam, 1.6)
        s = cam.stats()
    assert_none_lost([decode_frame_number(f.image) for f in frames], server)
    assert s["achieved_fps"] == pytest.approx(15, rel=0.12)
    assert s["fps_shortfall"] is True
    assert sum("fps shortfall" in r.getMessage() for r in caplog.records) == 1
    assert s["dropped_gaps"] <= server.stats()["overruns"]  # a steady 15 fps is a shortfall, not drops


# -- twin ---------------------------------------------------------------------------------
def test_twin_camera_source_renders_640x480():
    from robot_rl.drivers.virtual.camera import TwinCameraSource
    src = TwinCameraSource("pick_cube", "front", W, H, fps=30, seed=0)
    try:
        a = src.frame(0)
        b = src.frame(15)  # half a second later: the expert has moved the arm
    finally:
        src.close()
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    assert a.std() > 10 and len(np.unique(a.reshape(-1, 3), axis=0)) > 100
    assert np.abs(a.astype(int) - b).mean() > 0.1


# -- CLI ----------------------------------------------------------------------------------
def test_cli_virtual_camera(capsys):
    from robot_rl.cli.main import main
    assert main(["virtual"]) == 2
    assert "robot-rl virtual {camera|so101}" in capsys.readouterr().err
    rc = main(["virtual", "camera", "--synthetic", "--port", "0", "--duration", "0.3", "--noise", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "stream   http://127.0.0.1:" in out and "virtual camera stopped" in out


def test_twin_camera_served_over_mjpeg():
    """Rendering on the server's thread (the source was built on this one) works: EGL
    contexts are per thread."""
    from robot_rl.drivers.virtual.camera import TwinCameraSource
    src = TwinCameraSource("reach", "front", 320, 240, fps=30, seed=1)
    try:
        src.frame(0)  # renders on this thread first
        with MJPEGServer(src, fps=30) as server, \
                OpenCVCamera(CameraConfig("front", server.url, 320, 240, fps=30)) as cam:
            frames = [cam.wait_next(-1, 5.0)]
            for _ in range(5):
                frames.append(cam.wait_next(frames[-1].seq, 2.0))
    finally:
        src.close()
    assert all(f.image.shape == (240, 320, 3) for f in frames) and frames[-1].image.std() > 10
