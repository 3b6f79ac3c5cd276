"""Chunk samplers: how a new action chunk is produced from an observation history, given
the previous chunk and the inference delay d (control steps until the new chunk arrives).

Modes (:class:`SamplerSettings`.mode):

* ``cold`` -- the policy's own sampling from scratch every query (diffusion: Gaussian noise
  through a DDPM or DDIM schedule with ``num_steps`` network evaluations; other policies:
  one forward pass). What synchronous and naive asynchronous execution use.
* ``warm`` -- RTI warm start (after Duan, Yin & Kragic 2025, "Real-time Iteration Scheme
  for Diffusion Policy"), diffusion policies only. The previous chunk is shifted by the
  number of control steps between the two observations (which, queries running back to
  back, is the measured delay -- not one step), its tail padded with its last action,
  optionally re-noised to an intermediate step K' (``k_prime``), and the reverse process
  runs from there along a short step list (``warm_steps`` network evaluations, DDIM
  updates). Delay-aware: the first d actions from the current step on will execute from
  the previous chunk whatever this query returns, so they are held at the previous
  chunk's values throughout (hard inpainting, no extra network evaluations) and the new
  chunk continues from them.
  Discrete dimensions (the gripper) resist warm starts: a chunk that says "open" pulls the
  next one toward "open" even after the observation says "close". ``discrete`` handles
  them: ``scale`` multiplies the discrete dimensions of the warm start (normalised, so 0 is
  the middle of the range) by ``discrete_scale`` so the network decides them afresh;
  ``snap`` rounds them to the nearer end of the data's range (open / closed) in every
  chunk the warm and rtc modes return; ``scale_snap`` does both; ``none`` neither.
  Fallback: the first network evaluation already yields an estimate x0 of the clean
  chunk. When its RMS distance (normalised units, the future rows that are not held, the
  continuous dimensions) to the warm start exceeds ``fallback_threshold``, the network
  "disagrees" with the warm start -- the observation moved away from what the previous
  chunk planned for (a reset, a bump, an intervention) -- and the query is redone cold.
  The check costs no extra evaluation; ``fallbacks`` counts how often it fires.
  Episode starts: the first query of an episode has no previous chunk. ``start="hold"``
  (default) warm-starts it from the chunk that holds the robot still -- zero motion for
  ``ee_delta``, the measured joint positions for ``joint_pos``, the measured gripper --
  with the same ``warm_steps`` evaluations from K' (no fallback check: the hold chunk is a
  neutral prior, not a stale plan), so an episode's first query costs what a warm one
  does. ``start="cold"`` samples it with the cold sampler, or a DDIM sample of
  ``start_steps`` steps. A sampler that does not know the action mode, or whose policy does
  not observe the joints / gripper the hold chunk needs, starts cold.
* ``rtc`` -- real-time chunking (after Black, Galliker & Levine 2025). Diffusion: sample
  from noise with guidance toward the previous chunk -- the d rows that execute anyway get
  weight 1, the rest of the overlap exponentially decaying weights, rows past the
  previous chunk's end weight 0 -- via the pseudo-inverse guidance (PiGDM) correction of
  the noise estimate with a vector-Jacobian product through the denoiser, its weight
  clipped at ``rtc_beta``; the held rows are set exactly at the end. Other policies (ACT,
  BC), which cannot be guided: the new chunk is blended with the previous one with the
  same weights (the prefix-conditioned equivalent; ACT's temporal ensembling is an
  execution mode of :class:`~robot_rl.runtime.executor.ChunkExecutor`).

All samplers are batched: ``query`` takes (B, n_obs_steps, ...) observation histories and
``idx`` (the slots, e.g. environments or robots, whose previous chunks they continue).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from robot_rl.runtime.settings import SettingsBase

MODES = ("cold", "warm", "rtc")
STARTS = ("hold", "cold")
DISCRETE = ("none", "scale", "snap", "scale_snap")


class SamplerError(ValueError):
    """Settings that do not fit the policy or each other."""


@dataclass
class SamplerSettings(SettingsBase):
    error = SamplerError  # (class attributes, not fields)
    what = "sampler settings"
    mode: str = "warm"
    # cold sampling (and every fallback): the diffusers scheduler and its step count
    scheduler: str | None = None  # ddpm | ddim (None: the policy's)
    num_steps: int | None = None  # None: the policy's num_inference_steps
    # RTI warm start
    warm_steps: int = 1  # network evaluations per warm query
    k_prime: int = 30  # first step of the warm reverse process (0 .. num_train_timesteps - 1)
    renoise: bool = True  # re-noise the shifted chunk to K' (False: start from its noise-free mean)
    discrete: str = "snap"  # none | scale | snap | scale_snap
    discrete_scale: float = 0.5
    fallback_threshold: float = 0.3  # RMS distance, normalised units (inf: never fall back)
    hold_delay: bool = True  # delay-aware: keep the d rows that execute anyway at the previous values
    # warm / rtc, an episode's first query (no previous chunk): warm-start from the chunk that
    # holds the robot still ("hold"), or sample it cold ("cold": DDIM with start_steps steps,
    # None: the cold sampler above). Fallbacks always use the cold sampler above.
    start: str = "hold"
    start_steps: int | None = None
    # real-time chunking
    rtc_steps: int = 5  # DDIM steps of the guided sample
    rtc_beta: float = 5.0  # clip on the guidance weight

    def check(self, policy=None) -> "SamplerSettings":
        if self.mode not in MODES:
            raise SamplerError(f"sampler mode must be one of {MODES}, got {self.mode!r}")
        if self.start not in STARTS:
            raise SamplerError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.discrete not in DISCRETE:
            raise SamplerError(f"discrete must be one of {DISCRETE}, got {self.discrete!r}")
        if self.warm_steps < 1 or self.rtc_steps < 1:
            raise SamplerError("warm_steps and rtc_steps must be >= 1")
        if self.num_steps is not None and self.num_steps < 1:
            raise SamplerError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.start_steps is not None and self.start_steps < 1:
            raise SamplerError(f"start_steps must be >= 1 (or None: the cold sampler), got {self.start_steps}")
        if not 0.0 <= self.discrete_scale <= 1.0:
            raise SamplerError(f"discrete_scale must be in [0, 1], got {self.discrete_scale}")
        if self.rtc_beta <= 0:
            raise SamplerError(f"rtc_beta must be > 0, got {self.rtc_beta}")
        if policy is not None:
            diffusion = is_diffusion(policy)
            if self.mode == "warm" and not diffusion:
                raise SamplerError(f"mode 'warm' needs a diffusion policy; {policy.type_name!r} has no reverse "
                                   "process to warm-start (use 'rtc', which blends chunks, or 'cold')")
            if diffusion:
                T = int(policy.config.num_train_timesteps)
                if not 1 <= self.k_prime < T:
                    raise SamplerError(f"k_prime must be in 1..{T - 1}, got {self.k_prime}")
                if self.warm_steps > self.k_prime + 1:
                    raise SamplerError(f"warm_steps {self.warm_steps} > k_prime + 1 = {self.k_prime + 1}")
                if self.scheduler not in (None, "ddpm", "ddim"):
                    raise SamplerError(f"scheduler must be 'ddpm' or 'ddim', got {self.scheduler!r}")
        return self


@dataclass
class QueryResult:
    chunks: np.ndarray  # (B, chunk_len, A) robot units; row 0 = the observation's step
    nfe: np.ndarray  # (B,) network evaluations spent on each row's chunk
    fallback: np.ndarray  # (B,) bool: a warm query redone cold
    cold: np.ndarray  # (B,) bool: sampled from scratch (no usable previous chunk, cold mode, fallback)
    distance: np.ndarray  # (B,) warm-start distance of the fallback check (nan where not checked)
    start: np.ndarray | None = None  # (B,) bool: no previous chunk was continued (an episode's first query)


def is_diffusion(policy) -> bool:
    return all(hasattr(policy, a) for a in ("denoise", "encode_obs", "alphas_cumprod", "sample"))


def overlap_weights(rows: int, held: int, overlap_end: int) -> np.ndarray:
    """Guidance / blending weights per chunk row: 1 for the ``held`` rows that execute
    anyway, then decaying to 0 over the rest of the overlap with the previous chunk
    (rows < ``overlap_end``), 0 beyond it (the RTC paper's soft mask shape)."""
    w = np.zeros(rows, np.float32)
    held = max(0, min(held, rows))
    end = max(held, min(overlap_end, rows))
    w[:held] = 1.0
    if end > held:
        i = np.arange(held, end)
        c = (end - i) / (end - held + 1.0)
        w[held:end] = c * (np.exp(c) - 1.0) / (math.e - 1.0)
    return w


class ChunkSampler:
    """Batched sampler over ``batch`` slots, each remembering its previous chunk.

    ``query(obs, steps, delays, idx)``: ``steps[b]`` is the control-step index of the
    latest observation of row b (any origin, increasing within an episode), ``delays[b]``
    the planned delay d. ``reset(idx)`` forgets the previous chunks (a new episode)."""

    def __init__(self, policy, settings: SamplerSettings | None = None, batch: int = 1,
                 discrete_dims: Sequence[int] = (), action_mode: str | None = None):
        self.policy = policy
        self.action_mode = action_mode
        self.settings = (settings or SamplerSettings()).check(policy)
        self.batch = int(batch)
        c = policy.config
        self.diffusion = is_diffusion(policy)
        self.A = int(c.action_dim)
        self.T_obs = int(c.n_obs_steps)
        self.chunk_len = int(policy.chunk_len)
        self.H = int(c.horizon) if self.diffusion else self.chunk_len  # rows kept per slot
        self.offset = self.T_obs - 1 if self.diffusion else 0  # row of the current step
        dd = [int(d) % self.A for d in discrete_dims]
        self.discrete_dims = sorted(set(dd))
        self.cont_dims = [d for d in range(self.A) if d not in self.discrete_dims]
        self._prev = np.zeros((self.batch, self.H, self.A), np.float32)  # normalised (diffusion) / robot units
        self._prev_step = np.zeros(self.batch, np.int64)
        self._has_prev = np.zeros(self.batch, bool)
        self._scheds: dict = {}
        self._snap_ends: torch.Tensor | None = None  # discrete dims' (lo, hi) in robot units
        self.counts = {"queries": 0, "chunks": 0, "warm": 0, "cold": 0, "fallbacks": 0, "nfe": 0, "vjp": 0,
                       "hold_starts": 0}

    # -- state ------------------------------------------------------------------------------
    def reset(self, idx: Sequence[int] | np.ndarray | None = None) -> None:
        if idx is None:
            self._has_prev[:] = False
        else:
            self._has_prev[np.asarray(idx, np.int64)] = False

    def update(self, **changes) -> SamplerSettings:
        """Change settings at run time (validated; the previous chunks are kept)."""
        new = replace(self.settings, **changes).check(self.policy)
        self.settings = new
        return new

    # -- helpers ----------------------------------------------------------------------------
    def _scheduler(self, kind: str | None, n: int | None):
        c = self.policy.config
        key = (kind or c.scheduler, int(n or c.num_inference_steps))
        if key not in self._scheds:
            self._scheds[key] = self.policy.make_scheduler(*key)
        return self._scheds[key], key[1]

    def _shifted(self, idx: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Previous chunks shifted to the new observation step: (B, H, A), usable mask, shift."""
        shift = steps - self._prev_step[idx]
        ok = self._has_prev[idx] & (shift >= 0) & (shift < self.H - self.offset)
        y = np.zeros((len(idx), self.H, self.A), np.float32)
        for b in np.flatnonzero(ok):
            p = self._prev[idx[b]]
            s = int(shift[b])
            y[b, : self.H - s] = p[s:]
            y[b, self.H - s:] = p[-1]  # pad the tail with the last planned action
        return y, ok, shift

    def _held_rows(self, delays: np.ndarray) -> np.ndarray:
        if not self.settings.hold_delay:
            return np.full(len(delays), self.offset, np.int64)
        return self.offset + np.clip(np.asarray(delays, np.int64), 0, self.chunk_len)

    # -- the query --------------------------------------------------------------------------
    @torch.no_grad()
    def query(self, obs_history: Mapping[str, Any], steps, delays=None, idx=None,
              generator: torch.Generator | None = None) -> QueryResult:
        st = self.settings
        steps = np.atleast_1d(np.asarray(steps, np.int64))
        B = len(steps)
        idx = np.arange(B) if idx is None else np.atleast_1d(np.asarray(idx, np.int64))
        delays = np.zeros(B, np.int64) if delays is None else np.broadcast_to(np.asarray(delays, np.int64), (B,)).copy()
        if len(idx) != B:
            raise SamplerError(f"{len(idx)} slots for {B} observation histories")
        nfe = np.zeros(B, np.int64)
        fallback = np.zeros(B, bool)
        cold = np.ones(B, bool)
        dist = np.full(B, np.nan)
        began = np.ones(B, bool)
        p = self.policy
        if not self.diffusion:
            chunks = np.asarray(p.predict_chunks(obs_history, generator), np.float32)
            nfe[:] = 1
            if st.mode == "rtc":
                y, ok, shift = self._shifted(idx, steps)
                held = self._held_rows(delays)
                for b in np.flatnonzero(ok):
                    w = overlap_weights(self.H, int(held[b]), self.H - int(shift[b]))[:, None]
                    chunks[b] = w * y[b] + (1 - w) * chunks[b]
                cold = ~ok
                began = ~ok
            self._store(idx, steps, chunks)
            out = chunks
        else:
            cond = p.encode_obs(p.obs_to_tensors(obs_history))
            x = torch.zeros((B, self.H, self.A), device=cond.device)
            todo_cold = np.ones(B, bool)
            short = np.zeros(B, bool)  # episode starts sampled cold with start_steps DDIM steps
            if st.mode in ("warm", "rtc"):
                y, ok, shift = self._shifted(idx, steps)
                began = ~ok
                held = self._held_rows(delays)
                # episode starts: warm start from holding still (the hold chunk only when one is needed)
                hold = self._hold_chunks(obs_history, B) if st.start == "hold" and not ok.all() else None
                if hold is not None:
                    rows = np.flatnonzero(~ok)
                    r = torch.as_tensor(rows, device=cond.device)
                    xr, n, _ = self._warm(cond[r], hold[rows], held[rows], generator)
                    x[r] = xr
                    nfe[rows] = n
                    todo_cold[rows] = False
                    self.counts["hold_starts"] += len(rows)
                short = ~ok if st.start_steps is not None else short  # (hold-started rows are not cold)
                rows = np.flatnonzero(ok)
                if len(rows):
                    r = torch.as_tensor(rows, device=cond.device)
                    if st.mode == "warm":
                        xr, n, d = self._warm(cond[r], y[rows], held[rows], generator)
                        dist[rows] = d
                        bad = ~(d <= st.fallback_threshold)
                        fallback[rows] = bad
                        nfe[rows] = n  # a fallback spent them too
                        good = rows[~bad]
                        x[torch.as_tensor(good, device=cond.device)] = xr[torch.as_tensor(np.flatnonzero(~bad))]
                        todo_cold[good] = False
                    else:
                        xr, n = self._rtc(cond[r], y[rows], held[rows], shift[rows], generator)
                        x[r] = xr
                        nfe[rows] = n
                        todo_cold[rows] = False
            for rc, (kind, steps_n) in ((np.flatnonzero(todo_cold & ~short), (st.scheduler, st.num_steps)),
                                        (np.flatnonzero(todo_cold & short), ("ddim", st.start_steps))):
                if len(rc):
                    sched, n = self._scheduler(kind, steps_n)
                    r = torch.as_tensor(rc, device=cond.device)
                    x[r] = p.sample(cond[r], scheduler=sched, generator=generator)
                    nfe[rc] += n
            cold = todo_cold
            if self.discrete_dims and st.discrete in ("snap", "scale_snap") and st.mode != "cold":
                x = self._snap(x)  # (cold mode stays the policy's own sampling)
            xn = x.float().cpu().numpy()
            self._store(idx, steps, xn)
            out = p.unnormalize_actions(x)[:, self.offset:].float().cpu().numpy()
        c = self.counts
        c["queries"] += 1
        c["chunks"] += B
        c["cold"] += int(cold.sum())
        c["warm"] += int((~cold).sum())
        c["fallbacks"] += int(fallback.sum())
        c["nfe"] += int(nfe.sum())
        return QueryResult(out.astype(np.float32), nfe, fallback, cold, dist, began)

    def _hold_chunks(self, obs_history: Mapping[str, Any], B: int) -> np.ndarray | None:
        """(B, H, A) normalised chunks that hold the robot where the latest observation has
        it; None when the action mode or the observed keys do not say where that is."""
        p = self.policy

        def latest(key: str) -> np.ndarray:  # (B, dim) from (B, T, dim) or one unbatched (T, dim)
            v = np.asarray(obs_history[key], np.float32)
            return (v[None] if v.ndim == 2 else v)[:, -1]

        a = np.zeros((B, self.A), np.float32)  # ee_delta: zero motion
        if self.action_mode == "joint_pos":
            if "joint_pos" not in obs_history:
                return None
            q = latest("joint_pos")
            n = self.A - len(self.discrete_dims)
            if q.shape[-1] < n:
                return None
            a[:, :n] = q[:, :n]
        elif self.action_mode != "ee_delta":
            return None
        if self.discrete_dims:
            if "gripper" not in obs_history:
                return None
            a[:, self.discrete_dims] = latest("gripper")[:, :1]
        t = torch.as_tensor(np.repeat(a[:, None], self.H, 1), device=p.alphas_cumprod.device)
        return p.normalize_actions(t).float().cpu().numpy()

    def _snap(self, x: torch.Tensor) -> torch.Tensor:
        """Round the discrete dimensions to the nearer end of their range, in robot units: the
        data's min or max, within the gripper's command range [0, 1]. (A dimension that never
        varied in the data normalises to 0 and stays at its value: snapping there in
        normalised units would move it to value +- 1.)"""
        p, dd = self.policy, self.discrete_dims
        if self._snap_ends is None or self._snap_ends.device != x.device:  # fixed per policy: once
            pts = torch.tensor([[-1.0] * self.A, [1.0] * self.A, [0.0] * self.A], device=x.device)
            lo, hi, mid = p.unnormalize_actions(pts)[:, dd]
            # a [0, 1] command spans at most 1: a wider "range" is the normaliser's constant case
            const = (hi - lo) > 1.0 + 1e-4
            self._snap_ends = torch.stack([torch.where(const, mid, lo.clamp(0.0, 1.0)),
                                           torch.where(const, mid, hi.clamp(0.0, 1.0))])
        lo, hi = self._snap_ends
        xr = p.unnormalize_actions(x)
        v = xr[..., dd]
        xr[..., dd] = torch.where((v - lo).abs() <= (v - hi).abs(), lo, hi)
        out = x.clone()
        out[..., dd] = p.normalize_actions(xr)[..., dd]
        return out

    def _store(self, idx: np.ndarray, steps: np.ndarray, chunks: np.ndarray) -> None:
        self._prev[idx] = chunks
        self._prev_step[idx] = steps
        self._has_prev[idx] = True

    def _noise(self, shape, generator, device) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device="cpu").to(device)

    def _warm_steps(self) -> list[int]:
        st = self.settings
        ts = np.round(np.linspace(st.k_prime, 0, st.warm_steps + 1)[:-1]).astype(int)
        out: list[int] = []
        for t in ts:  # strictly decreasing, >= 0
            if not out or t < out[-1]:
                out.append(int(t))
        return out

    def _warm(self, cond, y: np.ndarray, held: np.ndarray, generator):
        """RTI warm start for rows with a usable previous chunk: (x0, nfe, fallback distance)."""
        st, p = self.settings, self.policy
        dev = cond.device
        yt = torch.as_tensor(y, device=dev)
        B = yt.shape[0]
        rows = torch.arange(self.H, device=dev)
        hold = rows[None, :] < torch.as_tensor(held, device=dev)[:, None]  # (B, H)
        start = yt.clone()
        if self.discrete_dims and st.discrete in ("scale", "scale_snap"):
            dd = self.discrete_dims
            free = ~hold
            start[..., dd] = torch.where(free[..., None], start[..., dd] * st.discrete_scale, start[..., dd])
        ac = p.alphas_cumprod.to(dev)
        ts = self._warm_steps()
        noise = self._noise(start.shape, generator, dev) if st.renoise else torch.zeros_like(start)
        a0 = ac[ts[0]]
        x = a0.sqrt() * start + (1 - a0).sqrt() * noise
        dist = None
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            out = p.denoise(x, torch.full((B,), t, device=dev, dtype=torch.long), cond)
            if dist is None:  # the fallback check, on the first estimate of the clean chunk
                a = ac[t]
                x0 = out if p.config.prediction_type == "sample" else (x - (1 - a).sqrt() * out) / a.sqrt()
                fut = (~hold).float()[..., None]
                cd = self.cont_dims
                sq = ((x0[..., cd].clamp(-1, 1) - yt[..., cd]) ** 2 * fut).sum((1, 2))
                dist = (sq / (fut.sum((1, 2)) * len(cd)).clamp(min=1)).sqrt().cpu().numpy()
            x = p.ddim_step(out, t, t_prev, x)
            # hold the rows that execute anyway at the previous chunk (noised to t_prev)
            if t_prev >= 0:
                ap = ac[t_prev]
                target = ap.sqrt() * yt + (1 - ap).sqrt() * noise
            else:
                target = yt
            x = torch.where(hold[..., None], target, x)
        return x, len(ts), dist

    def _rtc(self, cond, y: np.ndarray, held: np.ndarray, shift: np.ndarray, generator):
        """Guided (PiGDM) sampling toward the previous chunk: (x0, nfe)."""
        st, p = self.settings, self.policy
        dev = cond.device
        B = len(y)
        yt = torch.as_tensor(y, device=dev)
        W = np.stack([overlap_weights(self.H, int(h), self.H - int(s)) for h, s in zip(held, shift)])
        Wt = torch.as_tensor(W, device=dev)[..., None]
        sched, n = self._scheduler("ddim", st.rtc_steps)
        ts = [int(t) for t in sched.timesteps]
        ac = p.alphas_cumprod.to(dev)
        x = self._noise((B, self.H, self.A), generator, dev)
        eps_pred = p.config.prediction_type == "epsilon"
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            a = ac[t]
            a_prev = ac[t_prev] if t_prev >= 0 else torch.ones((), device=dev)
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                out = p.denoise(xg, torch.full((B,), t, device=dev, dtype=torch.long), cond)
                x0 = (xg - (1 - a).sqrt() * out) / a.sqrt() if eps_pred else out
                err = Wt * (yt - x0)
                g, = torch.autograd.grad(x0, xg, grad_outputs=err.detach())
            self.counts["vjp"] += 1
            x0, xd = x0.detach(), xg.detach()
            eps = (xd - a.sqrt() * x0) / (1 - a).sqrt().clamp(min=1e-8)
            weight = torch.clamp(1.0 / (1 - a).clamp(min=1e-8), max=st.rtc_beta)
            eps = eps - (1 - a).sqrt() * weight * g
            x0g = (xd - (1 - a).sqrt() * eps) / a.sqrt()
            if p.config.clip_sample:
                x0g = x0g.clamp(-1, 1)
            eps = (xd - a.sqrt() * x0g) / (1 - a).sqrt().clamp(min=1e-8)
            x = a_prev.sqrt() * x0g + (1 - a_prev).sqrt() * eps
        rows = torch.arange(self.H, device=dev)
        hold = rows[None, :] < torch.as_tensor(held, device=dev)[:, None]
        x = torch.where(hold[..., None], yt, x)
        return x, n


def make_sampler(policy, settings: SamplerSettings | Mapping[str, Any] | None = None, batch: int = 1,
                 discrete_dims: Sequence[int] | None = None, spec=None,
                 action_mode: str | None = None) -> ChunkSampler:
    """A sampler for `policy`; `discrete_dims` default to the gripper (the last action
    dimension) when `spec` has one. `action_mode` (the policy's, e.g. ``ee_delta``) lets
    episode starts warm-start from holding still; without it they start cold."""
    if isinstance(settings, Mapping):
        settings = SamplerSettings.from_dict(settings)
    if discrete_dims is None:
        discrete_dims = [policy.config.action_dim - 1] if spec is not None and spec.gripper is not None else []
    return ChunkSampler(policy, settings, batch, discrete_dims, action_mode)
