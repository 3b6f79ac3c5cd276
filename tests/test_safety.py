"""SafetyFilter (pure numpy) and SimRobot, the filter in front of the twin (no ROS)."""
from __future__ import annotations

import numpy as np
import pytest

from robot_rl.runtime.safety import SafetyFilter
from robot_rl.spec import load_spec

SPEC = load_spec("so101")
DT = 1.0 / SPEC.control_hz
LO, HI = np.array(SPEC.lower), np.array(SPEC.upper)
VSTEP = np.array(SPEC.max_velocity) * DT  # the per-step velocity limit
HOME = np.array(SPEC.home)


def make(**kw) -> SafetyFilter:
    f = SafetyFilter(SPEC, DT, **kw)
    f.reset(HOME, gripper=0.0)
    return f


# -- pass-through ------------------------------------------------------------------------------
def test_in_limit_targets_pass_bit_identical():
    f = make()
    req = HOME + np.array([0.01, -0.02, 0.03, 0.1, -0.1]) / 3
    r = f(req, 0.4, HOME, now=0.0, command_time=0.0)
    assert not r.events and not r.held and not r.rejected
    assert r.q.tobytes() == req.tobytes() and r.gripper == 0.4
    assert f.counters["passed"] == 1 and f.counters["steps"] == 1


# -- NaN / inf / shape: the whole command is rejected, the last safe target held -----------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 3, "gripper"])
def test_nonfinite_commands_are_rejected_whole(bad, where):
    f = make()
    good = HOME + 0.05
    r0 = f(good, 0.3, HOME, now=0.0, command_time=0.0)
    req, g = good + 0.05, 0.9
    if where == "gripper":
        g = bad
    else:
        req = req.copy()
        req[where] = bad
    r = f(req, g, HOME, now=0.1, command_time=0.1)
    assert r.rejected and r.events == ["rejected_nonfinite"]
    assert np.array_equal(r.q, r0.q) and r.gripper == 0.3  # nothing of it passed
    assert f.counters["rejected_nonfinite"] == 1 and f.counters["rejected"] == 1


@pytest.mark.parametrize("req", [np.zeros(4), np.zeros(6), np.zeros((5, 1)), "abc", [[1, 2], [3]]])
def test_wrongly_shaped_commands_are_rejected(req):
    f = make()
    r = f(req, 0.0, HOME, now=0.0, command_time=0.0)
    assert r.rejected and r.events == ["rejected_shape"] and np.array_equal(r.q, HOME)


def test_fuzz_nothing_unsafe_ever_passes():
    """Random requests (wild values, NaN, inf, jumps) never produce a non-finite target, a
    target outside the limits, or a step faster than the velocity limit."""
    rng = np.random.default_rng(0)
    f = make(margin=0.02, max_acceleration=40.0)
    prev = f.last_target
    for i in range(3000):
        req = prev + rng.normal(0, rng.choice([0.01, 0.3, 5.0]), SPEC.dof)
        if rng.random() < 0.1:
            req[rng.integers(SPEC.dof)] = rng.choice([np.nan, np.inf, -np.inf, 1e30])
        g = rng.choice([rng.normal(0.5, 1.0), np.nan, None])
        r = f(req, g, prev, now=i * DT, command_time=i * DT)
        assert np.all(np.isfinite(r.q)) and r.q.shape == (SPEC.dof,)
        assert np.all(r.q >= LO + 0.02) and np.all(r.q <= HI - 0.02)
        assert np.all(np.abs(r.q - prev) <= VSTEP + 1e-12)
        assert r.gripper is not None and 0.0 <= r.gripper <= 1.0
        prev = r.q
    c = f.counters
    assert c["rejected_nonfinite"] > 100 and c["clamped_joint_limit"] > 100 and c["clamped_velocity"] > 100
    assert c["steps"] == 3000


# -- exact clamps --------------------------------------------------------------------------------
def test_joint_limit_clamp_is_exact():
    f = make(margin=0.05, velocity_scale=1e6)
    req = np.array([5.0, -5.0, HOME[2], 99.0, -99.0])
    r = f(req, 0.0, HOME, now=0.0, command_time=0.0)
    assert r.events == ["clamped_joint_limit"]
    expect = np.array([HI[0] - 0.05, LO[1] + 0.05, HOME[2], HI[3] - 0.05, LO[4] + 0.05])
    assert np.array_equal(r.q, expect)
    assert f.counters["clamped_joint_limit"] == 1


def test_out_of_limit_reject_policy_holds():
    f = make(limit_policy="reject")
    r = f(HOME + np.array([0, 0, 0, 0, 9.0]), 0.0, HOME, now=0.0, command_time=0.0)
    assert r.rejected and r.events == ["rejected_limit"] and np.array_equal(r.q, HOME)


def test_velocity_clamp_is_exact_and_per_joint():
    f = make()
    req = HOME + np.array([1.0, -1.0, 0.01, 0.0, 0.5])
    r = f(req, 0.0, HOME, now=0.0, command_time=0.0)
    assert r.events == ["clamped_velocity"]
    assert r.q[0] == HOME[0] + VSTEP[0] and r.q[1] == HOME[1] - VSTEP[1]
    assert r.q[2] == req[2] and r.q[3] == req[3]  # joints within the limit are untouched
    assert r.q[4] == HOME[4] + VSTEP[4]
    # the next step continues from the clamped target
    r2 = f(req, 0.0, HOME, now=DT, command_time=DT)
    assert r2.q[0] == pytest.approx(HOME[0] + 2 * VSTEP[0], abs=1e-15)


def test_velocity_scale():
    f = make(velocity_scale=0.5)
    r = f(HOME + 1.0, 0.0, HOME, now=0.0, command_time=0.0)
    assert np.allclose(r.q - HOME, 0.5 * VSTEP)


def test_acceleration_clamp_ramps_up_and_brakes_without_overshoot():
    acc = 10.0  # 4 steps of ramp stay under the velocity limit
    a = acc * DT ** 2
    f = make(max_acceleration=acc)
    target = HOME + np.array([1.0, 0, 0, 0, 0])
    steps = []
    prev = HOME.copy()
    for k in range(4):
        r = f(target, 0.0, prev, now=k * DT, command_time=k * DT)
        steps.append(r.q[0] - prev[0])
        prev = r.q
    assert steps == pytest.approx([a, 2 * a, 3 * a, 4 * a], abs=1e-12)
    assert "clamped_acceleration" in r.events
    # braking: asking to stay where we are is obeyed at once (no overshoot past the request)
    r = f(prev, 0.0, prev, now=5 * DT, command_time=5 * DT)
    assert np.array_equal(r.q, prev) and not r.events
    # a reversal starts from rest: at most one acceleration step the other way
    r = f(prev - 1.0, 0.0, prev, now=6 * DT, command_time=6 * DT)
    assert r.q[0] == pytest.approx(prev[0] - a, abs=1e-12)


# -- watchdog ----------------------------------------------------------------------------------
def test_watchdog_holds_the_position_where_the_command_went_stale():
    f = make(timeout_s=0.3)
    target = HOME + 0.1
    r = f(target, 0.5, HOME, now=0.0, command_time=0.0)
    assert not r.held
    measured = HOME + 0.04  # the arm is on its way
    r = f(target, 0.5, measured, now=0.31, command_time=0.0)
    assert r.held and r.events == ["watchdog"]
    assert np.array_equal(r.q, measured)  # stop where it is, not at the old target
    assert r.gripper == 0.5
    # still stale: the hold is latched (no creeping along with the measured position)
    r = f(target, 0.5, measured + 0.01, now=0.5, command_time=0.0)
    assert np.array_equal(r.q, measured)
    assert f.counters["watchdog_trips"] == 1 and f.counters["watchdog"] == 2
    # a fresh command resumes motion, rate limited from the hold position
    r = f(HOME + 1.0, 0.5, measured, now=0.6, command_time=0.6)
    assert not r.held and np.allclose(r.q, measured + VSTEP)


def test_no_command_holds_the_measured_position():
    f = make()
    m = HOME + 0.02
    r = f(None, None, m, now=0.0)
    assert r.held and r.events == ["no_command"] and np.array_equal(r.q, m)


def test_watchdog_off():
    f = make(timeout_s=None)
    r = f(HOME + 0.01, 0.0, HOME, now=100.0, command_time=0.0)
    assert not r.held


# -- e-stop -------------------------------------------------------------------------------------
def test_estop_latches_until_released():
    f = make()
    f(HOME + 0.05, 0.2, HOME, now=0.0, command_time=0.0)
    m = HOME + 0.03
    f.engage_estop(m)
    assert f.estopped
    for k in range(3):  # fresh commands are ignored
        r = f(HOME + 0.5, 1.0, m + 0.01 * k, now=0.1 * k, command_time=0.1 * k)
        assert r.held and r.events == ["estop"] and np.array_equal(r.q, m) and r.gripper == 0.2
    f.reset(HOME)  # a reset does not release the latch
    assert f.estopped
    f.release_estop(m)
    assert not f.estopped
    r = f(None, None, m + 0.02, now=1.0)
    assert r.held and np.array_equal(r.q, m)  # release alone does not move
    r = f(m + 0.01, 0.2, m, now=1.1, command_time=1.1)
    assert not r.held and np.array_equal(r.q, m + 0.01)
    t = f.telemetry()
    assert t["estop_engagements"] == 1 and t["estop"] == 3 and t["estop_engaged"] == 0


def test_gripper_is_clamped_and_kept():
    f = make()
    r = f(HOME, 1.7, HOME, now=0.0, command_time=0.0)
    assert r.gripper == 1.0 and r.events == ["clamped_gripper"]
    r = f(HOME, None, HOME, now=0.0, command_time=0.0)
    assert r.gripper == 1.0 and not r.events
    r = f(HOME, -3, HOME, now=0.0, command_time=0.0)
    assert r.gripper == 0.0


# -- workspace ----------------------------------------------------------------------------------
def _toy_fk(q):  # tool position = first three joints (a cartesian toy robot)
    return np.asarray(q[:3], float)


def test_workspace_step_is_shortened_to_the_boundary():
    ws = ((-1.0, -1.0, 0.0), (1.0, 1.0, 1.5))
    f = SafetyFilter(SPEC, DT, fk=_toy_fk, workspace=ws, workspace_tolerance=0.0, velocity_scale=100)
    f.reset(np.array([0.0, 0.0, 1.2, 0.0, 0.0]))
    r = f(np.array([0.0, 0.0, 1.9, 0.5, 0.0]), 0.0, None, now=0.0, command_time=0.0)
    assert r.events == ["clamped_workspace"]
    assert 1.5 - 1e-3 < r.q[2] <= 1.5  # on the boundary (bisection), not outside
    assert r.q[3] == pytest.approx(0.5 * (r.q[2] - 1.2) / 0.7, abs=1e-9)  # along the same segment
    assert f.counters["clamped_workspace"] == 1


def test_workspace_from_outside_only_moves_back_in():
    ws = ((-1.0, -1.0, 0.0), (1.0, 1.0, 1.5))
    f = SafetyFilter(SPEC, DT, fk=_toy_fk, workspace=ws, workspace_tolerance=0.0, velocity_scale=100)
    f.reset(np.array([0.0, 0.0, 2.0, 0.0, 0.0]))  # starts outside (z = 2.0)
    r = f(np.array([0.0, 0.0, 2.2, 0.0, 0.0]), 0.0, None, now=0.0, command_time=0.0)
    assert r.q[2] == 2.0 and r.events == ["clamped_workspace"]  # further out: held
    r = f(np.array([0.0, 0.0, 1.8, 0.0, 0.0]), 0.0, None, now=0.0, command_time=0.0)
    assert r.q[2] == 1.8  # closer: allowed


def test_constructor_errors():
    with pytest.raises(ValueError):
        SafetyFilter(SPEC, DT, margin=5.0)
    with pytest.raises(ValueError):
        SafetyFilter(SPEC, DT, limit_policy="ignore")
    with pytest.raises(ValueError):
        SafetyFilter(SPEC, DT, max_acceleration=0.0)


# -- SimRobot: the filter in front of the twin -----------------------------------------------------
def test_simrobot_matches_the_env_for_in_limit_actions():
    from robot_rl.runtime.robot import SimRobot
    from robot_rl.sim import make_env
    env = make_env("pick_cube", "so101", action_mode="ee_delta", cameras=["front"], image_size=32)
    robot = SimRobot("so101", "pick_cube", "ee_delta", cameras=["front"], image_size=32, seed=3)
    robot.connect()
    obs, _ = env.reset(seed=3)
    ex = env.make_expert(3)
    o2 = robot.observe()
    for k in range(15):
        for key in obs:
            assert np.array_equal(obs[key], o2[key]), (k, key)
        a = ex.act(obs).astype(np.float32)
        obs, rew, term, trunc, info = env.step(a)
        res = robot.act(a)
        o2 = robot.observe()
        assert not res.events and np.array_equal(res.action, a)
        assert rew == robot.reward and info["success"] == robot.success and term == robot.terminated
    assert robot.sim_time == pytest.approx(15 * robot.control_dt)
    robot.disconnect()
    env.close()


def test_simrobot_never_forwards_unsafe_actions():
    from robot_rl.runtime.robot import SimRobot
    robot = SimRobot("so101", "reach", "joint_pos", seed=0)
    robot.connect()
    tw = robot.twin
    ctrl0 = tw.data.ctrl.copy()
    for bad in ([np.nan] * 6, [0, 0, np.inf, 0, 0, 0], [0.0] * 4, [0, 0, 0, 0, 0, np.nan]):
        res = robot.act(bad)
        assert res.rejected and np.all(np.isfinite(tw.data.ctrl))
        assert np.array_equal(tw.data.ctrl[tw.act], ctrl0[tw.act])
    for bad in ([np.nan] * 7, [1e9] * 6 + [0.0]):  # also in the delta modes
        robot.act(bad, "ee_delta")
        assert np.all(np.isfinite(tw.data.ctrl))
    # far out of limits: only ever within the margin-shrunk limits, velocity limited
    prev = tw.data.ctrl[tw.act].copy()
    for _ in range(60):
        res = robot.act([9, -9, 9, -9, 9, 3.0])
        q = tw.data.ctrl[tw.act]
        assert np.all(q >= LO + 0.01 - 1e-12) and np.all(q <= HI - 0.01 + 1e-12)
        assert np.all(np.abs(q - prev) <= VSTEP + 1e-12)
        prev = q.copy()
        assert np.all(np.abs(robot.observe()["joint_pos"] - 0) < 3.0)
    assert res.events and res.action.shape == (6,)
    assert np.array_equal(res.action[:5], q.astype(np.float32))  # the applied action, not the request
    c = robot.safety.counters
    assert c["rejected_nonfinite"] >= 4 and c["rejected_shape"] >= 1 and c["clamped_joint_limit"] > 0
    robot.disconnect()


def test_simrobot_hold_estop_and_clock_across_resets():
    from robot_rl.runtime.robot import SimRobot
    robot = SimRobot("so101", "reach", "joint_delta", seed=0, safety={"timeout_s": 0.1})
    robot.connect()
    q0 = robot.observe()["joint_pos"].copy()
    for _ in range(10):
        robot.act(None)  # no command: hold (the arm only settles by a few mm after the reset)
    assert np.allclose(robot.observe()["joint_pos"], q0, atol=5e-3)
    robot.act([1, 0, 0, 0, 0, 0], command_time=0.0, now=1.0)  # stale: held
    assert np.allclose(robot.observe()["joint_pos"], q0, atol=5e-3)
    q1 = robot.observe()["joint_pos"].copy()
    robot.estop(True)
    for _ in range(5):
        res = robot.act([1, 1, 1, 1, 1, 1])
        assert res.held and res.events == ["estop"] and np.allclose(res.q, q1, atol=1e-6)
    assert np.allclose(robot.observe()["joint_pos"], q1, atol=2e-3)
    robot.estop(False)
    t = [robot.sim_time]
    for seed in (1, 2):
        robot.act([0.5, 0, 0, 0, 0, 0])
        t.append(robot.sim_time)
        robot.reset(seed)
        t.append(robot.sim_time)
    assert all(b > a for a, b in zip(t, t[1:])), t  # stamps never repeat across resets
    robot.disconnect()
