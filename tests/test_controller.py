"""DeployController: safe holds, actions once the worker replies, clipping into the action
space, parameter validation, history building and diagnostics -- without ROS."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.policies.base import CheckpointError
from robot_rl.runtime.controller import REASONS, DeployController, action_bounds, clip_action
from robot_rl.spec import load_spec
from test_runtime_worker import make_tiny_checkpoint

SPEC = load_spec("so101")
DT = 1.0 / SPEC.control_hz
LO, HI = action_bounds(SPEC, "ee_delta")
NO_FALLBACK = {"fallback_threshold": float("inf")}  # untrained nets disagree with every warm start


def obs(g: float = 0.3, q=None) -> dict[str, np.ndarray]:
    return {"joint_pos": np.asarray(q if q is not None else [0.1, 0.2, 1.0, 1.2, 0.0], np.float32),
            "gripper": np.array([g], np.float32)}


def assert_safe(a: np.ndarray, lo=LO, hi=HI):
    assert a.dtype == np.float32 and a.shape == lo.shape
    assert np.all(np.isfinite(a)) and np.all(a >= lo) and np.all(a <= hi)


def tick_until_action(c: DeployController, now: float, timeout: float = 30.0):
    """Tick at a fixed `now` (real time passes) until the worker's chunk is executed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = c.tick(now)
        if not r.held:
            return r
        assert r.reason == "underrun", r.reason  # waiting for the chunk, nothing else
        time.sleep(0.003)
    raise AssertionError("no action from the policy")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ctl")
    return {"tiny": make_tiny_checkpoint(d / "tiny"),
            "big": make_tiny_checkpoint(d / "big", action_lo=-50.0, action_hi=50.0),
            "nan": make_tiny_checkpoint(d / "nan", zero_action_scale=True),
            "joint": make_tiny_checkpoint(d / "joint", action_dim=6, action_mode="joint_pos")}


@pytest.fixture
def ctl(ckpts):
    c = DeployController(ckpts["tiny"], SPEC, "ee_delta", sampler=NO_FALLBACK)
    yield c
    c.close()


def test_holds_without_usable_observations(ctl):
    r = ctl.tick(100.0)
    assert r.held and r.reason == "no_observation"
    assert_safe(r.action)
    assert np.all(r.action == 0), "zero motion, gripper open when nothing is known"
    # a NaN observation is rejected and holds
    assert not ctl.observe({**obs(), "gripper": np.array([np.nan], np.float32)}, 100.0)
    assert ctl.tick(100.0).reason == "no_observation"
    # missing key, history instead of a single step, wrong length: rejected with a reason
    assert not ctl.observe({"joint_pos": obs()["joint_pos"]}, 100.0)
    assert "gripper" in ctl.diagnostics()["last_reject"]
    assert not ctl.observe({**obs(), "joint_pos": np.zeros((2, 5), np.float32)}, 100.0)
    assert not ctl.observe({**obs(), "joint_pos": np.zeros(4, np.float32)}, 100.0)
    assert ctl.diagnostics()["rejected_obs"] == 4
    # a good observation: the hold keeps the observed gripper while the first chunk comes
    assert ctl.observe(obs(g=0.7), 100.0)
    r = ctl.tick(100.0)
    assert r.held and r.reason == "underrun"
    assert_safe(r.action)
    np.testing.assert_allclose(r.action, [0, 0, 0, 0, 0, 0, 0.7], atol=1e-6)
    # the latest observation rejected -> hold, even though an older good one exists
    assert not ctl.observe({**obs(), "joint_pos": np.array([0, 0, np.inf, 0, 0], np.float32)}, 100.01)
    r = ctl.tick(100.01)
    assert r.held and r.reason == "bad_observation"
    assert_safe(r.action)
    # stale: the latest observation is older than stale_after_s (3 periods by default)
    assert ctl.observe(obs(g=0.7), 100.02)
    r = ctl.tick(100.02 + 3 * DT + 0.01)
    assert r.held and r.reason == "stale_observation"
    assert_safe(r.action)
    # a stamp going backwards is refused
    assert not ctl.observe(obs(), 99.0)
    d = ctl.diagnostics()
    assert d["holds_no_observation"] == 2 and d["holds_bad_observation"] == 1 and d["holds_stale_observation"] == 1
    assert d["last_reason"] == "stale_observation"


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_actions_after_the_worker_replies(ckpts, kind):
    with DeployController(ckpts["tiny"], SPEC, "ee_delta", sampler=NO_FALLBACK, worker=kind) as c:
        t0 = 50.0
        assert c.observe(obs(), t0)
        r = tick_until_action(c, t0)
        assert r.reason == "ok" and r.action.shape == (7,)
        assert_safe(r.action)
        d = c.diagnostics()
        # the first query warm-starts from holding still: 1 NFE, where a cold start costs the policy's 4
        assert d["queries"] == 1 and d["chunks"] == 1 and d["nfe_per_query"] == 1 and d["cold_chunks"] == 0
        assert d["queue"] >= 1 and d["worker"] == kind
        # the plan runs on at the policy rate: later ticks interpolate between rows, no hold
        for k in range(1, 4):
            t = t0 + k * DT
            assert c.observe(obs(), t)
            r = c.tick(t)
            assert not r.held, r.reason
            assert_safe(r.action)
        d = c.diagnostics()
        assert d["underruns"] == 0 and d["holds"] == d["holds_underrun"] > 0  # only the wait for the first chunk


def test_stale_observation_drops_the_plan(ctl):
    t0 = 10.0
    ctl.observe(obs(), t0)
    tick_until_action(ctl, t0)
    assert ctl.executor.remaining(t0) > 3
    t = t0 + 3 * DT + 0.02
    assert ctl.tick(t).reason == "stale_observation"
    assert ctl.executor.remaining(t) == 0, "an old plan must never resume"
    ctl.observe(obs(), t)  # fresh again: holds until a new chunk, computed from the new observation
    r = ctl.tick(t)
    assert r.held and r.reason == "underrun"
    tick_until_action(ctl, t)
    assert ctl.diagnostics()["queries"] == 2


def test_actions_are_clipped_into_the_action_space(ckpts):
    # the normaliser maps the network's [-1, 1] to [-50, 50]: raw chunks are far out of range
    with DeployController(ckpts["big"], SPEC, "ee_delta", sampler=NO_FALLBACK) as c:
        raw = []
        for k in range(6):
            t = 20.0 + k * DT
            c.observe(obs(), t)
            r = tick_until_action(c, t)
            assert_safe(r.action)
            raw.append(r.action)
        raw = np.array(raw)
        assert np.any(np.abs(raw[:, :6]) == 1.0), "saturated at the delta limits"
        assert np.mean((raw[:, 6] == 0.0) | (raw[:, 6] == 1.0)) >= 0.5, "gripper clipped into [0, 1]"
    # the clip itself, in joint_pos mode: joint limits, gripper [0, 1]; NaN is refused, not clipped
    lo, hi = action_bounds(SPEC, "joint_pos")
    np.testing.assert_array_equal(lo, np.array(SPEC.lower + [0.0], np.float32))
    a = clip_action(np.array([9, -9, 0.5, 0, 0, 3.0]), lo, hi)
    np.testing.assert_allclose(a, [SPEC.upper[0], SPEC.lower[1], 0.5, 0, 0, 1.0], rtol=1e-6)
    assert clip_action(np.array([np.nan, 0, 0, 0, 0, 0]), lo, hi) is None
    assert clip_action(np.zeros(5), lo, hi) is None


def test_non_finite_chunks_hold_with_inference_error(ckpts):
    with DeployController(ckpts["nan"], SPEC, "ee_delta", sampler={"mode": "cold"}) as c:
        c.observe(obs(g=0.4), 5.0)
        end = time.monotonic() + 30
        while time.monotonic() < end and c.diagnostics()["errors"] == 0:
            r = c.tick(5.0)
            assert r.held
            assert_safe(r.action)
            time.sleep(0.003)
        r = c.tick(5.0)
        assert r.held and r.reason == "inference_error"
        assert_safe(r.action)
        assert r.action[6] == pytest.approx(0.4)
        d = c.diagnostics()
        assert d["errors"] >= 1 and "finite" in d["last_error"] and d["chunks"] == 0


def test_joint_pos_holds_the_observed_position(ckpts):
    with DeployController(ckpts["joint"], SPEC, "joint_pos") as c:
        lo, hi = action_bounds(SPEC, "joint_pos")
        r = c.tick(1.0)
        assert r.reason == "no_observation"
        assert_safe(r.action, lo, hi)
        q = [0.3, -0.2, 1.1, 0.4, 0.1]
        c.observe(obs(g=0.2, q=q), 1.0)
        r = c.tick(1.0 + 3 * DT + 0.01)
        assert r.held and r.reason == "stale_observation"
        np.testing.assert_allclose(r.action, q + [0.2], rtol=1e-6)


def test_action_dim_and_mode_checked(ckpts):
    with pytest.raises(ValueError, match="7-dim actions.*6-dim"):
        DeployController(ckpts["tiny"], SPEC, "joint_delta")
    with pytest.raises(ValueError, match="trained for action mode 'joint_pos'"):
        DeployController(ckpts["joint"], SPEC, "joint_delta")
    with pytest.raises(CheckpointError, match="arm6"):
        DeployController(ckpts["tiny"], load_spec("arm6"), "ee_delta")
    with pytest.raises(ValueError, match="stale_after_s"):
        DeployController(ckpts["tiny"], SPEC, stale_after_s=0)


def test_set_params_validates_everything_before_applying(ctl):
    before = ctl.params()
    bad_calls = [dict(nope=1), dict(replan_every=3, k_prime=1000), dict(replan_every=3, warm_steps=2.5),
                 dict(mode="cold", execution="sometimes"), dict(replan_every=3, stale_after_s=-1),
                 dict(mode="cold", max_latency_s=float("nan")), dict(replan_every=3, paused="yes")]
    for kw in bad_calls:
        with pytest.raises(ValueError) as e:
            ctl.set_params(**kw)
        bad = [k for k in kw if k not in ("replan_every", "mode")] or ["execution"]
        assert any(k in str(e.value) for k in bad), (kw, str(e.value))
        assert ctl.params() == before, f"{kw} changed something"
    ctl.set_params(mode="cold", replan_every=4, stale_after_s=0.5, max_latency_s=2, paused=True)
    p = ctl.params()
    assert (p["mode"], p["replan_every"], p["stale_after_s"], p["max_latency_s"], p["paused"]) == \
        ("cold", 4, 0.5, 2.0, True)
    assert ctl.worker.sampler_settings.mode == "cold" and ctl.executor.settings.replan_every == 4
    ctl.observe(obs(), 3.0)
    r = ctl.tick(3.0)
    assert r.held and r.reason == "paused"
    assert_safe(r.action)
    assert ctl.diagnostics()["queries"] == 0, "no inference while paused"
    ctl.set_params(paused=False)
    assert ctl.tick(3.0).reason == "underrun"


def test_overrun_holds_while_a_query_runs_too_long(ckpts):
    with DeployController(ckpts["tiny"], SPEC, sampler={"mode": "cold"}, max_latency_s=0.05,
                          injected_delay_s=0.3) as c:
        t0 = time.monotonic()
        c.observe(obs(), t0)
        assert c.tick(t0).reason == "underrun"  # the query starts
        t = t0 + 0.06
        c.observe(obs(), t)
        r = c.tick(t)
        assert r.held and r.reason == "overrun"
        assert_safe(r.action)


def test_history_at_the_policy_rate_and_reset(ctl):
    def o(v):
        return {"joint_pos": np.full(5, v, np.float32), "gripper": np.array([0.0], np.float32)}
    ctl.observe(o(1), 0.0)
    np.testing.assert_array_equal(ctl.history()["joint_pos"][:, 0], [1, 1])  # the first fills the history
    assert ctl.history()["gripper"].shape == (2, 1)
    # observations faster than the policy rate: the earlier step is the one nearest latest - dt
    for k in range(1, 11):
        ctl.observe(o(1 + k), k * 0.01)
    np.testing.assert_array_equal(ctl.history()["joint_pos"][:, 0], [1 + 5, 1 + 10])  # stamps 0.05, 0.10
    assert ctl.diagnostics()["step"] == 2  # round(0.10 / 0.05)
    ctl.reset()
    assert ctl.tick(1.0).reason == "no_observation"
    with pytest.raises(RuntimeError):
        ctl.history()


def test_diagnostics_keys(ctl):
    ctl.observe(obs(), 7.0)
    tick_until_action(ctl, 7.0)
    d = ctl.diagnostics()
    need = ["mode", "execution", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
            "delay_steps", "queue", "queries", "chunks", "nfe_per_query", "fallbacks", "fallback_rate",
            "stale_dropped", "underruns", "rejected_obs", "last_reason"] + [f"holds_{r}" for r in REASONS]
    missing = [k for k in need if k not in d]
    assert not missing, missing
    assert all(isinstance(v, (int, float, str)) for v in d.values())
    assert d["mode"] == "warm" and d["execution"] == "async" and d["last_reason"] == "ok"
    assert d["queries"] == d["chunks"] == 1 and d["queue"] > 0 and np.isfinite(d["latency_ms_p99"])
