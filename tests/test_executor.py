"""Chunk executor: target times, stale drops, interpolation, refills, execution modes; and
the simulated-delay rollout on the real twin."""

import numpy as np
import pytest

from robot_rl.runtime.executor import ChunkExecutor, ExecutorError, ExecutorSettings
from robot_rl.runtime.latency import LatencyTracker

DT = 0.05


def chunk(n, start=0.0, grip=0.0):
    c = np.zeros((n, 3), np.float32)
    c[:, 0] = start + np.arange(n)
    c[:, 2] = grip
    return c


def test_stale_rows_are_dropped_and_the_rest_is_time_aligned():
    ex = ChunkExecutor(3, DT, ExecutorSettings(execution="async"), discrete_dims=[2])
    ex.query_started(0.0)
    dropped = ex.submit(chunk(8), t_obs=0.0, now=3 * DT)  # arrives 3 steps late
    assert dropped == 3 and ex.counts["stale_dropped"] == 3
    assert ex.action_at(3 * DT)[0] == pytest.approx(3.0), "row 3 is the action for now"
    assert ex.remaining(3 * DT) == 5


def test_naive_alignment_starts_row_zero_on_arrival():
    ex = ChunkExecutor(3, DT, ExecutorSettings(execution="async", align=False))
    assert ex.submit(chunk(8), t_obs=0.0, now=3 * DT) == 0
    assert ex.action_at(3 * DT)[0] == pytest.approx(0.0)


def test_interpolates_continuous_dims_and_holds_discrete():
    ex = ChunkExecutor(3, DT, ExecutorSettings(), discrete_dims=[2])
    c = chunk(4)
    c[:, 2] = [0, 1, 1, 1]
    ex.submit(c, 0.0, 0.0)
    a = ex.action_at(0.4 * DT)  # a 50 Hz loop between two 20 Hz rows
    assert a[0] == pytest.approx(0.4) and a[2] == 0.0, "gripper holds the earlier row"
    assert ex.action_at(1.0 * DT)[2] == 1.0
    off = ChunkExecutor(3, DT, ExecutorSettings(interpolate=False))
    off.submit(c, 0.0, 0.0)
    assert off.action_at(0.4 * DT)[0] == 0.0


def test_underrun_when_the_queue_runs_dry():
    ex = ChunkExecutor(3, DT, ExecutorSettings())
    assert ex.action_at(0.0) is None and ex.counts["underruns"] == 0, "before the first chunk: a hold, not an underrun"
    ex.submit(chunk(2), 0.0, 0.0)
    assert ex.action_at(DT) is not None
    assert ex.action_at(2 * DT) is None and ex.counts["underruns"] == 1


def test_async_refills_before_running_dry_and_sync_waits():
    s = ExecutorSettings(execution="async", replan_every=8, low_water=1)
    ex = ChunkExecutor(3, DT, s)
    assert ex.should_query(0.0)
    ex.query_started(0.0)
    assert not ex.should_query(0.0), "one query in flight at most"
    ex.submit(chunk(10), 0.0, 0.0)
    assert not ex.should_query(2 * DT, delay_steps=2)
    # 3 actions left at t=7 -> with d=3 the next chunk would arrive after the queue empties
    assert ex.should_query(7 * DT, delay_steps=3)
    assert ex.should_query(8 * DT, delay_steps=0), "replan_every elapsed"
    sync = ChunkExecutor(3, DT, ExecutorSettings(execution="sync", n_action_steps=4))
    sync.query_started(0.0)
    sync.submit(chunk(10), 0.0, 2 * DT)  # the robot held for 2 steps: row 0 runs on arrival
    assert sync.action_at(2 * DT)[0] == 0.0 and sync.remaining(2 * DT) == 4
    assert not sync.should_query(5 * DT) and sync.should_query(6 * DT)


def test_new_chunk_replaces_the_queue_from_its_first_fresh_row():
    ex = ChunkExecutor(3, DT, ExecutorSettings())
    ex.submit(chunk(10, start=100), 0.0, 0.0)
    ex.action_at(0.0)
    ex.submit(chunk(10, start=200), 2 * DT, 4 * DT)  # obs at step 2, arrives at step 4
    assert ex.action_at(3 * DT)[0] == 103, "rows before the new chunk's first fresh one stay"
    assert ex.action_at(4 * DT)[0] == 202
    assert ex.boundaries[-1] == pytest.approx(4 * DT)


def test_temporal_ensemble_aligned_by_time():
    ex = ChunkExecutor(3, DT, ExecutorSettings(execution="ensemble", ensemble_k=0.0))
    ex.submit(chunk(5, start=0), 0.0, 0.0)
    ex.submit(chunk(5, start=10), DT, 2 * DT)  # computed for step 1, arrived at step 2
    # at step 2: the first chunk's row 2 (=2) and the second's row 1 (=11), equal weights
    assert ex.action_at(2 * DT)[0] == pytest.approx(6.5)


def test_settings_and_latency_tracker():
    with pytest.raises(ExecutorError, match="execution"):
        ExecutorSettings(execution="later").check()
    with pytest.raises(ExecutorError, match="unknown executor settings"):
        ExecutorSettings.from_dict({"replan": 3})
    ex = ChunkExecutor(3, DT)
    with pytest.raises(ExecutorError, match="shape"):
        ex.submit(np.zeros((4, 5)), 0.0, 0.0)
    tr = LatencyTracker(DT, quantile=0.9)
    assert tr.delay_steps() == 0
    for ms in [10, 20, 30, 120]:
        tr.add(ms / 1e3)
    assert tr.delay_steps() == 2  # p90 of (10, 20, 30, 120) ms is 93 ms -> 2 periods of 50 ms
    tr.add(0.05)
    p = tr.percentiles_ms()
    assert p["n"] == 5 and p["max"] == pytest.approx(120)
    with pytest.raises(ValueError):
        tr.add(float("nan"))


def test_delay_rollout_on_the_twin(tmp_path):
    """A real (untrained) policy on the real twin with d = 2: every chunk after an episode's
    first arrives 2 steps late, so 2 of its rows are stale."""
    import torch

    from policy_helpers import KEYS, record_expert_store
    from robot_rl.data import EpisodeStore
    from robot_rl.policies.common.normalizer import Normalizer
    from robot_rl.policies.mlp_bc import MLPBCPolicy
    from robot_rl.policies.base import PolicyConfig
    from robot_rl.runtime.simulate import rollout_with_delay
    from robot_rl.spec import load_spec
    store = record_expert_store(tmp_path / "reach.zarr", episodes=2)
    with EpisodeStore.open(store) as st:
        norm = Normalizer.from_store(st, KEYS + ["action"])
        dims = {k: st.schema[k].shape[0] for k in KEYS}
    torch.manual_seed(0)
    pol = MLPBCPolicy(PolicyConfig(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=1, horizon=8,
                                   n_action_steps=4), norm)
    spec = load_spec("so101")
    r = rollout_with_delay(pol, "reach", spec, sampler=dict(mode="rtc"), executor=dict(replan_every=4), delay=2,
                           episodes=2, n_envs=2, max_episode_steps=20, progress=False)
    assert r.episodes == 2 and len(r.successes) == 2
    assert r.holds >= 2 * 2, "each episode waits d steps for its first chunk"
    # every delivered chunk had exactly its first 2 rows stale; chunks still in flight when an
    # episode ended were never delivered (at most one per episode)
    assert 2 * (r.queries - 2) <= r.stale_dropped <= 2 * r.queries
    assert r.executed + r.holds == 2 * 20
    assert r.nfe_per_query == 1.0
    assert set(r.jerk) >= {"jerk_boundary_max", "jerk_inside_max", "jerk_ratio_max"}


def test_a_faster_control_loop_interpolates_from_the_row_just_passed():
    """50 Hz loop, 20 Hz policy: a chunk arriving 30 ms after its observation keeps row 0
    (time 0) as the anchor, so the action for now is between rows 0 and 1 -- not a hold."""
    ex = ChunkExecutor(3, DT, ExecutorSettings())
    assert ex.submit(chunk(5), t_obs=0.0, now=0.03) == 0
    assert ex.action_at(0.03)[0] == pytest.approx(0.6)
    assert ex.submit(chunk(5, start=10), t_obs=0.0, now=0.07) == 1, "row 0 lies a whole period back: stale"


def test_latest_chunk_is_the_newest_chunks_queued_rows():
    ex = ChunkExecutor(3, DT, ExecutorSettings())
    assert ex.latest_chunk() is None
    ex.submit(chunk(6, start=100), 0.0, 0.0)
    ex.submit(chunk(6, start=200), 2 * DT, 3 * DT)  # rows 1.. of the new chunk are fresh
    times, acts = ex.latest_chunk()
    np.testing.assert_allclose(times, (3 + np.arange(5)) * DT)
    np.testing.assert_allclose(acts[:, 0], 201 + np.arange(5))
    acts[:] = -1  # a copy: the queue is untouched
    assert ex.action_at(3 * DT)[0] == 201
