"""Hand-eye calibration: where a camera sits on the robot, from images of a ChArUco board and
the joint states the arm had when it took them.

- eye-in-hand (a wrist camera): the board lies still in the world, the arm moves the camera
  around it; the result is the camera's pose in the effector frame (the twin's ``hand``
  body, where the MJCF mounts the wrist camera).
- eye-on-base (a front camera): the board is fixed to the hand, the arm shows it to the
  still camera; the result is the camera's pose in the robot base frame (``base``).

Robot poses come from forward kinematics of the recorded joint states (the twin's kinematic
chain for the robot spec; nothing about its cameras), board poses from ``cv2.solvePnP`` on
the ChArUco corners with the camera's intrinsics. Every OpenCV method runs
(``cv2.calibrateHandEye``: TSAI, PARK, HORAUD, ANDREFF, DANIILIDIS;
``cv2.calibrateRobotWorldHandEye``: SHAH, LI); each is reported with its spread from the
median of all, the medoid is the consensus, and a joint refinement of the camera and board
poses on the reprojection error of every corner (from the consensus) gives the result
written.

Output: easy_handeye2's YAML layout (``parameters`` + ``transformation`` x y z qx qy qz qw);
the transformation maps the tracking (camera optical) frame into the effector frame
(eye-in-hand) or the base frame (eye-on-base), ROS conventions: the optical frame looks along
+z with y down. Our report lives under an extra top-level ``robot_rl`` key, which
easy_handeye2 ignores.

The twin places its cameras from these files: :func:`load_camera_calibration` reads a
calibration directory (``cameras/<name>.yaml`` intrinsics, ``handeye_<name>.yaml`` poses),
:func:`apply_camera_calibration` writes one camera into a MuJoCo model.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from robot_rl.calibration.camera_info import CalibrationError, CameraIntrinsics
from robot_rl.calibration.charuco import BoardSpec, Detector, board_pose

HAND_EYE_METHODS = ("TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS")
ROBOT_WORLD_METHODS = ("SHAH", "LI")
BASE_FRAME, EFFECTOR_FRAME = "base", "hand"  # the twin's MJCF bodies
MARKER_FRAME = "charuco_board"
# MuJoCo cameras look along -z with y up; OpenCV / ROS optical frames along +z with y down
MJ_FROM_CV = np.diag([1.0, -1.0, -1.0])


class HandEyeError(CalibrationError):
    """Hand-eye input that cannot give a calibration (too few or degenerate poses, no board)."""


# -- small rigid-transform helpers ------------------------------------------------------------------
def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.ravel(t)
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rot_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a rotation matrix."""
    import mujoco
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, np.float64).reshape(9))
    q = q / np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    return np.array([q[1], q[2], q[3], q[0]])


def mat_from_xyzw(q: Sequence[float]) -> np.ndarray:
    import mujoco
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 0:
        raise CalibrationError(f"quaternion {list(q)} has zero length")
    m = np.empty(9)
    mujoco.mju_quat2Mat(m, np.array([w, x, y, z]) / n)
    return m.reshape(3, 3)


def _rvec(R: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.Rodrigues(np.ascontiguousarray(R, np.float64))[0].ravel()


def _rmat(v: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.Rodrigues(np.asarray(v, np.float64).reshape(3, 1))[0]


# -- forward kinematics ---------------------------------------------------------------------------------
class RobotKinematics:
    """The effector (``hand`` body) pose in the base frame for joint positions: the twin's
    kinematic chain for the robot spec. Only bodies and joints are read, never a camera."""

    def __init__(self, robot: Any, base: str = BASE_FRAME, effector: str = EFFECTOR_FRAME):
        import mujoco

        from robot_rl.sim import mjcf
        from robot_rl.spec import load_spec
        self.spec = load_spec(robot) if isinstance(robot, str) else robot
        self._mj = mujoco
        self.model = mujoco.MjModel.from_xml_string(mjcf.scene_xml(self.spec))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in self.spec.joint_names])
        self.base_name, self.effector_name = base, effector
        try:
            self.base, self.effector = m.body(base).id, m.body(effector).id
        except KeyError as e:
            raise HandEyeError(f"the {self.spec.name} twin has no body {e}") from None

    def body_T(self, body: int) -> np.ndarray:
        return make_T(self.data.xmat[body].reshape(3, 3), self.data.xpos[body])

    def __call__(self, q: Sequence[float]) -> np.ndarray:
        """4x4 pose of the effector frame in the base frame."""
        q = np.asarray(q, np.float64).ravel()
        if q.shape != (len(self.qadr),):
            raise HandEyeError(f"joint positions for {self.spec.name} need {len(self.qadr)} values "
                               f"({', '.join(self.spec.joint_names)}), got {q.size}")
        self.data.qpos[self.qadr] = q
        self._mj.mj_kinematics(self.model, self.data)
        return inv_T(self.body_T(self.base)) @ self.body_T(self.effector)


# -- samples -------------------------------------------------------------------------------------------
@dataclass
class Sample:
    name: str
    joints: np.ndarray
    image: np.ndarray | None = None
    T_base_eff: np.ndarray | None = None
    T_cam_board: np.ndarray | None = None
    corners: int = 0
    pnp_rms: float | None = None
    status: str = "used"
    _uv: np.ndarray | None = field(default=None, repr=False)
    _obj: np.ndarray | None = field(default=None, repr=False)


def read_poses_dir(path: str | os.PathLike) -> tuple[dict[str, Any], list[Sample]]:
    """A folder of images + ``poses.yaml``::

        robot: so101                 # robot spec name
        camera: wrist                # which camera took the images
        eye_on_hand: true            # wrist camera (true) or a camera fixed in the world (false)
        joint_names: [shoulder_pan, shoulder_lift, ...]   # order of `joints` (spec order)
        samples:
          - {image: 000.png, joints: [0.1, -0.4, ...]}    # radians, as the driver reads them
    """
    from robot_rl.calibration.charuco import _read_image
    p = Path(path)
    f = p / "poses.yaml"
    if not f.is_file():
        raise HandEyeError(f"{p}: no poses.yaml (images + joint states; see `robot-rl calibrate handeye --help`)")
    try:
        d = yaml.safe_load(f.read_text())
    except yaml.YAMLError as e:
        raise HandEyeError(f"{f}: not valid YAML: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("samples"), list):
        raise HandEyeError(f"{f}: needs a 'samples' list of {{image, joints}}")
    samples = []
    for i, s in enumerate(d["samples"]):
        if not isinstance(s, dict) or "image" not in s or "joints" not in s:
            raise HandEyeError(f"{f}: samples[{i}] needs 'image' and 'joints'")
        try:
            q = np.asarray(s["joints"], np.float64).ravel()
        except (TypeError, ValueError):
            raise HandEyeError(f"{f}: samples[{i}].joints must be a list of numbers") from None
        samples.append(Sample(str(s["image"]), q, _read_image(p / str(s["image"]))))
    meta = {k: v for k, v in d.items() if k != "samples"}
    return meta, samples


def write_poses_dir(path: str | os.PathLike, samples: Sequence[Sample], *, robot: str, camera: str,
                    eye_on_hand: bool, joint_names: Sequence[str]) -> Path:
    import cv2
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(samples):
        name = s.name if s.name.endswith(".png") else f"{i:03d}.png"
        cv2.imwrite(str(p / name), cv2.cvtColor(np.asarray(s.image), cv2.COLOR_RGB2BGR))
        rows.append({"image": name, "joints": [round(float(x), 7) for x in s.joints]})
    (p / "poses.yaml").write_text(yaml.safe_dump(
        {"robot": robot, "camera": camera, "eye_on_hand": bool(eye_on_hand), "joint_names": list(joint_names),
         "samples": rows}, sort_keys=False, default_flow_style=None, width=160))
    return p


def store_samples(path: str | os.PathLike, camera: str, *, still_tol: float = 2e-3, still_steps: int = 3
                  ) -> list[Sample]:
    """One sample per still segment of an episode store (``joint_pos`` unchanged by more
    than `still_tol` rad over `still_steps` steps): a frame taken while the arm moves does not
    belong to the joint state beside it."""
    from robot_rl.data.store import EpisodeStore, StoreError
    try:
        st = EpisodeStore.open(path)
    except StoreError as e:
        raise HandEyeError(str(e)) from None
    with st:
        key = f"image_{camera}"
        if key not in st.keys or "joint_pos" not in st.keys:
            raise HandEyeError(f"{path}: needs keys {key!r} and 'joint_pos' (has {st.keys})")
        q = np.asarray(st.data["joint_pos"][:], np.float64)
        still = np.zeros(len(q), bool)
        for i in range(still_steps, len(q)):
            still[i] = np.abs(q[i - still_steps:i + 1] - q[i]).max() < still_tol
        rows, prev = [], False
        for i, s in enumerate(still):
            if s and not prev:
                rows.append(i)
            prev = bool(s)
        if not rows:
            raise HandEyeError(f"{path}: the arm never stands still for {still_steps} steps; record pauses "
                               "at each calibration pose")
        imgs = st.read_frames(key, np.array(rows))
        return [Sample(f"step {r}", q[r], np.asarray(im)) for r, im in zip(rows, imgs)]


# -- checks ----------------------------------------------------------------------------------------------
def check_motion(T_base_eff: Sequence[np.ndarray], *, min_poses: int = 3, min_rot_deg: float = 2.0,
                 min_axis_spread_deg: float = 5.0) -> None:
    """Raise HandEyeError unless the poses can determine a hand-eye transform: at least
    `min_poses`, rotations between them, and rotation axes that are not all parallel (motion
    about one axis leaves the translation along it unknown)."""
    n = len(T_base_eff)
    if n < min_poses:
        raise HandEyeError(f"hand-eye needs at least {min_poses} poses where the board is seen, got {n}; "
                           "take 15-25 views from different orientations")
    axes = []
    for i in range(n):
        for j in range(i + 1, n):
            v = _rvec(T_base_eff[i][:3, :3].T @ T_base_eff[j][:3, :3])
            a = float(np.linalg.norm(v))
            if a > math.radians(min_rot_deg):
                axes.append(v / a)
    if len(axes) < 2:
        raise HandEyeError(f"degenerate hand-eye poses: the {n} poses differ in orientation by less than "
                           f"{min_rot_deg} deg; rotate the wrist between views (tilt it about two axes)")
    A = np.array(axes)
    w = np.linalg.eigvalsh(A.T @ A / len(A))  # ascending; axes are +-: use the scatter matrix
    spread = math.degrees(math.asin(min(1.0, math.sqrt(max(w[1], 0.0) / max(w[2], 1e-12)))))
    if spread < min_axis_spread_deg:
        raise HandEyeError(f"degenerate hand-eye poses: every rotation between the {n} poses is about one axis "
                           f"(spread {spread:.1f} deg < {min_axis_spread_deg} deg), which leaves the camera's "
                           "offset along it unknown; tilt the wrist about at least two different axes")


# -- the solve --------------------------------------------------------------------------------------------
@dataclass
class MethodResult:
    name: str
    T: np.ndarray  # camera optical frame -> effector (eye-in-hand) or base (eye-on-base)
    consistency_mm: float  # RMS scatter of the board corners mapped into the fixed frame, over views
    reproj_px: float | None = None  # RMS reprojection error (refined only)
    dist_mm: float = 0.0  # from the median
    dist_deg: float = 0.0
    error: str = ""


@dataclass
class HandEyeResult:
    eye_on_hand: bool
    camera: str
    robot: str
    T: np.ndarray  # the result written
    method: str  # which result that is
    methods: list[MethodResult]
    consensus: str  # medoid method
    spread_mm: float
    spread_deg: float
    samples: list[Sample]
    T_fixed_board: np.ndarray | None = None  # board in the base (eye-in-hand) / effector (eye-on-base) frame

    @property
    def used(self) -> list[Sample]:
        return [s for s in self.samples if s.status == "used"]

    def table(self) -> str:
        kind = "eye-in-hand: camera in the effector frame" if self.eye_on_hand else \
            "eye-on-base: camera in the base frame"
        lines = [f"hand-eye {self.camera} ({kind}), {len(self.used)} of {len(self.samples)} views",
                 f"{'method':<20} {'x mm':>8} {'y mm':>8} {'z mm':>8} {'rot deg (axis-angle)':>24} "
                 f"{'d_med mm':>9} {'d_med deg':>9} {'scatter mm':>10} {'reproj px':>9}", "-" * 118]
        for m in self.methods:
            if m.error:
                lines.append(f"{m.name:<20} failed: {m.error}")
                continue
            t = m.T[:3, 3] * 1000
            rv = np.degrees(_rvec(m.T[:3, :3]))
            rp = "" if m.reproj_px is None else f"{m.reproj_px:.3f}"
            tag = m.name + (" *" if m.name == self.method else "")
            lines.append(f"{tag:<20} {t[0]:8.2f} {t[1]:8.2f} {t[2]:8.2f} "
                         f"{'[' + ', '.join(f'{x:.2f}' for x in rv) + ']':>24} {m.dist_mm:9.2f} {m.dist_deg:9.3f} "
                         f"{m.consistency_mm:10.2f} {rp:>9}")
        lines += ["-" * 118,
                  f"spread of the OpenCV methods around their median: {self.spread_mm:.2f} mm, {self.spread_deg:.3f} deg; "
                  f"consensus (medoid) {self.consensus}; written: {self.method} (*)"]
        return "\n".join(lines)

    # -- easy_handeye2 layout ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        t, q = self.T[:3, 3], quat_xyzw(self.T[:3, :3])
        params = {"namespace": f"{self.robot}_{self.camera}_handeye", "eye_on_hand": bool(self.eye_on_hand),
                  "robot_base_frame": BASE_FRAME, "robot_effector_frame": EFFECTOR_FRAME,
                  "tracking_base_frame": f"{self.camera}_optical_frame", "tracking_marker_frame": MARKER_FRAME,
                  "freehand_robot_movement": False, "move_group_namespace": "/", "move_group": "manipulator"}
        return {
            "parameters": params,
            "transformation": {"x": float(t[0]), "y": float(t[1]), "z": float(t[2]),
                               "qx": float(q[0]), "qy": float(q[1]), "qz": float(q[2]), "qw": float(q[3])},
            "robot_rl": {
                "robot": self.robot, "camera": self.camera, "method": self.method, "consensus": self.consensus,
                "parent": EFFECTOR_FRAME if self.eye_on_hand else BASE_FRAME,
                "spread_mm": round(self.spread_mm, 4), "spread_deg": round(self.spread_deg, 5),
                "views_used": len(self.used), "views": len(self.samples),
                "methods": {m.name: ({"error": m.error} if m.error else {
                    "xyz": [round(float(x), 6) for x in m.T[:3, 3]],
                    "qxyzw": [round(float(x), 7) for x in quat_xyzw(m.T[:3, :3])],
                    "from_median_mm": round(m.dist_mm, 3), "from_median_deg": round(m.dist_deg, 4),
                    "scatter_mm": round(m.consistency_mm, 3),
                    **({} if m.reproj_px is None else {"reproj_px": round(m.reproj_px, 4)})}) for m in self.methods},
                "samples": [{"name": s.name, "corners": s.corners, "status": s.status,
                             **({} if s.pnp_rms is None else {"pnp_rms_px": round(s.pnp_rms, 4)})}
                            for s in self.samples],
                "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            }}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text("# hand-eye calibration (robot_rl.calibration.handeye), easy_handeye2 layout\n"
                       + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=140))
        os.replace(tmp, p)
        return p


def _fixed_board(A: np.ndarray, X: np.ndarray, T_cb: np.ndarray) -> np.ndarray:
    return A @ X @ T_cb


def _scatter_mm(As, X, T_cbs, pts) -> float:
    """RMS distance of the board's corners, mapped into the fixed frame by each view, from
    their mean position (mm)."""
    P = np.array([(_fixed_board(A, X, T)[:3, :3] @ pts.T).T + _fixed_board(A, X, T)[:3, 3]
                  for A, T in zip(As, T_cbs)])
    return float(np.sqrt(np.mean(np.sum((P - P.mean(axis=0)) ** 2, axis=2))) * 1000)


def _median_pose(Ts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(component-wise median translation, medoid rotation)."""
    t = np.median(np.array([T[:3, 3] for T in Ts]), axis=0)
    Rs = [T[:3, :3] for T in Ts]
    costs = [sum(rot_angle_deg(R, S) for S in Rs) for R in Rs]
    return t, Rs[int(np.argmin(costs))]


def _refine(As, X0, Y0, samples, intr: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray, float]:
    """X (camera in the moving / fixed frame) and Y (board in the fixed frame) minimising the
    reprojection error of every corner: board -> camera = inv(A_i X) Y."""
    import cv2
    from scipy.optimize import least_squares
    K, D = intr.K, np.ravel(intr.D)
    invA = [inv_T(A) for A in As]

    def unpack(p):
        return make_T(_rmat(p[0:3]), p[3:6]), make_T(_rmat(p[6:9]), p[9:12])

    def resid(p):
        X, Y = unpack(p)
        iX = inv_T(X)
        out = []
        for iA, s in zip(invA, samples):
            T = iX @ iA @ Y
            proj, _ = cv2.projectPoints(s._obj, _rvec(T[:3, :3]), T[:3, 3], K, D)
            out.append((proj.reshape(-1, 2) - s._uv).ravel())
        return np.concatenate(out)

    p0 = np.concatenate([_rvec(X0[:3, :3]), X0[:3, 3], _rvec(Y0[:3, :3]), Y0[:3, 3]])
    r = least_squares(resid, p0, method="lm", x_scale="jac")
    X, Y = unpack(r.x)
    return X, Y, float(np.sqrt(np.mean(r.fun.reshape(-1, 2) ** 2) * 2))


def calibrate_handeye(samples: Sequence[Sample], intr: CameraIntrinsics, board: BoardSpec, kin: RobotKinematics, *,
                      eye_on_hand: bool, camera: str = "", min_corners: int = 8, max_pnp_rms: float = 2.0,
                      refine: bool = True) -> HandEyeResult:
    """Run every method on `samples` (images + joint positions). Raises HandEyeError when
    the board is never seen, or when the views that see it are too few or degenerate."""
    import cv2
    det = Detector(board)
    samples = list(samples)
    if not samples:
        raise HandEyeError("no hand-eye samples (images + joint states)")
    for s in samples:
        img = np.asarray(s.image)
        if img.shape[:2] != (intr.height, intr.width):
            raise HandEyeError(f"image {s.name!r} is {img.shape[1]}x{img.shape[0]} but the intrinsics are for "
                               f"{intr.width}x{intr.height}; calibrate the camera at this resolution")
        s.T_base_eff = kin(s.joints)
        T, n, rms = board_pose(det, img, intr, min_corners)
        s.corners, s.pnp_rms = n, rms
        if T is None:
            s.status = f"rejected: {n} corners < {min_corners}"
            continue
        if rms > max_pnp_rms:
            s.status = f"rejected: board pose error {rms:.2f} px > {max_pnp_rms}"
            continue
        s.T_cam_board = T
        c, ids = det(img)
        s._uv, s._obj = c, det.object_points(ids)
    used = [s for s in samples if s.status == "used"]
    seen = sum(1 for s in samples if s.corners > 0)
    if not used:
        raise HandEyeError(f"the board ({board.squares_x}x{board.squares_y}, {board.dictionary}) is not seen in "
                           f"any of the {len(samples)} images ({seen} show part of it); check board.yaml, the "
                           "camera name and that the board is in view")
    check_motion([s.T_base_eff for s in used])

    As = [s.T_base_eff if eye_on_hand else inv_T(s.T_base_eff) for s in used]
    R_A = [A[:3, :3] for A in As]
    t_A = [A[:3, 3].reshape(3, 1) for A in As]
    R_c = [s.T_cam_board[:3, :3] for s in used]
    t_c = [s.T_cam_board[:3, 3].reshape(3, 1) for s in used]
    iAs = [inv_T(A) for A in As]
    R_iA = [A[:3, :3] for A in iAs]
    t_iA = [A[:3, 3].reshape(3, 1) for A in iAs]
    pts = board.corners()[[0, board.squares_x - 2, -1, -(board.squares_x - 1)]]  # the outer ChArUco corners
    T_cbs = [s.T_cam_board for s in used]
    methods: list[MethodResult] = []
    for name in HAND_EYE_METHODS:
        try:
            R, t = cv2.calibrateHandEye(R_A, t_A, R_c, t_c, method=getattr(cv2, f"CALIB_HAND_EYE_{name}"))
            X = make_T(R, t)
            if not np.all(np.isfinite(X)):
                raise ValueError("non-finite result")
            methods.append(MethodResult(name, X, _scatter_mm(As, X, T_cbs, pts)))
        except (cv2.error, ValueError) as e:
            methods.append(MethodResult(name, np.eye(4), math.nan, error=str(e).strip().splitlines()[-1]))
    for name in ROBOT_WORLD_METHODS:
        try:
            # board -> camera = (fixed -> camera)... in OpenCV's words: world = board, base = the
            # fixed frame, gripper = the moving frame the camera rides on
            _, _, R_g2c, t_g2c = cv2.calibrateRobotWorldHandEye(
                R_c, t_c, R_iA, t_iA, method=getattr(cv2, f"CALIB_ROBOT_WORLD_HAND_EYE_{name}"))
            X = inv_T(make_T(R_g2c, t_g2c))
            if not np.all(np.isfinite(X)):
                raise ValueError("non-finite result")
            methods.append(MethodResult(name, X, _scatter_mm(As, X, T_cbs, pts)))
        except (cv2.error, ValueError) as e:
            methods.append(MethodResult(name, np.eye(4), math.nan, error=str(e).strip().splitlines()[-1]))
    ok = [m for m in methods if not m.error]
    if not ok:
        raise HandEyeError("every hand-eye method failed: " + "; ".join(f"{m.name}: {m.error}" for m in methods))
    t_med, R_med = _median_pose([m.T for m in ok])
    for m in ok:
        m.dist_mm = float(np.linalg.norm(m.T[:3, 3] - t_med) * 1000)
        m.dist_deg = rot_angle_deg(m.T[:3, :3], R_med)
    spread_mm = max(m.dist_mm for m in ok)
    spread_deg = max(m.dist_deg for m in ok)
    consensus = min(ok, key=lambda m: m.dist_mm / 1.0 + m.dist_deg / 0.1)  # 1 mm ~ 0.1 deg
    result_T, method, Y = consensus.T, consensus.name, None
    if refine:
        try:
            Y0 = _fixed_board(As[0], consensus.T, T_cbs[0])
            X, Y, px = _refine(As, consensus.T, Y0, used, intr)
            ref = MethodResult("REFINED", X, _scatter_mm(As, X, T_cbs, pts), reproj_px=px,
                               dist_mm=float(np.linalg.norm(X[:3, 3] - t_med) * 1000),
                               dist_deg=rot_angle_deg(X[:3, :3], R_med))
            methods.append(ref)
            result_T, method = X, "REFINED"
        except ImportError:
            pass  # scipy missing: the consensus is the result
    if Y is None:
        Y = _fixed_board(As[0], result_T, T_cbs[0])
    spec = kin.spec
    return HandEyeResult(eye_on_hand, camera, spec.name, result_T, method, methods, consensus.name,
                         spread_mm, spread_deg, samples, Y)


# -- collecting samples ---------------------------------------------------------------------------------
def robot_mover(robot, *, settle_s: float = 0.6, timeout_s: float = 8.0, tol: float = 2e-3,
                step_rad: float = 0.05) -> Callable[[np.ndarray], np.ndarray]:
    """A ``move(q) -> measured q`` for a connected :class:`robot_rl.runtime.robot.Robot`:
    walks to `q` in ``joint_pos`` steps of at most `step_rad` per control period (the safety
    filter limits the speed too), then waits until the measured joints are still."""
    def move(q: np.ndarray) -> np.ndarray:
        obs = robot.observe()
        cur = np.asarray(obs["joint_pos"], np.float64)
        grip = float(np.ravel(obs.get("gripper", [0.0]))[0]) if "gripper" in obs else None
        q = np.asarray(q, np.float64)
        n = max(1, int(np.ceil(np.abs(q - cur).max() / step_rad)))
        dt = getattr(robot, "control_dt", 0.033)
        for k in range(1, n + 1):
            tgt = cur + (q - cur) * k / n
            robot.act(np.append(tgt, grip) if grip is not None else tgt, mode="joint_pos")
            if not getattr(robot, "simulated", False):
                time.sleep(dt)
        end = time.monotonic() + timeout_s
        prev = np.asarray(robot.observe()["joint_pos"], np.float64)
        still_since = time.monotonic()
        while time.monotonic() < end:
            robot.act(np.append(q, grip) if grip is not None else q, mode="joint_pos")
            if not getattr(robot, "simulated", False):
                time.sleep(dt)
            cur = np.asarray(robot.observe()["joint_pos"], np.float64)
            if np.abs(cur - prev).max() > tol:
                still_since = time.monotonic()
            prev = cur
            if time.monotonic() - still_since >= settle_s:
                break
        return prev
    return move


def collect(move: Callable[[np.ndarray], np.ndarray], capture: Callable[[], np.ndarray], kin: RobotKinematics,
            board: BoardSpec, q_start: Sequence[float], *, n: int = 20, eye_on_hand: bool = True,
            max_tilt_deg: float = 20.0, max_shift_m: float = 0.04, pivot_m: float | None = None,
            min_corners: int = 12, seed: int = 0, max_tries: int | None = None,
            limits: tuple[np.ndarray, np.ndarray] | None = None, log: Callable[[str], None] = print) -> list[Sample]:
    """Drive the arm to `n` diverse poses around `q_start` (where the board is in view) and
    record an image + the measured joint positions at each; poses where the camera does
    not see at least `min_corners` corners are skipped.

    Poses: the effector turned by up to `max_tilt_deg` about a random axis through a pivot
    `pivot_m` ahead of it along its approach axis (eye-in-hand: about where the board is;
    default: 0.25 m) or through the effector itself (eye-on-base), and shifted by up to
    `max_shift_m`; joint targets from the twin's inverse kinematics of the robot spec.
    `move(q)` commands the arm and returns the measured joint positions once it is still
    (:func:`robot_mover` for a Robot driver); `capture()` returns the camera's image then."""
    from robot_rl.sim.twin import Twin
    det = Detector(board)
    rng = np.random.default_rng(seed)
    twin = Twin(kin.spec)
    lo, hi = limits if limits is not None else (twin.lower, twin.upper)
    q0 = np.asarray(q_start, np.float64)
    T0 = kin(q0)
    # the IK works on the tcp site: keep its offset to the effector frame
    tcp_p, tcp_R = twin.fk(q0)
    T_tcp0 = make_T(tcp_R, tcp_p)
    T_eff_tcp = inv_T(T0) @ T_tcp0
    pivot = np.array([0.0, 0.0, pivot_m if pivot_m is not None else (0.25 if eye_on_hand else 0.0)])
    out: list[Sample] = []
    tries = 0
    max_tries = max_tries or 4 * n
    while len(out) < n and tries < max_tries:
        tries += 1
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        ang = math.radians(rng.uniform(0.35, 1.0) * max_tilt_deg)
        Rd = _rmat(axis * ang)
        P = make_T(np.eye(3), pivot)
        T = T0 @ P @ make_T(Rd, np.zeros(3)) @ inv_T(P)
        T[:3, 3] += rng.uniform(-max_shift_m, max_shift_m, 3)
        Tt = T @ T_eff_tcp
        q, err = twin.ik(Tt[:3, 3], Tt[:3, :3], q0, iters=60, return_error=True)
        Tq = kin(q)
        # out of reach; a 5-DoF arm takes what it can of the orientation (the sample's pose is
        # its measured joints' FK anyway), but it must have turned
        if err > 0.005 or np.any(q < lo) or np.any(q > hi) or rot_angle_deg(Tq[:3, :3], T0[:3, :3]) < 3.0:
            continue
        q_meas = move(q)
        img = capture()
        c, ids = det(img)
        if len(ids) < min_corners:
            log(f"  pose {tries}: board not in view ({len(ids)} corners), skipped")
            continue
        out.append(Sample(f"{len(out):03d}.png", np.asarray(q_meas, np.float64), np.asarray(img)))
        log(f"  pose {len(out)}/{n}: {len(ids)} corners")
    move(q0)
    twin.close()
    if len(out) < n:
        log(f"collected {len(out)} of {n} poses in {tries} tries (the rest were out of reach or out of view)")
    return out


# -- the twin from the files ------------------------------------------------------------------------------
@dataclass
class CameraPose:
    """A camera's optical frame (OpenCV: +z forward, y down) in a parent frame."""
    T: np.ndarray  # 4x4
    parent: str  # MJCF body the pose is expressed in ("hand", "base", "world")
    eye_on_hand: bool | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CameraPose":
        """A hand-eye YAML in easy_handeye2's layout (both its ROS 1 ``transformation``
        x..qw and its newer ``transform`` translation/rotation spellings)."""
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"no hand-eye file at {p}")
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise CalibrationError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(d, dict) or "parameters" not in d:
            raise CalibrationError(f"{p}: not an easy_handeye2 calibration (needs 'parameters' and 'transformation')")
        par = d["parameters"] or {}
        if "eye_on_hand" in par:
            eoh = bool(par["eye_on_hand"])
        elif "calibration_type" in par:
            eoh = str(par["calibration_type"]) == "eye_in_hand"
        else:
            raise CalibrationError(f"{p}: parameters need eye_on_hand (or calibration_type)")
        try:
            if "transformation" in d:
                tr = d["transformation"]
                t = [float(tr[k]) for k in ("x", "y", "z")]
                q = [float(tr[k]) for k in ("qx", "qy", "qz", "qw")]
            else:
                tr = d["transform"]
                t = [float(tr["translation"][k]) for k in "xyz"]
                q = [float(tr["rotation"][k]) for k in "xyzw"]
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"{p}: transformation needs numbers x, y, z, qx, qy, qz, qw") from None
        if not np.all(np.isfinite(t + q)):
            raise CalibrationError(f"{p}: transformation holds a non-finite value")
        parent = str(par.get("robot_effector_frame" if eoh else "robot_base_frame") or
                     (EFFECTOR_FRAME if eoh else BASE_FRAME))
        return cls(make_T(mat_from_xyzw(q), t), parent, eoh)


def load_camera_calibration(directory: str | os.PathLike) -> dict[str, tuple[CameraIntrinsics | None,
                                                                              CameraPose | None]]:
    """``{camera: (intrinsics, pose)}`` from a calibration directory::

        DIR/cameras/<name>.yaml     ROS camera_info (robot-rl calibrate camera)
        DIR/handeye_<name>.yaml     easy_handeye2 layout (robot-rl calibrate handeye)

    Either may be missing for a camera (None)."""
    d = Path(directory)
    if not d.is_dir():
        raise CalibrationError(f"no calibration directory at {d}")
    out: dict[str, list] = {}
    cams = d / "cameras"
    if cams.is_dir():
        for f in sorted(cams.glob("*.yaml")):
            out.setdefault(f.stem, [None, None])[0] = CameraIntrinsics.load(f)
    for f in sorted(d.glob("handeye_*.yaml")):
        out.setdefault(f.stem[len("handeye_"):], [None, None])[1] = CameraPose.load(f)
    if not out:
        raise CalibrationError(f"{d}: no camera calibration (cameras/<name>.yaml, handeye_<name>.yaml)")
    return {k: (v[0], v[1]) for k, v in out.items()}


def _static_body_T(model, body: int) -> np.ndarray | None:
    """World pose of a body welded to the world (no joint on the way up), else None."""
    import mujoco
    b = body
    while b != 0:
        if model.body_jntnum[b] > 0 or model.body_mocapid[b] >= 0:
            return None
        b = model.body_parentid[b]
    d = mujoco.MjData(model)
    mujoco.mj_kinematics(model, d)
    return make_T(d.xmat[body].reshape(3, 3), d.xpos[body])


PIXEL_PITCH = 3e-6  # length units per pixel of the sensor an intrinsic camera is given


def apply_camera_calibration(model, camera_name: str, intrinsics: CameraIntrinsics | None,
                             pose: CameraPose | np.ndarray | None = None, *, parent: str | None = None,
                             centre_tol_px: float = 0.5) -> None:
    """Shape and place MuJoCo camera `camera_name` of `model` (in place) from calibration.

    - intrinsics: ``cam_fovy`` from fy and the image height; if the principal point is more
      than `centre_tol_px` off the image centre, or fx != fy, the camera becomes an
      intrinsic camera (``cam_sensorsize`` > 0, ``cam_intrinsic``, ``cam_resolution``).
      Distortion is not rendered (MuJoCo draws a pinhole): undistort real images for a
      pixel-exact match.
    - pose: the optical frame (OpenCV: +z forward, y down) in `parent` (a ``CameraPose``
      carries its parent; with a 4x4 array, `parent` defaults to the camera's own body):
      the camera's body, or -- for a camera fixed in the world -- any body welded to the
      world (``base``, ``world``). MuJoCo's camera looks along -z with y up; converted here.
    """
    import mujoco
    try:
        cid = model.camera(camera_name).id
    except KeyError:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise CalibrationError(f"the model has no camera {camera_name!r} (cameras: {names})") from None
    if intrinsics is not None:
        K = np.asarray(intrinsics.K, np.float64)
        w, h = int(intrinsics.width), int(intrinsics.height)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        model.cam_fovy[cid] = math.degrees(2 * math.atan(h / 2 / fy))
        off = (cx - (w - 1) / 2, cy - (h - 1) / 2)
        if max(abs(off[0]), abs(off[1])) > centre_tol_px or abs(fx - fy) > 1e-6 * fy:
            p = PIXEL_PITCH
            model.cam_sensorsize[cid] = (w * p, h * p)
            model.cam_resolution[cid] = (w, h)
            # MuJoCo's principal point offsets move the frustum, not the image: both enter
            # negated (measured against rendered ChArUco corners in the tests)
            model.cam_intrinsic[cid] = (fx * p, fy * p, -off[0] * p, -off[1] * p)
        else:
            model.cam_sensorsize[cid] = (0.0, 0.0)
            model.cam_intrinsic[cid] = (0.01, 0.01, 0.0, 0.0)  # MuJoCo's defaults (unused with fovy)
            model.cam_resolution[cid] = (w, h)
    if pose is None:
        return
    if isinstance(pose, CameraPose):
        T, par = pose.T, parent or pose.parent
    else:
        T = np.asarray(pose, np.float64)
        if T.shape != (4, 4):
            raise CalibrationError(f"pose must be a 4x4 transform or a CameraPose, got shape {T.shape}")
        par = parent
    body = int(model.cam_bodyid[cid])
    body_name = model.body(body).name or "world"
    if par is not None and par != body_name:
        try:
            pid = 0 if par == "world" else model.body(par).id
        except KeyError:
            raise CalibrationError(f"pose parent {par!r} is not a body of the model") from None
        Tp, Tb = _static_body_T(model, pid), _static_body_T(model, body)
        if Tp is None or Tb is None:
            raise CalibrationError(f"camera {camera_name!r} rides on body {body_name!r} but its pose is given in "
                                   f"{par!r}; they move relative to each other (an eye-in-hand pose needs the "
                                   "camera on the effector body)")
        T = inv_T(Tb) @ Tp @ T
    R_mj = T[:3, :3] @ MJ_FROM_CV
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R_mj).reshape(9))
    model.cam_pos[cid] = T[:3, 3]
    model.cam_quat[cid] = q
    model.cam_mode[cid] = mujoco.mjtCamLight.mjCAMLIGHT_FIXED


def camera_pose_in_body(model, camera_name: str) -> tuple[np.ndarray, str]:
    """(4x4 optical-frame pose of a model camera in its body's frame, body name): what the
    twin's MJCF says -- for tests and benchmarks to compare a calibration with."""
    cid = model.camera(camera_name).id
    R = np.empty(9)
    import mujoco
    mujoco.mju_quat2Mat(R, model.cam_quat[cid])
    T = make_T(R.reshape(3, 3) @ MJ_FROM_CV, model.cam_pos[cid])
    return T, (model.body(int(model.cam_bodyid[cid])).name or "world")


def pose_error(T: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    """(translation error mm, rotation error deg)."""
    return float(np.linalg.norm(T[:3, 3] - T_true[:3, 3]) * 1000), rot_angle_deg(T[:3, :3], T_true[:3, :3])
