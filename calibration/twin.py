"""A calibrated twin from a calibration folder: ``robot=so101 calibration=DIR`` anywhere a
twin runs (``RobotEnv(calibration=...)``, record / train / eval / rl).

    DIR/dynamics.yaml            robot-rl sysid fit            (arm dynamics, action delay)
    DIR/cameras/<name>.yaml      robot-rl calibrate camera     (intrinsics: field of view, principal point)
    DIR/handeye_<name>.yaml      robot-rl calibrate handeye    (where the camera sits)

Any of them may be missing; a folder with none of them, or a path that is neither, is one
clear error. A ``dynamics.yaml`` path alone works too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_rl.calibration.camera_info import CalibrationError


@dataclass
class TwinCalibration:
    path: str
    dynamics: Any = None  # calibration.sysid.Dynamics
    cameras: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (intrinsics, pose)
    applied: list[str] = field(default_factory=list)


def apply_calibration(twin, path: str | os.PathLike) -> TwinCalibration:
    """Set a twin's dynamics and cameras from `path` before anything caches its values
    (randomization is then centred on the calibrated twin)."""
    p = Path(path).expanduser()
    cal = TwinCalibration(str(p))
    dyn_file = p if p.is_file() else p / "dynamics.yaml"
    has_cams = p.is_dir() and ((p / "cameras").is_dir() or any(p.glob("handeye_*.yaml")))
    if not dyn_file.is_file() and not has_cams:
        raise CalibrationError(f"calibration={p}: no dynamics.yaml (robot-rl sysid fit), cameras/<name>.yaml "
                               f"(robot-rl calibrate camera) or handeye_<name>.yaml (robot-rl calibrate handeye) there")
    if dyn_file.is_file():
        from robot_rl.calibration.sysid import apply_dynamics, load_dynamics
        cal.dynamics = load_dynamics(dyn_file)
        cal.applied += [f"dynamics:{n}" for n in apply_dynamics(twin, cal.dynamics)]
    if has_cams:
        from robot_rl.calibration.handeye import apply_camera_calibration, load_camera_calibration
        m = twin.model
        names = {m.camera(i).name for i in range(m.ncam)}
        for name, (intr, pose) in load_camera_calibration(p).items():
            if name not in names:  # a twin built without that camera (state-only) renders nothing to place
                continue
            apply_camera_calibration(m, name, intr, pose)
            cal.cameras[name] = (intr, pose)
            cal.applied.append(f"camera:{name}")
        # the calibrated placement is the twin's nominal one (set_params and randomization start there)
        twin._nominal["cam_pos"] = m.cam_pos.copy()
    return cal
