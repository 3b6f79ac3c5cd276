"""The actor / learner split of online RL, without ROS: the two cores that
``robot_rl.ros.rl_nodes`` wraps (and that tests drive directly, passing bytes by hand).

:class:`ActorCore` (next to the robot) steps a twin env with a :class:`PolicyNet`, lets a
simulated or a real human take over, groups transitions into batches (``batch_size``
steps, or the end of an episode), keeps every batch until the learner acknowledges it --
in a bounded queue that drops its oldest batch (counted) when full -- and re-sends
unacknowledged batches after ``resend_after_s``. New weights replace the policy only when
their version is higher and the message validates; until then the actor keeps acting with
what it has. Threads: :meth:`ActorCore.step` runs in the control loop and never packs,
hashes or waits; :meth:`pack_ready` / :meth:`due` run in a sender thread; :meth:`on_ack`
and :meth:`offer_weights` wherever messages arrive.

:class:`LearnerCore` (next to the GPU) owns a :class:`ReplayLog` (every accepted batch is
fsynced before it is acknowledged), the online :class:`ReplayBuffer` (+ demonstrations),
and an :class:`SACLearner`. It de-duplicates re-sent batches by (source, seq), trains at a
fixed ratio of updates to received transitions, publishes weights whose version never goes
backwards (also across restarts), checkpoints, and resumes from ``out``: checkpoint +
replay log rebuild the buffers and the set of acknowledged batches.

A *source* is one run of one actor: ``<actor id>#<random session>``, so an actor restarted
with the same id starts a fresh sequence and is never mistaken for its previous run.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import threading
import time
import zlib
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from robot_rl.rl.human import HumanConfig, SimulatedHuman
from robot_rl.rl.loop import DEFAULT_KEYS, RLConfig, env_obs_spec, make_rl_env
from robot_rl.rl.offline import IQL, OfflineConfig, pretrain_iql
from robot_rl.rl.replay import ReplayBuffer, ReplayLog, transitions_to_batch
from robot_rl.rl.sac import PolicyNet, SACConfig, SACLearner
from robot_rl.rl.wire import (WireError, pack_transitions, pack_weights, state_spec, unpack_transitions,
                              unpack_weights, weights_meta)

_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

#: (active, action or None) for the current observation: a human taking over
InterventionSource = Callable[[Mapping[str, np.ndarray]], "tuple[bool, np.ndarray | None]"]


def policy_arch(obs_spec: Mapping[str, tuple[tuple[int, ...], Any]], low, high, sac: SACConfig) -> str:
    """What an actor needs to build the learner's PolicyNet (travels with the weights)."""
    return json.dumps({"obs_spec": {k: [list(s), np.dtype(d).str] for k, (s, d) in obs_spec.items()},
                       "low": np.asarray(low, np.float32).tolist(), "high": np.asarray(high, np.float32).tolist(),
                       "sac": asdict(sac)}, sort_keys=True)


def twist_to_action(lin, ang, gripper: float, spec) -> np.ndarray:
    """A ``/ee_delta_command`` twist (m/s, rad/s) + gripper closure -> the ``ee_delta`` action
    the robot node would execute for it (inverse of :func:`robot_rl.teleop.devices.twist_si`)."""
    dt = 1.0 / float(spec.control_hz)
    a = np.r_[np.clip(np.asarray(lin, np.float64) * dt / spec.max_delta_pos, -1, 1),
              np.clip(np.asarray(ang, np.float64) * dt / spec.max_delta_rot, -1, 1), float(np.clip(gripper, 0, 1))]
    return a.astype(np.float32)


class TeleopIntervention:
    """An :data:`InterventionSource` fed by a teleop device's messages (``/teleop/intervention``,
    ``/ee_delta_command``, ``/gripper_command``; the node calls the ``on_*`` methods). While
    the intervention flag is on, the device's twist (zero when older than ``stale_s``) and
    gripper (the robot's current closure until the first command) are executed."""

    def __init__(self, spec, stale_s: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self.spec, self.stale_s, self.clock = spec, float(stale_s), clock
        self.active = False
        self.lin = np.zeros(3)
        self.ang = np.zeros(3)
        self.twist_at = -math.inf
        self.gripper: float | None = None

    def on_intervention(self, active: bool) -> None:
        self.active = bool(active)

    def on_twist(self, lin, ang) -> None:
        self.lin, self.ang, self.twist_at = np.asarray(lin, float), np.asarray(ang, float), self.clock()

    def on_gripper(self, closure: float) -> None:
        self.gripper = float(closure)

    def __call__(self, obs: Mapping[str, np.ndarray]) -> tuple[bool, np.ndarray | None]:
        if not self.active:
            return False, None
        fresh = self.clock() - self.twist_at <= self.stale_s
        lin, ang = (self.lin, self.ang) if fresh else (np.zeros(3), np.zeros(3))
        g = self.gripper
        if g is None:
            g = float(np.asarray(obs.get("gripper", [0.0])).reshape(-1)[0])
        return True, twist_to_action(lin, ang, g, self.spec)


# ================================================================================ actor ====
@dataclass
class ActorConfig:
    actor_id: str = "a0"
    task: str = "pick_cube"
    robot: str = "so101"
    keys: list[str] = field(default_factory=lambda: list(DEFAULT_KEYS))
    cameras: list[str] = field(default_factory=list)
    image_size: int = 96
    seed: int | None = None  # episode seeds; default: derived from actor_id (actors differ)
    human: str = "none"  # none | sim (SimulatedHuman) | external (an InterventionSource)
    human_cfg: HumanConfig = field(default_factory=HumanConfig)
    batch_size: int = 32  # transitions per message (an episode end sends early)
    max_pending: int = 64  # unacknowledged batches kept; beyond, the oldest is dropped
    window: int = 8  # batches sent and not yet acknowledged nor timed out
    resend_after_s: float = 2.0
    random_steps: int = 0  # uniform random actions first
    deterministic: bool = False
    sac: SACConfig = field(default_factory=SACConfig)  # the policy's shape until weights arrive

    def rl_config(self) -> RLConfig:
        return RLConfig(task=self.task, robot=self.robot, keys=list(self.keys), cameras=list(self.cameras),
                        image_size=self.image_size)

    def episode_seed0(self) -> int:
        s = self.seed if self.seed is not None else zlib.crc32(self.actor_id.encode()) % 10_000
        return int(s) * 100_000


@dataclass
class _Pending:
    blob: bytes
    n: int
    sent_at: float | None = None
    sends: int = 0


class ActorCore:
    def __init__(self, cfg: ActorConfig, env=None, intervention: InterventionSource | None = None,
                 clock: Callable[[], float] = time.monotonic, on_batch: Callable[[], None] | None = None):
        if not _ID.match(cfg.actor_id):
            raise ValueError(f"actor id {cfg.actor_id!r}: use 1-64 letters, digits, '_', '.', '-'")
        if cfg.human not in ("none", "sim", "external"):
            raise ValueError(f"human must be none, sim or external, got {cfg.human!r}")
        if cfg.human == "external" and intervention is None:
            raise ValueError("human='external' needs an intervention source")
        if cfg.batch_size < 1 or cfg.max_pending < 1 or cfg.window < 1:
            raise ValueError("batch_size, max_pending and window must be >= 1")
        self.cfg = cfg
        self.clock = clock
        self.on_batch = on_batch  # called (control thread) when a batch is ready to pack
        self.env = env if env is not None else make_rl_env(cfg.rl_config())
        self.keys = list(cfg.keys) + [f"image_{c}" for c in cfg.cameras]
        self.obs_spec = env_obs_spec(self.env, self.keys)
        self.low = np.asarray(self.env.action_space.low, np.float32)
        self.high = np.asarray(self.env.action_space.high, np.float32)
        self.source = f"{cfg.actor_id}#{secrets.token_hex(4)}"
        self.arch = policy_arch(self.obs_spec, self.low, self.high, cfg.sac)
        self.policy = PolicyNet(self.obs_spec, self.low, self.high, cfg.sac).eval()
        self.version = -1  # weights applied (-1: the initial random policy)
        self._staged: tuple[int, PolicyNet, str] | None = None  # validated, not yet applied
        self._offered = -1  # highest version validated (staged or applied)
        self.human = SimulatedHuman(self.env, cfg.human_cfg) if cfg.human == "sim" else None
        self.intervention = intervention if cfg.human == "external" else None
        self.rng = np.random.default_rng(cfg.episode_seed0())
        self._label: bool | None = None  # success / failure from a human, for the current step
        self._steps: list[dict[str, Any]] = []
        self._outbox: deque = deque()  # (steps, policy version) waiting to be packed
        self._lock = threading.Lock()  # pending, outbox, counts touched by several threads
        self.pending: OrderedDict[int, _Pending] = OrderedDict()
        self.next_seq = 0
        self.ack_latency_s: deque = deque(maxlen=5000)
        self.last_weights_error = ""
        self.counts = {"steps": 0, "episodes": 0, "successes": 0, "intervened_steps": 0, "batches": 0,
                       "sent": 0, "resent": 0, "acked_batches": 0, "acked_transitions": 0,
                       "rejected_batches": 0, "dropped_batches": 0, "dropped_transitions": 0,
                       "weights_applied": 0, "weights_rejected": 0, "weights_stale": 0, "labels": 0}
        self.episode_seed = cfg.episode_seed0()
        self.episode_return = 0.0
        self.recent_success: deque = deque(maxlen=20)
        self.obs = self._reset()

    # -- the control loop side -----------------------------------------------------------
    def _reset(self):
        obs, _ = self.env.reset(seed=self.episode_seed)
        if self.human is not None:
            self.human.reset(self.episode_seed)
        self.episode_return = 0.0
        return obs

    def label_episode(self, success: bool) -> None:
        """A human's verdict: the next step ends the episode, reward 1 (success) or 0."""
        self._label = bool(success)

    def step(self) -> dict[str, Any]:
        """One control step; never blocks on the network."""
        staged = self._staged
        if staged is not None:
            self._staged = None
            self.version, self.policy, self.arch = staged
            self.counts["weights_applied"] += 1
        o = {k: np.array(self.obs[k]) for k in self.keys}
        if self.counts["steps"] < self.cfg.random_steps:
            a = self.rng.uniform(self.low, self.high).astype(np.float32)
        else:
            a = self.policy.act(o, deterministic=self.cfg.deterministic, rng=self.rng)
        intervened = False
        if self.human is not None:
            a, intervened = self.human.step(self.obs, a)
        elif self.intervention is not None:
            active, ha = self.intervention(self.obs)
            if active and ha is not None:
                a, intervened = np.clip(np.asarray(ha, np.float32), self.low, self.high), True
        nobs, r, term, trunc, info = self.env.step(a)
        success = bool(info.get("success", False))
        label = self._label
        if label is not None:  # the human ends the episode: terminal, reward 1 or 0
            self._label = None
            r, term, trunc, success = float(label), True, False, label
            self.counts["labels"] += 1
        self._steps.append({"obs": o, "action": np.asarray(a, np.float32), "reward": float(r),
                            "next_obs": {k: np.array(nobs[k]) for k in self.keys}, "terminated": bool(term),
                            "truncated": bool(trunc), "intervened": intervened})
        self.counts["steps"] += 1
        self.counts["intervened_steps"] += int(intervened)
        self.episode_return += float(r)
        done = bool(term or trunc)
        if done:
            self.counts["episodes"] += 1
            self.counts["successes"] += int(success)
            self.recent_success.append(success)
            self.episode_seed += 1
            nobs = self._reset()
        self.obs = nobs
        if done or len(self._steps) >= self.cfg.batch_size:
            self.flush()
        return {"reward": float(r), "done": done, "intervened": intervened, "success": success}

    def flush(self) -> None:
        """Hand the steps collected so far to the sender as a batch (control thread)."""
        if not self._steps:
            return
        with self._lock:
            self._outbox.append((self._steps, self.version))
            while len(self._outbox) > self.cfg.max_pending:  # the sender is stuck: bound memory
                old, _ = self._outbox.popleft()
                self.counts["dropped_batches"] += 1
                self.counts["dropped_transitions"] += len(old)
        self._steps = []
        if self.on_batch is not None:
            self.on_batch()

    # -- the sender side -------------------------------------------------------------------
    def pack_ready(self) -> int:
        """Pack completed batches into messages (sender thread); returns how many."""
        done = 0
        while True:
            with self._lock:
                if not self._outbox:
                    return done
                steps, version = self._outbox.popleft()
            batch = transitions_to_batch(steps, self.keys)
            seq = self.next_seq
            self.next_seq += 1
            blob = pack_transitions(batch, self.source, seq, {"policy_version": str(version)})
            with self._lock:
                self.pending[seq] = _Pending(blob, len(steps))
                self.counts["batches"] += 1
                while len(self.pending) > self.cfg.max_pending:
                    _, old = self.pending.popitem(last=False)
                    self.counts["dropped_batches"] += 1
                    self.counts["dropped_transitions"] += old.n
            done += 1

    def due(self, now: float | None = None) -> list[tuple[int, bytes]]:
        """Batches to (re)send now, oldest first: never sent, or unacknowledged for
        ``resend_after_s``; at most ``window`` in flight. Marks them sent."""
        now = self.clock() if now is None else now
        ra = self.cfg.resend_after_s
        out = []
        with self._lock:
            inflight = sum(1 for p in self.pending.values() if p.sent_at is not None and now - p.sent_at < ra)
            for seq, p in self.pending.items():
                if inflight >= self.cfg.window:
                    break
                if p.sent_at is None or now - p.sent_at >= ra:
                    self.counts["resent" if p.sends else "sent"] += 1
                    p.sent_at, p.sends = now, p.sends + 1
                    out.append((seq, p.blob))
                    inflight += 1
        return out

    def resend_now(self) -> None:
        """Treat every pending batch as timed out (the learner (re)appeared)."""
        with self._lock:
            for p in self.pending.values():
                if p.sent_at is not None:
                    p.sent_at = -math.inf

    def on_ack(self, source: str, seq: int, ok: bool = True) -> bool:
        """The learner logged batch ``seq`` (``ok``) or refused it for good; False when the ack
        is not for this actor or the batch is no longer pending."""
        if source != self.source:
            return False
        with self._lock:
            p = self.pending.pop(int(seq), None)
            if p is None:
                return False
            if ok:
                self.counts["acked_batches"] += 1
                self.counts["acked_transitions"] += p.n
                if p.sent_at is not None and p.sent_at > -math.inf:
                    self.ack_latency_s.append(self.clock() - p.sent_at)
            else:
                self.counts["rejected_batches"] += 1
        return True

    @property
    def pending_batches(self) -> int:
        return len(self.pending) + len(self._outbox)

    # -- weights -----------------------------------------------------------------------------
    def offer_weights(self, blob: bytes) -> bool:
        """Validate weights and stage them for the control loop; False (counted, reason in
        ``last_weights_error``) when corrupt, not newer, or not fitting this actor."""
        try:
            meta = weights_meta(blob)
            version = int(meta["version"])
            if version <= self._offered:
                self.counts["weights_stale"] += 1
                return False
            arch = meta.get("arch", self.arch)
            if arch != self.arch:
                policy = self._policy_for(arch)
            else:
                policy = PolicyNet(self.obs_spec, self.low, self.high, self.policy.cfg)
            sd, version = unpack_weights(blob, expected=state_spec(policy))
            policy.load_state_dict(sd)
        except WireError as e:
            self.counts["weights_rejected"] += 1
            self.last_weights_error = str(e)
            return False
        self._offered = version
        self._staged = (version, policy.eval(), arch)
        return True

    def _policy_for(self, arch: str) -> PolicyNet:
        try:
            a = json.loads(arch)
            spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in a["obs_spec"].items()}
            low, high = np.asarray(a["low"], np.float32), np.asarray(a["high"], np.float32)
            sac = SACConfig.from_dict(a["sac"])
        except (ValueError, KeyError, TypeError) as e:
            raise WireError(f"weights carry an unreadable policy architecture ({e})") from None
        if spec != self.obs_spec:
            raise WireError(f"weights are for observations {sorted(spec)}; this actor observes {sorted(self.obs_spec)} "
                            f"(same --keys / --cameras / --image-size on learner and actors)")
        if low.shape != self.low.shape or not (np.allclose(low, self.low) and np.allclose(high, self.high)):
            raise WireError("weights are for another action space than this actor's env")
        return PolicyNet(spec, low, high, sac)

    def status(self) -> dict[str, Any]:
        lat = np.asarray(self.ack_latency_s, float)
        with self._lock:
            d: dict[str, Any] = dict(self.counts)
        d.update(source=self.source, weights_version=self.version, pending_batches=self.pending_batches,
                 next_seq=self.next_seq, success_rate=float(np.mean(self.recent_success)) if self.recent_success else 0.0)
        if lat.size:
            d["ack_ms_p50"] = float(np.percentile(lat, 50) * 1e3)
            d["ack_ms_p99"] = float(np.percentile(lat, 99) * 1e3)
        if self.last_weights_error:
            d["last_weights_error"] = self.last_weights_error
        return d

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001
            pass


# ============================================================================== learner ====
@dataclass
class LearnerConfig:
    out: str = "runs/rl_learner"
    task: str = "pick_cube"
    robot: str = "so101"
    keys: list[str] = field(default_factory=lambda: list(DEFAULT_KEYS))
    cameras: list[str] = field(default_factory=list)
    image_size: int = 96
    seed: int = 0
    capacity: int = 200_000
    demos: str | None = None
    demo_episodes: int | None = 20
    learning_starts: int = 500  # online transitions before the first update
    updates_per_transition: float = 1.0  # SACLearner.update calls per received transition (0: no limit)
    interventions_to_demos: bool = True  # HIL-SERL: intervened steps also go to the demo buffer
    intervention_penalty: float = 0.0
    checkpoint_every: int = 2000  # critic updates between checkpoints
    keep_segments: int | None = None  # replay log segments kept (None: all)
    sac: SACConfig = field(default_factory=SACConfig)
    # IQL pretraining on the demos at first start (steps > 0), and online IQL updates instead
    # of SAC (online='iql'), as in the single-process recipe; WSRL is single-process only
    offline: OfflineConfig = field(default_factory=lambda: OfflineConfig(steps=0, online="sac", wsrl=False))

    def rl_config(self) -> RLConfig:
        return RLConfig(task=self.task, robot=self.robot, keys=list(self.keys), cameras=list(self.cameras),
                        image_size=self.image_size)


@dataclass
class Ack:
    source: str
    seq: int
    ok: bool = True
    duplicate: bool = False
    reason: str = ""

    def text(self) -> str:
        return format_ack(self.source, self.seq, self.ok)


def format_ack(source: str, seq: int, ok: bool = True) -> str:
    return f"{source} {int(seq)} {'ok' if ok else 'rejected'}"


def parse_ack(text: str) -> tuple[str, int, bool]:
    """``"a0#1f2e 12 ok"`` -> (source, seq, ok); ValueError when malformed."""
    parts = text.split()
    if len(parts) != 3 or parts[2] not in ("ok", "rejected"):
        raise ValueError(f"malformed ack {text!r}")
    return parts[0], int(parts[1]), parts[2] == "ok"


class _Locked:
    """A replay buffer behind a lock, as SACLearner.sample sees it (size + sample)."""

    def __init__(self, buf: ReplayBuffer, lock: threading.Lock):
        self.buf, self.lock = buf, lock

    @property
    def size(self) -> int:
        with self.lock:
            return self.buf.size

    def sample(self, n: int, device="cpu"):
        with self.lock:
            return self.buf.sample(n, device)


class LearnerCore:
    """See the module docstring. Thread-safe: :meth:`receive` (one ingest thread) and
    :meth:`train` / :meth:`weights` / :meth:`checkpoint` (a training thread) may overlap."""

    CKPT = "learner.safetensors"
    VERSION_FILE = "weights_version.json"

    def __init__(self, cfg: LearnerConfig, obs_spec: Mapping[str, tuple[tuple[int, ...], Any]] | None = None,
                 low=None, high=None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if obs_spec is None or low is None or high is None:
            env = make_rl_env(cfg.rl_config())
            keys = list(cfg.keys) + [f"image_{c}" for c in cfg.cameras]
            obs_spec = env_obs_spec(env, keys)
            low, high = env.action_space.low, env.action_space.high
            env.close()
        self.obs_spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in obs_spec.items()}
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.action_dim = len(self.low)
        self.buf_lock = threading.Lock()  # the buffers
        self.train_lock = threading.Lock()  # the learner's networks
        self.ingest_lock = threading.Lock()  # the log, dedupe sets, counters of receive
        self.counts = {"batches": 0, "transitions": 0, "bytes": 0, "duplicates": 0, "corrupt": 0, "rejected": 0,
                       "checkpoints": 0, "resumed_batches": 0, "resumed_transitions": 0, "published": 0}
        self.per_source: dict[str, int] = {}
        self.last_error = ""
        self.logged: dict[str, set[int]] = {}
        self._tail: tuple[str, int] | None = None  # (source, seq) of the last batch added, episode open
        self.update_calls = 0
        self.published = -1  # highest weights version ever published
        self.stats_set = False
        self.last_info: dict[str, float] = {}
        ckpt = self.out / self.CKPT
        self.resumed = ckpt.exists() or any((self.out / "replay").glob("seg-*.safetensors"))
        extra: dict[str, Any] = {}
        if ckpt.exists():
            self.learner, extra = SACLearner.load(ckpt, device=None if cfg.sac.device == "auto" else cfg.sac.device)
            got = {k: (tuple(s), np.dtype(d)) for k, (s, d) in self.learner.policy.obs_spec.items()}
            if got != self.obs_spec:
                raise ValueError(f"{ckpt}: checkpoint observes {sorted(got)}, this learner {sorted(self.obs_spec)}: "
                                 f"use the same --keys / --cameras or another --out")
            self.update_calls = int(extra.get("update_calls", 0))
            self.stats_set = bool(extra.get("stats_set", False))
            self.published = int(extra.get("published", -1))
        else:
            self.learner = SACLearner(self.obs_spec, self.low, self.high, cfg.sac, seed=cfg.seed)
        self.arch = policy_arch(self.obs_spec, self.low, self.high, self.learner.cfg)
        vf = self.out / self.VERSION_FILE
        if vf.exists():
            try:
                self.published = max(self.published, int(json.loads(vf.read_text())["published"]))
            except (ValueError, KeyError, OSError):
                pass
        self.online = ReplayBuffer(self.obs_spec, self.action_dim, cfg.capacity, seed=cfg.seed)
        self.demos: ReplayBuffer | None = None
        if cfg.demos:
            keys = list(self.obs_spec)
            self.demos = ReplayBuffer.from_store(cfg.demos, keys, max_episodes=cfg.demo_episodes, seed=cfg.seed + 1,
                                                 capacity=cfg.capacity)
            if not self.stats_set:
                self.learner.set_obs_stats(self.demos)
                self.stats_set = True
        self.log = ReplayLog(self.out / "replay", keep_segments=cfg.keep_segments)
        for batch, meta in self.log.replay():  # rebuild buffers and the acknowledged set
            src, seq = meta.get("source", ""), int(meta.get("source_seq", -1))
            self._add(batch, src, seq)
            self.logged.setdefault(src, set()).add(seq)
            self.per_source[src] = self.per_source.get(src, 0) + len(batch["action"])
            self.counts["resumed_batches"] += 1
            self.counts["resumed_transitions"] += len(batch["action"])
        self.counts["transitions"] = self.counts["resumed_transitions"]
        self.counts["batches"] = self.counts["resumed_batches"]
        self._next_ckpt = (self.learner.updates // cfg.checkpoint_every + 1) * cfg.checkpoint_every \
            if cfg.checkpoint_every > 0 else math.inf
        self._online_view = _Locked(self.online, self.buf_lock)
        self.iql: IQL | None = None
        self._start_iql(ckpt.exists())

    def _start_iql(self, resumed: bool) -> None:
        off = self.cfg.offline
        if off.wsrl:
            raise ValueError("offline.wsrl is single-process only (robot-rl rl); the learner node keeps its demos")
        if off.online not in ("sac", "iql"):
            raise ValueError(f"offline.online must be 'sac' or 'iql', got {off.online!r}")
        iql_file = self.out / "iql.safetensors"
        if resumed:  # the pretraining happened before the first checkpoint; online IQL resumes
            if off.online == "iql" and iql_file.exists():
                self.iql = IQL(self.learner, off).load(iql_file)
            return
        if off.steps > 0:
            if self.demos is None:
                raise ValueError("offline.steps > 0 needs --demos (IQL pretrains on them)")
            iql = pretrain_iql(self.learner, self.demos, off)
            if off.online == "iql":
                self.iql = iql
                if off.online_actor_lr is not None:
                    for g in iql.pi_opt.param_groups:
                        g["lr"] = off.online_actor_lr
            self.checkpoint()  # a restart does not pretrain again
        elif off.online == "iql":
            self.iql = IQL(self.learner, off)  # online IQL from scratch

    # -- ingest ------------------------------------------------------------------------------
    def receive(self, data: bytes) -> Ack | None:
        """Validate, log durably, add to the buffers; returns the ack to send (None for a
        corrupt message, which the actor will re-send; ``ok=False`` for one that will never
        fit this learner)."""
        try:
            batch, meta = unpack_transitions(data, self.obs_spec, self.action_dim)
        except WireError as e:
            self.last_error = str(e)
            m = getattr(e, "meta", None)
            if m is None:
                self.counts["corrupt"] += 1
                return None
            self.counts["rejected"] += 1
            return Ack(m["actor"], m["seq"], ok=False, reason=str(e))
        src, seq = meta["actor"], meta["seq"]
        with self.ingest_lock:
            if seq in self.logged.get(src, ()):
                self.counts["duplicates"] += 1
                return Ack(src, seq, duplicate=True)
            self.log.append(batch, src, seq)  # durable before anything acknowledges it
            self._add(batch, src, seq)
            self.logged.setdefault(src, set()).add(seq)
            n = meta["n"]
            self.counts["batches"] += 1
            self.counts["transitions"] += n
            self.counts["bytes"] += len(data)
            self.per_source[src] = self.per_source.get(src, 0) + n
        return Ack(src, seq)

    def _add(self, batch: Mapping[str, np.ndarray], src: str, seq: int) -> None:
        term, trunc, interv = batch["terminated"], batch["truncated"], batch["intervened"]
        with self.buf_lock:
            # batches of one actor's episode continue each other only when consecutive
            if self._tail != (src, seq - 1):
                self.online.end_episode()
            self.online.add_batch(batch)
            self._tail = (src, seq) if not (term[-1] or trunc[-1]) else None
            if self.cfg.interventions_to_demos and interv.any():
                if self.demos is None:
                    self.demos = ReplayBuffer(self.obs_spec, self.action_dim, self.cfg.capacity, seed=self.cfg.seed + 1)
                n = len(interv)
                for i in np.flatnonzero(interv):
                    seg_end = i == n - 1 or not interv[i + 1]
                    self.demos.add({k: batch[f"obs.{k}"][i] for k in self.obs_spec}, batch["action"][i],
                                   float(batch["reward"][i]), {k: batch[f"next_obs.{k}"][i] for k in self.obs_spec},
                                   bool(term[i]), bool(trunc[i]) or bool(seg_end), True)

    def acked(self) -> dict[str, set[int]]:
        with self.ingest_lock:
            return {k: set(v) for k, v in self.logged.items()}

    # -- training ----------------------------------------------------------------------------
    def allowed_updates(self) -> float:
        """SACLearner.update calls the received data allows so far (inf: no limit)."""
        n = self.online.transitions
        if n < self.cfg.learning_starts:
            return 0
        if self.cfg.updates_per_transition <= 0:
            return math.inf
        return math.floor((n - self.cfg.learning_starts + 1) * self.cfg.updates_per_transition)

    def can_train(self) -> bool:
        return self.update_calls < self.allowed_updates()

    def train(self, n: int = 1) -> int:
        """Up to ``n`` update calls (each ``sac.utd`` critic steps + one actor step) within the
        update-to-data budget; checkpoints every ``checkpoint_every`` critic updates."""
        done = 0
        for _ in range(n):
            if not self.can_train():
                break
            if not self.stats_set:
                with self.buf_lock, self.train_lock:
                    self.learner.set_obs_stats(self.online)
                self.stats_set = True
            demos = _Locked(self.demos, self.buf_lock) if self.demos is not None else None
            with self.train_lock:
                if self.iql is not None:
                    for _ in range(self.learner.cfg.utd):
                        self.last_info = self.iql.step(self.learner.sample_penalised(
                            self._online_view, demos, self.cfg.intervention_penalty))
                else:
                    self.last_info = self.learner.update(self._online_view, demos,
                                                         intervention_penalty=self.cfg.intervention_penalty)
            self.update_calls += 1
            done += 1
            if self.learner.updates >= self._next_ckpt:
                self.checkpoint()
        return done

    @property
    def updates(self) -> int:
        return self.learner.updates

    # -- weights and checkpoints -------------------------------------------------------------
    def next_version(self) -> int:
        """Versions never go backwards: a learner resumed from a checkpoint older than its last
        published weights continues above them."""
        return max(self.learner.updates, self.published + 1)

    def weights(self) -> bytes:
        """The current policy weights as a message; records the version as published."""
        with self.train_lock:
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.learner.policy.state_dict().items()}
            version = self.next_version()
        blob = pack_weights(state, version, {"arch": self.arch, "updates": str(self.learner.updates)})
        self.published = version
        self.counts["published"] += 1
        _atomic_text(self.out / self.VERSION_FILE, json.dumps({"published": version}))
        return blob

    def checkpoint(self) -> Path:
        """Learner networks, optimisers and counters (the replay log is durable already)."""
        path = self.out / self.CKPT
        with self.train_lock:
            if self.iql is not None:  # first: a learner checkpoint always has its IQL state beside it
                self.iql.save(self.out / "iql.safetensors")
            self.learner.save(path, {"update_calls": self.update_calls, "stats_set": self.stats_set,
                                     "published": self.published, "transitions": self.online.transitions})
            self._next_ckpt = self.learner.updates + self.cfg.checkpoint_every if self.cfg.checkpoint_every > 0 \
                else math.inf
        _fsync(path)
        self.counts["checkpoints"] += 1
        return path

    def status(self) -> dict[str, Any]:
        with self.ingest_lock:
            d: dict[str, Any] = dict(self.counts)
            d["sources"] = len(self.per_source)
        d.update(updates=self.learner.updates, update_calls=self.update_calls, weights_version=self.published,
                 buffer_transitions=self.online.transitions, demo_transitions=self.demos.transitions if self.demos else 0)
        for k in ("q", "critic_loss", "alpha"):
            if k in self.last_info:
                d[k] = float(self.last_info[k])
        if self.last_error:
            d["last_error"] = self.last_error
        return d


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
