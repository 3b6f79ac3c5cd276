import math

import pytest

from robot_rl.spec import RobotSpec, SpecError, available_robots, load_spec


def test_both_robots_load_with_their_own_joints():
    assert {"so101", "arm6"} <= set(available_robots())
    so, a6 = load_spec("so101"), load_spec("arm6")
    assert so.dof == 5 and a6.dof == 6
    assert so.action_dim("ee_delta") == 7 and so.action_dim("joint_pos") == 6 and a6.action_dim("joint_pos") == 7
    assert so.fingerprint() != a6.fingerprint()
    for s in (so, a6):
        assert all(j.lower <= h <= j.upper for j, h in zip(s.joints, s.home))
        assert [c.name for c in s.cameras] == ["front", "wrist"]


def test_camera_intrinsics_follow_fov_and_resolution():
    cam = load_spec("so101").camera("front")
    k = cam.intrinsics
    assert k[0][0] == pytest.approx(0.5 * cam.height / math.tan(math.radians(cam.fovy) / 2))
    assert k[0][2] == pytest.approx((cam.width - 1) / 2)


def test_round_trip_and_camera_subset_keeps_fingerprint():
    s = load_spec("arm6")
    s2 = RobotSpec.from_dict(s.to_dict())
    assert s2 == s
    sub = s.with_cameras(["front"], 64, 48)
    assert [c.name for c in sub.cameras] == ["front"] and sub.cameras[0].width == 64
    assert sub.fingerprint() == s.fingerprint()


def test_bad_specs_give_one_clear_error():
    d = load_spec("so101").to_dict()
    with pytest.raises(SpecError, match="unknown keys.*colour"):
        RobotSpec.from_dict({**d, "colour": "red"})
    bad = dict(d)
    bad["joints"] = [dict(j) for j in d["joints"]]
    bad["joints"][0]["home"] = 9.0
    with pytest.raises(SpecError, match="shoulder_pan.*home"):
        RobotSpec.from_dict(bad)
    with pytest.raises(SpecError, match="unknown robot 'ur10'.*arm6"):
        load_spec("ur10")
    with pytest.raises(SpecError, match="does not support action mode"):
        load_spec("so101").action_dim("torque")


def test_incompatible_specs_name_both_robots():
    with pytest.raises(SpecError, match=r"'so101'.*'arm6'"):
        load_spec("so101").check_compatible(load_spec("arm6"), what="store")
    load_spec("so101").check_compatible(load_spec("so101"))
