"""MJCF written here: robots, table, cameras, lights. No assets are downloaded.

Each robot is a kinematic chain of revolute joints with position actuators and
gravity-compensated links, ending in a ``hand`` body whose local +z is the approach
axis. The hand carries a parallel two-finger gripper (slide joints coupled by an
equality), a ``tcp`` site between the fingertips and a ``wrist`` camera.
Tasks add their objects through ``objects_xml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_rl.spec import RobotSpec


@dataclass(frozen=True)
class Link:
    """One joint and the link that follows it."""
    joint: str
    pos: tuple[float, float, float]  # joint position in the parent link frame
    axis: tuple[float, float, float]
    geom_to: tuple[float, float, float]  # capsule from the joint to this point (link frame)
    radius: float
    mass: float


@dataclass(frozen=True)
class Kinematics:
    base_height: float
    base_radius: float
    links: tuple[Link, ...]
    hand_pos: tuple[float, float, float]  # hand origin in the last link frame (approach = +z)
    palm: float  # palm length along approach
    finger_len: float
    finger_thick: float
    finger_width: float
    kp: float
    kv: float
    armature: float
    damping: float
    gripper_kp: float
    front_cam_pos: tuple[float, float, float]
    front_cam_target: tuple[float, float, float]
    table_center: tuple[float, float]
    table_half: tuple[float, float]
    colors: tuple[str, str] = ("0.85 0.55 0.15 1", "0.15 0.15 0.15 1")


KINEMATICS: dict[str, Kinematics] = {
    # SO-101 class: pan, lift, elbow, wrist flex, wrist roll (about the approach axis)
    "so101": Kinematics(
        base_height=0.055, base_radius=0.045,
        links=(
            Link("shoulder_pan", (0, 0, 0.055), (0, 0, 1), (0.03, 0, 0.035), 0.025, 0.12),
            Link("shoulder_lift", (0.03, 0, 0.035), (0, 1, 0), (0, 0, 0.113), 0.02, 0.12),
            Link("elbow_flex", (0, 0, 0.113), (0, 1, 0), (0, 0, 0.135), 0.018, 0.10),
            Link("wrist_flex", (0, 0, 0.135), (0, 1, 0), (0, 0, 0.04), 0.017, 0.06),
            Link("wrist_roll", (0, 0, 0.04), (0, 0, 1), (0, 0, 0.015), 0.017, 0.05),
        ),
        hand_pos=(0, 0, 0.015), palm=0.03, finger_len=0.045, finger_thick=0.008, finger_width=0.022,
        kp=60.0, kv=3.0, armature=0.02, damping=0.1, gripper_kp=1500.0,
        front_cam_pos=(0.45, 0.0, 0.24), front_cam_target=(0.175, 0.0, 0.03),
        table_center=(0.2, 0.0), table_half=(0.35, 0.4),
    ),
    # UR-class: pan, lift, elbow, wrist 1/2/3 with UR5-like lengths and lateral offsets;
    # wrist_3 rotates about the approach axis
    "arm6": Kinematics(
        base_height=0.089, base_radius=0.075,
        links=(
            Link("shoulder_pan", (0, 0, 0.089), (0, 0, 1), (0, 0, 0.074), 0.06, 3.7),
            Link("shoulder_lift", (0, 0.136, 0.074), (0, 1, 0), (0, 0, 0.425), 0.05, 8.4),
            Link("elbow", (0, -0.12, 0.425), (0, 1, 0), (0, 0, 0.392), 0.04, 2.3),
            Link("wrist_1", (0, 0, 0.392), (0, 1, 0), (0, 0.093, 0), 0.035, 1.2),
            Link("wrist_2", (0, 0.093, 0), (0, 0, 1), (0, 0, 0.095), 0.035, 1.2),
            Link("wrist_3", (0, 0, 0.095), (0, 1, 0), (0, 0.082, 0), 0.035, 0.25),
        ),
        # approach axis of the hand is the wrist_3 axis (+y of the last link)
        hand_pos=(0, 0.082, 0), palm=0.05, finger_len=0.055, finger_thick=0.01, finger_width=0.025,
        kp=3000.0, kv=150.0, armature=0.5, damping=2.0, gripper_kp=4000.0,
        front_cam_pos=(0.95, 0.0, 0.45), front_cam_target=(0.48, 0.0, 0.03),
        table_center=(0.4, 0.0), table_half=(0.6, 0.6),
        colors=("0.6 0.65 0.7 1", "0.2 0.25 0.3 1"),
    ),
}

# rotation that makes the hand's +z the approach axis when the last link's approach is +y
_HAND_QUAT = {"so101": "1 0 0 0", "arm6": "0.70710678 -0.70710678 0 0"}


def _fmt(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in v)


def lookat_xyaxes(pos, target, up=(0.0, 0.0, 1.0)) -> str:
    """MuJoCo camera ``xyaxes`` for a camera at `pos` looking at `target`."""
    pos, target, up = map(np.asarray, (pos, target, up))
    fwd = target - pos
    fwd = fwd / np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return _fmt(np.concatenate([x, y]))


def robot_xml(spec: RobotSpec) -> tuple[str, str, str]:
    """(worldbody chain, actuator, equality) XML fragments for `spec`."""
    if spec.name not in KINEMATICS:
        raise ValueError(f"no twin model for robot {spec.name!r}; twins exist for {sorted(KINEMATICS)}")
    k = KINEMATICS[spec.name]
    if [lk.joint for lk in k.links] != spec.joint_names:
        raise ValueError(f"spec joints {spec.joint_names} do not match the {spec.name} twin "
                         f"{[lk.joint for lk in k.links]}")
    arm_c, dark_c = k.colors
    body = [f'<body name="base" pos="0 0 0"><geom type="cylinder" size="{k.base_radius} {k.base_height / 2}" '
            f'pos="0 0 {k.base_height / 2}" rgba="{dark_c}" class="visual"/>']
    for i, (lk, js) in enumerate(zip(k.links, spec.joints)):
        body.append(f'<body name="link{i + 1}" pos="{_fmt(lk.pos)}" gravcomp="1">')
        body.append(f'<joint name="{lk.joint}" axis="{_fmt(lk.axis)}" range="{js.lower} {js.upper}" '
                    f'armature="{k.armature}" damping="{k.damping}"/>')
        body.append(f'<inertial pos="{_fmt(np.asarray(lk.geom_to) / 2)}" mass="{lk.mass}" '
                    f'diaginertia="{_fmt([lk.mass * lk.radius ** 2] * 3)}"/>')
        body.append(f'<geom type="capsule" fromto="0 0 0 {_fmt(lk.geom_to)}" size="{lk.radius}" '
                    f'rgba="{arm_c if i % 2 == 0 else dark_c}" class="visual"/>')
    # hand + gripper
    g = spec.gripper
    half_open = (g.open_width / 2) if g else 0.0
    body.append(f'<body name="hand" pos="{_fmt(k.hand_pos)}" quat="{_HAND_QUAT[spec.name]}" gravcomp="1">')
    body.append(f'<inertial pos="0 0 {k.palm / 2}" mass="0.1" diaginertia="1e-4 1e-4 1e-4"/>')
    body.append(f'<geom type="box" size="{k.finger_width / 2 + 0.004} {half_open + k.finger_thick + 0.004} '
                f'{k.palm / 2}" pos="0 0 {k.palm / 2}" rgba="{dark_c}" class="visual"/>')
    tcp_z = k.palm + k.finger_len - 0.012
    body.append(f'<site name="tcp" pos="0 0 {tcp_z}" size="0.004" rgba="1 0 0 0"/>')
    wc = spec.camera("wrist") if any(c.name == "wrist" for c in spec.cameras) else None
    if wc is not None:
        # behind and beside the palm, looking along the approach axis, tilted towards the fingertips
        cam_pos = np.array([-(k.finger_width / 2 + 0.025), 0.0, k.palm])
        xy = lookat_xyaxes(cam_pos, (0.0, 0.0, tcp_z + 0.05), up=(-1.0, 0.0, 0.0))
        body.append(f'<camera name="wrist" pos="{_fmt(cam_pos)}" xyaxes="{xy}" fovy="{wc.fovy}"/>')
    if g:
        for side, sgn in (("left", 1), ("right", -1)):
            body.append(f'<body name="finger_{side}" pos="0 0 {k.palm}">')
            body.append(f'<joint name="finger_{side}" type="slide" axis="0 {sgn} 0" range="0 {half_open}" '
                        f'armature="0.01" damping="1"/>')
            body.append(f'<inertial pos="0 0 {k.finger_len / 2}" mass="0.03" diaginertia="1e-5 1e-5 1e-5"/>')
            body.append(f'<geom name="finger_{side}" type="box" class="finger" '
                        f'size="{k.finger_width / 2} {k.finger_thick / 2} {k.finger_len / 2}" '
                        f'pos="0 {sgn * k.finger_thick / 2} {k.finger_len / 2}" rgba="{arm_c}"/>')
            body.append('</body>')
    body.append('</body>')  # hand
    body.extend('</body>' for _ in k.links)
    body.append('</body>')  # base

    act = []
    for lk, js in zip(k.links, spec.joints):
        frc = k.kp * 1.5
        act.append(f'<position name="{lk.joint}" joint="{lk.joint}" kp="{k.kp}" kv="{k.kv}" '
                   f'ctrlrange="{js.lower} {js.upper}" forcerange="{-frc} {frc}"/>')
    eq = []
    if g:
        act.append(f'<position name="gripper" joint="finger_left" kp="{k.gripper_kp}" kv="{k.gripper_kp / 50}" '
                   f'ctrlrange="0 {half_open}" forcerange="{-g.max_force} {g.max_force}"/>')
        eq.append('<joint joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0" '
                  'solref="0.005 1"/>')
    return "\n".join(body), "\n".join(act), "\n".join(eq)


@dataclass
class SceneOptions:
    timestep: float = 0.002
    offscreen_size: int = 256
    extra_assets: list[str] = field(default_factory=list)


def scene_xml(spec: RobotSpec, objects_xml: str = "", *, timestep: float = 0.002,
              offscreen: int = 256) -> str:
    """Complete MJCF: table, lights, front camera, robot and the task's objects."""
    k = KINEMATICS.get(spec.name)
    chain, actuators, equality = robot_xml(spec)
    front = ""
    if any(c.name == "front" for c in spec.cameras):
        fc = spec.camera("front")
        front = (f'<camera name="front" pos="{_fmt(k.front_cam_pos)}" '
                 f'xyaxes="{lookat_xyaxes(k.front_cam_pos, k.front_cam_target)}" fovy="{fc.fovy}"/>')
    tx, ty = k.table_center
    hx, hy = k.table_half
    return f"""<mujoco model="{spec.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="{offscreen}" offheight="{offscreen}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <default class="visual"><geom contype="0" conaffinity="0" group="1"/></default>
    <default class="finger"><geom contype="1" conaffinity="1" condim="4" friction="1.5 0.02 0.0005"
      solref="0.004 1" solimp="0.95 0.99 0.001" priority="1"/></default>
    <default class="object"><geom contype="1" conaffinity="1" condim="4" friction="1.0 0.01 0.0005"
      solref="0.004 1" solimp="0.95 0.99 0.001"/></default>
    <default class="fixture"><geom contype="1" conaffinity="1" condim="3" friction="0.8 0.01 0.0005"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.72 0.72 0.7" rgb2="0.66 0.66 0.64" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="8 8" reflectance="0"/>
  </asset>
  <worldbody>
    <light name="key" pos="{tx} {ty - 0.6} 1.4" dir="0 0.4 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <light name="fill" pos="{tx + 0.8} {ty + 0.5} 1.2" dir="-0.5 -0.3 -1" diffuse="0.3 0.3 0.3" castshadow="false"/>
    <geom name="table" type="box" size="{hx} {hy} 0.02" pos="{tx} {ty} -0.02" material="table" class="fixture"/>
    {front}
    {chain}
    {objects_xml}
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
  <equality>
    {equality}
  </equality>
</mujoco>"""
