"""Camera intrinsics files (ROS camera_info YAML) as the camera node reads them."""
import numpy as np
import pytest
import yaml

from robot_rl.calibration.camera_info import CalibrationError, CameraIntrinsics, pinhole

ROS_YAML = """\
image_width: 640
image_height: 480
camera_name: usb_cam
camera_matrix:
  rows: 3
  cols: 3
  data: [612.1, 0.0, 318.4, 0.0, 611.7, 241.9, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.11, -0.23, 0.001, -0.002, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [615.0, 0.0, 317.0, 0.0, 0.0, 614.0, 240.5, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_reads_a_camera_calibration_file_and_writes_it_back(tmp_path):
    p = tmp_path / "usb_cam.yaml"
    p.write_text(ROS_YAML)
    k = CameraIntrinsics.load(p)
    assert (k.width, k.height, k.camera_name) == (640, 480, "usb_cam")
    assert k.K[0, 0] == pytest.approx(612.1) and k.K[1, 2] == pytest.approx(241.9)
    np.testing.assert_allclose(k.D, [0.11, -0.23, 0.001, -0.002, 0.0])
    assert k.projection()[0, 0] == pytest.approx(615.0)
    k.save(tmp_path / "out.yaml")
    again = CameraIntrinsics.load(tmp_path / "out.yaml")
    np.testing.assert_allclose(again.K, k.K)
    np.testing.assert_allclose(again.projection(), k.projection())
    assert yaml.safe_load((tmp_path / "out.yaml").read_text())["distortion_coefficients"]["cols"] == 5
    k.check_size(640, 480)
    with pytest.raises(CalibrationError, match="calibration is for 640x480 but the camera delivers 1280x720"):
        k.check_size(1280, 720)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.pop("camera_matrix"), "'camera_matrix' is missing"),
    (lambda d: d["camera_matrix"].update(data=[1, 2, 3]), "3x3 values"),
    (lambda d: d["camera_matrix"].update(data=[0, 0, 1, 0, 1, 1, 0, 0, 1]), "fx, fy > 0"),
    (lambda d: d.update(distortion_model="fisheye9"), "distortion_model 'fisheye9' unknown"),
    (lambda d: d.update(image_width="wide"), "must be integers"),
])
def test_bad_files_are_clear_errors(tmp_path, edit, match):
    d = yaml.safe_load(ROS_YAML)
    edit(d)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(CalibrationError, match=match):
        CameraIntrinsics.load(p)
    with pytest.raises(CalibrationError, match="no camera calibration file"):
        CameraIntrinsics.load(tmp_path / "missing.yaml")


def test_pinhole_matches_the_field_of_view():
    k = pinhole(640, 480, 60.0)
    # the top edge of the image is fovy / 2 above the optical axis
    assert np.degrees(np.arctan((k.K[1, 2] + 0.5) / k.K[1, 1])) * 2 == pytest.approx(60.0, abs=0.2)
