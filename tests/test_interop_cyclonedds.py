"""Wire compatibility with stock ROS 2: a foreign DDS participant (the ``cyclonedds`` Python
binding, no rclpy) drives robot_node (rclpy on Fast DDS, the default rmw) through
``rt/joint_command`` and reads ``rt/joint_states``.

The types are the ROS 2 IDL equivalents, named as rosidl mangles them
(``<pkg>::msg::dds_::<Type>_``). ROS 2 messages are final structs in plain (XCDR1) CDR:
cyclonedds.idl's default extensibility is ``final`` (stated explicitly below), and the
DataRepresentation policy pins XCDR1.

Discovery: with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` Fast DDS sends no multicast; it
announces itself by unicast to the well-known localhost ports of participant indices 0..n
and listens on its own index's port. Cyclone therefore gets a participant index of its own
(well-known ports) and unicast peers on 127.0.0.1 (which cover the indices Fast DDS uses).
"""

import os
import subprocess
import time
from dataclasses import dataclass

import pytest

from ros_helpers import spawn

# (no `from __future__ import annotations` here: cyclonedds.idl resolves the field types at class creation)
cyclonedds = pytest.importorskip("cyclonedds")

from cyclonedds.core import Policy, Qos  # noqa: E402
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl.annotations import final  # noqa: E402
from cyclonedds.idl.types import float64, int32, sequence, uint32  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402
from cyclonedds.util import duration  # noqa: E402

CYCLONE_LOCALHOST = (
    "<CycloneDDS><Domain Id='any'>"
    "<General><Interfaces><NetworkInterface name='lo'/></Interfaces><AllowMulticast>false</AllowMulticast></General>"
    "<Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>30</MaxAutoParticipantIndex>"
    "<Peers><Peer Address='127.0.0.1'/></Peers></Discovery>"
    "</Domain></CycloneDDS>")


@final
@dataclass
class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32
    nanosec: uint32


@final
@dataclass
class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time_
    frame_id: str


@final
@dataclass
class JointState_(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header_
    name: sequence[str]
    position: sequence[float64]
    velocity: sequence[float64]
    effort: sequence[float64]


def test_foreign_cyclonedds_participant_commands_robot_node(ros_domain, monkeypatch):
    monkeypatch.setenv("CYCLONEDDS_URI", CYCLONE_LOCALHOST)
    node = spawn("robot_rl.ros.robot_node", "--robot", "so101", "--mode", "realtime", "--cameras", "none",
                 "--rate", "50")
    try:
        dp = DomainParticipant(ros_domain)
        # what rclpy's default QoS (and the node's reliable_qos) offer: reliable, volatile, keep last
        qos = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.Durability.Volatile,
                  Policy.History.KeepLast(10), Policy.DataRepresentation(use_cdrv0_representation=True))
        reader = DataReader(dp, Topic(dp, "rt/joint_states", JointState_, qos=qos), qos=qos)
        writer = DataWriter(dp, Topic(dp, "rt/joint_command", JointState_, qos=qos), qos=qos)

        states = []
        end = time.monotonic() + 30
        while not states and time.monotonic() < end:
            states += reader.take(N=100)
            time.sleep(0.02)
        assert states, "no joint states from robot_node via cyclonedds within 30 s"
        js = states[-1]
        assert list(js.name) == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
        assert len(js.position) == 6 and abs(js.header.stamp.sec + js.header.stamp.nanosec * 1e-9 - time.time()) < 2

        target = {"shoulder_pan": 0.5, "elbow_flex": 1.0, "gripper": 0.5}
        cmd = JointState_(header=Header_(stamp=Time_(0, 0), frame_id=""), name=list(target),
                          position=list(target.values()), velocity=[], effort=[])
        reached = False
        end = time.monotonic() + 20
        while time.monotonic() < end:  # stream at ~25 Hz (the node's watchdog wants fresh commands)
            writer.write(cmd)
            got = reader.take(N=100)
            if got:
                js = got[-1]
                pos = dict(zip(js.name, js.position))
                if abs(pos["shoulder_pan"] - 0.5) < 0.02 and abs(pos["elbow_flex"] - 1.0) < 0.02:
                    reached = True
                    break
            time.sleep(0.04)
        assert reached, f"robot did not reach the commanded targets; last joint state {dict(zip(js.name, js.position))}"
        assert 0.1 < pos["gripper"] <= 0.6  # closing toward 0.5
        del reader, writer, dp
    finally:
        node.terminate()
        try:
            out, err = node.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            node.kill()
            out, err = node.communicate()
        print(out[-3000:], err[-3000:])
        os.environ.pop("CYCLONEDDS_URI", None)
