"""Camera intrinsics and hand-eye calibration (calibration/charuco.py, calibration/handeye.py,
robot-rl calibrate board|camera|handeye) on a ChArUco board rendered in the twin: real
MuJoCo rendering, real OpenCV detection, no mocks. The tests know the twin's cameras to
check the results; the calibration code never reads them."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
cv2 = pytest.importorskip("cv2")
mujoco = pytest.importorskip("mujoco")

from robot_rl.calibration import handeye as he  # noqa: E402
from robot_rl.calibration.camera_info import CalibrationError, CameraIntrinsics, pinhole  # noqa: E402
from robot_rl.calibration.charuco import BoardSpec, board_scene, calibrate_camera  # noqa: E402
from robot_rl.cli.main import CLIError  # noqa: E402
from robot_rl.spec import load_spec  # noqa: E402

BOARD = BoardSpec()  # the CLI's default board: 7x5, 30 mm squares, 22 mm markers
ARM6_BOARD_POS = (0.5, 0.0, 0.001)


class Scene:
    """A twin scene with a board, a renderer and kinematic posing (no physics)."""

    def __init__(self, robot: str, w: int, h: int, **board_kw):
        self.spec = load_spec(robot)
        self.model = board_scene(self.spec, BOARD, offscreen=(w, h), **board_kw)
        self.data = mujoco.MjData(self.model)
        self.kin = he.RobotKinematics(self.spec)
        self.w, self.h = w, h
        self.r = mujoco.Renderer(self.model, h, w)
        for f in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            self.r.scene.flags[f] = False
        mujoco.mj_forward(self.model, self.data)

    def move(self, q):
        self.data.qpos[self.kin.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        return np.array(q, dtype=np.float64)

    def render(self, camera: str) -> np.ndarray:
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        self.r.update_scene(self.data, camera=camera)
        return self.r.render().copy()

    def close(self):
        self.r.close()


def look_at_views(n: int, seed: int = 0, centre=ARM6_BOARD_POS):
    """Camera poses (MuJoCo quat) around the board: 40-75 deg elevation, 0.22-0.35 m away."""
    from robot_rl.calibration.charuco import views_around
    return views_around(centre, n, seed)


@pytest.fixture(scope="module")
def intrinsics_views():
    """15 views of the board by the arm6 front camera (fovy 55) moved around it, 1280x960."""
    sc = Scene("arm6", 1280, 960, pos=ARM6_BOARD_POS, px_per_square=128)
    cid = sc.model.camera("front").id
    sc.model.cam_fovy[cid] = 55.0
    frames = []
    for i, (p, q) in enumerate(look_at_views(15)):
        sc.model.cam_pos[cid], sc.model.cam_quat[cid] = p, q
        frames.append((f"view{i:02d}.png", sc.render("front")))
    sc.close()
    return frames, pinhole(1280, 960, 55.0)


@pytest.fixture(scope="module")
def arm6_wrist():
    """20 eye-in-hand samples of arm6's wrist camera around the board on the table (640x480)."""
    from robot_rl.sim.twin import Twin, down_mat
    sc = Scene("arm6", 640, 480, pos=ARM6_BOARD_POS, px_per_square=96)
    tw = Twin(sc.spec)
    q0 = tw.ik(np.array([0.5, 0.0, 0.30]), down_mat(0.0), tw.home, iters=100)
    tw.close()
    samples = he.collect(sc.move, lambda: sc.render("wrist"), sc.kin, BOARD, q0, n=20, eye_on_hand=True,
                         pivot_m=0.30, seed=0, log=lambda s: None)
    truth, body = he.camera_pose_in_body(sc.model, "wrist")
    fovy = float(sc.model.cam_fovy[sc.model.camera("wrist").id])
    yield sc, samples, truth, body, fovy, q0


# -- board ---------------------------------------------------------------------------------------------
def test_board_cli_png_yaml_and_paper(tmp_path, capsys):
    from robot_rl.cli.camera_calib import cmd_board
    assert cmd_board([f"out={tmp_path / 'board.png'}"]) == 0
    out = capsys.readouterr().out
    assert "A4: fits" in out and "Letter: fits" in out
    b = BoardSpec.load(tmp_path / "board.yaml")
    assert b == BOARD
    img = cv2.imread(str(tmp_path / "board.png"), cv2.IMREAD_GRAYSCALE)
    px_mm = 300 / 25.4
    assert abs(img.shape[1] - b.width_mm * px_mm) < 3 and abs(img.shape[0] - b.height_mm * px_mm) < 3
    from robot_rl.calibration.charuco import Detector
    c, ids = Detector(b)(img)
    assert len(ids) == b.n_corners  # the printed file is a detectable board
    # too big for paper: said so
    assert cmd_board(["squares_x=12", "squares_y=9", f"out={tmp_path / 'big.png'}", "dpi=50"]) == 0
    assert "does NOT fit" in capsys.readouterr().out
    with pytest.raises(CLIError, match="marker_mm"):
        cmd_board(["marker_mm=40", f"out={tmp_path / 'x.png'}"])
    with pytest.raises(CLIError, match="dictionary"):
        cmd_board(["dictionary=DICT_NOPE", f"out={tmp_path / 'x.png'}"])


# -- intrinsics ------------------------------------------------------------------------------------------
def test_intrinsics_from_rendered_board(intrinsics_views):
    frames, truth = intrinsics_views
    res = calibrate_camera(frames, BOARD, camera_name="front")
    K, Kt = res.intrinsics.K, truth.K
    assert abs(K[0, 0] / Kt[0, 0] - 1) < 0.005 and abs(K[1, 1] / Kt[1, 1] - 1) < 0.005, (K, Kt)
    assert res.rms < 0.3, res.table()
    assert len(res.used) >= 12
    assert abs(K[0, 2] - Kt[0, 2]) < 3 and abs(K[1, 2] - Kt[1, 2]) < 3


def test_camera_cli_folder_and_bad_views(intrinsics_views, tmp_path, capsys):
    from robot_rl.cli.camera_calib import cmd_camera
    frames, truth = intrinsics_views
    d = tmp_path / "imgs"
    d.mkdir()
    for name, img in frames[:8]:
        cv2.imwrite(str(d / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    blank = np.full_like(frames[0][1], 128)
    cv2.imwrite(str(d / "zz_blank.png"), blank)
    BOARD.save(tmp_path / "board.yaml")
    out = tmp_path / "cam" / "front.yaml"
    assert cmd_camera([f"images={d}", f"board={tmp_path / 'board.yaml'}", f"out={out}"]) == 0
    text = capsys.readouterr().out
    assert "zz_blank.png" in text and "rejected: 0 corners" in text and "RMS reprojection error" in text
    intr = CameraIntrinsics.load(out)
    assert (intr.width, intr.height) == (1280, 960)
    assert abs(intr.K[1, 1] / truth.K[1, 1] - 1) < 0.01


class _BoardViews:
    """A virtual camera's source: a person moving the board, each view held `hold` s."""

    def __init__(self, frames, hold: float):
        self.frames, self.hold = [f for _, f in frames], hold
        self.height, self.width = self.frames[0].shape[:2]

    def frame(self, index: int, t: float = 0.0) -> np.ndarray:
        return self.frames[int(t / self.hold) % len(self.frames)]

    def close(self) -> None:
        pass


def test_camera_cli_live_topic_from_the_camera_node(intrinsics_views, tmp_path, capsys, ros_domain):
    """``images=live``: views taken off the camera node's /compressed topic while the board moves
    (a virtual MJPEG camera -> the real camera node process -> rclpy subscriber in the CLI)."""
    import subprocess

    from ros_helpers import spawn

    from robot_rl.cli.camera_calib import cmd_camera
    from robot_rl.drivers.virtual.camera import MJPEGServer
    frames, truth = intrinsics_views
    small = [(n, cv2.resize(f, (640, 480), interpolation=cv2.INTER_AREA)) for n, f in frames[:10]]
    BOARD.save(tmp_path / "board.yaml")
    out = tmp_path / "front.yaml"
    with MJPEGServer(_BoardViews(small, hold=0.6), fps=10) as srv:
        p = spawn("robot_rl.ros.camera_node", "--name", "front", "--source", srv.url, "--fps", "10")
        try:
            assert cmd_camera(["images=live", f"board={tmp_path / 'board.yaml'}", "views=12", "every=0.6",
                               "timeout=60", f"out={out}"]) == 0
        finally:
            p.terminate()
            try:
                p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    text = capsys.readouterr().out
    assert "live topic /camera/front/image_raw/compressed" in text and "view 12/12" in text
    intr = CameraIntrinsics.load(out)
    assert (intr.width, intr.height) == (640, 480)
    assert abs(intr.K[0, 0] / (truth.K[0, 0] / 2) - 1) < 0.01  # the same lens at half the size
    # nobody publishing: one line naming the fix, nothing written
    with pytest.raises(CLIError, match="not published within 2 s.*camera_node"):
        cmd_camera(["images=topic:/camera/side/image_raw", f"board={tmp_path / 'board.yaml'}", "timeout=2",
                    f"out={tmp_path / 'side.yaml'}"])
    assert not (tmp_path / "side.yaml").exists()


def test_board_never_seen_is_one_error_and_no_file(tmp_path):
    from robot_rl.cli.camera_calib import cmd_camera
    sc = Scene("arm6", 320, 240, pos=(0.5, 0.0, -0.5))  # under the table: the camera never sees it
    d = tmp_path / "imgs"
    d.mkdir()
    cid = sc.model.camera("front").id
    for i, (p, q) in enumerate(look_at_views(5)):
        sc.model.cam_pos[cid], sc.model.cam_quat[cid] = p, q
        cv2.imwrite(str(d / f"{i}.png"), sc.render("front"))
    sc.close()
    BOARD.save(tmp_path / "board.yaml")
    out = tmp_path / "camera_info.yaml"
    with pytest.raises(CLIError, match=r"found in 0 of 5 images"):
        cmd_camera([f"images={d}", f"board={tmp_path / 'board.yaml'}", f"out={out}"])
    assert not out.exists()
    with pytest.raises(CalibrationError, match="0 usable views"):
        calibrate_camera([(str(i), cv2.imread(str(d / f"{i}.png"))) for i in range(5)], BOARD)


# -- hand-eye ------------------------------------------------------------------------------------------------
def test_handeye_arm6_eye_in_hand(arm6_wrist):
    sc, samples, truth, body, fovy, _ = arm6_wrist
    assert body == he.EFFECTOR_FRAME and len(samples) == 20
    res = he.calibrate_handeye(samples, pinhole(640, 480, fovy), BOARD, sc.kin, eye_on_hand=True, camera="wrist")
    mm, deg = he.pose_error(res.T, truth)
    assert mm <= 2.0 and deg <= 0.3, res.table()
    names = {m.name for m in res.methods}
    assert set(he.HAND_EYE_METHODS) | set(he.ROBOT_WORLD_METHODS) <= names
    for m in res.methods:  # every method lands near the truth on clean data
        e = he.pose_error(m.T, truth)
        assert e[0] < 5 and e[1] < 1, (m.name, e)
    assert res.spread_mm < 5 and res.spread_deg < 1


def test_handeye_cli_and_twin_roundtrip(arm6_wrist, tmp_path):
    """poses dir -> CLI -> easy_handeye2 YAML -> load_camera_calibration -> apply to a twin
    whose wrist camera was knocked off: it renders what the original does."""
    from robot_rl.cli.camera_calib import cmd_handeye
    sc, samples, truth, body, fovy, q0 = arm6_wrist
    he.write_poses_dir(tmp_path / "poses", samples, robot="arm6", camera="wrist", eye_on_hand=True,
                       joint_names=sc.spec.joint_names)
    BOARD.save(tmp_path / "board.yaml")
    cal = tmp_path / "cal"
    (cal / "cameras").mkdir(parents=True)
    pinhole(640, 480, fovy, "wrist").save(cal / "cameras" / "wrist.yaml")
    assert cmd_handeye([f"data={tmp_path / 'poses'}", f"intrinsics={cal / 'cameras' / 'wrist.yaml'}",
                        f"board={tmp_path / 'board.yaml'}", f"out={cal / 'handeye_wrist.yaml'}"]) == 0
    import yaml
    d = yaml.safe_load((cal / "handeye_wrist.yaml").read_text())
    assert set(d["parameters"]) >= {"eye_on_hand", "robot_base_frame", "robot_effector_frame",
                                    "tracking_base_frame", "tracking_marker_frame"}
    assert d["parameters"]["eye_on_hand"] is True and set(d["transformation"]) == set("x y z qx qy qz qw".split())
    loaded = he.load_camera_calibration(cal)
    intr, pose = loaded["wrist"]
    assert pose.parent == "hand" and he.pose_error(pose.T, truth)[0] < 2
    sc.move(q0)
    ref = sc.render("wrist").astype(np.float32)
    cid = sc.model.camera("wrist").id
    keep = (sc.model.cam_pos[cid].copy(), sc.model.cam_quat[cid].copy(), float(sc.model.cam_fovy[cid]))
    try:
        sc.model.cam_pos[cid] += [0.01, -0.02, 0.015]
        sc.model.cam_quat[cid] = [0.9, 0.1, 0.3, 0.0] / np.linalg.norm([0.9, 0.1, 0.3, 0.0])
        sc.model.cam_fovy[cid] = 40.0
        moved = sc.render("wrist").astype(np.float32)
        he.apply_camera_calibration(sc.model, "wrist", intr, pose)
        back = sc.render("wrist").astype(np.float32)
        assert np.abs(moved - ref).mean() > 10  # knocked off: a different picture
        assert np.abs(back - ref).mean() < 2.0, np.abs(back - ref).mean()
    finally:
        sc.model.cam_pos[cid], sc.model.cam_quat[cid], sc.model.cam_fovy[cid] = keep


def test_handeye_arm6_eye_on_base():
    """The front camera (fixed in the world), the board held by the hand, 20 poses."""
    from robot_rl.sim.twin import Twin
    spec = load_spec("arm6")
    from robot_rl.sim.mjcf import KINEMATICS
    k = KINEMATICS["arm6"]
    z = k.palm + k.finger_len + 0.01
    sc = Scene("arm6", 640, 480, body="hand", pos=(0.0, 0.0, z), px_per_square=96)
    tw = Twin(spec)
    cam = np.array(k.front_cam_pos)
    p = np.array([0.6, 0.0, 0.25])
    zax = (cam - p) / np.linalg.norm(cam - p)  # approach axis (and the board's face) towards the camera
    xax = np.cross([0, 1.0, 0], zax)
    xax /= np.linalg.norm(xax)
    R = np.stack([xax, np.cross(zax, xax), zax], axis=1)
    q0 = tw.ik(p, R, tw.home, iters=200)
    tw.close()
    samples = he.collect(sc.move, lambda: sc.render("front"), sc.kin, BOARD, q0, n=20, eye_on_hand=False,
                         pivot_m=z, max_tilt_deg=25, seed=1, log=lambda s: None)
    assert len(samples) >= 15
    fovy = float(sc.model.cam_fovy[sc.model.camera("front").id])
    res = he.calibrate_handeye(samples, pinhole(640, 480, fovy), BOARD, sc.kin, eye_on_hand=False, camera="front")
    truth, body = he.camera_pose_in_body(sc.model, "front")
    assert body == "world"  # the base body sits at the world origin in the twin
    mm, deg = he.pose_error(res.T, truth)
    sc.close()
    assert mm <= 2.0 and deg <= 0.3, res.table()


def test_handeye_too_few_or_degenerate_poses(arm6_wrist, tmp_path):
    from robot_rl.cli.camera_calib import cmd_handeye
    sc, samples, truth, body, fovy, q0 = arm6_wrist
    intr = pinhole(640, 480, fovy)
    with pytest.raises(he.HandEyeError, match="at least 3 poses"):
        he.calibrate_handeye(samples[:2], intr, BOARD, sc.kin, eye_on_hand=True)
    # the last joint only (arm6's wrist_3 turns about the approach axis): one rotation axis
    deg = []
    for a in np.linspace(-0.3, 0.3, 8):
        q = q0.copy()
        q[-1] += a
        sc.move(q)
        deg.append(he.Sample(f"{a:.2f}", q, sc.render("wrist")))
    with pytest.raises(he.HandEyeError, match="about one axis"):
        he.calibrate_handeye(deg, intr, BOARD, sc.kin, eye_on_hand=True)
    he.write_poses_dir(tmp_path / "deg", deg, robot="arm6", camera="wrist", eye_on_hand=True,
                       joint_names=sc.spec.joint_names)
    BOARD.save(tmp_path / "board.yaml")
    intr.save(tmp_path / "wrist.yaml")
    out = tmp_path / "handeye_wrist.yaml"
    with pytest.raises(CLIError, match="degenerate"):
        cmd_handeye([f"data={tmp_path / 'deg'}", f"intrinsics={tmp_path / 'wrist.yaml'}",
                     f"board={tmp_path / 'board.yaml'}", f"out={out}"])
    assert not out.exists()


# -- the twin from the files ---------------------------------------------------------------------------------
def test_apply_intrinsic_camera_off_centre():
    """An off-centre principal point and fx != fy: MuJoCo renders the board where OpenCV's
    projection with that K puts it."""
    sc = Scene("arm6", 640, 480, pos=ARM6_BOARD_POS, px_per_square=96)
    K = np.array([[520.0, 0, 350.0], [0, 500.0, 220.0], [0, 0, 1]])
    T = he.make_T(np.diag([1.0, -1.0, -1.0]), [0.5, 0.0, 0.45])  # looking straight down at the board
    he.apply_camera_calibration(sc.model, "front", CameraIntrinsics(640, 480, K), T, parent="base")
    cid = sc.model.camera("front").id
    assert sc.model.cam_sensorsize[cid][0] > 0
    from robot_rl.calibration.charuco import Detector, board_pose
    det = Detector(BOARD)
    img = sc.render("front")
    Tb, n, rms = board_pose(det, img, CameraIntrinsics(640, 480, K))
    assert n == BOARD.n_corners and rms < 0.3
    # the board lies flat on the table, facing the camera: its normal is the optical axis
    assert abs(abs(Tb[2, 2]) - 1) < 1e-3 and abs(Tb[2, 3] - (0.45 - 0.002)) < 1e-3
    # centred again: back to a fovy camera
    he.apply_camera_calibration(sc.model, "front", pinhole(640, 480, 50.0))
    assert sc.model.cam_sensorsize[cid][0] == 0 and abs(sc.model.cam_fovy[cid] - 50.0) < 1e-6
    with pytest.raises(CalibrationError, match="no camera"):
        he.apply_camera_calibration(sc.model, "nope", None)
    with pytest.raises(CalibrationError, match="move relative"):
        he.apply_camera_calibration(sc.model, "wrist", None, T, parent="base")
    sc.close()
