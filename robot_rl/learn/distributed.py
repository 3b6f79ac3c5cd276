"""Several training processes on torch.distributed: ``robot-rl train ... nproc=N``, or
``torchrun --nproc-per-node=N -m robot_rl.cli.main train ...`` (several nodes too).

The trainer (``robot_rl.learn.train``) is the same code for one process and for N; this
module holds what differs. Readable top to bottom:

1. ``Dist.from_env()``: who this process is, from the variables torchrun sets (``RANK``,
   ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``). Without them (or with
   ``WORLD_SIZE=1``) it is the plain single process: no process group, every helper below
   returns its input unchanged, and training is exactly what it was before DDP existed;
2. ``launch(cfg, nproc)``: ``nproc=N`` outside torchrun starts N local workers itself, each
   running ``train()`` again with those variables set (loopback only: the rendezvous store
   is held by the launcher on 127.0.0.1, gloo is bound to ``lo``). It watches them: the first
   worker that fails ends the run with *its* error, the others are stopped -- no hangs, no
   orphans (a worker dies with its launcher). Rank 0's summary is the run's;
3. ``Dist.start``: the process group -- gloo on CPU, NCCL on GPUs (``cuda:LOCAL_RANK``) --
   with a generous timeout (``ddp_timeout_min``, default 60 min) so the other ranks can
   wait while rank 0 evaluates in the twin;
4. the few collectives the trainer calls: ``wrap`` (DistributedDataParallel over the
   policy's loss), ``first`` (rank 0's value of a decision driven by its clock: the
   learning rate and the last step under ``max_minutes``, time-based evaluations),
   ``average`` (the loss of the global batch), ``barrier``, ``total``, ``same_everywhere``
   and ``replica_digests`` (a hash of every rank's weights at the end: they must agree).

Global batch semantics: ``batch_size`` is the batch of one optimiser step over all ranks.
Every rank draws the same seeded sequence of global batches and trains on its own
``batch_size / N`` slice of each (disjoint: the ranks see different windows, each window
once per pass over the data), and DDP averages the gradients. So a step, the learning-rate
schedule and the number of steps are those of one process with the whole batch -- with the
same seed, the very same batches. What is random inside the loss (diffusion noise, crops)
has a stream per rank (seed + step + rank).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

ERROR_FILE_ENV = "ROBOT_RL_DDP_ERROR_FILE"  # where a worker started by launch() leaves its error
PARENT_ENV = "ROBOT_RL_DDP_PARENT"  # the launcher's pid: a worker dies with it
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long


def _train_error(msg: str) -> Exception:
    from robot_rl.learn.train import TrainError
    return TrainError(msg)


# -- who am I --------------------------------------------------------------------------------
class Dist:
    """This process's place in the run. ``enabled`` only with ``WORLD_SIZE > 1``."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, local_world_size: int = 1):
        self.rank, self.world_size = rank, world_size
        self.local_rank, self.local_world_size = local_rank, local_world_size
        self.device = torch.device("cpu")
        self.backend: str | None = None

    @classmethod
    def from_env(cls) -> "Dist":
        env = os.environ
        world = int(env.get("WORLD_SIZE", 1))
        if world <= 1:
            return cls()
        rank, local = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
        return cls(rank, world, local, int(env.get("LOCAL_WORLD_SIZE", world)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- setup ---------------------------------------------------------------------------------
    def threads(self) -> int:
        """torch CPU threads of one rank: this machine's cores split among the local ranks."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.local_world_size)

    def pick_device(self, want: str | None) -> torch.device:
        """``device`` setting (None: cuda when present) -> this rank's device: ``cuda:LOCAL_RANK``
        when training on GPUs with several processes."""
        dev = torch.device(want or ("cuda" if torch.cuda.is_available() else "cpu"))
        if not self.enabled or dev.type != "cuda":
            return dev
        n = torch.cuda.device_count()
        if n == 1 and self.local_world_size > 1 and len(os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")) == 1:
            return torch.device("cuda", 0)  # the cluster gave each process its own GPU
        if n < self.local_world_size:
            raise _train_error(f"{self.local_world_size} processes on this node need one GPU each; torch sees {n}: "
                               f"use nproc={n} (torchrun --nproc-per-node={n}) or device=cpu")
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device, timeout_min: float) -> None:
        """Join the process group: NCCL on GPUs, gloo on CPU."""
        self.device = device
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(self.backend, timeout=timedelta(minutes=float(timeout_min)),
                                             device_id=device if device.type == "cuda" else None)

    def stop(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    # -- what the trainer calls (each a no-op for one process) ---------------------------------
    def wrap(self, policy: torch.nn.Module) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
        """The training loss of a batch: ``policy.loss`` for one process; under DDP the same loss
        through DistributedDataParallel, so ``backward()`` averages the gradients of all ranks
        (rank 0's weights are broadcast to the others here)."""
        if not self.enabled:
            return policy.loss
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(_Loss(policy), device_ids=[self.device.index] if self.device.type == "cuda"
                                       else None)

    def _tensor(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def first(self, value: Any) -> Any:
        """Rank 0's ``value`` (a float or bool) on every rank."""
        if not self.enabled:
            return value
        t = self._tensor([float(value)])
        torch.distributed.broadcast(t, src=0)
        return type(value)(t.item())

    def average(self, value: float, terms: Mapping[str, float]) -> tuple[float, dict[str, float]]:
        """Mean over the ranks of a loss and its terms: the loss of the global batch."""
        if not self.enabled:
            return value, dict(terms)
        keys = sorted(terms)
        t = self._tensor([float(value)] + [float(terms[k]) for k in keys])
        torch.distributed.all_reduce(t)
        t /= self.world_size
        v = t.tolist()
        return v[0], dict(zip(keys, v[1:]))

    def total(self, value: float) -> float:
        """Sum over the ranks."""
        if not self.enabled:
            return value
        t = self._tensor([float(value)])
        torch.distributed.all_reduce(t)
        return t.item()

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier(device_ids=[self.device.index] if self.backend == "nccl" else None)

    def same_everywhere(self, value: Any) -> bool:
        """Whether every rank holds the same (picklable) ``value``."""
        if not self.enabled:
            return True
        got: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(got, value)
        return all(g == got[0] for g in got)

    def replica_digests(self, module: torch.nn.Module) -> list[str]:
        """Every rank's ``state_digest`` of ``module`` (rank order); all equal when DDP kept the
        replicas in step."""
        mine = state_digest(module.state_dict())
        if not self.enabled:
            return [mine]
        got: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(got, mine)
        return list(got)


class _Loss(torch.nn.Module):
    """A policy's training loss as ``forward()``: DDP prepares its gradient reduction in
    ``forward``, so the loss has to be called through it."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.loss(batch)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's tensors (by name): equal digests, bit-identical weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# -- settings ------------------------------------------------------------------------------------
def requested_nproc(cfg: Mapping[str, Any]) -> int:
    """The ``nproc`` setting, checked."""
    n = cfg.get("nproc", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _train_error(f"nproc must be a whole number >= 1 (training processes on this machine), got {n!r}")
    return n


def batch_per_rank(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global batch; the split must be even."""
    if batch_size % world_size:
        near = sorted({x for x in (batch_size // world_size * world_size, -(-batch_size // world_size) * world_size)
                       if x > 0})
        raise _train_error(f"batch_size={batch_size} (the global batch of one optimiser step) does not split evenly "
                           f"over {world_size} processes; use a multiple of {world_size}, e.g. batch_size="
                           + " or ".join(map(str, near)))
    return batch_size // world_size


def launched() -> bool:
    """Whether this process is one of several already (torchrun, or a worker of ``launch``)."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


# -- the launcher ----------------------------------------------------------------------------------
WORKER = "import sys; from robot_rl.learn.distributed import worker_main; sys.exit(worker_main(sys.argv[1]))"


def launch(cfg: Any, nproc: int) -> dict:
    """Train with ``nproc`` local worker processes; returns rank 0's summary. Raises
    TrainError naming the first worker that failed, and its error."""
    import json
    from omegaconf import OmegaConf
    from robot_rl.learn.train import global_batch_size
    batch_per_rank(global_batch_size(cfg), nproc)  # refuse before starting anything
    device = torch.device(cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise _train_error(f"nproc={nproc} needs {nproc} GPUs (one per process); torch sees "
                           f"{torch.cuda.device_count()}: use nproc={torch.cuda.device_count()} or device=cpu")
    # the rendezvous store lives here, on loopback, for the whole run (its port cannot be
    # taken by anyone else in between); the workers connect to it as torchrun's workers do
    store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                                       timeout=timedelta(minutes=float(cfg.get("ddp_timeout_min") or 60)))
    tmp = Path(tempfile.mkdtemp(prefix="robot_rl_ddp_"))
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": str(nproc),
           "LOCAL_WORLD_SIZE": str(nproc), "TORCHELASTIC_USE_AGENT_STORE": "True",
           PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    if os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's connections stay on loopback
    procs = []
    try:
        for r in range(nproc):
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp / "config.yaml")],
                                          env={**env, "RANK": str(r), "LOCAL_RANK": str(r),
                                               ERROR_FILE_ENV: str(tmp / f"rank{r}.error")}))
        _watch(procs, tmp)
        return json.loads((Path(cfg.out) / "summary.json").read_text())
    finally:
        _stop(procs)
        del store
        shutil.rmtree(tmp, ignore_errors=True)


def _watch(procs: list[subprocess.Popen], tmp: Path) -> None:
    """Wait for all workers; the first failure stops the others and raises its error."""
    while True:
        codes = [p.poll() for p in procs]
        if all(c == 0 for c in codes):
            return
        if any(c not in (None, 0) for c in codes):
            break
        time.sleep(0.1)
    # a worker failed: the others usually follow within moments (their peer vanished); give
    # them a moment so the cause can be told from its echoes, then stop the rest
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    failed = {r: p.returncode for r, p in enumerate(procs) if p.poll() not in (None, 0)}
    _stop(procs)
    rank, text = _cause(failed, tmp)
    raise _train_error(f"training process rank {rank} of {len(procs)} failed: {text}")


def _cause(failed: dict[int, int], tmp: Path) -> tuple[int, str]:
    """The failure that came first: a worker's own error (earliest written), else a worker
    that died without one (a signal: killed, out of memory), else an error a worker got
    because a peer vanished."""
    own, echoes = [], []
    for r, code in failed.items():
        f = tmp / f"rank{r}.error"
        if f.exists():
            text = f.read_text()
            kind, _, msg = text.partition("\n")
            (echoes if kind == "peer" else own).append((f.stat().st_mtime_ns, r, msg))
    if own:
        _, r, msg = min(own)
        return r, msg
    silent = [r for r in failed if not (tmp / f"rank{r}.error").exists()]
    if silent:
        r = min(silent)
        code = failed[r]
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return r, f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        return r, f"exited with code {code} without an error message (see its output above)"
    _, r, msg = min(echoes)
    return r, msg


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the workers still running, SIGKILL those still there after a grace period."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- a worker --------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when its launcher dies (no orphaned training)."""
    ppid = int(os.environ.get(PARENT_ENV, 0))
    if not ppid or not sys.platform.startswith("linux"):
        return
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != ppid:  # the launcher was already gone
        os._exit(1)


def _peer_error(e: BaseException) -> bool:
    """An error a rank gets because another rank vanished (connection closed, reset, timeout)."""
    dist_err = getattr(torch.distributed, "DistError", ())
    text = str(e)
    return isinstance(e, dist_err) or any(s in text for s in ("Connection closed by peer", "Connection reset by peer",
                                                             "gloo", "NCCL", "Broken pipe"))


def worker_main(cfg_path: str) -> int:
    """One worker of ``launch``: train with the configuration it wrote; on failure leave the
    error where the launcher looks (first line: ``own`` or ``peer``, then the message)."""
    _die_with_parent()
    import traceback
    from omegaconf import OmegaConf
    from robot_rl.learn.train import TrainError, train
    rank = os.environ.get("RANK", "?")
    try:
        train(OmegaConf.load(cfg_path))
        return 0
    except BaseException as e:  # noqa: BLE001 -- reported to the launcher, whatever it is
        peer = _peer_error(e)
        msg = str(e) if isinstance(e, TrainError) else f"{type(e).__name__}: {e}".strip()
        if isinstance(e, TrainError) or peer:  # a user error, or the echo of another rank's failure: one line
            print(f"robot-rl train [rank {rank}]: {'stopped' if peer else 'error'}: {msg.splitlines()[0]}",
                  file=sys.stderr)
        else:
            traceback.print_exc()
        path = os.environ.get(ERROR_FILE_ENV)
        if path:
            tmp = path + ".tmp"
            Path(tmp).write_text(("peer" if peer else "own") + "\n" + msg[:4000])
            os.replace(tmp, path)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
