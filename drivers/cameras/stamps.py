"""Frame stamps of a fixed-rate camera from jittery host receive times.

A camera exposes frame k at ``phi + k * period``; the host receives it later by a transport
latency plus a delay that is never negative (USB / network queues, the capture thread not
being scheduled): ``r_k = phi + k * period + L + e_k``, ``e_k >= 0``. On a loaded 2-core
machine ``e_k`` reaches 10-15 ms at p99, close to half a 30 fps period, which makes a 30 Hz
dataset grid take one frame twice and skip its neighbour.

:class:`StampFilter` assigns each frame its slot ``n_k`` (a frame the source skipped leaves
a slot empty, so source drops are counted exactly) and stamps it at the lower envelope of
the recent ``r_i - n_i * period`` (the least-delayed frames of the last ``window_s``, which
follows clock drift), never later than the frame was received. The raw receive time stays
available (``Frame.recv_ns``).
"""
from __future__ import annotations

import statistics
from collections import deque

NS = 1_000_000_000


class StampFilter:
    """Host receive times (ns) -> jitter-free frame stamps (ns); see the module doc.

    ``period_s``: the nominal frame period (1 / fps). The period is measured over the first
    ``learn`` intervals either way (span / slots, a slot being the median interval; stamps
    are the receive times meanwhile); it replaces the nominal period when that is unknown
    or more than 20 % off (a camera asked for 30 fps that runs at 15). A camera clock off its nominal rate (0.1 % is typical) shows as a slow
    drift of the phase, which the window's lower envelope follows (lagging by the drift over
    ``window_s``: 2 ms at 0.1 %)."""

    def __init__(self, period_s: float | None = None, window_s: float = 2.0, learn: int = 60):
        self.nominal = None if period_s is None else int(round(period_s * NS))
        self.period: float | None = None
        self.window = int(window_s * NS)
        self.learn = int(learn)
        self._intervals: list[int] = []
        self._last_recv: int | None = None
        self._recent: deque[tuple[int, int]] = deque()  # (receive ns, slot) of the last window_s
        self._n: int | None = None
        self._last_stamp: int | None = None
        self.skipped_slots = 0  # frames the source did not deliver (empty slots)

    def reset(self) -> None:
        """Forget the phase (after a reconnect the source's clock starts again)."""
        self._recent.clear()
        self._n = None
        self._last_recv = None

    def _phase(self) -> float:
        P = self.period
        return min(r - n * P for r, n in self._recent)  # the least-delayed recent frame

    def __call__(self, recv_ns: int) -> int:
        r = int(recv_ns)
        if self.period is None:  # learning the period: raw stamps
            if self._last_recv is not None:
                self._intervals.append(r - self._last_recv)
            self._last_recv = r
            if len(self._intervals) >= self.learn:
                med = float(statistics.median(self._intervals))
                slots = sum(max(1, int(iv / med + 0.25)) for iv in self._intervals)  # a late frame is no gap
                measured = sum(self._intervals) / slots  # the span over the slots: jitter averages out
                # start-up hiccups (bursts, a stalled first second) easily put the measured period a
                # few % off: the nominal one wins unless the camera clearly runs at another rate
                nominal_ok = self.nominal is not None and abs(measured - self.nominal) <= 0.2 * self.nominal
                self.period = float(self.nominal) if nominal_ok else measured
            return self._monotonic(r)
        P = self.period
        if self._n is None:
            n = 0
        else:
            # the slot: delays are one-sided (a frame is never received before it is exposed), so a
            # frame up to 3/4 of a period late still gets its own slot, while a frame the source
            # skipped (the next one arrives a whole period later) leaves an empty slot
            n = int((r - self._phase()) / P + 0.25)
            if n <= self._n:  # two frames for one slot: this one is the next (a late one came before)
                n = self._n + 1
            self.skipped_slots += max(0, n - self._n - 1)
        self._n = n
        self._recent.append((r, n))
        while r - self._recent[0][0] > self.window:
            self._recent.popleft()
        phi = self._phase()
        return self._monotonic(int(min(r, phi + n * self.period)))

    def _monotonic(self, s: int) -> int:
        if self._last_stamp is not None and s <= self._last_stamp:
            s = self._last_stamp + 1
        self._last_stamp = s
        return s
