"""An SO-101 from the box to a deployed policy, on virtual hardware, the way a user with an
arm on the desk does it -- every step a command of docs/hardware.md, run as a process:

1. ``robot-rl virtual so101 --random-unit SEED --factory-new``: an SO-101 whose servos all
   answer as id 1, with factory offsets and directions nobody here is told;
2. ``robot-rl setup-motors`` for the follower and the leader (the person plugs one motor at
   a time in);
3. ``robot-rl calibrate`` for both arms (the person holds the poses and sweeps the joints);
4. ``robot-rl launch teleop_record driver=feetech device=leader ...``: the person moves the
   leader, the follower follows through the robot node, two camera nodes stream the virtual
   cameras, the recorder writes an episode store and a bag;
5. ``robot-rl export-lerobot`` the store as a LeRobotDataset v3.0 (LeRobot's SO-101 units
   through the follower's calibration), as a user would share it;
6. ``robot-rl train`` a state policy on that store (joints, gripper, end-effector pose: what a
   real arm has);
7. ``robot-rl launch deploy driver=feetech ...``: the inference node drives the follower.

    python -m robot_rl.hardware_session [--out out/hardware] [--episodes 2] [--seed 0]

Used by the demo's hardware stage and the slow end-to-end test. DDS stays on loopback:
outside a loopback-only network namespace it re-runs itself through scripts/isolated.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class SessionError(RuntimeError):
    """A step of the session failed; the message names it and carries its output tail."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "robot_rl.cli.main", *args]


def _run(step: str, cmd: list[str], env: dict, timeout: float, log: Path, verbose: bool) -> str:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    with open(log, "a") as f:
        f.write(out)
    if verbose:
        print(out)
    if p.returncode != 0:
        raise SessionError(f"{step} failed (exit {p.returncode}):\n{out[-3000:]}")
    print(f"  {step}: ok ({time.perf_counter() - t0:.1f} s)", flush=True)
    return out


def start_virtual(args: list[str], env: dict, out: Path, timeout: float = 60.0) -> subprocess.Popen:
    """``robot-rl virtual so101 ARGS`` as a process of its own session (log: out/virtual.log);
    returns once it wrote its ports and URLs, which are then the process's ``info``."""
    info_path = out / "virtual.json"
    info_path.unlink(missing_ok=True)
    rig = subprocess.Popen(_cli("virtual", "so101", *args, "--info-json", str(info_path)), env=env, cwd=REPO,
                           stdout=open(out / "virtual.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + timeout
    while not info_path.exists():
        if rig.poll() is not None or time.monotonic() > end:
            stop_virtual(rig)
            raise SessionError(f"robot-rl virtual so101 did not start:\n{(out / 'virtual.log').read_text()[-2000:]}")
        time.sleep(0.2)
    rig.info = json.loads(info_path.read_text())  # type: ignore[attr-defined]
    return rig


def stop_virtual(rig: subprocess.Popen) -> None:
    if rig.poll() is None:
        os.killpg(rig.pid, signal.SIGTERM)
        try:
            rig.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(rig.pid, signal.SIGKILL)


def run(out: Path, *, episodes: int = 2, seed: int = 0, rate: int = 30, camera_size: tuple[int, int] = (320, 240),
        camera_fps: float = 15.0, train_steps: int = 300, deploy_seconds: float = 8.0, verbose: bool = False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "session.log"
    log.write_text("")
    env = {**os.environ, "ROBOT_RL_CALIBRATION_DIR": str(out / "calibration"), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    w, h = camera_size
    t0 = time.perf_counter()
    rig = start_virtual(["--random-unit", str(seed), "--factory-new", "--camera-size", f"{w}x{h}",
                         "--fps", f"{camera_fps:g}"], env, out)
    result: dict = {"episodes": episodes, "seed": seed, "rate": rate}
    try:
        info = rig.info
        fport, lport, person = info["follower_port"], info["leader_port"], info["person"]
        cams = info["cameras"]
        print(f"  virtual SO-101: follower {fport}, leader {lport}, cameras {', '.join(cams)}, person {person}",
              flush=True)
        for arm, port in (("follower", fport), ("leader", lport)):
            _run(f"setup-motors {arm}", _cli("setup-motors", "robot=so101", f"arm={arm}", f"port={port}",
                                             f"person={person}"), env, 120, log, verbose)
        cal = {}
        for arm, port in (("follower", fport), ("leader", lport)):
            cal[arm] = out / "calibration" / f"{arm}.yaml"
            _run(f"calibrate {arm}", _cli("calibrate", "robot=so101", f"arm={arm}", f"port={port}", f"id={arm}",
                                          f"person={person}", f"out={cal[arm]}"), env, 180, log, verbose)
        store, bag = out / "so101.zarr", out / "so101_bag"
        import shutil
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(bag, ignore_errors=True)
        t_rec = time.perf_counter()
        _run(f"teleop_record: {episodes} episodes with the leader", _cli(
            "launch", "teleop_record", "driver=feetech", f"port={fport}", f"calibration={cal['follower']}",
            "device=leader", f"leader.port={lport}", f"leader.calibration={cal['leader']}", f"events={person}",
            f"sources={cams['front']},{cams['wrist']}", "cameras=front,wrist", f"rate={rate}",
            f"episodes={episodes}", f"seed={seed}", f"out={store}", f"bag={bag}"), env, 60 + 40 * episodes, log, verbose)
        result["record_s"] = round(time.perf_counter() - t_rec, 1)
        from robot_rl.data.store import EpisodeStore
        with EpisodeStore.open(store) as st:
            result["store"] = {"episodes": st.n_episodes, "steps": int(st.n_steps), "keys": sorted(st.keys),
                               "successes": int(sum(bool(e.get("success")) for e in st.episodes_meta()))}
        print(f"  store {store}: {result['store']['episodes']} episodes, {result['store']['steps']} steps, keys "
              f"{', '.join(result['store']['keys'])}", flush=True)
        # the recording as a LeRobotDataset v3.0, in LeRobot's SO-101 units through the follower's calibration
        lerobot_dir = out / "so101_lerobot"
        shutil.rmtree(lerobot_dir, ignore_errors=True)
        _run("export-lerobot (v3.0, calibrated units)", _cli(
            "export-lerobot", str(store), str(lerobot_dir), "repo_id=local/so101_virtual",
            f"calibration={cal['follower']}", "progress=false"), env, 180, log, verbose)
        result["lerobot"] = str(lerobot_dir)
        ckpt_dir = out / "policy"
        _run("train a state policy", _cli("train", "policy=mlp_bc", f"dataset={store}", f"out={ckpt_dir}",
                                          f"steps={train_steps}", "policy.observations=proprio",
                                          "eval_final=false", "tensorboard=false", "progress=false"),
             env, 600, log, verbose)
        ckpt = ckpt_dir / "checkpoints" / "last"
        t_dep = time.perf_counter()
        dep = subprocess.Popen(_cli("launch", "deploy", "driver=feetech", f"port={fport}",
                                    f"calibration={cal['follower']}", f"checkpoint={ckpt}", "action_mode=joint_pos",
                                    "mode=cold", f"rate={rate}"),
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
        before = _truth(person)

        def moved_since(ref) -> float:
            now = _truth(person)["follower"]
            return max(abs(now[k] - ref["follower"][k]) for k in ref["follower"])
        end = time.monotonic() + 60  # start-up: the robot node connects, the inference node loads torch
        while dep.poll() is None and moved_since(before) < 0.01 and time.monotonic() < end:
            time.sleep(0.2)
        t_moving = time.perf_counter() - t_dep
        time.sleep(deploy_seconds if dep.poll() is None else 0)
        after = _truth(person)
        alive = dep.poll() is None
        if alive:
            os.killpg(dep.pid, signal.SIGINT)
        try:
            dep_out, _ = dep.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dep.pid, signal.SIGKILL)
            dep_out, _ = dep.communicate()
        with open(log, "a") as f:
            f.write("\n$ launch deploy\n" + dep_out)
        moved = max(abs(after["follower"][k] - before["follower"][k]) for k in before["follower"])
        result["deploy"] = {"seconds": deploy_seconds, "first_motion_s": round(t_moving, 1),
                            "follower_moved_rad": round(moved, 3)}
        if not alive or "Traceback" in dep_out or moved < 0.01:
            raise SessionError(f"deploy failed (graph {'running' if alive else 'exited'}, follower moved {moved:.3f} "
                               f"rad):\n{dep_out[-3000:]}")
        print(f"  deploy: the policy moved the follower {t_moving:.1f} s after launch, then drove it for "
              f"{deploy_seconds:g} s (largest joint change {moved:.2f} rad)", flush=True)
    finally:
        stop_virtual(rig)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "session.json").write_text(json.dumps(result, indent=1))
    return result


def _truth(person_url: str) -> dict:
    """The virtual arms' true joint angles (the benchmark's view, never the code under test's)."""
    from robot_rl.drivers.virtual.person import get
    t = get(person_url, "/truth", timeout=5)
    return {arm: {**{k: float(v) for k, v in t[arm]["q"].items()}, "gripper": float(t[arm]["gripper"] or 0.0)}
            for arm in ("follower", "leader")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot_rl.hardware_session", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/hardware")
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=int, default=30)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--deploy-seconds", type=float, default=8.0)
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    from robot_rl.demo import ensure_isolated
    ensure_isolated()
    try:
        r = run(Path(a.out), episodes=a.episodes, seed=a.seed, rate=a.rate, train_steps=a.train_steps,
                deploy_seconds=a.deploy_seconds, verbose=a.verbose)
    except SessionError as e:
        print(f"hardware session: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
