"""The actor / learner wire format and cores, without ROS: transitions and weights as
checksummed safetensors bytes, the actor's pending queue, re-sends and weight rules, the
learner's de-duplication, interleaved actors, crash + resume from the replay log."""
from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from robot_rl.rl import wire
from robot_rl.rl.distributed import (ActorConfig, ActorCore, LearnerConfig, LearnerCore, TeleopIntervention,
                                     format_ack, parse_ack, twist_to_action)
from robot_rl.rl.replay import transitions_to_batch
from robot_rl.rl.sac import PolicyNet, SACConfig
from robot_rl.rl.wire import WireError

SAC = SACConfig(hidden=[16, 16], n_critics=2, critic_subset=2, batch_size=16, utd=1, image_feat=8)
KEYS = ["joint_pos", "gripper"]


class CountingEnv(gym.Env):
    """A tiny env whose observations say who produced them: joint_pos = [actor, episode, t, 0, 0].
    Episodes last ``length`` steps (truncated); reward 1 and terminated on step ``success_at``."""

    def __init__(self, actor: float = 0.0, length: int = 10, success_at: int | None = None, image: bool = False):
        spaces = {"joint_pos": gym.spaces.Box(-1e6, 1e6, (5,), np.float32),
                  "gripper": gym.spaces.Box(0, 1, (1,), np.float32)}
        if image:
            spaces["image_front"] = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(np.r_[-np.ones(6), 0].astype(np.float32), np.ones(7, np.float32))
        self.actor, self.length, self.success_at, self.image = actor, length, success_at, image
        self.episode, self.t = -1, 0

    def _obs(self):
        o = {"joint_pos": np.array([self.actor, self.episode, self.t, 0, 0], np.float32),
             "gripper": np.array([0.5], np.float32)}
        if self.image:
            o["image_front"] = np.full((8, 8, 3), (self.t * 7 + self.episode) % 256, np.uint8)
        return o

    def reset(self, *, seed=None, options=None):
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        success = self.success_at is not None and self.t == self.success_at
        return self._obs(), float(success), success, self.t >= self.length and not success, {"success": success}


def make_actor(actor_id="a0", actor=0.0, clock=None, **kw):
    env = CountingEnv(actor, image=kw.pop("image", False), length=kw.pop("length", 10),
                      success_at=kw.pop("success_at", None))
    cfg = ActorConfig(actor_id=actor_id, keys=KEYS, sac=SAC, **kw)
    if env.image:
        cfg.cameras = ["front"]
    return ActorCore(cfg, env=env, **({"clock": clock} if clock else {}))


def make_learner(tmp_path, actor: ActorCore, **kw):
    cfg = LearnerConfig(out=str(tmp_path / "learner"), keys=KEYS, sac=SAC, capacity=kw.pop("capacity", 10_000), **kw)
    return LearnerCore(cfg, actor.obs_spec, actor.low, actor.high)


def batch_of(n=4, image=False):
    steps = []
    for t in range(n):
        o = {"joint_pos": np.full(5, t, np.float32), "gripper": np.array([0.1], np.float32)}
        no = {"joint_pos": np.full(5, t + 1, np.float32), "gripper": np.array([0.2], np.float32)}
        if image:
            o["image_front"] = np.full((8, 8, 3), t, np.uint8)
            no["image_front"] = np.full((8, 8, 3), t + 1, np.uint8)
        steps.append({"obs": o, "next_obs": no, "action": np.full(7, 0.1 * t, np.float32), "reward": float(t == n - 1),
                      "terminated": t == n - 1, "truncated": False, "intervened": t == 1})
    return transitions_to_batch(steps, KEYS + (["image_front"] if image else []))


def policy_state():
    spec = {"joint_pos": ((5,), np.float32), "gripper": ((1,), np.float32)}
    pol = PolicyNet(spec, -np.ones(7, np.float32), np.ones(7, np.float32), SAC)
    return pol, {k: v.clone() for k, v in pol.state_dict().items()}


def one_line(e: Exception) -> str:
    s = str(e)
    assert s and "\n" not in s, s
    return s


# -- wire -----------------------------------------------------------------------------------------
def test_transitions_round_trip():
    b = batch_of(5, image=True)
    blob = wire.pack_transitions(b, "a0#12ab", 7, {"policy_version": "3"})
    assert isinstance(blob, bytes) and b"pickle" not in blob
    got, meta = wire.unpack_transitions(blob, {"joint_pos": ((5,), np.float32), "gripper": ((1,), np.float32),
                                               "image_front": ((8, 8, 3), np.uint8)}, action_dim=7)
    assert meta["actor"] == "a0#12ab" and meta["seq"] == 7 and meta["n"] == 5 and meta["policy_version"] == "3"
    assert sorted(got) == sorted(b)
    for k in b:
        np.testing.assert_array_equal(got[k], b[k])
        assert got[k].dtype == b[k].dtype


def test_weights_round_trip():
    pol, sd = policy_state()
    blob = wire.pack_weights(sd, 42, {"note": "x"})
    got, v = wire.unpack_weights(blob, wire.state_spec(pol))
    assert v == 42 and sorted(got) == sorted(sd)
    for k in sd:
        assert torch.equal(got[k], sd[k])
    assert wire.weights_meta(blob)["note"] == "x"


def test_every_bit_flip_and_truncation_is_rejected():
    pol, sd = policy_state()
    rng = np.random.default_rng(0)
    for blob, unpack in ((wire.pack_weights(sd, 5), lambda d: wire.unpack_weights(d, wire.state_spec(pol))),
                         (wire.pack_transitions(batch_of(3), "a0", 1), wire.unpack_transitions)):
        n_header = 8 + int.from_bytes(blob[:8], "little")
        positions = list(range(0, min(n_header, 400), 3)) + list(rng.integers(n_header, len(blob), 150))
        for pos in positions:
            bad = bytearray(blob)
            bad[pos] ^= 1 << int(rng.integers(0, 8))
            with pytest.raises(WireError) as ei:
                unpack(bytes(bad))
            one_line(ei.value)
        for cut in (0, 3, 8, n_header - 1, n_header + 1, len(blob) - 1):
            with pytest.raises(WireError):
                unpack(blob[:cut])
        with pytest.raises(WireError):
            unpack(blob + b"\0")
        with pytest.raises(WireError):
            unpack(b"not a message at all" * 10)


def test_wrong_kind_keys_shapes_dtypes_and_nan_rejected():
    pol, sd = policy_state()
    tr = wire.pack_transitions(batch_of(3), "a0", 1)
    w = wire.pack_weights(sd, 1)
    with pytest.raises(WireError, match="expected a robot_rl.weights message"):
        wire.unpack_weights(tr)
    with pytest.raises(WireError, match="expected a robot_rl.transitions message"):
        wire.unpack_transitions(w)
    expected = wire.state_spec(pol)
    missing = dict(sd)
    missing.pop(next(iter(missing)))
    with pytest.raises(WireError, match="missing"):
        wire.unpack_weights(wire.pack_weights(missing, 2), expected)
    with pytest.raises(WireError, match="unexpected"):
        wire.unpack_weights(wire.pack_weights({**sd, "extra.weight": torch.zeros(2)}, 2), expected)
    k = next(k for k, v in sd.items() if v.ndim == 2)
    with pytest.raises(WireError, match="expects"):
        wire.unpack_weights(wire.pack_weights({**sd, k: torch.zeros(3, 3)}, 2), expected)
    with pytest.raises(WireError, match="expects"):
        wire.unpack_weights(wire.pack_weights({**sd, k: sd[k].double()}, 2), expected)
    # a sender refuses NaN; a message that holds NaN anyway (sealed by hand) is refused on arrival
    nan = {**sd, k: torch.full_like(sd[k], float("nan"))}
    with pytest.raises(WireError, match="NaN"):
        wire.pack_weights(nan, 3)
    from safetensors.torch import save
    forged = wire._seal(save({kk: v.contiguous() for kk, v in nan.items()},
                             {"kind": wire.KIND_WEIGHTS, "format": wire.FORMAT, "version": "3",
                              "sha256": wire.PLACEHOLDER.decode()}))
    with pytest.raises(WireError, match="NaN"):
        wire.unpack_weights(forged, expected)
    # transitions that do not fit the learner's spec
    spec = {"joint_pos": ((5,), np.float32), "gripper": ((1,), np.float32)}
    with pytest.raises(WireError, match="learner expects") as ei:
        wire.unpack_transitions(tr, {**spec, "joint_pos": ((6,), np.float32)})
    assert ei.value.meta == {"actor": "a0", "seq": 1}  # intact message: the learner can refuse it by name
    with pytest.raises(WireError, match="do not match"):
        wire.unpack_transitions(tr, {**spec, "ee_pos": ((3,), np.float32)})
    with pytest.raises(WireError, match="expects 6"):
        wire.unpack_transitions(tr, spec, action_dim=6)
    b = batch_of(3)
    b["action"][1, 0] = np.nan
    with pytest.raises(WireError, match="non-finite"):
        wire.unpack_transitions(wire.pack_transitions(b, "a0", 2))
    with pytest.raises(WireError, match="lacks"):
        wire.pack_transitions({k: v for k, v in batch_of(3).items() if k != "reward"}, "a0", 1)
    with pytest.raises(WireError, match="reserved"):
        wire.pack_weights(sd, 1, {"version": "9"})


# -- actor core ----------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_actor_batches_pending_window_resend_and_drop_oldest():
    clock = Clock()
    a = make_actor(batch_size=4, length=10, max_pending=5, window=2, resend_after_s=1.0, clock=clock)
    for _ in range(10):  # one episode of 10 steps: batches of 4, 4 and 2 (episode end sends early)
        a.step()
    assert a.pack_ready() == 3
    blobs = {}
    for seq in a.pending:
        b, meta = wire.unpack_transitions(a.pending[seq].blob)
        blobs[seq] = b
        assert meta["actor"] == a.source
    assert [len(b["action"]) for b in blobs.values()] == [4, 4, 2]
    assert blobs[2]["truncated"][-1] and not blobs[1]["truncated"].any()
    # consecutive steps share observations: next_obs of a step is the next step's obs
    np.testing.assert_array_equal(blobs[0]["next_obs.joint_pos"][-1], blobs[1]["obs.joint_pos"][0])
    sent = a.due()
    assert [s for s, _ in sent] == [0, 1]  # window of 2
    assert a.due() == []  # in flight, not timed out
    assert a.on_ack(a.source, 0) and not a.on_ack(a.source, 0)  # a second ack of the same batch: ignored
    assert not a.on_ack("someone-else#1", 1)
    assert [s for s, _ in a.due()] == [2]
    clock.t = 1.5  # batch 1 and 2 unacked for longer than resend_after_s
    assert [s for s, _ in a.due()] == [1, 2]
    assert a.counts["resent"] == 2 and a.counts["sent"] == 3
    a.on_ack(a.source, 1)
    a.on_ack(a.source, 2, ok=False)
    assert a.counts["acked_transitions"] == 8 and a.counts["rejected_batches"] == 1
    for _ in range(40):  # 4 episodes = 12 batches; only the newest 5 are kept, the 7 oldest dropped
        a.step()
    a.pack_ready()
    assert a.counts["dropped_batches"] == 7 and a.counts["dropped_transitions"] == 4 + 4 + 2 + 4 + 4 + 2 + 4
    assert len(a.pending) == 5
    first = wire.unpack_transitions(next(iter(a.pending.values())).blob)[0]
    assert first["obs.joint_pos"][0, 1:3].tolist() == [3, 4]  # episode 3, step 4: the 8th batch of 12
    assert a.status()["pending_batches"] == 5


def test_actor_weights_only_newer_and_valid():
    a = make_actor()
    obs = {k: np.asarray(a.obs[k]) for k in a.keys}
    _, sd = policy_state()
    assert a.version == -1
    assert a.offer_weights(wire.pack_weights(sd, 5))
    a.step()
    assert a.version == 5 and a.counts["weights_applied"] == 1
    act5 = a.policy.act(obs, deterministic=True)
    for k in sd:
        assert torch.equal(a.policy.state_dict()[k], sd[k])
    # older or equal versions: ignored
    assert not a.offer_weights(wire.pack_weights(sd, 5)) and not a.offer_weights(wire.pack_weights(sd, 3))
    assert a.counts["weights_stale"] == 2
    # corrupt (bit flip), truncated, wrong shapes: rejected; the actor keeps acting with v5
    other = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
    good6 = wire.pack_weights(other, 6)
    bad = bytearray(good6)
    bad[len(bad) // 2] ^= 0x10
    assert not a.offer_weights(bytes(bad))
    assert not a.offer_weights(good6[:-10])
    k = next(k for k, v in sd.items() if v.ndim == 2)
    assert not a.offer_weights(wire.pack_weights({**sd, k: torch.zeros(2, 2)}, 7))
    assert a.counts["weights_rejected"] == 3 and "expects" in a.last_weights_error
    a.step()
    assert a.version == 5
    np.testing.assert_array_equal(a.policy.act(obs, deterministic=True), act5)
    # the same weights, valid now: applied
    assert a.offer_weights(good6)
    a.step()
    assert a.version == 6


def test_actor_follows_the_learners_architecture(tmp_path):
    a = make_actor()
    big = SACConfig(hidden=[24, 24], n_critics=2, batch_size=8)
    learner = LearnerCore(LearnerConfig(out=str(tmp_path / "l"), keys=KEYS, sac=big), a.obs_spec, a.low, a.high)
    assert a.offer_weights(learner.weights())
    a.step()
    assert a.version == 0 and a.policy.cfg.hidden == [24, 24]
    # weights for other observations: refused with the reason
    other = LearnerCore(LearnerConfig(out=str(tmp_path / "o"), keys=["joint_pos"], sac=SAC),
                        {"joint_pos": ((5,), np.float32)}, a.low, a.high)
    other.published = 10
    assert not a.offer_weights(other.weights())
    assert "observations" in a.last_weights_error


def test_label_episode_and_teleop_intervention():
    from robot_rl.spec import load_spec
    from robot_rl.teleop.devices import twist_si
    spec = load_spec("so101")
    twist = np.array([0.5, -0.25, 1.0, 0.0, 0.3, -0.6])
    lin, ang = twist_si(twist, spec)
    np.testing.assert_allclose(twist_to_action(lin, ang, 0.7, spec), np.r_[twist, 0.7], atol=1e-6)
    clock = Clock()
    src = TeleopIntervention(spec, stale_s=0.25, clock=clock)
    env = CountingEnv(length=50)
    a = ActorCore(ActorConfig(actor_id="h", keys=KEYS, sac=SAC, human="external", batch_size=100), env=env,
                  intervention=src)
    a.step()
    src.on_intervention(True)
    src.on_twist(lin, ang)
    a.step()
    clock.t = 1.0  # the twist went stale: zero motion, gripper from the observation
    a.step()
    src.on_gripper(1.0)
    a.step()
    src.on_intervention(False)
    a.step()
    a.label_episode(False)  # a human says: failure -> terminal, reward 0
    a.step()
    a.label_episode(True)
    a.step()
    a.pack_ready()
    b = [wire.unpack_transitions(p.blob)[0] for p in a.pending.values()]
    assert [len(x["action"]) for x in b] == [6, 1]
    acts, interv = b[0]["action"], b[0]["intervened"]
    assert interv.tolist() == [False, True, True, True, False, False]
    np.testing.assert_allclose(acts[1], np.r_[twist, 0.5], atol=1e-6)  # gripper: the observed 0.5
    np.testing.assert_allclose(acts[2], np.r_[np.zeros(6), 0.5], atol=1e-6)
    np.testing.assert_allclose(acts[3], np.r_[np.zeros(6), 1.0], atol=1e-6)
    assert b[0]["terminated"].tolist() == [False] * 5 + [True] and b[0]["reward"][-1] == 0.0
    assert b[1]["terminated"].tolist() == [True] and b[1]["reward"][0] == 1.0
    assert a.counts["episodes"] == 2 and a.counts["successes"] == 1 and a.counts["labels"] == 2
    assert format_ack("a#1", 3) == "a#1 3 ok" and parse_ack("a#1 3 rejected") == ("a#1", 3, False)
    with pytest.raises(ValueError):
        parse_ack("a#1 3")


# -- learner core --------------------------------------------------------------------------------
def buffer_transitions(buf):
    """{(obs joint_pos, action, next joint_pos)} of every valid row."""
    out = set()
    for i in np.flatnonzero(buf.valid):
        j = (i + 1) % buf.capacity
        out.add((tuple(buf.obs["joint_pos"][i]), tuple(np.round(buf.action[i], 5)), tuple(buf.obs["joint_pos"][j]),
                 bool(buf.terminated[i])))
    return out


def sent_transitions(blobs):
    out = set()
    for blob in blobs:
        b, _ = wire.unpack_transitions(blob)
        for i in range(len(b["action"])):
            out.add((tuple(b["obs.joint_pos"][i]), tuple(np.round(b["action"][i], 5)), tuple(b["next_obs.joint_pos"][i]),
                     bool(b["terminated"][i])))
    return out


def run_actor(a: ActorCore, steps: int) -> list[bytes]:
    for _ in range(steps):
        a.step()
    a.flush()
    a.pack_ready()
    return [p.blob for p in a.pending.values()]


def test_learner_dedupes_interleaved_actors_and_resumes(tmp_path):
    a0, a1 = make_actor("a0", 0.0, batch_size=3, length=7), make_actor("a1", 1.0, batch_size=4, length=9)
    b0, b1 = run_actor(a0, 20), run_actor(a1, 20)
    L = make_learner(tmp_path, a0)
    acks = []
    for i in range(max(len(b0), len(b1))):  # interleaved: episodes of two actors arrive mixed
        for blobs in (b0, b1):
            if i < len(blobs):
                acks.append(L.receive(blobs[i]))
    assert all(x.ok and not x.duplicate for x in acks)
    assert L.online.transitions == 40 and L.counts["transitions"] == 40
    # every transition exactly as sent, despite interleaving (no obs glued across actors)
    assert buffer_transitions(L.online) == sent_transitions(b0 + b1)
    # re-sent batches: acked again, not added again
    again = L.receive(b0[2])
    assert again.ok and again.duplicate and L.online.transitions == 40 and L.counts["duplicates"] == 1
    # corrupt: no ack (the actor re-sends); unfit: refused by name
    bad = bytearray(b1[0])
    bad[-5] ^= 0xFF
    assert L.receive(bytes(bad)) is None and L.counts["corrupt"] == 1
    wrong = wire.pack_transitions({**wire.unpack_transitions(b1[0])[0],
                                   "action": np.zeros((4, 6), np.float32)}, "a1#x", 99)
    nack = L.receive(wrong)
    assert nack is not None and not nack.ok and nack.seq == 99 and "expects 7" in nack.reason
    acked = L.acked()
    # crash without a checkpoint: a new learner on the same directory has every acked batch
    L2 = make_learner(tmp_path, a0)
    assert L2.acked() == acked and L2.online.transitions == 40
    assert buffer_transitions(L2.online) == buffer_transitions(L.online)
    assert L2.receive(b1[1]).duplicate  # acknowledged before the crash: not added twice
    assert L2.counts["resumed_batches"] == len(b0) + len(b1) and L2.counts["resumed_transitions"] == 40


def feed(a: ActorCore, L: LearnerCore, steps: int) -> None:
    """``steps`` actor steps, every batch delivered and acknowledged."""
    for blob in run_actor(a, steps):
        ack = L.receive(blob)
        a.on_ack(ack.source, ack.seq, ack.ok)


def test_learner_trains_at_the_update_to_data_ratio_and_versions_never_go_back(tmp_path):
    a = make_actor(batch_size=8, length=12, success_at=10)
    kw = dict(learning_starts=20, updates_per_transition=0.5, checkpoint_every=0)
    L = make_learner(tmp_path, a, **kw)
    feed(a, L, 16)
    assert L.train(100) == 0 and L.updates == 0  # 16 < learning_starts
    feed(a, L, 16)
    assert L.online.transitions == 32
    assert L.train(100) == int((32 - 20 + 1) * 0.5) == L.update_calls  # 6 update calls
    assert L.updates == 6 * SAC.utd
    L.checkpoint()
    ckpt_updates = L.updates
    feed(a, L, 40)
    assert L.train(100) == 20 and L.counts["checkpoints"] == 1
    w = L.weights()
    v_before = int(wire.weights_meta(w)["version"])
    assert v_before == L.updates > ckpt_updates
    # the learner dies; the restarted one loads the older checkpoint but publishes above v_before
    L2 = make_learner(tmp_path, a, **kw)
    assert L2.updates == ckpt_updates < v_before
    assert L2.online.transitions == L.online.transitions == 72 and L2.update_calls == 6
    _, v2 = wire.unpack_weights(L2.weights())
    assert v2 == v_before + 1
    assert a.offer_weights(w) and a.offer_weights(L2.weights())
    a.step()
    assert a.version == v2 + 1
    # the restarted learner catches up with the data it has: (72 - 20 + 1) * 0.5 update calls in all
    assert L2.train(100) == 26 - 6
    # a periodic checkpoint every N critic updates
    L3 = make_learner(tmp_path / "periodic", a, learning_starts=8, checkpoint_every=5)
    feed(a, L3, 16)
    L3.train(100)
    assert L3.counts["checkpoints"] == L3.updates // 5 >= 1


def test_learner_pretrains_with_iql_once_and_resumes_online_iql(tmp_path, monkeypatch):
    """The single-process recipe in the learner node: IQL on the demos at first start, then
    online IQL at the online actor step; a restart neither pretrains again nor falls back to SAC."""
    from robot_rl.rl import distributed
    from robot_rl.rl.offline import OfflineConfig
    from tests.policy_helpers import record_expert_store

    store = record_expert_store(tmp_path / "d.zarr", "reach", episodes=2)
    calls = {"pretrain": 0}
    orig = distributed.pretrain_iql

    def counting(*a, **k):
        calls["pretrain"] += 1
        return orig(*a, **k)

    monkeypatch.setattr(distributed, "pretrain_iql", counting)
    a = make_actor(batch_size=8, length=12, success_at=10)
    off = OfflineConfig(steps=20, online="iql", online_actor_lr=1e-5, wsrl=False)
    kw = dict(learning_starts=8, checkpoint_every=0, demos=str(store), offline=off)
    L = make_learner(tmp_path, a, **kw)
    assert calls["pretrain"] == 1 and L.iql is not None and L.counts["checkpoints"] == 1
    assert L.updates == 0 and L.iql.pi_opt.param_groups[0]["lr"] == 1e-5
    feed(a, L, 16)
    assert L.train(5) == 5 and L.updates == 5 * SAC.utd and "v_loss" in L.last_info  # IQL steps, not SAC
    L.checkpoint()
    value = {k: v.clone() for k, v in L.iql.value.state_dict().items()}
    L2 = make_learner(tmp_path, a, **kw)
    assert calls["pretrain"] == 1 and L2.iql is not None and L2.updates == L.updates
    assert all(torch.equal(value[k], v) for k, v in L2.iql.value.state_dict().items())
    assert L2.iql.pi_opt.param_groups[0]["lr"] == 1e-5
    with pytest.raises(ValueError, match="needs --demos"):
        make_learner(tmp_path / "nodemos", a, offline=OfflineConfig(steps=5, online="iql", wsrl=False))
    with pytest.raises(ValueError, match="single-process only"):
        make_learner(tmp_path / "wsrl", a, demos=str(store), offline=OfflineConfig(steps=5, wsrl=True))


def test_interventions_go_to_the_demo_buffer(tmp_path):
    a = make_actor(batch_size=5, length=100)
    L = make_learner(tmp_path, a)
    b = batch_of(5)
    b["intervened"][:] = [False, True, True, False, True]
    L.receive(wire.pack_transitions(b, "x#1", 0))
    assert L.demos is not None and L.demos.transitions == 3 and L.online.transitions == 5
    assert L.demos.intervened[L.demos.valid].all()
    # rebuilt the same way after a restart
    L2 = make_learner(tmp_path, a)
    assert L2.demos.transitions == 3


def test_status_is_json_friendly(tmp_path):
    a = make_actor()
    L = make_learner(tmp_path, a)
    for b in run_actor(a, 12):
        L.receive(b)
    ls, acs = json.loads(json.dumps(L.status())), json.loads(json.dumps(a.status()))
    assert ls["transitions"] == 12 and acs["steps"] == 12, (ls, acs)


def test_rl_graph():
    from robot_rl.ros.graphs import GRAPHS
    nodes = GRAPHS["rl"].nodes({"actors": "2", "human": "sim", "rate": "10", "out": "runs/x", "cameras": "front"})
    assert [n.name for n in nodes] == ["learner", "actor0", "actor1"]
    assert nodes[0].required and nodes[0].args[:3] == ("learner", "--out", "runs/x")
    assert all(n.respawn and not n.required for n in nodes[1:])
    assert nodes[2].args[:3] == ("actor", "--id", "a1") and "--rate" in nodes[2].args and "sim" in nodes[2].args
    assert "--offline" not in nodes[0].args  # no demos: plain SAC
    with_demos = GRAPHS["rl"].nodes({"demos": "data/d.zarr"})[0].args
    assert "--demos" in with_demos and "online=iql" in with_demos  # demos: the IQL recipe
    assert "--offline" not in GRAPHS["rl"].nodes({"demos": "data/d.zarr", "iql": "false"})[0].args
    with pytest.raises(KeyError, match="actors"):
        GRAPHS["rl"].nodes({"actors": "two"})
    with pytest.raises(KeyError, match="iql must be"):
        GRAPHS["rl"].nodes({"iql": "yes"})
    from robot_rl.ros.rl_nodes import build_parser
    for n in nodes + GRAPHS["rl"].nodes({"demos": "d.zarr"}):  # the arguments the graph passes are the ones the nodes take
        build_parser().parse_args(list(n.args))
