"""Randomization files (robot_rl/conf/randomization, sim/randomization.py) as Isaac Lab event terms.

One file randomizes both twins. Each term becomes one ``EventTermCfg`` with the same mode
(``startup`` / ``reset``; ``interval`` every ``interval_steps`` control steps), operation and
distribution -- Isaac Lab's randomizers share that vocabulary:

| field | Isaac Lab term |
|---|---|
| actuator_kp / actuator_kv | ``mdp.randomize_actuator_gains`` (stiffness / damping) on the arm joints |
| joint_armature / joint_frictionloss | ``mdp.randomize_joint_parameters`` (armature / friction) |
| body_mass | ``mdp.randomize_rigid_body_mass`` (objects; robot links by name), inertia follows |
| body_com | ``mdp.randomize_rigid_body_com`` (uniform add per axis) |
| geom_friction | ``mdp.randomize_rigid_body_material`` on the objects: nominal x range, 64 buckets |
| action_delay / obs_delay / obs_noise / joint_offset | ``set_state_term`` below: drawn per env on Isaac's RNG, applied by the env wrapper |

What has no Isaac counterpart here is listed in ``skipped`` with the reason (visual terms:
the Isaac twin renders no cameras on CPU; joint_damping and actuator_forcerange: Isaac Lab
3.0 has no randomizer for MuJoCo's passive damping or actuator force range; friction of
the table, which is static geometry rather than an asset).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.sim.randomization import STATE_FIELDS, Randomization, RandomizationError

VISUAL_FIELDS = ("light_pos", "light_diffuse", "geom_rgba", "camera_pos", "camera_fovy", "texture_rgb", "image_noise")
WAITING = {
    "joint_damping": "Isaac Lab 3.0 has no randomizer for MuJoCo passive joint damping",
    "actuator_forcerange": "Isaac Lab 3.0 has no randomizer for MuJoCo actuator force ranges",
}


@dataclass
class EventPlan:
    """The event terms for one env, and what the file asked for that they do not cover."""
    terms: dict[str, Any] = field(default_factory=dict)  # name -> EventTermCfg
    skipped: dict[str, str] = field(default_factory=dict)  # term name -> why
    state_fields: list[str] = field(default_factory=list)


def set_state_term(env, env_ids, field: str, operation: str, distribution: str, range: tuple[float, float],
                   columns: list[int] | None = None) -> None:
    """Event function for the fields that live in the env wrapper, not in the physics model:
    draws one value per env (per joint for ``joint_offset``) on torch's RNG, which Isaac Lab
    seeds from the env's seed, and stores it in ``env.robot_rl_state[field]``."""
    import torch
    if env_ids is None:
        env_ids = torch.arange(env.num_envs, device=env.device)
    n = len(env_ids)
    k = len(columns) if columns else 1
    lo, hi = range
    if distribution == "uniform":
        v = lo + (hi - lo) * torch.rand(n, k, device=env.device)
    elif distribution == "log_uniform":
        v = torch.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * torch.rand(n, k, device=env.device))
    else:
        v = lo + hi * torch.randn(n, k, device=env.device)
    store = env.robot_rl_state[field]
    if field == "joint_offset":
        store[env_ids] = 0.0
        store[env_ids.unsqueeze(1), torch.as_tensor(columns, device=env.device)] = v
    else:
        store[env_ids] = v[:, 0].clamp(min=0.0)


def _select(names: tuple[str, ...], candidates: list[str]) -> list[str]:
    out = []
    for pat in names:
        out += [c for c in candidates if re.fullmatch(pat, c) and c not in out]
    return out


def plan_events(randomization, *, arm_joints: list[str], robot_bodies: list[str], objects: dict[str, float],
                control_dt: float) -> EventPlan:
    """EventTermCfgs for `randomization` (a name, file, mapping or Randomization).
    `objects`: free-body asset name -> nominal sliding friction (from the MuJoCo model)."""
    from isaaclab.envs import mdp
    from isaaclab.managers import EventTermCfg, SceneEntityCfg

    r = randomization if isinstance(randomization, Randomization) else Randomization.load(randomization)
    plan = EventPlan()
    for t in r.terms:
        mode = t.mode
        extra: dict[str, Any] = {}
        if mode == "interval":
            extra = {"interval_range_s": (t.interval_steps * control_dt,) * 2, "is_global_time": False}
        dist = {"distribution": t.distribution, "operation": t.operation}

        def add(key, func, params, t=t, mode=mode, extra=extra):
            # a config field name: "object_friction[cube]" -> "object_friction__cube"
            ident = re.sub(r"\W", "_", key.replace("[", "__").rstrip("]"))
            plan.terms[ident] = EventTermCfg(func=func, mode=mode, params=params, **extra)

        names = t.names or ()
        if t.field in VISUAL_FIELDS:
            plan.skipped[t.name] = f"{t.field}: the Isaac twin renders no cameras (state observations only)"
            continue
        if t.field in WAITING:
            plan.skipped[t.name] = f"{t.field}: {WAITING[t.field]}"
            continue
        if t.field in STATE_FIELDS:
            cols = None
            if t.field == "joint_offset":
                sel = _select(tuple(arm_joints) if (not names or "arm" in names) else names, arm_joints)
                cols = [arm_joints.index(j) for j in sel]
            add(t.name, set_state_term, {"field": t.field, "operation": t.operation, "distribution": t.distribution,
                                         "range": tuple(t.range), "columns": cols})
            if t.field not in plan.state_fields:
                plan.state_fields.append(t.field)
            continue
        want_objects = not names or "objects" in names
        if t.field in ("actuator_kp", "actuator_kv", "joint_armature", "joint_frictionloss"):
            joints = arm_joints if (not names or "arm" in names) else _select(names, arm_joints)
            asset = SceneEntityCfg("robot", joint_names=joints, preserve_order=True)
            if t.field.startswith("actuator"):
                key = "stiffness_distribution_params" if t.field == "actuator_kp" else "damping_distribution_params"
                add(t.name, mdp.randomize_actuator_gains, {"asset_cfg": asset, key: tuple(t.range), **dist})
            else:
                key = "armature_distribution_params" if t.field == "joint_armature" else "friction_distribution_params"
                add(t.name, mdp.randomize_joint_parameters, {"asset_cfg": asset, key: tuple(t.range), **dist})
            continue
        if t.field in ("body_mass", "body_com", "geom_friction"):
            targets = list(objects) if want_objects else []
            bodies = _select(names, robot_bodies) if names else []
            if t.field == "geom_friction":
                if "table" in names:
                    plan.skipped[f"{t.name}[table]"] = "geom_friction: the table is static geometry, not an Isaac Lab asset"
                if bodies:
                    plan.skipped[f"{t.name}[robot]"] = "geom_friction: robot geoms keep their friction"
                if t.distribution != "uniform" or t.operation not in ("scale", "abs"):
                    raise RandomizationError(f"term {t.name!r}: Isaac Lab draws friction uniformly from a range; "
                                             f"{t.distribution}/{t.operation} has no Isaac counterpart")
                for obj in targets:
                    nom = objects[obj] if t.operation == "scale" else 1.0
                    rng_ = (t.range[0] * nom, t.range[1] * nom)
                    add(f"{t.name}[{obj}]", mdp.randomize_rigid_body_material,
                        {"asset_cfg": SceneEntityCfg(obj), "static_friction_range": rng_,
                         "dynamic_friction_range": rng_, "restitution_range": (0.0, 0.0), "num_buckets": 64})
                continue
            entities = [SceneEntityCfg(o) for o in targets]
            if bodies:
                entities.append(SceneEntityCfg("robot", body_names=bodies, preserve_order=True))
            for ent in entities:
                key = f"{t.name}[{ent.name}]"
                if t.field == "body_mass":
                    add(key, mdp.randomize_rigid_body_mass, {"asset_cfg": ent, "mass_distribution_params": tuple(t.range),
                                                             "recompute_inertia": True, **dist})
                else:
                    if t.operation != "add" or t.distribution != "uniform":
                        raise RandomizationError(f"term {t.name!r}: Isaac Lab shifts the centre of mass by a uniform "
                                                 f"add; {t.distribution}/{t.operation} has no Isaac counterpart")
                    add(key, mdp.randomize_rigid_body_com, {"asset_cfg": ent,
                                                            "com_range": {a: tuple(t.range) for a in "xyz"}})
            continue
        plan.skipped[t.name] = f"{t.field}: no Isaac Lab counterpart"
    return plan
