"""camera_node as a real process: a virtual MJPEG camera on loopback -> OpenCV capture ->
/camera/<name>/image_raw[/compressed] + /diagnostics, read by a test-side rclpy node."""
from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

from robot_rl.drivers.virtual.camera import MJPEGServer, SyntheticSource, decode_frame_number
from ros_helpers import spawn

W, H = 320, 240


@contextmanager
def camera_node(*args: str):
    p = spawn("robot_rl.ros.camera_node", "--name", "front", "--diag-hz", "5", *args)
    try:
        yield p
    finally:
        p.terminate()
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        print("---- camera_node stdout ----\n", out[-3000:], "\n---- stderr ----\n", err[-3000:])


class Client:
    def __init__(self, raw: bool):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CompressedImage, Image

        from robot_rl.ros import topics
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("test_camera_client", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.jpeg, self.raw, self.diag = [], [], []
        # reliable, as the camera node publishes (a best-effort reader may lose frames on a busy machine)
        self.node.create_subscription(CompressedImage, "/camera/front/image_raw/compressed",
                                      lambda m: self.jpeg.append((m, time.monotonic())), topics.reliable_qos(100))
        if raw:
            self.node.create_subscription(Image, "/camera/front/image_raw", self.raw.append, topics.sensor_qos(100))
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.diag.append, topics.reliable_qos(100))

    def spin_until(self, pred, timeout: float, what: str, proc=None):
        end = time.monotonic() + timeout
        while not pred():
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"camera_node exited ({proc.returncode}) while waiting for {what}")
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.ex.spin_once(timeout_sec=0.01)

    def status(self):
        for arr in reversed(self.diag):
            for s in arr.status:
                if s.name == "camera/front":
                    return s
        return None

    def close(self):
        self.node.destroy_node()
        self.ex.shutdown()
        self.ctx.try_shutdown()


@pytest.fixture
def client(ros_domain):
    made = []

    def make(**kw):
        made.append(Client(**kw))
        return made[-1]
    yield make
    for c in made:
        c.close()


def _numbers(msgs) -> list[int]:
    return [decode_frame_number(cv2.imdecode(np.frombuffer(bytes(m.data), np.uint8), cv2.IMREAD_COLOR)[..., ::-1])
            for m, _ in msgs]


def _stamp_ns(m) -> int:
    return m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec


def test_streams_every_frame_in_order_with_host_stamps_and_goes_stale_on_a_stall(client):
    with MJPEGServer(SyntheticSource(W, H), fps=30) as srv:
        c = client(raw=True)
        with camera_node("--source", srv.url, "--width", str(W), "--height", str(H), "--fps", "30",
                         "--max-age", "0.3") as p:
            c.spin_until(lambda: len(c.jpeg) >= 5 and len(c.raw) >= 5, 30, "first frames", p)
            n0, overruns0 = len(c.jpeg), srv.stats()["overruns"]
            c.spin_until(lambda: len(c.jpeg) >= n0 + 45, 10, "45 more frames", p)
            run = c.jpeg[n0:]
            nums = _numbers(run)
            # frame numbers follow the server's clock: a slot it was too late to render (a busy
            # machine) is skipped there, so only those gaps are allowed, and nothing reordered
            skipped_by_server = srv.stats()["overruns"] - overruns0
            assert all(b > a for a, b in zip(nums, nums[1:])), f"frames reordered: {nums}"
            assert nums[-1] - nums[0] + 1 - len(nums) <= skipped_by_server, f"frames lost: {nums}"
            stamps = [_stamp_ns(m) for m, _ in run]
            assert all(b > a for a, b in zip(stamps, stamps[1:])), "header stamps must increase"
            period = np.median(np.diff(stamps)) / 1e9
            assert period == pytest.approx(1 / 30, rel=0.15)
            # stamps are host time of receipt: close to (and before) when the frame reached us
            lag = [time.time() - (time.monotonic() - t_rx) - _stamp_ns(m) / 1e9 for m, t_rx in run]
            assert 0 <= np.median(lag) < 0.2
            raw = c.raw[-1]
            assert (raw.height, raw.width, raw.encoding) == (H, W, "rgb8")
            assert run[-1][0].format == "jpeg"
            c.spin_until(lambda: c.status() is not None and any(kv.key == "achieved_fps" for kv in c.status().values),
                         5, "diagnostics", p)
            vals = {kv.key: kv.value for kv in c.status().values}
            assert float(vals["achieved_fps"]) == pytest.approx(30, rel=0.15)
            assert vals["stale"] == "false" and c.status().level == b"\x00"

            srv.stall()
            time.sleep(0.1)
            c.spin_until(lambda: c.status() is not None and {kv.key: kv.value for kv in c.status().values}
                         .get("stale") == "true", 5, "stale flag", p)
            assert c.status().level == b"\x01" and "stale" in c.status().message
            n_stalled = len(c.jpeg)
            t_end = time.monotonic() + 0.6
            c.spin_until(lambda: time.monotonic() > t_end, 2, "stall")
            assert len(c.jpeg) == n_stalled, "a stalled camera must publish nothing"
            srv.resume()
            c.spin_until(lambda: len(c.jpeg) >= n_stalled + 10, 15, "frames after the stall", p)
            c.spin_until(lambda: {kv.key: kv.value for kv in c.status().values}.get("stale") == "false", 5,
                         "fresh again", p)


def test_raw_images_only_while_someone_subscribes(client):
    with MJPEGServer(SyntheticSource(W, H), fps=30) as srv:
        c = client(raw=False)
        with camera_node("--source", srv.url, "--width", str(W), "--height", str(H)) as p:
            c.spin_until(lambda: len(c.jpeg) >= 20, 30, "compressed frames", p)
            c.spin_until(lambda: c.status() is not None, 5, "diagnostics", p)
            vals = {kv.key: kv.value for kv in c.status().values}
            assert int(vals["published_compressed"]) > 0 and vals["published_raw"] == "0"


@pytest.mark.parametrize("args,match", [
    (("--source", "/dev/video99"), "/dev/video99"),
    (("--source", "http://127.0.0.1:9/stream.mjpg", "--reconnects", "0"), "127.0.0.1:9"),
])
def test_a_wrong_source_is_one_clear_error(ros_domain, args, match):
    p = spawn("robot_rl.ros.camera_node", "--name", "front", *args)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("camera_node: ") and match in lines[0], err


def test_an_unsupported_resolution_is_refused(ros_domain):
    with MJPEGServer(SyntheticSource(W, H), fps=30) as srv:
        p = spawn("robot_rl.ros.camera_node", "--name", "front", "--source", srv.url, "--width", "1280",
                  "--height", "720")
        out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "1280x720" in err and f"{W}x{H}" in err, err


def test_recorder_never_stores_a_stalled_cameras_old_frame_as_fresh(client, tmp_path):
    """virtual camera -> camera node -> recorder node (contract `cameras`) -> store; the camera
    stalls for 1 s mid-episode: those grid steps are skipped (and counted), and no stored
    step holds a frame older than the contract's tolerance."""
    import json

    from std_msgs.msg import String

    from robot_rl.data import EpisodeStore
    from robot_rl.ros import topics
    out = tmp_path / "cams.zarr"
    with MJPEGServer(SyntheticSource(W, H), fps=30) as srv:
        c = client(raw=False)
        pub = c.node.create_publisher(String, topics.TELEOP_EVENT, topics.reliable_qos(10))
        with camera_node("--source", srv.url, "--width", str(W), "--height", str(H), "--fps", "30",
                         "--max-age", "0.3") as cam:
            rec = spawn("robot_rl.ros.recorder_node", "--contract", "cameras", "--out", str(out), "--robot", "so101",
                        "--cameras", "front", "--image-size", f"{W}x{H}", "--mode", "realtime", "--task", "stall")
            try:
                c.spin_until(lambda: pub.get_subscription_count() > 0 and len(c.jpeg) > 10, 30, "recorder + frames",
                             cam)
                t = time.monotonic() + 1.0
                c.spin_until(lambda: time.monotonic() > t, 5, "settle")
                pub.publish(String(data="start"))
                for phase, seconds in (("run", 1.5), ("stall", 1.0), ("run", 1.5)):
                    (srv.stall if phase == "stall" else srv.resume)()
                    t = time.monotonic() + seconds
                    c.spin_until(lambda: time.monotonic() > t, seconds + 5, phase)
                pub.publish(String(data="success"))
                t = time.monotonic() + 1.5
                c.spin_until(lambda: time.monotonic() > t, 5, "the episode's last steps")
            finally:
                rec.send_signal(2)
                rout, rerr = rec.communicate(timeout=30)
                print("---- recorder ----\n", rout[-3000:], rerr[-3000:])
            assert rec.returncode == 0
    with EpisodeStore.open(out) as st:
        assert st.n_episodes == 1 and st.codec("image_front") == "jpeg:90"
        grid = np.asarray(st.data["timestamp"][:])
        stamps = np.asarray(st.data["stamp_image_front"][:])
        extra = st.episode_meta(0)["extra"]
    age = grid - stamps
    assert np.all(np.abs(age) <= 1 / 30 + 1e-6), f"a step holds a frame {np.abs(age).max():.3f} s from its time"
    # a frame may serve two neighbouring steps when receive stamps jitter near a grid midpoint
    # (it is then within one period of both); never more than a few
    assert len(stamps) - len(np.unique(stamps)) <= 5
    # ~4 s at 30 Hz with ~1 s stalled: about 90 steps recorded and about 30 skipped, and said so
    skipped = extra["cadence"]["skipped_steps_by_topic"].get("/camera/front/image_raw/compressed", 0)
    assert 20 <= skipped <= 45, json.dumps(extra["cadence"])
    assert 70 <= st_len(out) <= 110
    assert np.max(np.diff(grid)) > 0.5  # the hole is where the stall was


def st_len(path) -> int:
    from robot_rl.data import EpisodeStore
    with EpisodeStore.open(path) as st:
        return st.n_steps
