"""The inference node as a real process driving robot_node over DDS (loopback netns), with a
tiny untrained diffusion checkpoint built here."""
from __future__ import annotations

import time

import numpy as np
import pytest

from ros_helpers import TestClient, node_process, spawn
from robot_rl.spec import load_spec

SPEC = load_spec("so101")
KEYS = ["joint_pos", "gripper", "ee_pos", "object_state"]
DIAG = "inference_node: inference"


def tiny_policy(action_mode: str = "ee_delta"):
    import torch

    from robot_rl.policies.common.normalizer import Normalizer
    from robot_rl.policies.diffusion import DiffusionConfig, DiffusionPolicy
    rng = np.random.default_rng(0)
    n = 256
    lo, hi = np.array(SPEC.lower), np.array(SPEC.upper)
    data = {"joint_pos": rng.uniform(lo, hi, (n, 5)), "gripper": rng.uniform(0, 1, (n, 1)),
            "ee_pos": rng.uniform([0.1, -0.2, 0.0], [0.35, 0.2, 0.3], (n, 3)), "object_state": rng.normal(0, 0.1, (n, 10)),
            "action": np.c_[rng.uniform(-1, 1, (n, 6)), rng.uniform(0, 1, (n, 1))] if action_mode == "ee_delta"
            else np.c_[rng.uniform(lo, hi, (n, 5)), rng.uniform(0, 1, (n, 1))]}
    norm = Normalizer.fit(data)
    torch.manual_seed(0)
    cfg = DiffusionConfig(state_keys=KEYS, state_dims={"joint_pos": 5, "gripper": 1, "ee_pos": 3, "object_state": 10},
                          action_dim=7 if action_mode == "ee_delta" else 6, n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=[16, 32], feature_dim=16,
                          step_embed_dim=16, num_train_timesteps=50, num_inference_steps=4)
    return DiffusionPolicy(cfg, norm)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from robot_rl.policies.base import save_checkpoint
    from robot_rl.policies.export import export_onnx
    d = tmp_path_factory.mktemp("inference")
    pol = tiny_policy()
    meta = {"task": "pick_cube", "action_mode": "ee_delta"}
    cks = {"so101": save_checkpoint(pol, d / "so101", SPEC, meta),
           "arm6": save_checkpoint(pol, d / "arm6", load_spec("arm6"), meta),
           "joint_pos": save_checkpoint(tiny_policy("joint_pos"), d / "joint_pos", SPEC,
                                        {"task": "pick_cube", "action_mode": "joint_pos"})}
    export_onnx(cks["so101"], d / "onnx")  # the so101 checkpoint, run by onnxruntime
    return {**cks, "onnx": d / "onnx"}


proc = node_process  # (module, *args) -> a process of its own, terminated on the way out


class Client(TestClient):
    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Float32MultiArray

        from robot_rl.ros import topics
        super().__init__("test_inference_client")
        self.actions: list[tuple[float, object]] = []  # (receipt monotonic, msg)
        self.diag: list[dict] = []  # inference status: {"level", "message", values...}
        rq = topics.reliable_qos(100)
        self.sub_cmd = self.node.create_subscription(Float32MultiArray, topics.ACTION_COMMAND,
                                                     lambda m: self.actions.append((time.monotonic(), m)), rq)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, rq)

    def _on_diag(self, arr):
        for s in arr.status:
            if s.name == DIAG:
                lvl = s.level if isinstance(s.level, int) else int.from_bytes(s.level, "little")
                self.diag.append({"_level": lvl, "_message": s.message, **{kv.key: kv.value for kv in s.values}})

    def waiting_for(self, what: str) -> str:
        return f"; last diagnostics {self.diag[-1] if self.diag else None}"

    def set_param(self, name: str, value):
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value) if isinstance(value, str) else \
            ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value) if isinstance(value, bool) else \
            ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value) if isinstance(value, int) else \
            ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        r = self.call(SetParameters, "/inference_node/set_parameters", parameters=[Parameter(name=name, value=v)])
        return r.results[0]

    def get_param(self, name: str):
        from rcl_interfaces.srv import GetParameters
        v = self.call(GetParameters, "/inference_node/get_parameters", names=[name]).values[0]
        return v.string_value or v.integer_value or v.double_value or v.bool_value



@pytest.fixture
def client(ros_domain):
    c = Client()
    yield c
    c.close()


def in_limits(msg) -> bool:
    a = np.asarray(msg.data, np.float64)
    return (len(a) == 7 and np.all(np.isfinite(a)) and np.all(np.abs(a[:6]) <= 1.0 + 1e-6)
            and 0.0 - 1e-6 <= a[6] <= 1.0 + 1e-6)


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_inference_node_drives_the_twin_params_pause_stale_and_nan_holds(checkpoints, client):
    with proc("robot_rl.ros.robot_node", "--robot", "so101", "--task", "pick_cube", "--mode", "realtime",
              "--cameras", "none", "--rt-priority", "0", "--diag-hz", "0") as robot, \
         proc("robot_rl.ros.inference_node", str(checkpoints["so101"]), "--robot", "so101",
              "--stale-after", "0.3", "--diag-hz", "5") as inf:
        client.procs = [robot, inf]
        # (a) actions at about the control rate, diagnostics with latency numbers, not holding
        client.spin_until(lambda: client.diag and client.diag[-1].get("held") == "false"
                          and any("latency" in k for k in client.diag[-1]), 40.0, "the policy to run")
        n0, t0 = len(client.actions), time.monotonic()
        client.spin(2.0)
        rate = (len(client.actions) - n0) / (time.monotonic() - t0)
        assert 15.0 < rate < 25.0, rate  # so101: 20 Hz
        msgs = [m for _, m in client.actions]
        assert all(m.layout.dim[0].label == "ee_delta" for m in msgs)
        from robot_rl.ros.msgs import float_array_stamp
        st = float_array_stamp(msgs[-1])
        assert st is not None and abs(st - time.time()) < 1.0  # the observation's wall-clock stamp
        d = client.diag[-1]
        assert int(d["node/observations"]) > 20 and d["_level"] == 0, d

        # (b) a run-time parameter change is applied, a bad one refused and nothing changes
        r = client.set_param("mode", "cold")
        assert r.successful, r.reason
        assert client.get_param("mode") == "cold"
        r = client.set_param("mode", "bogus")
        assert not r.successful and "bogus" in r.reason
        assert client.get_param("mode") == "cold"
        r = client.set_param("warm_steps", 0)
        assert not r.successful and r.reason
        r = client.set_param("mode", 3)  # wrong type
        assert not r.successful
        n1 = len(client.actions)
        client.spin(1.0)
        assert len(client.actions) - n1 > 10 and client.diag[-1]["held"] == "false"  # still running, now cold
        assert client.diag[-1]["mode"] == "cold"

        # pause: publishes nothing (the robot node holds by itself), resume: runs again
        from std_srvs.srv import SetBool
        from robot_rl.ros import topics
        assert client.call(SetBool, topics.INFERENCE_PAUSE, data=True).success
        assert client.get_param("paused") is True
        client.spin_until(lambda: client.diag[-1]["held"] == "true" and "pause" in client.diag[-1]["reason"],
                          5.0, "the pause")
        client.spin(0.2)
        n_paused = len(client.actions)
        client.spin(0.5)
        assert len(client.actions) == n_paused, "a paused node publishes no command"
        assert client.call(SetBool, topics.INFERENCE_PAUSE, data=False).success
        client.spin_until(lambda: client.diag[-1]["held"] == "false", 10.0, "the resume")

        # (c) observations stop: stale hold, WARN, zero arm motion
        client.procs = [inf]
        robot.terminate()
        robot.wait(10)
        client.spin_until(lambda: client.diag[-1]["reason"] == "stale_observation"
                          and client.diag[-1]["held"] == "true", 5.0, "the stale hold")
        assert client.diag[-1]["_level"] == 1  # WARN
        t_stale = time.monotonic()
        client.spin(0.5)
        held = [m for t, m in client.actions if t > t_stale]
        assert len(held) >= 5
        assert all(np.all(np.asarray(m.data[:6]) == 0) for m in held)
        # NaN in an observation (here /object_state, published by this test in the robot node's
        # place): the observation is rejected, the node holds with the arm still
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float32MultiArray
        from robot_rl.ros import msgs as rmsgs
        from robot_rl.spec import load_spec
        spec = load_spec("so101")
        rq = topics.reliable_qos(10)
        pubs = (client.node.create_publisher(JointState, topics.JOINT_STATES, rq),
                client.node.create_publisher(PoseStamped, topics.EE_POSE, rq),
                client.node.create_publisher(Float32MultiArray, topics.OBJECT_STATE, rq))
        t_nan = time.monotonic()
        for _ in range(40):
            now = time.time()
            pubs[0].publish(rmsgs.joint_state(spec.joint_names + ["gripper"], np.zeros(spec.dof + 1),
                                              np.zeros(spec.dof + 1), now))
            pubs[1].publish(rmsgs.pose_stamped(np.array([0.2, 0.0, 0.1]), np.array([1.0, 0, 0, 0]), now))
            pubs[2].publish(rmsgs.stamped_float_array(np.full(10, np.nan), "object_state", now))
            client.spin(0.05)
            if client.diag and client.diag[-1]["reason"] == "bad_observation":
                break
        assert client.diag[-1]["reason"] == "bad_observation" and client.diag[-1]["held"] == "true", client.diag[-1]
        assert int(client.diag[-1]["rejected_obs"]) >= 1
        client.spin(0.3)
        held = [m for t, m in client.actions if t > t_nan]
        assert held and all(np.all(np.asarray(m.data[:6]) == 0) for m in held)
        # (e) every action published, running or holding, is finite and inside the limits
        assert all(in_limits(m) for _, m in client.actions)
        assert inf.poll() is None


def test_joint_pos_policy_publishes_chunks_as_joint_trajectories(checkpoints, client):
    from trajectory_msgs.msg import JointTrajectory

    from robot_rl.ros import msgs, topics
    trajs = []
    client.node.create_subscription(JointTrajectory, topics.JOINT_TRAJECTORY, trajs.append, topics.reliable_qos(50))
    with proc("robot_rl.ros.robot_node", "--robot", "so101", "--mode", "realtime", "--cameras", "none",
              "--rt-priority", "0", "--diag-hz", "0") as robot, \
         proc("robot_rl.ros.inference_node", str(checkpoints["joint_pos"]), "--robot", "so101", "--output",
              "trajectory", "--diag-hz", "5") as inf:
        client.procs = [robot, inf]
        chunks = lambda: [m for m in trajs if len(m.points) > 1]  # noqa: E731 (holds: one point, stamp 0)
        client.spin_until(lambda: len(chunks()) >= 3, 40.0, "joint trajectories")
        assert not client.actions  # chunks go to /joint_trajectory only
        lo, hi = np.array(SPEC.lower), np.array(SPEC.upper)
        for m in trajs:
            assert list(m.joint_names) == SPEC.joint_names + ["gripper"]
            t = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in m.points])
            assert np.all(np.diff(t) > 0) and t[0] == 0.0
            q = np.array([p.positions for p in m.points])
            assert np.all(np.isfinite(q)) and np.all(q[:, :5] >= lo - 1e-6) and np.all(q[:, :5] <= hi + 1e-6)
            assert np.all((q[:, 5] >= 0) & (q[:, 5] <= 1))
        for m in chunks():
            assert abs(msgs.from_time(m.header.stamp) - time.time()) < 2.0  # timed from the observation


def test_refuses_another_robots_checkpoint_missing_checkpoint_and_bad_settings(checkpoints, ros_domain, tmp_path):
    procs = []
    for args, word in (([str(checkpoints["arm6"]), "--robot", "so101"], "arm6"),
                       ([str(tmp_path / "nope"), "--robot", "so101"], "nope"),
                       ([str(checkpoints["so101"]), "--robot", "so101", "--output", "trajectory"], "joint_pos"),
                       ([str(checkpoints["so101"]), "--ros-args", "-p", "warm_step:=2"], "warm_step"),
                       ([str(checkpoints["so101"]), "--ros-args", "-p", "warm_steps:=0"], "warm_steps"),
                       ([str(checkpoints["onnx"]), "--robot", "arm6"], "arm6"),
                       ([str(checkpoints["onnx"]), "--backend", "torch"], "is an ONNX export"),
                       ([str(checkpoints["onnx"]), "--mode", "rtc"], "rtc")):
        procs.append((args, word, spawn("robot_rl.ros.inference_node", *args)))  # side by side: faster
    for args, word, p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("inference_node: ") and word in lines[0], err


def test_observation_assembler_groups_by_stamp():
    from robot_rl.ros.inference_node import ObservationAssembler
    a = ObservationAssembler(KEYS, max_pending=3)
    assert a.parts == {"joint_states", "ee_pose", "object_state"}
    js = {"joint_pos": np.zeros(5), "gripper": np.zeros(1)}
    assert a.add("joint_states", 10, js) is None
    assert a.add("ee_pose", 20, {"ee_pos": np.zeros(3), "ee_quat": np.zeros(4)}) is None
    assert a.add("object_state", 10, {"object_state": np.ones(10)}) is None
    obs = a.add("ee_pose", 10, {"ee_pos": np.ones(3), "ee_quat": np.zeros(4)})
    assert obs is not None and set(obs) == set(KEYS) and obs["ee_pos"][0] == 1  # only the policy's keys
    assert a.add("joint_states", 5, js) is None and a.counts["late_dropped"] == 1  # older than the last one
    a.add("joint_states", 20, js)
    assert a.add("object_state", 20, {"object_state": np.ones(10)})["object_state"].shape == (10,)
    with pytest.raises(ValueError, match="no robot_rl topic"):
        ObservationAssembler(["joint_pos", "tactile"])
    assert "image_front" in ObservationAssembler(["joint_pos", "image_front"]).parts


def test_observation_assembler_takes_each_cameras_newest_frame_on_a_robot():
    """Camera nodes stamp their own capture times: a step takes every camera's newest frame
    within image_max_age_s of its joint-state stamp, and waits for one that is older."""
    from robot_rl.ros.inference_node import ObservationAssembler
    keys = ["joint_pos", "image_front", "image_wrist"]
    a = ObservationAssembler(keys, latest_images=True, image_max_age_s=0.1)
    ms = 1_000_000
    js = {"joint_pos": np.zeros(5), "gripper": np.zeros(1)}
    assert a.add("image_front", 1000 * ms, {"image_front": 1}) is None
    assert a.add("joint_states", 1010 * ms, js) is None  # waits for the wrist camera
    obs = a.add("image_wrist", 1003 * ms, {"image_wrist": 2})
    assert obs is not None and (obs["image_front"], obs["image_wrist"]) == (1, 2)
    assert a.add("joint_states", 1200 * ms, js) is None and a.counts["frames_too_old"] >= 1  # frames 200 ms old
    a.add("image_front", 1190 * ms, {"image_front": 3})
    obs = a.add("image_wrist", 1195 * ms, {"image_wrist": 4})
    assert (obs["image_front"], obs["image_wrist"]) == (3, 4)
    # the twin's robot node stamps frames with the step: grouped by exact stamp (the default)
    b = ObservationAssembler(keys)
    assert b.add("joint_states", 5, js) is None and b.add("image_front", 5, {"image_front": 1}) is None
    assert b.add("image_wrist", 6, {"image_wrist": 2}) is None


def test_deploy_graph():
    from robot_rl.ros.graphs import GRAPHS
    nodes = GRAPHS["deploy"].nodes({"checkpoint": "ck", "mode": "rtc", "rate": "30"})
    robot, inf = nodes
    assert robot.module == "robot_rl.ros.robot_node" and "realtime" in robot.args
    assert robot.args[robot.args.index("--cameras") + 1] == "none"
    assert inf.module == "robot_rl.ros.inference_node" and inf.args[0] == "ck"
    assert inf.args[inf.args.index("--mode") + 1] == "rtc" and inf.args[inf.args.index("--rate") + 1] == "30"
    with pytest.raises(KeyError, match="checkpoint"):
        GRAPHS["deploy"].nodes({})


def test_deploy_driver_runs_episodes_through_the_graph(checkpoints, ros_domain, tmp_path):
    from robot_rl.ros.deploy import format_summary, run_deploy_episodes
    r = run_deploy_episodes(checkpoints["so101"], "pick_cube", episodes=2, seed=7, timeout_steps=8,
                            params={"mode": "cold"}, log_dir=tmp_path)
    assert r["episodes"] == 2 and [o["seed"] for o in r["outcomes"]] == [7, 8]
    assert all(o["success"] or o["steps"] >= 8 for o in r["outcomes"])  # an untrained policy: timeouts
    assert 0.0 <= r["success_rate"] <= 1.0
    assert set(r["latency_ms"]) >= {"p50", "p95", "p99", "max"} and r["queries"] > 0
    assert r["diagnostics"]["mode"] == "cold" and r["nfe_per_query"] == 4.0  # the tiny policy's 4 DDIM steps
    assert "[inference]" in (tmp_path / "deploy.log").read_text() and (tmp_path / "deploy.json").exists()
    assert "success" in format_summary(r)


@pytest.mark.parametrize("which", ["so101", "onnx"])
def test_inference_node_names_the_keys_its_robot_does_not_provide(checkpoints, ros_domain, client_factory, which):
    """A checkpoint (or its ONNX export) that reads object_state on a robot that publishes
    joints and pose but no object state (a real arm): one line naming the key, the hint to
    train a deployable policy, exit code 2."""
    from robot_rl.ros import msgs, topics
    from sensor_msgs.msg import JointState
    from geometry_msgs.msg import PoseStamped
    c = client_factory()  # stands in for a hardware robot node: joint states and the pose only
    pub_js = c.node.create_publisher(JointState, topics.JOINT_STATES, topics.reliable_qos(10))
    pub_ee = c.node.create_publisher(PoseStamped, topics.EE_POSE, topics.reliable_qos(10))
    p = spawn("robot_rl.ros.inference_node", str(checkpoints[which]), "--robot", "so101", "--check-robot", "3")
    try:
        end = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < end:
            pub_js.publish(msgs.joint_state(SPEC.joint_names + ["gripper"], list(SPEC.home) + [0.0]))
            pub_ee.publish(msgs.pose_stamped([0.2, 0.0, 0.1], [1.0, 0.0, 0.0, 0.0], time.time(), "base"))
            c.spin(0.05)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2, (out, err)
    line = [ln for ln in err.splitlines() if ln.startswith("inference_node: ")]
    assert len(line) == 1 and "['object_state']" in line[0] and "/object_state" in line[0], err
    assert "deployable" in line[0] and "joint_pos" not in line[0]
