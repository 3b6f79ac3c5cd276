"""Domain randomization (sim/randomization.py): distribution checks and cost (issue 16).

Checks, on the real so101 pick_cube model, over 1,000 resets of one env:
- **bounds**: every uniform / log-uniform draw inside its range (gaussian: reported);
- **means**: the sample mean of each term's draws within 4 standard errors of the
  distribution's mean (uniform (a+b)/2, log-uniform (b-a)/ln(b/a), gaussian mu);
- **no accumulation**: the model value after reset k is nominal x draw k (scale) or nominal +
  draw k (add; clipped at 0 where a physical value cannot go negative) for every k, and a
  [1, 1] scale afterwards gives back the nominal value exactly;
- **per-env independence**: a vector env of 8 draws 8 different values per reset, and the
  correlation between envs' draw sequences is near 0;
- **seed determinism**: two envs reset with the same seeds draw identical values.

Cost: env steps/s with randomization on vs off in the same run, state-only and with two 96x96
cameras; the cost of a reset.

    ../scripts/isolated.sh ../.venv/bin/python bench_randomization.py [--resets 1000] [--steps 600]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import print_table, write_json  # noqa: E402

TERMS = [
    {"name": "friction_u", "field": "geom_friction", "names": ["cube"], "operation": "scale", "distribution": "uniform",
     "range": [0.5, 1.5]},
    {"name": "mass_lu", "field": "body_mass", "names": ["objects"], "operation": "scale",
     "distribution": "log_uniform", "range": [0.5, 2.0]},
    {"name": "damping_g", "field": "joint_damping", "names": ["shoulder_lift"], "operation": "add",
     "distribution": "gaussian", "range": [0.0, 0.05]},
    {"name": "kp_u", "field": "actuator_kp", "names": ["elbow_flex"], "operation": "scale", "distribution": "uniform",
     "range": [0.7, 1.3]},
    {"name": "delay_u", "field": "action_delay", "operation": "abs", "distribution": "uniform", "range": [-0.49, 3.49]},
]


def expected_mean(t: dict) -> float:
    a, b = t["range"]
    if t["distribution"] == "uniform":
        return (a + b) / 2
    if t["distribution"] == "log_uniform":
        return (b - a) / math.log(b / a)
    return a


def expected_std(t: dict) -> float:
    a, b = t["range"]
    if t["distribution"] == "uniform":
        return (b - a) / math.sqrt(12)
    if t["distribution"] == "log_uniform":
        m = expected_mean(t)
        return math.sqrt((b * b - a * a) / (2 * math.log(b / a)) - m * m)
    return b


def distributions(resets: int) -> tuple[list[dict], dict]:
    from robot_rl.sim import make_env
    env = make_env("pick_cube", "so101", randomization={"name": "bench", "terms": TERMS})
    m = env.twin.model
    rz = env.randomizer
    cube, lift = m.body("cube").id, m.joint("shoulder_lift").dofadr[0]
    cube_geom, elbow = m.geom("cube").id, m.actuator("elbow_flex").id
    nom = {"friction": rz._nominal["geom_friction"][cube_geom, 0], "mass": rz._nominal["body_mass"][cube],
           "damping": rz._nominal["dof_damping"][lift], "kp": rz._nominal["actuator_gainprm"][elbow, 0]}
    draws = {t["name"]: [] for t in TERMS}
    worst = 0.0
    t0 = time.perf_counter()
    for k in range(resets):
        env.reset(seed=k)
        for t in TERMS:
            draws[t["name"]].append(float(rz.values[t["name"]][0]))
        # the model holds nominal (x|+) this reset's draw: nothing carried over from earlier resets
        worst = max(worst,
                    abs(m.geom_friction[cube_geom, 0] - nom["friction"] * draws["friction_u"][-1]),
                    abs(m.body_mass[cube] - nom["mass"] * draws["mass_lu"][-1]),
                    abs(m.dof_damping[lift] - max(0.0, nom["damping"] + draws["damping_g"][-1])),  # clipped at 0
                    abs(m.actuator_gainprm[elbow, 0] - nom["kp"] * draws["kp_u"][-1]),
                    abs(m.actuator_biasprm[elbow, 1] + m.actuator_gainprm[elbow, 0]))
    reset_ms = 1000 * (time.perf_counter() - t0) / resets
    # after 1,000 resets, the identity gives back the nominal model exactly
    from robot_rl.sim.randomization import Randomizer
    ident = Randomizer(env.twin, {"name": "id", "terms": [{**t, "distribution": "uniform",
                                                             "range": [1.0, 1.0] if t["operation"] == "scale" else [0.0, 0.0]}
                                                            for t in TERMS if t["field"] != "action_delay"]})
    ident._nominal = rz._nominal
    ident.reset(np.random.default_rng(0))
    restored = bool(m.geom_friction[cube_geom, 0] == nom["friction"] and m.body_mass[cube] == nom["mass"]
                    and m.dof_damping[lift] == nom["damping"] and m.actuator_gainprm[elbow, 0] == nom["kp"])
    rows = []
    for t in TERMS:
        x = np.asarray(draws[t["name"]])
        a, b = t["range"]
        mu, sd = expected_mean(t), expected_std(t)
        se = sd / math.sqrt(len(x))
        in_bounds = bool(t["distribution"] == "gaussian" or (x.min() >= a and x.max() <= b))
        rows.append({"term": t["name"], "distribution": t["distribution"], "range": f"[{a:g}, {b:g}]",
                     "min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()), "expected_mean": mu,
                     "z": float((x.mean() - mu) / se), "std": float(x.std()), "expected_std": sd,
                     "in_bounds": in_bounds, "mean_ok": bool(abs(x.mean() - mu) < 4 * se),
                     "first_half_mean": float(x[: len(x) // 2].mean()), "second_half_mean": float(x[len(x) // 2:].mean())})
    env.close()
    return rows, {"resets": resets, "max_abs_error_vs_nominal_x_draw": worst, "nominal_restored_after": restored,
                  "reset_ms": reset_ms}


def independence_and_seeds(resets: int, n_envs: int = 8) -> dict:
    from robot_rl.sim import make_env
    terms = {"name": "b", "terms": [TERMS[0]]}
    envs = [make_env("pick_cube", "so101", randomization=terms) for _ in range(n_envs)]
    twins = [make_env("pick_cube", "so101", randomization=terms) for _ in range(n_envs)]
    seq = np.zeros((resets, n_envs))
    same = True
    for k in range(resets):
        for i in range(n_envs):  # what a gymnasium vector env does: env i gets seed + i
            seed = 10_000 * k + i
            envs[i].reset(seed=seed)
            twins[i].reset(seed=seed)
            seq[k, i] = envs[i].randomizer.values["friction_u"][0]
            same &= bool(np.array_equal(envs[i].randomizer.values["friction_u"], twins[i].randomizer.values["friction_u"]))
    distinct = float(np.mean([len(np.unique(row)) == n_envs for row in seq]))
    c = np.corrcoef(seq.T)
    off = c[~np.eye(n_envs, dtype=bool)]
    for e in envs + twins:
        e.close()
    return {"n_envs": n_envs, "resets": resets, "share_of_resets_all_distinct": distinct,
            "max_abs_cross_env_correlation": float(np.abs(off).max()), "bound_3_over_sqrt_n": 3 / math.sqrt(resets),
            "same_seed_same_draws": same}


def cost(steps: int) -> list[dict]:
    from robot_rl.sim import make_env
    rows = []
    for cams in ([], ["front", "wrist"]):
        row = {"cameras": "+".join(cams) or "none"}
        for label, rand in (("off", None), ("sim2real", "sim2real"), ("wide", "wide")):
            env = make_env("pick_cube", "so101", cameras=cams, image_size=96, randomization=rand)
            env.reset(seed=0)
            a = np.zeros(env.action_space.shape, np.float32)
            n = steps if not cams else steps // 3
            t0 = time.perf_counter()
            for k in range(n):
                _, _, term, trunc, _ = env.step(a)
                if term or trunc:
                    env.reset(seed=k)
            row[f"{label}_steps_per_s"] = n / (time.perf_counter() - t0)
            env.close()
        row["sim2real_cost_%"] = 100 * (row["off_steps_per_s"] / row["sim2real_steps_per_s"] - 1)
        row["wide_cost_%"] = 100 * (row["off_steps_per_s"] / row["wide_steps_per_s"] - 1)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resets", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    rows, acc = distributions(args.resets)
    print_table(rows, ["term", "distribution", "range", "min", "max", "mean", "expected_mean", "z", "std",
                       "expected_std", "in_bounds", "mean_ok"], f"draws over {args.resets} resets")
    print(f"no accumulation: max |model - nominal (x|+) draw| over {args.resets} resets = "
          f"{acc['max_abs_error_vs_nominal_x_draw']:.3g}; nominal restored exactly afterwards: "
          f"{acc['nominal_restored_after']}; reset {acc['reset_ms']:.2f} ms")
    ind = independence_and_seeds(args.resets // 4)
    print(f"independence: {ind['n_envs']} envs x {ind['resets']} resets, all distinct in "
          f"{100 * ind['share_of_resets_all_distinct']:.0f}% of resets, max |cross-env correlation| "
          f"{ind['max_abs_cross_env_correlation']:.3f} (3/sqrt(n) = {ind['bound_3_over_sqrt_n']:.3f}); "
          f"same seeds, same draws: {ind['same_seed_same_draws']}")
    c = cost(args.steps)
    print_table(c, ["cameras", "off_steps_per_s", "sim2real_steps_per_s", "wide_steps_per_s", "sim2real_cost_%",
                    "wide_cost_%"], "env steps/s, randomization off vs on (same run)")
    ok = (all(r["in_bounds"] and r["mean_ok"] for r in rows) and acc["max_abs_error_vs_nominal_x_draw"] < 1e-9
          and acc["nominal_restored_after"] and ind["same_seed_same_draws"]
          and ind["share_of_resets_all_distinct"] == 1.0
          and ind["max_abs_cross_env_correlation"] < ind["bound_3_over_sqrt_n"] * 1.5)
    print(f"all distribution checks pass: {ok}")
    write_json("bench_randomization", {"args": vars(args), "draws": rows, "accumulation": acc, "independence": ind,
                                       "cost": c, "all_checks_pass": ok})
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
