"""System identification: fit the twin's arm dynamics to what a robot did.

Three steps, each usable on its own::

    plan = excitation_plan(spec, seconds=48, seed=0)        # joint-position targets at the control rate
    excite(robot, plan, "sysid.zarr")                        # through the Robot interface + its safety filter
    res = fit("sysid.zarr", robot="so101")                   # mujoco.sysid + CMA-ES, intervals, flags
    res.dynamics.save(default_dynamics_path("so101", "my_arm"))
    apply_dynamics(env.twin, load_dynamics(path))           # or RobotEnv(..., calibration=path)

**Excitation.** Every segment starts and ends at rest at the plan's centre (the spec's home
pose), stays ``margin`` inside the joint limits and below ``velocity_fraction`` of the
spec's joint speed limits, so the safety filter never has to change a target (what was
commanded is what was recorded). Three kinds: small multi-sines (gains, damping, armature),
fast-ramp steps (latency, force limits) and slow triangle ramps (dry friction).

**Model.** The twin's position servos obey, per arm joint (links gravity-compensated)::

    M(q) qdd = clip(kp (u - q) - kv qd, +-forcerange) - damping qd - frictionloss sign(qd)

``M`` is the links' inertia (known: the twin's MJCF) plus the armature. From positions alone
only ``M/kp``, ``(kv + damping)/kp`` and ``frictionloss/kp`` are seen; the split between
kp and armature is carried by the (known) link inertia, which changes with the pose. Hence:

* ``kp`` scales kp *and kv together* (a servo's gain; the ratio kv/kp is the MJCF's), as
  ``TwinParams.actuator_gain_scale`` does. Fitting ``kv`` as well frees kv/kp: kv and
  joint damping then enter the model only as their sum and are flagged as collinear.
* A saturated actuator (``|force| = forcerange``) no longer depends on kp: when most
  samples are saturated kp is flagged; ``forcerange`` is flagged when the data never
  reaches it.

**Fit.** Open loop in the recorded targets, from the recorded initial state, per segment,
on the recording's clock: each command replayed at its recorded stamp and each measurement
compared at its stamp (``Recording.steps``; a twin's stamps are the even grid). Stale reads
(a repeated stamp) and the samples just after a timing fault are not compared
(``Recording.valid``); each sample is weighted by its expected error, resolution plus timing
jitter times speed (``_sample_weights``); and where the readings are quantised
(``encoder_quantum``, found from the data) the twin's motion is compared as an encoder with
one count of hysteresis reads it (``_encoder_reading``): unmodelled, that half count of lag
in the direction of motion reads as dry friction.
The action delay (whole control steps) is an exact outer grid search (a short local fit per
candidate delay, the best one kept and re-checked against its neighbours after the full
fit). Within it, the latency is then fitted as a continuous number of physics steps together
with the other parameters (``_lm_with_delay``; a fractional delay lands a command part-way
through a physics step, ``ArmModel.controls``): a bus latency is no whole number of steps,
and ``kp x latency`` is a velocity term, so a millisecond of latency error reads as
``kp x 1 ms`` of joint damping (0.066 N m s on the SO-101: 66 % of its nominal damping).
The continuous parameters are fitted by ``mujoco.sysid.optimize`` (MuJoCo's own
Gauss-Newton / Levenberg-Marquardt, ``mujoco.minimize.least_squares``), with
``mujoco.sysid`` rollouts (``ModelSequences``, ``build_residual_fn``) and intervals from
``mujoco.sysid.calculate_intervals`` (J^T J inverse scaled by the residual variance).
Gauss-Newton is local: dry friction and force saturation make the cost kinked, and a
servo far from nominal can leave it in a poor basin. So when the local fit stalls (it
removed less than half of the nominal cost, or ended on a bound) a short CMA-ES run
(``cma``, in log-scale coordinates, batched rollouts) from nominal gives a global start
and Gauss-Newton is run again from its best point; the better of the two is kept.

**Intervals** come from the Jacobian with the latency's column included (what trades against
the latency is as uncertain as the latency), with a Newey-West covariance (Bartlett kernel
over ``HAC_SECONDS`` of samples within each segment) instead of the white-noise
``sigma^2 (J^T J)^-1`` where that is wider: model error -- timing the twin lacks, backlash --
leaves residuals correlated over a servo's settling time, and white-noise intervals then
claim more than the data holds.

**Flags.** A parameter is reported ``identifiable: false`` with the reason, never as a clean
number, when: its 95 % interval is wide (half-width > 25 % of the value; for absolute
parameters, and an absolute floor), its |correlation| with another fitted parameter
exceeds 0.95, it is ``forcerange`` and the fitted twin never saturates on the data, or it
is ``kp``/``kv`` and the actuators are saturated in more than a quarter of the samples, or
(split half) refitted on the first and on the second half of every segment's samples its
two estimates differ by more than twice its interval's half-width (a 95 % test) and more
than ``SPLIT_TOL`` of the value: model error that the white-noise intervals do not show.
Treat the intervals as honest about noise and correlated model error, not about bias a
model error leaves consistently in both halves; the flags are the conservative part.

The result is written as ``<calibration_dir>/<robot>/<id>/dynamics.yaml`` (the motor
calibration's root, ``$ROBOT_RL_CALIBRATION_DIR`` or ``~/.cache/robot_rl/calibration``).
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

DEFAULT_PARAMS = ("kp", "damping", "armature", "frictionloss", "delay")
CV_LIMIT = 0.25  # relative interval half-width beyond which a parameter is not identified
CORR_LIMIT = 0.95
SAT_KP_LIMIT = 0.25  # fraction of saturated samples beyond which kp says little
SAT_MIN = 0.005  # fraction of saturated samples below which forcerange was never reached
SPLIT_TOL = 0.10  # relative disagreement between the two halves of the data beyond which a value is not trusted
HAC_SECONDS = 0.5  # s: residuals of a servo's response are correlated over about its settling time
MIN_MOTION = 0.02  # rad: a recording whose joints moved less has no excitation
TASK = "sysid"


class SysidError(ValueError):
    """A recording, a parameter list or a fit that system identification cannot use."""


@dataclass(frozen=True)
class ParamDef:
    name: str
    kind: str  # "scale": x nominal; "abs": absolute value
    lo: float
    hi: float
    unit: str
    abs_floor: float = 0.0  # absolute interval half-width always accepted (abs params near 0)


PARAMS: dict[str, ParamDef] = {
    "kp": ParamDef("kp", "scale", 0.2, 5.0, "x nominal actuator kp (kv scaled with it unless kv is fitted)"),
    "kv": ParamDef("kv", "scale", 0.05, 20.0, "x nominal actuator kv"),
    "damping": ParamDef("damping", "scale", 0.02, 40.0, "x nominal joint damping"),
    "armature": ParamDef("armature", "scale", 0.05, 20.0, "x nominal joint armature"),
    "frictionloss": ParamDef("frictionloss", "abs", 0.0, 3.0, "N m dry friction per arm joint", abs_floor=0.01),
    "forcerange": ParamDef("forcerange", "scale", 0.002, 2.0, "x nominal actuator force limit"),
    "mass": ParamDef("mass", "scale", 0.2, 5.0, "x nominal arm link masses and inertias"),
    "payload": ParamDef("payload", "abs", 0.0, 2.0, "kg added to the hand", abs_floor=0.005),
}
ALL_PARAMS = tuple(PARAMS) + ("delay",)


# -- excitation -----------------------------------------------------------------------------
@dataclass
class Segment:
    """One excitation segment: joint-position targets (steps x dof) at the control rate."""
    kind: str  # multisine | steps | ramps
    targets: np.ndarray
    seed: int


def _taper(n: int, k: int) -> np.ndarray:
    w = np.ones(n)
    if k > 0 and 2 * k < n:
        r = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        w[:k], w[-k:] = r, r[::-1]
    return w


def _plan_bounds(spec, center, margin, amplitude):
    lo, hi = np.asarray(spec.lower) + margin, np.asarray(spec.upper) - margin
    if np.any(lo >= hi):
        raise SysidError(f"margin {margin} rad leaves no room inside the joint limits of {spec.name}")
    c = np.clip(center, lo, hi)
    amp = np.minimum(np.minimum(c - lo, hi - c), amplitude)
    return c, np.maximum(amp, 0.0)


def excitation_plan(spec, seconds: float = 48.0, seed: int = 0, *, margin: float = 0.2,
                    amplitude: float = 0.25, velocity_fraction: float = 0.6, hold_s: float = 0.5,
                    segment_s: float = 8.0, kinds: Sequence[str] = ("multisine", "steps", "ramps"),
                    center: Sequence[float] | None = None) -> list[Segment]:
    """Segments cycling through `kinds` for about `seconds` in all (deterministic in `seed`).

    Targets stay inside ``[lower + margin, upper - margin]``, within `amplitude` rad of the
    centre (the spec's home pose), and below ``velocity_fraction * max_velocity`` per
    control step. Each segment holds the centre for `hold_s` first and ends there at rest."""
    for k in kinds:
        if k not in ("multisine", "steps", "ramps"):
            raise SysidError(f"unknown excitation kind {k!r}; kinds: multisine, steps, ramps")
    if not 0 < velocity_fraction <= 1:
        raise SysidError(f"velocity_fraction must be in (0, 1], got {velocity_fraction}")
    dt = 1.0 / spec.control_hz
    c, amp = _plan_bounds(spec, np.asarray(spec.home if center is None else center, float), margin, amplitude)
    vmax = velocity_fraction * np.asarray([j.max_velocity for j in spec.joints])
    n_seg = max(1, int(round(seconds / segment_s)))
    ss = np.random.SeedSequence(seed)
    out = []
    for i, child in enumerate(ss.spawn(n_seg)):
        kind = kinds[i % len(kinds)]
        rng = np.random.default_rng(child)
        seg_seed = int(child.generate_state(1)[0])
        x = {"multisine": _multisine, "steps": _steps, "ramps": _ramps}[kind](rng, segment_s, dt, amp, vmax)
        hold = np.zeros((max(1, int(round(hold_s / dt))), len(c)))
        x = np.concatenate([hold, x, hold[:max(2, len(hold) // 2)]])
        out.append(Segment(kind, c + x, seg_seed))
    return out


def _rate_limit(x: np.ndarray, vmax: np.ndarray, dt: float) -> np.ndarray:
    """`x` (offsets from the centre) followed at most `vmax` per second, from and back to 0."""
    y = np.empty_like(x)
    prev = np.zeros(x.shape[1])
    for k in range(len(x)):
        prev = y[k] = prev + np.clip(x[k] - prev, -vmax * dt, vmax * dt)
    n_back = int(np.ceil(np.max(np.abs(prev) / (vmax * dt)))) if np.any(prev != 0) else 0
    if n_back:
        back = np.empty((n_back, x.shape[1]))
        for k in range(n_back):
            prev = back[k] = prev + np.clip(-prev, -vmax * dt, vmax * dt)
        y = np.concatenate([y, back])
    return y


def _multisine(rng, seconds, dt, amp, vmax):
    n = int(round(seconds / dt))
    t = np.arange(n) * dt
    grid = np.array([0.25, 0.4, 0.6, 0.9, 1.3, 1.8, 2.5, 3.3])
    x = np.zeros((n, len(amp)))
    for j in range(len(amp)):
        f = np.sort(rng.choice(grid, 4, replace=False)) * rng.uniform(0.95, 1.05)
        ph = rng.uniform(0, 2 * np.pi, 4)
        sig = (np.sin(2 * np.pi * f[None] * t[:, None] + ph) / f).sum(1)
        sig *= _taper(n, int(round(0.6 / dt)))
        s = amp[j] / max(np.abs(sig).max(), 1e-9)
        v = np.abs(np.diff(sig)).max() / dt
        s = min(s, vmax[j] / max(v, 1e-9))
        x[:, j] = sig * s
    return _rate_limit(x, vmax, dt)  # (a no-op but for rounding: the scaling respects vmax)


def _steps(rng, seconds, dt, amp, vmax):
    n = int(round(seconds / dt))
    x = np.zeros((n, len(amp)))
    for j in range(len(amp)):
        k = 0
        while k < n:
            dwell = int(rng.integers(int(0.5 / dt), int(1.1 / dt)))
            level = rng.uniform(-1, 1) * amp[j] if k + dwell < n - int(0.5 / dt) else 0.0
            x[k:k + dwell, j] = level
            k += dwell
        x[-int(0.5 / dt):, j] = 0.0
    return _rate_limit(x, vmax, dt)


def _ramps(rng, seconds, dt, amp, vmax):
    n = int(round(seconds / dt))
    t = np.arange(n) * dt
    x = np.zeros((n, len(amp)))
    for j in range(len(amp)):
        speed = min(rng.uniform(0.04, 0.25), 0.5 * vmax[j])
        a = min(amp[j], speed * seconds / 4.5)
        period = 4 * a / speed if a > 0 else 1.0
        ph = (t / period) % 1.0
        tri = np.where(ph < 0.25, 4 * ph, np.where(ph < 0.75, 2 - 4 * ph, 4 * ph - 4))
        x[:, j] = a * tri
    return _rate_limit(x, vmax, dt)


# -- excitation through a robot --------------------------------------------------------------
def _measure_and_act(robot, action: np.ndarray):
    """(observation of the state the command meets, its stamp, ActResult). A twin observes
    before it steps; a hardware driver measures inside ``act`` (read, then write), so its
    observation after ``act`` is the state the command met (``measured_at`` is its stamp)."""
    if getattr(robot, "simulated", False):
        import inspect
        takes_images = "images" in inspect.signature(robot.observe).parameters
        obs = robot.observe(images=False) if takes_images else robot.observe()  # no camera render
        stamp = float(robot.time)
        res = robot.act(action, mode="joint_pos")
        return obs, stamp, res
    res = robot.act(action, mode="joint_pos")
    obs = robot.observe()
    stamp = robot.measured_at if robot.measured_at is not None else time.time()
    return obs, float(stamp), res


def excite(robot, plan: Sequence[Segment], out: str | os.PathLike, *, seed: int = 0, driver: str = "",
           settle_s: float = 1.0, approach_speed: float = 0.3, progress: bool = False) -> dict[str, Any]:
    """Run `plan` on `robot` (a ``robot_rl.runtime.robot.Robot``; connected here if needed) at
    its control rate and record each segment as one episode of the store at `out`
    (``action`` = the joint targets sent after the safety filter + the gripper command,
    ``joint_pos`` / ``joint_vel`` the measured state each command met). Hardware is paced
    in real time; a twin runs as fast as it steps. Returns a summary."""
    from robot_rl.data.store import EpisodeStore
    if not plan:
        raise SysidError("empty excitation plan")
    if not robot.is_connected:
        robot.connect()
    spec = robot.spec
    hz = float(spec.control_hz)
    dt = 1.0 / hz
    grip = [0.0] if spec.gripper is not None else []
    realtime = not getattr(robot, "simulated", False)
    tick = [time.monotonic()]

    def pace():
        if realtime:
            tick[0] += dt
            d = tick[0] - time.monotonic()
            if d > 0:
                time.sleep(d)
            elif d < -5 * dt:
                tick[0] = time.monotonic()

    def send(q):
        _, _, res = _measure_and_act(robot, np.r_[q, grip])
        pace()
        return res

    # to the plan's centre, slowly, then settle there
    center = plan[0].targets[0]
    q = np.asarray(robot.observe()["joint_pos"], float)
    n = int(np.ceil(np.abs(center - q).max() / (approach_speed * dt))) + 1
    for a in np.linspace(q, center, n)[1:]:
        send(a)
    for _ in range(int(settle_s * hz)):
        send(center)
    store = EpisodeStore.open_or_create(out, spec)
    events: dict[str, int] = {}
    steps = 0
    try:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(s.targets) for s in plan), desc=f"sysid excite {spec.name}", unit="step",
                   disable=not progress)
        for i, seg in enumerate(plan):
            ep = store.start_episode(task=TASK, source="expert", fps=hz, extra={
                "sysid": {"kind": seg.kind, "segment": i, "seed": int(seed), "segment_seed": seg.seed,
                          "robot": spec.name, "driver": driver or type(robot).__name__, "action_mode": "joint_pos"}})
            for target in seg.targets:
                obs, stamp, res = _measure_and_act(robot, np.r_[target, grip])
                for e in res.events:
                    events[e] = events.get(e, 0) + 1
                if res.rejected or (res.held and "latency" not in res.events) or any(
                        e not in ("latency",) and "clamp" in e for e in res.events):
                    ep.discard()
                    raise SysidError(f"the robot refused an excitation target ({res.events}); check the "
                                     f"safety settings and that the arm is not e-stopped or faulted")
                # the target as commanded (the plan is inside every limit, so the filter passes
                # it unchanged); res.q is what reaches the actuators now, which on a twin with
                # action latency is an older command
                a = np.r_[target, grip]
                ep.add_step({"joint_pos": np.asarray(obs["joint_pos"], np.float32),
                             "joint_vel": np.asarray(obs["joint_vel"], np.float32),
                             "action": a.astype(np.float32)}, timestamp=stamp)
                steps += 1
                bar.update(1)
                pace()
            ep.commit(success=True, extra={"events": dict(events)})
        bar.close()
        store.flush()
    finally:
        store.close()
    return {"out": str(out), "segments": len(plan), "steps": steps, "events": events,
            "kinds": [s.kind for s in plan], "seconds": steps * dt}


# -- recordings ------------------------------------------------------------------------------
@dataclass
class Recording:
    robot: str
    control_hz: float
    targets: list[np.ndarray]  # per segment (T, dof): joint targets sent
    q: list[np.ndarray]  # per segment (T, dof): measured joint positions
    kinds: list[str]
    gripper: list[np.ndarray]  # per segment (T,): gripper command (0 open .. 1 closed)
    path: str = ""
    qd: list[np.ndarray] = field(default_factory=list)  # per segment (T, dof): measured joint velocities
    t: list[np.ndarray] = field(default_factory=list)  # per segment (T,): stamp of each measurement (s)

    def subset(self, idx: Iterable[int]) -> "Recording":
        idx = list(idx)
        return Recording(self.robot, self.control_hz, [self.targets[i] for i in idx], [self.q[i] for i in idx],
                         [self.kinds[i] for i in idx], [self.gripper[i] for i in idx], self.path,
                         [self.qd[i] for i in idx] if self.qd else [], [self.t[i] for i in idx] if self.t else [])

    def _stamps(self, i: int) -> np.ndarray | None:
        """Segment `i`'s stamps relative to its first sample, with the stale ones (a read that
        failed keeps the previous measurement and its stamp) re-timed evenly between the
        good stamps around them; None where the stamps are missing or unusable."""
        n = len(self.q[i])
        if not self.t or len(self.t[i]) != n or n < 2:
            return None
        rel = np.asarray(self.t[i], float) - float(self.t[i][0])
        dt = 1.0 / self.control_hz
        if not np.all(np.isfinite(rel)) or np.any(np.diff(rel) < 0) or not (
                0.5 * (n - 1) * dt <= rel[-1] <= 2.0 * (n - 1) * dt):
            return None
        stale = self.stale(i)
        if np.any(stale):
            good = np.flatnonzero(~stale)
            rel = rel.copy()
            rel[stale] = np.interp(np.flatnonzero(stale), good, rel[good])
        return rel

    def stale(self, i: int) -> np.ndarray:
        """Samples of segment `i` whose stamp repeats the previous one: no new measurement."""
        n = len(self.q[i])
        out = np.zeros(n, bool)
        if self.t and len(self.t[i]) == n:
            out[1:] = np.diff(np.asarray(self.t[i], float)) < 1e-6
        return out

    def steps(self, i: int, h: float, n_sub: int) -> np.ndarray:
        """Physics step (of `h` s) at which each sample of segment `i` was measured and its
        command sent, from the segment's first sample: the recorded stamps where they are
        usable (a real-time loop is not an even grid: sleep jitter, a loaded machine), else
        the even control grid (``k * n_sub``)."""
        n = len(self.q[i])
        rel = self._stamps(i)
        if rel is None:
            return np.arange(n) * n_sub
        k = np.rint(rel / h).astype(int) - np.arange(n)  # strictly increasing steps
        return np.maximum.accumulate(k) + np.arange(n)

    def valid(self, i: int, settle_s: float = 0.3) -> np.ndarray:
        """Samples of segment `i` to compare with the twin: not stale, not within `settle_s`
        after a timing fault (a stale read, or a gap of more than two control periods: when
        the commands really took effect there is not known), not off the control grid by
        more than a quarter period."""
        n = len(self.q[i])
        ok = np.ones(n, bool)
        rel = self._stamps(i)
        if rel is None:
            return ok
        dt = 1.0 / self.control_hz
        stale = self.stale(i)
        fault = stale.copy()
        fault[1:] |= np.diff(rel) > 2.0 * dt
        for k in np.flatnonzero(fault):
            ok[k:][rel[k:] <= rel[k] + settle_s] = False
        # a sample a quarter period off the grid: the stamp (taken after the reply) may be late
        # on the moment the state was read; not compared, its command still replayed at its stamp
        ok[1:] &= np.abs(np.diff(rel) - dt) <= 0.25 * dt
        ok[0] = True
        return ok


def load_recording(path: str | os.PathLike, robot: str | None = None) -> Recording:
    """The sysid episodes of an episode store (``robot`` checked against the store's)."""
    from robot_rl.data.store import EpisodeStore, StoreError
    p = Path(path)
    try:
        store = EpisodeStore.open(p)
    except (StoreError, FileNotFoundError, OSError) as e:
        raise SysidError(f"cannot read recording {p}: {e}") from None
    try:
        spec = store.spec
        if robot is not None and spec.name != robot:
            raise SysidError(f"recording {p} is of robot {spec.name!r}, not {robot!r}")
        rec = Recording(spec.name, float(spec.control_hz), [], [], [], [], str(p))
        for m in store.episodes_meta():
            sy = (m.get("extra") or {}).get("sysid")
            if m["task"] != TASK or not isinstance(sy, dict):
                continue
            ep = store.episode(m["index"], keys=["joint_pos", "joint_vel", "action", "timestamp"])
            a = np.asarray(ep["action"], float)
            rec.targets.append(a[:, :spec.dof])
            rec.gripper.append(a[:, spec.dof] if a.shape[1] > spec.dof else np.zeros(len(a)))
            rec.q.append(np.asarray(ep["joint_pos"], float))
            rec.qd.append(np.asarray(ep["joint_vel"], float))
            rec.t.append(np.asarray(ep["timestamp"], float))
            rec.kinds.append(str(sy.get("kind", "?")))
    finally:
        store.close()
    if not rec.targets:
        raise SysidError(f"{p} holds no sysid episodes (record them with `robot-rl sysid excite`)")
    return rec


def encoder_quantum(rec: Recording) -> np.ndarray:
    """Per joint: the resolution of the position readings when they are quantised (an
    encoder's count, e.g. 2 pi / 4096 rad), found from the recorded values themselves (the
    distinct readings sit on a lattice); 0 where they are not (a simulated twin)."""
    q = np.concatenate(rec.q)
    out = np.zeros(q.shape[1])
    for j in range(q.shape[1]):
        d = np.diff(np.unique(np.round(q[:, j], 7)))
        if len(d) < 20:
            continue
        m = float(np.median(d))
        k = d / max(m, 1e-12)
        if m > 1e-5 and np.mean(np.abs(k - np.rint(k)) < 0.05) > 0.95:
            out[j] = m
    return out


def _sample_weights(rec: Recording, i: int, quantum: np.ndarray) -> np.ndarray:
    """(T, dof) weights 1 / sd of each sample of segment `i`: a reading is off by its
    resolution (quantisation, noise) and by where the joint was when it was really read --
    the moment of a sample is uncertain by the loop's timing jitter (from the stamps, at
    least 5 % of a period), which at speed v is v * sd_t of position. Relative to the
    weight of a sample at rest."""
    q = np.asarray(rec.q[i], float)
    rel = rec._stamps(i)
    dt = 1.0 / rec.control_hz
    t = np.arange(len(q)) * dt if rel is None else rel
    jit = 0.0
    if rel is not None and len(rel) > 4:
        d = np.diff(rel) - dt
        jit = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
    sd_t = max(jit, 0.05 * dt)
    sd_q = np.maximum(np.asarray(quantum, float) / math.sqrt(12), 2e-4)
    v = np.gradient(q, t, axis=0) if len(q) > 2 else np.zeros_like(q)
    sd = np.sqrt(sd_q ** 2 + (v * sd_t) ** 2)
    return sd_q / sd


def _encoder_reading(pred: np.ndarray, first: np.ndarray, half: np.ndarray) -> np.ndarray:
    """What a quantised encoder with one count of hysteresis reads along the predicted
    positions `pred` (rows after the first sample; `first` the first reading): the reading
    moves only once the joint has moved half a count past it (a play operator of half-width
    `half`). The rounding to counts is left out (zero-mean)."""
    if not np.any(half > 0):
        return pred
    out = np.empty_like(pred)
    b = np.asarray(first, float).copy()
    for k in range(len(pred)):
        b = np.clip(b, pred[k] - half, pred[k] + half)
        out[k] = b
    return out


def check_excitation(rec: Recording) -> None:
    motion = max(float(np.ptp(q, axis=0).max()) for q in rec.q)
    cmd = max(float(np.ptp(u, axis=0).max()) for u in rec.targets)
    if motion < MIN_MOTION or cmd < MIN_MOTION:
        raise SysidError(f"recording {rec.path or ''} has no excitation: the joints moved at most {motion:.4f} rad "
                         f"and the targets spanned {cmd:.4f} rad (need >= {MIN_MOTION}); record it with "
                         f"`robot-rl sysid excite`")


# -- the model -------------------------------------------------------------------------------
class ArmModel:
    """The twin's MuJoCo model of a robot spec (arm, table, no task objects) with joint
    position sensors, and where the fitted parameters live in it."""

    def __init__(self, spec):
        import mujoco
        from robot_rl.sim import mjcf
        self.spec = spec
        n_sub = max(1, int(np.ceil(1.0 / (spec.control_hz * 0.002) - 1e-9)))
        self.n_sub = n_sub
        ms = mujoco.MjSpec.from_string(mjcf.scene_xml(spec, "", timestep=1.0 / (spec.control_hz * n_sub), offscreen=64))
        for j in spec.joint_names:
            ms.add_sensor(name=f"q_{j}", type=mujoco.mjtSensor.mjSENS_JOINTPOS, objtype=mujoco.mjtObj.mjOBJ_JOINT,
                          objname=j)
        self.mjspec = ms
        self.model = ms.compile()
        m = self.model
        self.jid = np.array([m.joint(n).id for n in spec.joint_names])
        self.dof = np.array([m.jnt_dofadr[j] for j in self.jid])
        self.qadr = np.array([m.jnt_qposadr[j] for j in self.jid])
        self.act = np.array([m.actuator(n).id for n in spec.joint_names])
        self.links = np.array([m.body(f"link{i + 1}").id for i in range(spec.dof)] + [m.body("hand").id])
        self.hand = m.body("hand").id
        self.has_gripper = spec.gripper is not None
        if self.has_gripper:
            self.grip_act = m.actuator("gripper").id
            self.finger_qadr = [m.jnt_qposadr[m.joint(f"finger_{s}").id] for s in ("left", "right")]
            self.half_open = spec.gripper.open_width / 2
        self.nominal = {k: getattr(m, k).copy() for k in (
            "actuator_gainprm", "actuator_biasprm", "actuator_forcerange", "dof_damping", "dof_armature",
            "dof_frictionloss", "body_mass", "body_inertia")}

    def absolute(self, values: dict[str, float]) -> dict[str, list[float]]:
        """Per-joint (per-body for mass) absolute values of fitted parameters."""
        n, a, d = self.nominal, self.act, self.dof
        kp = n["actuator_gainprm"][a, 0] * values.get("kp", 1.0)
        kv_scale = values["kv"] if "kv" in values else values.get("kp", 1.0)
        out = {"kp": kp, "kv": -n["actuator_biasprm"][a, 2] * kv_scale,
               "damping": n["dof_damping"][d] * values.get("damping", 1.0),
               "armature": n["dof_armature"][d] * values.get("armature", 1.0),
               "frictionloss": n["dof_frictionloss"][d] + values.get("frictionloss", 0.0),
               "forcerange": n["actuator_forcerange"][a, 1] * values.get("forcerange", 1.0),
               "mass": n["body_mass"][self.links] * values.get("mass", 1.0)}
        out["mass"] = out["mass"].copy()
        out["mass"][-1] += values.get("payload", 0.0)
        return {k: [float(x) for x in v] for k, v in out.items()}

    def set(self, m, values: dict[str, float]) -> None:
        """Write `values` (parameter name -> value) into model `m` (a copy of ``self.model``),
        absolute from the nominal values: applying twice never accumulates."""
        self.set_absolute(m, self.absolute(values), self.links)

    def set_absolute(self, m, ab: dict[str, list[float]], links, only: Iterable[str] | None = None) -> None:
        a, d = self.act, self.dof
        keys = set(ab if only is None else only)
        if "kp" in keys:
            m.actuator_gainprm[a, 0] = ab["kp"]
            m.actuator_biasprm[a, 1] = -np.asarray(ab["kp"])
        if "kv" in keys:
            m.actuator_biasprm[a, 2] = -np.asarray(ab["kv"])
        if "damping" in keys:
            m.dof_damping[d] = ab["damping"]
        if "armature" in keys:
            m.dof_armature[d] = ab["armature"]
        if "frictionloss" in keys:
            m.dof_frictionloss[d] = ab["frictionloss"]
        if "forcerange" in keys:
            fr = np.asarray(ab["forcerange"])
            m.actuator_forcerange[a, 0], m.actuator_forcerange[a, 1] = -fr, fr
        if "mass" in keys:
            nm = self.nominal["body_mass"][links]
            ratio = np.asarray(ab["mass"]) / np.where(nm > 0, nm, 1.0)
            m.body_mass[links] = ab["mass"]
            m.body_inertia[links] = self.nominal["body_inertia"][links] * ratio[:, None]

    def initial_state(self, q0: np.ndarray, gripper: float = 0.0, qd0: np.ndarray | None = None) -> np.ndarray:
        from mujoco import sysid
        qpos = self.model.qpos0.copy()
        qpos[self.qadr] = q0
        if self.has_gripper:
            qpos[self.finger_qadr] = (1.0 - gripper) * self.half_open
        qvel = np.zeros(self.model.nv)
        if qd0 is not None:
            qvel[self.dof] = qd0
        return sysid.create_initial_state(self.model, qpos, qvel)

    def controls(self, targets: np.ndarray, gripper: np.ndarray, delay: float,
                 steps: np.ndarray | None = None) -> np.ndarray:
        """Actuator controls at every physics step for the first T-1 control periods of a
        segment, the targets `delay` *physics* steps late (the pose held before the segment
        fills the gap), plus one last row (mujoco.sysid drops it). `steps`: the physics step
        each command was sent at (``Recording.steps``; default the even grid).

        A fractional `delay` (a bus latency is no whole number of physics steps) lands each
        command part-way through a step: that step's control is the time average of the old
        and the new command (exact for the position servo's force, linear in its control), so
        the rollout, and the cost, vary continuously with the delay."""
        u = np.asarray(targets, float)
        ctrl = np.zeros((len(u), self.model.nu))
        ctrl[:, self.act] = u
        if self.has_gripper:
            ctrl[:, self.grip_act] = (1.0 - np.clip(gripper, 0, 1)) * self.half_open
        s = np.arange(len(u)) * self.n_sub if steps is None else np.asarray(steps, int)
        n = int(s[-1])
        d0 = int(np.floor(float(delay) + 1e-9))
        frac = float(delay) - d0
        k = np.searchsorted(s + d0, np.arange(n), side="right") - 1
        up = ctrl[np.clip(k, 0, None)]
        if frac > 1e-9:
            k1 = np.searchsorted(s + d0 + 1, np.arange(n), side="right") - 1
            up = (1.0 - frac) * up + frac * ctrl[np.clip(k1, 0, None)]
        return np.concatenate([up, up[-1:]])


# -- the fit ---------------------------------------------------------------------------------
@dataclass
class FitParam:
    name: str
    value: float
    nominal: float
    kind: str
    unit: str
    interval: tuple[float, float] = (math.nan, math.nan)
    identifiable: bool = True
    reason: str = ""
    absolute: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"value": float(self.value), "nominal": float(self.nominal), "kind": self.kind, "unit": self.unit,
                "interval": [_num(lo), _num(hi)], "identifiable": bool(self.identifiable), "reason": self.reason,
                "absolute": [float(x) for x in self.absolute]}


def _num(x: float):
    return None if not np.isfinite(x) else float(x)


@dataclass
class Dynamics:
    """A fitted twin: what ``dynamics.yaml`` holds."""
    robot: str
    params: dict[str, FitParam]
    delay_steps: int = 0
    delay_identifiable: bool = True
    delay_reason: str = ""
    control_hz: float = 0.0
    validation: dict[str, Any] = field(default_factory=dict)
    condition_number: float = math.nan
    correlation: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    id: str = ""
    date: str = ""
    fit: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"robot": self.robot, "id": self.id, "date": self.date, "data": self.data,
                "control_hz": self.control_hz,
                "delay_steps": int(self.delay_steps),
                "delay": {"value": int(self.delay_steps), "identifiable": bool(self.delay_identifiable),
                          "reason": self.delay_reason},
                "params": {k: p.to_dict() for k, p in self.params.items()},
                "validation": self.validation, "condition_number": _num(self.condition_number),
                "correlation": self.correlation, "fit": self.fit}

    def save(self, path: str | os.PathLike) -> Path:
        import yaml
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".yaml.tmp")
        tmp.write_text("# robot_rl system identification (calibration/sysid.py): the twin's fitted arm dynamics\n"
                       + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120))
        os.replace(tmp, p)
        self.path = str(p)
        return p


def default_dynamics_path(robot: str, dyn_id: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<robot>/<id>/dynamics.yaml``; root defaults to the motor calibration's
    directory (``$ROBOT_RL_CALIBRATION_DIR`` or ``~/.cache/robot_rl/calibration``)."""
    from robot_rl.calibration.motors import calibration_dir
    if not dyn_id or "/" in dyn_id or dyn_id.startswith("."):
        raise SysidError(f"id must be a plain name (e.g. my_arm), got {dyn_id!r}")
    base = Path(root).expanduser() if root else calibration_dir()
    return base / robot / dyn_id / "dynamics.yaml"


def load_dynamics(path: str | os.PathLike) -> Dynamics:
    """A ``dynamics.yaml`` file, or a directory holding one."""
    import yaml
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "dynamics.yaml"
    if not p.is_file():
        raise SysidError(f"no dynamics file at {p} (write one with `robot-rl sysid fit`)")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SysidError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(d, dict) or "robot" not in d or not isinstance(d.get("params"), dict):
        raise SysidError(f"{p}: not a dynamics file (needs robot and params)")
    params = {}
    for k, v in d["params"].items():
        if k not in PARAMS:
            raise SysidError(f"{p}: unknown parameter {k!r}; known: {', '.join(PARAMS)}")
        iv = v.get("interval") or [None, None]
        params[k] = FitParam(k, float(v["value"]), float(v.get("nominal", 1.0)), v.get("kind", PARAMS[k].kind),
                             v.get("unit", PARAMS[k].unit),
                             tuple(math.nan if x is None else float(x) for x in iv),  # type: ignore[arg-type]
                             bool(v.get("identifiable", False)), str(v.get("reason", "")),
                             [float(x) for x in v.get("absolute", [])])
    delay = d.get("delay") or {}
    return Dynamics(robot=str(d["robot"]), params=params, delay_steps=int(d.get("delay_steps", 0)),
                    delay_identifiable=bool(delay.get("identifiable", True)), delay_reason=str(delay.get("reason", "")),
                    control_hz=float(d.get("control_hz") or 0.0), validation=d.get("validation") or {},
                    condition_number=float(d["condition_number"]) if d.get("condition_number") is not None else math.nan,
                    correlation=d.get("correlation") or {}, data=str(d.get("data", "")), id=str(d.get("id", "")),
                    date=str(d.get("date", "")), fit=d.get("fit") or {}, path=str(p))


_DYN_FIELDS = ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange", "dof_damping", "dof_armature",
               "dof_frictionloss", "body_mass", "body_inertia")


def apply_dynamics(target, dyn: Dynamics | str | os.PathLike, *, force: bool = False) -> list[str]:
    """Set the fitted values in a twin (``Twin``, ``RobotEnv`` / ``SimRobot`` (their twin)
    or a bare ``MjModel`` of the spec's twin). Only identifiable parameters unless `force`.
    Absolute values are written, so applying twice gives the same model. On a ``Twin`` the
    calibrated values become its nominal values (``set_params`` / randomization scale them)
    and the fitted delay is added to its action latency. Returns the names applied."""
    if not isinstance(dyn, Dynamics):
        dyn = load_dynamics(dyn)
    twin = getattr(target, "twin", None) or (target if hasattr(target, "set_params") else None)
    model = twin.model if twin is not None else target
    names = [k for k, p in dyn.params.items() if (p.identifiable or force) and p.absolute]
    if twin is not None:
        if twin.spec.name != dyn.robot:
            raise SysidError(f"dynamics {dyn.path or ''} are for robot {dyn.robot!r}, the twin is a {twin.spec.name!r}")
        import mujoco
        links = np.array([model.body(f"link{i + 1}").id for i in range(twin.spec.dof)] + [model.body("hand").id])
        base = getattr(twin, "_uncalibrated", None)
        if base is None:
            base = twin._uncalibrated = {k: v.copy() for k, v in twin._nominal.items()}
        nom = {k: v.copy() for k, v in base.items()}
        fields_ = [k for k in _DYN_FIELDS if k in nom]
        scratch = copy.copy(model)
        for k in fields_:
            getattr(scratch, k)[:] = nom[k]
        _set_abs(scratch, twin.spec, {k: dyn.params[k].absolute for k in names}, links, nom)
        for k in fields_:
            twin._nominal[k] = getattr(scratch, k).copy()
        base_latency = getattr(twin, "_uncalibrated_latency", None)
        if base_latency is None:
            base_latency = twin._uncalibrated_latency = int(twin.params.action_latency_steps)
        twin.set_params(replace(twin.params, action_latency_steps=base_latency + int(dyn.delay_steps)))
        mujoco.mj_forward(model, twin.data)
        return names + ["delay"]
    from robot_rl.spec import load_spec
    spec = load_spec(dyn.robot)
    links = np.array([model.body(f"link{i + 1}").id for i in range(spec.dof)] + [model.body("hand").id])
    _set_abs(model, spec, {k: dyn.params[k].absolute for k in names}, links,
             {"body_mass": model.body_mass.copy(), "body_inertia": model.body_inertia.copy(),
              "actuator_gainprm": model.actuator_gainprm.copy(), "actuator_biasprm": model.actuator_biasprm.copy()})
    return names


def _set_abs(m, spec, ab: dict[str, list[float]], links, nom) -> None:
    act = np.array([m.actuator(n).id for n in spec.joint_names])
    dof = np.array([m.jnt_dofadr[m.joint(n).id] for n in spec.joint_names])
    if "kp" in ab:
        m.actuator_gainprm[act, 0] = ab["kp"]
        m.actuator_biasprm[act, 1] = -np.asarray(ab["kp"])
        if "kv" not in ab:  # kv goes with kp (the fitted gain scale), as in the fit
            kv0 = -nom["actuator_biasprm"][act, 2] if "actuator_biasprm" in nom else -m.actuator_biasprm[act, 2]
            kp0 = nom["actuator_gainprm"][act, 0] if "actuator_gainprm" in nom else m.actuator_gainprm[act, 0]
            m.actuator_biasprm[act, 2] = -kv0 * np.asarray(ab["kp"]) / kp0
    if "kv" in ab:
        m.actuator_biasprm[act, 2] = -np.asarray(ab["kv"])
    for k, f in (("damping", "dof_damping"), ("armature", "dof_armature"), ("frictionloss", "dof_frictionloss")):
        if k in ab:
            getattr(m, f)[dof] = ab[k]
    if "forcerange" in ab:
        fr = np.asarray(ab["forcerange"])
        m.actuator_forcerange[act, 0], m.actuator_forcerange[act, 1] = -fr, fr
    mass = ab.get("mass") or ab.get("payload")
    if mass is not None:
        nm = nom["body_mass"][links]
        m.body_inertia[links] = nom["body_inertia"][links] * (np.asarray(mass) / np.where(nm > 0, nm, 1.0))[:, None]
        m.body_mass[links] = mass


@dataclass
class FitResult:
    dynamics: Dynamics
    names: list[str]
    x: np.ndarray
    cost_by_delay: dict[int, float]
    predictions: dict[str, Any]  # held-out: measured, nominal, calibrated (lists of arrays)
    seconds: float
    table: str = ""


class _Problem:
    """Residuals of one recording under a parameter vector, through mujoco.sysid."""

    def __init__(self, arm: ArmModel, rec: Recording, names: list[str], delay: float, n_threads: int,
                 part: int | None = None, hysteresis: np.ndarray | None = None,
                 quantum: np.ndarray | None = None, weighted: bool = False):
        """`part`: None for every sample; 0 / 1 for the first / second half of each segment's
        samples only (the rollouts still run the whole segment): the split-half check."""
        from mujoco import sysid
        from mujoco.sysid._src.timeseries import TimeSeries
        self.arm, self.rec, self.names, self.delay = arm, rec, names, delay
        self.n_threads = n_threads
        states, controls, sensors, seq = [], [], [], []
        self._weights: dict[bytes, np.ndarray] = {}
        smap = TimeSeries.compute_all_sensor_mapping(arm.model)
        cmap = TimeSeries.compute_all_control_mapping(arm.model)
        h = arm.model.opt.timestep
        for i, (u, q, g) in enumerate(zip(rec.targets, rec.q, rec.gripper)):
            st = rec.steps(i, h, arm.n_sub)  # the recorded stamps (or the even grid)
            ctrl = arm.controls(u, g, delay, st)
            controls.append(TimeSeries(np.arange(len(ctrl)) * h, ctrl, cmap))
            qm = np.where(rec.valid(i)[:, None], q, np.nan)  # NaN: a sample not compared (timing fault)
            sensors.append(TimeSeries(st * h, qm, smap))
            if weighted:
                self._weights[qm[1:].tobytes()] = _sample_weights(rec, i, np.zeros(q.shape[1]) if quantum is None
                                                                  else quantum)[1:]
            states.append(arm.initial_state(q[0], float(g[0]), rec.qd[i][0] if rec.qd else None))
            seq.append(f"segment{i}")
        self.ms = sysid.ModelSequences("arm", arm.mjspec, seq, states, controls, sensors)
        self.params = sysid.ParameterDict()
        for n in names:
            d = PARAMS[n]
            nominal = 1.0 if d.kind == "scale" else 0.0
            self.params.add(sysid.Parameter(n, nominal, d.lo, d.hi))

        qcols = 1 + arm.qadr  # full-physics state rows: [time, qpos, qvel, ...]
        hyst = None if hysteresis is None or not np.any(np.asarray(hysteresis) > 0) else np.asarray(hysteresis, float)

        def modify(params, pred, meas, model, return_pred_all, state=None, **kw):
            # rollout sensor rows are evaluated before each step's integration; the state rows
            # after it: the state after s physics steps (a sample's time) is row s - 1
            idx = np.rint(np.asarray(meas.times[1:]) / h).astype(int) - 1
            p = TimeSeries(meas.times[1:], np.asarray(state)[idx][:, qcols], meas.signal_mapping)
            m = TimeSeries(meas.times[1:], meas.data[1:], meas.signal_mapping)
            if hyst is not None:  # what the encoder reads of the predicted motion
                p = TimeSeries(p.times, _encoder_reading(np.asarray(p.data), meas.data[0], hyst),
                               p.signal_mapping)
            r = np.nan_to_num(m.data - p.data, nan=0.0)
            w = self._weights.get(np.asarray(meas.data[1:]).tobytes()) if self._weights else None
            if w is not None:
                r = r * w
            if part is not None:
                mid = len(r) // 2
                r = r.copy()
                if part == 0:
                    r[mid:] = 0.0
                else:
                    r[:mid] = 0.0
            return r, p, m

        base = arm.model

        def build(params, _spec):
            m = copy.copy(base)
            arm.set(m, {k: float(params[k].value[0]) for k in names})
            return m

        self.residual_fn = sysid.build_residual_fn(models_sequences=[self.ms], build_model=build,
                                                   modify_residual=modify, resample_true=False,
                                                   n_threads=n_threads)
        self.evals = 0

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """Stacked residual vector (1-D x) or matrix (n_res x columns, 2-D x)."""
        p = self.params.copy()
        r, _, _ = self.residual_fn(np.asarray(x, float), p)
        self.evals += 1 if np.ndim(x) == 1 else np.shape(x)[1]
        return np.concatenate(r) if np.ndim(x) == 1 else np.concatenate(r, axis=0)

    def cost(self, x) -> float:
        r = self.residuals(x)
        return float(r @ r)

    def costs(self, X: np.ndarray) -> np.ndarray:
        """Costs of the columns of X (one batched rollout)."""
        R = self.residuals(X)
        return (R ** 2).sum(0)

    def x0(self) -> np.ndarray:
        return self.params.as_vector()

    def bounds(self):
        return self.params.get_bounds()

    def least_squares(self, x0: np.ndarray, max_iters: int) -> tuple[np.ndarray, float]:
        from mujoco import sysid
        p = self.params.copy()
        p.update_from_vector(np.clip(x0, *self.bounds()))
        p.move_off_bounds() if hasattr(p, "move_off_bounds") else None
        with open(os.devnull, "w") as quiet:
            opt, _ = sysid.optimize(p, self.residual_fn, optimizer="mujoco", verbose=False, max_iters=max_iters,
                                    eps=1e-6, output=quiet)
        x = opt.as_vector()
        return x, self.cost(x)

    def jacobian(self, x: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
        """Central-difference Jacobian at x (one batched rollout), and the residual there."""
        lo, hi = self.bounds()
        n = len(x)
        cols = [x]
        steps = []
        for i in range(n):
            h = eps * max(1.0, abs(x[i]))
            xp, xm = x.copy(), x.copy()
            xp[i] = min(x[i] + h, hi[i])
            xm[i] = max(x[i] - h, lo[i])
            cols += [xp, xm]
            steps.append(xp[i] - xm[i])
        R = self.residuals(np.stack(cols, 1))
        J = np.stack([(R[:, 1 + 2 * i] - R[:, 2 + 2 * i]) / steps[i] for i in range(n)], 1)
        return J, R[:, 0]


def _hac_cov(J: np.ndarray, r: np.ndarray, lens: Sequence[int], lag: int) -> np.ndarray | None:
    """Covariance of the least-squares estimates with a Newey-West (Bartlett kernel) long-run
    covariance, ``H^-1 S H^-1`` with ``H = J^T J`` and ``S`` the long-run covariance of the
    per-sample scores ``J_t^T r_t`` (all joints of one sample together), summed within each
    segment only. Model error (timing, backlash, whatever the twin lacks) leaves residuals
    correlated over a servo's settling time; the white-noise covariance ``sigma^2 H^-1`` then
    claims more than the data holds. None when the rows are not (segment, sample, joint)."""
    n = sum(int(t) for t in lens)
    if n <= 0 or len(r) % n or len(r) != J.shape[0]:
        return None
    dof = len(r) // n
    H = J.T @ J
    try:
        Hinv = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return None
    S = np.zeros_like(H)
    off = 0
    for T in lens:
        g = np.einsum("tjp,tj->tp", J[off:off + T * dof].reshape(T, dof, -1), r[off:off + T * dof].reshape(T, dof))
        off += T * dof
        S += g.T @ g
        for k in range(1, min(lag, T - 1) + 1):
            G = g[k:].T @ g[:-k]
            S += (1.0 - k / (lag + 1.0)) * (G + G.T)
    return Hinv @ S @ Hinv


def _white_cov(J: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``sigma^2 (J^T J)^-1`` (pseudo-inverse), sigma^2 from the residual with the fitted
    parameters' degrees of freedom taken off."""
    s2 = float(r @ r) / max(len(r) - J.shape[1], 1)
    return s2 * np.linalg.pinv(J.T @ J)


def _viscous_total(arm: "ArmModel", fitted: dict[str, float], cnames: list[str], covs: list[np.ndarray]
                   ) -> dict[str, Any] | None:
    """What the data fix when the joint damping is fitted with the servo's kv tied to kp: the
    joint's whole viscous coefficient ``kv + damping`` (N m s). On a position servo kv is many
    times the joint's own damping, so the sum is identified long before its split is."""
    if "damping" not in cnames or "kv" in cnames:
        return None
    nom = arm.absolute({})
    kv0, c0 = np.asarray(nom["kv"]), np.asarray(nom["damping"])
    ab = arm.absolute(fitted)
    val = np.asarray(ab["kv"]) + np.asarray(ab["damping"])
    half = []
    for j in range(len(val)):
        a = np.zeros(len(cnames))
        a[cnames.index("damping")] = c0[j]
        if "kp" in cnames:
            a[cnames.index("kp")] = kv0[j]
        half.append(1.96 * float(np.sqrt(max(max(float(a @ C @ a) for C in covs), 0.0))))
    half = np.asarray(half)
    return {"what": "servo kv + joint damping per arm joint (N m s)", "value": [float(v) for v in val],
            "nominal": [float(v) for v in kv0 + c0], "half_width": [float(h) for h in half],
            "identifiable": bool(np.all(half <= CV_LIMIT * np.abs(val))),
            "damping_share": [float(v) for v in np.asarray(ab["damping"]) / np.where(val > 0, val, 1.0)]}


def _delay_column(make: Callable[[float], "_Problem"], x: np.ndarray, D: float, h: float = 0.25) -> np.ndarray:
    """d residual / d delay (physics steps), central where the delay may go below it."""
    Dp, Dm = D + h, max(D - h, 0.0)
    return (make(Dp).residuals(x) - make(Dm).residuals(x)) / (Dp - Dm)


def _lm_with_delay(make: Callable[[float], "_Problem"], x0: np.ndarray, D0: float, D_max: float,
                   max_iters: int) -> tuple[np.ndarray, float, float]:
    """Levenberg-Marquardt over the parameters and the (continuous, physics-step) delay
    together; `make(D)` the problem at delay D (``ArmModel.controls`` blends a fractional
    one). Returns (x, D, cost); never worse than the start."""
    p0 = make(D0)
    lo, hi = p0.bounds()
    x, D = np.clip(np.asarray(x0, float), lo, hi), float(D0)
    r = p0.residuals(x)
    c = float(r @ r)
    lam = 1e-3
    for _ in range(max_iters):
        J, r = make(D).jacobian(x)
        A = np.column_stack([J, _delay_column(make, x, D)])
        g, H = A.T @ r, A.T @ A
        dg = np.where(np.diag(H) > 0, np.diag(H), 1.0)
        rel = 0.0
        for _ in range(8):
            step = -np.linalg.solve(H + lam * np.diag(dg), g)
            xn = np.clip(x + step[:-1], lo, hi)
            Dn = float(np.clip(D + step[-1], 0.0, D_max))
            cn = make(Dn).cost(xn)
            if cn < c:
                rel = (c - cn) / max(c, 1e-300)
                x, D, c = xn, Dn, cn
                lam = max(lam / 3, 1e-9)
                break
            lam *= 4
        if rel < 1e-7:
            break
    return x, D, c


def _at_bound(name: str, v: float) -> bool:
    """On a search bound that is not a physical one (0 N m of friction, 0 kg of payload)."""
    d = PARAMS[name]
    tol = 1e-6 * (d.hi - d.lo)
    return v >= d.hi - tol or (v <= d.lo + tol and not (d.kind == "abs" and d.lo == 0.0))


def _to_z(names, x):
    return np.array([np.log(v) if PARAMS[n].kind == "scale" else v for n, v in zip(names, x)])


def _from_z(names, z):
    return np.array([np.exp(v) if PARAMS[n].kind == "scale" else v for n, v in zip(names, z)])


def _cma(prob: _Problem, x0: np.ndarray, seed: int, iters: int = 12, popsize: int = 12) -> tuple[np.ndarray, float]:
    """A short CMA-ES run (log coordinates for scales; abs params in their units) from x0."""
    import cma
    names = prob.names
    lo, hi = prob.bounds()
    zlo, zhi = _to_z(names, np.maximum(lo, 1e-9)), _to_z(names, hi)
    # log-space steps; a force limit may sit orders of magnitude below nominal
    sig = np.array([(2.0 if n == "forcerange" else 0.5) if PARAMS[n].kind == "scale"
                    else 0.1 * (PARAMS[n].hi - PARAMS[n].lo) for n in names])
    z0 = np.clip(_to_z(names, np.maximum(x0, 1e-9)), zlo, zhi)
    es = cma.CMAEvolutionStrategy(list(z0 / sig), 1.0, {
        "bounds": [list(zlo / sig), list(zhi / sig)], "popsize": popsize, "maxiter": iters, "seed": seed + 1,
        "verbose": -9})
    best, best_c = x0, prob.cost(x0)
    while not es.stop():
        Z = np.asarray(es.ask())
        X = np.stack([np.clip(_from_z(names, z * sig), lo, hi) for z in Z], 1)
        c = prob.costs(X)
        es.tell(list(Z), list(c))
        i = int(np.argmin(c))
        if c[i] < best_c:
            best, best_c = X[:, i].copy(), float(c[i])
    return best, best_c


def _rollout(arm: ArmModel, m, rec: Recording, delay: float,
             hysteresis: np.ndarray | None = None) -> tuple[list[np.ndarray], float]:
    """Open-loop predictions per segment (T x dof, from the recorded initial state; as the
    encoder reads them where `hysteresis` is given) and the fraction of samples where an
    arm actuator sits at its force limit."""
    import mujoco
    d = mujoco.MjData(m)
    preds, sat, total = [], 0, 0
    fr = m.actuator_forcerange[arm.act, 1]
    limited = m.actuator_forcelimited[arm.act] > 0
    for i, (u, q, g) in enumerate(zip(rec.targets, rec.q, rec.gripper)):
        st = rec.steps(i, arm.model.opt.timestep, arm.n_sub)
        ctrl = arm.controls(u, g, delay, st)
        mujoco.mj_setState(m, d, arm.initial_state(q[0], float(g[0]), rec.qd[i][0] if rec.qd else None),
                           mujoco.mjtState.mjSTATE_FULLPHYSICS)
        out = np.empty_like(q)
        out[0] = q[0]
        step = 0
        for k in range(1, len(q)):
            while step < st[k]:
                d.ctrl[:] = ctrl[step]
                mujoco.mj_step(m, d)
                f = np.abs(d.actuator_force[arm.act])
                sat += int(np.any(limited & (f >= 0.98 * fr)))
                total += 1
                step += 1
            out[k] = d.qpos[arm.qadr]
        if hysteresis is not None:
            out[1:] = _encoder_reading(out[1:], q[0], np.asarray(hysteresis, float))
        preds.append(out)
    return preds, sat / max(total, 1)


def _rms(pred: list[np.ndarray], meas: list[np.ndarray], rec: Recording | None = None) -> float:
    """RMS joint error after the first sample (of the samples `rec.valid` keeps, if given)."""
    e = np.concatenate([(p - q)[1:][rec.valid(i)[1:]] if rec is not None else (p - q)[1:]
                        for i, (p, q) in enumerate(zip(pred, meas))])
    return float(np.sqrt(np.mean(e ** 2)))


def parse_params(params: Sequence[str] | str | None) -> tuple[list[str], bool]:
    """(continuous parameter names, fit the delay?) from a list like ``[kp, damping, delay]``."""
    if params is None:
        params = DEFAULT_PARAMS
    if isinstance(params, str):
        params = [p.strip() for p in params.strip("[]").split(",") if p.strip()]
    names = [str(p).strip() for p in params]
    bad = [n for n in names if n not in ALL_PARAMS]
    if bad:
        raise SysidError(f"unknown sysid parameter(s) {bad}; known: {', '.join(ALL_PARAMS)}")
    if len(set(names)) != len(names):
        raise SysidError(f"parameter listed twice in {names}")
    cont = [n for n in PARAMS if n in names]  # canonical order
    if not cont and "delay" not in names:
        raise SysidError("no parameter to fit")
    return cont, "delay" in names


def fit(recording: str | os.PathLike | Recording, robot: str | None = None, params: Sequence[str] | str | None = None,
        *, validate: str | os.PathLike | Recording | None = None, holdout: Sequence[int] | None = None,
        max_delay: int = 4, global_start: str = "auto", max_iters: int = 40, seed: int = 0,
        n_threads: int | None = None, progress: bool = False, log: Callable[[str], None] | None = None,
        dyn_id: str = "", split_check: bool = True, encoder_model: bool = True, weighted: bool = True) -> FitResult:
    """Fit the twin's arm dynamics to a sysid recording (see the module doc).

    `validate`: a second recording for the held-out check; otherwise `holdout` segment
    indices (default: the last multi-sine segment when there are two or more, else the last
    segment) are left out of the fit and used for it. `global_start`: "auto" (CMA-ES when
    Gauss-Newton stalls), "always" or "never". `split_check`: refit on the first and the second
    half of every segment's samples and flag a parameter whose two estimates disagree by more
    than their intervals and more than ``SPLIT_TOL`` of the value (model error that the
    white-noise intervals do not show). `encoder_model`: where the readings are quantised
    (``encoder_quantum``), compare the twin's motion as such an encoder reads it (one count
    of hysteresis) instead of the joint angle itself. `weighted`: weight each sample by its
    expected error (resolution, and timing jitter times speed: ``_sample_weights``)."""
    from robot_rl.spec import load_spec
    from tqdm import tqdm
    t_start = time.perf_counter()
    say = log or (lambda s: None)
    names, fit_delay = parse_params(params)
    if global_start not in ("auto", "always", "never"):
        raise SysidError(f"global_start must be auto, always or never, got {global_start!r}")
    rec = recording if isinstance(recording, Recording) else load_recording(recording, robot)
    if robot is not None and rec.robot != robot:
        raise SysidError(f"recording {rec.path} is of robot {rec.robot!r}, not {robot!r}")
    spec = load_spec(rec.robot)
    if abs(spec.control_hz - rec.control_hz) > 1e-6:
        spec = replace(spec, control_hz=rec.control_hz) if hasattr(spec, "__dataclass_fields__") else spec
    check_excitation(rec)
    if validate is not None:
        val = validate if isinstance(validate, Recording) else load_recording(validate, rec.robot)
        train = rec
    else:
        n = len(rec.targets)
        if holdout is None:
            ms = [i for i, k in enumerate(rec.kinds) if k == "multisine"]
            holdout = [ms[-1]] if len(ms) >= 2 else ([n - 1] if n >= 2 else [])
        holdout = [int(i) % n for i in holdout]
        keep = [i for i in range(n) if i not in holdout]
        if not keep:
            raise SysidError("every segment is held out: nothing left to fit")
        train, val = rec.subset(keep), (rec.subset(holdout) if holdout else None)
    check_excitation(train)
    arm = ArmModel(spec)
    quantum = encoder_quantum(rec)
    hyst = 0.5 * quantum if encoder_model else np.zeros(spec.dof)
    hyst = hyst if np.any(hyst > 0) else None
    pkw = dict(hysteresis=hyst, quantum=quantum, weighted=bool(weighted))
    threads = int(n_threads or min(8, os.cpu_count() or 1))
    delays = list(range(0, max_delay + 1)) if fit_delay else [0]
    bar = tqdm(total=len(delays) + 3, desc="sysid fit", disable=not progress)
    probs: dict[tuple[float, int | None], _Problem] = {}
    evals_done = [0]

    def prob(dl: float, part: int | None = None) -> _Problem:
        key = (round(float(dl), 6), part)
        if key not in probs:
            if len(probs) >= 12:  # continuous delays make new problems: keep the recent ones
                old = next(iter(probs))
                evals_done[0] += probs.pop(old).evals
            probs[key] = _Problem(arm, train, names, float(dl), threads, part=part, **pkw)
        else:
            probs[key] = probs.pop(key)  # most recently used last
        return probs[key]

    # 1. the delay (whole control steps): a short local fit from nominal per candidate
    ns = arm.n_sub
    cost_by_delay: dict[int, float] = {}
    x_by_delay: dict[int, np.ndarray] = {}
    for dl in delays:
        p = prob(dl * ns)
        x0 = p.x0()
        if names:
            x, c = p.least_squares(x0, max_iters=4)
        else:
            x, c = x0, p.cost(x0)
        cost_by_delay[dl], x_by_delay[dl] = c, x
        bar.update(1)
    delay = min(cost_by_delay, key=cost_by_delay.get)
    say("delay grid: " + ", ".join(f"{k}: {v:.4g}" for k, v in cost_by_delay.items()) + f" -> {delay}")
    fitinfo: dict[str, Any] = {}

    # 2. local fit (+ a global start where it stalls)
    def local_and_global(D: int, start: np.ndarray) -> tuple[np.ndarray, float, dict]:
        p = prob(D)
        info: dict[str, Any] = {}
        if not names:
            return start, p.cost(start), info
        c_nom = p.cost(p.x0())
        # a direction the cost does not change in at the start (a force limit the nominal twin
        # never reaches) is one Gauss-Newton cannot move along: that is a stall too
        J0, _ = p.jacobian(np.clip(start, *p.bounds()), eps=1e-3)
        blind = [n for n, col in zip(names, J0.T) if not np.any(np.abs(col) > 1e-9)]
        x, c = p.least_squares(start, max_iters)
        on_bound = any(_at_bound(n, v) for n, v in zip(names, x))
        stalled = c > 0.5 * c_nom or on_bound or bool(blind)
        info.update(cost_nominal=float(c_nom), cost_gauss_newton=float(c), stalled=bool(stalled),
                    blind_at_start=blind)
        if global_start == "always" or (global_start == "auto" and stalled):
            xg, cg = _cma(p, p.x0(), seed)
            x2, c2 = p.least_squares(xg, max_iters)
            info.update(cma_cost=float(cg), cost_after_cma=float(c2))
            if c2 < c:
                x, c = x2, c2
                info["used_cma"] = True
        return x, c, info

    D = delay * ns
    x, c, info = local_and_global(D, x_by_delay[delay])
    bar.update(1)
    fitinfo.update(info)
    # 3. the transport delay is not a whole number of control periods on hardware (bus
    # transfer, the servo's own loop): scan the offset in physics steps around the whole
    # delay at the fitted point (one rollout each), then fit it as a continuous parameter
    # together with the others (a fraction of a millisecond of latency trades against joint
    # damping: kp x delay is a velocity term). The twin's action latency stays the whole
    # number of control steps nearest to it.
    D_max = float((max_delay + 1) * ns)
    if fit_delay:
        for span, step in ((ns // 2, 2), (2, 1)):
            cands = sorted({max(0, D + o) for o in range(-span, span + 1, step)})
            sub = {Dc: prob(Dc).cost(x) for Dc in cands}
            best = min(sub, key=sub.get)
            if best != D and sub[best] < c:
                D = best
                x, c = prob(D).least_squares(x, max_iters)
        if names:
            x, D, c = _lm_with_delay(prob, x, float(D), D_max, max_iters)
        delay = int(round(D / ns))
        # re-check the neighbouring whole delays from the fitted point
        for dl in (delay - 1, delay + 1):
            if dl in delays:
                Dn = D + (dl - delay) * ns
                if Dn < 0:
                    continue
                xn, cn = prob(Dn).least_squares(x, max_iters=6) if names else (x, prob(Dn).cost(x))
                cost_by_delay[dl] = min(cost_by_delay[dl], cn)
                if cn < c:
                    say(f"delay {dl} fits better than {delay} after the fit: refitting")
                    D, delay = Dn, dl
                    x, c, info2 = local_and_global(D, xn)
                    fitinfo.update(info2)
                    if names:
                        x, D, c = _lm_with_delay(prob, x, float(D), D_max, max_iters)
                        delay = int(round(D / ns))
        cost_by_delay[delay] = min(cost_by_delay.get(delay, c), c)
    fitinfo["cost_by_delay"] = {int(k): float(v) for k, v in cost_by_delay.items()}
    fitinfo["delay_ms"] = float(D * arm.model.opt.timestep * 1000)
    fitinfo["delay_physics_steps"] = float(D)
    fitinfo["encoder_hysteresis_rad"] = [float(v) for v in (hyst if hyst is not None else np.zeros(spec.dof))]
    fitinfo["timing"] = "recorded stamps" if train.t and any(
        not np.array_equal(train.steps(i, arm.model.opt.timestep, ns), np.arange(len(q)) * ns)
        for i, q in enumerate(train.q)) else "even control grid"
    bar.update(1)
    p = prob(D)

    # 4. intervals, correlation, flags
    fitted = {n: float(v) for n, v in zip(names, x)}
    m_fit = copy.copy(arm.model)
    arm.set(m_fit, fitted)
    preds_train, sat = _rollout(arm, m_fit, train, D, hyst)
    out_params: dict[str, FitParam] = {}
    corr = np.eye(len(names))
    cond = 1.0
    cnames = list(names)
    if names:
        J, r = p.jacobian(x)
        if fit_delay:  # the latency is fitted too: its uncertainty widens what trades against it
            J = np.column_stack([J, _delay_column(prob, x, D)])
            cnames.append("delay")
        from mujoco import sysid
        sigma, half_white = sysid.calculate_intervals([r], J)
        lag = max(1, int(round(HAC_SECONDS * rec.control_hz)))
        cov_hac = _hac_cov(J, r, [len(q) - 1 for q in train.q], lag)
        half = None if cov_hac is None else 1.96 * np.sqrt(np.clip(np.diag(cov_hac), 0.0, None))
        half = half_white if half is None else np.maximum(half, half_white)
        vt = _viscous_total(arm, fitted, cnames,
                            [_white_cov(J, r)] + ([cov_hac] if cov_hac is not None else []))
        if vt is not None:
            fitinfo["viscous_total"] = vt
        fitinfo["interval_method"] = (f"Newey-West (Bartlett, {lag} samples) over the white-noise J^T J one"
                                      if half is not half_white else "white noise (J^T J)")
        if fit_delay:
            fitinfo["delay_ms_interval"] = [float((D - half[-1]) * arm.model.opt.timestep * 1000),
                                            float((D + half[-1]) * arm.model.opt.timestep * 1000)]
        # correlation of the estimates from the column-scaled J^T J with a vanishing ridge:
        # exactly collinear parameters (a singular J^T J) come out at +-1 instead of NaN
        H = J.T @ J
        dsc = np.sqrt(np.clip(np.diag(H), 1e-300, None))
        Hs = H / np.outer(dsc, dsc)
        C = np.linalg.inv(Hs + 1e-10 * np.eye(len(Hs)))
        sd = np.sqrt(np.clip(np.diag(C), 1e-300, None))
        corr = np.clip(C / np.outer(sd, sd), -1.0, 1.0)
        np.fill_diagonal(corr, 1.0)
        cond = float(np.linalg.cond(corr))
        fitted_abs = arm.absolute(fitted)
        split = None
        if split_check:  # each half refitted with its own latency where that is fitted
            split = []
            for k in (0, 1):
                if fit_delay:
                    xk, Dk, _ = _lm_with_delay(lambda d, k=k: prob(d, part=k), x, float(D), D_max, min(max_iters, 12))
                    split.append(np.append(xk, Dk * arm.model.opt.timestep * 1000))
                else:
                    split.append(prob(D, part=k).least_squares(x, min(max_iters, 12))[0])
            fitinfo["split_half"] = {n: [float(split[0][i]), float(split[1][i])] for i, n in enumerate(names)}
            if fit_delay:
                fitinfo["split_half"]["delay_ms"] = [float(split[0][-1]), float(split[1][-1])]
        for i, n in enumerate(names):
            d = PARAMS[n]
            v = float(x[i])
            hw = float(half[i])
            reasons = []
            if not np.isfinite(hw):
                reasons.append("not determined by the data (singular J^T J)")
            elif hw > max(CV_LIMIT * abs(v), d.abs_floor):
                reasons.append(f"wide 95% interval (+-{hw:.3g}, {100 * hw / max(abs(v), 1e-12):.0f}% of the value)")
            if split is not None and np.isfinite(hw):
                a, b = float(split[0][i]), float(split[1][i])
                # under white noise each half's estimate has twice the whole's variance, so the
                # difference has sd 2 * (hw / 1.96): a 95 % test that the halves agree
                if abs(a - b) > max(2 * hw, SPLIT_TOL * abs(v), d.abs_floor):  # 1.96 * 2 hw / 1.96
                    reasons.append(f"the two halves of the data disagree ({a:.4g} vs {b:.4g}): model error "
                                   f"the interval does not show")
                elif (a - v) * (b - v) > 0 and min(abs(a - v), abs(b - v)) > max(hw, d.abs_floor):
                    # the whole's cost is the sum of the halves': at its minimum they cannot both
                    # pull the same way, unless the fit never reached it
                    reasons.append(f"both halves of the data move it the same way ({a:.4g}, {b:.4g} from "
                                   f"{v:.4g}): the fit did not settle (a non-smooth cost, e.g. saturation)")
            for k, o in enumerate(cnames):
                if k != i and abs(corr[i, k]) > CORR_LIMIT:
                    reasons.append(f"collinear with {o} (correlation {corr[i, k]:+.3f})")
            if n == "forcerange" and sat < SAT_MIN:
                reasons.append(f"force limit never reached in the data ({100 * sat:.2f}% of samples saturated)")
            if n in ("kp", "kv") and sat > SAT_KP_LIMIT:
                reasons.append(f"actuators saturated in {100 * sat:.0f}% of samples: the gain is not seen there "
                               f"(Gauss-Newton cannot trust its linearisation)")
            if _at_bound(n, v):
                reasons.append(f"at the search bound [{d.lo}, {d.hi}]")
            absn = n if n != "payload" else "mass"
            out_params[n] = FitParam(n, v, 1.0 if d.kind == "scale" else 0.0, d.kind, d.unit,
                                     (v - hw, v + hw), not reasons, "; ".join(reasons), fitted_abs[absn])
    # delay identifiability: the best whole delay must clearly beat the others
    delay_ok, delay_reason = True, ""
    if fit_delay and len(cost_by_delay) > 1:
        others = [v for k, v in cost_by_delay.items() if k != delay]
        ratio = c / max(min(others), 1e-300)
        fitinfo["delay_cost_ratio"] = float(ratio)
        if ratio > 0.9:
            delay_ok, delay_reason = False, f"neighbouring delays fit almost as well (cost ratio {ratio:.2f})"
    bar.update(1)

    # 5. validation on held-out data
    validation: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    if val is not None and len(val.targets):
        m_nom = copy.copy(arm.model)
        pn, _ = _rollout(arm, m_nom, val, 0, hyst)
        pc, _ = _rollout(arm, m_fit, val, D, hyst)
        rn, rc = _rms(pn, val.q, val), _rms(pc, val.q, val)
        validation = {"rms_nominal": rn, "rms_calibrated": rc, "ratio": rc / max(rn, 1e-300),
                      "segments": len(val.targets), "kinds": list(val.kinds),
                      "source": str(validate) if validate is not None and not isinstance(validate, Recording)
                      else "held-out segments of the recording"}
        predictions = {"measured": val.q, "nominal": pn, "calibrated": pc, "targets": val.targets,
                       "dt": 1.0 / val.control_hz}
    validation["rms_train_calibrated"] = _rms(preds_train, train.q, train)
    fitinfo.update(saturated_fraction=float(sat), cost=float(c),
                   evaluations=evals_done[0] + sum(pp.evals for pp in probs.values()),
                   train_segments=len(train.targets), seconds=time.perf_counter() - t_start,
                   method="mujoco.sysid.optimize (mujoco.minimize.least_squares) + cma (global start)")
    bar.close()
    dyn = Dynamics(robot=rec.robot, params=out_params, delay_steps=int(delay), delay_identifiable=delay_ok,
                   delay_reason=delay_reason, control_hz=float(rec.control_hz), validation=validation,
                   condition_number=cond,
                   correlation={"names": cnames, "matrix": [[round(float(v), 4) for v in row] for row in corr]},
                   data=str(rec.path), id=dyn_id, date=time.strftime("%Y-%m-%dT%H:%M:%S"), fit=fitinfo)
    res = FitResult(dyn, names, x, cost_by_delay, predictions, time.perf_counter() - t_start)
    res.table = format_table(dyn)
    return res


def format_table(dyn: Dynamics) -> str:
    rows = [f"{'param':<13} {'nominal':>9} {'fit':>10} {'95% interval':>23}  identifiable"]
    for n, p in dyn.params.items():
        lo, hi = p.interval
        iv = f"[{lo:.4g}, {hi:.4g}]" if np.isfinite(lo) and np.isfinite(hi) else "[-inf, inf]"
        rows.append(f"{n:<13} {p.nominal:>9.4g} {p.value:>10.4g} {iv:>23}  "
                    f"{'yes' if p.identifiable else 'NO: ' + p.reason}")
    ms = dyn.fit.get("delay_ms")
    rows.append(f"{'delay':<13} {0:>9d} {dyn.delay_steps:>10d} "
                f"{'(control steps' + (f'; {ms:.0f} ms)' if ms is not None else ')'):>23}  "
                f"{'yes' if dyn.delay_identifiable else 'NO: ' + dyn.delay_reason}")
    vt = dyn.fit.get("viscous_total")
    if vt:
        val, hw, nom = vt["value"], vt["half_width"], vt["nominal"]
        same = np.allclose(val, val[0]) and np.allclose(hw, hw[0])
        share = 100 * float(np.mean(vt["damping_share"]))
        rows.append(f"{'kv+damping':<13} {nom[0]:>9.4g} {val[0]:>10.4g} "
                    f"{f'[{val[0] - hw[0]:.4g}, {val[0] + hw[0]:.4g}]':>23}  "
                    f"{'yes' if vt['identifiable'] else 'NO'}: N m s{'' if same else ' (joint 1; all in fit.viscous_total)'}"
                    f", the servo's kv and the joint's damping together; damping is {share:.0f}% of it")
    v = dyn.validation
    if "rms_nominal" in v:
        rows.append(f"held-out RMS joint error: nominal {v['rms_nominal']:.5f} rad, calibrated "
                    f"{v['rms_calibrated']:.5f} rad (ratio {v['ratio']:.3f})")
    rows.append(f"condition number (correlation matrix): {dyn.condition_number:.3g}")
    return "\n".join(rows)


def plot_validation(res: FitResult, path: str | os.PathLike) -> Path | None:
    """Predicted (nominal, calibrated) vs measured joint positions on the held-out data."""
    pr = res.predictions
    if not pr:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    meas, nom, cal = pr["measured"][0], pr["nominal"][0], pr["calibrated"][0]
    t = np.arange(len(meas)) * pr["dt"]
    dof = meas.shape[1]
    fig, axes = plt.subplots(dof, 1, figsize=(9, 1.7 * dof), sharex=True)
    for j, ax in enumerate(np.atleast_1d(axes)):
        ax.plot(t, pr["targets"][0][:, j], color="0.7", lw=0.8, label="target")
        ax.plot(t, meas[:, j], "k", lw=1.2, label="measured")
        ax.plot(t, nom[:, j], "C1--", lw=1, label="nominal twin")
        ax.plot(t, cal[:, j], "C0", lw=1, label="calibrated twin")
        ax.set_ylabel(f"q{j} (rad)")
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7, ncol=4)
    np.atleast_1d(axes)[-1].set_xlabel("s")
    v = res.dynamics.validation
    fig.suptitle(f"held-out: RMS nominal {v.get('rms_nominal', float('nan')):.4f} rad, calibrated "
                 f"{v.get('rms_calibrated', float('nan')):.4f} rad")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


__all__ = ["ALL_PARAMS", "ArmModel", "DEFAULT_PARAMS", "Dynamics", "FitParam", "FitResult", "PARAMS", "Recording",
           "Segment", "SysidError", "apply_dynamics", "check_excitation", "default_dynamics_path", "encoder_quantum",
           "excitation_plan", "excite", "fit", "format_table", "load_dynamics", "load_recording", "parse_params",
           "plot_validation"]
