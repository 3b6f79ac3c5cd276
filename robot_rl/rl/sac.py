"""Soft actor-critic in the RLPD recipe (Ball et al. 2023), readable top to bottom.

- an ensemble of ``n_critics`` LayerNorm critics; the TD target takes the minimum over a
  random subset of ``critic_subset`` target critics;
- ``utd`` critic updates per environment step, one actor/temperature update;
- every batch is drawn half from the demonstration buffer, half from the online buffer
  (``demo_fraction``), when demonstrations are given;
- a learned temperature towards ``target_entropy``;
- images: one conv trunk per camera, trained by the critic only (the actor reads detached
  features), random-shift augmentation (DrQ);
- optional: a discrete gripper critic (a DQN over {open, close}, as in HIL-SERL) instead of
  a continuous gripper dimension; a histogram (HL-Gauss) critic loss; a BC term on
  demonstration rows; the RLIF penalty on steps where a human took over.

The part that acts (:class:`PolicyNet`: encoder + actor + gripper critic) is what the
learner ships to actors as weights.
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from robot_rl.rl.nets import EnsembleCritic, ObsEncoder, TanhGaussianActor, hl_gauss_target
from robot_rl.rl.replay import ReplayBuffer, ReplayError


def check_fields(cls, d: Mapping[str, Any], what: str) -> None:
    """Refuse keys that are not fields of the dataclass ``cls`` (one line, with the known ones)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {unknown}; known: {sorted(names)}")


@dataclass
class SACConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    n_critics: int = 2
    critic_subset: int = 2
    utd: int = 1
    batch_size: int = 256
    demo_fraction: float = 0.5
    gamma: float = 0.97
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temp_lr: float = 3e-4
    init_temperature: float = 0.01
    target_entropy: float | None = None  # default: -action_dim / 2
    backup_entropy: bool = False
    critic_loss: str = "mse"  # or "hl_gauss" (classification critic)
    n_bins: int = 51
    v_min: float = -1.0
    v_max: float = 1.5
    discrete_gripper: bool = False
    grip_epsilon: float = 0.1  # exploration of the discrete gripper
    bc_weight: float = 0.0  # BC term (mean-action squared error) on demonstration rows of the actor loss
    bc_pretrain_steps: int = 0  # behaviour-cloning warm start of the actor on the demonstrations
    actor_delay: int = 0  # critic-only updates first (lets a fresh critic catch up with a pretrained actor)
    actor_l2: float = 0.0  # penalty on the squared mean action (in noise space: a pull towards the mode)
    image_feat: int = 64
    augment: bool = True
    device: str = "auto"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SACConfig":
        check_fields(cls, d, "SAC")
        cfg = cls(**{k: (list(v) if k == "hidden" else v) for k, v in d.items()})
        if cfg.critic_loss not in ("mse", "hl_gauss"):
            raise ValueError(f"critic_loss must be 'mse' or 'hl_gauss', got {cfg.critic_loss!r}")
        if not 1 <= cfg.critic_subset <= cfg.n_critics:
            raise ValueError("critic_subset must be between 1 and n_critics")
        if not 0.0 <= cfg.demo_fraction < 1.0:
            raise ValueError("demo_fraction must be in [0, 1)")
        return cfg


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class PolicyNet(nn.Module):
    """What an actor needs: the observation encoder, the continuous actor and (optionally)
    the gripper critic. ``act`` takes numpy observations (one or a batch)."""

    def __init__(self, obs_spec: Mapping[str, tuple[tuple[int, ...], Any]], low: np.ndarray, high: np.ndarray,
                 cfg: SACConfig):
        super().__init__()
        self.cfg = cfg
        self.obs_spec = {k: (tuple(s), np.dtype(d).str) for k, (s, d) in obs_spec.items()}
        self.action_low = np.asarray(low, np.float32)
        self.action_high = np.asarray(high, np.float32)
        self.encoder = ObsEncoder(obs_spec, cfg.image_feat)
        n_cont = len(low) - (1 if cfg.discrete_gripper else 0)
        self.actor = TanhGaussianActor(self.encoder.out_dim, torch.as_tensor(low[:n_cont]),
                                       torch.as_tensor(high[:n_cont]), cfg.hidden)
        self.grip = EnsembleCritic(2, self.encoder.out_dim, cfg.hidden, n_out=2) if cfg.discrete_gripper else None

    @property
    def device(self) -> torch.device:
        return self.encoder.mean.device

    def obs_tensors(self, obs: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], bool]:
        first = next(iter(self.obs_spec))
        single = np.asarray(obs[first]).shape == self.obs_spec[first][0]
        out = {}
        for k in self.obs_spec:
            v = np.asarray(obs[k])
            out[k] = torch.as_tensor(v[None] if single else v, device=self.device)
        return out, single

    @torch.no_grad()
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False,
            rng: np.random.Generator | None = None) -> np.ndarray:
        t, single = self.obs_tensors(obs)
        z = self.encoder(t)
        a, _ = self.actor(z, deterministic=deterministic, with_log_prob=False)
        if self.grip is not None:
            g = self.grip(z).mean(0).argmax(-1).float()
            if not deterministic and self.cfg.grip_epsilon > 0:
                rng = rng or np.random.default_rng()
                flip = torch.as_tensor(rng.random(len(g)) < self.cfg.grip_epsilon, device=g.device)
                g = torch.where(flip, torch.as_tensor(rng.integers(0, 2, len(g)), device=g.device).float(), g)
            lo, hi = float(self.action_low[-1]), float(self.action_high[-1])
            a = torch.cat([a, (lo + g * (hi - lo)).unsqueeze(-1)], dim=-1)
        a = a.cpu().numpy().astype(np.float32)
        return a[0] if single else a


class SACLearner:
    """Owns the networks, optimisers and the update rule."""

    def __init__(self, obs_spec: Mapping[str, tuple[tuple[int, ...], Any]], low: np.ndarray, high: np.ndarray,
                 cfg: SACConfig | None = None, seed: int = 0):
        self.cfg = cfg = cfg or SACConfig()
        torch.manual_seed(seed)
        self.device = pick_device(cfg.device)
        self.policy = PolicyNet(obs_spec, low, high, cfg).to(self.device)
        enc = self.policy.encoder
        self.n_cont = self.policy.actor.act_dim
        n_out = cfg.n_bins if cfg.critic_loss == "hl_gauss" else 1
        self.critic = EnsembleCritic(cfg.n_critics, enc.out_dim + self.n_cont, cfg.hidden, n_out).to(self.device)
        # the target holds its own copy of the encoder (DrQ)
        self.target_encoder = copy.deepcopy(enc).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.target_grip = copy.deepcopy(self.policy.grip).requires_grad_(False) if cfg.discrete_gripper else None
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = cfg.target_entropy if cfg.target_entropy is not None else -self.n_cont / 2
        critic_params = list(self.critic.parameters()) + list(enc.parameters())
        if self.policy.grip is not None:
            critic_params += list(self.policy.grip.parameters())
        self.critic_opt = torch.optim.Adam(critic_params, lr=cfg.critic_lr)
        self.actor_opt = torch.optim.Adam(self.policy.actor.parameters(), lr=cfg.actor_lr)
        self.temp_opt = torch.optim.Adam([self.log_alpha], lr=cfg.temp_lr)
        if cfg.critic_loss == "hl_gauss":
            self.centers = torch.linspace(cfg.v_min, cfg.v_max, cfg.n_bins, device=self.device)
            self.sigma = 0.75 * float(self.centers[1] - self.centers[0])
        self.updates = 0
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    # -- helpers -------------------------------------------------------------------------
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def set_obs_stats(self, buffer: ReplayBuffer) -> None:
        """Standardise state inputs with a buffer's statistics (demos or first rollouts)."""
        enc = self.policy.encoder
        if not enc.state_keys or buffer.size == 0:
            return
        filled = min(buffer.rows, buffer.capacity)
        x = np.concatenate([buffer.obs[k][:filled].reshape(filled, -1).astype(np.float32)
                            for k in enc.state_keys], axis=1)
        for e in (enc, self.target_encoder):
            e.set_stats(torch.as_tensor(x.mean(0), device=self.device), torch.as_tensor(x.std(0), device=self.device))

    def q_values(self, critic: EnsembleCritic, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(E, B) Q estimates (expectations for the histogram critic)."""
        out = critic(z, a)
        if self.cfg.critic_loss == "hl_gauss":
            return (out.softmax(-1) * self.centers).sum(-1)
        return out.squeeze(-1)

    def grip_index(self, action: torch.Tensor) -> torch.Tensor:
        lo, hi = float(self.policy.action_low[-1]), float(self.policy.action_high[-1])
        return ((action[:, -1] - lo) / (hi - lo) > 0.5).long()

    def sample(self, online: ReplayBuffer | None, demos: ReplayBuffer | None) -> dict[str, Any]:
        n = self.cfg.batch_size
        parts = []
        if demos is not None and demos.size and online is not None and online.size:
            nd = int(round(n * self.cfg.demo_fraction))
            parts = [(demos.sample(nd, self.device), True), (online.sample(n - nd, self.device), False)]
        elif online is not None and online.size:
            parts = [(online.sample(n, self.device), False)]
        elif demos is not None and demos.size:
            parts = [(demos.sample(n, self.device), True)]
        else:
            raise ReplayError("no transitions to learn from yet")
        if len(parts) == 1:
            b, is_demo = parts[0]
            b["is_demo"] = torch.full((n,), float(is_demo), device=self.device)
            return b
        (a, _), (b, _) = parts
        out: dict[str, Any] = {k: {kk: torch.cat([a[k][kk], b[k][kk]]) for kk in a[k]} if isinstance(a[k], dict)
                               else torch.cat([a[k], b[k]]) for k in a}
        out["is_demo"] = torch.cat([torch.ones(len(a["action"])), torch.zeros(len(b["action"]))]).to(self.device)
        return out

    # -- the update ----------------------------------------------------------------------
    def update(self, online: ReplayBuffer | None, demos: ReplayBuffer | None = None,
               n_critic: int | None = None, intervention_penalty: float = 0.0) -> dict[str, float]:
        """``n_critic`` (default ``utd``) critic updates, then one actor and temperature
        update on the last batch. ``intervention_penalty`` is subtracted from the reward of
        steps a human took over (RLIF)."""
        info: dict[str, float] = {}
        for _ in range(n_critic or self.cfg.utd):
            batch = self.sample_penalised(online, demos, intervention_penalty)
            info.update(self.critic_step(batch))
        if self.updates > self.cfg.actor_delay:
            info.update(self.actor_step(batch))
        return info

    def sample_penalised(self, online, demos, intervention_penalty: float = 0.0) -> dict[str, Any]:
        """:meth:`sample`, with ``intervention_penalty`` subtracted from the reward of steps a
        human took over (RLIF)."""
        batch = self.sample(online, demos)
        if intervention_penalty:
            batch["reward"] = batch["reward"] - intervention_penalty * batch["intervened"]
        return batch

    @torch.no_grad()
    def bootstrap(self, b: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
        """The target critics' value at the next observation under the current actor (min over
        a random subset): (q_next, logp_next, z_next, zt_next)."""
        cfg, pol = self.cfg, self.policy
        z_next = pol.encoder(b["next_obs"], augment=cfg.augment)
        a_next, logp_next = pol.actor(z_next)
        zt_next = self.target_encoder(b["next_obs"], augment=cfg.augment)
        subset = torch.randperm(cfg.n_critics, generator=self.gen)[: cfg.critic_subset]
        q_next = self.q_values(self.target_critic, zt_next, a_next)[subset].min(0).values
        return q_next, logp_next, z_next, zt_next

    def critic_step(self, b: Mapping[str, Any]) -> dict[str, float]:
        cfg, pol = self.cfg, self.policy
        a_cont = b["action"][:, : self.n_cont]
        with torch.no_grad():
            q_next, logp_next, z_next, zt_next = self.bootstrap(b)
            if cfg.backup_entropy:
                q_next = q_next - self.alpha * logp_next
            target = b["reward"] + cfg.gamma * (1.0 - b["done"]) * q_next
        z = pol.encoder(b["obs"], augment=cfg.augment)
        out = self.critic(z, a_cont)  # (E, B, K)
        if cfg.critic_loss == "hl_gauss":
            tgt = hl_gauss_target(target.clamp(cfg.v_min, cfg.v_max), self.centers, self.sigma)
            loss = -(tgt.unsqueeze(0) * out.log_softmax(-1)).sum(-1).mean(-1).sum()
            q = (out.softmax(-1) * self.centers).sum(-1)
        else:
            q = out.squeeze(-1)
            loss = ((q - target.unsqueeze(0)) ** 2).mean(-1).sum()
        info = {"critic_loss": float(loss.detach()) / cfg.n_critics, "q": float(q.detach().mean())}
        if pol.grip is not None:
            g = self.grip_index(b["action"])
            with torch.no_grad():
                g_next = pol.grip(z_next).mean(0).argmax(-1)  # double DQN: online argmax
                qg_next = self.target_grip(zt_next).min(0).values.gather(1, g_next[:, None]).squeeze(1)
                g_target = b["reward"] + cfg.gamma * (1.0 - b["done"]) * qg_next
            qg = pol.grip(z).gather(2, g[None, :, None].expand(2, -1, 1)).squeeze(-1)
            g_loss = ((qg - g_target.unsqueeze(0)) ** 2).mean(-1).sum()
            loss = loss + g_loss
            info["grip_loss"] = float(g_loss.detach()) / 2
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.soft_update()
        self.updates += 1
        return info

    @torch.no_grad()
    def soft_update(self) -> None:
        tau = self.cfg.tau
        pairs = [(self.critic, self.target_critic), (self.policy.encoder, self.target_encoder)]
        if self.target_grip is not None:
            pairs.append((self.policy.grip, self.target_grip))
        for src, dst in pairs:
            for p, tp in zip(src.parameters(), dst.parameters()):
                tp.lerp_(p, tau)
            for bsrc, bdst in zip(src.buffers(), dst.buffers()):
                bdst.copy_(bsrc)

    def actor_step(self, b: Mapping[str, Any]) -> dict[str, float]:
        cfg, pol = self.cfg, self.policy
        with torch.no_grad():
            z = pol.encoder(b["obs"], augment=cfg.augment)
        a, logp = pol.actor(z)
        q = self.q_values(self.critic, z, a).mean(0)
        loss = (self.alpha.detach() * logp - q).mean()
        info = {}
        if cfg.actor_l2 > 0:
            mean, _ = pol.actor(z, deterministic=True, with_log_prob=False)
            loss = loss + cfg.actor_l2 * (((mean - pol.actor.loc) / pol.actor.scale) ** 2).mean()
        if cfg.bc_weight > 0 and bool((b["is_demo"] > 0).any()):
            demo = b["is_demo"] > 0
            bc = self.bc_loss(z[demo], b["action"][demo])
            loss = loss + cfg.bc_weight * bc
            info["bc_mse"] = float(bc.detach())
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        temp_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.temp_opt.zero_grad(set_to_none=True)
        temp_loss.backward()
        self.temp_opt.step()
        info.update(actor_loss=float(loss.detach()), alpha=float(self.alpha.detach()), entropy=float(-logp.detach().mean()))
        return info

    def bc_loss(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Squared error of the actor's mean action to the demonstrated one (TD3+BC style)."""
        return self.policy.actor.bc_error(z, action[:, : self.n_cont]).mean()

    def pretrain_bc(self, demos: ReplayBuffer, steps: int, progress: bool = False) -> float:
        """Warm-start the actor (and image encoders) by behaviour cloning on ``demos``."""
        params = list(self.policy.actor.parameters()) + list(self.policy.encoder.parameters())
        opt = torch.optim.Adam(params, lr=1e-3)
        it = range(steps)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="bc warm start", leave=False)
        loss = torch.zeros(())
        for _ in it:
            b = demos.sample(self.cfg.batch_size, self.device)
            loss = self.bc_loss(self.policy.encoder(b["obs"], augment=self.cfg.augment), b["action"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss.detach())

    # -- weights and checkpoints -----------------------------------------------------------
    def init_kw(self) -> dict[str, Any]:
        """Constructor arguments a subclass needs beyond (spec, low, high, cfg), for :meth:`load`."""
        return {}

    def actor_state(self) -> dict[str, torch.Tensor]:
        """The weights an actor needs (encoder, actor, gripper critic), on CPU."""
        return {k: v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()}

    def modules(self) -> dict[str, nn.Module]:
        m = {"policy": self.policy, "critic": self.critic, "target_encoder": self.target_encoder,
             "target_critic": self.target_critic}
        if self.target_grip is not None:
            m["target_grip"] = self.target_grip
        return m

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_opt": self.critic_opt, "actor_opt": self.actor_opt, "temp_opt": self.temp_opt}

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
        """Networks, optimiser moments, temperature and counters in one safetensors file."""
        tensors, opt_meta = pack_state(self.modules(), self.optimizers())
        tensors["log_alpha"] = self.log_alpha.detach().cpu().reshape(1)
        meta = {"kind": "robot_rl.sac", "config": json.dumps(asdict(self.cfg)),
                "obs_spec": json.dumps(self.policy.obs_spec), "updates": str(self.updates),
                "low": json.dumps(self.policy.action_low.tolist()), "high": json.dumps(self.policy.action_high.tolist()),
                "param_groups": json.dumps(opt_meta), "extra": json.dumps(dict(extra or {})),
                "init_kw": json.dumps(self.init_kw())}
        write_safetensors_atomic(tensors, meta, path)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> tuple["SACLearner", dict[str, Any]]:
        """A learner from :meth:`save` (optimiser state included); returns (learner, extra)."""
        tensors, meta = read_checkpoint(path)
        cfg = SACConfig.from_dict(json.loads(meta["config"]))
        if device:
            cfg.device = device
        spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in json.loads(meta["obs_spec"]).items()}
        self = cls(spec, np.array(json.loads(meta["low"]), np.float32), np.array(json.loads(meta["high"]), np.float32), cfg,
                   **json.loads(meta.get("init_kw", "{}")))
        unpack_state(tensors, json.loads(meta["param_groups"]), self.modules(), self.optimizers(), self.device)
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"][0])
        self.updates = int(meta["updates"])
        return self, json.loads(meta.get("extra", "{}"))


def pack_state(modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer]
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Module weights and optimiser moments as flat CPU tensors (``name.key``), plus the
    optimisers' param groups (JSON-able)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"{name}.state.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        groups[name] = sd["param_groups"]
    return tensors, groups


def unpack_state(tensors: Mapping[str, torch.Tensor], groups: Mapping[str, Any], modules: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer], device: torch.device) -> None:
    """The inverse of :func:`pack_state`, into existing modules and optimisers."""
    for name, mod in modules.items():
        mod.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    for name, opt in optimizers.items():
        state: dict[int, dict[str, torch.Tensor]] = {}
        pre = f"{name}.state."
        for k, v in tensors.items():
            if k.startswith(pre):
                pid, key = k[len(pre):].split(".", 1)
                state.setdefault(int(pid), {})[key] = v.to(device) if key != "step" else v
        opt.load_state_dict({"state": state, "param_groups": groups[name]})


def write_safetensors_atomic(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str], path: str | Path) -> None:
    """Write to a temporary name, fsync, rename: a crash never leaves half a file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(dict(tensors), str(tmp), metadata=dict(meta))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


class CheckpointError(ValueError):
    """A learner or policy checkpoint that cannot be read (one line)."""


def read_checkpoint(path: str | Path, kind: str = "robot_rl.sac") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import load_file
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint")
    try:
        with safe_open(str(p), "pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(p))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{p}: not a safetensors checkpoint ({type(e).__name__}: {e})") from None
    if meta.get("kind") != kind:
        what = "an RL learner checkpoint" if kind == "robot_rl.sac" else f"a {kind} checkpoint"
        raise CheckpointError(f"{p}: not {what} (kind {meta.get('kind')!r})")
    return tensors, meta


def policy_from_checkpoint(path: str | Path, device: str = "cpu") -> PolicyNet:
    """The acting part of a learner checkpoint (for evaluation and deployment)."""
    tensors, meta = read_checkpoint(path)
    cfg = SACConfig.from_dict(json.loads(meta["config"]))
    spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in json.loads(meta["obs_spec"]).items()}
    pol = PolicyNet(spec, np.array(json.loads(meta["low"]), np.float32), np.array(json.loads(meta["high"]), np.float32), cfg)
    pol.load_state_dict({k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")})
    return pol.to(device).eval()
