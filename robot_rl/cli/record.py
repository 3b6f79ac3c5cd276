"""``robot-rl record sim``: scripted-expert demonstrations on the twin, into an episode store."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from robot_rl.data.store import EpisodeStore
from robot_rl.spec import RobotSpec


def randomization_arg(cfg: DictConfig):
    """The command's ``randomization``: None, a file path, or the group's mapping (name, terms)."""
    r = cfg.get("randomization")
    return OmegaConf.to_container(r, resolve=True) if isinstance(r, DictConfig) else r


def record_sim(cfg: DictConfig) -> dict:
    from robot_rl.sim.env import RobotEnv
    from robot_rl.sim.experts import rollout_expert

    spec = RobotSpec.from_dict(OmegaConf.to_container(cfg.robot, resolve=True))
    cams = list(cfg.cameras or [])
    rand = randomization_arg(cfg)
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
