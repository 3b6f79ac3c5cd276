"""The safety filter: the last thing between any command and the actuators.

Pure numpy, no ROS. Every control step the robot hands it the requested joint targets
(+ gripper) and the measured joint positions; it returns targets that are safe to send
and the list of what it changed. Checks, in order:

1. e-stop latch: while engaged, hold (the measured position at engagement) and ignore
   every command until released.
2. watchdog: no command, or the newest one older than ``timeout_s`` -> hold the measured
   position at the moment the command went stale (never keep moving toward an old target).
3. non-finite values (NaN / inf) or a wrongly shaped request -> the whole command is
   rejected and the last safe target is held.
4. joint limits shrunk by ``margin`` -> clamp (``limit_policy="clamp"``, default) or reject
   the whole command (``"reject"``).
5. acceleration: the per-step change of a joint may grow by at most ``max_acceleration *
   dt**2`` over the previous step's change; braking is never limited (a stop must not be
   delayed, and the target is never overshot).
6. velocity: the per-step change of a joint target is at most ``max_velocity * velocity_scale
   * dt`` (spec ``max_velocity``).
7. workspace: if an ``fk`` callable is given, the tool position of the target must lie in the
   spec's workspace box, grown by ``workspace_tolerance`` (default 1 cm: the IK's accuracy,
   so targets the twin's IK places on the box boundary pass); a step leaving it is shortened to the last
   point inside (bisection on the straight joint-space segment from the previous target).
   From outside the box only moves that bring the tool closer to it are allowed.

Holds (e-stop, watchdog) go straight to the hold position: they only ever reduce motion, so
no rate limit applies to them. Targets that need no change pass through bit-identical, so
a filtered twin behaves exactly like an unfiltered one for in-limit commands.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from robot_rl.spec import RobotSpec

# event names (also the keys of SafetyFilter.counters that count them)
ESTOP = "estop"
WATCHDOG = "watchdog"
NO_COMMAND = "no_command"
NONFINITE = "rejected_nonfinite"
BAD_SHAPE = "rejected_shape"
LIMIT_REJECT = "rejected_limit"
JOINT_LIMIT = "clamped_joint_limit"
GRIPPER_LIMIT = "clamped_gripper"
ACCELERATION = "clamped_acceleration"
VELOCITY = "clamped_velocity"
WORKSPACE = "clamped_workspace"

COUNTER_KEYS = ("steps", "passed", "held", "rejected", ESTOP, "estop_engagements", WATCHDOG,
                "watchdog_trips", NO_COMMAND, NONFINITE, BAD_SHAPE, LIMIT_REJECT, JOINT_LIMIT,
                GRIPPER_LIMIT, ACCELERATION, VELOCITY, WORKSPACE)


@dataclass
class SafetyResult:
    """What the filter lets through for one control step."""
    q: np.ndarray  # safe joint targets (float64, spec order)
    gripper: float | None  # safe gripper command 0..1 (None: robot without gripper)
    events: list[str] = field(default_factory=list)  # what was clamped / rejected / held
    held: bool = False  # holding (estop, watchdog, no command)
    rejected: bool = False  # the request was rejected as a whole

    @property
    def modified(self) -> bool:
        """True when the output differs from the request (anything clamped, rejected or held)."""
        return bool(self.events)


class SafetyFilter:
    """Joint/velocity/acceleration/workspace limits, NaN rejection, watchdog and e-stop.

    ``dt`` is the control period (default ``1 / spec.control_hz``); ``now`` arguments are
    seconds on any monotonic clock as long as command times use the same one
    (``time.monotonic()`` by default).
    """

    def __init__(self, spec: RobotSpec, dt: float | None = None, *, margin: float = 0.01,
                 velocity_scale: float = 1.0, max_acceleration: float | Sequence[float] | None = None,
                 timeout_s: float | None = 0.5, fk: Callable[[np.ndarray], np.ndarray] | None = None,
                 workspace: Sequence[Sequence[float]] | None = None, workspace_tolerance: float = 0.01,
                 limit_policy: str = "clamp"):
        if limit_policy not in ("clamp", "reject"):
            raise ValueError(f"limit_policy must be 'clamp' or 'reject', got {limit_policy!r}")
        self.spec = spec
        self.dof = spec.dof
        self.dt = float(dt if dt is not None else 1.0 / spec.control_hz)
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        lower, upper = np.array(spec.lower, float), np.array(spec.upper, float)
        if np.any(2 * margin >= upper - lower) or margin < 0:
            raise ValueError(f"joint margin {margin} must be >= 0 and leave a non-empty range for every joint")
        self.margin = float(margin)
        self.lower, self.upper = lower + margin, upper - margin
        if velocity_scale <= 0:
            raise ValueError(f"velocity_scale must be > 0, got {velocity_scale}")
        self.max_step = np.array(spec.max_velocity, float) * velocity_scale * self.dt
        if max_acceleration is None:
            self.max_dstep = None
        else:
            acc = np.broadcast_to(np.asarray(max_acceleration, float), (self.dof,)).copy()
            if np.any(acc <= 0):
                raise ValueError(f"max_acceleration must be > 0, got {max_acceleration}")
            self.max_dstep = acc * self.dt ** 2
        self.timeout_s = timeout_s
        self.fk = fk
        ws = spec.workspace if workspace is None else workspace
        self.ws_lo = np.asarray(ws[0], float) - workspace_tolerance
        self.ws_hi = np.asarray(ws[1], float) + workspace_tolerance
        if np.any(self.ws_lo >= self.ws_hi):
            raise ValueError(f"workspace tolerance {workspace_tolerance} leaves an empty workspace")
        self.limit_policy = limit_policy
        self.has_gripper = spec.gripper is not None
        self.counters: dict[str, int] = {k: 0 for k in COUNTER_KEYS}
        self.last_events: list[str] = []
        self._q = np.array(spec.home, float)  # last safe target
        self._step = np.zeros(self.dof)  # last per-step change of the target
        self._grip: float | None = 0.0 if self.has_gripper else None
        self._hold: np.ndarray | None = None  # latched hold position (watchdog / no command)
        self._estop = False
        self._estop_q: np.ndarray | None = None

    # -- state -----------------------------------------------------------------------------
    def reset(self, q_measured, gripper: float | None = None) -> None:
        """Start from the measured position (after connect / a reset): targets = measured,
        no motion, watchdog clear. The e-stop latch is kept."""
        q = np.asarray(q_measured, float).reshape(self.dof)
        self._q = np.clip(q, self.lower, self.upper) if np.all(np.isfinite(q)) else np.array(self.spec.home, float)
        self._step = np.zeros(self.dof)
        if self.has_gripper:
            self._grip = float(np.clip(gripper if gripper is not None and np.isfinite(gripper) else 0.0, 0, 1))
        self._hold = None
        if self._estop:
            self._estop_q = self._q.copy()

    @property
    def last_target(self) -> np.ndarray:
        return self._q.copy()

    @property
    def last_gripper(self) -> float | None:
        return self._grip

    @property
    def estopped(self) -> bool:
        return self._estop

    def engage_estop(self, q_measured=None) -> None:
        """Latch the e-stop: from now on hold the measured position (or the last safe target)."""
        if not self._estop:
            self.counters["estop_engagements"] += 1
        self._estop = True
        self._estop_q = self._safe_hold_position(q_measured)

    def release_estop(self, q_measured=None) -> None:
        """Release the latch; the robot keeps holding until a fresh command arrives."""
        if self._estop:
            self._estop = False
            self._estop_q = None
            self._q = self._safe_hold_position(q_measured)
            self._step = np.zeros(self.dof)
            self._hold = self._q.copy()

    def telemetry(self) -> dict[str, float | int | str]:
        """Counters plus the current state, for /diagnostics."""
        return {**self.counters, "estop_engaged": int(self._estop), "holding": int(self._hold is not None),
                "last_events": ",".join(self.last_events)}

    # -- the filter ------------------------------------------------------------------------
    def __call__(self, q_request, gripper_request=None, q_measured=None, *, now: float | None = None,
                 command_time: float | None = None) -> SafetyResult:
        """Filter one control step.

        q_request: requested joint targets (spec order), or None for "no command".
        gripper_request: 0 (open) .. 1 (closed), None keeps the last gripper target.
        q_measured: measured joint positions (used for holds).
        command_time: when the request was issued (same clock as ``now``); None = fresh.
        """
        c = self.counters
        c["steps"] += 1
        now = time.monotonic() if now is None else now
        if self._estop:
            return self._finish(self._hold_result(self._estop_q, [ESTOP]))
        if q_request is None:
            return self._finish(self._go_hold(q_measured, NO_COMMAND))
        if (self.timeout_s is not None and command_time is not None
                and now - command_time > self.timeout_s):
            return self._finish(self._go_hold(q_measured, WATCHDOG))
        try:
            q = np.asarray(q_request, dtype=float)
        except (TypeError, ValueError):
            return self._finish(self._reject(BAD_SHAPE))
        if q.shape != (self.dof,):
            return self._finish(self._reject(BAD_SHAPE))
        g = None
        if self.has_gripper and gripper_request is not None:
            try:
                g = float(gripper_request)
            except (TypeError, ValueError):
                return self._finish(self._reject(BAD_SHAPE))
        if not np.all(np.isfinite(q)) or (g is not None and not np.isfinite(g)):
            return self._finish(self._reject(NONFINITE))

        events: list[str] = []
        # joint limits (with margin)
        out = (q < self.lower) | (q > self.upper)
        if out.any():
            if self.limit_policy == "reject":
                return self._finish(self._reject(LIMIT_REJECT))
            q = np.where(out, np.clip(q, self.lower, self.upper), q)
            events.append(JOINT_LIMIT)
        # acceleration: the step may grow by at most max_dstep; braking is free
        step = q - self._q
        if self.max_dstep is not None:
            prev = self._step
            same = np.sign(step) == np.sign(prev)
            allowed = np.where(same, np.abs(prev) + self.max_dstep, self.max_dstep)
            over = np.abs(step) > allowed
            if over.any():
                step = np.where(over, np.sign(step) * allowed, step)
                q = np.where(over, self._q + step, q)
                events.append(ACCELERATION)
        # velocity
        over = np.abs(step) > self.max_step
        if over.any():
            step = np.where(over, np.sign(step) * self.max_step, step)
            q = np.where(over, self._q + step, q)
            events.append(VELOCITY)
        # workspace
        if self.fk is not None:
            q2 = self._workspace(q)
            if q2 is not q:
                q = q2
                events.append(WORKSPACE)
        # gripper
        if g is not None:
            if g < 0.0 or g > 1.0:
                g = min(1.0, max(0.0, g))
                events.append(GRIPPER_LIMIT)
            self._grip = g
        self._step = q - self._q
        self._q = np.array(q, dtype=float)
        self._hold = None
        for e in events:
            c[e] += 1
        if not events:
            c["passed"] += 1
        return self._finish(SafetyResult(self._q.copy(), self._grip, events))

    # -- helpers -----------------------------------------------------------------------------
    def _finish(self, r: SafetyResult) -> SafetyResult:
        self.last_events = list(r.events)
        return r

    def _safe_hold_position(self, q_measured) -> np.ndarray:
        if q_measured is not None:
            q = np.asarray(q_measured, float).reshape(-1)
            if q.shape == (self.dof,) and np.all(np.isfinite(q)):
                return np.clip(q, self.lower, self.upper)
        return self._q.copy()

    def _hold_result(self, q_hold: np.ndarray, events: list[str]) -> SafetyResult:
        self.counters["held"] += 1
        for e in events:
            self.counters[e] += 1
        self._q = q_hold.copy()
        self._step = np.zeros(self.dof)  # the next move starts from rest
        return SafetyResult(self._q.copy(), self._grip, events, held=True)

    def _go_hold(self, q_measured, why: str) -> SafetyResult:
        if self._hold is None:  # latch the position at the moment the command went away
            self._hold = self._safe_hold_position(q_measured)
            if why == WATCHDOG:
                self.counters["watchdog_trips"] += 1
        return self._hold_result(self._hold, [why])

    def _reject(self, why: str) -> SafetyResult:
        self.counters["rejected"] += 1
        self.counters[why] += 1
        self._step = np.zeros(self.dof)
        return SafetyResult(self._q.copy(), self._grip, [why], rejected=True)

    def _ws_violation(self, q: np.ndarray) -> float:
        p = np.asarray(self.fk(q), float).reshape(3)
        if not np.all(np.isfinite(p)):
            return np.inf
        return float(np.sum(np.maximum(self.ws_lo - p, 0) + np.maximum(p - self.ws_hi, 0)))

    def _workspace(self, q: np.ndarray) -> np.ndarray:
        """q itself if its tool position is inside the workspace, else a safe replacement."""
        v = self._ws_violation(q)
        if v == 0.0:
            return q
        v0 = self._ws_violation(self._q)
        if v0 > 0.0:
            # already outside (started there): only allow moves that reduce the violation
            return q.copy() if v < v0 else self._q.copy()
        lo, hi = 0.0, 1.0  # fraction of the step that is known inside / outside
        d = q - self._q
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if self._ws_violation(self._q + mid * d) == 0.0:
                lo = mid
            else:
                hi = mid
        return self._q + lo * d
