"""The chunk executor: a time-stamped action queue between an inference worker and a
control loop that runs at its own rate.

Every action of a chunk carries a target time: ``t_obs + i * dt`` for row i (row 0 is the
action for the step of the observation the chunk was computed from; ``dt`` is the
policy's control period). When a chunk arrives at ``now``, rows whose time has passed are
stale and dropped (counted). The control loop asks ``action_at(t)`` at its own rate; between
two rows the continuous dimensions are interpolated linearly and the discrete ones (the
gripper) hold the earlier row. ``None`` means the queue has nothing for t (an underrun after
the first chunk): the caller holds the robot.

Executions (:class:`ExecutorSettings`.execution):

* ``sync`` -- execute ``n_action_steps`` actions, then query and hold until the chunk
  arrives (the robot holds still, so the chunk is re-timed to start on arrival);
* ``async`` -- query every ``replan_every`` steps while executing, and also whenever fewer
  than ``d + low_water`` actions remain (d: the planned delay), so the queue refills before
  it runs dry; a new chunk replaces the queue from its first fresh row. With the warm or
  rtc samplers the new chunk continues the old one; with a cold sampler and ``align=False``
  (row 0 executes on arrival, the delay ignored) it is naive asynchronous execution;
* ``ensemble`` -- query every step; the action for t is the average of every chunk's row
  for t, weighted ``exp(-k i)`` with i = 0 the oldest (ACT's temporal ensembling, here
  aligned by target time, so it stays correct under delay).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from robot_rl.runtime.settings import SettingsBase

EXECUTIONS = ("sync", "async", "ensemble")


class ExecutorError(ValueError):
    pass


@dataclass
class ExecutorSettings(SettingsBase):
    error = ExecutorError  # (class attributes, not fields)
    what = "executor settings"
    execution: str = "async"
    n_action_steps: int = 8  # sync: actions per chunk before the next query
    replan_every: int = 4  # async: control steps between query starts
    low_water: int = 1  # async: query when fewer than d + low_water actions remain
    ensemble_k: float = 0.01
    interpolate: bool = True
    align: bool = True  # time-align chunks to their observation (False: naive, row 0 runs on arrival)

    def check(self) -> "ExecutorSettings":
        if self.execution not in EXECUTIONS:
            raise ExecutorError(f"execution must be one of {EXECUTIONS}, got {self.execution!r}")
        if self.n_action_steps < 1 or self.replan_every < 1:
            raise ExecutorError("n_action_steps and replan_every must be >= 1")
        if self.low_water < 0:
            raise ExecutorError(f"low_water must be >= 0, got {self.low_water}")
        return self


class ChunkExecutor:
    def __init__(self, action_dim: int, dt: float, settings: ExecutorSettings | None = None,
                 discrete_dims: Sequence[int] = ()):
        if dt <= 0:
            raise ExecutorError(f"dt must be > 0, got {dt}")
        self.A = int(action_dim)
        self.dt = float(dt)
        self.tol = 1e-6 * self.dt + 1e-9
        self.settings = (settings or ExecutorSettings()).check()
        self.discrete = np.zeros(self.A, bool)
        self.discrete[[int(d) % self.A for d in discrete_dims]] = True
        self.reset()

    def reset(self) -> None:
        """Forget every chunk and counter state of the episode (not the totals in ``counts``)."""
        self._times = np.zeros(0)
        self._acts = np.zeros((0, self.A), np.float32)
        self._ens: list[tuple[np.ndarray, np.ndarray]] = []  # ensemble: (times, actions) per chunk
        self.in_flight = False
        self._last_query: float | None = None
        self._got_chunk = False
        self.boundaries: list[float] = []  # target times where a new chunk took over
        if not hasattr(self, "counts"):
            self.counts = {"chunks": 0, "stale_dropped": 0, "underruns": 0, "queries": 0}

    def update(self, **changes) -> ExecutorSettings:
        self.settings = replace(self.settings, **changes).check()
        return self.settings

    # -- the inference side ---------------------------------------------------------------------
    def should_query(self, t: float, delay_steps: int = 0) -> bool:
        """Whether a query should start now (at most one is in flight)."""
        if self.in_flight:
            return False
        s = self.settings
        if self._last_query is None:
            return True
        if s.execution == "ensemble":
            return t - self._last_query >= self.dt - self.tol
        remaining = self.remaining(t)
        if s.execution == "sync":
            return remaining == 0
        return (t - self._last_query >= s.replan_every * self.dt - self.tol
                or remaining < int(delay_steps) + s.low_water)

    def query_started(self, t: float) -> None:
        self.in_flight = True
        self._last_query = float(t)
        self.counts["queries"] += 1

    def query_failed(self) -> None:
        self.in_flight = False

    def submit(self, chunk: np.ndarray, t_obs: float, now: float) -> int:
        """Add a chunk computed from the observation stamped ``t_obs``; returns the number of
        stale rows dropped."""
        c = np.asarray(chunk, np.float32)
        if c.ndim != 2 or c.shape[1] != self.A or not len(c):
            raise ExecutorError(f"expected a chunk of shape (L, {self.A}), got {c.shape}")
        self.in_flight = False
        s = self.settings
        if s.execution == "sync":
            c = c[: s.n_action_steps]
            times = float(now) + self.dt * np.arange(len(c))  # the robot held still meanwhile
        elif not s.align:  # naive: the chunk starts on arrival, as if no time had passed
            times = float(now) + self.dt * np.arange(len(c))
        else:
            times = float(t_obs) + self.dt * np.arange(len(c))
        fresh = times >= float(now) - self.tol
        # a control loop faster than the policy: the last passed row still anchors the
        # interpolation toward the next one (its time lies within one period before now)
        first = int(np.argmax(fresh)) if fresh.any() else len(times)
        if 0 < first < len(times) and times[first - 1] > float(now) - self.dt + self.tol:
            fresh[first - 1] = True
        dropped = int((~fresh).sum())
        self.counts["stale_dropped"] += dropped
        self.counts["chunks"] += 1
        times, c = times[fresh], c[fresh]
        if not len(times):
            return dropped
        self._got_chunk = True
        if s.execution == "ensemble":
            self._ens = [(ti, ai) for ti, ai in self._ens if ti[-1] >= now - self.tol]
            self._ens.append((times, c))
            return dropped
        keep = self._times < times[0] - self.tol
        self.boundaries.append(float(times[0]))
        self._times = np.r_[self._times[keep], times]
        self._acts = np.concatenate([self._acts[keep], c])
        return dropped

    def latest_chunk(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(target times, actions) queued from the newest chunk's first fresh row on (copies),
        or None before any chunk (async and sync executions: what a trajectory output sends)."""
        if not self.boundaries or self.settings.execution == "ensemble":
            return None
        sel = self._times >= self.boundaries[-1] - self.tol
        if not sel.any():
            return None
        return self._times[sel].astype(float), self._acts[sel].copy()

    # -- the control side -----------------------------------------------------------------------
    def remaining(self, t: float) -> int:
        """Queued actions with a target time at or after t."""
        if self.settings.execution == "ensemble":
            return max((int((ti >= t - self.tol).sum()) for ti, _ in self._ens), default=0)
        return int((self._times >= t - self.tol).sum())

    def action_at(self, t: float) -> np.ndarray | None:
        """The action for time t, or None (nothing queued for t: hold)."""
        if self.settings.execution == "ensemble":
            return self._ensemble_at(t)
        tm = self._times
        # drop rows the loop has passed (keep one before t for interpolation)
        past = np.searchsorted(tm, t + self.tol, side="right") - 1
        if past > 0:
            self._times, self._acts = tm[past:], self._acts[past:]
            tm = self._times
        if not len(tm) or t < tm[0] - self.tol or t > tm[-1] + self.tol:
            if self._got_chunk:
                self.counts["underruns"] += 1
            return None
        a = self._acts[0].copy()
        if self.settings.interpolate and len(tm) > 1 and t > tm[0] + self.tol:
            w = (t - tm[0]) / (tm[1] - tm[0])
            cont = ~self.discrete
            a[cont] = (1 - w) * self._acts[0, cont] + w * self._acts[1, cont]
        return a

    def _ensemble_at(self, t: float) -> np.ndarray | None:
        acc, wsum, i = np.zeros(self.A), 0.0, 0
        for ti, ai in self._ens:  # oldest first
            j = int(np.argmin(np.abs(ti - t)))
            if abs(ti[j] - t) <= 0.5 * self.dt:
                w = float(np.exp(-self.settings.ensemble_k * i))
                acc += w * ai[j]
                wsum += w
                i += 1
        if wsum == 0.0:
            if self._got_chunk:
                self.counts["underruns"] += 1
            return None
        return (acc / wsum).astype(np.float32)
