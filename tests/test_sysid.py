"""System identification (calibration/sysid.py): real MuJoCo physics, no mocks.

Recordings come from a SimRobot twin with known perturbed TwinParams (through the Robot
interface and its safety filter, like any driver); the fit never sees those values."""
from __future__ import annotations

import time

import numpy as np
import pytest

from robot_rl.calibration import sysid as S
from robot_rl.runtime.robot import SimRobot
from robot_rl.sim.twin import TwinParams
from robot_rl.spec import load_spec

SO101 = load_spec("so101")
TRUTH = dict(actuator_gain_scale=1.25, damping_scale=2.0, armature_scale=0.7, frictionloss=0.3,
             action_latency_steps=1)


def record(path, params: TwinParams, seconds=18.0, seed=0, **plan_kw):
    plan = S.excitation_plan(SO101, seconds=seconds, seed=seed, segment_s=6, **plan_kw)
    robot = SimRobot("so101", "reach", "joint_pos", params=params, safety={"timeout_s": None})
    try:
        S.excite(robot, plan, path, seed=seed, driver="sim")
    finally:
        robot.disconnect()
    return path


@pytest.fixture(scope="module")
def truth_recording(tmp_path_factory):
    return record(tmp_path_factory.mktemp("sysid") / "truth.zarr", TwinParams(**TRUTH), seconds=24.0)


@pytest.fixture(scope="module")
def truth_fit(truth_recording):
    return S.fit(truth_recording, robot="so101", max_delay=2)


def test_excitation_stays_inside_limits_and_is_deterministic():
    kw = dict(seconds=24.0, seed=3, margin=0.2, velocity_fraction=0.6)
    plan = S.excitation_plan(SO101, **kw)
    again = S.excitation_plan(SO101, **kw)
    assert [s.kind for s in plan] == ["multisine", "steps", "ramps"]
    lo, hi = np.array(SO101.lower) + 0.2, np.array(SO101.upper) - 0.2
    vmax = 0.6 * np.array([j.max_velocity for j in SO101.joints])
    for s, t in zip(plan, again):
        np.testing.assert_array_equal(s.targets, t.targets)
        assert np.all(s.targets >= lo - 1e-12) and np.all(s.targets <= hi + 1e-12)
        v = np.abs(np.diff(s.targets, axis=0)) * SO101.control_hz
        assert np.all(v <= vmax + 1e-9)
        np.testing.assert_allclose(s.targets[0], s.targets[-1], atol=1e-9)  # starts and ends at rest, at the centre
        assert np.ptp(s.targets, axis=0).max() > 0.1  # and moves in between
    other = S.excitation_plan(SO101, seconds=24.0, seed=4)
    assert not np.allclose(other[0].targets, plan[0].targets)
    # clear of the table: the tool stays well above it along the whole plan
    from robot_rl.sim.twin import Twin
    tw = Twin(SO101)
    assert min(tw.fk(q)[0][2] for s in plan for q in s.targets[::3]) > 0.03


def test_fit_recovers_known_parameters_and_the_delay(truth_fit):
    d = truth_fit.dynamics
    assert d.delay_steps == TRUTH["action_latency_steps"] and d.delay_identifiable
    want = {"kp": TRUTH["actuator_gain_scale"], "damping": TRUTH["damping_scale"], "armature": TRUTH["armature_scale"],
            "frictionloss": TRUTH["frictionloss"]}
    for k, v in want.items():
        p = d.params[k]
        assert p.identifiable, (k, p.reason)
        assert abs(p.value - v) <= 0.1 * v, (k, p.value, v)
        assert p.interval[0] <= p.value <= p.interval[1]
    v = d.validation
    assert v["rms_calibrated"] <= v["rms_nominal"] / 3
    # the latency is a fitted parameter too: in the correlation matrix, and to well under a
    # physics step (the twin's latency is whole control steps: exactly 50 ms here)
    assert d.condition_number >= 1 and d.correlation["names"] == ["kp", "damping", "armature", "frictionloss", "delay"]
    assert len(d.correlation["matrix"]) == 5
    lo, hi = d.fit["delay_ms_interval"]
    assert abs(d.fit["delay_ms"] - 1000 * TRUTH["action_latency_steps"] / SO101.control_hz) < 0.5 and lo <= d.fit["delay_ms"] <= hi
    # the servo's kv and the joint's damping together: what a position servo's data fix best
    nom = S.ArmModel(SO101).absolute({})
    vt = d.fit["viscous_total"]
    truth = nom["kv"][0] * TRUTH["actuator_gain_scale"] + nom["damping"][0] * TRUTH["damping_scale"]
    assert vt["identifiable"] and abs(vt["value"][0] - truth) <= min(vt["half_width"][0], 0.1 * truth), (vt, truth)
    assert 0 < vt["damping_share"][0] < 1 and "kv+damping" in S.format_table(d)


def test_fractional_delay_blends_the_neighbouring_whole_steps():
    arm = S.ArmModel(SO101)
    u = np.zeros((4, SO101.dof))
    u[2:] = 0.3
    g = np.zeros(4)
    steps = np.arange(4) * arm.n_sub
    c3, c4, c35 = (arm.controls(u, g, d, steps)[:, arm.act[0]] for d in (3, 4, 3.25))
    k = 2 * arm.n_sub + 3  # the physics step the command lands in, 3.25 steps late
    assert c3[k] == 0.3 and c4[k] == 0.0 and abs(c35[k] - 0.75 * 0.3) < 1e-12
    np.testing.assert_array_equal(c35[:k], c3[:k])
    np.testing.assert_array_equal(c35[k + 1:], c3[k + 1:])


def test_dynamics_yaml_round_trip_and_robotenv_applies_it(truth_fit, tmp_path):
    from robot_rl.sim.env import RobotEnv
    path = S.default_dynamics_path("so101", "unit_a", tmp_path)
    assert path == tmp_path / "so101" / "unit_a" / "dynamics.yaml"
    truth_fit.dynamics.save(path)
    back = S.load_dynamics(path.parent)  # a directory works too
    assert back.robot == "so101" and back.delay_steps == truth_fit.dynamics.delay_steps
    for k, p in truth_fit.dynamics.params.items():
        assert back.params[k].value == pytest.approx(p.value)
        assert back.params[k].identifiable == p.identifiable
        assert back.params[k].absolute == pytest.approx(p.absolute)
    nominal = RobotEnv("reach", "so101", action_mode="joint_pos")
    env = RobotEnv("reach", "so101", action_mode="joint_pos", calibration=path)
    m0, m = nominal.twin.model, env.twin.model
    a, dof = env.twin.act, env.twin.dadr
    kp = back.params["kp"].value
    np.testing.assert_allclose(m.actuator_gainprm[a, 0], m0.actuator_gainprm[a, 0] * kp)
    np.testing.assert_allclose(m.actuator_biasprm[a, 2], m0.actuator_biasprm[a, 2] * kp)  # kv goes with kp
    np.testing.assert_allclose(m.dof_damping[dof], m0.dof_damping[dof] * back.params["damping"].value)
    np.testing.assert_allclose(m.dof_armature[dof], m0.dof_armature[dof] * back.params["armature"].value)
    np.testing.assert_allclose(m.dof_frictionloss[dof], back.params["frictionloss"].value)
    assert env.twin.params.action_latency_steps == back.delay_steps
    # calibrated values are the twin's new nominal: set_params scales them, never accumulates
    env.twin.set_params(TwinParams(damping_scale=2.0))
    env.twin.set_params(TwinParams(damping_scale=2.0))
    np.testing.assert_allclose(m.dof_damping[dof], m0.dof_damping[dof] * back.params["damping"].value * 2.0)
    S.apply_dynamics(env.twin, back)  # twice: same model
    np.testing.assert_allclose(m.actuator_gainprm[a, 0], m0.actuator_gainprm[a, 0] * kp)
    with pytest.raises(S.SysidError, match="no dynamics file"):
        S.load_dynamics(tmp_path / "nowhere")
    nominal.close()
    env.close()


def test_collinear_damping_and_kv_are_flagged(truth_recording):
    res = S.fit(truth_recording, robot="so101", params=["kv", "damping", "delay"], max_delay=1,
                global_start="never", max_iters=15)
    flagged = {k for k, p in res.dynamics.params.items() if not p.identifiable}
    assert {"kv", "damping"} <= flagged
    assert "collinear" in res.dynamics.params["damping"].reason


@pytest.mark.slow
def test_saturated_forcerange_flags_kp(tmp_path):
    rec = record(tmp_path / "sat.zarr", TwinParams(forcerange_scale=0.004), seconds=12.0)
    res = S.fit(rec, robot="so101", params=["kp", "damping", "forcerange"], max_iters=15)
    d = res.dynamics
    assert d.fit["saturated_fraction"] > S.SAT_KP_LIMIT
    assert not d.params["kp"].identifiable and "saturated" in d.params["kp"].reason


def test_unreached_forcerange_is_flagged(truth_recording):
    res = S.fit(truth_recording, robot="so101", params=["kp", "forcerange"], max_delay=1, global_start="never",
                max_iters=8)
    p = res.dynamics.params["forcerange"]
    assert not p.identifiable and "never reached" in p.reason


def test_bad_input_is_one_clear_error(truth_recording, tmp_path):
    still = record(tmp_path / "still.zarr", TwinParams(), seconds=6.0, amplitude=0.0)
    with pytest.raises(S.SysidError, match="no excitation"):
        S.fit(still, robot="so101")
    with pytest.raises(S.SysidError, match="unknown sysid parameter"):
        S.fit(truth_recording, robot="so101", params=["kp", "stiffness"])
    with pytest.raises(S.SysidError, match="robot 'so101', not 'arm6'"):
        S.fit(truth_recording, robot="arm6")
    with pytest.raises(S.SysidError, match="cannot read recording"):
        S.fit(tmp_path / "missing.zarr", robot="so101")
    from robot_rl.cli.main import CLIError
    from robot_rl.cli.sysid import main
    with pytest.raises(CLIError, match="unknown setting"):
        main(["fit", str(truth_recording), "robot=so101", "colour=red"])
    with pytest.raises(CLIError, match="needs driver"):
        main(["excite", "robot=so101", f"out={tmp_path / 'x.zarr'}"])
    assert not (tmp_path / "x.zarr").exists()


def test_cli_excite_and_fit_on_the_sim_driver(tmp_path, capsys):
    from robot_rl.cli.sysid import main
    data = tmp_path / "sim.zarr"
    assert main(["excite", "robot=so101", "driver=sim", f"out={data}", "seconds=12", "segment_s=6"]) == 0
    assert main(["fit", str(data), "robot=so101", "params=[kp,damping,delay]", "id=nominal", f"out={tmp_path / 'cal'}",
                 "max_delay=1", "global_start=never"]) == 0
    out = capsys.readouterr().out
    assert "kp" in out and "held-out RMS" in out
    d = S.load_dynamics(tmp_path / "cal" / "so101" / "nominal")
    assert d.delay_steps == 0
    assert d.params["kp"].value == pytest.approx(1.0, rel=0.02)  # the sim driver is the nominal twin
    assert (tmp_path / "cal" / "so101" / "nominal" / "validation.png").stat().st_size > 1000


def test_virtual_unit_field_validation():
    from robot_rl.drivers.virtual.so101 import UnitError, random_unit, unit_from_dict
    d = random_unit(0, cameras=[]).to_dict()
    d["twin"] = {"frictionloss": 0.2, "armature_scale": 1.5, "forcerange_scale": 0.5, "latency_ms": 50}
    u = unit_from_dict(d)
    assert u.twin.frictionloss == 0.2 and u.twin.armature_scale == 1.5
    for bad in ({"frictionloss": -0.1}, {"armature_scale": 0}, {"forcerange_scale": "x"}, {"kp": 2}):
        d["twin"] = bad
        with pytest.raises(UnitError):
            unit_from_dict(d)


def _calibrated_follower(rig, tmp_path):
    """The started virtual SO-101's follower, motor-calibrated with its person, connected
    through the Feetech driver on its pseudo-terminal."""
    from robot_rl.calibration.procedures import calibrate
    from robot_rl.calibration.prompter import PersonPrompter
    from robot_rl.cli.sysid import make_sysid_robot
    info = rig.start()
    cal = calibrate(info["follower_port"], rig.hardware["follower"], SO101, PersonPrompter(info["person"], quiet=True),
                    arm_id="follower", sweep_s=2.0, log=lambda *a, **k: None).save(tmp_path / "follower.yaml")
    robot = make_sysid_robot("so101", "feetech", port=info["follower_port"], calibration=str(cal))
    robot.connect()
    return robot


@pytest.mark.slow
def test_virtual_so101_through_the_port(tmp_path):
    """The acceptance path in small: a hidden-parameter virtual SO-101, its follower
    calibrated and excited through the pseudo-terminal, the fit checked against the truth."""
    from robot_rl.drivers.virtual.so101 import TwinUnit, VirtualSO101, random_unit
    unit = random_unit(5, cameras=[])
    unit.twin = TwinUnit(actuator_gain_scale=1.2, damping_scale=2.5, armature_scale=1.2, frictionloss=0.3,
                         latency_ms=50.0)
    with VirtualSO101(unit) as rig:
        robot = _calibrated_follower(rig, tmp_path)
        try:
            S.excite(robot, S.excitation_plan(SO101, seconds=24.0, seed=1, segment_s=6), tmp_path / "v.zarr",
                     driver="feetech")
        finally:
            robot.disconnect()
    res = S.fit(tmp_path / "v.zarr", robot="so101", max_delay=3)
    d = res.dynamics
    assert d.delay_steps == 1
    assert d.validation["rms_calibrated"] <= d.validation["rms_nominal"] / 3
    # through the port the emulator's 10 ms physics ticks and the loop's timing jitter are
    # still only modelled statistically (benchmarks/bench_sysid.py has the figures); here
    # only a sanity bound
    assert abs(d.params["kp"].value - 1.2) <= 0.3 * 1.2
    assert d.params["frictionloss"].value > 0.15


def test_randomization_centred_on_the_fit_and_a_calibration_folder(truth_fit, tmp_path, capsys):
    """`sysid randomization` draws the fitted parameters around the fit (scales around 1 of the
    calibrated twin), keeps base's visual terms, and `calibration=DIR` also places cameras."""
    import math

    import yaml

    from robot_rl.calibration.camera_info import CalibrationError, CameraIntrinsics
    from robot_rl.cli.main import main
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.randomization import centred_on_fit
    d = tmp_path / "so101" / "u"
    truth_fit.dynamics.save(d / "dynamics.yaml")
    r = centred_on_fit(d, base="wide")
    terms = {t["name"]: t for t in r["terms"]}
    kp = terms.get("fit_kp") or terms["unidentified_kp"]
    assert kp["field"] == "actuator_kp" and kp["range"][0] < 1 < kp["range"][1]
    lo, hi = terms["fit_action_delay"]["range"]
    assert lo < truth_fit.dynamics.delay_steps < hi and hi - lo <= 3
    assert "scene_colours" in terms and "servo_kp" not in terms  # wide's visuals kept, its kp replaced
    out = tmp_path / "dr.yaml"
    assert main(["sysid", "randomization", str(d), f"out={out}"]) == 0
    assert yaml.safe_load(out.read_text())["terms"] == r["terms"]
    # cameras in the same folder: the twin's front camera takes the calibrated field of view
    h = 96
    fy = h / 2 / math.tan(math.radians(30) / 2)
    (d / "cameras").mkdir()
    CameraIntrinsics(96, 96, np.array([[fy, 0, 47.5], [0, fy, 47.5], [0, 0, 1.0]])).save(d / "cameras" / "front.yaml")
    env = RobotEnv("pick_cube", "so101", cameras=["front"], image_size=96, calibration=d, randomization=out)
    m = env.twin.model
    assert m.cam_fovy[m.camera("front").id] == pytest.approx(30.0, abs=1e-6)
    assert "camera:front" in env.calibration.applied and "dynamics:kp" in env.calibration.applied
    env.reset(seed=0)
    env.close()
    with pytest.raises(CalibrationError, match="no dynamics.yaml"):
        RobotEnv("reach", "so101", calibration=tmp_path / "empty_dir_that_is_missing")
    capsys.readouterr()
    assert main(["record", "sim", "task=reach", "episodes=1", "cameras=[]", f"out={tmp_path / 'x.zarr'}",
                 "progress=false", f"calibration={tmp_path / 'none'}"]) == 2
    assert "no dynamics.yaml" in capsys.readouterr().err


def _rec(t, q=None, hz=20.0):
    n = len(t)
    q = np.zeros((n, 5)) if q is None else q
    return S.Recording("so101", hz, [np.zeros((n, 5))], [q], ["steps"], [np.zeros(n)], "", [np.zeros((n, 5))],
                       [np.asarray(t, float)])


def test_replay_follows_the_recorded_stamps_and_masks_timing_faults():
    arm = S.ArmModel(SO101)
    h, ns = arm.model.opt.timestep, arm.n_sub
    even = _rec(100.0 + np.arange(10) * 0.05)
    np.testing.assert_array_equal(even.steps(0, h, ns), np.arange(10) * ns)  # a twin's stamps: the even grid
    assert even.valid(0).all()
    # a late sample, then a stale read (stamp repeated) and a catch-up gap
    t = 100.0 + np.array([0, 0.05, 0.10, 0.17, 0.20, 0.25, 0.25, 0.42, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80])
    r = _rec(t)
    st = r.steps(0, h, ns)
    assert st[3] == 85 and np.all(np.diff(st) > 0)
    assert 125 < st[6] < 210  # the stale sample's command re-timed between its good neighbours
    v = r.valid(0)
    assert not v[3] and not v[6] and not v[7] and v[1] and v[-1]  # off-grid, stale, settling after it
    # commands start at their steps, `delay` physics steps late
    u = np.arange(len(t))[:, None] * np.ones((1, 5))
    c = arm.controls(u, np.zeros(len(t)), 3, st)
    assert len(c) == st[-1] + 1
    assert c[st[3] + 3 - 1, arm.act[0]] == 2 and c[st[3] + 3, arm.act[0]] == 3
    np.testing.assert_array_equal(arm.controls(u, np.zeros(len(t)), 7), arm.controls(u, np.zeros(len(t)), 7,
                                                                                    np.arange(len(t)) * ns))


def test_encoder_quantum_and_hysteresis_reading():
    rng = np.random.default_rng(0)
    tick = 2 * np.pi / 4096
    n = 2000
    smooth = 0.3 * np.sin(np.linspace(0, 2 * np.pi, n)[:, None] + rng.uniform(0, 6, 5)) + rng.normal(0, 1e-4, (n, 5))
    assert np.all(S.encoder_quantum(_rec(np.arange(n) * 0.05, smooth)) == 0)  # a twin: not quantised
    quant = np.round(smooth / tick) * tick + 0.3
    np.testing.assert_allclose(S.encoder_quantum(_rec(np.arange(n) * 0.05, quant)), tick, rtol=1e-3)
    # one count of hysteresis: the reading follows half a count behind, and stays put on reversal
    pred = np.array([[0.0], [2.0], [3.0], [2.6], [1.0]]) * tick
    out = S._encoder_reading(pred, np.zeros(1), np.array([0.5 * tick]))
    np.testing.assert_allclose(out[:, 0] / tick, [0.0, 1.5, 2.5, 2.5, 1.5])


@pytest.mark.slow
def test_unplugged_mid_excitation_is_one_error_and_keeps_the_finished_segments(tmp_path):
    """The follower's USB adapter pulled out during `sysid excite`: the driver's fault ends the
    run with one error, the segments finished before it stay in the store (a fit can use
    them) and the one it interrupted is not committed half-done."""
    import threading

    from robot_rl.data.store import EpisodeStore
    from robot_rl.drivers.virtual.so101 import VirtualSO101, random_unit
    unit = random_unit(7, cameras=[])
    plan = S.excitation_plan(SO101, seconds=18.0, seed=2, segment_s=6)
    out = tmp_path / "cut.zarr"
    with VirtualSO101(unit) as rig:
        robot = _calibrated_follower(rig, tmp_path)
        started = time.monotonic()

        class PulledCable:
            """The real driver; the cable comes out as the 30th target of the third segment goes out."""

            def __init__(self, r):
                self._r = r

            def __getattr__(self, k):
                return getattr(self._r, k)

            def act(self, action, *a, **kw):
                if np.array_equal(np.asarray(action)[:SO101.dof], plan[2].targets[30]):
                    threading.Thread(target=rig.unplug, args=("follower",)).start()
                return self._r.act(action, *a, **kw)

        try:
            with pytest.raises(Exception) as err:
                S.excite(PulledCable(robot), plan, out, driver="feetech")
        finally:
            try:
                robot.disconnect()
            except Exception:  # noqa: BLE001  (the adapter is gone)
                pass
    assert time.monotonic() - started < 60
    msg = str(err.value).lower()
    assert len(str(err.value).splitlines()) <= 2 and any(w in msg for w in ("no reply", "timeout", "port", "fault", "unplug"))
    with EpisodeStore.open(out) as st:
        assert st.n_episodes == 2  # the two finished segments, not the cut one
    rec = S.load_recording(out, "so101")
    assert rec.kinds == ["multisine", "steps"] and all(len(q) == len(plan[0].targets) for q in rec.q)
