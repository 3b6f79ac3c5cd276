"""``robot-rl virtual <kind>``: virtual hardware on this machine.

    robot-rl virtual camera --camera front --width 640 --height 480 --fps 30 --port 8081
        [--noise 3] [--jitter 0.05] [--drop 0.0] [--stall-after S] [--task pick_cube] [--synthetic]

``camera`` serves a twin camera (the task's scripted expert at work) or a synthetic
pattern as an HTTP MJPEG stream until Ctrl-C; point ``OpenCVCamera`` (or a browser) at the
printed URL.
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
    from robot_rl.cli.main import CLIError
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


KINDS = {"camera": cmd_camera}


def cmd_virtual(args: list[str]) -> int:
    from robot_rl.cli.main import CLIError
    if not args or args[0] not in KINDS:
        got = f" (got {args[0]!r})" if args else ""
        raise CLIError(f"'virtual' needs a kind{got}: robot-rl virtual {{{'|'.join(KINDS)}}} [--help]")
    return KINDS[args[0]](args[1:])
