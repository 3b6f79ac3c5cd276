"""Actor -> learner transport of online RL over ROS 2, with 96x96 camera observations.

    scripts/isolated.sh .venv/bin/python benchmarks/bench_rl_transport.py [--actors 2] [--rate 250]
        [--seconds 30] [--baseline-seconds 15] [--batch 32] [--train] [--out FILE]

Processes: the real learner node (``python -m robot_rl.ros.rl_nodes learner --cameras front
--no-train``: receive, verify, fsync to the replay log, add to the buffer, acknowledge) and
``--actors`` actor processes, each the real :class:`ActorNode` / :class:`ActorCore` (policy
with the image encoder acting every step, fixed-rate control thread, sender thread) on an env
that replays twin observations rendered once at start (the twin renders a 96x96 camera at
~140 steps/s per core, measured and reported here too: on this 2-core machine rendering, not
transport, would bound the rate).

Two phases in the same run: a baseline where the actors run their control loop without
streaming (no sender work), then streaming to the learner. Reports: sustained transitions/s
and bytes/s received and logged by the learner, ack latency p50/p99 (publish -> ack received,
from the actors), and the actors' control period error p50/p99/max in both phases.
Refuses to run outside a loopback-only network namespace.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import print_table, write_json  # noqa: E402

KEYS = ["joint_pos", "gripper", "ee_pos", "object_state"]


# -- the replaying env (actor processes) -------------------------------------------------------
class FrameEnv:
    """Replays recorded twin observations (real renders) so actors are not render-bound."""

    def __init__(self, frames: dict[str, np.ndarray], episode_len: int = 100):
        import gymnasium as gym
        self.frames = frames
        self.n = len(next(iter(frames.values())))
        self.observation_space = gym.spaces.Dict({k: gym.spaces.Box(0, 255, v.shape[1:], v.dtype) if v.dtype == np.uint8
                                                  else gym.spaces.Box(-np.inf, np.inf, v.shape[1:], v.dtype)
                                                  for k, v in frames.items()})
        self.action_space = gym.spaces.Box(np.r_[-np.ones(6), 0].astype(np.float32), np.ones(7, np.float32))
        self.episode_len = episode_len
        self.i, self.t = 0, 0

    def _obs(self):
        return {k: v[self.i % self.n] for k, v in self.frames.items()}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.i += 1
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.episode_len, {"success": False}

    def close(self):
        pass


def actor_role(a) -> int:
    """One actor process: run the ActorNode for --seconds, write its statistics as JSON."""
    import torch
    torch.set_num_threads(1)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from robot_rl.rl.distributed import ActorConfig, ActorCore
    from robot_rl.rl.sac import SACConfig
    from robot_rl.ros.rl_nodes import ActorNode
    frames = dict(np.load(a.frames))
    cfg = ActorConfig(actor_id=a.id, keys=KEYS, cameras=["front"], batch_size=a.batch, sac=SACConfig())
    core = ActorCore(cfg, env=FrameEnv(frames))
    rclpy.init()
    node = ActorNode(core, rate=a.rate, send=bool(a.send), diag_hz=0)
    sys.setswitchinterval(2e-4)
    ex = SingleThreadedExecutor()
    ex.add_node(node.node)
    node.start()
    if a.send:  # the steady state: after DDS discovery matched the learner and the first ack came back
        limit = time.monotonic() + 120
        while core.counts["acked_batches"] == 0 and time.monotonic() < limit:
            ex.spin_once(timeout_sec=0.05)
    warm = time.monotonic() + a.warmup
    end = warm + a.seconds
    while time.monotonic() < warm:
        ex.spin_once(timeout_sec=0.05)
    core.ack_latency_s.clear()  # measure the steady state only
    c0, o0 = dict(core.counts), node.overruns
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
    node.stop()
    status = core.status()
    window = {k: status[k] - c0[k] for k in ("sent", "resent", "dropped_batches", "acked_transitions", "steps")}
    stats = {"period": node.period_stats(since=warm), "status": status, "window": window,
             "ack_ms": [x * 1e3 for x in core.ack_latency_s], "overruns": node.overruns - o0}
    Path(a.stats).write_text(json.dumps(stats))
    node.node.destroy_node()
    rclpy.try_shutdown()
    return 0


# -- orchestration ---------------------------------------------------------------------------------
def spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, text=True)


def stop(p: subprocess.Popen, timeout: float = 30.0) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def render_frames(n: int, image_size: int, path: Path) -> float:
    """Record ``n`` twin steps with the front camera (scripted expert); returns steps/s."""
    from robot_rl.rl.loop import RLConfig, make_rl_env
    env = make_rl_env(RLConfig(cameras=["front"], image_size=image_size))
    obs, _ = env.reset(seed=0)
    expert = env.make_expert(0)
    rows = {k: [] for k in KEYS + ["image_front"]}
    t0 = time.perf_counter()
    for i in range(n):
        obs, _, term, trunc, _ = env.step(expert.act(obs))
        for k in rows:
            rows[k].append(np.array(obs[k]))
        if term or trunc:
            obs, _ = env.reset(seed=i)
            expert = env.make_expert(i)
    rate = n / (time.perf_counter() - t0)
    env.close()
    np.savez(path, **{k: np.stack(v) for k, v in rows.items()})
    return rate


class Watch:
    """The learner's /diagnostics, from the benchmark's own rclpy context."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from robot_rl.ros import topics
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("bench_rl_watch", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.samples: list[tuple[float, dict[str, str]]] = []
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on, topics.reliable_qos(50))

    def _on(self, arr):
        for s in arr.status:
            if s.name.endswith(": rl_learner"):
                self.samples.append((time.monotonic(), {kv.key: kv.value for kv in s.values}))

    def spin(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.05)

    def close(self):
        self.node.destroy_node()
        self.ex.shutdown()
        self.ctx.try_shutdown()


def run_phase(a, work: Path, frames: Path, send: bool, watch: Watch | None) -> tuple[list[dict], dict]:
    name = "stream" if send else "baseline"
    secs = a.seconds if send else a.baseline_seconds
    procs = []
    for i in range(a.actors):
        st = work / f"{name}_a{i}.json"
        procs.append((st, spawn([__file__, "--role", "actor", "--id", f"a{i}", "--rate", str(a.rate), "--batch",
                                 str(a.batch), "--send", str(int(send)), "--frames", str(frames), "--stats", str(st),
                                 "--seconds", str(secs), "--warmup", str(a.warmup)], work / f"{name}_a{i}.log")))
    window = {}
    if watch is not None:
        # the learner's counters over the actors' measured window (after their warm-up)
        end = time.monotonic() + 120
        while not (watch.samples and int(watch.samples[-1][1]["sources"]) >= a.actors):  # all actors streaming
            if time.monotonic() > end:
                raise SystemExit(f"the learner received nothing in 120 s; see {work}")
            watch.spin(0.1)
        watch.spin(a.warmup)
        t0 = len(watch.samples)
        watch.spin(secs - a.warmup - 2.0)
        s0, s1 = watch.samples[t0], watch.samples[-1]
        dt = s1[0] - s0[0]
        d = {k: int(s1[1][k]) - int(s0[1][k]) for k in ("transitions", "bytes", "batches", "duplicates")}
        window = {"seconds": dt, **d, "transitions_per_s": d["transitions"] / dt, "mb_per_s": d["bytes"] / dt / 1e6,
                  "corrupt": int(s1[1]["corrupt"]), "rejected": int(s1[1]["rejected"])}
    for st, p in procs:
        rc = p.wait(timeout=secs + a.warmup + 120)
        if rc != 0:
            raise SystemExit(f"actor process failed (rc {rc}); see {st.with_suffix('.log')}")
    return [json.loads(st.read_text()) for st, _ in procs], window


def pct(xs, q):
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", default="bench", choices=["bench", "actor"])
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--rate", type=float, default=250.0, help="control loop Hz per actor")
    p.add_argument("--seconds", type=float, default=30.0, help="streaming phase (measured window)")
    p.add_argument("--baseline-seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring, per phase")
    p.add_argument("--batch", type=int, default=32, help="transitions per message")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--frames-count", type=int, default=150, help="twin steps rendered for the replaying env")
    p.add_argument("--train", action="store_true", help="the learner also trains (CPU here: competes for the cores)")
    p.add_argument("--out", default=None)
    # actor role
    p.add_argument("--id", default="a0")
    p.add_argument("--send", type=int, default=1)
    p.add_argument("--frames", default=None)
    p.add_argument("--stats", default=None)
    a = p.parse_args()
    if a.role == "actor":
        sys.exit(actor_role(a))
    from robot_rl.ros.isolation import require_loopback_only
    require_loopback_only("bench_rl_transport")
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_rl_") as tmp:
        work = Path(tmp)
        frames = work / "frames.npz"
        render_rate = render_frames(a.frames_count, a.image_size, frames)
        print(f"twin with a {a.image_size}x{a.image_size} front camera: {render_rate:.0f} steps/s (one process)")
        base, _ = run_phase(a, work, frames, send=False, watch=None)
        learner_args = ["-m", "robot_rl.ros.rl_nodes", "learner", "--out", str(work / "learner"), "--cameras", "front",
                        "--image-size", str(a.image_size), "--diag-hz", "2", "--learning-starts", "1000"]
        if not a.train:
            learner_args.append("--no-train")
        learner = spawn(learner_args, work / "learner.log")
        watch = Watch()
        try:
            stream, window = run_phase(a, work, frames, send=True, watch=watch)
        finally:
            watch.close()
            rc = stop(learner)
        if rc != 0:
            raise SystemExit(f"learner failed (rc {rc}): {(work / 'learner.log').read_text()[-2000:]}")
        log_segments = len(list((work / "learner" / "replay").glob("seg-*.safetensors")))
    ack = [x for s in stream for x in s["ack_ms"]]
    rows = []
    for phase, runs in (("baseline (no streaming)", base), ("streaming", stream)):
        per = [r["period"] for r in runs]
        rows.append({"phase": phase, "actors": len(runs), "target Hz": a.rate,
                     "achieved Hz (sum)": sum(x.get("rate_hz", 0) for x in per),
                     "period err p50 ms": max(x.get("period_err_ms_p50", np.nan) for x in per),
                     "period err p99 ms": max(x.get("period_err_ms_p99", np.nan) for x in per),
                     "period err max ms": max(x.get("period_err_ms_max", np.nan) for x in per),
                     "overruns": sum(r["overruns"] for r in runs)})
    print_table(rows, list(rows[0]), f"actor control loops ({a.actors} actors x {a.rate:g} Hz, policy with the image "
                                     f"encoder every step; worst actor shown)")
    sent = sum(s["window"]["sent"] for s in stream)
    resent = sum(s["window"]["resent"] for s in stream)
    dropped = sum(s["window"]["dropped_batches"] for s in stream)
    summary = [{"learner transitions/s": window["transitions_per_s"], "MB/s": window["mb_per_s"],
                "bytes/transition": window["bytes"] / max(window["transitions"], 1),
                "ack p50 ms": pct(ack, 50), "ack p99 ms": pct(ack, 99), "ack max ms": max(ack, default=np.nan),
                "sent": sent, "resent": resent,
                "dropped": dropped, "duplicates": window["duplicates"], "corrupt": window["corrupt"],
                "window s": window["seconds"]}]
    print_table(summary, list(summary[0]), f"learner (receive + verify + fsync to the replay log + buffer + ack"
                                           f"{', training' if a.train else ''}), {a.batch} transitions per message")
    print(f"\nreplay log segments written: {log_segments}; total wall time {time.monotonic() - t_start:.0f} s")
    write_json("rl_transport", {"config": {k: v for k, v in vars(a).items() if k not in ("role", "id", "send", "frames",
                                                                                          "stats")},
                                "twin_render_steps_per_s": render_rate, "loops": rows, "transport": summary[0],
                                "log_segments": log_segments}, a.out)


if __name__ == "__main__":
    main()
