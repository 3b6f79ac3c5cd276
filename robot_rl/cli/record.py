"""``robot-rl record sim``: scripted-expert demonstrations on the twin, into an episode store.

    robot-rl record sim [robot=so101] [task=pick_cube] [episodes=50] [out=PATH.zarr] [cameras=[front,wrist]]
                        [randomization=physics|FILE] [backend=mujoco|isaac num_envs=N] [key=value ...]

Each episode runs the task's scripted expert from a new seed; successful episodes are
committed to the store (appending to an existing one, with new seeds), failed attempts are
dropped unless ``keep_failed=true``. ``backend=isaac`` records on the Isaac Lab twin,
``num_envs`` worlds at a time (state only; ``make isaac`` first).
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from robot_rl.data.store import EpisodeStore
from robot_rl.spec import RobotSpec


def randomization_arg(cfg: DictConfig):
    """The command's ``randomization``: None, a file path, or the group's mapping (name, terms)."""
    r = cfg.get("randomization")
    return OmegaConf.to_container(r, resolve=True) if isinstance(r, DictConfig) else r


def record_sim(cfg: DictConfig, cameras_given: bool = True) -> dict:
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.experts import rollout_expert

    spec = RobotSpec.from_dict(OmegaConf.to_container(cfg.robot, resolve=True))
    cams = list(cfg.cameras or [])
    rand = randomization_arg(cfg)
    backend = str(cfg.get("backend", "mujoco"))
    if backend == "isaac":
        if cams and cameras_given:
            raise ValueError(f"the Isaac twin renders no cameras (cameras={cams}): record state with cameras=[], "
                             "or images on backend=mujoco")
        return record_sim_isaac(cfg, spec, rand)
    if backend != "mujoco":
        raise ValueError(f"backend must be mujoco or isaac, got {backend!r}")
    env = RobotEnv(task=cfg.task, robot=spec, cameras=cams, image_size=int(cfg.image_size),
                   terminate_on_success=False, randomization=rand, calibration=cfg.get("calibration"))
    store = EpisodeStore.open_or_create(cfg.out, env.robot_spec)
    try:
        first_seed = int(cfg.seed) + store.n_episodes
        committed = attempts = 0
        max_attempts = int(cfg.episodes) * int(cfg.max_attempts_factor)
        bar = tqdm(total=int(cfg.episodes), desc=f"record {spec.name}/{cfg.task}", unit="ep",
                   disable=not cfg.progress)
        dt = 1.0 / spec.control_hz
        while committed < int(cfg.episodes) and attempts < max_attempts:
            seed = first_seed + attempts
            attempts += 1
            ep = store.start_episode(task=cfg.task, source="expert", fps=spec.control_hz,
                                     extra={"seed": seed, "env": "sim", "action_mode": "ee_delta",
                                            **({"randomization": env.randomizer.randomization.name}
                                               if env.randomizer else {}),
                                            **({"calibration": str(cfg.calibration)} if cfg.get("calibration") else {})})
            t = [0.0]

            def on_step(obs, action, reward, info, ep=ep, t=t):
                ep.add_step({**obs, "action": action, "reward": float(reward)}, timestamp=t[0])
                t[0] += dt

            res = rollout_expert(env, seed, on_step=on_step, extra_steps=int(cfg.hold_steps))
            if res["success"] or cfg.keep_failed:
                ep.commit(success=res["success"], extra={"return": res["return"]})
                committed += 1
                bar.update(1)
            else:
                ep.discard()
            bar.set_postfix(success=f"{committed}/{attempts}")
        bar.close()
        store.flush()
        return store.summary()
    finally:
        store.close()
        env.close()


def record_sim_isaac(cfg: DictConfig, spec: RobotSpec, rand) -> dict:
    """``record sim backend=isaac``: `num_envs` Isaac Lab worlds, one expert each; an episode is
    written to the store when its world finishes (success + ``hold_steps``, or the step limit)
    and the world starts the next seed. Seeds and the store's layout are as on the MuJoCo twin
    (state only: the Isaac twin renders no cameras)."""
    import numpy as np

    from robot_rl.sim.isaac import make_isaac_env

    want, max_attempts = int(cfg.episodes), int(cfg.episodes) * int(cfg.max_attempts_factor)
    n = max(1, min(int(cfg.num_envs), want))
    spec = spec.with_cameras([])
    store = EpisodeStore.open_or_create(cfg.out, spec)
    env = None
    try:
        first_seed = int(cfg.seed) + store.n_episodes
        env = make_isaac_env(cfg.task, robot=spec, num_envs=n, seed=first_seed, terminate_on_success=False,
                             randomization=rand)
        bar = tqdm(total=want, desc=f"record {spec.name}/{cfg.task} (Isaac, {n} worlds)", unit="ep",
                   disable=not cfg.progress)
        seeds = [first_seed + k for k in range(n)]
        attempts, finished, committed = n, 0, 0
        env.reset(seeds=seeds)
        experts = [env.make_expert(i, seed=s) for i, s in enumerate(seeds)]
        bufs: list[list] = [[] for _ in range(n)]
        hold, succ, active = np.zeros(n, int), np.zeros(n, bool), np.ones(n, bool)
        zero = np.zeros(env.action_space.shape, np.float32)
        dt = 1.0 / spec.control_hz
        rand_name = None if rand is None else rand.get("name", "custom") if isinstance(rand, dict) else str(rand)
        while active.any():
            obs = [env.obs_of(i) for i in range(n)]
            acts = np.stack([experts[i].act(obs[i]) if active[i] else zero for i in range(n)])
            _, rew, term, trunc, info = env.step(acts, active=active)
            restart = []
            for i in np.flatnonzero(active):
                bufs[i].append((obs[i], acts[i], float(rew[i])))
                succ[i] |= bool(info["success"][i])
                hold[i] += int(succ[i])
                if not ((succ[i] and hold[i] > int(cfg.hold_steps)) or trunc[i]):
                    continue
                finished += 1
                if (succ[i] or cfg.keep_failed) and committed < want:
                    ep = store.start_episode(task=cfg.task, source="expert", fps=spec.control_hz,
                                             extra={"seed": seeds[i], "env": "sim", "backend": "isaac",
                                                    "action_mode": "ee_delta",
                                                    **({"randomization": rand_name} if rand_name else {})})
                    for k, (o, a, r) in enumerate(bufs[i]):
                        ep.add_step({**o, "action": a, "reward": r}, timestamp=k * dt)
                    ep.commit(success=bool(succ[i]), extra={"return": float(sum(b[2] for b in bufs[i]))})
                    committed += 1
                    bar.update(1)
                bar.set_postfix(success=f"{committed}/{finished}")
                running = int(active.sum()) - 1  # the other worlds still recording
                if committed + running < want and attempts < max_attempts:
                    seeds[i] = first_seed + attempts
                    attempts += 1
                    restart.append(i)
                else:
                    active[i] = False
                bufs[i], hold[i], succ[i] = [], 0, False
            if restart:
                env.reset(env_ids=restart, seeds=[seeds[i] for i in restart])
                for i in restart:
                    experts[i] = env.make_expert(i, seed=seeds[i])
        bar.close()
        store.flush()
        return store.summary()
    finally:
        store.close()
        if env is not None:
            env.close()
