"""The inference worker: a :class:`~robot_rl.runtime.samplers.ChunkSampler` running off the
control thread, so that a control loop never waits for a network.

Two kinds, one API (``submit`` / ``poll``, both non-blocking):

* ``thread`` -- the policy lives in this process and a Python thread runs the queries.
  Cheapest (no copies, no second interpreter), but the sampler's Python code between torch
  ops holds the GIL, which a control thread in the same process then waits for.
* ``process`` -- a ``multiprocessing`` *spawn* child loads the checkpoint itself and runs
  the queries; the control process only packs observations and unpacks chunks. No GIL is
  shared, at the price of a second interpreter (memory, start-up time) and a copy each way.

IPC is never pickle for data: every message is one ``send_bytes`` frame holding a 4-byte
header length, a small JSON header (command, numbers, array metadata) and the arrays' raw
bytes (dtype, shape and offset in the header; object dtypes refused). Only the pipe end
itself travels through spawn's own start-up pickling.

At most one query is in flight: ``submit`` returns False while the previous result has not
been taken by ``poll``. ``update_sampler`` and ``reset`` are queued behind a running query
(first in, first out), so they take effect before the next one. A sampler exception becomes
a result with ``error`` set; the worker keeps serving. A child process that dies (killed,
out of memory) turns the in-flight query into an error result and makes later ``submit``
calls raise :class:`WorkerDead`.
"""
from __future__ import annotations

import json
import queue
import struct
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from robot_rl.runtime.samplers import SamplerError, SamplerSettings
from robot_rl.spec import RobotSpec, load_spec

KINDS = ("thread", "process")
START_TIMEOUT_S = 300.0  # loading torch + a checkpoint in a fresh interpreter on a busy machine


class WorkerDead(RuntimeError):
    """The inference process is gone; no more queries can run."""


@dataclass
class WorkerResult:
    """One finished query. ``chunk`` is None when ``error`` is set."""

    chunk: np.ndarray | None  # (chunk_len, A) robot units; row 0 = the action for `step`
    t_obs: float  # as given to submit (the observation's stamp)
    step: int  # as given to submit
    latency_s: float  # submit() -> result ready (includes injected delay and IPC)
    compute_s: float  # time inside the sampler
    nfe: int
    fallback: bool
    cold: bool
    error: str | None = None


def coerce_settings(cls: type, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Type-check run-time changes to a settings dataclass (``SamplerSettings``,
    ``ExecutorSettings``) against its field annotations, converting where nothing is lost
    (an int for a float, an integral float for an int, numpy scalars). A value of the wrong
    type raises ValueError naming the setting -- the dataclasses' own ``check`` compares
    values and would let ``warm_steps=2.5`` through to fail later, inside a query."""
    types = {f.name: {t.strip() for t in str(f.type).split("|")} for f in fields(cls)}
    out = {}
    for k, v in changes.items():
        if k not in types:
            raise ValueError(f"unknown {cls.__name__} setting {k!r}; known: {sorted(types)}")
        allowed = types[k]
        if isinstance(v, np.generic):
            v = v.item()
        if v is None and "None" in allowed:
            out[k] = None
        elif "bool" in allowed and isinstance(v, bool):
            out[k] = v
        elif "int" in allowed and not isinstance(v, bool) and (
                isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
            out[k] = int(v)
        elif "float" in allowed and not isinstance(v, bool) and isinstance(v, (int, float)):
            out[k] = float(v)
        elif "str" in allowed and isinstance(v, str):
            out[k] = v
        else:
            raise ValueError(f"{cls.__name__}.{k} must be {' or '.join(sorted(allowed))}, got {v!r}")
    return out


# -- the wire format --------------------------------------------------------------------------
def pack(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One frame: <u32 header length> <JSON header> <raw array bytes>."""
    metas, blobs, off = [], [], 0
    for k, a in (arrays or {}).items():
        a = np.ascontiguousarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"array {k!r}: object arrays cannot be sent (dtype {a.dtype})")
        metas.append({"key": k, "dtype": a.dtype.str, "shape": list(a.shape), "offset": off, "nbytes": a.nbytes})
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps({**header, "arrays": metas}).encode()
    return b"".join([struct.pack("<I", len(h)), h, *blobs])


def unpack(frame: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`pack`; arrays are fresh writable copies."""
    (n,) = struct.unpack_from("<I", frame, 0)
    header = json.loads(frame[4:4 + n])
    base = 4 + n
    arrays = {}
    for m in header.pop("arrays", []):
        dt = np.dtype(m["dtype"])
        if dt.hasobject:
            raise TypeError(f"array {m['key']!r}: object dtype refused")
        count = int(np.prod(m["shape"], dtype=np.int64))
        a = np.frombuffer(frame, dtype=dt, count=count, offset=base + int(m["offset"]))
        arrays[m["key"]] = a.reshape(m["shape"]).copy()
    return header, arrays


# -- the part that runs the sampler (in the thread, or in the child) ---------------------------
class _Engine:
    """Policy + sampler, and one query turned into a JSON-able header and a chunk."""

    def __init__(self, checkpoint: str, spec: RobotSpec, settings: SamplerSettings, device: str,
                 torch_threads: int | None, backend: str = "auto"):
        import torch
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        from robot_rl.policies.export import load_policy
        from robot_rl.runtime.samplers import is_diffusion, make_sampler
        # a torch checkpoint or an ONNX export (onnxruntime, as many intra-op threads as torch here)
        self.policy, cfg = load_policy(checkpoint, backend, spec, device, threads=torch_threads)
        check_backend(settings, self.policy.backend, is_diffusion(self.policy))
        self.sampler = make_sampler(self.policy, settings, spec=spec,
                                    action_mode=(cfg.get("metadata") or {}).get("action_mode"))
        c = self.policy.config
        self.info = {
            "policy": self.policy.type_name, "diffusion": is_diffusion(self.policy), "backend": self.policy.backend,
            "state_keys": list(c.state_keys), "cameras": list(c.cameras),
            "state_dims": {k: int(v) for k, v in c.state_dims.items()},
            "n_obs_steps": int(c.n_obs_steps), "action_dim": int(c.action_dim),
            "chunk_len": int(self.policy.chunk_len),
            "num_train_timesteps": int(getattr(c, "num_train_timesteps", 0) or 0),
            "metadata": dict(cfg.get("metadata") or {}),
        }
        self.pending_error: str | None = None

    def query(self, obs: Mapping[str, np.ndarray], step: int, delay: int) -> tuple[dict[str, Any], np.ndarray | None]:
        t0 = time.perf_counter()
        try:
            if self.pending_error is not None:
                err, self.pending_error = self.pending_error, None
                raise RuntimeError(err)
            r = self.sampler.query(obs, [int(step)], [int(delay)])
            chunk = np.asarray(r.chunks[0], np.float32)
            h = {"nfe": int(r.nfe[0]), "fallback": bool(r.fallback[0]), "cold": bool(r.cold[0]), "error": None}
        except Exception as e:  # noqa: BLE001 -- a failed query is a result, never a dead worker
            chunk = None
            h = {"nfe": 0, "fallback": False, "cold": True, "error": f"{type(e).__name__}: {e}"}
        h["compute_s"] = time.perf_counter() - t0
        return h, chunk

    def update(self, changes: Mapping[str, Any]) -> None:
        try:
            self.sampler.update(**changes)
        except Exception as e:  # noqa: BLE001 -- validated by the caller already; report on the next query
            self.pending_error = f"update_sampler({dict(changes)}) failed in the worker: {e}"

    def reset(self) -> None:
        self.sampler.reset()


def check_backend(settings: SamplerSettings, backend: str, diffusion: bool) -> None:
    """Refuse sampler settings the policy's backend cannot run: real-time chunking guides a
    diffusion policy with gradients through its denoiser, which an ONNX export does not give."""
    if settings.mode == "rtc" and diffusion and backend != "torch":
        raise SamplerError(f"sampler mode 'rtc' needs gradients through the denoiser, which the {backend} backend "
                           "(an ONNX export) does not give: use mode 'warm' or 'cold', or the torch checkpoint")


class _PolicyView:
    """What ``SamplerSettings.check`` needs to know of a policy, without its weights (the
    process kind validates settings in the caller, where the policy is not loaded)."""

    def __init__(self, info: Mapping[str, Any]):
        self.type_name = info["policy"]
        self.config = SimpleNamespace(num_train_timesteps=info["num_train_timesteps"])
        if info["diffusion"]:  # the attributes samplers.is_diffusion looks for
            self.denoise = self.encode_obs = self.alphas_cumprod = self.sample = None


def background_priority(nice: int) -> None:
    """Make the calling thread (Linux schedules threads; elsewhere: the process) yield to
    the control loop: SCHED_BATCH, so that waking it for a query never preempts the thread
    that woke it (measured: without it, ``submit`` to a spawn child stalled the control tick
    6-12 ms on a 2-core machine, the child taking over the sender's core for its timeslice),
    and ``nice`` levels more niceness. Best effort: silently skipped where unsupported."""
    import os
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    if nice > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + int(nice)))
        except (AttributeError, OSError):
            pass


def _child_main(conn) -> None:
    """The spawn child: read the start message, load, answer queries until closed."""
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        start, _ = unpack(conn.recv_bytes())
        if start["nice"] is not None:
            background_priority(int(start["nice"]))
        try:
            eng = _Engine(start["checkpoint"], RobotSpec.from_dict(start["spec"]),
                          SamplerSettings.from_dict(start["settings"]), start["device"], start["torch_threads"],
                          start["backend"])
        except Exception as e:  # noqa: BLE001 -- reported to the parent, raised there
            conn.send_bytes(pack({"type": "error", "cls": type(e).__name__, "error": str(e)}))
            return
        conn.send_bytes(pack({"type": "ready", "info": eng.info}))
        delay_s = float(start["injected_delay_s"])
        while True:
            h, arrays = unpack(conn.recv_bytes())
            cmd = h["type"]
            if cmd == "query":
                res, chunk = eng.query(arrays, h["step"], h["delay"])
                if delay_s > 0:
                    time.sleep(delay_s)
                res.update(type="result", t_obs=h["t_obs"], step=h["step"], t_submit=h["t_submit"],
                           t_done=time.monotonic())
                conn.send_bytes(pack(res, {"chunk": chunk} if chunk is not None else None))
            elif cmd == "update":
                eng.update(h["changes"])
            elif cmd == "reset":
                eng.reset()
            elif cmd == "close":
                return
    except (EOFError, OSError, KeyboardInterrupt):
        return  # the parent went away
    finally:
        conn.close()


# -- the worker ---------------------------------------------------------------------------------
class InferenceWorker:
    """Runs sampler queries off the caller's thread (see the module docstring).

    ``torch_threads`` sets torch's intra-op threads where the sampler runs; for the
    ``thread`` kind that is this whole process (torch has one setting per process); an ONNX
    export's sessions get as many. ``backend``: ``torch``, ``onnxruntime`` (an ONNX export
    folder) or ``auto`` (robot_rl.policies.export.load_policy).
    ``injected_delay_s`` sleeps after each query, before the result is posted (benchmarks).
    ``nice`` (process kind): the child runs SCHED_BATCH with this much more niceness, so the
    control loop wins the CPU (:func:`background_priority`; None: unchanged). The thread kind
    keeps its priority: a deprioritised thread holding the GIL would make the control thread
    wait for it whenever other work takes the core (priority inversion through the GIL).
    Not thread-safe: call it from one thread, or under a lock (DeployController does)."""

    def __init__(self, checkpoint: str | Path, spec: RobotSpec | str, sampler_settings: SamplerSettings | Mapping[str, Any] | None = None,
                 kind: str = "thread", device: str = "cpu", torch_threads: int | None = 1,
                 injected_delay_s: float = 0.0, nice: int | None = 5, start_timeout_s: float = START_TIMEOUT_S,
                 backend: str = "auto"):
        if kind not in KINDS:
            raise ValueError(f"worker kind must be one of {KINDS}, got {kind!r}")
        if not (injected_delay_s >= 0 and np.isfinite(injected_delay_s)):
            raise ValueError(f"injected_delay_s must be a finite number >= 0, got {injected_delay_s!r}")
        if sampler_settings is None:
            sampler_settings = SamplerSettings()
        elif isinstance(sampler_settings, Mapping):
            sampler_settings = SamplerSettings.from_dict(sampler_settings)
        sampler_settings = replace(sampler_settings).check()  # a copy; policy-free checks first
        self.kind = kind
        self.spec = load_spec(spec)
        self.checkpoint = str(checkpoint)
        self.backend = str(backend)
        self.injected_delay_s = float(injected_delay_s)
        self.nice = None if nice is None else int(nice)
        self._closed = False
        self._busy = False
        self._dead: str | None = None
        self._thread: threading.Thread | None = None
        self._proc = None
        self._conn = None
        if kind == "thread":
            self._engine = _Engine(self.checkpoint, self.spec, sampler_settings, device, torch_threads, self.backend)
            self.info = self._engine.info
            self._checker: Any = self._engine.policy
            self._inbox: queue.Queue = queue.Queue()
            self._outbox: queue.Queue = queue.Queue()
            self._thread = threading.Thread(target=self._thread_main, name="inference_worker", daemon=True)
            self._thread.start()
        else:
            self._start_process(sampler_settings, device, torch_threads, start_timeout_s)
            self._checker = _PolicyView(self.info)
        self._settings = self._check(sampler_settings)

    # -- start-up -----------------------------------------------------------------------------
    def _start_process(self, settings: SamplerSettings, device: str, torch_threads: int | None,
                       timeout_s: float) -> None:
        import multiprocessing as mp
        from robot_rl.policies.base import CheckpointError
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_child_main, args=(child,), name="inference_worker", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        parent.send_bytes(pack({"type": "start", "checkpoint": self.checkpoint, "spec": self.spec.to_dict(),
                                "settings": settings.to_dict(), "device": device, "torch_threads": torch_threads,
                                "injected_delay_s": self.injected_delay_s, "nice": self.nice,
                                "backend": self.backend}))
        deadline = time.monotonic() + timeout_s
        try:
            while not parent.poll(0.05):
                if not self._proc.is_alive():
                    raise WorkerDead(f"inference process exited (code {self._proc.exitcode}) while loading "
                                     f"{self.checkpoint} (a spawn child re-imports the main script: its entry "
                                     "point must be guarded by `if __name__ == '__main__':`)")
                if time.monotonic() > deadline:
                    raise WorkerDead(f"inference process did not load {self.checkpoint} within {timeout_s:g} s")
            try:
                h, _ = unpack(parent.recv_bytes())
            except (EOFError, OSError):
                self._proc.join(5.0)
                raise WorkerDead(f"inference process exited (code {self._proc.exitcode}) while loading "
                                 f"{self.checkpoint} (a spawn child re-imports the main script: its entry "
                                 "point must be guarded by `if __name__ == '__main__':`)") from None
        except BaseException:
            self._stop_process()
            raise
        if h["type"] == "error":
            self._stop_process()
            cls = {"CheckpointError": CheckpointError, "SamplerError": SamplerError}.get(h["cls"])
            if cls is not None:
                raise cls(h["error"])
            raise WorkerDead(f"inference process failed to load {self.checkpoint}: {h['cls']}: {h['error']}")
        self.info = h["info"]

    # -- policy facts ---------------------------------------------------------------------------
    @property
    def state_keys(self) -> list[str]:
        return list(self.info["state_keys"])

    @property
    def cameras(self) -> list[str]:
        return list(self.info["cameras"])

    @property
    def n_obs_steps(self) -> int:
        return int(self.info["n_obs_steps"])

    @property
    def action_dim(self) -> int:
        return int(self.info["action_dim"])

    @property
    def chunk_len(self) -> int:
        return int(self.info["chunk_len"])

    @property
    def sampler_settings(self) -> SamplerSettings:
        """The settings the next query runs with (as validated here)."""
        return replace(self._settings)

    @property
    def busy(self) -> bool:
        """A query was submitted and its result has not been taken by poll() yet."""
        return self._busy

    @property
    def alive(self) -> bool:
        return not self._closed and self._dead is None

    # -- queries ---------------------------------------------------------------------------------
    def submit(self, obs_history: Mapping[str, np.ndarray], t_obs: float, step: int, delay_steps: int) -> bool:
        """Start a query on an (n_obs_steps, ...) history; False (nothing done) while busy."""
        if self._closed:
            raise RuntimeError("the inference worker is closed")
        if self._dead is not None:
            raise WorkerDead(self._dead)
        if self._busy:
            return False
        t_submit = time.monotonic()
        if self.kind == "thread":
            obs = {k: np.array(v, copy=True) for k, v in obs_history.items()}  # the caller may reuse its buffers
            self._inbox.put(("query", obs, float(t_obs), int(step), int(delay_steps), t_submit))
        else:
            frame = pack({"type": "query", "t_obs": float(t_obs), "step": int(step), "delay": int(delay_steps),
                          "t_submit": t_submit}, {k: np.asarray(v) for k, v in obs_history.items()})
            try:
                self._conn.send_bytes(frame)
            except (OSError, EOFError) as e:
                self._died(f"cannot reach the inference process ({e})")
                raise WorkerDead(self._dead) from None
        self._busy = True
        return True

    def poll(self) -> WorkerResult | None:
        """The finished query's result, once; None while running or idle."""
        if not self._busy or self._closed:
            return None
        if self.kind == "thread":
            try:
                h, chunk = self._outbox.get_nowait()
            except queue.Empty:
                return None
        else:
            try:
                if not self._conn.poll(0):
                    if self._proc.is_alive():
                        return None
                    raise EOFError
                h, arrays = unpack(self._conn.recv_bytes())
            except (EOFError, OSError):
                code = self._proc.exitcode
                self._died(f"inference process died (exit code {code})")
                self._busy = False
                return WorkerResult(None, float("nan"), -1, float("nan"), 0.0, 0, False, True, self._dead)
            chunk = arrays.get("chunk")
        self._busy = False
        return WorkerResult(chunk=chunk, t_obs=h["t_obs"], step=h["step"], latency_s=h["t_done"] - h["t_submit"],
                            compute_s=h["compute_s"], nfe=h["nfe"], fallback=h["fallback"], cold=h["cold"],
                            error=h["error"])

    def _died(self, why: str) -> None:
        self._dead = why

    # -- settings and episodes ----------------------------------------------------------------------
    def check_sampler(self, **changes) -> SamplerSettings:
        """The settings ``changes`` would give (validated for this policy); applies nothing."""
        known = {f.name for f in fields(SamplerSettings)}
        bad = sorted(set(changes) - known)
        if bad:
            raise SamplerError(f"unknown sampler settings {bad}; known: {sorted(known)}")
        changes = coerce_settings(SamplerSettings, changes)
        return self._check(replace(self._settings, **changes))

    def _check(self, settings: SamplerSettings) -> SamplerSettings:
        settings = settings.check(self._checker)
        check_backend(settings, self.info.get("backend", "torch"), bool(self.info["diffusion"]))
        return settings

    def update_sampler(self, **changes) -> SamplerSettings:
        """Change sampler settings; validated here (bad values raise now), applied in the
        worker before its next query. Previous chunks are kept."""
        new = self.check_sampler(**changes)
        self._settings = new
        self._send_control("update", {"changes": {k: getattr(new, k) for k in changes}})
        return replace(new)

    def reset(self) -> None:
        """A new episode: the sampler forgets its previous chunks (before the next query)."""
        self._send_control("reset", {})

    def _send_control(self, cmd: str, payload: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("the inference worker is closed")
        if self._dead is not None:
            return  # nothing left to configure; submit() reports the death
        if self.kind == "thread":
            self._inbox.put((cmd, payload))
        else:
            try:
                self._conn.send_bytes(pack({"type": cmd, **payload}))
            except (OSError, EOFError) as e:
                self._died(f"cannot reach the inference process ({e})")

    # -- the thread kind ------------------------------------------------------------------------------
    def _thread_main(self) -> None:
        eng = self._engine
        while True:
            item = self._inbox.get()
            cmd = item[0]
            if cmd == "query":
                _, obs, t_obs, step, delay, t_submit = item
                h, chunk = eng.query(obs, step, delay)
                if self.injected_delay_s > 0:
                    time.sleep(self.injected_delay_s)
                h.update(t_obs=t_obs, step=step, t_submit=t_submit, t_done=time.monotonic())
                self._outbox.put((h, chunk))
            elif cmd == "update":
                eng.update(item[1]["changes"])
            elif cmd == "reset":
                eng.reset()
            elif cmd == "close":
                return

    # -- shutting down ----------------------------------------------------------------------------------
    def _stop_process(self, timeout_s: float = 5.0) -> None:
        if self._conn is not None:
            try:
                self._conn.send_bytes(pack({"type": "close"}))
            except (OSError, EOFError, ValueError):
                pass
        if self._proc is not None:
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout_s)
        if self._conn is not None:
            self._conn.close()

    def close(self) -> None:
        """Stop the thread or child (after a running query finishes); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._inbox.put(("close",))
            self._thread.join(30.0)
        else:
            self._stop_process()

    def __enter__(self) -> "InferenceWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
