"""How steady is a control loop while a policy infers next to it? Thread vs process worker.

A control thread runs at ``rate_hz`` with absolute-deadline sleeps (as the robot node's
realtime loop does: ``sys.setswitchinterval(2e-4)``, ``gc.freeze()``, missed periods skipped,
never bursted) and calls :meth:`DeployController.tick` every period. A feeder thread plays
the observation callback's part: it hands the controller observations at the policy rate
(one scripted-expert episode of the twin, recorded once, replayed forwards then backwards so
the stream never jumps), stamped when fed. Inference runs in the controller's worker.

Reported: period error |period - 1/rate| (p50 / p99 / max, ms), missed deadlines, the time
spent inside ``tick`` (p50 / p99 / max, ms), query latency (the worker's submit -> result
and as the loop saw it), queries, underruns and holds. The first ``warmup_s`` are not
measured. ``baseline=True`` pauses the controller (no inference at all): the machine's own
timer jitter, to read the other numbers against.

    python -m robot_rl.runtime.rt_bench CHECKPOINT --kind thread process --seconds 15 \\
        [--sampler mode=cold] [--executor replan_every=4] [--nice none] [--rt-priority 50] [--baseline] \\
        [--out result.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from robot_rl.spec import RobotSpec, load_spec


def record_observations(spec: RobotSpec, task: str = "pick_cube", seed: int = 0,
                        keys: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
    """The observations of one scripted-expert episode in the twin (ee_delta, no cameras)."""
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.experts import rollout_expert
    env = RobotEnv(task=task, robot=spec, action_mode="ee_delta", cameras=[])
    out: list[dict[str, np.ndarray]] = []
    try:
        def keep(o, a, r, i):
            out.append({k: np.array(v, np.float32) for k, v in o.items() if keys is None or k in keys})
        rollout_expert(env, seed, on_step=keep)
    finally:
        env.close()
    return out


def _pct(x: Sequence[float], scale: float = 1e3) -> dict[str, float]:
    a = np.asarray(x, float) * scale
    if not a.size:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p99 = np.percentile(a, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(a.max())}


def _spec_from_checkpoint(checkpoint: str | Path) -> RobotSpec:
    from robot_rl.policies.export import checkpoint_json
    cfg = checkpoint_json(checkpoint)
    if "robot_spec" not in cfg:
        raise FileNotFoundError(f"no readable checkpoint or ONNX export at {checkpoint}")
    return RobotSpec.from_dict(cfg["robot_spec"])


def measure_control_loop(checkpoint: str | Path, spec: RobotSpec | str | None = None, worker_kind: str = "thread",
                         rate_hz: float = 50.0, seconds: float = 20.0,
                         sampler: Mapping[str, Any] | None = None, executor: Mapping[str, Any] | None = None,
                         action_mode: str = "ee_delta", warmup_s: float = 1.0, baseline: bool = False,
                         injected_delay_s: float = 0.0, observations: list[dict[str, np.ndarray]] | None = None,
                         switch_interval_s: float = 2e-4, nice: int | None = 5, rt_priority: int = 0) -> dict[str, Any]:
    """Run the loop for ``warmup_s + seconds`` and return its timing (see the module docstring)."""
    from robot_rl.runtime.controller import DeployController
    from robot_rl.runtime.realtime import make_fifo
    spec = load_spec(spec) if spec is not None else _spec_from_checkpoint(checkpoint)
    if not rate_hz > 0 or not seconds > 0:
        raise ValueError(f"rate_hz and seconds must be > 0, got {rate_hz}, {seconds}")
    obs = observations if observations is not None else record_observations(spec)
    if not obs:
        raise ValueError("no observations to replay")
    stream = obs + obs[-2:0:-1]  # forwards, then backwards: a loop without jumps
    ctl = DeployController(checkpoint, spec, action_mode, sampler=sampler, executor=executor, worker=worker_kind,
                           injected_delay_s=injected_delay_s, nice=nice)
    if baseline:
        ctl.set_params(paused=True)
    period, obs_period = 1.0 / rate_hz, 1.0 / float(spec.control_hz)
    stop = threading.Event()
    t_measure = time.monotonic() + warmup_s
    tick_starts: list[float] = []
    tick_costs: list[float] = []
    missed = [0]
    held = {"n": 0, "ok": 0}
    failure: list[BaseException] = []

    def feeder() -> None:
        i, deadline = 0, time.monotonic()
        while not stop.is_set():
            ctl.observe(stream[i % len(stream)], time.monotonic())
            i += 1
            deadline += obs_period
            rest = deadline - time.monotonic()
            if rest > 0:
                stop.wait(rest)

    rt = [False]

    def control() -> None:
        if rt_priority > 0:  # as robot_node --rt-priority: best effort (needs root, CAP_SYS_NICE or rtprio)
            rt[0] = make_fifo(rt_priority) is None
        try:
            deadline = time.monotonic() + period
            while not stop.is_set():
                rest = deadline - time.monotonic()
                if rest > 0:
                    time.sleep(rest)
                t0 = time.monotonic()
                res = ctl.tick(t0)
                t1 = time.monotonic()
                if t0 >= t_measure:
                    tick_starts.append(t0)
                    tick_costs.append(t1 - t0)
                    held["n"] += 1
                    held["ok"] += int(not res.held)
                deadline += period
                late = time.monotonic() - deadline
                if late > 0:  # overran a whole period: skip the missed ticks, do not burst
                    if t0 >= t_measure:
                        missed[0] += int(late / period) + 1
                    deadline += (int(late / period) + 1) * period
        except BaseException as e:  # noqa: BLE001 -- reported by the caller
            failure.append(e)
            stop.set()

    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    gc.collect()
    gc.freeze()
    threads = [threading.Thread(target=feeder, name="rt_bench_obs", daemon=True),
               threading.Thread(target=control, name="rt_bench_control", daemon=True)]
    try:
        for t in threads:
            t.start()
        stop.wait(warmup_s + seconds)
        stop.set()
        for t in threads:
            t.join(10.0)
        diag = ctl.diagnostics()
    finally:
        stop.set()
        sys.setswitchinterval(old_switch)
        gc.unfreeze()
        ctl.close()
    if failure:
        raise RuntimeError(f"control loop failed: {failure[0]!r}")
    periods = np.diff(np.asarray(tick_starts))
    err = _pct(np.abs(periods - period))
    cost = _pct(tick_costs)
    wl = ctl.worker_latency.percentiles_ms()
    lat = ctl.tracker.percentiles_ms()
    cp = ctl.compute.percentiles_ms()
    return {
        "worker": worker_kind, "baseline": bool(baseline), "nice": nice, "rt_fifo": rt[0], "rate_hz": rate_hz, "seconds": seconds,
        "policy_hz": float(spec.control_hz), "ticks": len(tick_starts),
        "period_err_ms_p50": err["p50"], "period_err_ms_p99": err["p99"], "period_err_ms_max": err["max"],
        "missed_deadlines": missed[0],
        "tick_ms_p50": cost["p50"], "tick_ms_p99": cost["p99"], "tick_ms_max": cost["max"],
        "query_latency_ms_p50": wl.get("p50", float("nan")), "query_latency_ms_p99": wl.get("p99", float("nan")),
        "query_latency_ms_max": wl.get("max", float("nan")),
        "loop_latency_ms_p50": lat.get("p50", float("nan")), "loop_latency_ms_p99": lat.get("p99", float("nan")),
        "compute_ms_p50": cp.get("p50", float("nan")), "compute_ms_p99": cp.get("p99", float("nan")),
        "queries": int(diag["queries"]), "chunks": int(diag["chunks"]),
        "nfe_per_query": float(diag["nfe_per_query"]), "fallback_rate": float(diag["fallback_rate"]),
        "underruns": int(diag["underruns"]), "holds": int(diag["holds"]),
        "policy_action_share": held["ok"] / held["n"] if held["n"] else 0.0,
        "holds_by_reason": {k[len("holds_"):]: int(v) for k, v in diag.items() if k.startswith("holds_")},
        "delay_steps": int(diag["delay_steps"]),
        "sampler": ctl.worker.sampler_settings.to_dict(), "executor": ctl.executor.settings.to_dict(),
    }


def _kv(items: Sequence[str] | None) -> dict[str, Any]:
    """key=value pairs, values parsed as YAML scalars (``mode=cold``, ``warm_steps=3``)."""
    import yaml
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"rt_bench: expected key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


COLUMNS = [("worker", "{}"), ("period_err_ms_p50", "{:.3f}"), ("period_err_ms_p99", "{:.3f}"),
           ("period_err_ms_max", "{:.2f}"), ("missed_deadlines", "{}"), ("tick_ms_p99", "{:.3f}"),
           ("query_latency_ms_p50", "{:.1f}"), ("query_latency_ms_p99", "{:.1f}"), ("nfe_per_query", "{:.1f}"),
           ("queries", "{}"), ("underruns", "{}"), ("holds", "{}")]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = [c for c, _ in COLUMNS]
    body = [[f.format(r[c]) if not (isinstance(r[c], float) and np.isnan(r[c])) else "-" for c, f in COLUMNS]
            for r in rows]
    w = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w[i]) for i, h in enumerate(head))]
    lines += ["  ".join(b[i].rjust(w[i]) for i in range(len(head))) for b in body]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robot_rl.runtime.rt_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--kind", nargs="+", default=["thread", "process"], choices=["thread", "process"])
    ap.add_argument("--robot", default=None, help="robot spec (default: the checkpoint's)")
    ap.add_argument("--action-mode", default="ee_delta")
    ap.add_argument("--rate", type=float, default=50.0, help="control loop rate, Hz")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--sampler", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--executor", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--injected-delay", type=float, default=0.0, help="seconds added to each query")
    ap.add_argument("--nice", default="5", help="worker niceness, SCHED_BATCH ('none': leave the scheduler alone)")
    ap.add_argument("--rt-priority", type=int, default=0, help="SCHED_FIFO priority of the control thread (0: none)")
    ap.add_argument("--baseline", action="store_true", help="also run with inference paused (timer jitter alone)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    from robot_rl.policies.base import CheckpointError
    try:
        spec = load_spec(a.robot) if a.robot else _spec_from_checkpoint(a.checkpoint)
    except (OSError, ValueError, KeyError) as e:
        print(f"rt_bench: {e}", file=sys.stderr)
        return 2
    obs = record_observations(spec)
    runs = [(k, False) for k in a.kind] + ([(a.kind[0], True)] if a.baseline else [])
    rows = []
    for kind, base in runs:
        try:
            r = measure_control_loop(a.checkpoint, spec, kind, a.rate, a.seconds, sampler=_kv(a.sampler),
                                     executor=_kv(a.executor), action_mode=a.action_mode, warmup_s=a.warmup,
                                     baseline=base, injected_delay_s=a.injected_delay, observations=obs,
                                     nice=None if a.nice.lower() == "none" else int(a.nice), rt_priority=a.rt_priority)
        except (CheckpointError, ValueError) as e:
            print(f"rt_bench: {e}", file=sys.stderr)
            return 2
        if base:
            r["worker"] = "baseline"
        rows.append(r)
        print(f"rt_bench: {r['worker']} done", file=sys.stderr, flush=True)
    print(format_table(rows))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"argv": list(sys.argv if argv is None else argv), "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
