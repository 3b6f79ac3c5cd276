"""Twin speed: env steps/s (state only and with one 96x96 camera) at the spec's 20 Hz
control rate, and the Python overhead as env step time / raw mj_step time for the same
physics, measured in the same run.

    .venv/bin/python benchmarks/bench_twin.py [--steps 3000] [--out FILE]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import print_table, write_json
from robot_rl.sim import make_env  # sets MUJOCO_GL=egl before mujoco is imported



def run_env(env, steps: int, mode: str, rng) -> float:
    obs, _ = env.reset(seed=0)
    home = env.twin.home
    actions = []
    for _ in range(64):
        if mode == "joint_pos":
            a = np.concatenate([home + rng.normal(0, 0.05, len(home)), [rng.uniform()]])
        else:
            a = np.concatenate([rng.uniform(-1, 1, 6) * 0.5, [rng.uniform()]])
        actions.append(a.astype(np.float32))
    env.twin.physics_seconds = 0.0
    t0 = time.perf_counter()
    for i in range(steps):
        obs, r, term, trunc, info = env.step(actions[i % 64])
        if term or trunc:
            env.reset()
    wall = time.perf_counter() - t0
    # raw physics on the very same trajectory: the time the env spent inside mj_step
    return steps / wall, steps / env.twin.physics_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--cam-steps", type=int, default=400)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for robot in ("so101", "arm6"):
        for task in ("pick_cube", "insert"):
            for mode in ("joint_pos", "ee_delta"):
                env = make_env(task, robot, action_mode=mode, cameras=())
                sps, raw = run_env(env, args.steps, mode, rng)
                cam_env = make_env(task, robot, action_mode=mode, cameras=("front",), image_size=96)
                cam_sps, _ = run_env(cam_env, args.cam_steps, mode, rng)
                rows.append({"robot": robot, "task": task, "action_mode": mode,
                             "control_hz": env.robot_spec.control_hz, "substeps": env.twin.n_substeps,
                             "env_steps_per_s": sps, "raw_mj_step_ctrl_steps_per_s": raw,
                             "overhead_ratio": raw / sps, "cam96_steps_per_s": cam_sps})
                env.close()
                cam_env.close()
    print_table(rows, ["robot", "task", "action_mode", "substeps", "env_steps_per_s", "raw_mj_step_ctrl_steps_per_s",
                       "overhead_ratio", "cam96_steps_per_s"],
                "Twin speed (single process; raw = mj_step alone on the same trajectory, 25 substeps per control step;\n overhead_ratio = env step time / raw mj_step time)")
    ok_state = min(r["env_steps_per_s"] for r in rows) >= 1000
    ok_cam = min(r["cam96_steps_per_s"] for r in rows) >= 40
    print(f"\ntarget >= 1000 env steps/s state-only: {'PASS' if ok_state else 'FAIL'}; "
          f">= 40 steps/s with one 96x96 camera: {'PASS' if ok_cam else 'FAIL'}")
    write_json("twin", {"rows": rows, "pass_state": ok_state, "pass_camera": ok_cam}, args.out)


if __name__ == "__main__":
    main()
