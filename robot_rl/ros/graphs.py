"""Node graphs as data: which processes a graph starts and with which arguments.

Used by ``robot-rl launch GRAPH key=value ...`` (our own supervisor, works with the PyPI
rclpy wheels) and by ``launch/*.launch.py`` (``ros2 launch robot_rl GRAPH.launch.py``
on machines with ROS 2 installed). No rclpy import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class NodeDef:
    name: str
    module: str  # run as ``python -m module``
    args: tuple[str, ...] = ()
    required: bool = True  # when it exits, the graph shuts down
    respawn: bool = False  # restart it when it dies (not for required nodes)
    start_delay_s: float = 0.0


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    params: dict[str, str]  # defaults; overridden by key=value
    build: Callable[[dict[str, str]], list[NodeDef]] = field(repr=False)

    def nodes(self, overrides: dict[str, str] | None = None) -> list[NodeDef]:
        p = dict(self.params)
        unknown = set(overrides or {}) - set(p)
        if unknown:
            raise KeyError(f"graph {self.name!r} has no parameter(s) {sorted(unknown)}; "
                           f"parameters: {', '.join(f'{k}={v}' for k, v in p.items())}")
        p.update(overrides or {})
        return self.build(p)


def _hardware(p: dict[str, str]) -> bool:
    return p.get("driver", "sim") not in ("", "sim")


def _robot(p: dict[str, str], mode: str) -> NodeDef:
    if _hardware(p):  # a real (or virtual) arm: cameras are camera nodes of their own
        if not p.get("port") and p["driver"] in ("feetech", "dynamixel"):
            raise KeyError(f"driver={p['driver']} needs port=... (robot-rl find-port, or what robot-rl virtual so101 "
                           f"printed) and calibration=FILE (robot-rl calibrate)")
        args = ["--robot", p["robot"], "--driver", p["driver"], "--mode", "realtime", "--cameras", "none"]
        for key, flag in (("port", "--port"), ("calibration", "--calibration")):
            if p.get(key):
                args += [flag, p[key]]
    else:
        args = ["--robot", p["robot"], "--task", p["task"], "--mode", mode, "--cameras", p["cameras"],
                "--image-size", p["image_size"]]
    if p.get("rate"):
        args += ["--rate", p["rate"]]
    if mode == "lockstep":
        args += ["--image-qos", "reliable"]
    return NodeDef("robot", "robot_rl.ros.robot_node", tuple(args))


def _camera_nodes(p: dict[str, str]) -> tuple[list[NodeDef], list[str]]:
    """Hardware graphs: one camera node per `sources` entry (device, file or URL), named by
    `cameras`; returns the nodes and the camera names."""
    sources = [x.strip() for x in p.get("sources", "").split(",") if x.strip()]
    cams = [c.strip() for c in p["cameras"].split(",") if c.strip() and c.strip() != "none"]
    if not sources:
        return [], []
    if len(sources) != len(cams):
        raise KeyError(f"{len(sources)} camera sources for cameras={p['cameras']!r}: give one name per source")
    return [NodeDef(f"camera_{c}", "robot_rl.ros.camera_node", ("--name", c, "--source", src), required=False)
            for c, src in zip(cams, sources)], cams


def _teleop_record_hardware(p: dict[str, str]) -> list[NodeDef]:
    """A real (or virtual) arm: robot node on a hardware driver in joint_pos, camera nodes,
    a leader arm (or another human device), the recorder on the `hardware` contract."""
    if p["device"] == "expert":
        raise KeyError("driver=feetech|dynamixel|ros2_control records a person: pass device=leader (with "
                       "leader.port= and leader.calibration=), keyboard / gamepad / spacemouse, or device=none "
                       "to run the teleop node in a terminal of your own")
    robot = _robot(p, "realtime")
    leader = p["device"] in ("leader", "none")  # none: a leader's teleop node runs in another terminal
    if leader:  # the follower takes the leader's joint positions; the recorded action is them
        robot = NodeDef(robot.name, robot.module, robot.args + ("--action-mode", "joint_pos"))
    cams, names = _camera_nodes(p)
    rate = p.get("rate") or ""
    teleop = ["--device", p["device"], "--robot", p["robot"], "--task", p["task"], "--mode", "realtime",
              "--episodes", p["episodes"], "--seed", p["seed"]]
    if rate:
        teleop += ["--rate", rate]
    if p["device"] == "leader":
        if not p.get("leader.port"):
            raise KeyError("device=leader needs leader.port=... and leader.calibration=FILE")
        teleop += ["--leader-port", p["leader.port"], "--events", p["events"]]
        if p.get("leader.calibration"):
            teleop += ["--leader-calibration", p["leader.calibration"]]
    contract = p["contract"] if p["contract"] != "sim" else "hardware"
    rec = ["--contract", contract, "--out", p["out"], "--robot", p["robot"], "--task", p["task"],
           "--cameras", ",".join(names) or "none", "--mode", "realtime"]
    if leader:
        rec += ["--action-mode", "joint_pos"]
    if rate:
        rec += ["--fps", rate]
    if p.get("image_size") and p["image_size"] != "96":
        rec += ["--image-size", p["image_size"]]
    if p["bag"]:
        rec += ["--bag", p["bag"]]
    nodes = [robot, *cams, NodeDef("recorder", "robot_rl.ros.recorder_node", tuple(rec), required=False)]
    if p["device"] != "none":
        nodes.append(NodeDef("teleop", "robot_rl.ros.teleop_node", tuple(teleop), start_delay_s=2.0))
    return nodes


def _teleop_record(p: dict[str, str]) -> list[NodeDef]:
    if _hardware(p):
        return _teleop_record_hardware(p)
    mode = p["mode"] or ("lockstep" if p["device"] == "expert" else "realtime")
    teleop = ["--device", p["device"], "--robot", p["robot"], "--task", p["task"], "--mode", mode,
              "--episodes", p["episodes"], "--seed", p["seed"]]
    if p.get("rate"):
        teleop += ["--rate", p["rate"]]
    rec = ["--contract", p["contract"], "--out", p["out"], "--robot", p["robot"], "--task", p["task"],
           "--cameras", p["cameras"], "--image-size", p["image_size"]]
    if p.get("rate"):
        rec += ["--fps", p["rate"]]
    if p["bag"]:
        rec += ["--bag", p["bag"]]
    return [
        _robot(p, mode),
        # the recorder must be up before the first episode starts: it is not required, the
        # teleop node ending (all episodes done) ends the graph, the recorder then closes cleanly
        NodeDef("recorder", "robot_rl.ros.recorder_node", tuple(rec), required=False),
        NodeDef("teleop", "robot_rl.ros.teleop_node", tuple(teleop), start_delay_s=1.0),
    ]


def _replay(p: dict[str, str]) -> list[NodeDef]:
    if not p["bag"]:
        raise KeyError("graph 'replay' needs bag=PATH")
    args = [p["bag"], "--rate", p["rate"] or "1.0"]
    if p["loop"].lower() in ("1", "true", "yes"):
        args.append("--loop")
    if p["clock"].lower() in ("1", "true", "yes"):
        args.append("--clock")
    if p["topics"]:
        args += ["--topics", p["topics"]]
    if not p["out"]:
        return [NodeDef("player", "robot_rl.ros.bag_player", tuple(args))]
    rec = ["--contract", p["contract"], "--out", p["out"], "--robot", p["robot"], "--task", p["task"],
           "--cameras", p["cameras"], "--image-size", p["image_size"]]
    if p["clock"].lower() in ("1", "true", "yes"):
        rec.append("--use-sim-time")  # the bag's stamps, not this machine's clock
    # the recorder subscribes first; the player starts once it is up and plays only once
    # every played topic has a (matched) subscriber: a message published before DDS discovery
    # matched the recorder -- the first start event -- would be lost
    args += ["--wait-subscribers", "10"]
    return [NodeDef("recorder", "robot_rl.ros.recorder_node", tuple(rec), required=False),
            NodeDef("player", "robot_rl.ros.bag_player", tuple(args), start_delay_s=3.0)]


def _sim(p: dict[str, str]) -> list[NodeDef]:
    return [_robot(p, p["mode"] or "realtime")]


_COMMON = {"robot": "so101", "task": "pick_cube", "cameras": "front,wrist", "image_size": "96", "rate": ""}
# hardware drivers (docs/hardware.md): driver=feetech port=/dev/ttyACM0 calibration=FILE
_HW = {"driver": "sim", "port": "", "calibration": "", "sources": ""}

GRAPHS: dict[str, Graph] = {
    "teleop_record": Graph(
        "teleop_record",
        "robot node (twin) + teleop device + recorder: record demonstrations into an episode store "
        "(and an mcap bag)",
        {**_COMMON, **_HW, "device": "expert", "mode": "", "episodes": "10", "seed": "0", "contract": "sim",
         "out": "data/teleop.zarr", "bag": "", "leader.port": "", "leader.calibration": "", "events": "keyboard"},
        _teleop_record),
    "replay": Graph(
        "replay", "play a rosbag2 onto its topics (optionally re-recording it into an episode store)",
        {**_COMMON, "bag": "", "rate": "1.0", "loop": "false", "clock": "true", "topics": "", "out": "",
         "contract": "sim"},
        _replay),
    "sim": Graph("sim", "the twin's robot node alone (realtime, fast or lockstep)",
                 {**_COMMON, "mode": "realtime"}, _sim),
}


def _deploy(p: dict[str, str]) -> list[NodeDef]:
    """The realtime twin (no cameras unless asked) + the inference node driving it."""
    if not p["checkpoint"]:
        raise KeyError("graph 'deploy' needs checkpoint=PATH")
    robot = _robot(p, "realtime")
    extra = [] if _hardware(p) else ["--seed", p["seed"]]
    if p["action_mode"]:
        extra += ["--action-mode", p["action_mode"]]  # the robot node's /action is then in the policy's mode
    robot = NodeDef(robot.name, robot.module, robot.args + tuple(extra))
    inf = [p["checkpoint"], "--robot", p["robot"], "--mode", p["mode"], "--execution", p["execution"],
           "--worker", p["worker"], "--output", p["output"]]
    if p["action_mode"]:
        inf += ["--action-mode", p["action_mode"]]
    if p.get("rate"):
        inf += ["--rate", p["rate"]]
    if p["stale_after"]:
        inf += ["--stale-after", p["stale_after"]]
    cams, names = _camera_nodes(p) if _hardware(p) else ([], [])
    if names:  # an image policy on hardware: the camera nodes' JPEG streams
        inf += ["--image-transport", "compressed"]
    if p["params"]:  # "warm_steps=4,k_prime=50": the inference node's ROS parameters at start-up
        inf += ["--ros-args"]
        for kv in p["params"].split(","):
            k, sep, v = kv.strip().partition("=")
            if not sep or not k:
                raise KeyError(f"graph 'deploy': params must be name=value[,name=value...], got {p['params']!r}")
            inf += ["-p", f"{k}:={v}"]
    # the inference node starts after the robot node (it holds until observations flow anyway)
    return [robot, *cams, NodeDef("inference", "robot_rl.ros.inference_node", tuple(inf), start_delay_s=0.5)]


GRAPHS["deploy"] = Graph(
    "deploy", "realtime twin + inference node: a trained policy drives the robot (robot_rl.ros.deploy runs "
    "episodes against it)",
    {**_COMMON, **_HW, "cameras": "none", "checkpoint": "", "mode": "warm", "execution": "async", "worker": "thread",
     "output": "action", "action_mode": "", "stale_after": "", "params": "", "seed": "0"},
    _deploy)


def _rl(p: dict[str, str]) -> list[NodeDef]:
    """Online RL over ROS 2: one learner + ``actors`` actor processes on the twin."""
    try:
        n = int(p["actors"])
    except ValueError:
        raise KeyError(f"graph 'rl': actors must be an integer, got {p['actors']!r}") from None
    if n < 1:
        raise KeyError("graph 'rl': actors must be >= 1")
    obs = ["--task", p["task"], "--robot", p["robot"], "--cameras", p["cameras"], "--image-size", p["image_size"]]
    learner = ["learner", "--out", p["out"], *obs]
    if p["demos"]:
        learner += ["--demos", p["demos"]]
    iql = p.get("iql", "auto")
    if iql not in ("auto", "true", "false"):
        raise KeyError(f"graph 'rl': iql must be auto, true or false, got {iql!r}")
    if iql == "true" or (iql == "auto" and p["demos"]):  # the recipe robot-rl rl uses: IQL offline, then online
        learner += ["--offline", "steps=2000", "--offline", "online=iql", "--offline", "online_actor_lr=3e-5"]
    nodes = [NodeDef("learner", "robot_rl.ros.rl_nodes", tuple(learner))]
    for i in range(n):
        actor = ["actor", "--id", f"a{i}", *obs, "--human", p["human"]]
        if p.get("rate"):
            actor += ["--rate", p["rate"]]
        # actors come and go (respawned when they die); the learner ending ends the graph
        nodes.append(NodeDef(f"actor{i}", "robot_rl.ros.rl_nodes", tuple(actor), required=False, respawn=True,
                             start_delay_s=1.0))
    return nodes


def _cameras(p: dict[str, str]) -> list[NodeDef]:
    """Cameras alone: one camera node per camera (virtual twin cameras on loopback, or the
    devices / URLs in ``sources``) -> recorder (contract ``cameras``) -> episode store, with
    timed episodes from episode_clock."""
    cams = [c.strip() for c in p["cameras"].split(",") if c.strip()]
    sources = [s.strip() for s in p["sources"].split(",") if s.strip()]
    if not cams:
        raise KeyError("graph 'cameras': name at least one camera (cameras=front,wrist)")
    if sources and len(sources) != len(cams):
        raise KeyError(f"graph 'cameras': {len(sources)} sources for {len(cams)} cameras; give one per camera")
    try:
        port0 = int(p["port"])
    except ValueError:
        raise KeyError(f"graph 'cameras': port must be an integer, got {p['port']!r}") from None
    size = ["--width", p["width"], "--height", p["height"], "--fps", p["fps"]]
    nodes: list[NodeDef] = []
    for i, cam in enumerate(cams):
        src = sources[i] if sources else f"http://127.0.0.1:{port0 + i}/stream.mjpg"
        if not sources:  # the twin's camera, rendered and served like an IP camera
            nodes.append(NodeDef(f"virtual_{cam}", "robot_rl.cli.main",
                                 ("virtual", "camera", "--camera", cam, *size, "--port", str(port0 + i),
                                  "--noise", p["noise"], "--task", p["scene"], "--seed", str(i)), required=False))
        nodes.append(NodeDef(f"camera_{cam}", "robot_rl.ros.camera_node",
                             ("--name", cam, "--source", src, *size), required=False,
                             start_delay_s=0.0 if sources else 3.0))
    rec = ["--contract", p["contract"], "--out", p["out"], "--robot", p["robot"], "--task", p["task"],
           "--cameras", ",".join(cams), "--image-size", f"{p['width']}x{p['height']}", "--fps", p["fps"],
           "--mode", "realtime"]
    nodes.append(NodeDef("recorder", "robot_rl.ros.recorder_node", tuple(rec), required=False))
    waits = [w for cam in cams for w in ("--wait-for", f"/camera/{cam}/image_raw/compressed")]
    nodes.append(NodeDef("episodes", "robot_rl.ros.episode_clock",
                         ("--episodes", p["episodes"], "--seconds", p["seconds"], *waits), start_delay_s=1.0))
    return nodes


GRAPHS["cameras"] = Graph(
    "cameras", "cameras at full resolution -> camera nodes -> recorder (JPEG episode store), timed episodes "
    "(docs/cameras.md); without sources=, virtual twin cameras served as MJPEG on loopback",
    {"robot": "so101", "task": "camera_session", "cameras": "front,wrist", "sources": "", "width": "640",
     "height": "480", "fps": "30", "noise": "3", "scene": "pick_cube", "port": "8081", "contract": "cameras", "out": "data/cameras.zarr",
     "episodes": "1", "seconds": "10"},
    _cameras)

GRAPHS["rl"] = Graph(
    "rl", "online RL split over ROS 2: a learner (replay log, SAC, weights) + N actors streaming twin transitions "
    "(docs/rl_distributed.md)",
    {**_COMMON, "cameras": "none", "out": "runs/rl_dist", "actors": "1", "human": "none", "demos": "", "iql": "auto"},
    _rl)
