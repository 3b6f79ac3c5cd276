"""The inference node: a trained policy driving a robot over ROS 2.

    python -m robot_rl.ros.inference_node runs/x/checkpoints/last --robot so101 --mode warm

A thin rclpy adapter over :class:`robot_rl.runtime.controller.DeployController` (observation
history, chunk sampler in a worker, chunk executor, safe hold): it assembles one observation
per control step from ``/joint_states``, ``/ee_pose``, ``/object_state`` (and
``/camera/<name>/image_raw`` for image policies) by header stamp, and a control thread with
absolute deadlines publishes the controller's action for the current time on
``/action_command`` (or each new chunk as a ``JointTrajectory`` on ``/joint_trajectory``).
``/teleop/event`` ``start`` and the ``/inference/reset`` service start a new episode;
``/inference/pause`` holds; ROS parameters change the sampler and executor settings at run
time; ``/diagnostics`` reports latency, network evaluations, fallbacks, underruns, holds.

See docs/inference.md.
"""
from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.ros import topics
from robot_rl.ros.node_args import exit_on_help
from robot_rl.spec import ACTION_MODES

DIAG_SUFFIX = "inference"
NS = 1_000_000_000

# ROS parameters mirror DeployController.set_params: every sampler setting, executor setting,
# stale_after_s, max_latency_s and paused, typed like their current values. ROS parameters
# cannot be None: settings that may be None ("the policy's": scheduler, num_steps) use ""
# or 0 for it.
_NONE_FOR = {"str": "", "int": 0, "float": 0.0}


def parameter_types(current: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """{name: (type, value standing for None or None)} for the controller's parameters."""
    from dataclasses import fields

    from robot_rl.runtime.executor import ExecutorSettings
    from robot_rl.runtime.samplers import SamplerSettings
    ann = {f.name: str(f.type) for cls in (SamplerSettings, ExecutorSettings) for f in fields(cls)}
    out: dict[str, tuple[type, Any]] = {}
    for k, v in current.items():
        if v is None:
            base = [t.strip() for t in ann.get(k, "").split("|") if t.strip() != "None"]
            if len(base) != 1 or base[0] not in _NONE_FOR:
                continue  # no ROS type for it: not a parameter
            out[k] = ({"str": str, "int": int, "float": float}[base[0]], _NONE_FOR[base[0]])
        elif isinstance(v, (bool, np.bool_)):
            out[k] = (bool, None)
        elif isinstance(v, (int, np.integer)):
            out[k] = (int, 0 if "None" in ann.get(k, "") else None)
        elif isinstance(v, (float, np.floating)):
            out[k] = (float, 0.0 if "None" in ann.get(k, "") else None)
        elif isinstance(v, str):
            out[k] = (str, "" if "None" in ann.get(k, "") else None)
    return out

# what each observation key is assembled from
_JS_KEYS = ("joint_pos", "joint_vel", "gripper")
_EE_KEYS = ("ee_pos", "ee_quat")
_OBJ_KEYS = ("object_state",)


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer ns (exact)."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def float_array_stamp_ns(msg) -> int | None:
    """The stamp of a ``msgs.stamped_float_array`` as exact integer ns (the float of
    ``msgs.float_array_stamp`` loses the last digits of wall-clock stamps)."""
    from robot_rl.ros.msgs import STAMP_PREFIX
    for d in msg.layout.dim:
        if d.label.startswith(STAMP_PREFIX):
            sec, _, ns = d.label[len(STAMP_PREFIX):].partition(".")
            try:
                return int(sec) * NS + int((ns or "0").ljust(9, "0")[:9])
            except ValueError:
                return None
    return None


# -- observation assembly (no rclpy) --------------------------------------------------------------
class ObservationAssembler:
    """Groups the parts of one control step's observation by stamp (integer ns).

    ``add(part, ns, values)`` stores the keys a topic provides for that stamp and returns the
    complete observation (every key the policy needs) once the last part arrived, else None.
    Only stamps newer than the last completed one are kept (at most ``max_pending``; the
    oldest incomplete ones are dropped and counted)."""

    def __init__(self, keys: list[str], max_pending: int = 16, latest_images: bool = False,
                 image_max_age_s: float = 0.2):
        self.keys = list(keys)
        self.parts = self.required_parts(self.keys)
        self.max_pending = int(max_pending)
        # cameras on a robot are separate devices (camera nodes): their frames never share the
        # joint states' stamps, so each step takes every camera's newest frame, if it is no more
        # than image_max_age_s away from the step's stamp. The twin renders its frames with the
        # step's stamp: there the parts are grouped by exact stamp.
        self.latest = {p for p in self.parts if p.startswith("image_")} if latest_images else set()
        self.max_age_ns = int(image_max_age_s * 1e9)
        self._frames: dict[str, tuple[int, dict[str, Any]]] = {}
        self._pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.last_ns = -1
        self.max_seen_ns = -1  # newest stamp of any part received
        self.counts = {"observations": 0, "incomplete_dropped": 0, "late_dropped": 0, "frames_too_old": 0}

    @staticmethod
    def required_parts(keys: list[str]) -> set[str]:
        parts = set()
        for k in keys:
            if k in _JS_KEYS:
                parts.add("joint_states")
            elif k in _EE_KEYS:
                parts.add("ee_pose")
            elif k in _OBJ_KEYS:
                parts.add("object_state")
            elif k.startswith("image_"):
                parts.add(k)
            else:
                raise ValueError(f"the policy needs observation key {k!r}, which no robot_rl topic carries "
                                 f"(assembled: {list(_JS_KEYS + _EE_KEYS + _OBJ_KEYS)}, image_<camera>)")
        return parts

    def reset(self, min_ns: int = -1) -> None:
        """Forget the pending parts; ignore stamps <= min_ns from now on."""
        self._pending.clear()
        self.last_ns = max(self.last_ns, int(min_ns))

    def add(self, part: str, ns: int, values: dict[str, Any]) -> dict[str, Any] | None:
        if part not in self.parts:
            return None
        if part in self.latest:
            self._frames[part] = (ns, values)
            # a step whose robot parts are complete may have waited for this frame
            for k in reversed(self._pending):
                d = self._pending[k]
                if d["_parts"] == self.parts - self.latest:
                    return self._complete(k, d)
            return None
        self.max_seen_ns = max(self.max_seen_ns, ns)
        if ns <= self.last_ns:
            self.counts["late_dropped"] += 1
            return None
        d = self._pending.get(ns)
        if d is None:
            d = self._pending[ns] = {"_parts": set()}
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.counts["incomplete_dropped"] += 1
        d["_parts"].add(part)
        d.update(values)
        if self.latest:
            return self._complete(ns, d) if d["_parts"] == self.parts - self.latest else None
        if d["_parts"] != self.parts:
            return None
        return self._finish(ns, d)

    def _complete(self, ns: int, d: dict[str, Any]) -> dict[str, Any] | None:
        """Robot parts of step `ns` complete: add each camera's newest frame when it is recent."""
        for p in self.latest:
            f = self._frames.get(p)
            if f is None:
                return None
            if abs(f[0] - ns) > self.max_age_ns:
                if f[0] < ns:  # a newer frame may still come
                    self.counts["frames_too_old"] += 1
                    return None
            d.update(f[1])
        return self._finish(ns, d)

    def _finish(self, ns: int, d: dict[str, Any]) -> dict[str, Any]:
        del self._pending[ns]
        for old in [k for k in self._pending if k < ns]:  # older, still incomplete: never will be used
            del self._pending[old]
            self.counts["incomplete_dropped"] += 1
        self.last_ns = ns
        self.counts["observations"] += 1
        return {k: d[k] for k in self.keys}


def _import_ros():
    global rclpy, DiagnosticArray, DiagnosticStatus, PoseStamped, JointState, Image
    global Float32MultiArray, String, SetBool, Trigger, JointTrajectory, JointTrajectoryPoint
    global SetParametersResult, ParameterDescriptor, Parameter
    import rclpy  # noqa: F811
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: F811
    from geometry_msgs.msg import PoseStamped  # noqa: F811
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult  # noqa: F811
    from rclpy.parameter import Parameter  # noqa: F811
    from sensor_msgs.msg import Image, JointState  # noqa: F811
    from std_msgs.msg import Float32MultiArray, String  # noqa: F811
    from std_srvs.srv import SetBool, Trigger  # noqa: F811
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: F811


class CameraFrames:
    """Camera frames -> the size the policy was trained at, by the checkpoint's own rule.

    ``metadata["image_size"]`` (int: square, or [width, height]) is what the policy sees;
    ``metadata["image_resize"] == "area"`` says training resized its stored frames with area
    interpolation, so frames of another size are resized here the same way. Without that
    rule a frame of another size is refused (counted, logged): a policy never sees frames
    resized by accident."""

    def __init__(self, metadata: dict | None) -> None:
        md = metadata or {}
        size = md.get("image_size")
        if isinstance(size, (list, tuple)) and len(size) == 2:
            self.hw: tuple[int, int] | None = (int(size[1]), int(size[0]))
        elif isinstance(size, (int, float)) and size:
            self.hw = (int(size), int(size))
        else:
            self.hw = None
        self.resize = md.get("image_resize") == "area"
        self.counts = {"resized": 0, "refused_size": 0}

    def __call__(self, key: str, img: np.ndarray) -> np.ndarray:
        if self.hw is None or img.shape[:2] == self.hw:
            return img
        if not self.resize:
            self.counts["refused_size"] += 1
            raise ValueError(f"{key}: the camera sends {img.shape[1]}x{img.shape[0]} but the policy was trained at "
                             f"{self.hw[1]}x{self.hw[0]} from frames of that size; train with image_size= (the "
                             f"loader then resizes, and so does this node) or record with the contract's size:")
        from robot_rl.data.frames import resize_image
        self.counts["resized"] += 1
        return resize_image(img, self.hw)


def checkpoint_config(path) -> dict:
    """The checkpoint's config.json, or an ONNX export's manifest.json (state keys, cameras,
    metadata), {} when unreadable."""
    from robot_rl.policies.export import checkpoint_json
    return checkpoint_json(path)


# -- the node ------------------------------------------------------------------------------------
class InferenceNode:
    """Subscriptions, the control thread, parameters, services and diagnostics around one
    DeployController. Every controller call happens under ``self.lock``: ``observe`` and the
    parameter / service callbacks in the executor thread, ``tick`` in the control thread."""

    def __init__(self, controller, spec, keys: list[str], *, action_mode: str = "ee_delta", rate: float | None = None,
                 output: str = "action", phase: float = 0.25, lookahead: bool = True, diag_hz: float = 2.0,
                 node_name: str = "inference_node", settings: dict[str, Any] | None = None, rt_priority: int = 0,
                 image_metadata: dict | None = None, image_transport: str = "raw"):
        _import_ros()
        self.rt_priority = int(rt_priority)
        if output not in ("action", "trajectory"):
            raise ValueError(f"output must be 'action' or 'trajectory', got {output!r}")
        if output == "trajectory" and action_mode != "joint_pos":
            raise ValueError(f"--output trajectory needs a joint_pos policy (JointTrajectory points are joint "
                             f"positions); this one outputs {action_mode!r} actions: use --output action")
        self.ctl = controller
        self.spec = spec
        self.action_mode = action_mode
        self.output = output
        self.rate = float(rate or spec.control_hz)
        if self.rate <= 0:
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        self.period = 1.0 / self.rate
        self.phase = phase
        self.lock = threading.RLock()
        # camera nodes (compressed JPEG, a robot's cameras) stamp their own capture times
        self.asm = ObservationAssembler(keys, latest_images=image_transport == "compressed")
        self.frames = CameraFrames(image_metadata)
        self.names = spec.joint_names
        self.node = rclpy.create_node(node_name)
        self.log = self.node.get_logger()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self._newest_ns = -1  # newest complete observation handed to observe()
        self._obs_stamps: deque = deque(maxlen=21)  # recent observation stamps (s): the robot's period
        self.lookahead = lookahead
        self._last: Any = None  # the latest TickResult
        self._periods: deque = deque(maxlen=2000)
        self._tick_times: deque = deque(maxlen=2000)
        self._tick_ms: deque = deque(maxlen=2000)
        self._holding = False
        self._traj_chunk = None  # identity of the last chunk published as a trajectory
        self.counts = {"ticks": 0, "loop_overruns": 0, "published": 0, "rejected_observations": 0,
                       "resets": 0, "trajectories": 0, "nonfinite_blocked": 0}

        n, rq = self.node, topics.reliable_qos
        if output == "action":
            self.pub_cmd = n.create_publisher(Float32MultiArray, topics.ACTION_COMMAND, rq(100))
        else:
            self.pub_cmd = n.create_publisher(JointTrajectory, topics.JOINT_TRAJECTORY, rq(10))
        self.pub_diag = n.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, rq(10))
        parts = self.asm.parts
        self.part_topics: dict[str, str] = {}  # part -> the topic that carries it (start-up check)
        self.failed_check: str | None = None
        if "joint_states" in parts:
            n.create_subscription(JointState, topics.JOINT_STATES, self._on_js, rq(100))
        if "ee_pose" in parts:
            n.create_subscription(PoseStamped, topics.EE_POSE, self._on_ee, rq(100))
        if "object_state" in parts:
            n.create_subscription(Float32MultiArray, topics.OBJECT_STATE, self._on_obj, rq(100))
        if image_transport not in ("raw", "compressed"):
            raise ValueError(f"image_transport must be 'raw' or 'compressed', got {image_transport!r}")
        for p in sorted(parts):
            if p.startswith("image_"):
                cam = p[len("image_"):]
                self.part_topics[p] = (topics.camera_image(cam) if image_transport == "raw"
                                       else topics.camera_compressed(cam))
                if image_transport == "raw":
                    n.create_subscription(Image, topics.camera_image(cam), lambda m, p=p: self._on_image(p, m),
                                          topics.sensor_qos(10))
                else:  # a camera node's JPEG stream (/camera/<name>/image_raw/compressed)
                    from sensor_msgs.msg import CompressedImage
                    n.create_subscription(CompressedImage, topics.camera_compressed(cam),
                                          lambda m, p=p: self._on_image(p, m, compressed=True), topics.sensor_qos(10))
        self.part_topics.update({k: t for k, t in (("joint_states", topics.JOINT_STATES), ("ee_pose", topics.EE_POSE),
                                                   ("object_state", topics.OBJECT_STATE)) if k in parts})
        n.create_subscription(String, topics.TELEOP_EVENT, self._on_event, rq(10))
        n.create_service(Trigger, topics.INFERENCE_RESET, self._srv_reset)
        n.create_service(SetBool, topics.INFERENCE_PAUSE, self._srv_pause)
        self._declare_parameters(settings or {})
        if diag_hz > 0:
            n.create_timer(1.0 / diag_hz, self.publish_diagnostics)

    # -- parameters ----------------------------------------------------------------------------
    def _declare_parameters(self, current: dict[str, Any]) -> None:
        self._param_values: dict[str, Any] = {}
        self.param_types = parameter_types(current)
        for name, (typ, none) in self.param_types.items():
            v = current[name]
            if v is None:
                if none is None:
                    continue
                v = none
            v = typ(v)
            desc = ParameterDescriptor(description=f"DeployController setting {name}"
                                       + (f" ({none!r}: the policy's)" if none is not None else ""))
            self.node.declare_parameter(name, v, desc)
            self._param_values[name] = v
        # `--ros-args -p name:=value` overrides: declared with that value, applied here (the
        # callback is not called for declarations); a bad or unknown one ends the node with one line
        overrides = getattr(self.node, "_parameter_overrides", None) or {}  # rclpy keeps them privately
        unknown = sorted(set(overrides) - set(self._param_values) - {"use_sim_time"})
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; parameters: {sorted(self._param_values)}")
        params = [self.node.get_parameter(k) for k, v in self._param_values.items()
                  if self.node.get_parameter(k).value != v]
        if params:
            res = self._on_set_parameters(params, log=False)
            if not res.successful:
                raise ValueError(f"parameter override refused: {res.reason}")
        self.node.add_on_set_parameters_callback(self._on_set_parameters)

    def _on_set_parameters(self, params, log: bool = True) -> "SetParametersResult":
        kw: dict[str, Any] = {}
        for p in params:
            if p.name not in self.param_types:
                continue  # use_sim_time and friends
            typ, none = self.param_types[p.name]
            v = p.value
            if typ is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
                return SetParametersResult(successful=False,
                                           reason=f"{p.name} must be a {typ.__name__}, got {v!r}")
            kw[p.name] = None if (none is not None and v == none) else v
        if not kw:
            return SetParametersResult(successful=True)
        try:
            with self.lock:
                self.ctl.set_params(**kw)
        except (ValueError, TypeError) as e:
            if log:
                self.log.warning(f"parameter change {kw} refused: {e}")
            return SetParametersResult(successful=False, reason=str(e))
        self.log.info(f"parameters {'changed' if log else 'set'}: {kw}")
        return SetParametersResult(successful=True)

    # -- observations --------------------------------------------------------------------------
    def _observe(self, part: str, ns: int, values: dict[str, Any]) -> None:
        with self.lock:
            obs = self.asm.add(part, ns, values)
            if obs is None:
                return
            try:
                ok = self.ctl.observe(obs, ns / NS)
            except Exception as e:  # noqa: BLE001 - a bad message must not end the node
                ok = False
                self.log.error(f"observation at {ns / NS:.3f} rejected: {e}", throttle_duration_sec=2.0)
            if ok is False:
                self.counts["rejected_observations"] += 1
            else:
                self._newest_ns = max(self._newest_ns, ns)
                self._obs_stamps.append(ns / NS)

    def _on_js(self, msg) -> None:
        idx = {name: i for i, name in enumerate(msg.name)}
        try:
            vals: dict[str, Any] = {}
            keys = self.asm.keys
            if "joint_pos" in keys:
                vals["joint_pos"] = np.array([msg.position[idx[n]] for n in self.names], np.float32)
            if "joint_vel" in keys:
                vals["joint_vel"] = np.array([msg.velocity[idx[n]] for n in self.names], np.float32)
            if "gripper" in keys:
                vals["gripper"] = np.array([msg.position[idx[topics.GRIPPER_JOINT]]], np.float32)
        except (KeyError, IndexError) as e:
            self.log.error(f"/joint_states lacks joint {e} (has {list(msg.name)}); observation skipped",
                           throttle_duration_sec=5.0)
            return
        self._observe("joint_states", stamp_ns(msg.header.stamp), vals)

    def _on_ee(self, msg) -> None:
        from robot_rl.ros.msgs import pose_arrays
        pos, quat = pose_arrays(msg)
        self._observe("ee_pose", stamp_ns(msg.header.stamp), {"ee_pos": pos, "ee_quat": quat})

    def _on_obj(self, msg) -> None:
        ns = float_array_stamp_ns(msg)
        if ns is None:
            self.log.warning("/object_state without a stamp ignored", throttle_duration_sec=5.0)
            return
        self._observe("object_state", ns, {"object_state": np.asarray(msg.data, np.float32)})

    def _on_image(self, key: str, msg, compressed: bool = False) -> None:
        from robot_rl.ros.msgs import image_array
        try:
            if compressed:
                from robot_rl.data.contract import compressed_image_rgb
                img = compressed_image_rgb(msg, key)
            else:
                img = image_array(msg)
            img = self.frames(key, img)
        except ValueError as e:
            self.log.error(f"{key}: {e}", throttle_duration_sec=5.0)
            return
        self._observe(key, stamp_ns(msg.header.stamp), {key: img})

    # -- episodes, pause ---------------------------------------------------------------------
    def reset(self, why: str) -> None:
        with self.lock:
            self.ctl.reset()
            # parts stamped up to the newest one seen belong to the episode that ended
            self.asm.reset(min_ns=self.asm.max_seen_ns)
            self._newest_ns = -1
            self._obs_stamps.clear()
            self._traj_chunk = None
            self.counts["resets"] += 1
        self.log.info(f"new episode ({why}): controller reset")

    def _on_event(self, msg) -> None:
        event = topics.event_or_warn(msg.data, self.log)
        if event in ("start", "rerecord"):
            self.reset(f"/teleop/event {msg.data!r}")

    def _srv_reset(self, req, resp):
        try:
            self.reset(topics.INFERENCE_RESET)
        except Exception as e:  # noqa: BLE001
            resp.success, resp.message = False, f"reset failed: {e}"
            return resp
        resp.success, resp.message = True, "controller reset: new episode"
        return resp

    def _srv_pause(self, req, resp):
        # through the parameter, so `paused` always shows the state
        res = self.node.set_parameters([Parameter("paused", Parameter.Type.BOOL, bool(req.data))])[0]
        resp.success = bool(res.successful)
        resp.message = ("paused: holding" if req.data else "resumed") if res.successful else res.reason
        return resp

    # -- the control loop ----------------------------------------------------------------------------
    def missing_parts(self) -> dict[str, str]:
        """Observation parts (and their topics) that nothing publishes: the robot does not
        provide them (e.g. object_state on a real arm)."""
        return {p: t for p, t in self.part_topics.items() if self.node.count_publishers(t) == 0}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference_control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001
            if self._stop.is_set() or not self.node.context.ok():
                return
            import traceback
            self.failed = e
            self.log.fatal(f"control loop failed, shutting down: {e!r}\n{traceback.format_exc()}")
            self.node.context.try_shutdown()

    def _next_deadline(self, deadline: float) -> float:
        """The next tick (monotonic): ``phase`` periods after the grid of the newest
        observation's stamp while observations flow (the robot's step has been published by
        then, the action is ready well before its next step), else free-running."""
        now_m = time.monotonic()
        nxt = deadline + self.period
        ns = self._newest_ns
        if self.phase is not None and self.phase >= 0 and ns > 0:
            wall_to_mono = now_m - time.time()
            anchor = ns / NS + wall_to_mono + self.phase * self.period  # monotonic
            if now_m - anchor < 3 * self.period:  # observations are fresh
                k = math.floor((now_m - anchor) / self.period) + 1
                cand = anchor + k * self.period
                if cand - now_m < 0.2 * self.period:  # too close: the next one on that grid
                    cand += self.period
                return cand
        if nxt <= now_m:  # overran a whole period: skip the missed ticks, do not burst
            self.counts["loop_overruns"] += 1
            nxt += (int((now_m - nxt) / self.period) + 1) * self.period
        return nxt

    def _loop(self) -> None:
        if self.rt_priority > 0:  # the control thread only; inference stays at normal priority
            from robot_rl.runtime.realtime import fifo_for_control_thread
            fifo_for_control_thread(self.rt_priority, self.log)
        deadline = time.monotonic() + self.period
        while not self._stop.is_set():
            rest = deadline - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            self.tick()
            deadline = self._next_deadline(deadline)

    def robot_period(self) -> float:
        """The robot's control period: the median spacing of recent observation stamps (the
        spec's 1 / control_hz until there are a few)."""
        st = list(self._obs_stamps)
        if len(st) >= 4:
            d = np.diff(st)
            d = d[d > 0]
            if len(d) >= 3:
                return float(np.median(d))
        return 1.0 / float(self.spec.control_hz)

    def target_time(self, now: float) -> float:
        """The time the action published now takes effect: the robot's next control step on
        the grid of the observation stamps (a robot applies the latest command at its next
        step), or ``now`` without lookahead or fresh observations."""
        ns = self._newest_ns
        if not self.lookahead or ns <= 0:
            return now
        dt = self.robot_period()
        s = ns / NS
        if not 0.0 <= now - s < 3 * dt:
            return now
        return s + max(1, math.ceil((now - s) / dt - 1e-6)) * dt

    def tick(self) -> None:
        t0 = time.monotonic()
        if self._tick_times:
            self._periods.append(t0 - self._tick_times[-1])
        self._tick_times.append(t0)
        now = self.target_time(time.time())
        with self.lock:
            res = self.ctl.tick(now)
            obs_ns = self._newest_ns
            chunk = self._new_chunk() if self.output == "trajectory" else None
        self._last = res
        self.counts["ticks"] += 1
        if res.held and res.reason == "no_observation" and self.action_mode == "joint_pos":
            return  # the controller's hold would be the home pose: a robot must not be sent it
        if res.held and res.reason == "paused":
            # paused: the robot is someone else's (a person homing it, a trajectory, teleop);
            # nothing is published, and the robot node holds on its own when no command comes
            self._holding = True
            return
        a = np.asarray(res.action, np.float32)
        if not np.all(np.isfinite(a)):  # the controller guarantees it; never forward NaN anyway
            self.counts["nonfinite_blocked"] += 1
            self.log.error(f"controller returned a non-finite action {a}; not published", throttle_duration_sec=2.0)
            return
        st = getattr(res, "stamp", None) or getattr(res, "obs_stamp", None)
        stamp = float(st) if st else (obs_ns / NS if obs_ns > 0 else now)
        if self.output == "action":
            from robot_rl.ros.msgs import stamped_float_array
            self.pub_cmd.publish(stamped_float_array(a, self.action_mode, stamp))
            self.counts["published"] += 1
        else:
            self._publish_trajectory(res, a, chunk)
        self._holding = bool(res.held)
        self._tick_ms.append((time.monotonic() - t0) * 1e3)

    # -- trajectory output -----------------------------------------------------------------------
    def _new_chunk(self):
        """(target times, (L, A) actions) of the chunk that took over the controller's queue
        since the last call, or None. Read right after ``tick`` under ``self.lock`` (the queue
        only changes inside ``tick``)."""
        ex = self.ctl.executor
        n = ex.counts["chunks"]
        if n == self._traj_chunk:
            return None
        self._traj_chunk = n
        got = ex.latest_chunk()
        if got is None:
            return None
        times, rows = got
        return times, np.clip(rows, self.ctl.low, self.ctl.high)

    def _publish_trajectory(self, res, a: np.ndarray, chunk) -> None:
        from builtin_interfaces.msg import Duration

        from robot_rl.ros.msgs import to_time
        g = self.spec.gripper is not None
        names = self.names + ([topics.GRIPPER_JOINT] if g else [])
        if res.held:
            if self._holding:
                return  # one hold trajectory per hold; the robot's watchdog latches after it
            times, rows = np.zeros(1), a[None]  # a single point now (stamp 0: on receipt)
        elif chunk is not None:
            times, rows = chunk
        else:
            return
        if not np.all(np.isfinite(rows)):
            self.counts["nonfinite_blocked"] += 1
            return
        t0 = float(times[0])
        m = JointTrajectory()
        m.header.stamp = to_time(t0) if t0 > 0 else m.header.stamp
        m.joint_names = names
        pts = []
        for tt, r in zip(times, rows):
            t = max(0.0, float(tt) - t0)
            p = JointTrajectoryPoint(positions=[float(x) for x in r[: len(names)]])
            p.time_from_start = Duration(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))
            pts.append(p)
        m.points = pts
        self.pub_cmd.publish(m)
        self.counts["trajectories"] += 1
        self.counts["published"] += 1

    # -- diagnostics ---------------------------------------------------------------------------------
    # holds that mean something is wrong (the others: paused, waiting for the first
    # observation or chunk of an episode)
    WARN_REASONS = ("stale_observation", "bad_observation", "overrun", "inference_error")

    def status(self) -> tuple[int, str, dict[str, str]]:
        """(level, message, values) of the inference status."""
        with self.lock:
            try:
                d = dict(self.ctl.diagnostics())
            except Exception as e:  # noqa: BLE001
                d = {"diagnostics_error": str(e)}
        vals: dict[str, str] = {}
        for k, v in d.items():
            vals[str(k)] = (str(v).lower() if isinstance(v, bool) else
                            f"{v:.6g}" if isinstance(v, float) else str(v))
        per = np.asarray(self._periods, float) * 1e3
        ticks = list(self._tick_times)
        achieved = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0
        vals.update({"node/action_mode": self.action_mode, "node/output": self.output,
                     "node/rate_target_hz": f"{self.rate:g}", "node/rate_achieved_hz": f"{achieved:.2f}"})
        if per.size:
            err = np.abs(per - self.period * 1e3)
            vals["node/period_err_ms_p99"] = f"{np.percentile(err, 99):.3f}"
            vals["node/period_err_ms_max"] = f"{err.max():.3f}"
        if self._tick_ms:
            vals["node/tick_ms_max"] = f"{max(self._tick_ms):.3f}"
        images = {f"images_{k}": v for k, v in self.frames.counts.items()}
        for k, v in {**self.counts, **self.asm.counts, **images}.items():
            vals[f"node/{k}"] = str(v)
        res = self._last
        held = bool(res.held) if res is not None else True
        reason = (res.reason if res is not None else "starting") or ""
        vals["held"] = str(held).lower()
        vals["reason"] = reason
        level = DiagnosticStatus.WARN if held and reason in self.WARN_REASONS else DiagnosticStatus.OK
        msg = f"holding: {reason}" if held else "running"
        return level, msg, vals

    def publish_diagnostics(self) -> None:
        level, msg, vals = self.status()
        from robot_rl.ros.msgs import diagnostic_status, publish_diagnostics
        publish_diagnostics(self.node, self.pub_diag, [diagnostic_status(
            f"{self.node.get_name()}: {DIAG_SUFFIX}", self.spec.name, level, msg, vals)])

    def destroy(self) -> None:
        self.stop()
        self.node.destroy_node()


# -- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robot_rl.ros.inference_node", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="policy checkpoint directory (config.json + model.safetensors), or an ONNX "
                                      "export directory (robot-rl export ... format=onnx)")
    p.add_argument("--robot", default="so101", help="robot spec name or YAML path")
    p.add_argument("--action-mode", default=None, choices=ACTION_MODES,
                   help="the policy's action mode (default: the checkpoint's, else ee_delta)")
    p.add_argument("--mode", default="warm", choices=["warm", "cold", "rtc"], help="chunk sampler")
    p.add_argument("--execution", default="async", choices=["async", "sync", "ensemble"], help="chunk execution")
    p.add_argument("--worker", default="thread", choices=["thread", "process"], help="where inference runs")
    p.add_argument("--rate", type=float, default=None, help="control loop rate in Hz (default: the spec's control_hz)")
    p.add_argument("--phase", type=float, default=0.25,
                   help="tick this fraction of a period after each observation's stamp (phase-locked to the "
                        "robot); negative: free-running")
    p.add_argument("--rt-priority", type=int, default=50,
                   help="SCHED_FIFO priority of the control thread where the OS allows it (0: off)")
    p.add_argument("--no-lookahead", dest="lookahead", action="store_false",
                   help="ask the controller for the action at the tick's time instead of at the robot's next "
                        "control step (when the published action takes effect)")
    p.add_argument("--output", default="action", choices=["action", "trajectory"],
                   help="/action_command per tick, or each chunk as a JointTrajectory (joint_pos policies)")
    p.add_argument("--stale-after", type=float, default=None, help="hold when the newest observation is older (s)")
    p.add_argument("--max-latency", type=float, default=None, help="hold when a query takes longer (s)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads where inference runs (0: torch's default)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"),
                   help="what runs the policy: torch, or onnxruntime on the CPU (an ONNX export directory); auto: "
                        "onnxruntime for an export directory, else torch")
    p.add_argument("--diag-hz", type=float, default=2.0, help="/diagnostics rate (0: off)")
    p.add_argument("--check-robot", type=float, default=20.0, metavar="S",
                   help="exit (code 2) naming the observation keys the robot does not provide when a topic the "
                        "checkpoint needs has no publisher S seconds after start (0: do not check)")
    p.add_argument("--name", default="inference_node", help="node name")
    p.add_argument("--image-transport", default="raw", choices=("raw", "compressed"),
                   help="camera topics: image_raw (Image) or image_raw/compressed (a camera node's JPEG)")
    return p


def make_controller(args, spec, action_mode: str):
    from robot_rl.runtime.controller import DeployController
    device = args.device
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # stamps from a realtime robot node are wall-clock time: the controller's clock too
    return DeployController(args.checkpoint, spec, action_mode=action_mode, sampler={"mode": args.mode},
                            executor={"execution": args.execution}, worker=args.worker,
                            stale_after_s=args.stale_after, max_latency_s=args.max_latency, clock=time.time,
                            device=device, torch_threads=args.torch_threads or None, backend=args.backend)


def _check_robot_after(node: "InferenceNode", ex, seconds: float, keys: list[str]) -> None:
    """After `seconds`, every topic the checkpoint needs must have a publisher; else one line
    naming the missing keys (privileged ones: a twin-only checkpoint) and exit code 2."""
    from robot_rl.observations import PRIVILEGED_KEYS
    part_keys = {"joint_states": _JS_KEYS, "ee_pose": _EE_KEYS, "object_state": _OBJ_KEYS}

    def check():
        timer.cancel()
        missing = node.missing_parts()
        if not missing:
            return
        lost = sorted(k for k in keys if k in missing or any(k in part_keys.get(p, ()) for p in missing))
        priv = [k for k in lost if k in PRIVILEGED_KEYS]
        hint = (f"; {priv} only exist on the twin: train a deployable policy (policy.observations=deployable)"
                if priv else "")
        node.failed_check = (f"the robot does not provide {lost} (no publisher on {sorted(missing.values())} after "
                             f"{seconds:g} s) that this checkpoint needs{hint}")
        node.log.error(node.failed_check)
        node.node.context.try_shutdown()
    timer = node.node.create_timer(seconds, check)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    exit_on_help(build_parser, argv[1:])
    from rclpy.utilities import remove_ros_args
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    prog = "inference_node"
    try:
        import dataclasses

        from robot_rl.spec import load_spec
        spec = load_spec(args.robot)
        if args.rate and float(args.rate) != spec.control_hz:  # the robot's control rate (a recording at 30 Hz
            spec = dataclasses.replace(spec, control_hz=float(args.rate))  # trains a 30 Hz policy)
        cfg = checkpoint_config(args.checkpoint)
        action_mode = args.action_mode or (cfg.get("metadata") or {}).get("action_mode") or "ee_delta"
        if args.output == "trajectory" and action_mode != "joint_pos":
            raise ValueError(f"--output trajectory needs a joint_pos policy (JointTrajectory points are joint "
                             f"positions); this one outputs {action_mode!r} actions: use --output action")
        if args.output == "trajectory" and args.execution == "ensemble":
            raise ValueError("--output trajectory publishes whole chunks: it needs --execution async or sync "
                             "(ensembling happens per control tick)")
        ctl = make_controller(args, spec, action_mode)
    except (ValueError, KeyError, OSError, RuntimeError) as e:  # CheckpointError, SpecError, SamplerError,
        print(f"{prog}: {e}", file=sys.stderr)                      # WorkerDead
        return 2
    _import_ros()
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    node = None
    rc = 0
    try:
        # the policy's keys, plus joint_pos and gripper, which the controller's holds use
        keys = list(ctl.keys) + [k for k in ("joint_pos", "gripper") if k not in ctl.keys
                                 and (k != "gripper" or spec.gripper is not None)]
        keys += list(ctl.cameras)
        ObservationAssembler.required_parts(keys)  # unknown keys: one clear line, before DDS starts
    except ValueError as e:
        ctl.close()
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    try:
        node = InferenceNode(ctl, spec, keys, action_mode=action_mode, rate=args.rate, output=args.output,
                             phase=args.phase, lookahead=args.lookahead, diag_hz=args.diag_hz, node_name=args.name,
                             settings=ctl.params(), rt_priority=args.rt_priority,
                             image_metadata=cfg.get("metadata"), image_transport=args.image_transport)
        sys.setswitchinterval(2e-4)  # a waking control thread gets the GIL quickly
        cur = ctl.params()
        node.log.info(f"{Path(args.checkpoint)} ({ctl.worker.info.get('backend', 'torch')}) on {spec.name}: "
                      f"{action_mode} actions at {node.rate:g} Hz, "
                      f"sampler {cur['mode']}, execution {cur['execution']}, worker {args.worker}, output "
                      f"{args.output}; observation keys {keys}")
        node.start()
        ex = SingleThreadedExecutor()
        ex.add_node(node.node)
        if args.check_robot > 0:
            _check_robot_after(node, ex, args.check_robot, keys)
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as e:  # a bad `--ros-args -p` override
        print(f"{prog}: {e}", file=sys.stderr)
        rc = 2
    finally:
        if node is not None:
            node.stop()
        try:
            ctl.close()
        except Exception as e:  # noqa: BLE001
            print(f"{prog}: while closing the controller: {e}", file=sys.stderr)
        if node is not None:
            node.node.destroy_node()
        rclpy.try_shutdown()
    if node is not None and node.failed:
        rc = 1
    if node is not None and node.failed_check is not None:  # the robot lacks keys the checkpoint needs
        print(f"{prog}: {node.failed_check}", file=sys.stderr)
        rc = 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
