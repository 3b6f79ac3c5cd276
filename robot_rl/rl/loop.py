"""Single-process online RL: one env, one learner, optional demonstrations and a simulated
human, evaluation and learning curves, checkpoints that resume.

    from robot_rl.rl.loop import RLConfig, run_online
    run_online(RLConfig(task="pick_cube", demos="data/demos.zarr", demo_episodes=20))

The actor/learner split over ROS 2 (robot_rl.ros.rl_nodes) runs the same learner and
buffers in two processes.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from robot_rl.rl.curves import CurveLog, plot_curves
from robot_rl.rl.human import HumanConfig, SimulatedHuman
from robot_rl.rl.offline import IQL, OfflineConfig, pretrain_iql
from robot_rl.rl.replay import ReplayBuffer
from robot_rl.rl.sac import SACConfig, SACLearner, check_fields

DEFAULT_KEYS = ["joint_pos", "gripper", "ee_pos", "object_state"]


@dataclass
class SteerConfig:
    """RL fine-tuning of a diffusion checkpoint by steering its initial noise (see steer.py)."""
    checkpoint: str | None = None
    noise_bound: float = 1.5
    n_exec: int | None = None  # executed actions per chunk (default: the policy's n_action_steps)
    num_inference_steps: int | None = None
    explore_std: float | None = None  # start (and keep, via the entropy target) this exploration std per noise entry
    aliased: bool = False  # DSRL-NA: a critic over executed chunks teaches the noise critic (dsrl.py)
    bank: int = 16  # with aliased: random noises sampled per decision for the noise critic's targets
    bank_capacity: int = 200_000


@dataclass
class RLConfig:
    task: str = "pick_cube"
    robot: str = "so101"
    seed: int = 0
    env_steps: int = 30_000
    keys: list[str] = field(default_factory=lambda: list(DEFAULT_KEYS))
    cameras: list[str] = field(default_factory=list)
    image_size: int = 96
    demos: str | None = None  # an episode store
    demo_episodes: int | None = 20
    learning_starts: int = 500
    random_steps: int = 0  # uniform random actions at the start (0 with demos)
    eval_every: int = 2500
    eval_episodes: int = 20
    eval_seed: int = 1_000_000
    stop_at: float | None = None  # stop when evaluation success reaches this (None: run all steps)
    hil: bool = False
    human: HumanConfig = field(default_factory=HumanConfig)
    intervention_penalty: float = 0.0  # RLIF: reward -= penalty on steps a human took
    interventions_to_demos: bool = True  # HIL-SERL: intervened steps also go to the demo buffer
    capacity: int = 200_000
    checkpoint_every: int = 5000
    out: str = "runs/rl"
    resume: bool = False
    progress: bool = True
    sac: SACConfig = field(default_factory=SACConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    randomization: Any = None  # a name in robot_rl/conf/randomization, a YAML file or a mapping
    calibration: str | None = None  # a calibrated twin: a calibration folder or a dynamics.yaml
    backend: str = "mujoco"  # mujoco | isaac (the Isaac Lab twin, sim/isaac; state observations)
    num_envs: int = 1  # Isaac worlds; the loop steps one world per env step for now

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RLConfig":
        check_fields(cls, d, "rl")
        d = dict(d)
        if "sac" in d:
            d["sac"] = SACConfig.from_dict(d["sac"] or {})
        if "steer" in d:
            d["steer"] = _sub(SteerConfig, d["steer"], "steer")
        if "offline" in d:
            d["offline"] = _sub(OfflineConfig, d["offline"], "offline")
        if "human" in d:
            d["human"] = _sub(HumanConfig, d["human"], "human")
        for k in ("keys", "cameras"):
            if k in d and d[k] is not None:
                d[k] = list(d[k])
        return cls(**d)


def _sub(cls, d: Mapping[str, Any] | None, what: str):
    check_fields(cls, d or {}, what)
    return cls(**(d or {}))


def make_rl_env(cfg: RLConfig):
    from robot_rl.sim import make_env

    kw: dict[str, Any] = {"reward_type": "sparse", "randomization": cfg.randomization, "calibration": cfg.calibration}
    if cfg.backend == "isaac":
        _check_isaac(cfg)
        from robot_rl.sim.isaac.env import make_isaac_world_envs
        return make_isaac_world_envs(cfg.task, cfg.robot, 1, seed=cfg.seed, **kw)[0]
    if cfg.backend != "mujoco":
        raise ValueError(f"backend must be mujoco or isaac, got {cfg.backend!r}")
    if cfg.cameras:
        kw.update(cameras=list(cfg.cameras), image_size=cfg.image_size)
    return make_env(cfg.task, cfg.robot, **kw)


def _check_isaac(cfg: RLConfig) -> None:
    if cfg.cameras:
        raise ValueError("the Isaac twin renders no cameras: rl backend=isaac takes state observations (cameras=[])")
    if cfg.num_envs != 1:
        raise ValueError("rl backend=isaac steps one world per env step for now: num_envs=1 "
                         "(record and eval run num_envs worlds in parallel)")
    if cfg.calibration is not None:
        raise ValueError("calibration= is not carried to the Isaac twin yet: use backend=mujoco for a calibrated twin")


def make_rl_envs(cfg: RLConfig):
    """(training env, evaluation env). On the Isaac twin they are two worlds of one Isaac Lab
    env (one simulation per process); the training episode restarts after each evaluation."""
    if cfg.backend == "isaac":
        _check_isaac(cfg)
        from robot_rl.sim.isaac.env import make_isaac_world_envs
        kw: dict[str, Any] = {"reward_type": "sparse", "randomization": cfg.randomization}
        train, ev = make_isaac_world_envs(cfg.task, cfg.robot, 2, seed=cfg.seed, **kw)
        return train, ev
    return make_rl_env(cfg), make_rl_env(cfg)


def obs_keys(cfg: RLConfig) -> list[str]:
    return list(cfg.keys) + [f"image_{c}" for c in cfg.cameras]


def env_obs_spec(env, keys: list[str]) -> dict[str, tuple[tuple[int, ...], Any]]:
    sp = env.observation_space.spaces
    missing = [k for k in keys if k not in sp]
    if missing:
        raise ValueError(f"the env has no observation keys {missing}; it has {sorted(sp)}")
    return {k: (tuple(sp[k].shape), sp[k].dtype) for k in keys}


def evaluate_policy(env, act: Callable[[dict], np.ndarray], episodes: int, seed: int) -> dict[str, float]:
    """Success rate, mean return and length over ``episodes`` seeded episodes."""
    from robot_rl.learn.evaluate import wilson_interval

    succ, rets, lens = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done, n, info = 0.0, False, 0, {"success": False}
        while not done:
            obs, r, term, trunc, info = env.step(act(obs))
            total += r
            n += 1
            done = term or trunc
        succ.append(bool(info["success"]))
        rets.append(total)
        lens.append(n)
    k = int(sum(succ))
    lo, hi = wilson_interval(k, episodes)
    return {"success": k / episodes, "success_lo": lo, "success_hi": hi, "return": float(np.mean(rets)),
            "episode_length": float(np.mean(lens))}


def _pick(obs: Mapping[str, np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    return {k: obs[k] for k in keys}


def run_online(cfg: RLConfig, on_eval: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train; returns the summary (also written to ``out/summary.json``)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    keys = obs_keys(cfg)
    env, eval_env = make_rl_envs(cfg)
    human = SimulatedHuman(env, cfg.human) if cfg.hil else None
    steer = cfg.steer.checkpoint is not None
    if steer:  # the learner acts in the diffusion policy's noise space; the human in action space
        from robot_rl.rl.steer import NoiseSteeringEnv, load_diffusion

        base = load_diffusion(cfg.steer.checkpoint)
        kw = dict(noise_bound=cfg.steer.noise_bound, n_exec=cfg.steer.n_exec,
                  num_inference_steps=cfg.steer.num_inference_steps)
        env = NoiseSteeringEnv(env, base, keys, human=human, bank=cfg.steer.bank if cfg.steer.aliased else 0,
                               seed=cfg.seed, **kw)
        eval_env = NoiseSteeringEnv(eval_env, base, keys, **kw)
        if cfg.demos and not cfg.steer.aliased:
            raise ValueError("demos= with steer.checkpoint needs steer.aliased=true (the critic over chunks "
                             "learns from demonstrations; the noise critic cannot)")
    spec = env_obs_spec(env, keys)
    low, high = env.action_space.low, env.action_space.high
    ckpt, buf_file, demo_file = out / "learner.safetensors", out / "online.safetensors", out / "demos.safetensors"
    aliased = steer and cfg.steer.aliased
    learner_cls, learner_kw, stored_dim, bank = SACLearner, {}, len(low), None
    if aliased:  # replay rows hold [noise, executed chunk]; a bank of (noise, chunk) pairs
        from robot_rl.rl.dsrl import AliasedNoiseLearner, NoiseBank

        learner_cls, learner_kw = AliasedNoiseLearner, {"chunk_dim": env.chunk_dim}
        stored_dim = len(low) + env.chunk_dim
        bank_file = out / "bank.safetensors"
    t_start = time.monotonic()
    step0, wall0 = 0, 0.0
    summary: dict[str, Any] = {"reached": None}
    warmup = cfg.learning_starts
    online_iql: IQL | None = None
    if cfg.resume and ckpt.exists():
        learner, extra = learner_cls.load(ckpt)
        online = ReplayBuffer.load(buf_file, capacity=cfg.capacity, seed=cfg.seed)
        if aliased:
            bank = NoiseBank.load(bank_file, cfg.steer.bank_capacity, seed=cfg.seed + 2)
        if (out / "iql.safetensors").exists():  # online IQL continues with its value net and optimisers
            online_iql = IQL(learner, cfg.offline).load(out / "iql.safetensors")
        demos = ReplayBuffer.load(demo_file, seed=cfg.seed + 1) if demo_file.exists() else None
        step0, wall0 = int(extra["env_steps"]), float(extra["wall_s"])
    else:
        sac_cfg = cfg.sac
        if steer and cfg.steer.explore_std is not None and sac_cfg.target_entropy is None:
            # keep exploring at about explore_std: the entropy of that Gaussian per noise entry
            sac_cfg = replace(sac_cfg, target_entropy=len(low) * float(
                np.log(cfg.steer.explore_std) + 0.5 * np.log(2 * np.pi * np.e)))
        learner = learner_cls(spec, low, high, sac_cfg, seed=cfg.seed, **learner_kw)
        if steer:  # start at the sampler's mode: a zero mean noise whatever the observation
            learner.policy.actor.zero_mean_(cfg.steer.explore_std)
        online = ReplayBuffer(spec, stored_dim, cfg.capacity, seed=cfg.seed)
        if aliased:
            bank = NoiseBank(spec, len(low), env.chunk_dim, cfg.steer.bank_capacity, seed=cfg.seed + 2)
        demos = None
        if cfg.demos and aliased:  # demonstrations as decisions for the critic over chunks
            demos, rows = env.demo_decisions(cfg.demos, cfg.demo_episodes, seed=cfg.seed + 1)
            for o, w, c in rows:
                bank.add(o, w, c)
            summary["demo_decisions"] = demos.transitions
            learner.set_obs_stats(demos)
        elif cfg.demos:
            demos = ReplayBuffer.from_store(cfg.demos, keys, max_episodes=cfg.demo_episodes, seed=cfg.seed + 1,
                                            capacity=cfg.capacity,
                                            successful_only=cfg.offline.successful_only or not cfg.offline.steps)
            learner.set_obs_stats(demos)
            if cfg.sac.bc_pretrain_steps:
                learner.pretrain_bc(demos, cfg.sac.bc_pretrain_steps, progress=cfg.progress)
            if cfg.offline.steps:
                iql = pretrain_iql(learner, demos, cfg.offline, progress=cfg.progress)
                summary["offline"] = iql.info
                if cfg.offline.online == "iql":
                    online_iql = iql
                    if cfg.offline.online_actor_lr is not None:
                        for g in iql.pi_opt.param_groups:
                            g["lr"] = cfg.offline.online_actor_lr
                if cfg.offline.wsrl:  # WSRL: warm up online with the pretrained policy, keep no offline data
                    demos = None
                    warmup = cfg.offline.warmup
    if cfg.hil and demos is None and cfg.interventions_to_demos and not steer:
        demos = ReplayBuffer(spec, len(low), cfg.capacity, seed=cfg.seed + 1)
    log = CurveLog(out / "curve.csv", append=cfg.resume and step0 > 0)
    loop_human = None if steer else human  # with steering the env runs the human itself
    rng = np.random.default_rng(cfg.seed)
    ep_seed = cfg.seed * 100_000 + step0
    obs, _ = env.reset(seed=ep_seed)
    if loop_human:
        loop_human.reset(ep_seed)
    train_succ: list[bool] = []
    stats_set = demos is not None and demos.size > 0
    pbar = None
    if cfg.progress:
        from tqdm import tqdm
        pbar = tqdm(total=cfg.env_steps, initial=step0, desc=f"rl {cfg.task}", unit="step", leave=False)
    last_info: dict[str, float] = {}

    def evaluate(step: int) -> dict[str, Any]:
        res = evaluate_policy(eval_env, lambda o: learner.policy.act(_pick(o, keys), deterministic=True),
                              cfg.eval_episodes, cfg.eval_seed)
        row = {"env_steps": step, "wall_s": wall0 + time.monotonic() - t_start, "updates": learner.updates,
               **res, "intervention_rate": human.rate if human else 0.0,
               "train_success": float(np.mean(train_succ[-20:])) if train_succ else 0.0,
               "q": last_info.get("q", float("nan")), "alpha": last_info.get("alpha", float("nan"))}
        log.add(row)
        if on_eval:
            on_eval(row)
        return row

    if step0 == 0:
        if steer:  # the base policy as deployed: plain (unclipped) Gaussian noise
            base_res = evaluate_policy(eval_env, lambda o: rng.standard_normal(env.action_space.shape).astype(np.float32),
                                       cfg.eval_episodes, cfg.eval_seed)
            summary["base_success"] = base_res["success"]
            zero = np.zeros(env.action_space.shape, np.float32)  # the sampler's mode: a fixed noise of 0
            summary["base_zero_noise_success"] = evaluate_policy(eval_env, lambda o: zero, cfg.eval_episodes,
                                                                 cfg.eval_seed)["success"]
        evaluate(0)
    def next_episode() -> dict:
        nonlocal ep_seed
        ep_seed += 1
        o, _ = env.reset(seed=ep_seed)
        if loop_human:
            loop_human.reset(ep_seed)
        if demos is not None:
            demos.end_episode()
        return o

    step = step0
    while step < cfg.env_steps:
        o = _pick(obs, keys)
        if step < cfg.random_steps:
            a = rng.uniform(low, high).astype(np.float32)
        else:
            a = learner.policy.act(o, rng=rng)
        intervened = False
        if loop_human:
            a, intervened = loop_human.step(obs, a)
        nobs, r, term, trunc, info = env.step(a)
        prev = step
        step += int(info.get("env_steps", 1))
        intervened = intervened or bool(info.get("intervened", False))
        no = _pick(nobs, keys)
        stored = a
        if bank is not None:  # the decision's noise and executed chunk (the human's rows where it took over)
            bank.add(o, info["bank_noise"], info["bank_chunk"])
            stored = np.concatenate([a, info["executed_chunk"]])
        online.add(o, stored, r, no, term, trunc, intervened)
        if intervened and demos is not None and cfg.interventions_to_demos:
            # a takeover segment ends when the human lets go (with steering: within the decision)
            seg_end = not loop_human.left if loop_human is not None else True
            demos.add(o, stored, r, no, term, trunc or seg_end, True)
        obs = nobs
        if term or trunc:
            train_succ.append(bool(info["success"]))
            obs = next_episode()
        if not stats_set and step >= warmup:
            learner.set_obs_stats(online)
            stats_set = True
        if step >= warmup:
            if online_iql is not None:
                for _ in range(cfg.sac.utd):
                    last_info = online_iql.step(learner.sample_penalised(online, demos, cfg.intervention_penalty))
            elif bank is not None:
                last_info = learner.update(online, demos, intervention_penalty=cfg.intervention_penalty, bank=bank)
            else:
                last_info = learner.update(online, demos, intervention_penalty=cfg.intervention_penalty)
        if pbar:
            pbar.update(step - prev)
            if step // 100 > prev // 100:
                pbar.set_postfix(q=f"{last_info.get('q', 0):.2f}", alpha=f"{last_info.get('alpha', 0):.3f}",
                                 ok=f"{np.mean(train_succ[-20:]) if train_succ else 0:.2f}")
        if step // cfg.eval_every > prev // cfg.eval_every or step >= cfg.env_steps:
            row = evaluate(step)
            if getattr(env, "disturbed", False):  # Isaac twin: evaluation stepped this world too
                obs = next_episode()
            if cfg.stop_at is not None and row["success"] >= cfg.stop_at and summary["reached"] is None:
                summary["reached"] = step
                break
        if step // cfg.checkpoint_every > prev // cfg.checkpoint_every:
            save_state(learner, online, demos, out, step, wall0 + time.monotonic() - t_start, bank, online_iql)
    if pbar:
        pbar.close()
    save_state(learner, online, demos, out, step, wall0 + time.monotonic() - t_start, bank, online_iql)
    env.close()
    eval_env.close()
    rows = log.rows
    plot_curves({cfg.task: rows}, out / "curve.png", title=f"online RL {cfg.task} (seed {cfg.seed})")
    reached = next((int(r["env_steps"]) for r in rows if r["success"] >= 0.9), None)
    summary.update(env_steps=step, final_success=rows[-1]["success"], steps_to_90=reached,
                   wall_s=rows[-1]["wall_s"], updates=learner.updates,
                   intervention_rate=human.rate if human else 0.0,
                   interventions=human.interventions if human else 0, out=str(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def save_state(learner: SACLearner, online: ReplayBuffer, demos: ReplayBuffer | None, out: Path,
               step: int, wall_s: float, bank=None, iql: IQL | None = None) -> None:
    """Learner checkpoint + buffers (+ the noise bank, online IQL's own state), each written
    atomically; resume with ``resume=true``."""
    online.save(out / "online.safetensors")
    if iql is not None:
        iql.save(out / "iql.safetensors")
    if bank is not None:
        bank.save(out / "bank.safetensors")
    if demos is not None:
        demos.save(out / "demos.safetensors")
    learner.save(out / "learner.safetensors", {"env_steps": step, "wall_s": wall_s})
