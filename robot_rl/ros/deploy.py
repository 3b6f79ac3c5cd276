"""Deploy a policy on the twin over ROS 2 and measure it: episodes through the real graph.

    scripts/isolated.sh .venv/bin/python -m robot_rl.ros.deploy runs/x/checkpoints/last --task pick_cube --episodes 10

Starts the ``deploy`` graph (:mod:`robot_rl.ros.graphs`: the twin's robot node in realtime
mode without cameras + the inference node) as separate processes with our launcher, then
for each episode sends ``/teleop/event "start seed=N"`` (the twin resets to seed N, the
inference node starts a new episode), waits for ``/success`` or the task's step limit in
control steps, and at the end reads the inference node's ``/diagnostics`` (latency
percentiles, network evaluations per query, fallbacks, underruns, stale drops, holds).
Everything -- observations, inference, actions, the robot's safety filter -- runs as it
would on a robot, in wall-clock time, so the success rate includes the cost of real latency.

DDS participants are started: the caller must already be inside a loopback-only network
namespace (``scripts/isolated.sh``).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

DIAG_INFERENCE = "inference_node: inference"
DIAG_ROBOT_LOOP = "robot_node: loop"


class DeployError(RuntimeError):
    """The deploy graph could not be started or died (the message names the cause)."""


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def _num(d: dict[str, str], *keys: str) -> float | None:
    """The first of ``keys`` in the diagnostics ``d`` as a float."""
    for k in keys:
        if k in d:
            try:
                return float(d[k])
            except ValueError:
                return None
    return None


def summarize_diagnostics(d: dict[str, str]) -> dict[str, Any]:
    """The inference node's diagnostics -> the numbers a deploy run reports."""
    lat = {}
    for q in ("p50", "p95", "p99", "max", "mean"):
        v = _num(d, f"latency_ms_{q}", f"latency_{q}_ms", f"latency/{q}_ms", f"latency_ms/{q}")
        if v is not None:
            lat[q] = v
    out: dict[str, Any] = {"latency_ms": lat}
    for name, prefix in (("worker_latency_ms", "worker_latency_ms_"), ("compute_ms", "compute_ms_")):
        v = {q: _num(d, prefix + q) for q in ("p50", "p95", "p99", "max")}
        if any(x is not None for x in v.values()):
            out[name] = {q: x for q, x in v.items() if x is not None}
    for name, keys in (("queries", ("queries",)), ("nfe_per_query", ("nfe_per_query",)), ("nfe", ("nfe",)),
                       ("fallbacks", ("fallbacks",)), ("underruns", ("underruns",)),
                       ("stale_dropped", ("stale_dropped", "stale_drops")),
                       ("holds", ("holds", "node/held_ticks")), ("ticks", ("ticks", "node/ticks")),
                       ("rate_achieved_hz", ("node/rate_achieved_hz",)),
                       ("observations", ("node/observations",)),
                       ("rejected_observations", ("node/rejected_observations",))):
        v = _num(d, *keys)
        if v is not None:
            out[name] = int(v) if float(v).is_integer() and name not in ("nfe_per_query", "rate_achieved_hz") else v
    if "nfe_per_query" not in out and out.get("queries"):
        if "nfe" in out:
            out["nfe_per_query"] = out["nfe"] / out["queries"]
    held = {k[len("holds_"):]: int(float(v)) for k, v in d.items() if k.startswith("holds_") and float(v) > 0}
    if held:
        out["held_by_reason"] = held
    return out


class _Driver:
    """The driver's own rclpy node: start events out; joint states, success, diagnostics in."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, String

        from robot_rl.ros import topics
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("deploy_driver", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        rq = topics.reliable_qos
        self.pub_event = self.node.create_publisher(String, topics.TELEOP_EVENT, rq(10))
        self.String = String
        self.js_stamps: list[float] = []  # stamps of /joint_states since the last start
        self.success: list[bool] = []  # /success since the last start
        self.diag: dict[str, dict[str, str]] = {}
        self.diag_level: dict[str, int] = {}
        self.sub_js = self.node.create_subscription(JointState, topics.JOINT_STATES, self._on_js, rq(100))
        self.q: dict[str, float] = {}  # the latest /joint_states positions
        from std_srvs.srv import SetBool
        from trajectory_msgs.msg import JointTrajectory
        self.pub_traj = self.node.create_publisher(JointTrajectory, topics.JOINT_TRAJECTORY, rq(10))
        self.pause_client = self.node.create_client(SetBool, topics.INFERENCE_PAUSE)
        self.node.create_subscription(Bool, topics.SUCCESS, lambda m: self.success.append(bool(m.data)), rq(100))
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, rq(50))

    def _on_js(self, m) -> None:
        self.js_stamps.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)
        self.q = dict(zip(m.name, m.position))

    def pause(self, on: bool, timeout: float = 10.0) -> None:
        """Pause (the robot holds) or resume the inference node through its service."""
        from std_srvs.srv import SetBool
        if not self.pause_client.wait_for_service(timeout_sec=timeout):
            raise DeployError("the inference node's pause service did not appear")
        fut = self.pause_client.call_async(SetBool.Request(data=bool(on)))
        end = time.monotonic() + timeout
        while not fut.done():
            if time.monotonic() > end:
                raise DeployError("the inference node did not answer its pause service")
            self.spin(0.02)
        if not fut.result().success:
            raise DeployError(f"pausing the inference node failed: {fut.result().message}")

    def move_home(self, spec, seconds: float = 2.5, tol: float = 0.03, timeout: float = 8.0) -> float:
        """Send the robot home (gripper open) as a /joint_trajectory and wait until it is
        there; returns the largest joint error left."""
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from robot_rl.ros import topics
        names = list(spec.joint_names)
        m = JointTrajectory()
        m.joint_names = names + ([topics.GRIPPER_JOINT] if spec.gripper is not None else [])
        p = JointTrajectoryPoint()
        p.positions = [float(x) for x in spec.home] + ([0.0] if spec.gripper is not None else [])
        p.time_from_start = Duration(sec=int(seconds), nanosec=int((seconds - int(seconds)) * 1e9))
        m.points = [p]
        self.pub_traj.publish(m)
        end = time.monotonic() + max(timeout, seconds + 1.0)
        err = math.inf
        while time.monotonic() < end:
            self.spin(0.05)
            if all(n in self.q for n in names):
                err = max(abs(self.q[n] - h) for n, h in zip(names, spec.home))
                if err < tol and time.monotonic() > end - max(timeout, seconds + 1.0) + seconds:
                    break
        return err

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            self.diag[s.name] = {kv.key: kv.value for kv in s.values}
            self.diag_level[s.name] = int.from_bytes(s.level, "little") if isinstance(s.level, bytes) else int(s.level)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self.ex.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))
            if time.monotonic() >= end:
                return

    def start(self, seed: int) -> float:
        from robot_rl.ros import topics
        self.js_stamps.clear()
        self.success.clear()
        t = time.time()
        self.pub_event.publish(self.String(data=topics.format_event("start", seed=seed, source="policy")))
        return t

    def close(self) -> None:
        self.node.destroy_node()
        self.ex.shutdown()
        self.ctx.try_shutdown()


class PersonScene:
    """The virtual SO-101's scripted person as the scene keeper and referee: places the
    task's objects for a seed (``{"do": "scene"}``) and reads the task's success from the
    unit's ground truth (``/truth``: a benchmark's view, never the code under test's)."""

    def __init__(self, url: str):
        self.url = url

    def reset(self, seed: int) -> None:
        from robot_rl.drivers.virtual.person import post
        post(self.url, {"do": "scene", "seed": int(seed)})

    def success(self) -> bool:
        from robot_rl.drivers.virtual.person import get
        return bool(get(self.url, "/truth", timeout=5)["success"])


def run_deploy_episodes(checkpoint, task: str | None = None, robot: str = "so101", episodes: int = 10,
                        seed: int = 200000, mode: str = "warm", timeout_steps: int | None = None,
                        worker: str = "thread", log_dir=None, verbose: bool = False, execution: str = "async",
                        action_mode: str | None = None, params: dict[str, Any] | None = None,
                        startup_timeout: float = 90.0, extra: dict[str, str] | None = None,
                        scene: Any = None) -> dict[str, Any]:
    """Run ``episodes`` episodes (seeds ``seed .. seed+episodes-1``) of ``task`` with the policy
    at ``checkpoint`` driving the realtime twin through the inference node; returns success
    rate, per-episode outcomes and the inference node's final diagnostics.

    ``timeout_steps``: control steps (``/joint_states`` messages) an episode may last (default:
    the task's ``max_steps``). ``params``: the inference node's ROS parameters at start-up
    (sampler / executor settings: ``{"warm_steps": 4}``); ``extra``: more ``deploy`` graph
    parameters (``{"rate": "40"}``). ``log_dir``: where the nodes' output (``deploy.log``) and the
    result (``deploy.json``) go. Raises :class:`DeployError` when the graph does not come up or
    dies; RuntimeError outside a loopback-only network namespace.

    ``scene``: a robot on the desk instead of the twin (``extra`` names its driver, port,
    calibration and camera sources). Nothing resets a real scene by itself, so between
    episodes the inference node is paused, the arm is sent home on ``/joint_trajectory``,
    ``scene.reset(seed)`` sets the scene up (a person, or the virtual SO-101's scripted one:
    :class:`PersonScene`), and the start event resumes the policy; ``scene.success()`` is
    the referee (a person's judgement, or the virtual unit's ground truth)."""
    from robot_rl.ros.isolation import HOW, loopback_only
    if not loopback_only():
        raise RuntimeError(f"run_deploy_episodes starts DDS participants: {HOW}")
    from robot_rl.ros.graphs import GRAPHS
    from robot_rl.ros.inference_node import checkpoint_config
    from robot_rl.ros.launcher import Launcher
    from robot_rl.sim.tasks import TASKS
    from robot_rl.spec import load_spec

    ck = Path(checkpoint)
    cfg = checkpoint_config(ck)
    if not cfg:
        raise DeployError(f"no readable checkpoint at {ck} (needs config.json + model.safetensors, or an ONNX "
                          "export's manifest.json)")
    meta = cfg.get("metadata") or {}
    task = task or meta.get("task")
    if task not in TASKS:
        raise DeployError(f"unknown task {task!r}; available: {sorted(TASKS)}")
    spec = load_spec(robot)
    max_steps = int(timeout_steps or TASKS[task].max_steps)
    gp = {"robot": robot, "task": task, "checkpoint": str(ck), "mode": mode, "execution": execution,
          "worker": worker, "seed": str(seed), "action_mode": action_mode or "",
          "params": ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in (params or {}).items())}
    gp.update(extra or {})
    nodes = GRAPHS["deploy"].nodes(gp)

    log_path = None
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        log_path = Path(log_dir) / "deploy.log"
    buf = io.StringIO()

    class _Tee:
        def write(self, s):
            buf.write(s)
            if verbose:
                sys.stdout.write(s)
            if logf is not None:
                logf.write(s)

        def flush(self):
            if logf is not None:
                logf.flush()

    logf = open(log_path, "w") if log_path else None
    lx = Launcher(nodes, out=_Tee(), grace_s=5.0)
    result: dict[str, int] = {}
    th = threading.Thread(target=lambda: result.setdefault("rc", lx.run()), name="deploy_launcher", daemon=True)
    if verbose:
        for n in nodes:
            print(f"  {n.name:<9} python -m {n.module} {' '.join(n.args)}", flush=True)
    t_start = time.perf_counter()
    th.start()
    drv = None

    def fail(why: str) -> DeployError:
        tail = buf.getvalue()[-3000:]
        return DeployError(f"{why}\n--- node output (tail) ---\n{tail}")

    try:
        drv = _Driver()
        # the graph is up when the twin publishes, the inference node reports, both listen to
        # start events, and the policy has computed its first chunk
        end = time.monotonic() + startup_timeout
        while True:
            if not th.is_alive():
                raise fail(f"the deploy graph stopped during start-up ({lx.reason or 'exited'})")
            d = drv.diag.get(DIAG_INFERENCE)
            up = (drv.sub_js.get_publisher_count() > 0 and drv.pub_event.get_subscription_count() >= 2
                  and d is not None and (_num(d, "queries") or _num(d, "chunks") or 0) > 0)
            if up:
                break
            if time.monotonic() > end:
                why = {k: v for k, v in (d or {}).items() if k in ("held", "hold_reason", "reason", "missing")
                       or k.startswith("node/images_")}
                raise fail(f"the deploy graph was not ready within {startup_timeout:g} s "
                           f"(joint states {'flowing' if drv.sub_js.get_publisher_count() else 'absent'}, "
                           f"inference {why or 'silent'})")
            drv.spin(0.05)
        t_ready = time.perf_counter() - t_start
        dt = 1.0 / float((extra or {}).get("rate") or spec.control_hz)
        outcomes: list[dict[str, Any]] = []
        for i in range(episodes):
            s = seed + i
            if scene is not None:
                drv.pause(True)
                home_err = drv.move_home(spec)
                if home_err > 0.1:
                    raise fail(f"the arm did not reach home before episode seed={s} (off by {home_err:.2f} rad)")
                scene.reset(s)
            t_sent = drv.start(s)
            if scene is not None:
                drv.pause(False)
                n_succ0 = 0
            armed_at = None  # index into js_stamps of the first step of the new episode
            ok = False
            wall_end = time.monotonic() + 5.0 + 3 * max_steps * dt
            while True:
                drv.spin(0.01)
                if not th.is_alive():
                    raise fail(f"the deploy graph stopped during episode seed={s} ({lx.reason or 'exited'})")
                if armed_at is None and scene is not None:
                    new = [k for k, st in enumerate(drv.js_stamps) if st > t_sent]
                    if new:
                        armed_at, next_check = new[0], 0.0
                    elif time.monotonic() > wall_end:
                        raise fail(f"the robot node published nothing after the start of episode seed={s}")
                    continue
                if armed_at is None:
                    # the new episode has begun when the twin publishes a step stamped after the
                    # start event and /success reads false (a success left over from the last
                    # episode is never counted)
                    new = [k for k, st in enumerate(drv.js_stamps) if st > t_sent]
                    if new and any(not x for x in drv.success):
                        armed_at, n_succ0 = new[0], drv.success.index(False)
                    elif time.monotonic() > wall_end:
                        raise fail(f"the twin never started episode seed={s}")
                    continue
                steps = len(drv.js_stamps) - armed_at
                if scene is not None:
                    if time.monotonic() >= next_check:  # the referee, ten times a second
                        next_check = time.monotonic() + 0.1
                        if scene.success():
                            ok = True
                            break
                elif any(drv.success[n_succ0:]):
                    ok = True
                    break
                if steps >= max_steps or time.monotonic() > wall_end:
                    break
            steps = len(drv.js_stamps) - armed_at
            outcomes.append({"seed": s, "success": ok, "steps": steps, "time_s": steps * dt})
            if verbose:
                print(f"episode {i + 1}/{episodes} seed={s}: {'success' if ok else 'failure'} after {steps} steps",
                      flush=True)
        # two diagnostics periods for the final numbers
        drv.diag.pop(DIAG_INFERENCE, None)
        end = time.monotonic() + 5.0
        while DIAG_INFERENCE not in drv.diag and time.monotonic() < end:
            drv.spin(0.05)
        diag = dict(drv.diag.get(DIAG_INFERENCE, {}))
        robot_loop = dict(drv.diag.get(DIAG_ROBOT_LOOP, {}))
    finally:
        if drv is not None:
            drv.close()
        lx.stop("deploy episodes done")
        th.join(timeout=30.0)
        if logf is not None:
            logf.close()
    n_ok = sum(o["success"] for o in outcomes)
    lo, hi = _wilson(n_ok, len(outcomes))
    succ_t = [o["time_s"] for o in outcomes if o["success"]]
    out: dict[str, Any] = {
        "checkpoint": str(ck), "task": task, "robot": robot, "mode": mode, "execution": execution, "worker": worker,
        "params": dict(params or {}),
        "episodes": len(outcomes), "seeds": [seed, seed + episodes - 1], "successes": n_ok,
        "success_rate": n_ok / max(1, len(outcomes)), "ci95": [lo, hi],
        "mean_success_time_s": (sum(succ_t) / len(succ_t)) if succ_t else None,
        "timeout_steps": max_steps, "outcomes": outcomes, "startup_s": t_ready,
        "wall_s": time.perf_counter() - t_start, **summarize_diagnostics(diag),
        "robot_rate_achieved_hz": _num(robot_loop, "rate_achieved_hz"),
        "robot_overruns": _num(robot_loop, "overruns"),
        "diagnostics": diag,
    }
    if log_dir is not None:
        (Path(log_dir) / "deploy.json").write_text(json.dumps(out, indent=2))
    return out


def format_summary(r: dict[str, Any]) -> str:
    lat = r.get("latency_ms") or {}
    lines = [
        f"deploy {r['checkpoint']} on {r['robot']}/{r['task']} (sampler {r['mode']}, execution {r['execution']}, "
        f"worker {r['worker']}" + "".join(f", {k}={v}" for k, v in r.get("params", {}).items())
        + f"), seeds {r['seeds'][0]}..{r['seeds'][1]}",
        f"success {100 * r['success_rate']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] "
        f"({r['successes']}/{r['episodes']})"
        + (f", mean time to success {r['mean_success_time_s']:.2f} s" if r.get("mean_success_time_s") else ""),
        "inference latency ms (query start tick -> chunk taken): "
        + (", ".join(f"{k} {v:.1f}" for k, v in lat.items()) if lat else "n/a"),
    ]
    for name, what in (("worker_latency_ms", "worker latency ms (submit -> result)"),
                       ("compute_ms", "sampler compute ms")):
        if r.get(name):
            lines.append(f"{what}: " + ", ".join(f"{k} {v:.1f}" for k, v in r[name].items()))
    parts = [f"{k} {r[k]:.2f}" if isinstance(r[k], float) else f"{k} {r[k]}"
             for k in ("queries", "nfe_per_query", "fallbacks", "underruns", "stale_dropped", "holds",
                       "rate_achieved_hz") if k in r]
    if parts:
        lines.append("inference node: " + ", ".join(parts))
    if r.get("held_by_reason"):
        lines.append("held ticks by reason: " + ", ".join(f"{k} {v}" for k, v in r["held_by_reason"].items()))
    if r.get("robot_rate_achieved_hz") is not None:
        lines.append(f"robot node: {r['robot_rate_achieved_hz']:.2f} Hz achieved, "
                     f"{int(r.get('robot_overruns') or 0)} overruns; wall {r['wall_s']:.1f} s "
                     f"(start-up {r['startup_s']:.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robot_rl.ros.deploy", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--task", default=None, help="twin task (default: the checkpoint's)")
    ap.add_argument("--robot", default="so101")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=200000, help="first seed (held-out seeds by default)")
    ap.add_argument("--mode", default="warm", choices=["warm", "cold", "rtc"], help="chunk sampler")
    ap.add_argument("--execution", default="async", choices=["async", "sync", "ensemble"])
    ap.add_argument("--worker", default="thread", choices=["thread", "process"])
    ap.add_argument("--action-mode", default=None, help="the policy's action mode (default: the checkpoint's)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="an inference node ROS parameter at start-up (repeatable): --param warm_steps=4")
    ap.add_argument("--rate", default=None, help="control rate of both nodes in Hz (default: the spec's)")
    ap.add_argument("--timeout-steps", type=int, default=None, help="episode limit in control steps (default: task's)")
    ap.add_argument("--log-dir", default=None, help="write the nodes' output (deploy.log) and deploy.json here")
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    ap.add_argument("--verbose", action="store_true", help="print every node's output and each episode")
    hw = ap.add_argument_group("a robot on the desk instead of the twin (the deploy graph's hardware settings)")
    hw.add_argument("--driver", default="sim", help="feetech | dynamixel | ros2_control | ... (sim: the twin)")
    hw.add_argument("--port", default="", help="the follower's serial port")
    hw.add_argument("--calibration", default="", help="the follower's motor calibration file")
    hw.add_argument("--sources", default="", help="camera sources, one per camera (URLs or devices), comma-separated")
    hw.add_argument("--cameras", default="front,wrist", help="the camera names the sources feed")
    hw.add_argument("--person", default="", help="the virtual SO-101's person URL: it sets each episode's scene "
                    "and referees success (robot-rl virtual so101 prints it)")
    args = ap.parse_args(argv)
    from robot_rl.ros.isolation import HOW, loopback_only
    if not loopback_only():
        print(f"deploy: refusing to start DDS participants outside a loopback-only network namespace; {HOW}",
              file=sys.stderr)
        return 2
    params = {}
    for kv in args.param:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            print(f"deploy: --param needs NAME=VALUE, got {kv!r}", file=sys.stderr)
            return 2
        params[k] = v
    extra = {"rate": args.rate} if args.rate else {}
    scene = None
    if args.driver != "sim":
        if not args.person:
            print("deploy: on a robot, episodes need someone to set the scene and judge success: --person URL "
                  "(the virtual SO-101's); on a real arm, use `robot-rl launch deploy` and judge by eye",
                  file=sys.stderr)
            return 2
        extra.update(driver=args.driver, port=args.port, calibration=args.calibration, sources=args.sources,
                     cameras=args.cameras if args.sources else "none")
        scene = PersonScene(args.person)
    try:
        r = run_deploy_episodes(args.checkpoint, args.task, robot=args.robot, episodes=args.episodes, seed=args.seed,
                                mode=args.mode, timeout_steps=args.timeout_steps, worker=args.worker,
                                log_dir=args.log_dir, verbose=args.verbose, execution=args.execution,
                                action_mode=args.action_mode, params=params, extra=extra or None, scene=scene)
    except (DeployError, ValueError, KeyError) as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 2
    print(format_summary(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
