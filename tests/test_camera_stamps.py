"""StampFilter: jitter-free frame stamps from host receive times (no camera needed: the
receive times are generated from a camera clock plus one-sided delays)."""
import numpy as np
import pytest

from robot_rl.drivers.cameras.stamps import StampFilter

P = 1_000_000_000 // 30


def _receive(n=900, period=P, latency=3_000_000, delay_p99_ms=13.0, skip=(), seed=0, t0=1_700_000_000_000_000_000):
    rng = np.random.default_rng(seed)
    slots = np.array([k for k in range(n) if k not in set(skip)])
    exposure = t0 + slots * period
    delay = rng.exponential(delay_p99_ms * 1e6 / 4.6, len(slots)).astype(np.int64)  # p99 ~ delay_p99_ms
    return slots, exposure, exposure + latency + delay


def test_filtered_stamps_follow_the_camera_clock_not_the_scheduling_jitter():
    slots, exposure, recv = _receive()
    f = StampFilter(1 / 30)
    stamps = np.array([f(int(r)) for r in recv])
    assert np.all(stamps <= recv) and np.all(np.diff(stamps) > 0)
    raw_err = np.diff(recv[90:]) - P
    err = np.diff(stamps[90:]) - P
    assert np.percentile(np.abs(raw_err), 99) > 8e6  # the raw intervals jitter by ~10 ms
    assert np.percentile(np.abs(err), 99) < 1e6      # the filtered ones by < 1 ms
    # stamps sit at exposure + the transport latency floor (never before the exposure)
    lag = stamps[60:] - exposure[60:]
    assert np.all(lag >= 0) and np.percentile(lag, 99) < 6e6


def test_source_drops_leave_empty_slots_and_are_counted_exactly():
    skip = (100, 101, 400, 650)
    slots, exposure, recv = _receive(skip=skip, delay_p99_ms=8.0)
    f = StampFilter(1 / 30)
    stamps = np.array([f(int(r)) for r in recv])
    assert f.skipped_slots == len(skip)
    gaps = np.round(np.diff(stamps[90:]) / P).astype(int)
    assert sorted(int(g) for g in gaps if g != 1) == [2, 2, 3]  # 100-101 is one gap of 3


def test_drifting_camera_clock_and_unknown_period():
    # a "30 fps" camera that runs 0.1 % slow; and one whose rate is not known beforehand
    for nominal in (1 / 30, None):
        slots, exposure, recv = _receive(period=int(P * 1.001), seed=1)
        f = StampFilter(nominal)
        stamps = np.array([f(int(r)) for r in recv])
        lag = stamps[120:] - exposure[120:]
        assert np.all(stamps <= recv)
        assert np.percentile(lag, 99) < 8e6 and lag.min() > -1e6


def test_a_camera_at_half_the_asked_rate_gets_its_own_period():
    slots, exposure, recv = _receive(period=2 * P, n=300)
    f = StampFilter(1 / 30)
    stamps = np.array([f(int(r)) for r in recv])
    assert f.period == pytest.approx(2 * P, rel=0.05)
    assert np.percentile(np.abs(np.diff(stamps[90:]) - f.period), 99) < 1.5e6


def test_reset_starts_a_new_phase():
    f = StampFilter(1 / 30)
    _, _, recv = _receive(n=100)
    for r in recv:
        f(int(r))
    f.reset()
    later = int(recv[-1]) + 5 * 10**9 + 7_000_000  # reconnected 5 s later, other phase
    assert f(later) == later


def test_late_frames_keep_their_slot():
    # scheduling delays up to ~20 ms at p99 (more than half a 30 fps period): no false skips
    slots, exposure, recv = _receive(n=1800, delay_p99_ms=20.0, seed=3)
    f = StampFilter(1 / 30)
    stamps = np.array([f(int(r)) for r in recv])
    assert f.skipped_slots <= 9  # only frames later than 3/4 of a period (0.3% of this tail) shift a slot
    assert np.percentile(np.abs(np.diff(stamps[90:]) - P), 99) < 1e6
