"""Online RL benchmark on the twin (issue 6). Every configuration runs in its own process,
two at a time (2 cores), 3 seeds each:

  pick      ours: IQL pretraining on 20 demos, then online fine-tuning with RLPD sampling
  pick_hil  the same with the simulated human (intervention budget 10%)
  pick50    ours from 50 demos (offline-to-online from a larger store)
  sb3       "SB3 SAC, no demos, sparse reward, 6k steps": Stable-Baselines3 SAC (its defaults) on the
            same env and flattened state observation, no demonstrations (the usual baseline)
  sb3_demos the same SB3 SAC with the same 20 demos as pick (the store's first 20 episodes) in its
            replay buffer before the first env step, and ours' budget: 10k env steps
  steer     noise-space RL fine-tuning (DSRL) of a diffusion policy trained 600 steps
  steer3    the same from a policy trained 400 steps (10% with Gaussian noise, 47% at zero noise)
  steer_na  steer3's policy with noise aliasing (DSRL-NA): a critic over executed chunks that also
            learns from the 20 demos teaches the noise critic; exploration std 0.05
  speed     learner gradient updates/s at batch 256, state and 96x96 image

    cd benchmarks && ../scripts/isolated.sh ../.venv/bin/python bench_rl.py [--only pick,sb3] [--seeds 3]

Prints tables, writes results/rl.json and results/rl_*.png (mean curves). A method with no run
folders under runs/bench_rl/ on this machine keeps its entry (and curve) of the existing rl.json;
the methods that ran replace or add their own. ``--final-eval N`` re-evaluates the final policies
of the pick* and sb3* runs in --only on N held-out episodes. The under-trained
diffusion checkpoint comes from ``robot-rl train`` (see docs/benchmarks.md) at
../runs/bench/diffusion_pick_cube_under/checkpoints/last.
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

from _common import RESULTS, print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "bench_rl"
DEMOS = ROOT / "data" / "bench" / "so101_pick_cube.zarr"
UNDER = ROOT / "runs" / "bench" / "diffusion_pick_cube_under" / "checkpoints" / "last"  # 600 training steps
UNDER3 = ROOT / "runs" / "bench" / "diffusion_pick_cube_under3" / "checkpoints" / "last"  # 400 training steps
TARGET = 0.9

OURS = {"task": "pick_cube", "demos": str(DEMOS), "demo_episodes": 20, "env_steps": 10_000, "eval_every": 1000,
        "eval_episodes": 30, "offline": {"steps": 2000, "wsrl": False, "online": "iql", "temperature": 3.0,
                                       "online_actor_lr": 3e-5},
        "sac": {"n_critics": 2, "utd": 1}}
CONFIGS = {
    "pick": OURS,
    "pick_hil": {**OURS, "hil": True, "human": {"budget": 0.1}},
    "pick50": {**OURS, "demo_episodes": 50},  # offline-to-online from a larger store
    "steer": {"task": "pick_cube", "env_steps": 8000, "eval_every": 2000, "eval_episodes": 30, "learning_starts": 200,
              "steer": {"checkpoint": str(UNDER)},
              "sac": {"n_critics": 2, "utd": 2, "gamma": 0.9, "bc_weight": 0.0, "init_temperature": 0.05,
                      "actor_l2": 1.0}},
    "steer3": {"task": "pick_cube", "env_steps": 20_000, "eval_every": 2000, "eval_episodes": 30,
               "learning_starts": 200, "steer": {"checkpoint": str(UNDER3)},
               "sac": {"n_critics": 2, "utd": 2, "gamma": 0.9, "bc_weight": 0.0, "init_temperature": 0.05,
                       "actor_l2": 0.3}},
    "steer_na": {"task": "pick_cube", "env_steps": 20_000, "eval_every": 2000, "eval_episodes": 30,
                 "learning_starts": 200, "demos": str(DEMOS), "demo_episodes": 20,
                 "steer": {"checkpoint": str(UNDER3), "aliased": True, "bank": 16, "explore_std": 0.05},
                 "sac": {"n_critics": 2, "utd": 2, "gamma": 0.9, "bc_weight": 0.0, "init_temperature": 0.05,
                         "actor_l2": 0.0}},
}
SB3_STEPS = 6_000
# sb3_demos: the same demos and env-step budget as ours
SB3_DEMOS = {"demo_episodes": OURS["demo_episodes"], "env_steps": OURS["env_steps"]}


def child_rl(cfg: dict) -> None:
    import torch

    torch.set_num_threads(1)
    from robot_rl.rl.loop import RLConfig, run_online

    run_online(RLConfig.from_dict({**cfg, "progress": False}))


def label(name: str, m: dict | None = None) -> str:
    """The method as the tables print it (the SB3 baselines spelled out: what they get)."""
    steps = (m or {}).get("final_env_steps") or [{"sb3": SB3_STEPS, "sb3_demos": SB3_DEMOS["env_steps"]}.get(name)]
    k = f"{steps[0] / 1000:g}k" if steps[0] else "?"
    return {"sb3": f"SB3 SAC, no demos, sparse reward, {k} steps",
            "sb3_demos": f"SB3 SAC + the same 20 demos, sparse reward, {k} steps"}.get(name, name)


def flat_env():
    """pick_cube (so101, ee_delta, sparse reward) with the DEFAULT_KEYS observation flattened
    into one float32 vector, for SB3's MlpPolicy."""
    import gymnasium as gym

    from robot_rl.rl.loop import DEFAULT_KEYS
    from robot_rl.sim import make_env

    class Flat(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            n = sum(int(np.prod(env.observation_space[k].shape)) for k in DEFAULT_KEYS)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)

        def observation(self, obs):
            return flatten(obs)

        def make_expert(self, seed=None):
            return self.env.make_expert(seed)

    return Flat(make_env("pick_cube", "so101", reward_type="sparse"))


def flatten(obs) -> np.ndarray:
    from robot_rl.rl.loop import DEFAULT_KEYS

    return np.concatenate([np.asarray(obs[k], np.float32).ravel() for k in DEFAULT_KEYS])


def demo_transitions(store: Path, episodes: int) -> tuple[list[tuple], dict]:
    """The demonstrations ours learns from (``ReplayBuffer.from_store`` with pick's
    ``demo_episodes`` and ``successful_only``), as the sparse-reward env produces them.

    ``from_store`` labels the store's last step of a successful episode with reward 1 and a
    terminal. ``robot-rl record sim`` keeps recording ``hold_steps`` (2) steps after success,
    while the env gives reward 1 and ends the episode on the step that reaches success. So
    each episode is replayed from its recorded seed with its stored actions: the replayed
    observations must equal the stored rows (else an error), and reward, terminated,
    truncated and the terminal next observation are the env's own. Steps after success are
    dropped (the env never produces them). Returns ``[(obs, action, reward, next_obs,
    terminated, truncated)]`` (flat observations) and counts."""
    from robot_rl.data import EpisodeStore
    from robot_rl.rl.loop import DEFAULT_KEYS, RLConfig
    from robot_rl.rl.replay import ReplayBuffer

    ours = RLConfig.from_dict({**OURS, "demo_episodes": episodes})
    only_ok = ours.offline.successful_only or not ours.offline.steps  # as run_online passes it
    buf = ReplayBuffer.from_store(store, DEFAULT_KEYS, max_episodes=episodes, successful_only=only_ok)
    with EpisodeStore.open(store) as st:
        metas = [m for m in st.episodes_meta() if m["success"] or not only_ok][:episodes]
    env = flat_env()
    out: list[tuple] = []
    stats = {"episodes": len(metas), "store_steps": 0, "transitions": 0, "successes": 0,
             "steps_after_success_dropped": 0, "store_terminal_minus_env_terminal": []}
    row = 0
    try:
        for m in metas:
            n = int(m["length"])
            seed = (m.get("extra") or {}).get("seed")
            if seed is None:
                raise ValueError(f"{store}: episode {m['index']} has no recorded seed; it cannot be replayed")
            o, _ = env.reset(seed=int(seed))
            term = trunc = False
            for t in range(n):
                i = row + t
                stored = np.concatenate([buf.obs[k][i].ravel() for k in DEFAULT_KEYS]).astype(np.float32)
                if not buf.valid[i] or not np.allclose(o, stored, atol=1e-5):
                    raise ValueError(f"{store}: episode {m['index']} step {t}: the replayed observation differs "
                                     f"from the stored one by {np.abs(o - stored).max():.3g}")
                no, r, term, trunc, _ = env.step(buf.action[i])
                out.append((o, buf.action[i].copy(), float(r), no, bool(term), bool(trunc)))
                o = no
                if term or trunc:
                    break
            if not (term or trunc):  # the store stops before the env would: a time-limit end
                out[-1] = (*out[-1][:5], True)
            stored_end = int(np.flatnonzero(buf.terminated[row:row + n])[-1]) if buf.terminated[row:row + n].any() \
                else None
            stats["store_steps"] += n
            stats["transitions"] += t + 1
            stats["successes"] += int(term)
            stats["steps_after_success_dropped"] += n - (t + 1)
            if stored_end is not None and term:
                stats["store_terminal_minus_env_terminal"].append(stored_end - t)
            row += n + 1  # from_store: n rows of the episode + the row of its last next_obs
    finally:
        env.close()
    if row != buf.rows:
        raise ValueError(f"{store}: {buf.rows} replay rows, expected {row}")
    return out, stats


def sb3_add_demos(model, transitions: list[tuple]) -> int:
    """Demonstrations into an SB3 off-policy model's replay buffer, stored as SB3 stores its
    own steps: actions rescaled to [-1, 1], arrays of shape (n_envs=1, ...), ``done`` on an
    episode's last step and ``TimeLimit.truncated`` where that end is a time limit (so the
    critic bootstraps there). Returns the number of actions that had to be clipped."""
    space = model.action_space
    clipped = 0
    for o, a, r, no, term, trunc in transitions:
        ac = np.clip(a, space.low, space.high)
        clipped += int(not np.array_equal(ac, a))
        model.replay_buffer.add(o[None], no[None], model.policy.scale_action(ac)[None], np.array([r], np.float32),
                                np.array([term or trunc]), [{"TimeLimit.truncated": bool(trunc and not term)}])
    return clipped


def child_sb3(cfg: dict) -> None:
    """SB3 SAC (its defaults) on the flattened state observation, sparse reward; with
    ``demo_episodes`` > 0 the first that many demonstrations of the store (those ``pick``
    uses) are in its replay buffer before the first env step. SB3's defaults are kept:
    ``learning_starts=100`` uniform random steps before the first update (the demos are
    there from step 0), one update per env step, batches drawn uniformly from the buffer."""
    import torch
    from safetensors.torch import save_file
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from robot_rl.rl.curves import CurveLog
    from robot_rl.rl.loop import evaluate_policy

    torch.set_num_threads(1)
    env, eval_env = flat_env(), flat_env()
    out = Path(cfg["out"])
    log = CurveLog(out / "curve.csv")
    model = SAC("MlpPolicy", env, seed=cfg["seed"], verbose=0, device="cpu")
    extra: dict = {}
    t0 = time.monotonic()
    if cfg.get("demo_episodes"):
        trans, extra["demos"] = demo_transitions(Path(cfg.get("demos", DEMOS)), int(cfg["demo_episodes"]))
        extra["demos"]["actions_clipped"] = sb3_add_demos(model, trans)
        extra["demos"]["replay_size_at_start"] = int(model.replay_buffer.size())
        extra["demo_load_s"] = time.monotonic() - t0

    def evaluate(step: int) -> None:
        r = evaluate_policy(eval_env, lambda o: model.predict(o, deterministic=True)[0], cfg["eval_episodes"],
                            1_000_000)
        log.add({"env_steps": step, "wall_s": time.monotonic() - t0, "updates": model._n_updates, **r,
                 "intervention_rate": 0.0})

    class Eval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % cfg["eval_every"] == 0:
                evaluate(self.num_timesteps)
            return True

    evaluate(0)
    model.learn(total_timesteps=cfg["env_steps"], callback=Eval())
    # the final policy's weights (safetensors, no pickle) for final_eval_sb3
    save_file({k: v.detach().contiguous() for k, v in model.policy.state_dict().items()},
              str(out / "policy.safetensors"))
    rows = log.rows
    (out / "summary.json").write_text(json.dumps({"final_success": rows[-1]["success"], "env_steps": cfg["env_steps"],
                                                  "steps_to_90": next((int(r["env_steps"]) for r in rows
                                                                       if r["success"] >= TARGET), None),
                                                  "wall_s": time.monotonic() - t0, "updates": model._n_updates,
                                                  **extra}))


def sb3_policy(path: Path, env):
    """An SB3 SAC model holding the weights ``child_sb3`` saved (for deterministic predict)."""
    from safetensors.torch import load_file
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", env, verbose=0, device="cpu")
    model.policy.load_state_dict(load_file(str(path)))
    model.policy.set_training_mode(False)
    return model


def child_speed(out: str) -> None:
    """Critic updates (+ the actor update every utd) per second at batch 256."""
    import torch

    from robot_rl.rl.replay import ReplayBuffer
    from robot_rl.rl.sac import SACConfig, SACLearner

    res = {}
    rng = np.random.default_rng(0)
    for name, spec, kw in [
        ("state (E=2, UTD=1, default)", {"x": ((29,), np.float32)}, {}),
        ("state (E=10, UTD=20, RLPD paper)", {"x": ((29,), np.float32)}, {"n_critics": 10, "utd": 20}),
        ("image 96x96 + state (E=2)", {"image_front": ((96, 96, 3), np.uint8), "x": ((7,), np.float32)}, {}),
    ]:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            buf = ReplayBuffer(spec, 7, 3000)
            for t in range(2000):
                o = {k: (rng.integers(0, 255, s, dtype=np.uint8) if d == np.uint8 else
                         rng.normal(size=s).astype(np.float32)) for k, (s, d) in spec.items()}
                buf.add(o, rng.uniform(-1, 1, 7), 0.0, o, False, t % 50 == 49)
            cfg = SACConfig(**{"n_critics": 2, "utd": 1, **kw})
            L = SACLearner(spec, -np.ones(7, np.float32), np.ones(7, np.float32), cfg)
            L.update(buf, buf)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < (6 if "image" not in name else 15):
                L.update(buf, buf)
                n += cfg.utd
            res[f"{name}, {threads} thread(s)"] = n / (time.perf_counter() - t0)
    Path(out).write_text(json.dumps(res))


def spawn(kind: str, cfg: dict) -> subprocess.Popen:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_rl; "
            f"bench_rl.child_{kind}(json.loads(sys.argv[1]))")
    Path(cfg["out"] if isinstance(cfg, dict) else cfg).parent.mkdir(parents=True, exist_ok=True)
    log = open(str(cfg["out"] if isinstance(cfg, dict) else cfg) + ".log", "w")
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)


def run_all(jobs: list[tuple[str, dict | str]], parallel: int = 2) -> None:
    running: list[tuple[subprocess.Popen, str]] = []
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="rl runs")
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < parallel:
            kind, cfg = queue.pop(0)
            running.append((spawn(kind, cfg), cfg["out"] if isinstance(cfg, dict) else cfg))
        time.sleep(2)
        for p, out in list(running):
            if p.poll() is not None:
                running.remove((p, out))
                bar.update(1)
                if p.returncode:
                    print(f"run {out} failed (exit {p.returncode}); see {out}.log", file=sys.stderr)
    bar.close()


def load_runs(name: str, seeds: int) -> list[dict]:
    from robot_rl.rl.curves import read_curve

    out = []
    for s in range(seeds):
        d = RUNS / f"{name}_s{s}"
        if (d / "summary.json").exists():
            fe = d / "final_eval.json"
            out.append({"summary": json.loads((d / "summary.json").read_text()), "curve": read_curve(d / "curve.csv"),
                        "final_eval": json.loads(fe.read_text()) if fe.exists() else None})
    return out


def final_eval(name: str, seeds: int, episodes: int) -> None:
    """Re-evaluate each run's final policy on more held-out episodes (a 30-episode point has
    a standard error of about 4 points near 90%); written to the run as final_eval.json."""
    import torch

    from robot_rl.rl.loop import RLConfig, evaluate_policy, make_rl_env, obs_keys
    from robot_rl.rl.sac import policy_from_checkpoint

    torch.set_num_threads(1)
    for s in range(seeds):
        d = RUNS / f"{name}_s{s}"
        if not (d / "learner.safetensors").exists():
            continue
        cfg = RLConfig.from_dict({k: v for k, v in CONFIGS[name].items() if k != "steer"})
        env, keys = make_rl_env(cfg), obs_keys(cfg)
        pol = policy_from_checkpoint(d / "learner.safetensors")
        res = evaluate_policy(env, lambda o: pol.act({k: o[k] for k in keys}, deterministic=True), episodes,
                              cfg.eval_seed)
        env.close()
        (d / "final_eval.json").write_text(json.dumps({"episodes": episodes, **res}))
        print(f"{name} seed {s}: final policy {100 * res['success']:.0f}% over {episodes} held-out episodes")


def final_eval_sb3(name: str, seeds: int, episodes: int) -> None:
    """final_eval for the SB3 runs: the saved final policy, deterministic, on the same held-out
    episodes (seeds from 1,000,000, as ours' final_eval)."""
    import torch

    from robot_rl.rl.loop import RLConfig, evaluate_policy

    torch.set_num_threads(1)
    for s in range(seeds):
        d = RUNS / f"{name}_s{s}"
        if not (d / "policy.safetensors").exists():
            continue
        env = flat_env()
        model = sb3_policy(d / "policy.safetensors", env)
        res = evaluate_policy(env, lambda o: model.predict(o, deterministic=True)[0], episodes,
                              RLConfig.from_dict(OURS).eval_seed)
        env.close()
        (d / "final_eval.json").write_text(json.dumps({"episodes": episodes, **res}))
        print(f"{label(name)} seed {s}: final policy {100 * res['success']:.0f}% over {episodes} held-out episodes")


def pct(x) -> str:
    return "" if x is None else f"{100 * x:.0f}"


def mean_curve(runs: list[dict]) -> list[dict]:
    n = min(len(r["curve"]) for r in runs)
    return [{k: float(np.mean([r["curve"][i].get(k, 0.0) for r in runs])) for k in runs[0]["curve"][i]}
            for i in range(n)]


METHODS = ("pick", "pick_hil", "pick50", "sb3", "sb3_demos", "steer", "steer3", "steer_na")


def previous_results() -> dict:
    """results/rl.json as it is now: methods whose run folders are not on this machine are
    carried over from it unchanged."""
    path = RESULTS / "rl.json"
    return json.loads(path.read_text()) if path.exists() else {}


def method_stats(name: str, runs: list[dict]) -> dict:
    """One method's entry of rl.json from its runs (lists: one value per seed)."""
    base = [r["summary"].get("base_success") for r in runs]
    m = {"seeds": len(runs), "steps_to_90": [r["summary"].get("steps_to_90") for r in runs],
         "best_success": [max(x["success"] for x in r["curve"]) for r in runs],
         "final_success": [r["summary"]["final_success"] for r in runs],
         "start_success": [r["curve"][0]["success"] for r in runs],
         "min_first_5000": [min(x["success"] for x in r["curve"] if x["env_steps"] <= 5000) for r in runs],
         "intervention_rate": [r["summary"].get("intervention_rate", 0.0) for r in runs], "base_success": base,
         "base_zero_noise_success": [r["summary"].get("base_zero_noise_success") for r in runs],
         "final_env_steps": [r["summary"]["env_steps"] for r in runs]}
    if name.startswith(("pick", "sb3")):  # final policies re-evaluated on more episodes (--final-eval)
        m["final_eval_success"] = [r["final_eval"]["success"] if r["final_eval"] else None for r in runs]
    if any(r["summary"].get("wall_s") for r in runs):  # the SB3 runs record their wall time
        m["wall_s"] = [r["summary"].get("wall_s") for r in runs]
    demos = [r["summary"]["demos"] for r in runs if "demos" in r["summary"]]
    if demos:
        m["demos"] = demos[0]
    return m


def summary_row(name: str, m: dict, carried: bool) -> dict:
    to90, base = m["steps_to_90"], m.get("base_success") or []
    reached = [x for x in to90 if x is not None]
    return {"method": label(name, m) + (" *" if carried else ""), "seeds": m["seeds"],
            "start": f"{100 * np.mean(m['start_success']):.0f}" if not name.startswith("steer") else
            f"{100 * np.mean([b for b in base if b is not None]):.0f} (base policy)",
            "min first 5k": f"{100 * np.mean(m['min_first_5000']):.0f}",
            "final": f"{100 * np.mean(m['final_success']):.0f}",
            "env steps to 90%": f"{np.mean(reached):.0f} ({len(reached)}/{len(to90)})" if reached else "not reached",
            "intervened %": f"{100 * np.mean(m['intervention_rate']):.1f}"}


def o2o_rows(name: str, m: dict) -> list[dict]:
    first, early, final = m["start_success"], m["min_first_5000"], m["final_success"]
    fin = m.get("final_eval_success") or [None] * len(final)
    rows = [{"method": name, "seed": i, "offline": pct(f), "min first 5k": pct(e), "largest drop": pct(max(0.0, f - e)),
             "end": pct(x), "end, 100 episodes": pct(y)}
            for i, (f, e, x, y) in enumerate(zip(first, early, final, fin))]
    rows.append({"method": name, "seed": "mean", "offline": pct(np.mean(first)), "min first 5k": pct(np.mean(early)),
                 "largest drop": pct(np.mean([max(0.0, f - e) for f, e in zip(first, early)])),
                 "end": pct(np.mean(final)), "end, 100 episodes": pct(np.mean(fin)) if None not in fin else ""})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="speed,pick,pick_hil,sb3,steer")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="only aggregate existing runs")
    ap.add_argument("--steps", default="", help="env-step budgets per method, e.g. pick_hil=6000,sb3=6000")
    ap.add_argument("--seed-from", type=int, default=0, help="first seed to run (earlier seeds already ran)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--final-eval", type=int, default=0, metavar="N",
                    help="re-evaluate the final policies of the pick* and sb3* runs in --only on N held-out episodes")
    args = ap.parse_args()
    only = args.only.split(",")
    budget = {k: int(v) for k, v in (kv.split("=") for kv in args.steps.split(",") if kv)}
    jobs: list[tuple[str, dict | str]] = []
    for name in ("pick", "pick_hil", "pick50", "steer", "steer3", "steer_na"):
        if name in only:
            for s in range(args.seed_from, args.seeds):
                cfg = {**CONFIGS[name], "seed": s, "out": str(RUNS / f"{name}_s{s}")}
                cfg["env_steps"] = budget.get(name, cfg["env_steps"])
                jobs.append(("rl", cfg))
    for name, extra in (("sb3", {"env_steps": SB3_STEPS}), ("sb3_demos", {**SB3_DEMOS, "demos": str(DEMOS)})):
        if name in only:
            for s in range(args.seed_from, args.seeds):
                jobs.append(("sb3", {"seed": s, "eval_every": 1000, "eval_episodes": 30, **extra,
                                     "env_steps": budget.get(name, extra["env_steps"]),
                                     "out": str(RUNS / f"{name}_s{s}")}))
    old = previous_results()
    t0 = time.time()
    if not args.report:
        if "speed" in only:
            RUNS.mkdir(parents=True, exist_ok=True)
            run_all([("speed", str(RUNS / "speed.json"))], parallel=1)
        run_all(jobs, args.parallel)
    if args.final_eval:
        for name in ("pick", "pick_hil", "pick50"):
            if name in only:
                final_eval(name, args.seeds, args.final_eval)
        for name in ("sb3", "sb3_demos"):
            if name in only:
                final_eval_sb3(name, args.seeds, args.final_eval)
    res: dict = {"wall_s": time.time() - t0, "target": TARGET, "methods": {}}
    if (RUNS / "speed.json").exists():
        speed = json.loads((RUNS / "speed.json").read_text())
        res["updates_per_s"] = speed
        print_table([{"config": k, "updates/s": round(v, 1)} for k, v in speed.items()], ["config", "updates/s"],
                    "learner gradient updates/s, batch 256 (this CPU)")
    elif "updates_per_s" in old:
        res["updates_per_s"] = old["updates_per_s"]  # measured elsewhere; carried over
    rows, curves, steer_rows, o2o, seed_rows, carried = [], {}, [], [], [], []
    from robot_rl.rl.curves import plot_curves

    for name in METHODS:
        runs = load_runs(name, args.seeds)
        if not runs:  # no run folders here: keep what rl.json already holds for it
            if name in old.get("methods", {}):
                m = res["methods"][name] = old["methods"][name]
                if name in old.get("curves", {}):
                    curves[name] = old["curves"][name]
                carried.append(name)
                rows.append(summary_row(name, m, carried=True))
                if name.startswith("pick"):
                    o2o += o2o_rows(name, m)
            continue
        m = res["methods"][name] = method_stats(name, runs)
        curves[name] = mean_curve(runs)
        rows.append(summary_row(name, m, carried=False))
        if name.startswith("pick"):  # offline-to-online: the offline policy is the first evaluation
            o2o += o2o_rows(name, m)
        if name.startswith("steer"):
            steer_rows += [{"method": name, "seed": i, "Gaussian noise": pct(r["summary"].get("base_success")),
                            "zero noise": pct(r["summary"].get("base_zero_noise_success")),
                            **{f"{round(x['env_steps'] / 1000)}k": pct(x["success"]) for x in r["curve"]},
                            "to 90%": r["summary"].get("steps_to_90")} for i, r in enumerate(runs)]
        else:
            seed_rows += [{"method": label(name, m), "seed": i, **{f"{round(x['env_steps'] / 1000)}k": pct(x["success"])
                                                                     for x in r["curve"]},
                           "to 90%": r["summary"].get("steps_to_90"),
                           "end, 100 episodes": pct(r["final_eval"]["success"]) if r["final_eval"] else "",
                           "wall s": round(r["summary"].get("wall_s") or r["curve"][-1]["wall_s"])}
                          for i, r in enumerate(runs)]
    if o2o:
        print_table(o2o, ["method", "seed", "offline", "min first 5k", "largest drop", "end", "end, 100 episodes"],
                    "offline-to-online: success (%) of the offline policy, its worst in the first 5k online steps, at the end")
    if steer_rows:
        steps = sorted({k for r in steer_rows for k in r if k.endswith("k") and k[:-1].isdigit()}, key=lambda k: int(k[:-1]))
        cols = ["method", "seed", "Gaussian noise", "zero noise", *steps, "to 90%"]
        print_table(steer_rows, cols, "noise-space fine-tuning: base policy and steered success (%) per seed")
    if seed_rows:
        steps = sorted({k for r in seed_rows for k in r if k.endswith("k") and k[:-1].isdigit()},
                       key=lambda k: int(k[:-1]))
        print_table(seed_rows, ["method", "seed", *steps, "to 90%", "end, 100 episodes", "wall s"],
                    "online RL per seed: success (%) over 30 held-out episodes at each evaluation (env steps), "
                    "the final policy over 100, wall time of the run")
    if rows:
        print_table(rows, ["method", "seeds", "start", "min first 5k", "final", "env steps to 90%", "intervened %"],
                    "online RL, pick_cube (mean of seeds; success in % over 30 held-out episodes)")
        if carried:
            print(f"* carried over from the previous results/rl.json (no run folders under {RUNS}): "
                  f"{', '.join(carried)}")
        plot_curves({label(k, res["methods"][k]): v for k, v in curves.items() if not k.startswith("steer")},
                    RESULTS / "rl_pick_cube.png", title="pick_cube, state, sparse reward: mean of 3 seeds",
                    target=TARGET)
        steer_label = {"steer": "DSRL, 600 BC steps", "steer3": "DSRL, 400 BC steps",
                       "steer_na": "DSRL-NA + demos, 400 BC steps"}
        steer = {steer_label[k]: v for k, v in curves.items() if k.startswith("steer")}
        if steer:
            plot_curves(steer, RESULTS / "rl_steer.png",
                        title="noise-space fine-tuning of under-trained diffusion policies", target=TARGET)
        res["curves"] = curves
    write_json("rl", res)


if __name__ == "__main__":
    main()
