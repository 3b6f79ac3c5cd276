"""The camera node: one capture device -> ``/camera/<name>/image_raw`` (+ ``/compressed``).

    python -m robot_rl.ros.camera_node --name front --source /dev/video0 --width 640 --height 480 --fps 30
    python -m robot_rl.ros.camera_node --name front --source http://127.0.0.1:8081/stream.mjpg   # a virtual camera

- Captures with :mod:`robot_rl.drivers.cameras` (V4L2 index or ``/dev/video*``, a video
  file, an HTTP MJPEG or RTSP URL) on the driver's capture thread; this node publishes every
  new frame once, stamped (``header.stamp``) with the host wall-clock time of the frame on
  the camera's own frame clock (receive times with their scheduling jitter filtered out).
- ``/camera/<name>/image_raw`` ``sensor_msgs/Image`` ``rgb8``: published only while someone
  subscribes (a 640x480 frame is 0.9 MB; nobody pays for it unasked), unless ``--raw always``.
- ``/camera/<name>/image_raw/compressed`` ``sensor_msgs/CompressedImage`` ``jpeg``
  (quality ``--jpeg-quality``, 4:4:4 chroma), the form the recorder takes by default.
- ``/camera/<name>/camera_info`` with every frame once a calibration exists
  (``--calibration`` ROS camera_info YAML; its size must match the delivered frames).
- ``/diagnostics`` status ``camera/<name>``: frames, dropped, achieved vs requested fps and
  ``stale`` (no frame for ``--max-age`` s: nothing is published then, so a recorder never
  takes an old frame for a fresh one). Level WARN when stale or short of the asked fps,
  ERROR once the driver gave up reconnecting (the node then exits 1).
- Resolution is never changed here: the recorder contract (``size:``) or the training
  loader resize, where the dataset says so.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from robot_rl.ros import topics

DIAG_PREFIX = "camera/"


compressed_topic = topics.camera_compressed


def encode_jpeg(rgb, quality: int) -> bytes:
    """RGB uint8 -> baseline JPEG, 4:4:4 chroma (4:2:0 costs ~1 dB PSNR on noisy frames)."""
    import imagecodecs
    return bytes(imagecodecs.jpeg8_encode(rgb, level=int(quality), subsampling=(1, 1)))


class CameraNode:
    """Thin adapter: a driver camera's frames -> ROS messages; the capture logic (threads,
    reconnects, stale detection, fps accounting) lives in the driver."""

    def __init__(self, args: argparse.Namespace, camera: Any, intrinsics: Any = None) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self.args, self.camera, self.intrinsics = args, camera, intrinsics
        self.name = args.name
        self.frame_id = args.frame_id or f"camera_{args.name}"
        self.node = rclpy.create_node(f"camera_{args.name}")
        self.log = self.node.get_logger()
        qos = topics.sensor_qos(args.depth) if args.qos == "sensor" else topics.reliable_qos(args.depth)
        self.pub_raw = self.node.create_publisher(Image, topics.camera_image(args.name), qos)
        self.pub_jpeg = (self.node.create_publisher(CompressedImage, compressed_topic(args.name), qos)
                         if args.jpeg_quality > 0 else None)
        self.pub_info = (self.node.create_publisher(CameraInfo, topics.camera_info(args.name), qos)
                         if intrinsics is not None else None)
        self.pub_diag = self.node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topics.reliable_qos(10))
        self._Image, self._CompressedImage = Image, CompressedImage
        self.published = {"raw": 0, "compressed": 0}
        self.skipped_before_start = 0  # frames captured before publishing began (--wait-subscribers)
        self.stale = False
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera_{args.name}_pub", daemon=True)
        if args.diag_hz > 0:
            self.node.create_timer(1.0 / args.diag_hz, self.publish_diagnostics)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # -- publishing (its own thread: frames go out as they arrive, not on an executor tick) --
    def _run(self) -> None:
        from robot_rl.drivers.cameras import CameraError, StaleFrameError
        seq = -1
        if self.args.wait_subscribers > 0:  # publish nothing until the recorder(s) listen
            pub = self.pub_jpeg or self.pub_raw
            while not self._stop.is_set() and pub.get_subscription_count() < self.args.wait_subscribers:
                time.sleep(0.02)
            try:
                seq = self.camera.read_latest(max_age_s=1e9).seq  # start with the next frame
            except CameraError:
                seq = -1
            self.skipped_before_start = seq + 1
        while not self._stop.is_set():
            try:
                frame = self.camera.wait_next(seq, timeout=self.args.max_age)
            except StaleFrameError:  # nothing new within max_age: stale, publish nothing
                if not self.stale:
                    self.log.warning(f"camera {self.name}: no frame for {self.args.max_age:g} s (stale)")
                self.stale = True
                continue
            except CameraError as e:  # gave up reconnecting, or the source ended
                self.failed = str(e)
                self.log.error(f"camera {self.name}: {e}")
                self.publish_diagnostics()
                return
            if self.stale:
                self.log.info(f"camera {self.name}: frames again")
            self.stale = False
            seq = frame.seq
            try:
                self.publish(frame)
            except Exception as e:  # noqa: BLE001 - the context went away under us at shutdown
                if self._stop.is_set() or not self.node.context.ok():
                    return
                self.log.error(f"camera {self.name}: publishing failed: {e}", throttle_duration_sec=2.0)

    def publish(self, frame: Any) -> None:
        from robot_rl.data.contract import NS
        from builtin_interfaces.msg import Time
        stamp = Time(sec=int(frame.stamp_ns // NS), nanosec=int(frame.stamp_ns % NS))
        img = frame.image
        if self.pub_jpeg is not None:
            m = self._CompressedImage()
            m.header.stamp, m.header.frame_id = stamp, self.frame_id
            m.format = "jpeg"
            m.data = encode_jpeg(img, self.args.jpeg_quality)
            self.pub_jpeg.publish(m)
            self.published["compressed"] += 1
        if self.args.raw == "always" or (self.args.raw == "auto" and self.pub_raw.get_subscription_count() > 0):
            m = self._Image()
            m.header.stamp, m.header.frame_id = stamp, self.frame_id
            m.height, m.width = int(img.shape[0]), int(img.shape[1])
            m.encoding, m.is_bigendian, m.step = "rgb8", 0, int(img.shape[1]) * 3
            m.data = img.tobytes()
            self.pub_raw.publish(m)
            self.published["raw"] += 1
        if self.pub_info is not None:
            from robot_rl.ros import msgs
            k = self.intrinsics
            info = msgs.camera_info(k.K, k.width, k.height, 0.0, self.frame_id)
            info.header.stamp = stamp
            info.distortion_model = k.distortion_model
            info.d = [float(x) for x in k.D.reshape(-1)]
            info.r = k.R.reshape(-1).tolist()
            info.p = k.projection().reshape(-1).tolist()
            self.pub_info.publish(info)

    def status(self) -> tuple[int, str, dict[str, str]]:
        """(diagnostic level, message, values)."""
        from diagnostic_msgs.msg import DiagnosticStatus
        st = self.camera.stats()
        stale = self.stale or bool(st.get("stale"))
        flat: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, dict):
                flat.update({f"{k}_{kk}": vv for kk, vv in v.items()})
            else:
                flat[k] = v
        values = {k: (f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in flat.items()}
        values.update({"stale": str(stale).lower(), "published_compressed": str(self.published["compressed"]),
                       "skipped_before_start": str(self.skipped_before_start),
                       "published_raw": str(self.published["raw"])})
        if self.failed:
            return DiagnosticStatus.ERROR, f"failed: {self.failed}", values
        if stale:
            return DiagnosticStatus.WARN, "stale: no frame within max age", values
        if st.get("fps_shortfall"):
            return DiagnosticStatus.WARN, (f"delivers {st.get('achieved_fps') or 0:.1f} fps of the "
                                           f"{(st.get('requested') or {}).get('fps')} asked"), values
        return DiagnosticStatus.OK, "ok", values

    def publish_diagnostics(self) -> None:
        from robot_rl.ros import msgs
        level, text, values = self.status()
        msgs.publish_diagnostics(self.node, self.pub_diag, [
            msgs.diagnostic_status(DIAG_PREFIX + self.name, str(self.args.source), level, text, values)])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camera_node", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="camera name: topics /camera/<name>/...")
    p.add_argument("--source", required=True,
                   help="V4L2 index or /dev/videoN, a video file, http://...mjpg or rtsp:// URL")
    p.add_argument("--width", type=int, default=None, help="asked width (default: what the source gives)")
    p.add_argument("--height", type=int, default=None, help="asked height")
    p.add_argument("--fps", type=float, default=None, help="asked frame rate")
    p.add_argument("--fourcc", default=None, help="V4L2 pixel format, e.g. MJPG (what USB cameras need for 30 fps)")
    p.add_argument("--max-age", type=float, default=0.5, help="s without a frame before the camera is stale")
    p.add_argument("--jpeg-quality", type=int, default=90, help="quality of /compressed (0: do not publish it)")
    p.add_argument("--raw", choices=("auto", "always", "never"), default="auto",
                   help="publish image_raw: auto = only while subscribed")
    p.add_argument("--qos", choices=("sensor", "reliable"), default="reliable",
                   help="reliable (default) serves best-effort and reliable subscribers alike; a recorder then "
                        "loses no frame to a momentary stall; sensor = best effort")
    p.add_argument("--depth", type=int, default=10, help="publisher queue depth (frames)")
    p.add_argument("--wait-subscribers", type=int, default=0,
                   help="publish nothing until this many subscribers listen (recordings that must hold every frame)")
    p.add_argument("--calibration", default=None, help="camera_info YAML (ROS format): publish camera_info")
    p.add_argument("--frame-id", default=None, help="header.frame_id (default camera_<name>)")
    p.add_argument("--reconnects", type=int, default=5, help="reconnect attempts before giving up")
    p.add_argument("--diag-hz", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=None, help="exit after this many s (benchmarks)")
    return p


def make_camera(args: argparse.Namespace):
    from robot_rl.drivers.cameras import CameraConfig, make_camera as _make
    src: Any = args.source
    if isinstance(src, str) and src.isdigit():
        src = int(src)
    cfg = CameraConfig(name=args.name, source=src, width=args.width, height=args.height, fps=args.fps,
                       fourcc=args.fourcc, max_age_s=args.max_age, reconnect=args.reconnects > 0,
                       max_reconnects=args.reconnects)
    return _make(cfg)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.jpeg_quality <= 100:
        print(f"camera_node: --jpeg-quality must be 0..100, got {args.jpeg_quality}", file=sys.stderr)
        return 2
    from robot_rl.drivers.cameras import CameraError
    intrinsics = None
    try:
        if args.calibration:
            from robot_rl.calibration.camera_info import CameraIntrinsics
            intrinsics = CameraIntrinsics.load(args.calibration)
        camera = make_camera(args)
        camera.connect()
        if intrinsics is not None:
            st = camera.stats()
            intrinsics.check_size(int(st["negotiated"]["width"]), int(st["negotiated"]["height"]),
                                  f"camera {args.name}")
    except (CameraError, ValueError, OSError) as e:
        print(f"camera_node: {e}", file=sys.stderr)
        return 1
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions
    # SIGINT / SIGTERM end the loop below (also when started in the background, where a shell
    # leaves SIGINT ignored): the capture and publishing threads are then stopped in order
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = CameraNode(args, camera, intrinsics)
        st = camera.stats()
        neg = st.get("negotiated") or {}
        node.log.info(f"camera {args.name}: {args.source} at {neg.get('width')}x{neg.get('height')} "
                      f"{neg.get('fps')} fps ({st.get('backend')})")
        node.start()
        t_end = None if args.duration is None else time.monotonic() + args.duration
        while not stop and rclpy.ok() and node.failed is None and (t_end is None or time.monotonic() < t_end):
            rclpy.spin_once(node.node, timeout_sec=0.1)
        node.publish_diagnostics()
        return 1 if node.failed else 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if node is not None:
            node.stop()
        camera.disconnect()
        if node is not None:
            node.node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
