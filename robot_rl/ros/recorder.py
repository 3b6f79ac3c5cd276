"""The recorder's core (no rclpy): contract messages + teleop events -> episodes in an
:class:`~robot_rl.data.store.EpisodeStore`, with cadence telemetry.

The node (:mod:`robot_rl.ros.recorder_node`) only feeds it: ``message(topic, stamp_ns,
values, recv_ns)`` for every contract message, ``event(text, recv_ns)`` for
``/teleop/event`` and the recorder services, ``intervention(flag)`` and a periodic
``tick(recv_ns)``. Two ways of cutting steps:

- ``realtime`` (robot stamps are wall time): the contract's
  :class:`~robot_rl.data.contract.EpisodeAssembler` -- a grid at the dataset fps from the
  start event, each step sampled by the contract's policies once ``latency`` has passed.
- ``lockstep`` (the twin advances one control step per action; stamps are sim time): steps
  are driven by stamps, not wall time. Every stamp of the *step topic* (``/action``: the
  robot node stamps each applied action with the observation it was chosen from) is one
  step; a step at stamp ``t`` is emitted once every contract topic has a message stamped
  ``>= t`` (or ``step_timeout_s`` of wall time has passed), sampled with the same contract
  policies (one :class:`~robot_rl.data.contract.Aligner` grid per step). The observation
  that ends an episode (it gets no action) is therefore never recorded -- exactly what a
  direct ``rollout_expert`` recording stores. End events may carry ``steps=N`` and
  ``stamp=T`` (the teleop node sends both): the episode then waits for its N steps, and
  steps stamped ``>= T`` never belong to it.

Unstamped messages (``/reward``, ``/success``) get the receipt time in realtime mode (the
contract's rule). In lockstep mode they get the stamp of the observation they were published
with (:class:`BurstStamper`, from DDS source timestamps).
"""
from __future__ import annotations

import bisect
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from robot_rl.data.contract import (NS, AlignedStep, Aligner, AlignStats, BoundContract, EpisodeAssembler,
                                    EpisodeInfo, StoreSink, from_ns, parse_event,
                                    parse_stamp_ns)  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

MODES = ("realtime", "lockstep")


# ---------------------------------------------------------------------------------------
# stamps for unstamped messages (lockstep)
# ---------------------------------------------------------------------------------------
class BurstStamper:
    """Gives unstamped messages (``/reward``, ``/success``) the stamp of the observation they
    were published with, from DDS source timestamps.

    The robot node publishes each observation as a burst, the reference topic
    (``/joint_states``) first. An unstamped message therefore belongs to the reference message
    with the largest source timestamp <= its own. Callbacks of different subscriptions
    run in no fixed order, and a lagging subscriber sees the next burst's reference message
    before this burst's reward. So a message is resolved only once the reference topic has
    passed it: a reference message with a later source timestamp has been seen. Pending
    messages older than ``timeout_s`` (wall) are resolved with what is known, or dropped
    when they predate every reference message.
    """

    def __init__(self, timeout_s: float = 2.0, clock: Callable[[], float] = time.monotonic, keep: int = 4096):
        self.timeout_s = timeout_s
        self.clock = clock
        self.keep = keep
        self._ref_src: list[int] = []  # source timestamps of reference messages (sorted)
        self._ref_stamp: list[int] = []
        self._pending: list[tuple[int, float, Any]] = []  # (source ts, wall seen, payload)
        self.dropped = 0

    def reference(self, src_ns: int, stamp_ns: int) -> list[tuple[Any, int]]:
        i = bisect.bisect_right(self._ref_src, src_ns)
        self._ref_src.insert(i, int(src_ns))
        self._ref_stamp.insert(i, int(stamp_ns))
        if len(self._ref_src) > self.keep:
            del self._ref_src[: -self.keep], self._ref_stamp[: -self.keep]
        return self._resolve(force=False)

    def unstamped(self, src_ns: int, payload: Any) -> list[tuple[Any, int]]:
        self._pending.append((int(src_ns), self.clock(), payload))
        return self._resolve(force=False)

    def expire(self) -> list[tuple[Any, int]]:
        return self._resolve(force=True)

    def flush(self) -> list[tuple[Any, int]]:
        return self._resolve(force=True, everything=True)

    def _resolve(self, force: bool, everything: bool = False) -> list[tuple[Any, int]]:
        out, keep = [], []
        newest = self._ref_src[-1] if self._ref_src else None
        now = self.clock()
        for src, seen, payload in self._pending:
            passed = newest is not None and newest > src
            if not passed and not (everything or (force and now - seen > self.timeout_s)):
                keep.append((src, seen, payload))
                continue
            i = bisect.bisect_right(self._ref_src, src) - 1
            if i < 0:  # published before any reference message we have: its burst was missed
                self.dropped += 1
                continue
            out.append((payload, self._ref_stamp[i]))
        self._pending = keep
        return out


# ---------------------------------------------------------------------------------------
# telemetry
# ---------------------------------------------------------------------------------------
class Cadence:
    """Per-episode cadence telemetry: achieved step rate, per-topic messages, drops and the
    age of the sample each step used (p50 / max)."""

    def __init__(self, bound: BoundContract, lockstep: bool, stamped: set[str] | None = None) -> None:
        self.bound = bound
        self.lockstep = lockstep
        self.stamped = stamped if stamped is not None else {t for t, tb in bound.topics.items() if tb.has_header}
        self.wall0 = time.monotonic()
        self.steps = 0
        self.t_first: int | None = None
        self.t_last: int | None = None
        self.messages: dict[str, int] = {}
        self.gaps: dict[str, int] = {}  # realtime: messages missing from a topic's own stream
        self.mismatch: dict[str, int] = {}  # lockstep: steps whose sample is not from that step
        self.skipped: dict[str, int] = {}  # steps not recorded, by the topic that caused it
        self.ages: dict[str, list[float]] = {t: [] for t in bound.topics}
        self._last_stamp: dict[str, int] = {}

    def restart(self) -> None:
        """The steps so far were dropped (the episode was re-anchored at a robot reset)."""
        self.steps = 0
        self.t_first = self.t_last = None
        self.mismatch.clear()
        self.skipped.clear()
        self.ages = {t: [] for t in self.bound.topics}

    def on_message(self, topic: str, stamp_ns: int) -> None:
        self.messages[topic] = self.messages.get(topic, 0) + 1
        prev = self._last_stamp.get(topic)
        self._last_stamp[topic] = stamp_ns
        if prev is None or self.lockstep:
            return
        tb = self.bound.topics.get(topic)
        if tb is None or not tb.rate:
            return
        n = int(round((stamp_ns - prev) * tb.rate / NS)) - 1
        if n > 0:
            self.gaps[topic] = self.gaps.get(topic, 0) + n

    def on_step(self, step: AlignedStep) -> None:
        self.steps += 1
        self.t_first = step.t_ns if self.t_first is None else self.t_first
        self.t_last = step.t_ns
        for topic, tb in self.bound.topics.items():
            s = step.stamps_ns.get(tb.keys[0])
            if s is None:
                continue
            self.ages[topic].append((step.t_ns - s) / 1e6)
            if self.lockstep and s != step.t_ns and topic in self.stamped:
                self.mismatch[topic] = self.mismatch.get(topic, 0) + 1

    def on_skips(self, stats: AlignStats) -> None:
        for d in stats.skipped.values():
            for topic, n in d.items():
                self.skipped[topic] = self.skipped.get(topic, 0) + n

    def drops(self) -> dict[str, int]:
        """Per topic: messages (steps) lost = gaps (realtime) / stamp mismatches (lockstep) +
        steps skipped because of it."""
        out = {}
        for topic in self.bound.topics:
            out[topic] = (self.mismatch if self.lockstep else self.gaps).get(topic, 0) + self.skipped.get(topic, 0)
        return out

    def rate_hz(self) -> float | None:
        if self.steps < 2 or self.t_first is None or self.t_last == self.t_first:
            return None
        return (self.steps - 1) * NS / (self.t_last - self.t_first)

    def to_dict(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall0
        age = {}
        for topic, a in self.ages.items():
            if a:
                arr = np.asarray(a)
                age[topic] = {"p50_ms": round(float(np.percentile(arr, 50)), 3), "max_ms": round(float(arr.max()), 3)}
        r = self.rate_hz()
        return {"steps": self.steps, "target_hz": self.bound.fps, "rate_hz": None if r is None else round(r, 4),
                "wall_s": round(wall, 3), "wall_rate_hz": round(self.steps / wall, 3) if wall > 0 else None,
                "drops": self.drops(), "skipped_steps_by_topic": dict(self.skipped), "age": age,
                "messages": dict(self.messages), "mode": "lockstep" if self.lockstep else "realtime"}


def merge_stats(into: AlignStats, s: AlignStats) -> None:
    into.grid_steps += s.grid_steps
    into.steps += s.steps
    for r, d in s.skipped.items():
        tgt = into.skipped.setdefault(r, {})
        for k, n in d.items():
            tgt[k] = tgt.get(k, 0) + n
    for k, n in s.held.items():
        into.held[k] = into.held.get(k, 0) + n
    for k, v in s.max_age_s.items():
        into.max_age_s[k] = max(v, into.max_age_s.get(k, -math.inf))
    for k, n in s.late.items():
        into.late[k] = into.late.get(k, 0) + n


# ---------------------------------------------------------------------------------------
# the sink: StoreSink + source / intervention + cadence telemetry in `extra`
# ---------------------------------------------------------------------------------------
class _Sink(StoreSink):
    def __init__(self, rec: "Recorder", store: Any, fps: float, source: str, extra: Mapping[str, Any] | None):
        super().__init__(store, fps, source=source, extra=extra, empty="skip")
        self.rec = rec
        self.intervened = False

    def begin(self, ep: EpisodeInfo) -> None:
        super().begin(ep)
        self.intervened = self.rec.intervention_active
        self.source = ep.args.pop("source", None) or self.rec.default_source
        self.rec._begin(ep)

    def step(self, ep: EpisodeInfo, step: AlignedStep) -> None:
        super().step(ep, step)
        self.rec.cadence_of(ep).on_step(step)

    def end(self, ep: EpisodeInfo, success: bool, stats: AlignStats) -> None:
        rec = self.rec
        cadence = rec.cadence_of(ep)
        cadence.on_skips(stats)
        cad = cadence.to_dict()
        if self._episode is None:
            self.skipped.append(f"episode {ep.number}: no aligned steps ({stats.worst()})")
            log.warning("%s; nothing committed", self.skipped[-1])
            rec._ended(ep, None, success, cad)
            return
        if self.intervened:
            self._episode.source = "intervention"
        extra = {"align": stats.to_dict(), "cadence": cad, "recorder": {"mode": rec.mode}}
        if ep.end_reason:
            extra["end_reason"] = ep.end_reason
        idx = self._episode.commit(success=bool(success), extra=extra)
        self.committed.append(idx)
        self._episode = None
        rec._ended(ep, idx, success, cad)

    def discard(self, ep: EpisodeInfo, reason: str) -> None:
        super().discard(ep, reason)
        self.rec._discarded(ep, reason)

    def restart(self, ep: EpisodeInfo) -> None:
        super().restart(ep)
        self.rec.cadence_of(ep).restart()


# ---------------------------------------------------------------------------------------
# lockstep episodes
# ---------------------------------------------------------------------------------------
@dataclass
class _LsEpisode:
    info: EpisodeInfo
    after_ns: int  # steps are stamped > after_ns ...
    end_ns: int | None = None  # ... and < end_ns (exclusive)
    n_expected: int | None = None
    success: bool | None = None  # set once ended
    ended_wall: float | None = None
    steps: list[int] = field(default_factory=list)  # step stamps assigned, in order
    emitted: int = 0
    begun: bool = False  # handed to the sink (one episode at a time: the oldest)
    stats: AlignStats = field(default_factory=AlignStats)
    start_tags: list[Any] = field(default_factory=list)  # event payloads (bag), see Recorder.event
    end_tags: list[Any] = field(default_factory=list)

    def accepts(self, t: int) -> bool:
        return t > self.after_ns and (self.end_ns is None or t < self.end_ns) and (
            self.n_expected is None or len(self.steps) < self.n_expected)

    @property
    def complete(self) -> bool:
        if self.success is None:
            return False
        if self.n_expected is not None:
            return self.emitted >= self.n_expected
        return self.emitted >= len(self.steps)


class Recorder:
    """Contract-driven episodes into a store (see module doc).

    ``store`` is an open :class:`EpisodeStore` (the caller closes it); ``source`` the default
    episode source (a start event's ``source=`` wins; an intervention during the episode
    makes it ``intervention``). ``on_episode(kind, info, index, success, cadence)`` is called
    after every commit (``kind='committed'``), skip (``'empty'``) and discard
    (``'discarded'``)."""

    def __init__(self, bound: BoundContract, store: Any, *, task: str, mode: str = "realtime",
                 source: str = "teleop", step_topic: str | None = None, step_timeout_s: float = 2.0,
                 end_timeout_s: float = 5.0, extra: Mapping[str, Any] | None = None,
                 on_episode: Callable[..., None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_event_log: Callable[[Any, int], None] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"recorder mode must be one of {list(MODES)}, got {mode!r}")
        self.bound = bound
        self.mode = mode
        self.lockstep = mode == "lockstep"
        self.task = task
        self.default_source = source
        self.step_timeout_s = step_timeout_s
        self.end_timeout_s = end_timeout_s
        self.clock = clock
        self.on_episode = on_episode
        self.on_event_log = on_event_log
        self.intervention_active = False
        self.sink = _Sink(self, store, bound.fps, source, extra)
        self._stamped: set[str] = {t for t, tb in bound.topics.items() if tb.has_header}
        self._cad: dict[int, Cadence] = {}
        self.cadence = Cadence(bound, self.lockstep, self._stamped)  # the newest episode's
        self.committed = self.discarded = self.empty = 0
        self.warnings: list[str] = []
        self.last_episode: dict[str, Any] | None = None
        if not self.lockstep:
            self.asm = EpisodeAssembler(bound, self.sink, task=task, open_at_close="discard")
            return
        if step_topic is None:
            step_topic = "/action" if "/action" in bound.topics else next(iter(bound.topics))
        if step_topic not in bound.topics:
            raise ValueError(f"step topic {step_topic} is not in contract {bound.name}: {list(bound.topics)}")
        self.step_topic = step_topic
        self.aligner = Aligner(bound)
        self._eps: list[_LsEpisode] = []  # started, not yet finished (oldest first)
        self._orphans: list[int] = []  # step stamps no episode has taken (yet)
        self._last_end_ns = -(1 << 62)
        self._newest: dict[str, int] = {}
        self._clock_ns = -(1 << 62)  # newest header stamp seen (the sim clock)
        self._seen_wall: dict[int, float] = {}  # step stamp -> wall time first seen
        self._absent: set[str] = set()  # topics that timed out: not waited for any more
        self.orphan_s = 1.0  # a step seen at most this long before its start event is adopted
        self._count = 0

    # -- state -----------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        if self.lockstep:
            return any(e.success is None for e in self._eps)
        return self.asm.recording

    @property
    def busy(self) -> bool:
        """An episode is recording or still being finished."""
        if self.lockstep:
            return bool(self._eps)
        return self.asm.recording or self.asm._ending is not None

    @property
    def closed_episodes(self) -> int:
        return self.committed + self.discarded + self.empty

    def unstamped_stamp(self, recv_ns: int) -> int:
        """The stamp an unstamped message gets: receipt time, or the sim clock in lockstep."""
        if self.lockstep:
            return self._clock_ns if self._clock_ns > -(1 << 62) else 0
        return int(recv_ns)

    # -- inputs ----------------------------------------------------------------------------
    def message(self, topic: str, stamp_ns: int, values: Any, recv_ns: int, stamped: bool = True) -> None:
        """One contract message (``values``: dict or zero-argument callable, see Aligner.push)."""
        stamp_ns = int(stamp_ns)
        if stamped:
            self._stamped.add(topic)
        if self.busy:
            self.cadence.on_message(topic, stamp_ns)
        if not self.lockstep:
            self.asm.message(topic, stamp_ns, values, int(recv_ns))
            return
        self.aligner.push(topic, stamp_ns, values)
        if stamp_ns > self._newest.get(topic, -(1 << 62)):
            self._newest[topic] = stamp_ns
        if stamped and stamp_ns > self._clock_ns:
            self._clock_ns = stamp_ns
        self._absent.discard(topic)
        if topic == self.step_topic:
            self._assign(stamp_ns)
        self._pump()

    def event(self, text: str, recv_ns: int, tag: Any = None) -> None:
        """A ``/teleop/event`` string (``start seed=3``, ``success steps=57 stamp=12.3`` ...).

        ``tag`` (e.g. the raw message, for a bag) is handed to ``on_event_log(tag, log_ns)``
        with the time the event should be logged at so that a converter splitting by event
        log times on the dataset grid cuts exactly the steps recorded here: realtime, the
        receipt time; lockstep, once the episode is finished, its first step's stamp (start)
        and its last step's stamp (success / failure / discard)."""
        try:
            ev, args = parse_event(text)
        except ValueError as e:
            self._warn(f"ignored event: {e}")
            self._log_tags([tag], self.unstamped_stamp(recv_ns))
            return
        if not self.lockstep:
            self._log_tags([tag], int(recv_ns))
            if ev in ("success", "failure"):  # steps=/stamp= are lockstep details
                args = {}
            if ev == "start":
                self.asm.start(int(recv_ns), **args)
            elif ev == "reset":  # the robot reset the twin: the episode starts at its stamp
                self.asm.event(text, int(recv_ns))
            elif ev == "rerecord":
                self.asm.discard(int(recv_ns), "rerecord")
                self.asm.start(int(recv_ns), **args)
            else:
                self.asm.event(ev, int(recv_ns))
            return
        if ev == "reset":  # lockstep follows stamps: nothing to re-anchor
            self._log_tags([tag], self.unstamped_stamp(recv_ns))
        elif ev == "start":
            self._ls_start(args)
            self._eps[-1].start_tags.append(tag)
        elif ev in ("success", "failure"):
            if not self._ls_end(ev == "success", args, tag=tag):
                self._log_tags([tag], self.unstamped_stamp(recv_ns))
        elif ev == "discard":
            if not self._ls_discard("discard", tag):
                self._log_tags([tag], self.unstamped_stamp(recv_ns))
        elif ev == "rerecord":
            self._ls_discard("rerecord")
            self._ls_start(args)
            self._eps[-1].start_tags.append(tag)
        self._pump()

    def _log_tags(self, tags: list[Any], log_ns: int) -> None:
        if self.on_event_log is None:
            return
        for t in tags:
            if t is not None:
                self.on_event_log(t, int(log_ns))

    def _log_episode_tags(self, e: _LsEpisode, end: bool = True) -> None:
        """An episode's events at the stamps that bracket its recorded steps (an episode
        without steps is left out of the log: it was not recorded either)."""
        if not e.steps:
            return
        self._log_tags(e.start_tags, e.steps[0])
        if end:
            self._log_tags(e.end_tags, e.steps[-1])

    def intervention(self, active: bool) -> None:
        self.intervention_active = bool(active)
        if active and self.recording:
            self.sink.intervened = True

    def tick(self, recv_ns: int) -> None:
        """Periodic (timer): realtime steps whose latency has passed; lockstep timeouts."""
        if not self.lockstep:
            self.asm.tick(int(recv_ns))
            return
        self._pump()

    def close(self, recv_ns: int | None = None) -> None:
        """Shutdown: finish episodes whose end event arrived with what is there; discard
        an episode still recording. Idempotent."""
        if not self.lockstep:
            self.asm.close(None if recv_ns is None else int(recv_ns))
            return
        self._pump()
        for e in list(self._eps):
            if e.success is not None:
                self._ls_finish(e, force=True)
            else:
                self._warn(f"episode {e.info.number} still recording at shutdown: discarded")
                self._eps.remove(e)
                self._log_episode_tags(e, end=False)
                self._drop(e, "shutdown")

    # -- telemetry -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "recording": self.recording, "episodes_committed": self.committed,
                             "episodes_discarded": self.discarded, "episodes_empty": self.empty,
                             "episodes_closed": self.closed_episodes}
        if self.busy:
            d["current"] = self.cadence.to_dict()
        if self.last_episode is not None:
            d["last"] = self.last_episode
        return d

    # -- sink callbacks --------------------------------------------------------------------
    def cadence_of(self, ep: EpisodeInfo) -> Cadence:
        return self._cad.get(ep.number, self.cadence)

    def _begin(self, ep: EpisodeInfo) -> None:
        self.cadence = self._cad[ep.number] = Cadence(self.bound, self.lockstep, self._stamped)

    def _ended(self, ep: EpisodeInfo, index: int | None, success: bool, cad: dict) -> None:
        self._cad.pop(ep.number, None)
        if index is None:
            self.empty += 1
            kind = "empty"
        else:
            self.committed += 1
            kind = "committed"
        self.last_episode = {"kind": kind, "index": index, "success": bool(success), "steps": ep.steps,
                             "cadence": cad, **{k: v for k, v in ep.args.items()}}
        if self.on_episode:
            self.on_episode(kind, ep, index, success, cad)

    def _discarded(self, ep: EpisodeInfo, reason: str) -> None:
        cad = self._cad.pop(ep.number, self.cadence)
        self.discarded += 1
        self.last_episode = {"kind": "discarded", "reason": reason, "steps": ep.steps,
                             **{k: v for k, v in ep.args.items()}}
        if self.on_episode:
            self.on_episode("discarded", ep, None, False, cad.to_dict())

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning(msg)

    # -- lockstep --------------------------------------------------------------------------
    def _ls_start(self, args: dict[str, str]) -> None:
        open_ = [e for e in self._eps if e.success is None]
        for e in open_:
            if not e.steps:  # a repeated start before any step (e.g. a re-sent start): replace it
                self._eps.remove(e)
                continue
            self._warn(f"'start' while episode {e.info.number} is recording: it ends as a failure")
            e.info.end_reason = "restarted"
            self._ls_end(False, {}, e)
        after = self._last_end_ns
        if self._eps:
            last = self._eps[-1]
            after = max(after, (last.end_ns - 1) if last.end_ns is not None else (last.steps[-1] if last.steps
                                                                                else last.after_ns))
        task = args.pop("task", None) or self.task
        info = EpisodeInfo(self._count, after, task, dict(args))
        self._count += 1
        e = _LsEpisode(info, after)
        self._eps.append(e)
        # steps that came (just) before the event -- transport reordering; older ones are
        # not this episode's (e.g. a twin driven between episodes)
        now = self.clock()
        for t in self._orphans:
            if e.accepts(t) and now - self._seen_wall.get(t, now) <= self.orphan_s:
                e.steps.append(t)
            else:
                self._seen_wall.pop(t, None)
        self._orphans = []

    def _ls_end(self, success: bool, args: dict[str, str], e: _LsEpisode | None = None, tag: Any = None) -> bool:
        if e is None:
            open_ = [x for x in self._eps if x.success is None]
            if not open_:
                self._warn(f"'{'success' if success else 'failure'}' with no episode recording: ignored")
                return False
            e = open_[-1]
        if tag is not None:
            e.end_tags.append(tag)
        e.success = bool(success)
        e.ended_wall = self.clock()
        try:
            if "steps" in args:
                e.n_expected = int(args["steps"])
                del e.steps[e.n_expected:]
            if "stamp" in args:
                e.end_ns = parse_stamp_ns(args["stamp"])
                e.steps = [t for t in e.steps if t < e.end_ns]
        except ValueError:
            self._warn(f"end event arguments {args} are not numbers: ignored")
        if e.end_ns is None and e.n_expected is None:
            e.end_ns = (e.steps[-1] + 1) if e.steps else e.after_ns + 1
        e.info.end_ns = e.end_ns
        return True

    def _ls_discard(self, reason: str, tag: Any = None) -> bool:
        open_ = [x for x in self._eps if x.success is None]
        if not open_:
            if reason == "discard":
                self._warn("'discard' with no episode recording: ignored")
            return False
        e = open_[-1]
        if tag is not None:
            e.end_tags.append(tag)
        self._eps.remove(e)
        self._log_episode_tags(e)
        self._last_end_ns = max(self._last_end_ns, e.steps[-1] if e.steps else e.after_ns)
        self._drop(e, reason)

    def _drop(self, e: _LsEpisode, reason: str) -> None:
        if e.begun:
            self.sink.discard(e.info, reason)
        else:
            self._discarded(e.info, reason)

    def _assign(self, t: int) -> None:
        for e in self._eps:
            if t in e.steps:
                return
        if t <= self._last_end_ns:
            return
        self._seen_wall.setdefault(t, self.clock())
        for e in self._eps:
            if e.accepts(t):
                bisect.insort(e.steps, t)
                return
        if t not in self._orphans:
            bisect.insort(self._orphans, t)
            for old in self._orphans[:-1000]:
                self._seen_wall.pop(old, None)
            del self._orphans[:-1000]

    def _ready(self, t: int) -> bool:
        for topic, tb in self.bound.topics.items():
            if not tb.required or topic in self._absent:
                continue
            if self._newest.get(topic, -(1 << 62)) < t:
                return False
        return True

    def _pump(self) -> None:
        now = self.clock()
        while self._eps:
            e = self._eps[0]
            self._begin_head(e)
            while e.emitted < len(e.steps):
                t = e.steps[e.emitted]
                if not self._ready(t):
                    if now - self._seen_wall.get(t, now) < self.step_timeout_s:
                        return
                    late = [tp for tp, tb in self.bound.topics.items() if tb.required and tp not in self._absent
                            and self._newest.get(tp, -(1 << 62)) < t]
                    self._warn(f"step at {from_ns(t):.4f} s: no message stamped >= it from {late} after "
                               f"{self.step_timeout_s:g} s; recorded with what there is, not waiting for "
                               f"them any more until they publish again")
                    self._absent.update(late)
                self._ls_emit(e, t)
            if not e.complete:
                if e.success is not None and e.ended_wall is not None and now - e.ended_wall > self.end_timeout_s:
                    self._warn(f"episode {e.info.number}: {e.emitted} of {e.n_expected} steps arrived within "
                               f"{self.end_timeout_s:g} s of its end event; committed as it is")
                    e.info.end_reason = "incomplete"
                    self._ls_finish(e, force=True)
                    continue
                return
            self._ls_finish(e)

    def _begin_head(self, e: _LsEpisode) -> None:
        if not e.begun:
            e.begun = True
            self.sink.begin(e.info)

    def _ls_emit(self, e: _LsEpisode, t: int) -> None:
        al = self.aligner
        if al.active:  # left open by an exception in an earlier step
            al.cancel()
        al.start(t)
        al.stop(t)
        steps = al.advance(t + self.bound.latency_ns + 1)
        if al.active:
            steps += al.flush()
        merge_stats(e.stats, al.stats)
        e.emitted += 1
        self._seen_wall.pop(t, None)
        for s in steps:
            e.info.steps += 1
            self.sink.step(e.info, s)

    def _ls_finish(self, e: _LsEpisode, force: bool = False) -> None:
        self._begin_head(e)
        if force:
            while e.emitted < len(e.steps):
                self._ls_emit(e, e.steps[e.emitted])
        self._eps.remove(e)
        last = e.steps[-1] if e.steps else e.after_ns
        self._last_end_ns = max(self._last_end_ns, last, (e.end_ns - 1) if e.end_ns is not None else last)
        self._orphans = [t for t in self._orphans if t > self._last_end_ns]
        st = e.stats
        st.start_ns = e.steps[0] if e.steps else e.after_ns
        st.end_ns = last
        self._log_episode_tags(e)
        self.sink.end(e.info, bool(e.success), st)


__all__ = ["Recorder", "Cadence", "BurstStamper", "MODES", "merge_stats", "parse_stamp_ns"]
