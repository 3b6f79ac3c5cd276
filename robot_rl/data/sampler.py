"""Fixed-length training windows over episodes (diffusion policy / ACT).

Window convention (the one of diffusion_policy's ``SequenceSampler``)
--------------------------------------------------------------------
A window is ``horizon`` consecutive steps ``s, s+1, ..., s+horizon-1`` of ONE episode
(episode-relative indices; windows never mix two episodes). Its *current step* is
``t = s + n_obs_steps - 1``. An item holds::

    item[k]          for k in obs_keys: steps t-n_obs_steps+1 .. t   shape (n_obs_steps, *shape)
    item[action_key]                     steps t-n_obs_steps+1 .. t-n_obs_steps+horizon
                                                                      shape (horizon, *shape)
    item["is_pad"]   bool (horizon,): True where that action step lies outside the episode

so ``action[n_obs_steps - 1]`` is the action taken at the current step and the first
``n_obs_steps - 1`` actions are the ones that led to the past observations. Steps before
the episode's first / after its last step are *edge padded*: they repeat the first / last
frame of that episode. Window starts ``s`` run over ``[-pad_before, L - horizon + pad_after]``
for an episode of ``L`` steps; the defaults ``pad_before = n_obs_steps - 1`` and
``pad_after = horizon - n_obs_steps`` make every step of every episode the current step
of exactly one window (``len(sampler) == total steps``). An episode too short for any
window (``L + pad_before + pad_after < horizon``) contributes none.

Images
------
Image keys (uint8 ``(H, W, C)`` rows) that are stored at the size the policy wants and
losslessly are loaded into memory with the other keys. An image key whose stored size differs
from ``image_size`` (``(h, w)``), or that is JPEG-coded in the store, is *not* loaded: each batch
reads just its rows, decoded and resized to ``image_size`` with area interpolation
(``EpisodeStore.read_frames``, which decodes JPEG at a DCT-scaled size; for a plain dict /
zarr group, ``arr[rows]`` + ``cv2.resize(INTER_AREA)``). That work releases the GIL, so a
trainer can run several loader threads (``robot_rl.learn.train.Prefetcher``).
"""
from __future__ import annotations

import os
from pathlib import Path
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from robot_rl.data.frames import resize_frames
from robot_rl.data.store import EpisodeStore, StoreError


def episode_split(n_episodes: int, val_ratio: float = 0.1, seed: int = 0,
                  max_train_episodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random train/val split by episode: two disjoint boolean masks of length n_episodes.

    At least one validation episode when ``val_ratio > 0`` and there are >= 2 episodes,
    and at least one training episode whenever there is any episode."""
    if not 0 <= val_ratio < 1:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    n_val = int(round(n_episodes * val_ratio))
    if val_ratio > 0 and n_episodes >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, max(0, n_episodes - 1))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_episodes)
    val = np.zeros(n_episodes, bool)
    val[perm[:n_val]] = True
    train = ~val
    if max_train_episodes is not None and train.sum() > max_train_episodes:
        keep = rng.choice(np.flatnonzero(train), size=max_train_episodes, replace=False)
        train[:] = False
        train[keep] = True
    return train, val


ImageSize = "tuple[int, int] | Mapping[str, tuple[int, int]] | None"


def _hw(size: Any, what: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if not (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ValueError(f"{what} must be (height, width) in pixels (or an int: square), got {size!r}")
    return int(size[0]), int(size[1])


def _gather_rows(arr: Any, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` for numpy arrays and zarr arrays (orthogonal selection); rows sorted unique."""
    if isinstance(arr, np.ndarray):
        return arr[rows]
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):  # one contiguous run
        return np.asarray(arr[int(rows[0]): int(rows[-1]) + 1])
    if hasattr(arr, "get_orthogonal_selection"):
        return np.asarray(arr.get_orthogonal_selection((rows,)))
    return np.asarray(arr[rows])


class _FrameReader:
    """Random-access, resized rows of one image key: ``store.read_frames`` when the source
    has it, else the key's array + :func:`resize_frames`. Thread-safe."""

    def __init__(self, store: Any, key: str, arr: Any, size: tuple[int, int] | None) -> None:
        self.key, self.arr, self.size = key, arr, size
        fn = getattr(store, "read_frames", None)
        self._read = fn if callable(fn) else None
        # a zarr array is fine to read from several threads; a foreign array-like may not be
        self._lock = None if self._read is not None or isinstance(arr, np.ndarray) or \
            hasattr(arr, "get_orthogonal_selection") else threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Frames of the (global, source) ``rows`` in any order / with repeats."""
        rows = np.asarray(rows, np.int64)
        flat = rows.reshape(-1)
        uniq, inv = np.unique(flat, return_inverse=True)
        if self._read is not None:
            frames = np.asarray(self._read(self.key, uniq, self.size))
        elif self._lock is not None:
            with self._lock:
                frames = resize_frames(_gather_rows(self.arr, uniq), self.size)
        else:
            frames = resize_frames(_gather_rows(self.arr, uniq), self.size)
        return frames[inv].reshape(*rows.shape, *frames.shape[1:])


def _codec(store: Any, key: str) -> str | None:
    fn = getattr(store, "codec", None)
    if not callable(fn):
        return None
    try:
        return fn(key)
    except (KeyError, ValueError):
        return None


def _resolve_source(src: Any) -> tuple[Mapping[str, Any], np.ndarray]:
    """-> (key -> array-like with rows along axis 0, episode_ends)."""
    if isinstance(src, (str, os.PathLike)):
        src = EpisodeStore.open(Path(src))
    if isinstance(src, EpisodeStore):
        return src.data, src.episode_ends
    if isinstance(src, Mapping) or hasattr(src, "__getitem__"):
        try:
            if "data" in src and "meta" in src:  # diffusion_policy layout (dict or zarr group)
                return src["data"], np.asarray(src["meta"]["episode_ends"][:], dtype=np.int64)
            if "episode_ends" in src:
                return src, np.asarray(src["episode_ends"][:], dtype=np.int64)
        except TypeError:
            pass
    raise TypeError("SequenceSampler needs an EpisodeStore, a store path, a mapping with 'data' and "
                    "'meta/episode_ends' (diffusion_policy layout) or a mapping of arrays with "
                    f"'episode_ends'; got {type(src).__name__}")


class SequenceSampler:
    """Windows of ``n_obs_steps`` observations and ``horizon`` actions (see module doc).

    ``store_or_arrays``: an EpisodeStore, a store path, a diffusion_policy-style group /
    dict (``data/<key>``, ``meta/episode_ends``) or a dict of arrays plus ``episode_ends``.
    ``episode_mask``: bool mask (or index list) of the episodes to use.
    ``in_memory``: load the selected keys of the selected episodes once (fast random
    access); otherwise every item reads its rows lazily from the (zarr) arrays.
    ``image_size``: ``(h, w)`` (or an int: square) every image key is delivered at, or a
    mapping ``{key: (h, w)}`` (keys not in it keep their stored size); None keeps every
    stored size. Image keys stored at another size, or JPEG-coded, are decoded and resized
    once and held in memory as uint8 when all of them fit in ``preload_images_mb`` (with
    ``in_memory``); otherwise they are read per batch, decoded and resized (see module doc:
    :attr:`lazy_images`), never loaded whole.
    """

    def __init__(self, store_or_arrays: Any, obs_keys: Sequence[str], action_key: str = "action",
                 n_obs_steps: int = 2, horizon: int = 16, pad_before: int | None = None,
                 pad_after: int | None = None, episode_mask: Sequence[bool] | np.ndarray | None = None,
                 in_memory: bool = True, image_size: Any = None, preload_images_mb: float = 4096) -> None:
        if isinstance(obs_keys, str):
            obs_keys = [obs_keys]
        obs_keys = list(obs_keys)
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps ({n_obs_steps}) and horizon ({horizon}) must be >= 1")
        if horizon < n_obs_steps:
            raise ValueError(f"horizon ({horizon}) must be >= n_obs_steps ({n_obs_steps})")
        if action_key in obs_keys or "is_pad" in obs_keys or action_key == "is_pad":
            raise ValueError(f"obs_keys {obs_keys} must not contain the action key {action_key!r} or 'is_pad'")
        pad_before = n_obs_steps - 1 if pad_before is None else int(pad_before)
        pad_after = horizon - n_obs_steps if pad_after is None else int(pad_after)
        if not (0 <= pad_before < horizon and 0 <= pad_after < horizon):
            raise ValueError(f"pad_before ({pad_before}) and pad_after ({pad_after}) must be in [0, horizon)")
        self._source = store_or_arrays
        self.obs_keys, self.action_key = obs_keys, action_key
        self.n_obs_steps, self.horizon = int(n_obs_steps), int(horizon)
        self.pad_before, self.pad_after = pad_before, pad_after
        self.in_memory = in_memory
        self.preload_images_mb = float(preload_images_mb)

        if isinstance(store_or_arrays, (str, os.PathLike)):
            store_or_arrays = EpisodeStore.open(Path(store_or_arrays))
        arrays, ends = _resolve_source(store_or_arrays)
        keys = obs_keys + [action_key]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise KeyError(f"SequenceSampler: keys {missing} not in the data; it has {sorted(arrays)}")
        self.image_size = image_size
        # image keys read per batch (decoded + resized): key -> reader
        self._frames: dict[str, _FrameReader] = {}
        self.image_shapes: dict[str, tuple[int, ...]] = {}  # (h, w, c) each image key is delivered at
        self.source_image_shapes: dict[str, tuple[int, ...]] = {}
        for k in obs_keys:
            shape = tuple(int(x) for x in getattr(arrays[k], "shape", ()))
            dt = getattr(arrays[k], "dtype", None)
            if len(shape) != 4 or dt is None or np.dtype(dt) != np.uint8 or shape[3] not in (1, 3, 4):
                if isinstance(image_size, Mapping) and k in image_size:
                    raise ValueError(f"image_size names {k!r}, which is not an image key (uint8 rows of "
                                     f"HxWx1/3/4; its rows are {dt} {shape[1:]})")
                continue
            src = shape[1:3]
            want = image_size.get(k) if isinstance(image_size, Mapping) else image_size
            want = src if want is None else _hw(want, f"image_size of {k!r}")
            self.source_image_shapes[k] = shape[1:]
            self.image_shapes[k] = (*want, shape[3])
            codec = _codec(store_or_arrays, k)
            if want != src or (codec is not None and str(codec).startswith("jpeg")):
                self._frames[k] = _FrameReader(store_or_arrays, k, arrays[k], None if want == src else want)
        n_eps = len(ends)
        if episode_mask is None:
            mask = np.ones(n_eps, bool)
        else:
            m = np.asarray(episode_mask)
            if m.dtype == bool:
                if m.shape != (n_eps,):
                    raise ValueError(f"episode_mask has shape {m.shape}, expected ({n_eps},)")
                mask = m.copy()
            else:  # episode indices
                mask = np.zeros(n_eps, bool)
                mask[m.astype(np.int64)] = True
        self.episode_mask = mask
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if n_eps else np.zeros(0, np.int64)
        sel = np.flatnonzero(mask)
        self.episode_indices = sel  # source episode index of each selected episode
        lengths = (ends[sel] - starts[sel]).astype(np.int64)
        src_starts = starts[sel]

        if in_memory:
            # read contiguous runs of selected episodes with one call per run and key
            runs: list[tuple[int, int]] = []
            for a, b in zip(src_starts, src_starts + lengths):
                if runs and runs[-1][1] == a:
                    runs[-1] = (runs[-1][0], int(b))
                else:
                    runs.append((int(a), int(b)))
            n_rows = int(lengths.sum())
            need_mb = sum(n_rows * int(np.prod(self.image_shapes[k])) for k in self._frames) / 2 ** 20
            preloaded: dict[str, np.ndarray] = {}
            if self._frames and need_mb <= preload_images_mb:
                # decode + resize once; afterwards a batch is a numpy gather of uint8 rows
                for k in list(self._frames):
                    read = self._frames.pop(k)
                    parts = [read(np.arange(r, min(b, r + 512))) for a, b in runs for r in range(a, b, 512)]
                    preloaded[k] = np.concatenate(parts) if parts else np.zeros((0, *self.image_shapes[k]), np.uint8)
            self.preloaded_images = sorted(preloaded)
            self._arrays = {k: arrays[k] for k in self._frames}  # the lazy sources
            for k in keys:
                if k in self._frames:
                    continue
                if k in preloaded:
                    self._arrays[k] = preloaded[k]
                    continue
                arr = arrays[k]
                parts = [np.asarray(arr[a:b]) for a, b in runs]
                self._arrays[k] = (np.concatenate(parts) if len(parts) != 1 else parts[0]) if parts \
                    else np.asarray(arr[0:0])
            self._starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) \
                if len(lengths) else np.zeros(0, np.int64)
        else:
            self.preloaded_images = []
            self._arrays = {k: arrays[k] for k in keys}
            self._starts = src_starts
        self._src_starts = src_starts.astype(np.int64)
        self._lengths = lengths
        n_win = np.where(lengths > 0, np.maximum(0, lengths - horizon + pad_before + pad_after + 1), 0)
        self._cum = np.cumsum(n_win)
        self._n = int(self._cum[-1]) if len(self._cum) else 0

    def __len__(self) -> int:
        return self._n

    @property
    def arrays(self) -> Mapping[str, Any]:
        """The rows of the selected episodes, per key (numpy in memory, else lazy arrays of
        the whole source; :attr:`lazy_images` keys are always the whole source at its stored
        size)."""
        return self._arrays

    @property
    def lazy_images(self) -> list[str]:
        """Image keys read, decoded and resized per batch instead of held in memory."""
        return list(self._frames)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_indices)

    def window(self, i: int) -> tuple[int, int]:
        """(source episode index, current step t within it) of item i (t may be < 0 or >= L
        when pad_before / pad_after exceed the defaults)."""
        e, s = self._locate(i)
        return int(self.episode_indices[e]), s + self.n_obs_steps - 1

    def _locate(self, i: int) -> tuple[int, int]:
        if not -self._n <= i < self._n:
            raise IndexError(f"window {i} out of range: the sampler has {self._n}")
        i = int(i) % self._n
        e = int(np.searchsorted(self._cum, i, side="right"))
        before = int(self._cum[e - 1]) if e else 0
        return e, i - before - self.pad_before

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        e, s = self._locate(i)
        L, base = int(self._lengths[e]), int(self._starts[e])
        seq = np.arange(s, s + self.horizon)
        idx = np.clip(seq, 0, L - 1)
        out: dict[str, np.ndarray] = {}
        for k, read in self._frames.items():
            out[k] = read(int(self._src_starts[e]) + idx[: self.n_obs_steps])
        if self.in_memory:
            for k in self.obs_keys:
                if k in self._frames:
                    continue
                out[k] = self._arrays[k][base + idx[: self.n_obs_steps]]
            out[self.action_key] = self._arrays[self.action_key][base + idx]
        else:
            lo, hi = int(idx[0]), int(idx[-1]) + 1  # obs rows lie inside the action rows
            for k in self.obs_keys:
                if k in self._frames:
                    continue
                rows = np.asarray(self._arrays[k][base + lo: base + int(idx[self.n_obs_steps - 1]) + 1])
                out[k] = rows[idx[: self.n_obs_steps] - lo]
            rows = np.asarray(self._arrays[self.action_key][base + lo: base + hi])
            out[self.action_key] = rows[idx - lo]
        out["is_pad"] = (seq < 0) | (seq >= L)
        return {k: out[k] for k in [*self.obs_keys, self.action_key, "is_pad"]}

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Items ``indices`` stacked along a new axis 0 -- the same as stacking
        ``self[i]``, but one vectorised gather per key when the data is in memory."""
        ind = np.asarray(indices, np.int64)
        if not self.in_memory:
            items = [self[int(i)] for i in ind]
            return {k: np.stack([it[k] for it in items]) for k in items[0]} if items else {}
        if len(ind) and not (np.all(ind >= -self._n) and np.all(ind < self._n)):
            raise IndexError(f"window indices out of range: the sampler has {self._n}")
        ind = ind % max(self._n, 1)
        e = np.searchsorted(self._cum, ind, side="right")
        before = np.where(e > 0, self._cum[np.maximum(e - 1, 0)], 0)
        s = ind - before - self.pad_before
        L, base = self._lengths[e], self._starts[e]
        seq = s[:, None] + np.arange(self.horizon)[None]
        clipped = np.clip(seq, 0, (L - 1)[:, None])
        rows = base[:, None] + clipped
        obs_rows = rows[:, : self.n_obs_steps]
        src_rows = self._src_starts[e][:, None] + clipped[:, : self.n_obs_steps]
        out = {k: (self._frames[k](src_rows) if k in self._frames else self._arrays[k][obs_rows])
               for k in self.obs_keys}
        out[self.action_key] = self._arrays[self.action_key][rows]
        out["is_pad"] = (seq < 0) | (seq >= L[:, None])
        return out

    def split(self, val_ratio: float = 0.1, seed: int = 0) -> tuple["SequenceSampler", "SequenceSampler"]:
        """(train, val) samplers over disjoint random subsets of this sampler's episodes."""
        sel = self.episode_indices
        tr, va = episode_split(len(sel), val_ratio, seed)
        n = len(self.episode_mask)
        masks = []
        for m in (tr, va):
            full = np.zeros(n, bool)
            full[sel[m]] = True
            masks.append(full)
        kw = dict(obs_keys=self.obs_keys, action_key=self.action_key, n_obs_steps=self.n_obs_steps,
                  horizon=self.horizon, pad_before=self.pad_before, pad_after=self.pad_after,
                  in_memory=self.in_memory, image_size=self.image_size, preload_images_mb=self.preload_images_mb)
        return (SequenceSampler(self._source, episode_mask=masks[0], **kw),
                SequenceSampler(self._source, episode_mask=masks[1], **kw))

    def __repr__(self) -> str:
        return (f"<SequenceSampler windows={self._n} episodes={self.n_episodes} obs={self.obs_keys} "
                f"action={self.action_key!r} n_obs_steps={self.n_obs_steps} horizon={self.horizon} "
                f"pad=({self.pad_before}, {self.pad_after}) {'in-memory' if self.in_memory else 'lazy'}"
                + (f" decoded-per-batch={self.lazy_images}" if self._frames else "")
                + (f" decoded-once={self.preloaded_images}" if self.preloaded_images else "") + ">")


__all__ = ["SequenceSampler", "episode_split", "resize_frames", "StoreError"]
