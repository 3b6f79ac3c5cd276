"""The deploy controller: the core of the inference node, with no ROS in it.

Observations come in (``observe``) from whatever thread receives them; a control loop calls
``tick(now)`` at its own rate and gets one action back, always finite and inside the action
space's limits. In between:

* an observation history of ``n_obs_steps`` at the policy rate (dt = 1 / spec.control_hz),
  built from the latest observation and, for each earlier step, the received observation
  nearest to ``latest stamp - k * dt`` (the first observation of an episode fills the whole
  history, as in training);
* an :class:`~robot_rl.runtime.worker.InferenceWorker` that computes chunks off the control
  thread, started when the :class:`~robot_rl.runtime.executor.ChunkExecutor` asks for one;
* the executor's time-stamped queue, which turns chunks into an action for any ``now``;
* a :class:`~robot_rl.runtime.latency.LatencyTracker` of the query latency as the control
  loop sees it (query start tick -> the tick that received the chunk), which plans the
  delay d the sampler keeps from the previous chunk. d also counts the observation's age
  when the query starts, since rows are timed from the observation.

A safe hold replaces the policy's action (``held=True``) when there is no observation, the
latest one is older than ``stale_after_s`` or was rejected, the queue is empty, a query has
run longer than ``max_latency_s``, the last query failed, or the controller is paused. A
stale or rejected observation, a pause and an execution-mode change also drop the queued
plan, the in-flight query's result and the sampler's previous chunk, so an old plan never
resumes. Hold actions:

* ``ee_delta`` / ``joint_delta``: zero motion, gripper at the last commanded value (or the
  observed one before any command, or open when neither is known);
* ``joint_pos``: the last observed ``joint_pos`` (or, when the observations do not carry
  it, the last commanded position; before either exists, the spec's home pose -- a command
  a robot must not be sent: an adapter should not publish holds with reason
  ``no_observation`` in ``joint_pos`` mode).

Thread safety: ``observe``, ``tick``, ``set_params``, ``reset`` and ``diagnostics`` may be
called from different threads (one lock; each call is short).
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from robot_rl.runtime.executor import ChunkExecutor, ExecutorSettings
from robot_rl.runtime.latency import LatencyTracker
from robot_rl.runtime.samplers import SamplerSettings
from robot_rl.runtime.worker import InferenceWorker, WorkerDead, coerce_settings
from robot_rl.spec import RobotSpec, load_spec

REASONS = ("no_observation", "stale_observation", "bad_observation", "underrun", "overrun", "inference_error",
           "paused")
OK = "ok"  # TickResult.reason when the action is the policy's
_SAMPLER_KEYS = frozenset(f.name for f in fields(SamplerSettings))
_EXECUTOR_KEYS = frozenset(f.name for f in fields(ExecutorSettings))
_OWN_KEYS = frozenset({"stale_after_s", "max_latency_s", "paused"})


@dataclass
class TickResult:
    action: np.ndarray  # (A,) float32, finite, inside the action space
    held: bool  # True: a safe hold, not the policy's action
    reason: str  # "ok", or one of REASONS


def action_bounds(spec: RobotSpec, action_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the action space: deltas in [-1, 1], joint_pos inside the joint
    limits, the gripper in [0, 1] (the twin env's action space)."""
    g = 1 if spec.gripper else 0
    if action_mode == "joint_pos":
        lo, hi = list(spec.lower), list(spec.upper)
    else:
        n = spec.action_dim(action_mode) - g
        lo, hi = [-1.0] * n, [1.0] * n
    return np.array(lo + [0.0] * g, np.float32), np.array(hi + [1.0] * g, np.float32)


def clip_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray | None:
    """``action`` clipped into [low, high] as float32; None when it is not finite or has the
    wrong shape (no clip makes a NaN safe: the caller holds)."""
    a = np.asarray(action, np.float32)
    if a.shape != low.shape or not np.all(np.isfinite(a)):
        return None
    return np.clip(a, low, high)


@dataclass
class _InFlight:
    gen: int  # plan generation when submitted (a result from an older one is discarded)
    started: float  # controller clock
    step: int


class DeployController:
    """Observations in, one safe action per control tick out (see the module docstring)."""

    def __init__(self, checkpoint: str | Path, spec: RobotSpec | str, action_mode: str = "ee_delta",
                 sampler: SamplerSettings | Mapping[str, Any] | None = None,
                 executor: ExecutorSettings | Mapping[str, Any] | None = None,
                 worker: str = "thread", stale_after_s: float | None = None, max_latency_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, device: str = "cpu", torch_threads: int | None = 1,
                 injected_delay_s: float = 0.0, nice: int | None = 5, backend: str = "auto"):
        self.spec = load_spec(spec)
        self.action_mode = action_mode
        expected = self.spec.action_dim(action_mode)  # SpecError (a ValueError) for an unsupported mode
        self.dt = 1.0 / float(self.spec.control_hz)
        self.clock = clock
        if executor is None:
            executor = ExecutorSettings()
        elif isinstance(executor, Mapping):
            executor = ExecutorSettings.from_dict(executor)
        executor = replace(executor).check()
        if stale_after_s is not None:
            _positive("stale_after_s", stale_after_s)
        if max_latency_s is not None:
            _positive("max_latency_s", max_latency_s)
        self.worker = InferenceWorker(checkpoint, self.spec, sampler, kind=worker, device=device,
                                      torch_threads=torch_threads, injected_delay_s=injected_delay_s, nice=nice,
                                      backend=backend)
        try:
            A = self.worker.action_dim
            if A != expected:
                raise ValueError(f"checkpoint {checkpoint} predicts {A}-dim actions, but robot {self.spec.name!r} "
                                 f"takes {expected}-dim actions in action mode {action_mode!r}")
            trained = self.worker.info["metadata"].get("action_mode")
            if trained is not None and trained != action_mode:
                raise ValueError(f"checkpoint {checkpoint} was trained for action mode {trained!r}, "
                                 f"not {action_mode!r}")
        except BaseException:
            self.worker.close()
            raise
        self.A = A
        self.keys = self.worker.state_keys
        self.cameras = self.worker.cameras
        self.T = self.worker.n_obs_steps
        self.chunk_len = self.worker.chunk_len
        self._dims = {k: int(self.worker.info["state_dims"][k]) for k in self.keys}
        self.low, self.high = action_bounds(self.spec, action_mode)
        self.gripper_dim = self.A - 1 if self.spec.gripper else None
        discrete = [self.gripper_dim] if self.gripper_dim is not None else []
        self.executor = ChunkExecutor(self.A, self.dt, executor, discrete)
        self.stale_after_s = float(stale_after_s) if stale_after_s is not None else 3.0 * self.dt
        self.max_latency_s = float(max_latency_s) if max_latency_s is not None else self.chunk_len * self.dt
        self.paused = False
        self.tracker = LatencyTracker(self.dt)  # as the control loop sees it: plans the delay
        self.worker_latency = LatencyTracker(self.dt)  # submit -> result ready, in the worker's timing
        self.compute = LatencyTracker(self.dt)  # inside the sampler
        self._lock = threading.RLock()
        self._holds: Counter[str] = Counter()
        self._counts = {"ticks": 0, "observations": 0, "rejected_obs": 0, "queries": 0, "chunks": 0, "nfe": 0,
                        "fallbacks": 0, "cold": 0, "errors": 0, "discarded": 0, "non_finite_chunks": 0}
        self.last_reason = "no_observation"
        self.last_reject = ""
        self.last_error = ""
        self._dead = ""
        self._gen = 0
        self._last_now: float | None = None  # the latest tick's now (diagnostics use its time base)
        self._new_episode()

    # -- episodes ---------------------------------------------------------------------------------
    def _new_episode(self) -> None:
        self._buf: deque[tuple[float, dict[str, np.ndarray]]] = deque()
        self._start: float | None = None
        self._latest_stamp: float | None = None
        self._latest_step = 0
        self._bad = False
        self._img_shapes: dict[str, tuple[int, ...]] = {}
        self._obs_joint_pos: np.ndarray | None = None
        self._obs_gripper: float | None = None
        self._cmd_gripper: float | None = None
        self._cmd_joint_pos: np.ndarray | None = None
        self._error_at: float | None = None
        self._cleared = True  # the plan is empty (no need to clear again before the next query)
        self._clear_plan(force=True)

    def reset(self) -> None:
        """A new episode: forget the observation history, the queued plan, the sampler's
        previous chunk and the commanded gripper (latency statistics are kept: they belong
        to the machine, not the episode)."""
        with self._lock:
            self._new_episode()

    def _clear_plan(self, force: bool = False) -> None:
        """Drop the queued actions, the result of a query in flight and the sampler's
        previous chunk, once per interruption."""
        if self._cleared and not force:
            return
        self._cleared = True
        self._gen += 1
        self._inflight: _InFlight | None = None
        self.executor.reset()
        if not self._dead:
            self.worker.reset()

    # -- observations -------------------------------------------------------------------------------
    def observe(self, obs: Mapping[str, Any], stamp: float) -> bool:
        """Take one observation (single step) stamped ``stamp`` (the clock of ``tick``'s now).
        Extra keys are ignored, except ``joint_pos`` and ``gripper``, kept for holds.
        False (and a hold until the next good one) for a missing key, a wrong shape, NaN/inf
        or a stamp older than the previous observation's."""
        with self._lock:
            try:
                arrays = self._check_obs(obs, stamp)
            except ValueError as e:
                self._counts["rejected_obs"] += 1
                self.last_reject = str(e)
                self._bad = True
                return False
            stamp = float(stamp)
            self._counts["observations"] += 1
            self._bad = False
            if self._start is None:
                self._start = stamp
            self._latest_stamp = stamp
            self._latest_step = int(round((stamp - self._start) / self.dt))
            self._buf.append((stamp, {k: arrays[k] for k in self.keys + self.cameras}))
            # keep one observation at or before the oldest history target, drop what is older
            oldest = stamp - (self.T - 1) * self.dt - 0.5 * self.dt
            while len(self._buf) > 1 and self._buf[1][0] <= oldest:
                self._buf.popleft()
            if "joint_pos" in arrays:
                self._obs_joint_pos = arrays["joint_pos"]
            if "gripper" in arrays:
                self._obs_gripper = float(arrays["gripper"].reshape(-1)[0])
            return True

    def _check_obs(self, obs: Mapping[str, Any], stamp: float) -> dict[str, np.ndarray]:
        try:
            s = float(stamp)
        except (TypeError, ValueError):
            raise ValueError(f"observation stamp {stamp!r} is not a number") from None
        if not math.isfinite(s):
            raise ValueError(f"observation stamp {stamp!r} is not finite")
        if self._latest_stamp is not None and s < self._latest_stamp:
            raise ValueError(f"observation stamp {s:.6f} is older than the previous one ({self._latest_stamp:.6f})")
        missing = [k for k in self.keys + self.cameras if k not in obs]
        if missing:
            raise ValueError(f"observation lacks {missing}; the policy needs {self.keys + self.cameras}")
        out: dict[str, np.ndarray] = {}
        want = dict(self._dims)
        if "joint_pos" in obs and "joint_pos" not in want:
            want["joint_pos"] = self.spec.dof
        if "gripper" in obs and "gripper" not in want and self.spec.gripper:
            want["gripper"] = 1
        for k, d in want.items():
            try:
                a = np.asarray(obs[k], np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"observation {k!r} is not numeric") from None
            if a.ndim == 0 and d == 1:
                a = a.reshape(1)
            if a.shape != (d,):
                raise ValueError(f"observation {k!r} has shape {a.shape}, expected ({d},) (one step, not a history)")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"observation {k!r} holds NaN or inf")
            out[k] = a.copy()
        for k in self.cameras:
            a = np.asarray(obs[k])
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
                raise ValueError(f"observation {k!r} must be an (H, W, 3) uint8 image, got {a.dtype} {a.shape}")
            if self._img_shapes.setdefault(k, a.shape) != a.shape:
                raise ValueError(f"observation {k!r} changed shape within the episode: {a.shape} vs "
                                 f"{self._img_shapes[k]}")
            out[k] = a.copy()
        return out

    def history(self) -> dict[str, np.ndarray]:
        """The (n_obs_steps, ...) history the next query would get."""
        with self._lock:
            if not self._buf:
                raise RuntimeError("no observation yet")
            return self._history()

    def _history(self) -> dict[str, np.ndarray]:
        buf = self._buf
        stamps = np.array([s for s, _ in buf])
        picks = []
        for m in range(self.T - 1, -1, -1):
            target = self._latest_stamp - m * self.dt
            picks.append(int(np.argmin(np.abs(stamps - target))))  # the first observation fills the start
        return {k: np.stack([buf[i][1][k] for i in picks]) for k in self.keys + self.cameras}

    # -- the control tick -----------------------------------------------------------------------------
    def tick(self, now: float) -> TickResult:
        """One control step at ``now``: take a finished chunk, start a query if due, return
        the action for ``now`` (or a hold)."""
        with self._lock:
            now = float(now)
            self._last_now = now
            self._counts["ticks"] += 1
            self._take_result(now)
            action, reason = self._decide(now)
            a = clip_action(action, self.low, self.high) if action is not None else None
            if a is None and action is not None:
                reason = "inference_error"  # unreachable for chunks (checked on arrival): belt and braces
            held = a is None
            if held:
                a = self._hold_action()
                self._holds[reason] += 1
            else:
                if self.gripper_dim is not None:
                    self._cmd_gripper = float(a[self.gripper_dim])
                if self.action_mode == "joint_pos":
                    self._cmd_joint_pos = a[: self.spec.dof].copy()
            self.last_reason = reason
            return TickResult(a, held, reason)

    def _decide(self, now: float) -> tuple[np.ndarray | None, str]:
        if self.paused:
            self._clear_plan()
            return None, "paused"
        if self._latest_stamp is None:
            return None, "no_observation"
        if self._bad:
            self._clear_plan()
            return None, "bad_observation"
        if now - self._latest_stamp > self.stale_after_s:
            self._clear_plan()
            return None, "stale_observation"
        if self._dead:
            return None, "inference_error"
        inf = self._inflight
        if inf is not None and now - inf.started > self.max_latency_s:
            return None, "overrun"
        self._maybe_query(now)
        a = self.executor.action_at(now)
        if a is None:
            recent_error = self._error_at is not None and self._inflight is None
            return None, "inference_error" if recent_error else "underrun"
        return a, OK

    def _planned_delay(self, now: float) -> int:
        age = max(0.0, now - self._latest_stamp)
        return self.tracker.delay_steps() + int(age // self.dt)

    def _maybe_query(self, now: float) -> None:
        if self._inflight is not None or self.worker.busy:
            return
        if self._error_at is not None and now - self._error_at < self.dt:
            return  # a failed query is retried at most once per policy period
        d = self._planned_delay(now)
        if not self.executor.should_query(now, d):
            return
        try:
            ok = self.worker.submit(self._history(), self._latest_stamp, self._latest_step, d)
        except WorkerDead as e:
            self._dead = str(e)
            self.last_error = self._dead
            return
        if ok:
            self.executor.query_started(now)
            self._inflight = _InFlight(self._gen, now, self._latest_step)
            self._cleared = False
            self._counts["queries"] += 1

    def _take_result(self, now: float) -> None:
        r = self.worker.poll()
        if r is None:
            return
        inf, self._inflight = self._inflight, None
        if r.error is None:
            self.worker_latency.add(max(0.0, r.latency_s))
            self.compute.add(max(0.0, r.compute_s))
            if inf is not None:
                self.tracker.add(max(0.0, now - inf.started))
        if inf is None or inf.gen != self._gen:
            self._counts["discarded"] += 1  # asked for a plan that has been dropped since
            return
        if r.error is None and (r.chunk is None or r.chunk.shape != (self.chunk_len, self.A)
                                or not np.all(np.isfinite(r.chunk))):
            self._counts["non_finite_chunks"] += 1
            r.error = (f"chunk of shape {None if r.chunk is None else r.chunk.shape} "
                       "is not finite or has the wrong shape")
        if r.error is not None:
            self._counts["errors"] += 1
            self.last_error = r.error
            self._error_at = now
            self.executor.query_failed()
            if not self.worker.alive:
                self._dead = r.error
            return
        self._error_at = None
        self.executor.submit(r.chunk, r.t_obs, now)
        c = self._counts
        c["chunks"] += 1
        c["nfe"] += int(r.nfe)
        c["fallbacks"] += int(bool(r.fallback))
        c["cold"] += int(bool(r.cold))

    # -- holds ----------------------------------------------------------------------------------------
    def _hold_action(self) -> np.ndarray:
        a = np.zeros(self.A, np.float32)
        if self.action_mode == "joint_pos":
            n = self.spec.dof
            if self._obs_joint_pos is not None:
                a[:n] = self._obs_joint_pos
            elif self._cmd_joint_pos is not None:
                a[:n] = self._cmd_joint_pos
            else:
                a[:n] = self.spec.home
        if self.gripper_dim is not None:
            g = self._cmd_gripper if self._cmd_gripper is not None else self._obs_gripper
            a[self.gripper_dim] = 0.0 if g is None else g
        out = clip_action(a, self.low, self.high)
        if out is None:  # cannot happen (held values were checked finite); never return a NaN
            out = np.clip(np.zeros(self.A, np.float32), self.low, self.high)
        return out

    # -- parameters ------------------------------------------------------------------------------------
    def set_params(self, **kw) -> None:
        """Change sampler settings, executor settings, ``stale_after_s``, ``max_latency_s`` or
        ``paused`` at run time. Everything is validated before anything is applied
        (ValueError naming the bad parameter)."""
        with self._lock:
            bad = sorted(set(kw) - _SAMPLER_KEYS - _EXECUTOR_KEYS - _OWN_KEYS)
            if bad:
                raise ValueError(f"unknown parameter(s) {bad}; known: "
                                 f"{sorted(_SAMPLER_KEYS | _EXECUTOR_KEYS | _OWN_KEYS)}")
            s_changes = {k: v for k, v in kw.items() if k in _SAMPLER_KEYS}
            e_changes = {k: v for k, v in kw.items() if k in _EXECUTOR_KEYS}
            if s_changes:
                self.worker.check_sampler(**s_changes)  # SamplerError is a ValueError
            if e_changes:
                e_changes = coerce_settings(ExecutorSettings, e_changes)
                new_e = replace(self.executor.settings, **e_changes).check()
            if "stale_after_s" in kw:
                _positive("stale_after_s", kw["stale_after_s"])
            if "max_latency_s" in kw:
                _positive("max_latency_s", kw["max_latency_s"])
            if "paused" in kw and not isinstance(kw["paused"], (bool, np.bool_)):
                raise ValueError(f"paused must be a bool, got {kw['paused']!r}")
            # apply
            if s_changes:
                self.worker.update_sampler(**s_changes)
            if e_changes:
                mode_change = new_e.execution != self.executor.settings.execution
                self.executor.settings = new_e
                if mode_change:  # queues of one execution mean nothing to another
                    self._clear_plan(force=True)
            if "stale_after_s" in kw:
                self.stale_after_s = float(kw["stale_after_s"])
            if "max_latency_s" in kw:
                self.max_latency_s = float(kw["max_latency_s"])
            if "paused" in kw:
                self.paused = bool(kw["paused"])

    def params(self) -> dict[str, Any]:
        """Every parameter set_params accepts, with its current value."""
        with self._lock:
            return {**self.worker.sampler_settings.to_dict(), **self.executor.settings.to_dict(),
                    "stale_after_s": self.stale_after_s, "max_latency_s": self.max_latency_s, "paused": self.paused}

    # -- diagnostics --------------------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, float | int | str]:
        """Flat numbers and strings (what diagnostic_msgs/KeyValue carries). Time-dependent
        values (queue, obs_age_ms) are as of the latest tick's ``now`` (``clock()`` before any)."""
        with self._lock:
            now = self._last_now if self._last_now is not None else self.clock()
            c = self._counts
            ex = self.executor.counts
            lat = self.tracker.percentiles_ms()
            wl = self.worker_latency.percentiles_ms()
            cp = self.compute.percentiles_ms()
            nan = float("nan")
            d: dict[str, float | int | str] = {
                "mode": self.worker.sampler_settings.mode,
                "execution": self.executor.settings.execution,
                "worker": self.worker.kind,
                "action_mode": self.action_mode,
                "paused": int(self.paused),
                "latency_ms_p50": lat.get("p50", nan), "latency_ms_p95": lat.get("p95", nan),
                "latency_ms_p99": lat.get("p99", nan), "latency_ms_max": lat.get("max", nan),
                "worker_latency_ms_p50": wl.get("p50", nan), "worker_latency_ms_p99": wl.get("p99", nan),
                "compute_ms_p50": cp.get("p50", nan), "compute_ms_p99": cp.get("p99", nan),
                "delay_steps": self.tracker.delay_steps(),
                "queue": self.executor.remaining(now),
                "in_flight": int(self._inflight is not None),
                "ticks": c["ticks"], "observations": c["observations"], "rejected_obs": c["rejected_obs"],
                "queries": c["queries"], "chunks": c["chunks"],
                "nfe_per_query": c["nfe"] / c["chunks"] if c["chunks"] else 0.0,
                "fallbacks": c["fallbacks"], "fallback_rate": c["fallbacks"] / c["chunks"] if c["chunks"] else 0.0,
                "cold_chunks": c["cold"], "errors": c["errors"], "discarded": c["discarded"],
                "stale_dropped": ex["stale_dropped"], "underruns": ex["underruns"],
                "holds": sum(self._holds.values()),
                "last_reason": self.last_reason, "last_reject": self.last_reject,
                "last_error": self._dead or self.last_error,
                "obs_age_ms": (now - self._latest_stamp) * 1e3 if self._latest_stamp is not None else nan,
                "step": self._latest_step,
            }
            for r in REASONS:
                d[f"holds_{r}"] = self._holds[r]
            return d

    # -- shutting down --------------------------------------------------------------------------------------
    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> "DeployController":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _positive(name: str, value: Any) -> None:
    try:
        ok = float(value) > 0 and math.isfinite(float(value)) and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
