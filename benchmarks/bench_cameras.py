"""Cameras at real resolution, end to end over real processes:

    virtual camera (twin render 640x480 + sensor noise, MJPEG over HTTP on loopback)  x2
      -> camera node (OpenCV capture, /camera/<name>/image_raw[/compressed])          x2
      -> recorder node (CompressedImage contract, realtime grid at the camera rate)
      -> episode store (per-frame JPEG q90 for 640x480 keys)

Two cases:

- ``session`` (``--minutes``, default 10): the realtime recording. Per camera: frames the
  server sent, frames the camera node captured / published, messages the recorder received
  and the gaps it found in the stamps, grid steps skipped, frames recorded once / twice /
  never; achieved rate from the stamps; CPU share of one core per process; bytes on disk
  against raw (frames x H x W x 3).
- ``quality`` (``--quality-s``, default 20 s): the same pipeline with the recorder also
  taking ``image_raw`` into a lossless key for the same steps (both forms of a frame carry
  the same header stamp), so raw, lossless and JPEG stand side by side: bytes per frame,
  ratio and PSNR of the stored JPEG against the frame the camera node captured.

    scripts/isolated.sh .venv/bin/python benchmarks/bench_cameras.py [--minutes 10] [--quality-s 20]
        [--width 640] [--height 480] [--fps 30] [--noise 3] [--jpeg-quality 90] [--out FILE]

Refuses to run outside a loopback-only network namespace (scripts/isolated.sh makes one).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import print_table, write_json  # noqa: E402
from bench_ros_record import DiagListener, cpu_s, loadavg, spawn, stop  # noqa: E402

CAMS = ("front", "wrist")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_http(url: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            http_json(url, timeout=1.0)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"virtual camera at {url} did not come up in {timeout:.0f} s")


def write_contract(path: Path, fps: float, with_raw: bool) -> Path:
    topics = [{"topic": "/camera/{camera}/image_raw/compressed", "type": "sensor_msgs/msg/CompressedImage",
               "qos": "sensor", "policy": "drop", "rate": fps, "fields": {"image_{camera}": "rgb"}}]
    if with_raw:
        topics.append({"topic": "/camera/{camera}/image_raw", "type": "sensor_msgs/msg/Image", "qos": "sensor",
                       "policy": "drop", "rate": fps, "fields": {"image_{camera}_raw": "rgb"}})
    path.write_text(yaml.safe_dump({"name": "cameras", "fps": fps, "latency": 0.2, "event_topic": "/teleop/event",
                                    "topics": topics}, sort_keys=False))
    return path


def write_spec(path: Path, width: int, height: int, fps: float) -> Path:
    import dataclasses

    from robot_rl.spec import load_spec
    spec = load_spec("so101").with_cameras(list(CAMS), width, height)
    spec = dataclasses.replace(spec, control_hz=float(fps))
    path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return path


class EventPublisher:
    """/teleop/event from this process (real rclpy, reliable), on the DiagListener's context."""

    def __init__(self, diag: DiagListener) -> None:
        from std_msgs.msg import String

        from robot_rl.ros import topics
        self._String = String
        self.pub = diag.node.create_publisher(String, topics.TELEOP_EVENT, topics.reliable_qos(50))

    def wait_matched(self, timeout: float = 30.0) -> None:
        """Until the recorder's subscription is matched: an event sent before discovery is lost."""
        end = time.monotonic() + timeout
        while self.pub.get_subscription_count() == 0:
            if time.monotonic() > end:
                raise SystemExit("the recorder never subscribed to /teleop/event")
            time.sleep(0.05)

    def send(self, text: str) -> None:
        self.pub.publish(self._String(data=text))


def run_pipeline(a, work: Path, diag: DiagListener, seconds: float, with_raw: bool, tag: str) -> dict:
    """Start servers, camera nodes and the recorder; record ``seconds`` in episodes of
    ``a.episode_s``; stop everything; return the raw accounting."""
    store = work / f"{tag}.zarr"
    contract = write_contract(work / f"{tag}_contract.yaml", a.fps, with_raw)
    spec = write_spec(work / "spec.yaml", a.width, a.height, a.fps)
    procs, ports = {}, {}
    for i, cam in enumerate(CAMS):
        ports[cam] = free_port()
        procs[f"virtual_{cam}"] = spawn(
            "robot_rl.cli.main", "virtual", "camera", "--camera", cam, "--width", str(a.width), "--height",
            str(a.height), "--fps", str(a.fps), "--port", str(ports[cam]), "--noise", str(a.noise),
            "--seed", str(i), log=work / f"{tag}_virtual_{cam}.log")
    for cam in CAMS:
        wait_http(f"http://127.0.0.1:{ports[cam]}/stats")
    for cam in CAMS:
        procs[f"camera_{cam}"] = spawn(
            "robot_rl.ros.camera_node", "--name", cam, "--source", f"http://127.0.0.1:{ports[cam]}/stream.mjpg",
            "--width", str(a.width), "--height", str(a.height), "--fps", str(a.fps), "--jpeg-quality",
            str(a.jpeg_quality), "--max-age", "0.5", "--wait-subscribers", "1", log=work / f"{tag}_camera_{cam}.log")
    rec_args = ["--contract", str(contract), "--out", str(store), "--robot", str(spec), "--task", "camera_session",
                "--cameras", ",".join(CAMS), "--mode", "realtime", "--fps", str(a.fps)]
    for cam in CAMS:
        rec_args += ["--codec", f"image_{cam}=jpeg:{a.jpeg_quality}"]
        if with_raw:
            rec_args += ["--codec", f"image_{cam}_raw=lossless"]
    procs["recorder"] = spawn("robot_rl.ros.recorder_node", *rec_args, log=work / f"{tag}_recorder.log")
    # wait until both cameras publish and the recorder is up
    end = time.monotonic() + 60
    while time.monotonic() < end:
        ok = all(diag.status(f"camera/{c}").get("published_compressed", "0") not in ("0", "") for c in CAMS)
        if ok and diag.status("recorder"):
            break
        for n, p in procs.items():
            if p.poll() is not None:
                raise SystemExit(f"{n} exited early ({p.returncode}):\n" + (work / f"{tag}_{n}.log").read_text()[-3000:])
        time.sleep(0.2)
    else:
        raise SystemExit("cameras / recorder did not come up in 60 s; logs in " + str(work))
    ev = EventPublisher(diag)
    ev.wait_matched()
    time.sleep(1.0)
    cpu0 = {n: cpu_s(p.pid) for n, p in procs.items()}
    t0 = time.monotonic()
    n_eps = max(1, int(round(seconds / a.episode_s)))
    from tqdm import tqdm
    bar = tqdm(total=int(seconds), desc=f"{tag}: recording", unit="s", disable=not sys.stderr.isatty())
    for e in range(n_eps):
        ev.send(f"start task=camera_session episode={e}")
        t_end = t0 + (e + 1) * seconds / n_eps
        while time.monotonic() < t_end:
            time.sleep(0.5)
            bar.n = int(time.monotonic() - t0)
            bar.refresh()
        ev.send("success")
    bar.close()
    wall = time.monotonic() - t0
    cpu1 = {n: cpu_s(p.pid) for n, p in procs.items()}
    time.sleep(1.5)  # the last episode's steps are emitted after the latency
    # exact counts at every boundary: stop the sources first, let the last frames through,
    # then read the final counters of the camera nodes and the recorder
    live = {c: diag.wait_fresh(f"camera/{c}", timeout=3.0) for c in CAMS}  # achieved fps while streaming
    rcs, server_stats = {}, {}
    for c in CAMS:
        rcs[f"virtual_{c}"] = stop(procs.pop(f"virtual_{c}"))
        m = re.search(r"virtual camera stopped: (\d+) frames, (\d+) sent, (\d+) dropped on purpose, (\d+) late",
                      (work / f"{tag}_virtual_{c}.log").read_text())
        server_stats[c] = ({"frames_published": int(m[1]), "frames_served": int(m[2]), "dropped_injected": int(m[3]),
                            "overruns": int(m[4])} if m else {"error": "no final stats in the log"})
    time.sleep(1.5)
    cam_stats = {c: diag.wait_fresh(f"camera/{c}", timeout=3.0) for c in CAMS}
    rec_stats = diag.wait_fresh("recorder", timeout=3.0)
    rcs["recorder"] = stop(procs.pop("recorder"))
    for n, p in procs.items():
        rcs[n] = stop(p)
    if rcs["recorder"] != 0:
        raise SystemExit(f"recorder exited {rcs['recorder']}:\n" + (work / f"{tag}_recorder.log").read_text()[-3000:])
    cpu = {n: round((cpu1[n] - cpu0[n]) / wall, 3) for n in cpu1 if cpu1[n] is not None and cpu0[n] is not None}
    return {"store": store, "wall_s": wall, "cpu_share": cpu, "camera_diag": cam_stats, "server": server_stats,
            "camera_live": live, "recorder_diag": rec_stats, "episodes": n_eps, "rc": rcs}


def frame_accounting(store_path: Path, res: dict, a) -> tuple[list[dict], dict]:
    """Per camera, frames at every boundary (exact counters, read after the sources stopped):
    virtual camera sent -> camera node captured -> published -> recorder received; then the
    dataset: grid steps, steps skipped for want of a fresh frame, and how the 30 Hz grid
    sampled the camera's frames (once / twice / not at all: two free-running cameras on one
    grid, with host receive stamps that jitter)."""
    from robot_rl.data.store import EpisodeStore
    rows = []
    period = 1.0 / a.fps
    with EpisodeStore.open(store_path) as st:
        summ = st.summary()
        metas = st.episodes_meta()
        ends = st.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        grid = np.asarray(st.data["timestamp"][:])
        for cam in CAMS:
            key = f"image_{cam}"
            topic = f"/camera/{cam}/image_raw/compressed"
            stamps = np.asarray(st.data[f"stamp_{key}"][:])
            once = twice = in_episode = skipped = 0
            jitter, age = [], []
            for i, m in enumerate(metas):
                s_ep = stamps[starts[i]:ends[i]]
                u, counts = np.unique(s_ep, return_counts=True)
                once += int((counts == 1).sum())
                twice += int((counts > 1).sum())
                cad = m["extra"].get("cadence", {})
                in_episode += int(cad.get("messages", {}).get(topic, 0))
                skipped += int(cad.get("skipped_steps_by_topic", {}).get(topic, 0))
                d = np.diff(u)
                jitter.append(np.abs(d[d < 1.5 * period] - period))
                age.append(np.abs(grid[starts[i]:ends[i]] - s_ep))
            jit = np.concatenate(jitter) * 1e3 if jitter else np.zeros(0)
            age_ms = np.concatenate(age) * 1e3 if age else np.zeros(0)
            d = res["camera_diag"].get(cam, {})
            srv = res["server"].get(cam, {})
            captured, published = int(d.get("frames", -1)), int(d.get("published_compressed", -1))
            before = int(d.get("skipped_before_start", 0))  # captured before the recorder listened
            received = int(res["recorder_diag"].get(f"received{topic}", -1))
            sent = srv.get("frames_served")
            k = summ["keys"][key]
            n_steps = int(ends[-1]) if len(ends) else 0
            span = float(sum(grid[e - 1] - grid[s0] for s0, e in zip(starts, ends) if e > s0))
            rows.append({
                "camera": cam, "server_overruns": srv.get("overruns"), "sent": sent, "captured": captured,
                "before_recorder": before, "published": published, "received": received,
                "lost_sent_to_captured": None if sent is None else sent - captured,
                "lost_captured_to_published": captured - before - published,
                "lost_published_to_received": published - received,
                "received_in_episodes": in_episode, "steps": n_steps, "steps_skipped": skipped,
                "frames_stored_once": once, "frames_stored_twice": twice,
                "frames_not_stored": in_episode - once - twice,
                "max_frame_age_ms": round(float(age_ms.max()), 2) if age_ms.size else None,
                "stamp_jitter_ms_p50": round(float(np.percentile(jit, 50)), 2) if jit.size else None,
                "stamp_jitter_ms_p99": round(float(np.percentile(jit, 99)), 2) if jit.size else None,
                "camera_fps(capture stamps)": _float(res["camera_live"].get(cam, {}).get("achieved_fps")),
                "stamp_period_ms": _float(d.get("stamp_period_ms")),
                "source_skipped_slots": d.get("source_skipped_slots"),
                "dataset_hz(grid stamps)": round((n_steps - len(metas)) / span, 3) if span > 0 else None,
                "bytes": k["bytes"], "raw_bytes": k["raw_bytes"],
                "raw/bytes": round(k["raw_bytes"] / k["bytes"], 2) if k["bytes"] else None, "codec": k.get("codec"),
            })
        extra = {"summary": {kk: v for kk, v in summ.items() if kk != "per_task"}}
    return rows, extra


def _float(v) -> float | None:
    try:
        return round(float(v), 3)
    except (TypeError, ValueError):
        return None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def quality_table(store_path: Path, a) -> list[dict]:
    from robot_rl.data.store import EpisodeStore
    rows = []
    with EpisodeStore.open(store_path) as st:
        summ = st.summary()
        n = st.n_steps
        for cam in CAMS:
            jk, rk = f"image_{cam}", f"image_{cam}_raw"
            same = np.asarray(st.data[f"stamp_{jk}"][:]) == np.asarray(st.data[f"stamp_{rk}"][:])
            idx = np.flatnonzero(same)
            pick = idx[np.linspace(0, len(idx) - 1, min(len(idx), 200)).astype(int)] if len(idx) else idx
            ps = [psnr(st.data[jk][int(i)], st.data[rk][int(i)]) for i in pick]
            raw_b = a.width * a.height * 3
            for key, label in ((rk, "lossless (blosc zstd-1 bitshuffle)"), (jk, f"jpeg:{a.jpeg_quality}")):
                k = summ["keys"][key]
                per = k["bytes"] / max(n, 1)
                rows.append({"camera": cam, "form": label, "frames": n, "bytes/frame": int(per),
                             "raw/bytes": round(raw_b / per, 2) if per else None,
                             "psnr_db(min)": None if key == rk else round(float(np.min(ps)), 2) if ps else None,
                             "psnr_db(mean)": "lossless" if key == rk else round(float(np.mean(ps)), 2) if ps else None,
                             "frames_compared": None if key == rk else len(pick),
                             "same_stamp_steps": int(same.sum())})
            rows.append({"camera": cam, "form": "raw (uncompressed)", "frames": n, "bytes/frame": raw_b,
                         "raw/bytes": 1.0})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="session length (0: skip the session case)")
    p.add_argument("--quality-s", type=float, default=20.0, help="quality case length, s (0: skip)")
    p.add_argument("--episode-s", type=float, default=60.0, help="episode length in the session")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--noise", type=float, default=3.0, help="virtual cameras' sensor noise sigma (8-bit levels)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--keep", default=None, help="keep the work folder here")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    from robot_rl.ros.isolation import require_loopback_only
    require_loopback_only("bench_cameras")
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_cameras_"))
    work.mkdir(parents=True, exist_ok=True)
    diag = DiagListener()
    out: dict = {"config": {k: v for k, v in vars(a).items()}, "loadavg_start": loadavg()}
    try:
        if a.quality_s > 0:
            res = run_pipeline(a, work, diag, a.quality_s, with_raw=True, tag="quality")
            rows = quality_table(res["store"], a)
            print_table(rows, ["camera", "form", "frames", "bytes/frame", "raw/bytes", "psnr_db(mean)", "psnr_db(min)",
                               "frames_compared", "same_stamp_steps"],
                        f"quality: the same {a.width}x{a.height} frames stored raw, lossless and as JPEG "
                        f"({a.quality_s:.0f} s, 2 cameras)")
            out["quality"] = {"rows": rows, "cpu_share": res["cpu_share"], "wall_s": res["wall_s"]}
            shutil.rmtree(res["store"], ignore_errors=True)
        if a.minutes > 0:
            res = run_pipeline(a, work, diag, a.minutes * 60, with_raw=False, tag="session")
            rows, extra = frame_accounting(res["store"], res, a)
            cols = ["camera", "server_overruns", "sent", "captured", "before_recorder", "published", "received", "lost_sent_to_captured",
                    "lost_captured_to_published", "lost_published_to_received"]
            print_table(rows, cols, f"session: {a.minutes:g} min, 2 cameras {a.width}x{a.height} at {a.fps:g} fps, "
                                    f"realtime, {res['episodes']} episodes: frames at every boundary")
            print_table(rows, ["camera", "received_in_episodes", "steps", "steps_skipped", "frames_stored_once",
                               "frames_stored_twice", "frames_not_stored", "max_frame_age_ms", "stamp_jitter_ms_p50",
                               "stamp_jitter_ms_p99", "stamp_period_ms", "source_skipped_slots",
                               "camera_fps(capture stamps)", "dataset_hz(grid stamps)"],
                        "session: the dataset (30 Hz grid; a step takes the frame nearest its time within 1 period)")
            print_table(rows, ["camera", "codec", "bytes", "raw_bytes", "raw/bytes"], "session: bytes on disk")
            cpu_rows = [{"process": n, "cpu_share_of_one_core": v} for n, v in res["cpu_share"].items()]
            print_table(cpu_rows, ["process", "cpu_share_of_one_core"], "session: CPU")
            out["session"] = {"rows": rows, "cpu_share": res["cpu_share"], "wall_s": res["wall_s"],
                              "episodes": res["episodes"], **extra}
            shutil.rmtree(res["store"], ignore_errors=True)
    finally:
        diag.close()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    out["loadavg_end"] = loadavg()
    write_json("bench_cameras", out, a.out)


if __name__ == "__main__":
    main()
