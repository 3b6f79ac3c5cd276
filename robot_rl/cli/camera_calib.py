"""Camera calibration: a printable ChArUco board, intrinsics, hand-eye (docs/camera_calibration.md)::

    robot-rl calibrate board [squares_x=7 squares_y=5 square_mm=30 marker_mm=22 dictionary=DICT_5X5_100
                              margin_mm=10 dpi=300] [out=board.png] [yaml=FILE (default: board.yaml beside it)]
    robot-rl calibrate camera images=DIR|BAG|STORE|live|topic:/TOPIC board=board.yaml [camera=front]
                              [topic=/camera/front/image_raw] [stride=1] [min_corners=8] [max_view_rms=1.0]
                              [min_views=4] [views=30 every=1.0 timeout=60] [out=camera_info.yaml]
    robot-rl calibrate handeye data=DIR|STORE robot=so101 camera=wrist intrinsics=camera_info.yaml board=board.yaml
                              [eye_on_hand=true|false] [min_corners=8] [refine=true] [out=handeye_wrist.yaml]
    robot-rl calibrate handeye collect robot=so101 driver=feetech port=PORT calibration=FILE source=URL|DEVICE
                              camera=wrist board=board.yaml [n=20] [tilt_deg=20] [shift_m=0.04] [pivot_m=0.25]
                              [eye_on_hand=...] [width=W height=H] [seed=0] out=DIR

- images: a folder of images, an episode store (frames of ``image_<camera>``), a rosbag
  (``topic``, default ``/camera/<camera>/image_raw``, else its ``/compressed``), or a live
  topic: ``images=topic:/camera/front/image_raw`` (``images=live``: the camera node's
  ``/camera/<camera>/image_raw/compressed``), one view every ``every`` s, ``views`` of them,
  while a person moves the board between captures.
- handeye data: a folder with images + ``poses.yaml`` (what ``collect`` writes), or an
  episode store recorded with a pause at each pose. ``eye_on_hand`` defaults to true for
  a camera named ``wrist``. The result is in easy_handeye2's YAML layout.
- collect: from the pose the arm is in now (put the board in the camera's view first), it
  drives the arm through the driver to `n` poses around it and writes images + poses.yaml.
"""
from __future__ import annotations

from pathlib import Path

from robot_rl.cli.common import CLIError

# the settings each command takes (``robot-rl calibrate <command> --help`` prints this module's docstring)
KEYS = {
    "board": ("squares_x", "squares_y", "square_mm", "marker_mm", "dictionary", "margin_mm", "dpi", "out", "yaml"),
    "camera": ("images", "camera", "board", "topic", "out", "stride", "min_corners", "max_view_rms", "min_views",
               "views", "every", "timeout"),
    "handeye": ("data", "robot", "camera", "intrinsics", "board", "eye_on_hand", "out", "min_corners", "refine"),
    "handeye collect": ("robot", "driver", "port", "calibration", "source", "camera", "board", "n", "tilt_deg",
                        "shift_m", "pivot_m", "eye_on_hand", "out", "width", "height", "seed"),
}


def _kv(args: list[str], cmd: str, allowed: tuple[str, ...]) -> dict[str, str]:
    from robot_rl.cli.motors import _kv as parse  # the arm calibration commands' key=value parser
    return parse(args, f"calibrate {cmd}", allowed)


def _num(kv: dict[str, str], key: str, default, typ=float):
    v = kv.get(key)
    if v is None:
        return default
    try:
        return typ(v)
    except ValueError:
        raise CLIError(f"{key} must be a {'whole ' if typ is int else ''}number, got {v!r}") from None


def _bool(kv: dict[str, str], key: str, default: bool | None) -> bool | None:
    v = kv.get(key)
    if v is None:
        return default
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise CLIError(f"{key} must be true or false, got {v!r}")


def _board(kv: dict[str, str]):
    from robot_rl.calibration.charuco import BoardSpec
    if not kv.get("board"):
        raise CLIError("needs board=board.yaml (the board you printed: `robot-rl calibrate board`)")
    return BoardSpec.load(kv["board"])


# -- board ------------------------------------------------------------------------------------------
def cmd_board(args: list[str]) -> int:
    from robot_rl.calibration.camera_info import CalibrationError
    from robot_rl.calibration.charuco import BoardSpec
    kv = _kv(args, "board", KEYS["board"])
    try:
        b = BoardSpec(squares_x=_num(kv, "squares_x", 7, int), squares_y=_num(kv, "squares_y", 5, int),
                      square_mm=_num(kv, "square_mm", 30.0), marker_mm=_num(kv, "marker_mm", 22.0),
                      dictionary=kv.get("dictionary", "DICT_5X5_100"), margin_mm=_num(kv, "margin_mm", 10.0))
        dpi = _num(kv, "dpi", 300.0)
        img = b.image(dpi=dpi)
    except CalibrationError as e:
        raise CLIError(str(e)) from None
    import cv2
    out = Path(kv.get("out", "board.png"))
    if out.suffix.lower() not in (".png", ".tif", ".tiff", ".bmp"):
        raise CLIError(f"out must be a .png (lossless) file, got {out}")
    ypath = Path(kv.get("yaml") or out.with_suffix(".yaml"))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise CLIError(f"could not write {out}")
    _set_png_dpi(out, dpi)
    b.save(ypath)
    fit = b.paper_fit()
    print(f"board: {b.squares_x}x{b.squares_y} squares of {b.square_mm:g} mm, markers {b.marker_mm:g} mm "
          f"({b.dictionary}), {b.n_corners} ChArUco corners")
    print(f"wrote {out} ({img.shape[1]}x{img.shape[0]} px at {dpi:g} dpi = {b.width_mm:.0f} x {b.height_mm:.0f} mm "
          f"with a {b.margin_mm:g} mm white margin) and {ypath}")
    for paper, how in fit.items():
        print(f"  {paper}: " + (f"fits ({how})" if how else "does NOT fit at this size (lower square_mm, or "
                                                            "print on larger paper)"))
    print("Print at 100% scale (no 'fit to page'), then MEASURE one square: if it is not "
          f"{b.square_mm:g} mm, put the measured value in {ypath} (square_mm, and marker_mm scaled alike).")
    return 0


def _set_png_dpi(path: Path, dpi: float) -> None:
    """Add a pHYs chunk so printing dialogs pick the intended physical size."""
    import struct
    import zlib
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return
    ppm = int(round(dpi / 0.0254))
    body = b"pHYs" + struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    ihdr_end = 8 + 4 + 4 + 13 + 4
    path.write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])


# -- camera ------------------------------------------------------------------------------------------
def _frames(src: str, camera: str, topic: str | None, stride: int, kv: dict[str, str] | None = None):
    from robot_rl.calibration.camera_info import CalibrationError
    from robot_rl.calibration.charuco import bag_frames, folder_frames, store_frames, topic_frames
    if src == "live" or src.startswith("topic:"):
        t = src[len("topic:"):] if src.startswith("topic:") else (topic or f"/camera/{camera}/image_raw/compressed")
        if not t.startswith("/"):
            raise CLIError(f"images={src}: a topic name starts with '/', e.g. topic:/camera/{camera}/image_raw")
        kv = kv or {}
        return topic_frames(t, views=_num(kv, "views", 30, int), every=_num(kv, "every", 1.0),
                            timeout=_num(kv, "timeout", 60.0)), f"live topic {t}"
    p = Path(src)
    if not p.exists():
        raise CLIError(f"images={src}: no such file or folder")
    if p.is_dir() and (p / "zarr.json").is_file():
        return store_frames(p, camera, stride=stride), "episode store"
    if (p.is_dir() and (p / "metadata.yaml").is_file()) or p.suffix in (".mcap", ".db3"):
        t = topic
        if t is None:
            from robot_rl.data.bag import BagError, open_bag
            try:
                with open_bag(p) as bag:
                    names = set(bag.topics)
            except BagError as e:
                raise CLIError(str(e)) from None
            raw = f"/camera/{camera}/image_raw"
            t = raw if raw in names else raw + "/compressed"
        return bag_frames(p, t, stride=stride), f"bag topic {t}"
    if p.is_dir():
        return folder_frames(p), "folder"
    raise CalibrationError(f"images={src}: not a folder of images, an episode store or a rosbag")


def cmd_camera(args: list[str]) -> int:
    from robot_rl.calibration.camera_info import CalibrationError
    from robot_rl.calibration.charuco import calibrate_camera
    kv = _kv(args, "camera", KEYS["camera"])
    if not kv.get("images"):
        raise CLIError("'calibrate camera' needs images=DIR|BAG|STORE|live|topic:/TOPIC (pictures of the board "
                       "from 15-30 directions)")
    camera = kv.get("camera", "front")
    out = Path(kv.get("out", "camera_info.yaml"))
    try:
        board = _board(kv)
        frames, kind = _frames(kv["images"], camera, kv.get("topic"), _num(kv, "stride", 1, int), kv)
        res = calibrate_camera(frames, board, camera_name=camera, min_corners=_num(kv, "min_corners", 8, int),
                               max_view_rms=_num(kv, "max_view_rms", 1.0), min_views=_num(kv, "min_views", 4, int))
    except CalibrationError as e:
        raise CLIError(str(e)) from None
    print(f"camera {camera!r} from {kv['images']} ({kind})")
    print(res.table())
    out.parent.mkdir(parents=True, exist_ok=True)
    res.intrinsics.save(out)
    print(f"wrote {out} (ROS camera_info)")
    if res.rms > 0.5:
        print(f"note: RMS {res.rms:.2f} px is high for a ChArUco calibration (< 0.3 px is typical): blurred or "
              "bent board, or a wrong square_mm/marker_mm in board.yaml")
    return 0


# -- hand-eye ------------------------------------------------------------------------------------------
def cmd_handeye(args: list[str]) -> int:
    if args and args[0] == "collect":
        return _cmd_collect(args[1:])
    from robot_rl.calibration.camera_info import CalibrationError, CameraIntrinsics
    from robot_rl.calibration.handeye import RobotKinematics, calibrate_handeye, read_poses_dir, store_samples
    kv = _kv(args, "handeye", KEYS["handeye"])
    if not kv.get("data"):
        raise CLIError("'calibrate handeye' needs data=DIR (images + poses.yaml) or data=STORE")
    if not kv.get("intrinsics"):
        raise CLIError("'calibrate handeye' needs intrinsics=camera_info.yaml (`robot-rl calibrate camera`)")
    try:
        board = _board(kv)
        intr = CameraIntrinsics.load(kv["intrinsics"])
        p = Path(kv["data"])
        meta = {}
        if p.is_dir() and (p / "zarr.json").is_file():
            camera = kv.get("camera") or "wrist"
            samples = store_samples(p, camera)
            from robot_rl.data.store import EpisodeStore
            with EpisodeStore.open(p) as st:
                robot = kv.get("robot") or st.spec.name
        elif p.is_dir():
            meta, samples = read_poses_dir(p)
            camera = kv.get("camera") or str(meta.get("camera") or "wrist")
            robot = kv.get("robot") or meta.get("robot")
        else:
            raise CLIError(f"data={p}: not a folder with poses.yaml nor an episode store")
        if not robot:
            raise CLIError("needs robot=NAME (the robot spec whose kinematics gives the hand poses)")
        eoh = _bool(kv, "eye_on_hand", meta.get("eye_on_hand", camera == "wrist"))
        kin = RobotKinematics(str(robot))
        names = meta.get("joint_names")
        if names is not None and list(names) != kin.spec.joint_names:
            raise CLIError(f"poses.yaml joint_names {list(names)} differ from {robot}'s {kin.spec.joint_names}")
        res = calibrate_handeye(samples, intr, board, kin, eye_on_hand=bool(eoh), camera=camera,
                                min_corners=_num(kv, "min_corners", 8, int), refine=_bool(kv, "refine", True))
    except CalibrationError as e:
        raise CLIError(str(e)) from None
    except (KeyError, ValueError) as e:  # unknown robot spec and the like
        raise CLIError(str(e)) from None
    print(res.table())
    out = Path(kv.get("out") or f"handeye_{camera}.yaml")
    res.save(out)
    t = res.T[:3, 3]
    frame = "effector (hand)" if res.eye_on_hand else "base"
    print(f"wrote {out} (easy_handeye2 layout): {camera} optical frame in the {frame} frame at "
          f"[{t[0]:.4f}, {t[1]:.4f}, {t[2]:.4f}] m")
    return 0


def _cmd_collect(args: list[str]) -> int:
    import numpy as np

    from robot_rl.calibration.camera_info import CalibrationError
    from robot_rl.calibration.handeye import RobotKinematics, collect, robot_mover, write_poses_dir
    kv = _kv(args, "handeye collect", KEYS["handeye collect"])
    for k, what in (("driver", "feetech, dynamixel, ros2_control, ..."), ("source", "the camera: /dev/videoN, URL"),
                    ("out", "a folder for images + poses.yaml")):
        if not kv.get(k):
            raise CLIError(f"'calibrate handeye collect' needs {k}=... ({what})")
    camera = kv.get("camera", "wrist")
    robot_name = kv.get("robot", "so101")
    eoh = _bool(kv, "eye_on_hand", camera == "wrist")
    from robot_rl.drivers.cameras.base import CameraConfig
    from robot_rl.drivers.cameras.factory import make_camera
    from robot_rl.drivers.registry import resolve
    opts = {k: kv[k] for k in ("port", "calibration") if kv.get(k)}
    try:
        board = _board(kv)
        kin = RobotKinematics(robot_name)
        robot = resolve(kv["driver"])(robot=robot_name, action_mode="joint_pos", **opts)
        cam = make_camera(CameraConfig(camera, kv["source"], _num(kv, "width", None, int),
                                       _num(kv, "height", None, int)))
    except (CalibrationError, ValueError) as e:
        raise CLIError(str(e)) from None
    cam.connect()
    robot.connect()
    try:
        q0 = np.asarray(robot.observe()["joint_pos"], np.float64)

        def capture():
            f = cam.read_latest()
            return cam.wait_next(f.seq).image  # a frame taken after the arm stood still

        samples = collect(robot_mover(robot), capture, kin, board, q0, n=_num(kv, "n", 20, int), eye_on_hand=bool(eoh),
                          max_tilt_deg=_num(kv, "tilt_deg", 20.0), max_shift_m=_num(kv, "shift_m", 0.04),
                          pivot_m=_num(kv, "pivot_m", None), seed=_num(kv, "seed", 0, int))
    finally:
        robot.disconnect()
        cam.disconnect()
    if len(samples) < 3:
        raise CLIError(f"only {len(samples)} poses showed the board; start from a pose where the camera sees "
                       "all of it, or lower tilt_deg / shift_m")
    out = write_poses_dir(kv["out"], samples, robot=robot_name, camera=camera, eye_on_hand=bool(eoh),
                          joint_names=kin.spec.joint_names)
    print(f"wrote {len(samples)} images + poses.yaml to {out}")
    return 0
