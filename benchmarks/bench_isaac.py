"""The Isaac Lab twin against the MuJoCo twin (issue 17), run in the Isaac venv (make isaac):

1. parity: the same 200-step joint_pos command sequence (no contact: the reach scene, fingers
   never fully closed) on both twins, one world; max and RMS joint-position error;
2. experts: each task's scripted expert on 100 seeds (100 worlds in one Isaac Lab env), both
   robots; success rate beside the MuJoCo twin's on the same seeds;
3. throughput on CPU: agent-steps/s at 1, 16, 64 and 256 worlds (ee_delta, so101/pick_cube)
   against the MuJoCo twin in one process and in gymnasium's async vector env (one process per
   world, as many as the machine has cores), measured in the same run; the crossover named.

Every part runs in a child process of its own (Isaac Lab keeps one simulation per process).

    .venv-isaac/bin/python benchmarks/bench_isaac.py [--seeds 100] [--parts parity,experts,throughput]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import print_table, write_json  # noqa: E402

ROBOTS = ("so101", "arm6")
TASKS = ("reach", "pick_cube", "push", "insert")


def command_sequence(spec, steps: int, seed: int = 0) -> np.ndarray:
    """Smooth joint targets around home within 80% of the limits, gripper between open and 80%."""
    rng = np.random.default_rng(seed)
    home, lo, hi = np.array(spec.home), np.array(spec.lower), np.array(spec.upper)
    span = 0.35 * np.minimum(hi - home, home - lo).clip(0.1, 0.8)
    t = np.arange(steps)[:, None] / 30.0
    f = rng.uniform(0.15, 0.5, len(home))
    ph = rng.uniform(0, 2 * np.pi, len(home))
    q = home + span * np.sin(2 * np.pi * f * t + ph) * np.minimum(1.0, t / 1.0)
    grip = 0.4 + 0.4 * np.sin(2 * np.pi * 0.3 * t[:, 0])
    return np.concatenate([q, grip[:, None]], axis=1).astype(np.float32)


def child_parity(robot: str, steps: int) -> dict:
    from robot_rl.sim import make_env
    from robot_rl.sim.isaac import make_isaac_env
    mj = make_env("reach", robot, action_mode="joint_pos", cameras=(), render_mode=None, max_episode_steps=10 ** 6,
                  terminate_on_success=False)
    seq = command_sequence(mj.robot_spec, steps)
    obs, _ = mj.reset(seed=3)
    q_mj = [obs["joint_pos"]]
    for a in seq:
        obs, *_ = mj.step(a)
        q_mj.append(obs["joint_pos"])
    isa = make_isaac_env("reach", robot=robot, num_envs=1, action_mode="joint_pos", seed=3, max_episode_steps=10 ** 6,
                         terminate_on_success=False)
    obs, _ = isa.reset(seeds=[3])
    q_is = [obs["joint_pos"][0]]
    for a in seq:
        obs, *_ = isa.step(a[None])
        q_is.append(obs["joint_pos"][0])
    isa.close()
    d = np.array(q_is, dtype=np.float64) - np.array(q_mj, dtype=np.float64)
    travel = float(np.abs(np.diff(np.array(q_mj), axis=0)).sum(0).max())
    return {"robot": robot, "steps": steps, "rms_mrad": float(np.sqrt((d ** 2).mean()) * 1e3),
            "max_mrad": float(np.abs(d).max() * 1e3),
            "rms_per_joint_mrad": (np.sqrt((d ** 2).mean(0)) * 1e3).round(4).tolist(),
            "max_joint_travel_rad": travel}


def run_experts_isaac(env, seeds: list[int]) -> tuple[np.ndarray, float, int]:
    n = env.num_envs
    env.reset(seeds=seeds)
    experts = [env.make_expert(i, seed=s) for i, s in enumerate(seeds)]
    done, succ = np.zeros(n, bool), np.zeros(n, bool)
    zero = np.zeros(env.action_space.shape, np.float32)
    steps, t0 = 0, time.perf_counter()
    while not done.all():
        a = np.stack([experts[i].act(env.obs_of(i)) if not done[i] else zero for i in range(n)])
        _, _, te, tr, info = env.step(a, active=~done)
        succ |= info["success"] & ~done
        done |= te | tr
        steps += 1
    return succ, time.perf_counter() - t0, steps


def child_experts(robot: str, task: str, seeds: int) -> dict:
    from robot_rl.sim import make_env
    from robot_rl.sim.isaac import make_isaac_env
    ss = list(range(1000, 1000 + seeds))
    mj = make_env(task, robot, cameras=(), render_mode=None)
    mj_succ = []
    for s in ss:
        obs, _ = mj.reset(seed=s)
        ex = mj.make_expert(seed=s)
        while True:
            obs, r, te, tr, info = mj.step(ex.act(obs))
            if te or tr:
                break
        mj_succ.append(info["success"])
    t0 = time.perf_counter()
    env = make_isaac_env(task, robot=robot, num_envs=seeds, seed=0)
    build = time.perf_counter() - t0
    succ, wall, steps = run_experts_isaac(env, ss)
    env.close()
    return {"robot": robot, "task": task, "seeds": seeds, "isaac_success": float(succ.mean()),
            "mujoco_success": float(np.mean(mj_succ)), "isaac_build_s": build, "isaac_wall_s": wall,
            "isaac_steps": steps}


def child_throughput_isaac(n: int, steps: int) -> dict:
    from robot_rl.sim.isaac import make_isaac_env
    env = make_isaac_env("pick_cube", robot="so101", num_envs=n, seed=0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = (rng.uniform(-1, 1, (8, n) + env.action_space.shape) * 0.3).astype(np.float32)
    acts[..., -1] = 0.0
    for k in range(3):  # warm: kernels compiled, caches filled
        env.step(acts[k % 8])
    physics = [0.0]
    inner = env.env.step

    def timed(a):  # Isaac Lab's own step (physics, events); the rest is the mirrors (IK, obs, rewards)
        t = time.perf_counter()
        out = inner(a)
        physics[0] += time.perf_counter() - t
        return out
    env.env.step = timed
    t0 = time.perf_counter()
    for k in range(steps):
        env.step(acts[k % 8])
    wall = time.perf_counter() - t0
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    env.close()
    return {"backend": "isaac (MuJoCo-Warp, CPU)", "num_envs": n, "agent_steps_per_s": n * steps / wall,
            "env_steps_per_s": steps / wall, "isaac_lab_step_share": physics[0] / wall, "peak_rss_gib": rss / 1024 ** 3}


def child_throughput_mujoco(n: int, steps: int, mode: str) -> dict:
    import gymnasium as gym
    from robot_rl.sim import make_vec_env
    rng = np.random.default_rng(0)
    workers = n if mode == "sync" else min(n, os.cpu_count() or 1)
    env = make_vec_env("pick_cube", num_envs=workers, robot="so101", vectorization_mode=mode, cameras=(),
                       render_mode=None)
    env.reset(seed=0)
    acts = (rng.uniform(-1, 1, (8,) + env.action_space.shape) * 0.3).astype(np.float32)
    acts[..., -1] = 0.0
    env.step(acts[0])
    t0 = time.perf_counter()
    for k in range(steps):
        env.step(acts[k % 8])
    wall = time.perf_counter() - t0
    env.close()
    assert isinstance(env, gym.vector.VectorEnv)
    return {"backend": f"mujoco ({mode}, {workers} proc)" if mode == "async" else "mujoco (one process)",
            "num_envs": workers, "agent_steps_per_s": workers * steps / wall, "env_steps_per_s": steps / wall}


def child(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "parity":
        out = child_parity(rest[0], int(rest[1]))
    elif kind == "experts":
        out = child_experts(rest[0], rest[1], int(rest[2]))
    elif kind == "isaac":
        out = child_throughput_isaac(int(rest[0]), int(rest[1]))
    else:
        out = child_throughput_mujoco(int(rest[0]), int(rest[1]), rest[2])
    print("RESULT " + json.dumps(out), flush=True)


def _run_child(*args, timeout: float = 3600) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            print(f"  {' '.join(map(str, args))}: {time.perf_counter() - t0:.0f} s", flush=True)
            return r
    raise RuntimeError(f"child {args} failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--parts", default="parity,experts,throughput")
    ap.add_argument("--robots", default=",".join(ROBOTS))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--envs", default="1,16,64,256")
    ap.add_argument("--steps", type=int, default=20, help="timed control steps per throughput point")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    parts = a.parts.split(",")
    result: dict = {"machine": f"{os.cpu_count()} CPU cores, no GPU" if not _has_cuda() else "GPU"}
    partial = Path(a.out or HERE / "results" / "bench_isaac.json").with_suffix(".partial.json")

    def run_child(*args, **kw):  # every finished child is kept, so a later failure loses nothing
        r = _run_child(*args, **kw)
        result.setdefault("rows", []).append({"args": list(map(str, args)), **r})
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(result, indent=1))
        return r

    if "parity" in parts:
        rows = [run_child("parity", r, 200) for r in a.robots.split(",")]
        print_table(rows, ["robot", "steps", "rms_mrad", "max_mrad", "max_joint_travel_rad"],
                    "joint_pos parity, Isaac twin vs MuJoCo twin (200 steps, no contact)")
        result["parity"] = rows
    if "experts" in parts:
        rows = [run_child("experts", r, t, a.seeds) for r in a.robots.split(",") for t in a.tasks.split(",")]
        print_table(rows, ["robot", "task", "seeds", "isaac_success", "mujoco_success", "isaac_wall_s"],
                    f"scripted experts, {a.seeds} seeds")
        result["experts"] = rows
    if "throughput" in parts:
        rows = []
        for n in map(int, a.envs.split(",")):
            rows.append(run_child("isaac", n, a.steps))
            rows.append(run_child("mujoco", n, max(a.steps, 200 // n), "sync"))
        rows.append(run_child("mujoco", os.cpu_count() or 1, 200, "async"))
        best_mj = max(r["agent_steps_per_s"] for r in rows if r["backend"].startswith("mujoco"))
        cross = next((r["num_envs"] for r in rows if r["backend"].startswith("isaac")
                      and r["agent_steps_per_s"] > best_mj), None)
        print_table(rows, ["backend", "num_envs", "agent_steps_per_s", "env_steps_per_s", "isaac_lab_step_share"],
                    "throughput on CPU, so101/pick_cube, ee_delta")
        print(f"crossover: {'Isaac twin passes the best MuJoCo figure at ' + str(cross) + ' worlds' if cross else 'none up to ' + a.envs.split(',')[-1] + ' worlds on CPU'}")
        result["throughput"] = rows
        result["crossover_num_envs"] = cross
    result.pop("rows", None)
    print(f"wrote {write_json('bench_isaac', result, a.out)}")


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
