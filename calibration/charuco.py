"""ChArUco boards and camera intrinsics from images of one (OpenCV's aruco module).

    board = BoardSpec(squares_x=7, squares_y=5, square_mm=30, marker_mm=22)
    board.save("board.yaml"); cv2.imwrite("board.png", board.image(dpi=300))
    result = calibrate_camera(frames, board, camera_name="front")   # frames: (name, HxWx3 RGB | HxW)
    print(result.table()); result.intrinsics.save("camera_info.yaml")

``board.yaml`` is what ``calibrate camera`` and ``calibrate handeye`` read, so both use the
board that was printed::

    squares_x: 7          # chessboard squares along the board's x (columns)
    squares_y: 5
    square_mm: 30.0       # side of one chessboard square as printed (measure it!)
    marker_mm: 22.0       # side of one ArUco marker
    dictionary: DICT_5X5_100
    margin_mm: 10.0       # white border around the pattern in the PNG (not part of the geometry)

The board frame is OpenCV's: origin at the outer corner of the first square, x along the
columns, y along the rows, z into the board; ChArUco corner ``i`` sits at
``board.corners()[i]`` (metres).

Views are rejected when the board shows fewer than ``min_corners`` ChArUco corners, and,
iteratively (worst first, recalibrating after each), when a view's RMS reprojection error
exceeds ``max_view_rms`` px or (above 0.3 px) ``rel_view_rms`` x the median of the views in
use.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import yaml

from robot_rl.calibration.camera_info import CalibrationError, CameraIntrinsics

PAPERS_MM = {"A4": (210.0, 297.0), "Letter": (215.9, 279.4)}
PRINTER_MARGIN_MM = 5.0  # what a typical printer cannot print at each edge
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class BoardError(CalibrationError):
    """A board description is malformed or cannot be built."""


def _cv2():
    import cv2
    if not hasattr(cv2, "aruco") or not hasattr(cv2.aruco, "CharucoDetector"):
        raise CalibrationError(f"OpenCV {cv2.__version__} lacks cv2.aruco.CharucoDetector (needs OpenCV >= 4.7 "
                               "with the aruco module: opencv-python(-headless) or opencv-contrib-python)")
    return cv2


@dataclass
class BoardSpec:
    squares_x: int = 7
    squares_y: int = 5
    square_mm: float = 30.0
    marker_mm: float = 22.0
    dictionary: str = "DICT_5X5_100"
    margin_mm: float = 10.0

    def __post_init__(self) -> None:
        try:
            self.squares_x, self.squares_y = int(self.squares_x), int(self.squares_y)
            self.square_mm, self.marker_mm, self.margin_mm = (float(self.square_mm), float(self.marker_mm),
                                                              float(self.margin_mm))
        except (TypeError, ValueError):
            raise BoardError(f"board: squares_x/squares_y must be integers and square_mm/marker_mm/margin_mm "
                             f"numbers, got {self}") from None
        if self.squares_x < 3 or self.squares_y < 3:
            raise BoardError(f"board: needs at least 3x3 squares, got {self.squares_x}x{self.squares_y}")
        if not 0 < self.marker_mm < self.square_mm:
            raise BoardError(f"board: marker_mm must be > 0 and smaller than square_mm ({self.square_mm}), "
                             f"got {self.marker_mm}")
        if self.margin_mm < 0:
            raise BoardError(f"board: margin_mm must be >= 0, got {self.margin_mm}")
        cv2 = _cv2()
        name = str(self.dictionary)
        if not name.startswith("DICT_") or not hasattr(cv2.aruco, name):
            known = sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))
            raise BoardError(f"board: unknown ArUco dictionary {name!r}; one of {', '.join(known)}")
        need = self.squares_x * self.squares_y // 2
        have = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name)).bytesList.shape[0]
        if need > have:
            raise BoardError(f"board: {self.squares_x}x{self.squares_y} squares need {need} markers but "
                             f"{name} has {have}; pick a larger dictionary (e.g. DICT_5X5_250)")

    # -- geometry --------------------------------------------------------------------------
    @property
    def square_m(self) -> float:
        return self.square_mm / 1000.0

    @property
    def width_mm(self) -> float:
        """Printed width including the white margin."""
        return self.squares_x * self.square_mm + 2 * self.margin_mm

    @property
    def height_mm(self) -> float:
        return self.squares_y * self.square_mm + 2 * self.margin_mm

    def board(self):
        cv2 = _cv2()
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_mm / 1000.0,
                                      self.marker_mm / 1000.0, d)

    def corners(self) -> np.ndarray:
        """(N, 3) ChArUco corner positions in the board frame (metres)."""
        return np.asarray(self.board().getChessboardCorners(), np.float64).reshape(-1, 3)

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    # -- printing ---------------------------------------------------------------------------
    def image(self, dpi: float = 300.0, *, px_per_square: int | None = None, margin: bool = True) -> np.ndarray:
        """The board as a grayscale image: at `dpi` (for printing), or `px_per_square` pixels
        per square (textures); with the white margin unless ``margin=False``."""
        if px_per_square is None:
            if not dpi > 0:
                raise BoardError(f"dpi must be > 0, got {dpi}")
            px_per_square = int(round(self.square_mm / 25.4 * dpi))
        if px_per_square < 20:
            raise BoardError(f"{px_per_square} px per square is too coarse to print the markers; raise dpi")
        m = int(round(self.margin_mm / self.square_mm * px_per_square)) if margin else 0
        w, h = self.squares_x * px_per_square, self.squares_y * px_per_square
        img = self.board().generateImage((w, h), marginSize=0, borderBits=1)
        if m:
            img = np.pad(img, m, constant_values=255)
        return img

    def paper_fit(self) -> dict[str, str | None]:
        """For each paper size, the orientation the printed board fits in (within the
        printer's margins), or None."""
        out: dict[str, str | None] = {}
        w, h = self.width_mm, self.height_mm
        for name, (pw, ph) in PAPERS_MM.items():
            pw, ph = pw - 2 * PRINTER_MARGIN_MM, ph - 2 * PRINTER_MARGIN_MM
            out[name] = "portrait" if (w <= pw and h <= ph) else "landscape" if (w <= ph and h <= pw) else None
        return out

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"type": "charuco", **asdict(self)}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("# ChArUco board (robot_rl.calibration.charuco): what `robot-rl calibrate camera|handeye` "
                     "read\n" + yaml.safe_dump(self.to_dict(), sort_keys=False))
        return p

    @classmethod
    def from_dict(cls, d: Any, where: str = "board") -> "BoardSpec":
        if not isinstance(d, dict):
            raise BoardError(f"{where}: expected a mapping (board.yaml), got {type(d).__name__}")
        d = dict(d)
        kind = d.pop("type", "charuco")
        if kind != "charuco":
            raise BoardError(f"{where}: type {kind!r} is not supported (charuco)")
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise BoardError(f"{where}: unknown keys {sorted(bad)}; valid keys: {sorted(known)}")
        try:
            return cls(**d)
        except BoardError as e:
            raise BoardError(f"{where}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BoardSpec":
        p = Path(path)
        if not p.is_file():
            raise BoardError(f"no board file at {p} (make one with `robot-rl calibrate board`)")
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise BoardError(f"{p}: not valid YAML: {e}") from None
        return cls.from_dict(d, str(p))


# -- detection ----------------------------------------------------------------------------------
def to_gray(img: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 (RGB) or HxWx4 uint8 -> HxW uint8."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise CalibrationError(f"images must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        if a.shape[2] == 1:
            return a[:, :, 0]
        cv2 = _cv2()
        return cv2.cvtColor(np.ascontiguousarray(a[:, :, :3]), cv2.COLOR_RGB2GRAY)
    raise CalibrationError(f"images must be HxW or HxWx3, got shape {a.shape}")


class Detector:
    """ChArUco corners of one board in images (sub-pixel refined)."""

    def __init__(self, board: BoardSpec):
        cv2 = _cv2()
        self.spec = board
        self._board = board.board()
        self._det = cv2.aruco.CharucoDetector(self._board)
        self._corners = board.corners()

    def __call__(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(corners (N, 2) float64 px, ids (N,) int) -- empty when the board is not seen."""
        gray = to_gray(img)
        cc, ci, _, _ = self._det.detectBoard(gray)
        if cc is None or ci is None or len(ci) == 0:
            return np.zeros((0, 2)), np.zeros(0, int)
        cc = np.asarray(cc, np.float64).reshape(-1, 2)
        if self.refine and len(cc) >= 2:
            cc = self._refine(gray, cc)
        return cc, np.asarray(ci, int).reshape(-1)

    refine = True

    def _refine(self, gray: np.ndarray, cc: np.ndarray) -> np.ndarray:
        """Sub-pixel refinement with a window that stays inside the white rim around the
        markers (OpenCV's window can reach a marker's black border when the squares are
        small in the image, which pulls the corner off by a few tenths of a pixel)."""
        import cv2
        d = np.linalg.norm(cc[:, None] - cc[None], axis=2)
        np.fill_diagonal(d, np.inf)
        side = d.min(axis=1)  # local square size in pixels (foreshortened side)
        rim = (self.spec.square_mm - self.spec.marker_mm) / 2 / self.spec.square_mm
        out = cc.copy()
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        for k in range(len(cc)):
            half = int(0.9 * side[k] * rim)
            if half < 3:
                continue
            out[k] = cv2.cornerSubPix(gray, cc[k:k + 1].astype(np.float32).reshape(1, 1, 2).copy(), (half, half),
                                      (-1, -1), crit).reshape(2)
        return out

    def object_points(self, ids: np.ndarray) -> np.ndarray:
        return self._corners[np.asarray(ids, int)]


# -- image sources ------------------------------------------------------------------------------
def _read_image(path: Path) -> np.ndarray:
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise CalibrationError(f"{path}: not an image OpenCV can read")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def folder_frames(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise CalibrationError(f"{p}: no images ({', '.join(IMAGE_EXTS)})")
    for f in files:
        yield f.name, _read_image(f)


def store_frames(path: str | os.PathLike, camera: str, *, stride: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of ``image_<camera>`` of an episode store (every `stride`-th step)."""
    from robot_rl.data.store import EpisodeStore, StoreError
    try:
        st = EpisodeStore.open(path)
    except StoreError as e:
        raise CalibrationError(str(e)) from None
    with st:
        key = f"image_{camera}"
        if key not in st.keys:
            cams = [k[len("image_"):] for k in st.keys if k.startswith("image_")]
            raise CalibrationError(f"{path}: no camera {camera!r} in the store (cameras: {cams})")
        n = int(st.n_steps)
        for lo in range(0, n, 64 * stride):
            rows = np.arange(lo, min(n, lo + 64 * stride), stride)
            imgs = st.read_frames(key, rows)
            for r, img in zip(rows, imgs):
                yield f"step {int(r)}", np.asarray(img)


def bag_frames(path: str | os.PathLike, topic: str, *, stride: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of an Image or CompressedImage topic of a rosbag (every `stride`-th message)."""
    from robot_rl.data.bag import BagError, open_bag
    from robot_rl.data.contract import MessageError, _image_rgb, compressed_image_rgb
    try:
        bag = open_bag(path)
    except BagError as e:
        raise CalibrationError(str(e)) from None
    with bag:
        topics = bag.topics
        if topic not in topics:
            imgs = [t for t, v in topics.items() if v.type.endswith(("/Image", "/CompressedImage"))]
            raise CalibrationError(f"{path}: no topic {topic!r}; image topics: {imgs or 'none'}")
        msgtype = topics[topic].type
        for i, (_, mt, t_ns, raw) in enumerate(bag.messages([topic])):
            if i % stride:
                continue
            msg = bag.deserialize(raw, mt)
            try:
                img = compressed_image_rgb(msg, topic) if msgtype.endswith("CompressedImage") else _image_rgb(msg, topic)
            except MessageError as e:
                raise CalibrationError(str(e)) from None
            yield f"t={t_ns / 1e9:.3f}", img


def topic_frames(topic: str, *, views: int = 30, every: float = 1.0, timeout: float = 120.0,
                 log=print) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of a live ``sensor_msgs/Image`` or ``CompressedImage`` topic (a camera node's
    ``/camera/<name>/image_raw`` or its ``/compressed``): the newest frame every `every`
    seconds, `views` of them, while a person moves the board (or the camera) between
    captures. Waits up to `timeout` s for the topic to appear and for each frame."""
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from robot_rl.data.contract import MessageError, _image_rgb, compressed_image_rgb
    from robot_rl.ros import topics as T

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("robot_rl_calibrate_camera", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    try:
        end = time.monotonic() + timeout
        mtype = None
        while mtype is None:
            found = dict(node.get_topic_names_and_types())
            types = found.get(topic, [])
            if "sensor_msgs/msg/Image" in types or "sensor_msgs/msg/CompressedImage" in types:
                mtype = "Image" if "sensor_msgs/msg/Image" in types else "CompressedImage"
                break
            if time.monotonic() > end:
                imgs = sorted(t for t, ty in found.items() if any(x.endswith(("/Image", "/CompressedImage")) for x in ty))
                raise CalibrationError(f"topic {topic}: not published within {timeout:g} s (image topics seen: "
                                       f"{imgs or 'none'}); start the camera node first: python -m "
                                       "robot_rl.ros.camera_node --name NAME --source /dev/videoN")
            ex.spin_once(timeout_sec=0.1)
        from sensor_msgs.msg import CompressedImage, Image
        latest: list = [None, 0]  # message, count received

        def on_msg(m):
            latest[0] = m
            latest[1] += 1

        node.create_subscription(Image if mtype == "Image" else CompressedImage, topic, on_msg, T.sensor_qos(2))
        log(f"calibrate camera: {topic} ({mtype}); taking a view every {every:g} s, {views} views: move the board "
            "(tilted, near, far, in every corner of the image) between captures")
        seen = 0
        for k in range(int(views)):
            due = time.monotonic() + (every if k else 0.0)
            deadline = due + timeout
            while time.monotonic() < due or latest[1] == seen:
                if time.monotonic() > deadline:
                    raise CalibrationError(f"topic {topic}: no frame for {timeout:g} s after view {k} "
                                           "(camera node stopped?)")
                ex.spin_once(timeout_sec=0.02)
            msg, seen = latest[0], latest[1]
            try:
                img = _image_rgb(msg, topic) if mtype == "Image" else compressed_image_rgb(msg, topic)
            except MessageError as e:
                raise CalibrationError(str(e)) from None
            st = msg.header.stamp
            log(f"  view {k + 1}/{views}")
            yield f"t={st.sec + st.nanosec * 1e-9:.3f}", img
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


# -- intrinsics ---------------------------------------------------------------------------------
@dataclass
class View:
    name: str
    corners: int
    rms: float | None = None  # px, with the final intrinsics
    status: str = "used"
    _img: np.ndarray | None = field(default=None, repr=False)
    _obj: np.ndarray | None = field(default=None, repr=False)


@dataclass
class IntrinsicsResult:
    intrinsics: CameraIntrinsics
    rms: float  # px over all used corners
    views: list[View]

    @property
    def used(self) -> list[View]:
        return [v for v in self.views if v.status == "used"]

    def table(self) -> str:
        lines = [f"{'view':<24} {'corners':>7} {'rms px':>8}  status", "-" * 60]
        for v in self.views:
            rms = "" if v.rms is None else f"{v.rms:.3f}"
            lines.append(f"{v.name[:24]:<24} {v.corners:>7} {rms:>8}  {v.status}")
        K, D = self.intrinsics.K, self.intrinsics.D
        lines += ["-" * 60,
                  f"{len(self.used)} of {len(self.views)} views used; RMS reprojection error {self.rms:.3f} px",
                  f"fx {K[0, 0]:.2f}  fy {K[1, 1]:.2f}  cx {K[0, 2]:.2f}  cy {K[1, 2]:.2f}  "
                  f"(image {self.intrinsics.width}x{self.intrinsics.height})",
                  "distortion (k1 k2 p1 p2 k3): " + " ".join(f"{x:.5f}" for x in np.ravel(D))]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"rms_px": self.rms, "views": [{"name": v.name, "corners": v.corners, "rms_px": v.rms,
                                               "status": v.status} for v in self.views]}


def _view_rms(obj: np.ndarray, img: np.ndarray, rvec, tvec, K, D) -> float:
    import cv2
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, D)
    return float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))


def calibrate_camera(frames: Iterable[tuple[str, np.ndarray]], board: BoardSpec, *, camera_name: str = "",
                     min_corners: int = 8, min_views: int = 4, max_view_rms: float = 1.0,
                     rel_view_rms: float = 3.0, flags: int = 0, min_tilt_deg: float = 10.0) -> IntrinsicsResult:
    """Intrinsics + plumb_bob distortion from ChArUco views (``cv2.calibrateCamera``).

    Raises CalibrationError (nothing is written by this function) when the images differ
    in size, or fewer than `min_views` views survive: the message says how many images
    showed the board at all."""
    cv2 = _cv2()
    det = Detector(board)
    views: list[View] = []
    size: tuple[int, int] | None = None
    for name, img in frames:
        h, w = np.asarray(img).shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise CalibrationError(f"image {name!r} is {w}x{h} but earlier ones are {size[0]}x{size[1]}; "
                                   "calibrate one camera at one resolution")
        c, ids = det(img)
        v = View(str(name), len(ids))
        if len(ids) < min_corners:
            v.status = f"rejected: {len(ids)} corners < {min_corners}"
        else:
            v._img, v._obj = c, det.object_points(ids)
        views.append(v)
    if size is None:
        raise CalibrationError("no images to calibrate from")
    seen = sum(1 for v in views if v.corners > 0)

    def fail(why: str) -> CalibrationError:
        return CalibrationError(
            f"camera calibration failed: {why}. The board ({board.squares_x}x{board.squares_y} squares, "
            f"{board.dictionary}) was found in {seen} of {len(views)} images; need >= {min_views} views with "
            f">= {min_corners} corners each. Check board.yaml matches the printed board, and that the board is "
            "in view, sharp and well lit.")

    K = D = None
    rms = math.nan
    while True:
        used = [v for v in views if v.status == "used"]
        if len(used) < min_views:
            raise fail(f"{len(used)} usable views")
        obj = [v._obj.astype(np.float32) for v in used]
        img = [v._img.astype(np.float32) for v in used]
        try:
            rms, K, D, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=flags)
        except cv2.error as e:
            raise fail(f"OpenCV could not solve ({str(e).strip().splitlines()[-1]})") from None
        for v, r, t in zip(used, rvecs, tvecs):
            v.rms = _view_rms(v._obj, v._img, r, t, K, D)
        errs = np.array([v.rms for v in used])
        # absolute limit, and outliers against the others -- but never a view whose error is
        # within what sub-pixel corners give anyway (those views carry the focal length)
        limit = min(max_view_rms, max(rel_view_rms * float(np.median(errs)), 0.3))
        worst = int(np.argmax(errs))
        if errs[worst] <= limit:
            break
        used[worst].status = f"rejected: {errs[worst]:.2f} px > {limit:.2f}"
    tilt = max(math.degrees(math.acos(np.clip(abs(cv2.Rodrigues(r)[0][2, 2]), 0, 1))) for r in rvecs)
    turn = max(float(np.linalg.norm(cv2.Rodrigues(cv2.Rodrigues(a)[0].T @ cv2.Rodrigues(b)[0])[0]))
               for a in rvecs for b in rvecs)
    if tilt < min_tilt_deg or math.degrees(turn) < min_tilt_deg:
        raise fail(f"the views are too alike (board tilted at most {tilt:.0f} deg to the camera, views differ by "
                   f"at most {math.degrees(turn):.0f} deg; need >= {min_tilt_deg:g}): the focal length cannot be told "
                   "from the distance. Tilt the board 20-45 deg in different directions")
    for v in views:
        if v.status != "used" and v._obj is not None:  # the rejected views' error with the final intrinsics
            ok, r, t = cv2.solvePnP(v._obj, v._img, K, D)
            if ok:
                v.rms = _view_rms(v._obj, v._img, r, t, K, D)
    intr = CameraIntrinsics(int(size[0]), int(size[1]), np.asarray(K, np.float64),
                            np.asarray(D, np.float64).reshape(-1), camera_name=camera_name)
    return IntrinsicsResult(intr, float(rms), views)


def board_pose(det: Detector, img: np.ndarray, intr: CameraIntrinsics, min_corners: int = 6
               ) -> tuple[np.ndarray | None, int, float | None]:
    """(4x4 pose of the board in the camera's optical frame, corners seen, RMS px) from
    one image; pose None when fewer than `min_corners` corners are seen."""
    import cv2
    c, ids = det(img)
    if len(ids) < min_corners:
        return None, len(ids), None
    obj = det.object_points(ids)
    K, D = intr.K, np.ravel(intr.D)
    ok, r, t = cv2.solvePnP(obj, c, K, D, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None, len(ids), None
    r, t = cv2.solvePnPRefineLM(obj, c, K, D, r, t)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(r)[0]
    T[:3, 3] = np.ravel(t)
    return T, len(ids), _view_rms(obj, c, r, t, K, D)


# -- a board in the twin (tests, benchmarks, a virtual calibration rig) --------------------------------------
def add_board(spec, board: BoardSpec, *, body: str = "world", pos=(0.0, 0.0, 0.0), quat=(1.0, 0.0, 0.0, 0.0),
              px_per_square: int = 64, name: str = "charuco", thickness: float = 0.002):
    """Add `board` to a ``mujoco.MjSpec`` as a thin textured box on `body` (its printed side
    is the box's +z face; the board frame's z axis points into the box). Returns the geom."""
    import mujoco
    img = board.image(px_per_square=px_per_square)
    h, w = img.shape
    tex = spec.add_texture(name=f"{name}_tex", type=mujoco.mjtTexture.mjTEXTURE_2D, width=w, height=h, nchannel=3)
    tex.data = np.repeat(img[:, :, None], 3, axis=2).tobytes()
    mat = spec.add_material(name=f"{name}_mat", specular=0.0, shininess=0.0, reflectance=0.0, emission=0.6)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = f"{name}_tex"
    parent = spec.worldbody if body == "world" else spec.body(body)
    if parent is None:
        raise BoardError(f"the scene has no body {body!r} to put the board on")
    return parent.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, material=f"{name}_mat",
                           size=[board.width_mm / 2000, board.height_mm / 2000, thickness / 2],
                           pos=list(pos), quat=list(quat), contype=0, conaffinity=0, group=1)


def board_scene(robot_spec, board: BoardSpec, *, body: str = "world", pos=(0.0, 0.0, 0.0),
                quat=(1.0, 0.0, 0.0, 0.0), objects_xml: str = "", offscreen: tuple[int, int] = (640, 480),
                px_per_square: int = 64):
    """The twin's scene for `robot_spec` (+ a task's objects) with `board` added: an MjModel
    whose qpos layout equals the twin's (the board has no joint)."""
    import mujoco

    from robot_rl.sim import mjcf
    s = mujoco.MjSpec.from_string(mjcf.scene_xml(robot_spec, objects_xml, offscreen=max(offscreen)))
    s.visual.global_.offwidth, s.visual.global_.offheight = int(offscreen[0]), int(offscreen[1])
    add_board(s, board, body=body, pos=pos, quat=quat, px_per_square=px_per_square)
    return s.compile()


def views_around(centre, n: int, seed: int = 0, *, spread=(0.09, 0.07), elevation_deg=(40.0, 75.0),
                 distance=(0.22, 0.35), roll=0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` camera poses (position, MuJoCo camera quaternion: looking along -z, y up) aimed at
    points near `centre` from random elevations, azimuths, distances and rolls: the views a
    person takes of a board on the table, for calibrating in the twin."""
    import math

    import mujoco
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = np.asarray(centre, float) + rng.uniform([-spread[0], -spread[1], 0], [spread[0], spread[1], 0])
        el, az = math.radians(rng.uniform(*elevation_deg)), rng.uniform(0, 2 * math.pi)
        p = c + rng.uniform(*distance) * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                                    math.sin(el)])
        fwd = (c - p) / np.linalg.norm(c - p)
        x = np.cross(fwd, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(x, fwd)
        r = rng.uniform(-roll, roll)
        q = np.empty(4)
        mujoco.mju_mat2Quat(q, np.stack([math.cos(r) * x + math.sin(r) * y, -math.sin(r) * x + math.cos(r) * y, -fwd],
                                        axis=1).reshape(9))
        out.append((p, q))
    return out
