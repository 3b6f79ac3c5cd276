"""Offline pretraining on an episode store with implicit Q-learning (IQL; Kostrikov et al.
2022), into the same networks the online learner fine-tunes.

IQL never queries the critic at actions outside the data: V(s) is an upper expectile of
Q(s, a) over the dataset's actions, Q is regressed on r + gamma V(s'), and the actor is
fitted by advantage-weighted regression (here on its mean action, the form that clones
best on the twin). After pretraining, :func:`robot_rl.rl.loop.run_online` fine-tunes with
SAC; with WSRL (Zhou et al. 2025) it first collects ``warmup`` online steps with the
pretrained policy and then keeps no offline data.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import torch

from robot_rl.rl.nets import EnsembleCritic
from robot_rl.rl.replay import ReplayBuffer
from robot_rl.rl.sac import SACLearner, pack_state, read_checkpoint, unpack_state, write_safetensors_atomic


@dataclass
class OfflineConfig:
    steps: int = 0  # IQL gradient steps before going online (0: no offline phase)
    expectile: float = 0.8
    temperature: float = 3.0  # AWR inverse temperature
    max_weight: float = 100.0
    successful_only: bool = False  # offline data: every episode of the store, failures included
    online: str = "sac"  # online updates: sac | iql (keep fine-tuning with IQL)
    online_actor_lr: float | None = None  # IQL online: the actor's learning rate after pretraining
    wsrl: bool = True  # online: no offline data retained after the warm-up
    warmup: int = 1000  # WSRL warm-up: online steps collected with the pretrained policy, no updates


class IQL:
    """IQL updates on a learner's encoder, critics and actor (plus a state-value network)."""

    def __init__(self, learner: SACLearner, cfg: OfflineConfig):
        sac = learner.cfg
        self.learner, self.cfg = learner, cfg
        dev = learner.device
        enc = learner.policy.encoder
        self.value = EnsembleCritic(1, enc.out_dim, sac.hidden, 1).to(dev)
        self.v_opt = torch.optim.Adam(self.value.parameters(), lr=sac.critic_lr)
        self.q_opt = torch.optim.Adam(list(learner.critic.parameters()) + list(enc.parameters()), lr=sac.critic_lr)
        self.pi_opt = torch.optim.Adam(learner.policy.actor.parameters(), lr=sac.actor_lr)
        self.target = copy.deepcopy(learner.critic).requires_grad_(False)
        self.info: dict[str, float] = {}  # the last step's losses

    def step(self, b) -> dict[str, float]:
        learner, cfg, sac = self.learner, self.cfg, self.learner.cfg
        enc, actor, critic = learner.policy.encoder, learner.policy.actor, learner.critic
        a = b["action"][:, : learner.n_cont]
        z = enc(b["obs"], augment=sac.augment)
        with torch.no_grad():
            zd = z.detach()
            q_t = learner.q_values(self.target, zd, a).min(0).values
            v_next = self.value(enc(b["next_obs"], augment=sac.augment)).squeeze(-1)[0]
            q_target = b["reward"] + sac.gamma * (1 - b["done"]) * v_next
        # V: expectile regression towards the dataset's Q values
        v = self.value(zd).squeeze(-1)[0]
        diff = q_t - v
        weight = torch.where(diff > 0, cfg.expectile, 1 - cfg.expectile)
        v_loss = (weight * diff ** 2).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        # Q: one-step backup through V (no actions outside the data)
        q = learner.q_values(critic, z, a)
        q_loss = ((q - q_target.unsqueeze(0)) ** 2).mean(-1).sum()
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        with torch.no_grad():
            for p, tp in zip(critic.parameters(), self.target.parameters()):
                tp.lerp_(p, sac.tau)
        # actor: advantage-weighted regression of the mean action
        with torch.no_grad():
            adv = q_t - v.detach()
            w = torch.exp(cfg.temperature * adv).clamp(max=cfg.max_weight)
        pi_loss = (w * actor.bc_error(zd, a)).mean()
        self.pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.pi_opt.step()
        learner.updates += 1
        return {"v_loss": float(v_loss.detach()), "q_loss": float(q_loss.detach()),
                "pi_loss": float(pi_loss.detach()), "q": float(q_t.mean())}

    def save(self, path) -> None:
        """The IQL-only state (value network, critic target, optimisers) next to the learner's
        checkpoint, so that online IQL resumes as it was."""
        tensors, groups = pack_state(self.modules(), self.optimizers())
        write_safetensors_atomic(tensors, {"kind": "robot_rl.iql", "param_groups": json.dumps(groups)}, path)

    def load(self, path) -> "IQL":
        tensors, meta = read_checkpoint(path, kind="robot_rl.iql")
        unpack_state(tensors, json.loads(meta["param_groups"]), self.modules(), self.optimizers(), self.learner.device)
        return self

    def modules(self):
        return {"value": self.value, "target": self.target}

    def optimizers(self):
        return {"v_opt": self.v_opt, "q_opt": self.q_opt, "pi_opt": self.pi_opt}

    def sync_targets(self) -> None:
        """Start SAC from the pretrained critics: copy them into the learner's targets."""
        with torch.no_grad():
            self.learner.target_critic.load_state_dict(self.learner.critic.state_dict())
            self.learner.target_encoder.load_state_dict(self.learner.policy.encoder.state_dict())


def pretrain_iql(learner: SACLearner, data: ReplayBuffer, cfg: OfflineConfig, progress: bool = False) -> IQL:
    """``cfg.steps`` IQL updates on ``data``; returns the updater (to continue online)."""
    iql = IQL(learner, cfg)
    it = range(cfg.steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="offline IQL", leave=False)
    for _ in it:
        iql.info = iql.step(data.sample(learner.cfg.batch_size, learner.device))
    iql.sync_targets()
    learner.updates = 0
    return iql
