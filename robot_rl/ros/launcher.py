"""Start a node graph as separate processes, supervise them, shut down cleanly.

    robot-rl launch teleop_record robot=so101 device=expert episodes=20 out=data/demo.zarr

Each node runs as ``python -m <module>`` in its own process (its output prefixed with its
name). When a required node exits the whole graph is stopped; a node marked respawn is
restarted when it dies. Ctrl-C (SIGINT) or SIGTERM stops every node: SIGINT first (so
recorders close their files), then SIGTERM, then SIGKILL after a grace period.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from robot_rl.ros.graphs import GRAPHS, NodeDef


@dataclass
class _Proc:
    node: NodeDef
    popen: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class Launcher:
    def __init__(self, nodes: list[NodeDef], *, env: dict[str, str] | None = None, grace_s: float = 10.0,
                 out=None, python: str | None = None):
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in graph: {names}")
        self.procs = [_Proc(n) for n in nodes]
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.grace_s = grace_s
        self.out = out or sys.stdout
        self.python = python or sys.executable
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.reason = ""

    # -- processes -------------------------------------------------------------------
    def _start(self, p: _Proc) -> None:
        p.popen = subprocess.Popen([self.python, "-m", p.node.module, *p.node.args], env=self.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1, start_new_session=True)
        p.started = time.monotonic()
        threading.Thread(target=self._pump, args=(p, p.popen), daemon=True).start()
        self._log(f"started {p.node.name} (pid {p.popen.pid}): python -m {p.node.module} {' '.join(p.node.args)}")

    def _pump(self, p: _Proc, popen: subprocess.Popen) -> None:
        for line in popen.stdout:  # type: ignore[union-attr]
            self._write(f"[{p.node.name}] {line.rstrip()}")

    def _write(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def _log(self, text: str) -> None:
        self._write(f"[launch] {text}")

    def _signal_all(self, sig: int) -> None:
        for p in self.procs:
            if p.popen is not None and p.popen.poll() is None:
                try:
                    os.killpg(p.popen.pid, sig)
                except ProcessLookupError:
                    pass

    def shutdown(self) -> None:
        """SIGINT, then SIGTERM, then SIGKILL, each after the grace period."""
        for sig, wait in ((signal.SIGINT, self.grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            alive = [p for p in self.procs if p.popen is not None and p.popen.poll() is None]
            if not alive:
                return
            if sig != signal.SIGINT:
                self._log(f"{', '.join(p.node.name for p in alive)} still running: sending {signal.Signals(sig).name}")
            self._signal_all(sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.popen.poll() is None for p in alive):
                time.sleep(0.05)

    def stop(self, reason: str = "stop requested") -> None:
        self.reason = self.reason or reason
        self._stop.set()

    def run(self) -> int:
        """Start the graph and supervise it until a required node exits or stop() is called.
        Returns 0 if every required node that ended did so with exit code 0."""
        pending = sorted(self.procs, key=lambda p: p.node.start_delay_s)
        t0 = time.monotonic()
        failed = False
        try:
            while not self._stop.is_set():
                now = time.monotonic() - t0
                while pending and pending[0].node.start_delay_s <= now:
                    self._start(pending.pop(0))
                for p in self.procs:
                    if p.popen is None or p.popen.poll() is None:
                        continue
                    code = p.popen.returncode
                    if p.exit_codes and len(p.exit_codes) > p.restarts:
                        continue  # already handled this exit
                    p.exit_codes.append(code)
                    self._log(f"{p.node.name} exited with code {code}")
                    if p.node.required:
                        failed = failed or code != 0
                        self.stop(f"required node {p.node.name} exited ({code})")
                    elif p.node.respawn and not self._stop.is_set():
                        p.restarts += 1
                        self._log(f"respawning {p.node.name} (restart {p.restarts})")
                        self._start(p)
                time.sleep(0.05)
        finally:
            self.shutdown()
        for p in self.procs:  # an optional node that crashed (not by our signals) is a failure too
            if p.popen is not None and p.exit_codes and not p.node.required and p.exit_codes[-1] not in (0, -2, -15, 130):
                failed = True
        # nodes that were still running when stopped: collect their codes
        for p in self.procs:
            if p.popen is not None and (not p.exit_codes or len(p.exit_codes) <= p.restarts):
                p.exit_codes.append(p.popen.wait())
        self._log(f"graph stopped: {self.reason}")
        return 1 if failed else 0


def launch(graph: str, overrides: dict[str, str] | None = None, **kw) -> int:
    if graph not in GRAPHS:
        raise KeyError(f"unknown graph {graph!r}; graphs: {', '.join(sorted(GRAPHS))}")
    nodes = GRAPHS[graph].nodes(overrides)
    lx = Launcher(nodes, **kw)

    def on_signal(signum, frame):
        lx.stop(f"{signal.Signals(signum).name} received")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return lx.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
