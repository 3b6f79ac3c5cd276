"""``robot-rl virtual <kind>``: virtual hardware on this machine.

    robot-rl virtual camera --camera front --width 640 --height 480 --fps 30 --port 8081
        [--noise 3] [--jitter 0.05] [--drop 0.0] [--stall-after S] [--task pick_cube] [--synthetic]

``camera`` serves a twin camera (the task's scripted expert at work) or a synthetic
pattern as an HTTP MJPEG stream until Ctrl-C; point ``OpenCVCamera`` (or a browser) at the
printed URL.

    robot-rl virtual so101 [unit=FILE] [--seed N] [--duration S] [--info-json PATH]
        [--random-unit SEED [--leader koch_leader] [--factory-new]] [--camera-size WxH] [--fps F]

``so101`` is the robot on the desk: the follower and leader servo buses (pseudo-terminals),
the live scene's cameras and the scripted person's URL are printed (and written to
``--info-json``); it runs until Ctrl-C / SIGTERM (see ``robot_rl.drivers.virtual.so101``).
"""
from __future__ import annotations

import argparse
import time


def _camera_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robot-rl virtual camera",
                                description="Serve a virtual camera as HTTP MJPEG (Ctrl-C stops it).")
    p.add_argument("--camera", default="front", help="twin camera name (default: front)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8081, help="TCP port (0 = any free port)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian sensor noise sigma, grey levels")
    p.add_argument("--jitter", type=float, default=0.0, help="exposure jitter: per-frame gain ~ N(1, jitter)")
    p.add_argument("--drop", type=float, default=0.0, help="probability a frame is not sent")
    p.add_argument("--stall-after", type=float, default=None, metavar="S",
                   help="stop sending after S seconds (connections stay open)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="pick_cube", help="twin task whose expert moves the arm")
    p.add_argument("--robot", default="so101")
    p.add_argument("--synthetic", action="store_true", help="a synthetic pattern instead of the twin (no MuJoCo)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    return p


def cmd_camera(args: list[str]) -> int:
    from robot_rl.cli.common import CLIError
    from robot_rl.drivers.virtual.camera import Impairments, MJPEGServer, SyntheticSource, TwinCameraSource

    a = _camera_parser().parse_args(args)
    if a.width <= 0 or a.height <= 0 or a.fps <= 0 or not 1 <= a.quality <= 100:
        raise CLIError("--width, --height and --fps must be > 0 and --quality in 1..100")
    try:
        imp = Impairments(noise_sigma=a.noise, exposure_jitter=a.jitter, drop_prob=a.drop, seed=a.seed)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if a.synthetic:
        try:
            source = SyntheticSource(a.width, a.height)
        except ValueError as e:
            raise CLIError(str(e)) from None
    else:
        from robot_rl.sim import ENV_IDS
        if a.task not in ENV_IDS:
            raise CLIError(f"unknown task {a.task!r}; available: {', '.join(sorted(ENV_IDS))}")
        try:
            source = TwinCameraSource(a.task, a.camera, a.width, a.height, fps=a.fps, robot=a.robot, seed=a.seed)
        except KeyError as e:
            raise CLIError(f"camera {a.camera!r}: {e.args[0] if e.args else e}") from None
    server = MJPEGServer(source, host=a.host, port=a.port, fps=a.fps, quality=a.quality, impairments=imp,
                         stall_after_s=a.stall_after)
    try:
        server.start()
    except OSError as e:
        source.close()
        raise CLIError(f"cannot listen on {a.host}:{a.port}: {e.strerror or e} (pick another --port)") from None
    base = server.url.rsplit("/", 1)[0]
    what = "synthetic pattern" if a.synthetic else f"twin camera {a.camera!r} ({a.task})"
    print(f"virtual camera: {what} {a.width}x{a.height} @ {a.fps:g} fps\n"
          f"  stream   {server.url}\n  snapshot {base}/snapshot.jpg\n  stats    {base}/stats\n"
          "Ctrl-C stops it.", flush=True)
    # SIGINT and SIGTERM stop it cleanly, also when started in the background (where a shell
    # leaves SIGINT ignored and Python would never raise KeyboardInterrupt)
    import signal
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    t0 = time.monotonic()
    try:
        while not stop and (a.duration is None or time.monotonic() - t0 < a.duration):
            time.sleep(0.1)
    finally:
        server.close()
        source.close()
    s = server.stats()
    print(f"virtual camera stopped: {s['frames_published']} frames, {s['frames_served']} sent, "
          f"{s['dropped_injected']} dropped on purpose, {s['overruns']} late slots skipped", flush=True)
    return 0


def _so101_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="robot-rl virtual so101",
        description="A virtual SO-101 on this machine: follower + leader servo buses on pseudo-terminals, "
                    "cameras of the live scene as HTTP MJPEG, and the scripted person (HTTP). "
                    "Ctrl-C / SIGTERM stops it. Settings also as key=value (unit=FILE seed=3 ...).")
    p.add_argument("--unit", default="so101_default",
                   help="unit file: a name in robot_rl/conf/units or a YAML path (default: so101_default)")
    p.add_argument("--random-unit", type=int, default=None, metavar="SEED",
                   help="instead of --unit: a random unit (factory offsets/directions) from SEED")
    p.add_argument("--leader", default="so101_leader", help="with --random-unit: so101_leader | koch_leader")
    p.add_argument("--factory-new", action="store_true",
                   help="with --random-unit: servos fresh from the factory (ID 1, factory baud, unplugged)")
    p.add_argument("--save-unit", default=None, metavar="PATH", help="write the unit in use to PATH (YAML)")
    p.add_argument("--seed", type=int, default=None, help="scene / noise seed (default: the unit's)")
    p.add_argument("--task", default=None, help="the scene on the table (default: the unit's)")
    p.add_argument("--camera-size", default=None, metavar="WxH", help="render every camera at WxH")
    p.add_argument("--fps", type=float, default=None, help="every camera's frame rate")
    p.add_argument("--host", default="127.0.0.1", help="address of the camera / person servers (loopback)")
    p.add_argument("--person-port", type=int, default=0, help="TCP port of the person (0 = any free port)")
    p.add_argument("--info-json", default=None, metavar="PATH",
                   help="also write the ports and URLs as JSON to PATH (written once everything is up)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    return p


def _kv_to_flags(args: list[str]) -> list[str]:
    """``unit=FILE seed=3 info_json=P`` -> ``--unit FILE --seed 3 --info-json P`` (flags pass through)."""
    out = []
    for a in args:
        if "=" in a and not a.startswith("-"):
            k, v = a.split("=", 1)
            k = k.replace("_", "-")
            if k in ("factory-new",):
                if v.lower() in ("1", "true", "yes"):
                    out.append(f"--{k}")
                continue
            out += [f"--{k}", v]
        else:
            out.append(a)
    return out


def cmd_so101(args: list[str]) -> int:
    import json
    import os
    import signal

    from robot_rl.cli.common import CLIError
    from robot_rl.drivers.hardware import HardwareError
    from robot_rl.drivers.virtual.so101 import UnitError, VirtualSO101, load_unit, random_unit

    a = _so101_parser().parse_args(_kv_to_flags(args))
    try:
        if a.random_unit is not None:
            unit = random_unit(a.random_unit, leader=a.leader, factory_new=a.factory_new)
        else:
            unit = load_unit(a.unit)
        if a.seed is not None:
            unit.seed = int(a.seed)
        if a.task is not None:
            unit.task = a.task
        if a.camera_size or a.fps:
            w, h = unit.cameras[0].width, unit.cameras[0].height
            if a.camera_size:
                try:
                    w, h = (int(x) for x in a.camera_size.lower().split("x"))
                except ValueError:
                    raise CLIError(f"--camera-size must look like 320x240, got {a.camera_size!r}") from None
            fps = a.fps or unit.cameras[0].fps
            if w <= 0 or h <= 0 or fps <= 0:
                raise CLIError("--camera-size and --fps must be positive")
            unit = unit.with_cameras(w, h, fps)
        if a.save_unit:
            unit.save(a.save_unit)
    except (UnitError, HardwareError) as e:
        raise CLIError(str(e)) from None
    rig = VirtualSO101(unit, host=a.host, person_port=a.person_port)
    try:
        info = rig.start()
    except (UnitError, HardwareError) as e:
        raise CLIError(str(e)) from None
    except OSError as e:
        raise CLIError(f"cannot start the virtual SO-101: {e.strerror or e} (a port in use? pick other "
                       "camera ports in the unit file or --person-port)") from None
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    try:
        if a.info_json:
            tmp = f"{a.info_json}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump({**info, "unit": unit.path or None, "task": unit.task, "seed": unit.seed}, f, indent=1)
            os.replace(tmp, a.info_json)
        cams = "\n".join(f"  camera {n:<8} {u}" for n, u in info["cameras"].items())
        fresh = {arm: " (factory-new: plug the motors in through the person)" if info["factory_new"][arm] else ""
                 for arm in ("follower", "leader")}
        print(f"virtual SO-101: unit {unit.path or '(random, seed ' + str(a.random_unit) + ')'}, "
              f"task {unit.task}, seed {unit.seed}\n"
              f"  follower port  {info['follower_port']}  ({info['follower']['hardware']}, "
              f"{info['follower']['protocol']}){fresh['follower']}\n"
              f"  leader port    {info['leader_port']}  ({info['leader']['hardware']}, "
              f"{info['leader']['protocol']}){fresh['leader']}\n{cams}\n"
              f"  person         {info['person']}\n"
              "Ctrl-C stops it.", flush=True)
        t0 = time.monotonic()
        while not stop and (a.duration is None or time.monotonic() - t0 < a.duration):
            time.sleep(0.1)
    finally:
        rig.close()
        if a.info_json and os.path.exists(a.info_json):
            os.unlink(a.info_json)
    print("virtual SO-101 stopped", flush=True)
    return 0


KINDS = {"camera": cmd_camera, "so101": cmd_so101}


def cmd_virtual(args: list[str]) -> int:
    from robot_rl.cli.common import CLIError
    if not args or args[0] not in KINDS:
        got = f" (got {args[0]!r})" if args else ""
        raise CLIError(f"'virtual' needs a kind{got}: robot-rl virtual {{{'|'.join(KINDS)}}} [--help]")
    return KINDS[args[0]](args[1:])
