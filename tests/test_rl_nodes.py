"""The online-RL learner and actor nodes as real processes over DDS (loopback netns, a domain id
per test): two actors feed one learner, an actor restarts, the learner is killed with SIGKILL
and restarted from its directory, corrupt weights are rejected, a teleop device intervenes."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import spawn

MOD = "robot_rl.ros.rl_nodes"
SAC = ["--sac", "hidden=[32,32]", "--sac", "n_critics=2", "--sac", "batch_size=32", "--sac", "utd=1"]
LEARNER = ["learner", *SAC, "--learning-starts", "64", "--checkpoint-every", "40", "--publish-every", "0.5",
           "--diag-hz", "4"]
ACTOR = ["actor", *SAC, "--rate", "100", "--batch", "16", "--diag-hz", "4", "--resend-after", "1.0"]


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in started:
        try:
            out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        print(f"---- {' '.join(p.args[3:6])} (rc {p.returncode}) ----\n{out[-2000:]}\n{err[-3000:]}")


class Client:
    """The test's own rclpy context: diagnostics by node, acks, and a weights publisher."""

    def __init__(self, procs):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String, UInt8MultiArray

        from robot_rl.rl.distributed import parse_ack
        from robot_rl.ros import topics
        self.parse_ack = parse_ack
        self.procs = procs
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("test_rl_client", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.diag: dict[str, dict[str, str]] = {}  # latest status per node name
        self.acks: list[tuple[str, int, bool]] = []
        rq = topics.reliable_qos(100)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, rq)
        self.sub_ack = self.node.create_subscription(String, topics.RL_ACK, self._on_ack, rq)
        self.pub_weights = self.node.create_publisher(UInt8MultiArray, topics.RL_WEIGHTS, topics.latched_qos(1))

    def _on_diag(self, arr):
        for s in arr.status:
            name, _, kind = s.name.partition(": ")
            if kind in ("rl_actor", "rl_learner"):
                self.diag[name] = {kv.key: kv.value for kv in s.values}

    def _on_ack(self, msg):
        self.acks.append(self.parse_ack(msg.data))

    def val(self, node: str, key: str, default=None):
        v = self.diag.get(node, {}).get(key)
        return default if v is None else int(v) if v.lstrip("-").isdigit() else v

    def spin_until(self, pred, timeout: float, what: str, alive=True):
        end = time.monotonic() + timeout
        while not pred():
            if alive:
                for p in self.procs:
                    if p.poll() is not None and p.returncode not in (0, -9):
                        raise AssertionError(f"{p.args[3:6]} exited (rc {p.returncode}) while waiting for {what}")
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; diagnostics {self.diag}")
            self.ex.spin_once(timeout_sec=0.02)

    def spin(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.02)

    def publish_weights(self, blob: bytes):
        from robot_rl.ros.rl_nodes import _import_ros, bytes_msg
        _import_ros()
        self.pub_weights.publish(bytes_msg(blob))

    def close(self):
        self.node.destroy_node()
        self.ex.shutdown()
        self.ctx.try_shutdown()


@pytest.fixture
def client(ros_domain, procs):
    c = Client(procs)
    yield c
    c.close()


def start(procs, *args) -> subprocess.Popen:
    p = spawn(MOD, *args, env={"MUJOCO_GL": "egl"})
    procs.append(p)
    return p


def segments(out: Path, first: int | None = None) -> list[dict]:
    """Metadata (source, seq, n) of the replay log segments on disk, oldest first."""
    from safetensors import safe_open
    rows = []
    for p in sorted((out / "replay").glob("seg-*.safetensors"))[:first]:
        with safe_open(str(p), "np") as f:
            m = f.metadata()
            rows.append({"source": m["source"], "seq": int(m["source_seq"]), "n": int(f.get_slice("action").get_shape()[0])})
    return rows


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_two_actors_feed_one_learner_and_an_actor_restarts(client, procs, tmp_path):
    out = tmp_path / "learner"
    learner = start(procs, *LEARNER, "--out", str(out))
    start(procs, *ACTOR, "--id", "a0")
    a1 = start(procs, *ACTOR, "--id", "a1")
    c = client
    c.spin_until(lambda: c.val("rl_learner", "sources", 0) >= 2 and c.val("rl_learner", "transitions", 0) >= 300
                 and c.val("rl_learner", "updates", 0) > 0, 90, "the learner to train on both actors")
    # both actors are acknowledged, and act with the learner's weights
    c.spin_until(lambda: all(c.val(f"rl_actor_{a}", "acked_transitions", 0) > 0
                             and c.val(f"rl_actor_{a}", "weights_version", -1) > 0 for a in ("a0", "a1")),
                 30, "both actors acknowledged and on trained weights")
    # the acks on /rl/ack name both actors (this client's subscription may match the learner's
    # writer after the first acks went out: wait for ones it sees, as for any data)
    c.spin_until(lambda: {s.split("#")[0] for s, _, ok in c.acks if ok} == {"a0", "a1"}, 30,
                 "this client to see acks for both actors on /rl/ack")
    assert c.val("rl_learner", "corrupt") == 0 and c.val("rl_learner", "rejected") == 0
    old_source = c.val("rl_actor_a1", "source")
    # actor a1 stops (SIGTERM) and starts again: the learner keeps running and takes the new run
    a1.send_signal(signal.SIGTERM)
    assert a1.wait(timeout=20) == 0
    before = c.val("rl_learner", "transitions")
    start(procs, *ACTOR, "--id", "a1")
    c.spin_until(lambda: c.val("rl_actor_a1", "source") != old_source
                 and c.val("rl_actor_a1", "acked_transitions", 0) > 0, 60, "the restarted a1 to be acknowledged")
    # the learner's latched weights reach the new actor (transient local), trained ones included;
    # its acks can come first (another topic's discovery), and its diagnostics tick at 2 Hz
    c.spin_until(lambda: c.val("rl_actor_a1", "weights_version", -1) >= 0, 15,
                 "the restarted a1 to receive the learner's latched weights")
    c.spin_until(lambda: c.val("rl_learner", "sources", 0) >= 3 and c.val("rl_learner", "transitions") > before + 100,
                 30, "the learner to take the restarted actor's transitions")
    assert learner.poll() is None


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_learner_killed_and_restarted_loses_no_acknowledged_transition(client, procs, tmp_path):
    out = tmp_path / "learner"
    learner = start(procs, *LEARNER, "--out", str(out))
    start(procs, *ACTOR, "--id", "a0")
    c = client
    c.spin_until(lambda: (out / "learner.safetensors").exists() and len(c.acks) >= 10
                 and c.val("rl_actor_a0", "weights_version", -1) > 0, 90, "acks, a checkpoint and trained weights")
    v_before = c.val("rl_actor_a0", "weights_version")
    learner.send_signal(signal.SIGKILL)
    learner.wait(timeout=10)
    c.spin(1.0)  # acks already on their way
    c.diag.pop("rl_learner", None)
    acked = {(s, q) for s, q, ok in c.acks if ok}
    n_acks = len(c.acks)
    source = c.val("rl_actor_a0", "source")
    c.spin(0.5)  # the actor's next diagnostics
    actor_acked = c.val("rl_actor_a0", "acked_batches")  # exact: no ack can arrive any more
    # the learner is gone: the actor keeps acting, batches pile up unacknowledged
    steps0 = c.val("rl_actor_a0", "steps")
    c.spin_until(lambda: c.val("rl_actor_a0", "steps") >= steps0 + 150 and c.val("rl_actor_a0", "pending_batches") >= 3,
                 30, "the actor to keep acting while the learner is down")
    assert len(c.acks) == n_acks
    # restart with the same directory
    start(procs, *LEARNER, "--out", str(out))
    c.spin_until(lambda: c.val("rl_learner", "resumed_batches") is not None, 60, "the restarted learner")
    resumed_b, resumed_t = c.val("rl_learner", "resumed_batches"), c.val("rl_learner", "resumed_transitions")
    log = segments(out, resumed_b)
    assert len(log) == resumed_b and sum(r["n"] for r in log) == resumed_t
    assert acked <= {(r["source"], r["seq"]) for r in log}, "an acknowledged batch is missing after the restart"
    assert sum(r["source"] == source for r in log) >= actor_acked > 0
    # the actor gets newer weights, its backlog is delivered and acknowledged, nothing dropped
    c.spin_until(lambda: c.val("rl_actor_a0", "weights_version", -1) > v_before, 60, "weights newer than before the kill")
    c.spin_until(lambda: c.val("rl_actor_a0", "pending_batches", 99) <= 2
                 and c.val("rl_learner", "transitions", 0) > resumed_t, 60, "the backlog to be acknowledged")
    assert c.val("rl_actor_a0", "dropped_batches") == 0
    # every transition the actor produced is in the learner exactly once (duplicates acked, not re-added)
    final = segments(out)
    keys = [(r["source"], r["seq"]) for r in final]
    assert len(keys) == len(set(keys))


def test_actor_rejects_bad_weights_and_follows_a_teleop_device(client, procs, tmp_path):
    import torch
    from geometry_msgs.msg import TwistStamped
    from std_msgs.msg import Bool, Float64, String

    from robot_rl.rl import wire
    from robot_rl.rl.loop import RLConfig, env_obs_spec, make_rl_env, obs_keys
    from robot_rl.rl.sac import PolicyNet, SACConfig
    from robot_rl.ros import topics
    c = client
    start(procs, *ACTOR, "--id", "h0", "--human", "teleop")
    cfg = RLConfig()
    env = make_rl_env(cfg)
    pol = PolicyNet(env_obs_spec(env, obs_keys(cfg)), env.action_space.low, env.action_space.high,
                    SACConfig(hidden=[32, 32], n_critics=2))
    env.close()
    sd = {k: v.clone() for k, v in pol.state_dict().items()}
    a = "rl_actor_h0"
    c.spin_until(lambda: c.val(a, "steps", 0) > 20, 60, "the actor to run without a learner")
    assert c.val(a, "weights_version") == -1  # its own initial policy until weights arrive

    def weights_then(blob, pred, what):
        c.publish_weights(blob)
        c.spin_until(pred, 20, what)

    weights_then(wire.pack_weights(sd, 5), lambda: c.val(a, "weights_version") == 5, "v5 applied")
    good = wire.pack_weights({k: v * 0.5 for k, v in sd.items()}, 9)
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0x04
    weights_then(bytes(flipped), lambda: c.val(a, "weights_rejected") == 1, "a bit-flipped v9 rejected")
    from safetensors.torch import save
    k = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim == 2)
    nan = wire._seal(save({**sd, k: torch.full_like(sd[k], float("nan"))},
                          {"kind": wire.KIND_WEIGHTS, "format": wire.FORMAT, "version": "10",
                           "sha256": wire.PLACEHOLDER.decode()}))
    weights_then(nan, lambda: c.val(a, "weights_rejected") == 2, "NaN weights rejected")
    weights_then(wire.pack_weights({**sd, k: torch.zeros(3, 3)}, 11), lambda: c.val(a, "weights_rejected") == 3,
                 "weights of another shape rejected")
    weights_then(wire.pack_weights(sd, 4), lambda: c.val(a, "weights_stale") == 1, "an older version ignored")
    steps = c.val(a, "steps")
    c.spin_until(lambda: c.val(a, "steps") > steps + 50, 20, "the actor to keep acting")
    assert c.val(a, "weights_version") == 5 and c.val(a, "weights_applied") == 1
    weights_then(good, lambda: c.val(a, "weights_version") == 9, "the intact v9 applied")
    # teleop: while /teleop/intervention is on, steps are the device's and tagged intervened
    rq = topics.reliable_qos(10)
    pub_i = c.node.create_publisher(Bool, topics.TELEOP_INTERVENTION, rq)
    pub_t = c.node.create_publisher(TwistStamped, topics.EE_DELTA_COMMAND, rq)
    pub_g = c.node.create_publisher(Float64, topics.GRIPPER_COMMAND, rq)
    pub_e = c.node.create_publisher(String, topics.TELEOP_EVENT, rq)
    c.spin_until(lambda: pub_i.get_subscription_count() and pub_e.get_subscription_count(), 20, "teleop subscribers")
    assert c.val(a, "intervened_steps") == 0
    pub_i.publish(Bool(data=True))
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        tw = TwistStamped()
        tw.twist.linear.z = 0.05
        pub_t.publish(tw)
        pub_g.publish(Float64(data=1.0))
        c.spin(0.02)
    c.spin_until(lambda: c.val(a, "intervened_steps") >= 50, 20, "intervened steps")
    pub_i.publish(Bool(data=False))
    c.spin(0.5)
    n = c.val(a, "intervened_steps")
    steps = c.val(a, "steps")
    c.spin_until(lambda: c.val(a, "steps") > steps + 50, 20, "steps after the takeover")
    assert c.val(a, "intervened_steps") == n  # the policy is back in control
    episodes = c.val(a, "episodes")
    pub_e.publish(String(data="success"))
    c.spin_until(lambda: c.val(a, "labels") == 1, 20, "the episode labelled")
    assert c.val(a, "episodes") >= episodes + 1 and c.val(a, "successes") >= 1
    assert np.isfinite(float(c.val(a, "loop/rate_hz")))


def test_cli_errors_are_one_line(ros_domain, tmp_path, capsys):
    from robot_rl.ros.rl_nodes import main
    cases = [(["learner", "--out", str(tmp_path / "l"), "--keys", "joint_pos,nope"], "no observation keys ['nope']"),
             (["learner", "--out", str(tmp_path / "l"), "--sac", "hiden=[3]"], "unknown SAC setting(s) ['hiden']"),
             (["learner", "--out", str(tmp_path / "l"), "--offline", "stepz=1"], "unknown offline setting(s) ['stepz']"),
             (["learner", "--out", str(tmp_path / "l2"), "--offline", "steps=5"], "offline.steps > 0 needs --demos"),
             (["actor", "--id", "a 0"], "actor id 'a 0'")]
    for args, msg in cases:
        assert main(["rl_nodes", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err
