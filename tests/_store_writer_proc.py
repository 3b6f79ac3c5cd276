"""Kill-test helper: a writer process to SIGKILL, and the parent-side campaign.

Child: ``python tests/_store_writer_proc.py STORE PHASE_FILE SEED [CODEC H W CAMERAS]`` opens
(or creates) the store and records episodes forever. Episode ``i``'s content depends only on (SEED, i), so
whoever kills it can check every value; it prints ``COMMITTED i`` once ``commit()``
returned, and keeps its current phase (open / add / flush / commit / discard) in one byte
of PHASE_FILE so the parent knows where each kill landed.

Parent: :func:`kill_campaign` (used by tests/test_store_kill.py and benchmarks/bench_store.py).

``codec="jpeg"`` records camera-like frames (``image_shape``, ``cameras`` keys) as JPEG q90;
the check then expects exactly the JPEG round trip of the deterministic frames (the
encoder is deterministic), so a frame re-encoded by a read-modify-write would show.
"""
from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHASES = ["start", "open", "add_step", "flush", "commit", "discard", "idle"]
# small time-chunks so that episodes share chunks and flush mid-episode all the time
CHUNKS = {"image_front": 8, "joint_pos": 16, "action": 5, "reward": 32, "gripper": 3, "timestamp": 16}
TASKS = ("pick_cube", "push", "stack")
SOURCES = ("teleop", "policy", "intervention", "expert", "converted")


JPEG_QUALITY = 90
CAMERAS = ("image_front", "image_wrist", "image_side", "image_top")


def camera_keys(cameras: int) -> tuple[str, ...]:
    return CAMERAS[:cameras]


_SCENES: dict[tuple[int, int, int], np.ndarray] = {}


def _scene(shape: tuple[int, int, int]) -> np.ndarray:
    """A smooth static scene (computed once per shape)."""
    if shape not in _SCENES:
        h, w, c = shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        _SCENES[shape] = np.stack([128 + 60 * np.sin(xx / 37 + ch) * np.cos(yy / 29 - ch) for ch in range(c)],
                                  -1).astype(np.uint8)
    return _SCENES[shape]


def _camera_frames(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Camera-like frames, cheap enough for 640x480 in a control loop: the scene panning
    over time + sensor noise (one noise field per episode, shifted per frame)."""
    base = _scene(shape)
    shift = int(rng.integers(0, shape[1]))
    noise = rng.integers(0, 12, size=shape, dtype=np.uint8)
    out = np.empty((n,) + shape, np.uint8)
    for t in range(n):
        np.add(np.roll(base, shift + 3 * t, axis=1), np.roll(noise, 7 * t, axis=0), out=out[t])
    return out


def episode_content(seed: int, idx: int, codec: str = "lossless", image_shape: tuple[int, int, int] = (12, 16, 3),
                    cameras: int = 1) -> tuple[dict[str, np.ndarray], dict]:
    """Deterministic steps and metadata of episode ``idx``."""
    rng = np.random.default_rng([seed, idx])
    n = int(rng.integers(3, 70))
    steps = {
        "joint_pos": rng.normal(size=(n, 6)).astype(np.float32),
        "image_front": rng.integers(0, 256, size=(n, 12, 16, 3), dtype=np.uint8),
        "action": rng.normal(size=(n, 7)).astype(np.float32),
        "reward": rng.random(n),
        "gripper": rng.random(n) > 0.5,
        "timestamp": idx * 1000.0 + np.arange(n) * 0.05,
    }
    if codec == "jpeg":
        del steps["image_front"]
        for cam in camera_keys(cameras):
            steps[cam] = _camera_frames(rng, n, tuple(image_shape))
    meta = {"task": TASKS[idx % 3], "source": SOURCES[idx % 5], "success": bool(idx % 2),
            "extra": {"idx": idx, "seed": seed}}
    return steps, meta


def expected_content(seed: int, idx: int, codec: str = "lossless",
                     image_shape: tuple[int, int, int] = (12, 16, 3), cameras: int = 1) -> tuple[dict, dict]:
    """What the store must return for episode ``idx``: the steps, camera frames through
    the JPEG round trip when ``codec == "jpeg"``."""
    steps, meta = episode_content(seed, idx, codec, image_shape, cameras)
    if codec == "jpeg":
        import imagecodecs

        from robot_rl.data.codecs import jpeg_encode_frame
        for cam in camera_keys(cameras):
            steps[cam] = np.stack([np.asarray(imagecodecs.jpeg8_decode(jpeg_encode_frame(f, JPEG_QUALITY)))
                                   .reshape(f.shape) for f in steps[cam]])
    return steps, meta


def child_main(path: str, phase_file: str, seed: int, codec: str = "lossless",
               image_shape: tuple[int, int, int] = (12, 16, 3), cameras: int = 1) -> None:
    from robot_rl.data.store import EpisodeStore

    fd = os.open(phase_file, os.O_RDWR)
    ph = mmap.mmap(fd, 1)

    def phase(name: str) -> None:
        ph[0] = PHASES.index(name)

    phase("open")
    codecs = {cam: f"jpeg:{JPEG_QUALITY}" for cam in camera_keys(cameras)} if codec == "jpeg" else None
    store = EpisodeStore.open_or_create(path, "so101", chunk_steps=CHUNKS, image_codecs=codecs)
    print("READY", len(store), flush=True)
    rnd = random.Random()
    while True:
        idx = len(store)
        steps, meta = episode_content(seed, idx, codec, image_shape, cameras)
        n = len(steps["timestamp"])
        discard_at = rnd.randrange(n) if rnd.random() < 0.15 else None
        ep = store.start_episode(meta["task"], source=meta["source"], extra={"seed": seed})
        for t in range(n):
            phase("add_step")
            ep.add_step({k: v[t] for k, v in steps.items() if k != "timestamp"},
                        timestamp=float(steps["timestamp"][t]))
            if discard_at == t:
                break
            if rnd.random() < 0.5:  # a control loop: the writer thread works meanwhile
                time.sleep(0.001)
            if rnd.random() < 0.02:
                phase("flush")
                store.flush()
        if discard_at is not None:
            phase("discard")
            ep.discard()
            continue
        phase("commit")
        got = ep.commit(success=meta["success"], extra={"idx": idx})
        phase("idle")
        assert got == idx, (got, idx)
        print(f"COMMITTED {idx}", flush=True)


def verify_episode(store, seed: int, idx: int, codec: str = "lossless",
                   image_shape: tuple[int, int, int] = (12, 16, 3), cameras: int = 1) -> str | None:
    """None if episode idx holds exactly its deterministic content, else what differs."""
    steps, meta = expected_content(seed, idx, codec, image_shape, cameras)
    got = store.episode(idx)
    if set(got) != set(steps):
        return f"episode {idx}: keys {sorted(got)} != {sorted(steps)}"
    for k, v in steps.items():
        if got[k].shape != v.shape or got[k].dtype != v.dtype or not np.array_equal(got[k], v):
            return f"episode {idx}: key {k} differs"
    m = store.episode_meta(idx)
    for f in ("task", "source", "success", "extra"):
        if m[f] != meta[f]:
            return f"episode {idx}: meta {f} {m[f]!r} != {meta[f]!r}"
    return None


def kill_campaign(path: str | Path, n_kills: int = 25, seed: int = 0, rng_seed: int = 1,
                  max_delay: float = 0.4, verbose: bool = False, codec: str = "lossless",
                  image_shape: tuple[int, int, int] = (480, 640, 3), cameras: int = 2) -> dict:
    """Start a writer on ``path``, SIGKILL it at a random moment, repeat ``n_kills`` times;
    after each kill open the store read-only and check the newly committed episodes; at the
    end check every episode, open for append and append one more. Returns a report.

    ``codec="jpeg"``: ``cameras`` JPEG q90 image keys of ``image_shape`` replace the small
    lossless ``image_front`` (``image_shape`` / ``cameras`` are ignored for "lossless")."""
    from robot_rl.data.store import EpisodeStore

    if codec not in ("lossless", "jpeg"):
        raise ValueError(f"codec must be 'lossless' or 'jpeg', got {codec!r}")
    if codec == "lossless":
        image_shape, cameras = (12, 16, 3), 1
    image_shape = tuple(int(x) for x in image_shape)
    prof = (codec, image_shape, cameras)

    def verify(st, i: int) -> str | None:
        return verify_episode(st, seed, i, *prof)

    path = Path(path)
    rng = random.Random(rng_seed)
    phase_file = str(path) + ".phase"
    with open(phase_file, "wb") as f:
        f.write(b"\0")
    fd = os.open(phase_file, os.O_RDWR)
    ph = mmap.mmap(fd, 1)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    reported: set[int] = set()
    landed: dict[str, int] = {p: 0 for p in PHASES}
    problems: list[str] = []
    readable = 0
    verified = 0
    t0 = time.perf_counter()
    for k in range(n_kills):
        ph[0] = 0
        proc = subprocess.Popen([sys.executable, __file__, str(path), phase_file, str(seed), codec,
                                 *(str(x) for x in image_shape), str(cameras)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lines: list[str] = []
        ready = threading.Event()

        def reader(p=proc, out=lines, ev=ready) -> None:
            for line in p.stdout:
                out.append(line.strip())
                if line.startswith("READY"):
                    ev.set()
            ev.set()

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        if rng.random() < 0.2:  # land in start-up / open / crash recovery
            time.sleep(rng.uniform(0.2, 0.8))
        else:
            ready.wait(30)
            time.sleep(rng.uniform(0.0, max_delay))
        landed[PHASES[ph[0]] if ph[0] < len(PHASES) else "start"] += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        th.join(5)
        err = proc.stderr.read()
        proc.stderr.close()
        if proc.returncode != -signal.SIGKILL:
            problems.append(f"kill {k}: writer exited by itself with {proc.returncode}: {err[-2000:]}")
        new = {int(x.split()[1]) for x in lines if x.startswith("COMMITTED")}
        reported |= new
        # the store must open read-only right after every kill, with every reported episode
        if not path.exists() and not reported:  # killed before it created the store: fine
            readable += 1
            continue
        try:
            with EpisodeStore.open(path) as st:
                readable += 1
                if reported and len(st) <= max(reported):
                    problems.append(f"kill {k}: store has {len(st)} episodes, {max(reported)} was committed")
                for i in sorted(new):
                    if i < len(st):
                        bad = verify(st, i)
                        verified += 1
                        if bad:
                            problems.append(f"kill {k}: {bad}")
        except Exception as e:  # noqa: BLE001 - counted
            problems.append(f"kill {k}: read-only open failed: {e!r}")
        if verbose:
            print(f"kill {k + 1:2d}/{n_kills} in {PHASES[ph[0]]:8s} committed so far {len(reported)}")
    elapsed = time.perf_counter() - t0
    ph.close()
    os.close(fd)
    os.unlink(phase_file)

    # final: every episode exact, ends consistent, append works
    lost = 0
    appendable = False
    codecs: dict = {}
    n_eps = 0
    try:
        with EpisodeStore.open(path) as st:
            n_eps = len(st)
            ends = st.episode_ends
            if len(ends) and (np.any(np.diff(ends) <= 0) or ends[0] <= 0 or ends[-1] != st.n_steps):
                problems.append(f"episode_ends inconsistent: {ends.tolist()} n_steps={st.n_steps}")
            for key in st.keys:
                if st.data[key].shape[0] < st.n_steps:
                    problems.append(f"data/{key} shorter than n_steps")
            for i in range(n_eps):
                bad = verify(st, i)
                if bad:
                    problems.append(f"final: {bad}")
                    lost += i in reported
            lost += sum(1 for i in reported if i >= n_eps)
        with EpisodeStore.open(path, mode="a", spec="so101") as st:
            steps, meta = episode_content(seed, n_eps, *prof)
            ep = st.start_episode(meta["task"], source=meta["source"], extra={"seed": seed})
            for t in range(len(steps["timestamp"])):
                ep.add_step({k: v[t] for k, v in steps.items() if k != "timestamp"},
                            timestamp=float(steps["timestamp"][t]))
            assert ep.commit(success=meta["success"], extra={"idx": n_eps}) == n_eps
        with EpisodeStore.open(path) as st:
            appendable = verify(st, n_eps) is None and all(verify(st, i) is None for i in range(n_eps))
            codecs = st.codecs
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"final check failed: {e!r}")
        codecs = {}
    if codec == "jpeg" and set(codecs.values()) != {f"jpeg:{JPEG_QUALITY}"}:
        problems.append(f"expected JPEG image keys, the store has codecs {codecs}")
    return {
        "kills": n_kills,
        "codec": codec,
        "image_keys": {k: list(image_shape) for k in (camera_keys(cameras) if codec == "jpeg" else ("image_front",))},
        "store_codecs": codecs,
        "episodes_reported_committed": len(reported),
        "episodes_in_store": n_eps,
        "episodes_lost": lost,
        "readable_after_every_kill": readable == n_kills,
        "readable_count": readable,
        "appendable_after": appendable,
        "episodes_verified_after_kills": verified,
        "kills_landed_in": {p: c for p, c in landed.items() if c},
        "elapsed_s": round(elapsed, 2),
        "problems": problems,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if len(sys.argv) > 4:
        child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4],
                   (int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])), int(sys.argv[8]))
    else:
        child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
