"""Kill-test helper: a writer process to SIGKILL, and the parent-side campaign.

Child: ``python tests/_store_writer_proc.py STORE PHASE_FILE SEED`` opens (or creates) the
store and records episodes forever. Episode ``i``'s content depends only on (SEED, i), so
whoever kills it can check every value; it prints ``COMMITTED i`` once ``commit()``
returned, and keeps its current phase (open / add / flush / commit / discard) in one byte
of PHASE_FILE so the parent knows where each kill landed.

Parent: :func:`kill_campaign` (used by tests/test_store_kill.py and benchmarks/bench_store.py).
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


def episode_content(seed: int, idx: int) -> tuple[dict[str, np.ndarray], dict]:
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
    meta = {"task": TASKS[idx % 3], "source": SOURCES[idx % 5], "success": bool(idx % 2),
            "extra": {"idx": idx, "seed": seed}}
    return steps, meta


def child_main(path: str, phase_file: str, seed: int) -> None:
    from robot_rl.data.store import EpisodeStore

    fd = os.open(phase_file, os.O_RDWR)
    ph = mmap.mmap(fd, 1)

    def phase(name: str) -> None:
        ph[0] = PHASES.index(name)

    phase("open")
    store = EpisodeStore.open_or_create(path, "so101", chunk_steps=CHUNKS)
    print("READY", len(store), flush=True)
    rnd = random.Random()
    while True:
        idx = len(store)
        steps, meta = episode_content(seed, idx)
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


def verify_episode(store, seed: int, idx: int) -> str | None:
    """None if episode idx holds exactly its deterministic content, else what differs."""
    steps, meta = episode_content(seed, idx)
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
                  max_delay: float = 0.4, verbose: bool = False) -> dict:
    """Start a writer on ``path``, SIGKILL it at a random moment, repeat ``n_kills`` times;
    after each kill open the store read-only and check the newly committed episodes; at the
    end check every episode, open for append and append one more. Returns a report."""
    from robot_rl.data.store import EpisodeStore

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
        proc = subprocess.Popen([sys.executable, __file__, str(path), phase_file, str(seed)],
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
                        bad = verify_episode(st, seed, i)
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
                bad = verify_episode(st, seed, i)
                if bad:
                    problems.append(f"final: {bad}")
                    lost += i in reported
            lost += sum(1 for i in reported if i >= n_eps)
        with EpisodeStore.open(path, mode="a", spec="so101") as st:
            steps, meta = episode_content(seed, n_eps)
            ep = st.start_episode(meta["task"], source=meta["source"], extra={"seed": seed})
            for t in range(len(steps["timestamp"])):
                ep.add_step({k: v[t] for k, v in steps.items() if k != "timestamp"},
                            timestamp=float(steps["timestamp"][t]))
            assert ep.commit(success=meta["success"], extra={"idx": n_eps}) == n_eps
        with EpisodeStore.open(path) as st:
            appendable = verify_episode(st, seed, n_eps) is None and \
                all(verify_episode(st, seed, i) is None for i in range(n_eps))
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"final check failed: {e!r}")
    return {
        "kills": n_kills,
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
    child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
