"""The scripted person at the virtual SO-101's desk, reached over HTTP on loopback.

``POST /person`` with JSON ``{"do": ACTION, ...}`` answers when the action is done
(``{"ok": true, ...}``; a request the person cannot follow: 400 ``{"error": "..."}``):

- ``{"do": "plug", "arm": A, "motor": M, "only": false}``: plug motor M's cable into the
  arm's bus (factory-new units; ``only``: unplug every other motor first, as LeRobot's
  setup asks).
- ``{"do": "pose", "arm": A, "pose": "zero"|"check"}``: move the arm to a calibration pose of
  its hardware description (``"angles": {motor: value}`` instead: any pose) in ~0.5-1 s and
  hold it there. The follower must be powered down (Torque_Enable = 0).
- ``{"do": "sweep", "arm": A, "seconds": 5}``: each joint through its whole range (spec
  lower .. upper and back, gripper open .. closed), one after the other, then hold.
- ``{"do": "release", "arm": A}``: let go (a torque-off follower sags).
- ``{"do": "teleop", "episodes": N, "seed": S, "max_seconds": T}``: in the background, per
  episode: move the leader home, place the scene's objects (seed S+k), press ``start``,
  move the LEADER with the task's scripted expert watching the follower's scene, press
  ``success`` once the task's success test held 0.3 s (``failure`` after T seconds).
- ``{"do": "scene", "seed": S}``: set up the follower's scene for an episode: the task's
  objects where ``RobotEnv.reset(seed=S)`` puts them, the arm left where it is (between
  the episodes a policy runs).
- ``{"do": "stop"}``: stop teleoperating; ``{"do": "unplug", "arm": A}``: pull the arm's
  USB adapter (``"motor": M``: only that motor's cable).
- ``"wait": false`` on plug/pose/sweep/release: answer at once, act in the background.

``GET /events?after=K[&timeout=S]`` -> ``{"events": [{"k", "event", "t", "episode", "seed"}]}``
(events numbered from 1; ``timeout`` waits that long for one), ``GET /truth`` -> the true
joint angles / closures of both arms, torque, holds, plugged motors and the task's success
(benchmarks and tests only: the code under test never reads it), ``GET /status``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

log = logging.getLogger(__name__)

ARMS = ("follower", "leader")
ACTIONS = ("plug", "pose", "sweep", "release", "teleop", "stop", "unplug", "scene")


class PersonError(ValueError):
    """A request the person cannot follow (HTTP 400)."""


class _Stopped(Exception):
    pass


def _smooth(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * (3.0 - 2.0 * s)


class Person:
    """The scripted person. `rig` is a started ``VirtualSO101`` (plants, hardware, buses)."""

    rate_hz = 100.0  # hand motion updates
    leader_hz = 60.0  # teleop: leader updates (the expert decides at the spec's control rate)

    def __init__(self, rig):
        self.rig = rig
        self._busy = {a: threading.Lock() for a in ARMS}
        self._doing = {a: "" for a in ARMS}
        self._stop = threading.Event()
        self._teleop_stop = threading.Event()
        self._teleop: threading.Thread | None = None
        self._teleop_state: dict[str, Any] = {"running": False, "episode": None, "done": 0}
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._background: list[threading.Thread] = []

    # -- requests --------------------------------------------------------------------------------
    def do(self, req: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(req, dict):
            raise PersonError("the request must be a JSON object like {\"do\": \"pose\", ...}")
        what = req.get("do")
        if what not in ACTIONS:
            raise PersonError(f"unknown action {what!r}; the person can do: {', '.join(ACTIONS)}")
        if what == "teleop":
            return self._start_teleop(req)
        if what == "stop":
            return self._stop_teleop()
        if what == "scene":
            try:
                seed = int(req["seed"])
            except (KeyError, TypeError, ValueError):
                raise PersonError("scene: needs an integer 'seed'") from None
            if self._doing["follower"]:
                raise PersonError(f"scene: the person is busy with the follower ({self._doing['follower']})")
            self.rig.follower.place_objects(seed)
            return {"ok": True, "do": "scene", "seed": seed}
        arm = req.get("arm")
        if arm not in ARMS:
            raise PersonError(f"{what}: 'arm' must be 'follower' or 'leader', got {arm!r}")
        if what == "unplug":
            return self._unplug(arm, req.get("motor"))
        if what == "plug":
            motor = self._motor(arm, req.get("motor"))
            fn = lambda: self.rig.plug(arm, motor, only=bool(req.get("only", False)))  # noqa: E731
        elif what == "pose":
            targets = self._pose_targets(arm, req)
            fn = lambda: self._pose(arm, targets, req.get("seconds"))  # noqa: E731
        elif what == "sweep":
            seconds = float(req.get("seconds", 5.0))
            if not 0.5 <= seconds <= 120:
                raise PersonError(f"sweep: seconds must be in 0.5..120, got {seconds}")
            fn = lambda: self._sweep(arm, seconds)  # noqa: E731
        else:  # release
            fn = lambda: self.rig.plants[arm].release()  # noqa: E731
        return self._run_on(arm, what, fn, wait=bool(req.get("wait", True)))

    def _run_on(self, arm: str, what: str, fn, wait: bool) -> dict[str, Any]:
        lock = self._busy[arm]
        if not lock.acquire(blocking=False):
            raise PersonError(f"the person is busy with the {arm} ({self._doing[arm]}); "
                              "wait for it to finish" + (" or send {\"do\": \"stop\"}"
                                                         if self._doing[arm] == "teleop" else ""))
        self._doing[arm] = what

        def run() -> dict[str, Any]:
            try:
                return fn() or {}
            finally:
                self._doing[arm] = ""
                lock.release()

        if wait:
            try:
                out = run()
            except _Stopped:
                raise PersonError(f"{what}: interrupted (the rig is shutting down)") from None
            return {"ok": True, "do": what, "arm": arm, **out}

        def bg() -> None:
            try:
                run()
            except _Stopped:
                pass
            except Exception:
                log.exception("person: %s on the %s failed", what, arm)

        t = threading.Thread(target=bg, name=f"person-{what}", daemon=True)
        self._background.append(t)
        t.start()
        return {"ok": True, "do": what, "arm": arm, "started": True}

    def _motor(self, arm: str, motor: Any) -> str:
        names = self.rig.plants[arm].motor_names
        if motor not in names:
            raise PersonError(f"the {arm} has no motor {motor!r} (motors: {', '.join(names)})")
        return motor

    def _pose_targets(self, arm: str, req: dict[str, Any]) -> dict[str, float]:
        plant = self.rig.plants[arm]
        if "angles" in req:
            angles = req["angles"]
            if not isinstance(angles, dict) or not angles:
                raise PersonError("pose: 'angles' must map motor names to angles (rad) / gripper closure")
            out = {}
            for n, v in angles.items():
                self._motor(arm, n)
                lo, hi = plant.limits(n)
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise PersonError(f"pose: angle of {n} must be a number, got {v!r}") from None
                if not lo - 1e-9 <= v <= hi + 1e-9:
                    raise PersonError(f"pose: {n} = {v} is outside its range [{lo}, {hi}]")
                out[n] = v
            return out
        name = req.get("pose")
        poses = self.rig.hardware[arm].calibration
        if name not in poses:
            raise PersonError(f"pose: unknown pose {name!r}; the {arm}'s hardware description has "
                              f"{', '.join(poses) or 'none'} (or send 'angles')")
        return {n: float(v) for n, v in poses[name].items() if n in plant.motor_names}

    # -- hands ----------------------------------------------------------------------------------
    def _check_unpowered(self, arm: str) -> None:
        if arm != "follower":
            return  # a leader's servos are weak: the person moves it regardless
        plant = self.rig.plants[arm]
        t_end = time.monotonic() + 0.3  # a SYNC_WRITE of Torque_Enable may still be on the wire
        while plant.torque_on() and time.monotonic() < t_end:
            time.sleep(0.01)
        on = plant.torque_on()
        if on:
            raise PersonError(f"torque is on in the follower's {', '.join(on)}: the person cannot move a "
                              "powered arm (write Torque_Enable = 0 first)")

    def _sleep_until(self, t: float) -> None:
        d = t - time.monotonic()
        if d > 0 and self._stop.wait(d):
            raise _Stopped()
        if self._stop.is_set():
            raise _Stopped()

    def move(self, arm: str, targets: dict[str, float], seconds: float, start: dict[str, float] | None = None,
             stop: threading.Event | None = None) -> None:
        """Move the named motors smoothly (smoothstep) from where they are to `targets` in
        `seconds` and keep holding them (the person's hand)."""
        plant = self.rig.plants[arm]
        now = plant.values()
        start = {n: (start or now).get(n, now[n]) for n in targets}
        plant.hold(start)
        t0 = time.monotonic()
        k = 0
        dt = 1.0 / self.rate_hz
        while seconds > 0:
            k += 1
            t = t0 + k * dt
            self._sleep_until(t)
            if stop is not None and stop.is_set():
                return
            s = _smooth((t - t0) / seconds)
            plant.hold({n: start[n] + (targets[n] - start[n]) * s for n in targets})
            if s >= 1.0:
                break
        plant.hold(targets)

    def _distance(self, arm: str, a: dict[str, float], b: dict[str, float]) -> float:
        """Largest motion (rad of the servo shaft) between two poses."""
        travel = self.rig.plants[arm].travel
        return max([abs(a[n] - b[n]) * (travel if n == "gripper" else 1.0) for n in b] + [0.0])

    def _pose(self, arm: str, targets: dict[str, float], seconds: Any = None) -> dict[str, Any]:
        self._check_unpowered(arm)
        plant = self.rig.plants[arm]
        cur = plant.values()
        hold = dict(cur)
        hold.update(targets)
        if seconds is None:
            seconds = min(1.0, max(0.5, self._distance(arm, cur, hold) / 3.0))
        self.move(arm, hold, float(seconds))
        self._sleep_until(time.monotonic() + 0.05)  # settled: the reading is of the pose
        return {"pose": {n: round(v, 6) for n, v in hold.items()}}

    def _sweep(self, arm: str, seconds: float) -> dict[str, Any]:
        self._check_unpowered(arm)
        plant = self.rig.plants[arm]
        pose = plant.values()
        plant.hold(pose)
        hold_s = 0.1
        order = [m.name for m in self.rig.hardware[arm].motors]
        travel = plant.travel
        dist = 0.0
        for n in order:
            lo, hi = plant.limits(n)
            scale = travel if n == "gripper" else 1.0
            dist += (abs(pose[n] - lo) + (hi - lo) + abs(hi - pose[n])) * scale
        speed = dist / max(0.1, seconds - 2 * hold_s * len(order))  # rad/s of the servo shafts
        for n in order:
            lo, hi = plant.limits(n)
            scale = travel if n == "gripper" else 1.0
            for target, pause in ((lo, hold_s), (hi, hold_s), (pose[n], 0.0)):
                cur = plant.values()[n]
                self.move(arm, {n: target}, abs(target - cur) * scale / speed)
                if pause:
                    self._sleep_until(time.monotonic() + pause)
        return {"swept": order}

    def _unplug(self, arm: str, motor: Any) -> dict[str, Any]:
        if motor is not None:
            motor = self._motor(arm, motor)
        self.rig.unplug(arm, motor)
        return {"ok": True, "do": "unplug", "arm": arm, **({"motor": motor} if motor else {})}

    # -- teleoperation ------------------------------------------------------------------------------
    def _start_teleop(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            episodes = int(req.get("episodes", 1))
            seed = int(req.get("seed", 0))
            max_seconds = float(req.get("max_seconds", 30.0))
            hold = float(req.get("success_hold", 0.3))
            reset_s = float(req.get("reset_seconds", 1.0))
        except (TypeError, ValueError) as e:
            raise PersonError(f"teleop: episodes, seed, max_seconds must be numbers ({e})") from None
        if episodes < 1 or max_seconds <= 0 or hold < 0 or reset_s < 0:
            raise PersonError("teleop: episodes >= 1, max_seconds > 0, success_hold and reset_seconds >= 0")
        lock = self._busy["leader"]
        if not lock.acquire(blocking=False):
            raise PersonError(f"the person is busy with the leader ({self._doing['leader']}); "
                              "wait for it to finish" + (" or send {\"do\": \"stop\"}"
                                                         if self._doing["leader"] == "teleop" else ""))
        self._doing["leader"] = "teleop"
        self._teleop_stop.clear()
        self._teleop_state = {"running": True, "episode": None, "done": 0, "episodes": episodes, "seed": seed}

        def run() -> None:
            try:
                self._teleop_loop(episodes, seed, max_seconds, hold, reset_s)
            except _Stopped:
                pass
            except Exception:
                log.exception("person: teleoperation failed")
            finally:
                self._teleop_state["running"] = False
                self._doing["leader"] = ""
                lock.release()

        self._teleop = threading.Thread(target=run, name="person-teleop", daemon=True)
        self._teleop.start()
        return {"ok": True, "do": "teleop", "episodes": episodes, "seed": seed, "max_seconds": max_seconds}

    def _stop_teleop(self) -> dict[str, Any]:
        self._teleop_stop.set()
        t = self._teleop
        if t is not None:
            t.join(timeout=5)
        return {"ok": True, "do": "stop", "episodes_done": self._teleop_state.get("done", 0)}

    def _teleop_loop(self, episodes: int, seed: int, max_seconds: float, success_hold: float,
                     reset_s: float) -> None:
        rig, stop = self.rig, self._teleop_stop
        follower, leader, spec = rig.follower, rig.leader, rig.spec
        joints = list(spec.joint_names)
        home = {n: float(v) for n, v in zip(joints, spec.home)}
        if "gripper" in leader.motor_names:
            home["gripper"] = 0.0
        period = 1.0 / spec.control_hz
        dt = 1.0 / self.leader_hz
        for k in range(episodes):
            if stop.is_set():
                return
            # between episodes: bring the leader (and so the follower) home, set up the scene
            self.move("leader", home, reset_s, stop=stop)
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end and not stop.is_set():
                f = follower.values()
                if max(abs(f[n] - home[n]) for n in joints) < 0.05:
                    break
                self._sleep_until(time.monotonic() + 0.05)
            if stop.is_set():
                return
            follower.place_objects(seed + k)
            expert = follower.task.make_expert(np.random.default_rng(seed + k))
            self._teleop_state["episode"] = k
            self.event("start", episode=k, seed=seed + k)
            t0 = time.monotonic()
            prev = leader.values()
            target = dict(prev)
            t_target = t0
            next_expert = t0
            ok_since = None
            tick = 0
            result = "failure"
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_expert:
                    action = expert.act(follower.observe())
                    q, grip = follower.action_to_targets(action)
                    prev = leader.values()
                    target = {n: float(v) for n, v in zip(joints, q)}
                    if grip is not None and "gripper" in leader.motor_names:
                        target["gripper"] = float(grip)
                    t_target = now
                    next_expert += period
                    if next_expert < now:
                        next_expert = now + period
                s = min(1.0, (now - t_target) / period)
                leader.hold({n: prev[n] + (target[n] - prev[n]) * s for n in target})
                if follower.success():
                    ok_since = now if ok_since is None else ok_since
                    if now - ok_since >= success_hold:
                        result = "success"
                        break
                else:
                    ok_since = None
                if now - t0 >= max_seconds:
                    break
                tick += 1
                self._sleep_until(t0 + tick * dt)
            if stop.is_set():
                return
            self.event(result, episode=k, seed=seed + k)
            self._teleop_state["done"] = k + 1

    # -- events / truth -----------------------------------------------------------------------------
    def event(self, name: str, **extra: Any) -> dict[str, Any]:
        with self._cond:
            ev = {"k": len(self._events) + 1, "event": name, "t": time.time(), **extra}
            self._events.append(ev)
            self._cond.notify_all()
        log.info("person: %s %s", name, extra)
        return ev

    def events(self, after: int = 0, timeout: float = 0.0) -> list[dict[str, Any]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self._events) > after or self._stop.is_set(), max(0.0, timeout))
            return [dict(e) for e in self._events[max(0, after):]]

    def truth(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for arm in ARMS:
            plant = self.rig.plants[arm]
            v = plant.values()
            out[arm] = {"q": {n: v[n] for n in plant.motor_names if n != "gripper"},
                        "gripper": v.get("gripper"),
                        "torque": {n: plant.torque[n] for n in plant.motor_names},
                        "held": sorted(plant.held),
                        "plugged": self.rig.plugged(arm),
                        "busy": self._doing[arm]}
        out["success"] = self.rig.follower.success()
        out["object_state"] = [float(x) for x in self.rig.follower.observe()["object_state"]]
        out["teleop"] = dict(self._teleop_state)
        out["t"] = time.time()
        return out

    def status(self) -> dict[str, Any]:
        return {"busy": dict(self._doing), "teleop": dict(self._teleop_state), "events": len(self._events)}

    def close(self) -> None:
        self._stop.set()
        self._teleop_stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in [self._teleop] + self._background:
            if t is not None:
                t.join(timeout=5)
        self._background.clear()


# -- HTTP -------------------------------------------------------------------------------------------
class PersonServer:
    """``Person`` over HTTP on `host`:`port` (0 = a free port)."""

    def __init__(self, person: Person, host: str = "127.0.0.1", port: int = 0):
        self.person, self.host, self._port = person, host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "PersonServer":
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer((self.host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="person-http", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("PersonServer is not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}/person"

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    server_owner: PersonServer  # HTTP/1.0: one request per connection (close() leaves no thread behind)

    def log_message(self, format, *args):
        log.debug("person %s: " + format, self.client_address[0], *args)

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        person = self.server_owner.person
        u = urlparse(self.path)
        q = parse_qs(u.query)
        try:
            if u.path == "/events":
                after = int(q.get("after", ["0"])[0])
                timeout = min(30.0, float(q.get("timeout", ["0"])[0]))
                self._json(200, {"events": person.events(after, timeout)})
            elif u.path == "/truth":
                self._json(200, person.truth())
            elif u.path in ("/status", "/", "/person"):
                self._json(200, {**person.status(), "endpoints": ["POST /person", "GET /events?after=K",
                                                                   "GET /truth", "GET /status"],
                                 "actions": list(ACTIONS)})
            else:
                self._json(404, {"error": f"no {u.path}: try POST /person, GET /events, /truth, /status"})
        except ValueError as e:
            self._json(400, {"error": f"bad query: {e}"})

    def do_POST(self):
        u = urlparse(self.path)
        if u.path != "/person":
            self._json(404, {"error": f"POST to /person, not {u.path}"})
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(n) or b"{}")
        except (ValueError, json.JSONDecodeError) as e:
            self._json(400, {"error": f"the body must be JSON like {{\"do\": \"pose\", ...}} ({e})"})
            return
        try:
            self._json(200, self.server_owner.person.do(req))
        except KeyError as e:
            self._json(400, {"error": str(e.args[0] if e.args else e)})
        except (PersonError, ValueError) as e:
            self._json(400, {"error": str(e)})
        except Exception as e:  # a bug, not the caller's fault: say so, keep serving
            log.exception("person: %r failed", req)
            self._json(500, {"error": f"{type(e).__name__}: {e}"})


def person_urls(url: str) -> tuple[str, str]:
    """(the POST /person URL, the server's base URL) of what `robot-rl virtual so101`
    printed, with or without ``/person`` or a scheme."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    post_url = url if url.endswith("/person") else url + "/person"
    return post_url, post_url[: -len("/person")]


def _call(req, timeout: float, where: str) -> dict[str, Any]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:  # the person answered: it could not do it
        detail = e.read().decode(errors="replace").strip()
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise PersonError(detail or str(e)) from None
    except (urllib.error.URLError, OSError) as e:
        raise PersonError(f"cannot reach the person at {where} ({getattr(e, 'reason', e)}): is `robot-rl virtual "
                          "so101` running, and is person= the URL it printed?") from None
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise PersonError(f"the person at {where} answered something that is not JSON") from None


def post(url: str, body: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send the person one instruction; returns when it is done. PersonError names what went
    wrong (it could not do it, or it cannot be reached)."""
    import urllib.request
    post_url, _ = person_urls(url)
    req = urllib.request.Request(post_url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return _call(req, timeout, post_url)


def get(url: str, path: str, timeout: float = 10.0, **query: Any) -> dict[str, Any]:
    """GET `path` (``/events``, ``/truth``, ``/status``) of the person server `url` names."""
    import urllib.parse
    _, base = person_urls(url)
    qs = ("?" + urllib.parse.urlencode(query)) if query else ""
    return _call(base + path + qs, timeout, base)


__all__ = ["Person", "PersonServer", "PersonError", "person_urls", "post", "get", "ACTIONS"]
