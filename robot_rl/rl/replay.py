"""Replay buffers for off-policy RL: one observation row per step, images stored once.

A transition ``(o_t, a_t, r_t, o_{t+1})`` is row ``t`` of the buffer plus the observation
of row ``t+1``: consecutive steps of an episode share their observations, so a 96x96
camera costs 27 KB per step, not 54 KB. The last observation of an episode is stored as
a row of its own with ``valid = False`` (it has no action). Rows are a ring: when the
buffer is full the oldest rows are overwritten, and a row whose successor has been
overwritten is invalidated.

Persistence: :class:`ReplayLog` appends every batch of transitions to a directory of
safetensors segments (written to a temporary name, fsynced, renamed), so a crash never
leaves a half-written segment and a resumed learner rebuilds the same buffer with
:meth:`ReplayBuffer.load_log`. No pickle anywhere.

Demonstrations load straight from an episode store (:meth:`ReplayBuffer.from_store`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

#: per-transition fields besides the observation keys
FIELDS = {"action": np.float32, "reward": np.float32, "terminated": np.bool_,
          "intervened": np.bool_}


class ReplayError(ValueError):
    """Bad input to a replay buffer or a corrupt replay log (one-line message)."""


def batch_len(batch: Mapping[str, np.ndarray]) -> int:
    n = {len(v) for v in batch.values()}
    if len(n) != 1:
        raise ReplayError(f"transition batch fields have different lengths: "
                          f"{ {k: len(v) for k, v in batch.items()} }")
    return n.pop()


class ReplayBuffer:
    """Ring buffer of transitions over observation keys ``obs_spec`` ({key: (shape, dtype)})."""

    def __init__(self, obs_spec: Mapping[str, tuple[tuple[int, ...], Any]], action_dim: int,
                 capacity: int = 200_000, seed: int = 0):
        if capacity < 2:
            raise ReplayError("replay capacity must be at least 2")
        self.obs_spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in obs_spec.items()}
        self.action_dim = int(action_dim)
        self.capacity = int(capacity)
        self.obs = {k: np.zeros((capacity, *s), d) for k, (s, d) in self.obs_spec.items()}
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.bool_)
        self.intervened = np.zeros(capacity, np.bool_)
        self.valid = np.zeros(capacity, np.bool_)
        self.ptr = 0  # next row to write
        self.rows = 0  # rows ever written (min(rows, capacity) are filled)
        self.transitions = 0  # transitions ever added
        self._open = False  # the row at ptr holds the next observation of an open episode
        self.rng = np.random.default_rng(seed)

    # -- filling ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of sampleable transitions."""
        return int(self.valid.sum())

    def __len__(self) -> int:
        return self.size

    def _write_obs(self, row: int, obs: Mapping[str, np.ndarray]) -> None:
        for k, (shape, _) in self.obs_spec.items():
            if k not in obs:
                raise ReplayError(f"observation lacks key {k!r} (has {sorted(obs)})")
            v = np.asarray(obs[k])
            if v.shape != shape:
                raise ReplayError(f"observation {k!r} has shape {v.shape}, buffer expects {shape}")
            self.obs[k][row] = v

    def _advance(self) -> int:
        row = self.ptr
        self.ptr = (self.ptr + 1) % self.capacity
        self.rows += 1
        # the row we are about to overwrite next may be the successor of a valid old row
        self.valid[row] = False
        return row

    def add(self, obs: Mapping[str, np.ndarray], action: np.ndarray, reward: float,
            next_obs: Mapping[str, np.ndarray], terminated: bool, truncated: bool,
            intervened: bool = False) -> None:
        """One step of an episode. Steps of one episode must come in order; ``obs`` of a
        continuing episode is taken to equal the previous call's ``next_obs``."""
        a = np.asarray(action, np.float32).reshape(-1)
        if a.shape != (self.action_dim,):
            raise ReplayError(f"action has {a.size} entries, buffer expects {self.action_dim}")
        if not np.all(np.isfinite(a)) or not np.isfinite(reward):
            raise ReplayError("non-finite action or reward refused")
        if not self._open:
            row = self._advance()
            # a new episode's first row: its ring predecessor no longer has a successor
            self.valid[(row - 1) % self.capacity] = False
            self._write_obs(row, obs)
        else:
            row = (self.ptr - 1) % self.capacity
        self.action[row] = a
        self.reward[row] = reward
        self.terminated[row] = bool(terminated)
        self.intervened[row] = bool(intervened)
        nxt = self._advance()
        self._write_obs(nxt, next_obs)
        self.valid[row] = True
        self.transitions += 1
        self._open = not (terminated or truncated)

    def end_episode(self) -> None:
        """Close the open episode (when an episode stops without terminated/truncated)."""
        self._open = False

    def add_batch(self, batch: Mapping[str, np.ndarray]) -> None:
        """Transitions as arrays: ``obs.<key>``, ``next_obs.<key>``, ``action``, ``reward``,
        ``terminated``, ``truncated`` and optionally ``intervened`` (see :func:`transitions_to_batch`)."""
        n = batch_len(batch)
        for k in ("action", "reward", "terminated", "truncated"):
            if k not in batch:
                raise ReplayError(f"transition batch lacks {k!r}")
        interv = batch.get("intervened", np.zeros(n, np.bool_))
        for i in range(n):
            self.add({k: batch[f"obs.{k}"][i] for k in self.obs_spec}, batch["action"][i],
                     float(batch["reward"][i]), {k: batch[f"next_obs.{k}"][i] for k in self.obs_spec},
                     bool(batch["terminated"][i]), bool(batch["truncated"][i]), bool(interv[i]))

    # -- sampling -----------------------------------------------------------------------
    def sample_indices(self, n: int) -> np.ndarray:
        filled = min(self.rows, self.capacity)
        if self.size == 0:
            raise ReplayError("cannot sample from an empty replay buffer")
        out = np.empty(0, np.int64)
        while out.size < n:  # rejection sampling: nearly every filled row is valid
            idx = self.rng.integers(0, filled, 2 * n)
            out = np.concatenate([out, idx[self.valid[idx]]])
        return out[:n]

    def sample(self, n: int, device: str | torch.device = "cpu") -> dict[str, Any]:
        """A batch of ``n`` transitions as torch tensors: ``obs`` / ``next_obs`` (dicts),
        ``action``, ``reward``, ``done`` (1 where terminated), ``intervened``."""
        idx = self.sample_indices(n)
        nxt = (idx + 1) % self.capacity

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).to(device)

        return {"obs": {k: t(v[idx]) for k, v in self.obs.items()},
                "next_obs": {k: t(v[nxt]) for k, v in self.obs.items()},
                "action": t(self.action[idx]), "reward": t(self.reward[idx]),
                "done": t(self.terminated[idx].astype(np.float32)),
                "intervened": t(self.intervened[idx].astype(np.float32))}

    # -- stores and logs ----------------------------------------------------------------
    @classmethod
    def from_store(cls, path: str | os.PathLike, keys: Iterable[str], capacity: int | None = None,
                   successful_only: bool = True, max_episodes: int | None = None,
                   reward: str = "sparse", seed: int = 0) -> "ReplayBuffer":
        """Demonstrations from an episode store: every step of every (successful) episode,
        reward 1 and terminal on the last step of a successful episode (the sparse-reward
        convention of the twin, where an episode ends at success), 0 elsewhere. When the
        store has a per-step ``reward`` key (and ``reward='store'``) that is used instead."""
        from robot_rl.data import EpisodeStore

        keys = list(keys)
        with EpisodeStore.open(path) as st:
            eps = [m for m in st.episodes_meta() if m["success"] or not successful_only]
            if max_episodes is not None:
                eps = eps[:max_episodes]
            if not eps:
                raise ReplayError(f"{path}: no {'successful ' if successful_only else ''}episodes to load")
            want = keys + ["action"] + (["reward"] if reward == "store" else [])
            missing = [k for k in want if k not in st.keys]
            if missing:
                raise ReplayError(f"{path}: store lacks keys {missing} (has {sorted(st.keys)})")
            spec = {k: (tuple(st.schema[k].shape), np.dtype(st.schema[k].dtype)) for k in keys}
            total = sum(m["length"] for m in eps)
            buf = cls(spec, int(st.schema["action"].shape[0]), capacity or total + len(eps) + 1, seed=seed)
            for m in eps:
                arr = st.episode(m["index"], want)
                n = m["length"]
                for t in range(n):
                    last = t == n - 1
                    r = float(arr["reward"][t]) if reward == "store" else float(last and m["success"])
                    nt = min(t + 1, n - 1)
                    buf.add({k: arr[k][t] for k in keys}, arr["action"][t], r,
                            {k: arr[k][nt] for k in keys}, terminated=last and m["success"], truncated=last)
        return buf

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The filled rows as flat arrays (for safetensors), oldest first."""
        filled = min(self.rows, self.capacity)
        order = (np.arange(filled) + (self.ptr if self.rows >= self.capacity else 0)) % self.capacity
        out = {f"obs.{k}": v[order] for k, v in self.obs.items()}
        out.update(action=self.action[order], reward=self.reward[order], terminated=self.terminated[order],
                   intervened=self.intervened[order], valid=self.valid[order])
        return out

    def save(self, path: str | os.PathLike) -> None:
        """The whole buffer to one safetensors file (atomic)."""
        from safetensors.numpy import save_file

        meta = {"obs_spec": json.dumps({k: [list(s), d.str] for k, (s, d) in self.obs_spec.items()}),
                "action_dim": str(self.action_dim), "capacity": str(self.capacity),
                "transitions": str(self.transitions), "open": str(int(self._open))}
        arrays = {k: np.ascontiguousarray(v) for k, v in self.state_arrays().items()}
        atomic_save(arrays, Path(path), meta, save_file)

    @classmethod
    def load(cls, path: str | os.PathLike, capacity: int | None = None, seed: int = 0) -> "ReplayBuffer":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in json.loads(meta["obs_spec"]).items()}
            buf = cls(spec, int(meta["action_dim"]), capacity or int(meta["capacity"]), seed=seed)
        except Exception as e:  # noqa: BLE001 - any failure is a corrupt file to the user
            raise ReplayError(f"{path}: not a replay buffer file ({type(e).__name__}: {e})") from None
        n = len(arrays["action"])
        keep = slice(max(0, n - buf.capacity), n)
        m = keep.stop - keep.start
        for k in spec:
            buf.obs[k][:m] = arrays[f"obs.{k}"][keep]
        buf.action[:m] = arrays["action"][keep]
        buf.reward[:m] = arrays["reward"][keep]
        buf.terminated[:m] = arrays["terminated"][keep]
        buf.intervened[:m] = arrays["intervened"][keep]
        buf.valid[:m] = arrays["valid"][keep]
        if m:
            buf.valid[m - 1] = buf.valid[m - 1] and m < buf.capacity  # its successor is gone
        buf.rows, buf.ptr = m, m % buf.capacity
        buf.transitions = int(meta.get("transitions", buf.size))
        buf._open = bool(int(meta.get("open", "0"))) and m < buf.capacity
        return buf


def atomic_save(arrays: Mapping[str, np.ndarray], path: Path, meta: Mapping[str, str], save_file) -> None:
    """Write to ``path.tmp``, fsync, rename: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(dict(arrays), str(tmp), metadata=dict(meta))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def transitions_to_batch(steps: list[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, np.ndarray]:
    """A list of step dicts (``obs``, ``action``, ``reward``, ``next_obs``, ``terminated``,
    ``truncated``, ``intervened``) -> the flat arrays :meth:`ReplayBuffer.add_batch` takes."""
    keys = list(keys)
    out: dict[str, np.ndarray] = {}
    for k in keys:
        out[f"obs.{k}"] = np.stack([np.asarray(s["obs"][k]) for s in steps])
        out[f"next_obs.{k}"] = np.stack([np.asarray(s["next_obs"][k]) for s in steps])
    out["action"] = np.stack([np.asarray(s["action"], np.float32) for s in steps])
    out["reward"] = np.array([s["reward"] for s in steps], np.float32)
    for k in ("terminated", "truncated", "intervened"):
        out[k] = np.array([bool(s.get(k, False)) for s in steps], np.bool_)
    return out


class ReplayLog:
    """Append-only directory of safetensors segments ``seg-<seq>.safetensors``, one per batch
    of transitions; each holds the batch's arrays plus its ``source`` and ``seq`` in metadata.

    ``append`` returns only after the segment is durable on disk, so a learner that
    acknowledges a batch after ``append`` never loses it. ``replay`` yields the segments in
    order; a resumed learner rebuilds its buffer from them.
    """

    def __init__(self, root: str | os.PathLike, keep_segments: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_segments = keep_segments
        segs = self.segments()
        self.next_seq = (int(segs[-1].stem.split("-")[1]) + 1) if segs else 0
        for tmp in self.root.glob("*.tmp"):  # a crash mid-write: the batch was never acked
            tmp.unlink()

    def segments(self) -> list[Path]:
        return sorted(self.root.glob("seg-*.safetensors"))

    def append(self, batch: Mapping[str, np.ndarray], source: str = "", source_seq: int = -1) -> int:
        from safetensors.numpy import save_file

        batch_len(batch)
        seq = self.next_seq
        atomic_save({k: np.ascontiguousarray(v) for k, v in batch.items()},
                    self.root / f"seg-{seq:09d}.safetensors",
                    {"source": source, "source_seq": str(source_seq)}, save_file)
        self.next_seq += 1
        if self.keep_segments is not None:
            for old in self.segments()[:-self.keep_segments]:
                old.unlink()
        return seq

    def replay(self) -> Iterable[tuple[dict[str, np.ndarray], dict[str, str]]]:
        from safetensors import safe_open

        for p in self.segments():
            try:
                with safe_open(str(p), "np") as f:
                    yield {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
            except Exception as e:  # noqa: BLE001
                raise ReplayError(f"{p}: corrupt replay segment ({type(e).__name__}: {e})") from None

    def load_into(self, buffer: ReplayBuffer) -> dict[str, int]:
        """Add every logged batch to ``buffer``; returns the highest ``source_seq`` per source
        (what the learner has acknowledged to each actor)."""
        acked: dict[str, int] = {}
        last: tuple[str, int] | None = None
        for batch, meta in self.replay():
            src, seq = meta.get("source", ""), int(meta.get("source_seq", -1))
            if last != (src, seq - 1):  # not the direct successor of the previous batch: no chaining
                buffer.end_episode()
            buffer.add_batch(batch)
            last = (src, seq)
            acked[src] = max(acked.get(src, -1), seq)
        return acked
