"""Inference latency, measured per query and turned into a delay in control steps.

The samplers need to know how many actions of a new chunk will already have been executed
(from the previous chunk) by the time it arrives: that is the inference delay ``d`` in
control steps. :class:`LatencyTracker` keeps a window of measured query latencies and
reports a high quantile of it (default p90) rounded up to whole steps, so a sampler plans
for a delay it will rarely exceed; the executor drops whatever turns out stale anyway.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np


class LatencyTracker:
    def __init__(self, dt: float, window: int = 256, quantile: float = 0.9, initial_steps: int = 0):
        if dt <= 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.dt = float(dt)
        self.quantile = float(quantile)
        self.initial_steps = int(initial_steps)
        self._window: deque[float] = deque(maxlen=int(window))
        self._all: list[float] = []  # every measurement, for the end-of-run percentiles
        self.count = 0

    def add(self, seconds: float) -> None:
        s = float(seconds)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"latency must be a finite non-negative number of seconds, got {seconds!r}")
        self._window.append(s)
        self._all.append(s)
        self.count += 1

    def reset_window(self) -> None:
        self._window.clear()

    def delay_steps(self) -> int:
        """The planned delay d: ceil(quantile of recent latencies / dt) (``initial_steps`` before any)."""
        if not self._window:
            return self.initial_steps
        q = float(np.quantile(np.fromiter(self._window, float), self.quantile))
        return max(0, int(math.ceil(q / self.dt - 1e-6)))

    def percentiles_ms(self, recent: bool = False) -> dict[str, float]:
        """p50 / p95 / p99 / max / mean in ms over every measurement (or the recent window)."""
        x = np.asarray(self._window if recent else self._all, float) * 1e3
        if not x.size:
            return {"n": 0}
        p50, p95, p99 = np.percentile(x, [50, 95, 99])
        return {"n": int(x.size), "p50": float(p50), "p95": float(p95), "p99": float(p99),
                "max": float(x.max()), "mean": float(x.mean())}
