"""The main job on the sim twin, end to end (``make demo``).

Stage 1 (now): teleoperated demonstrations through the ROS 2 graph. Three processes --
the twin's robot node (lockstep), the scripted expert as the teleop device (a stand-in
for a person) and the recorder -- are started by the graph launcher; the recorder writes
the crash-safe episode store and, in the same run, an mcap rosbag2 of the raw topics.
Then the summary is printed, the bag is converted back to an episode store as a check,
and one episode is rendered to mp4 + a PNG contact sheet.

Stage 4: cameras at real resolution. Two of the twin's cameras are rendered at 640x480 and
served as MJPEG over loopback (virtual cameras, opened like IP cameras), a camera node per
camera captures them with OpenCV and publishes JPEG, and the recorder writes one timed
episode into an episode store with per-frame JPEG keys; frames received, lost and the
bytes against raw are printed.

Stage 5: real hardware, virtual. A factory-new SO-101 -- follower and leader servo buses on
pseudo-terminals speaking the Feetech protocol, the follower's physics the twin in real time,
two cameras, a scripted person -- goes through what a user does with an arm on the desk:
``setup-motors``, ``calibrate``, leader teleoperation into an episode store and a bag,
training a state policy and deploying it through the inference node onto the follower
(``robot_rl.hardware_session``, docs/hardware.md).

Stage 6: a state-based diffusion policy is trained on those demonstrations
(``robot-rl train``, a few minutes of CPU) and evaluated in the twin on held-out seeds
(``robot-rl eval``): success rate with a 95% interval, a PNG report and videos.

Stage 7: the trained policy is deployed through the inference node on the realtime twin
(robot node at the spec's rate, wall-clock time): RTI warm-started sampling, an
asynchronous chunk queue; success rate and query-latency percentiles are printed.

Stage 8: online RL with simulated interventions improves the deployed policy without
retraining it: an off-policy actor learns to choose the diffusion policy's initial noise
(noise-space steering with noise aliasing, DSRL-NA: a critic over executed chunks, which
also learns from the stage-1 demonstrations, teaches the noise critic) while the scripted
expert, as a simulated human with a 10% budget, takes over when the arm drifts from it
(intervened steps are penalised, RLIF).
Success before (the policy's own Gaussian noise) and after is printed, with the curves.

    python -m robot_rl.demo [--robot so101] [--task pick_cube] [--episodes 50] [--out out/demo]
                            [--train-minutes 4] [--eval-episodes 30] [--dr-episodes 20] [--deploy-episodes 20] [--rl-steps 2000]
                            [--camera-seconds 10] [--hardware-episodes 2] [--skip-train]

DDS never leaves this machine: outside a loopback-only network namespace the demo
re-runs itself through scripts/isolated.sh.
"""
from __future__ import annotations

import argparse
import json
import io
import os
import shutil
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


class StageClock:
    """Prints each stage's banner and keeps how long each stage took (for demo.json)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def __call__(self, title: str) -> None:
        self._close()
        print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)
        self._current = (title.split(" ", 1)[0], time.perf_counter())

    def _close(self) -> None:
        if self._current is not None:
            name, t = self._current
            self.seconds[name] = round(time.perf_counter() - t, 1)
            self._current = None

    def total(self) -> float:
        self._close()
        return time.perf_counter() - self.t0


def ensure_isolated() -> None:
    from robot_rl.ros.isolation import loopback_only
    wrapper = REPO / "scripts" / "isolated.sh"
    if loopback_only() or os.environ.get("ROBOT_RL_ISOLATED") == "1":
        return
    if not wrapper.exists():
        sys.exit("demo: not in a loopback-only network namespace and scripts/isolated.sh is missing")
    os.execv(str(wrapper), [str(wrapper), sys.executable, "-m", "robot_rl.demo", *sys.argv[1:]])


ROUND_TRIP_KEYS = ("joint_pos", "ee_pos", "object_state", "action", "image_front", "image_wrist")


def round_trip_difference(live: Path, back: Path, keys=ROUND_TRIP_KEYS) -> str | None:
    """None when the store converted back from the bag holds the live recording's episodes,
    steps and values (``keys`` the live store has); else what differs, in one line."""
    import numpy as np

    from robot_rl.data import EpisodeStore
    with EpisodeStore.open(live) as a, EpisodeStore.open(back) as b:
        if (a.n_episodes, a.n_steps) != (b.n_episodes, b.n_steps):
            return (f"{b.n_episodes} episodes / {b.n_steps} steps from the bag, "
                    f"{a.n_episodes} / {a.n_steps} recorded live")
        for i in range(a.n_episodes):
            ea, eb = a.episode(i), b.episode(i)
            for k in keys:
                if k not in ea:
                    continue
                if k not in eb:
                    return f"episode {i}: key {k!r} is missing from the converted store"
                if ea[k].shape != eb[k].shape:
                    return f"episode {i}, {k}: shape {eb[k].shape} from the bag, {ea[k].shape} live"
                d = float(np.abs(ea[k].astype(np.float64) - eb[k].astype(np.float64)).max(initial=0.0))
                if d != 0.0:
                    return f"episode {i}, {k}: max abs diff {d:g}"
    return None


def cameras_stage(out: Path, seconds: float, verbose: bool) -> dict | None:
    """Stage 4: the `cameras` graph (virtual twin cameras served as MJPEG over loopback, a
    camera node each, the recorder) for one timed episode; prints and returns what was
    recorded and lost, None (after printing why) when it failed."""
    from robot_rl.data import EpisodeStore
    from robot_rl.ros.graphs import GRAPHS
    from robot_rl.ros.launcher import Launcher
    path = out / "cameras.zarr"
    if path.exists():
        shutil.rmtree(path)
    nodes = GRAPHS["cameras"].nodes({"out": str(path), "seconds": f"{seconds:g}", "episodes": "1"})
    for n in nodes:
        print(f"  {n.name:<14} python -m {n.module} {' '.join(n.args)}")
    log = sys.stdout if verbose else io.StringIO()
    code = Launcher(nodes, out=log).run()
    if code != 0 or not (path / "zarr.json").exists():
        if not verbose:
            print(log.getvalue()[-4000:])
        print(f"demo: the camera graph failed (exit {code})", file=sys.stderr)
        return None
    with EpisodeStore.open(path) as st:
        summ = st.summary()
        meta = st.episodes_meta()
    if summ["episodes"] != 1 or not summ["steps"]:
        print(f"demo: the camera recording holds {summ['episodes']} episodes, {summ['steps']} steps", file=sys.stderr)
        return None
    cad = meta[0]["extra"].get("cadence", {})
    res = {"steps": summ["steps"], "rate_hz": cad.get("rate_hz"), "cameras": {}}
    for key, k in summ["keys"].items():
        if not k["image"]:
            continue
        topic = f"/camera/{key.removeprefix('image_')}/image_raw/compressed"
        skipped = cad.get("skipped_steps_by_topic", {}).get(topic, 0)
        c = {"shape": k["shape"], "codec": k.get("codec"), "bytes": k["bytes"],
             "raw_over_stored": round(k["compression_ratio"], 1), "messages": cad.get("messages", {}).get(topic),
             "stamp_gaps": cad.get("drops", {}).get(topic, 0) - skipped, "steps_skipped": skipped}
        res["cameras"][key] = c
        h, w = k["shape"][:2]
        print(f"  {key}: {w}x{h} {c['codec']}, {c['messages']} frames received ({c['stamp_gaps']} gaps in the "
              f"camera's frame clock), {skipped} steps without a fresh frame, {k['bytes'] / 1e6:.1f} MB on disk "
              f"= 1/{c['raw_over_stored']} of raw")
    print(f"recorded {summ['steps']} steps at {res['rate_hz']} Hz into {path} (robot-rl info {path})")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robot_rl.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="so101")
    ap.add_argument("--task", default="pick_cube")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--verbose", action="store_true", help="show every node's log lines")
    ap.add_argument("--train-minutes", type=float, default=4.0, help="training budget of the diffusion policy")
    ap.add_argument("--eval-episodes", type=int, default=30)
    ap.add_argument("--dr-episodes", type=int, default=20,
                    help="also evaluate on twins randomized with robot_rl/conf/randomization/physics.yaml (0: skip)")
    ap.add_argument("--deploy-episodes", type=int, default=20, help="episodes through the inference node (0: skip)")
    ap.add_argument("--rl-steps", type=int, default=2000, help="env steps of online RL fine-tuning (0: skip)")
    ap.add_argument("--rl-eval-episodes", type=int, default=30)
    ap.add_argument("--skip-train", action="store_true", help="stop after recording, rendering and the cameras")
    ap.add_argument("--hardware-episodes", type=int, default=2,
                    help="leader-teleop episodes on the virtual SO-101 of stage 5 (0: skip the stage)")
    ap.add_argument("--camera-seconds", type=float, default=10.0,
                    help="length of the 640x480 camera recording of stage 4 (0: skip it)")
    args = ap.parse_args(argv)
    ensure_isolated()
    os.environ.setdefault("MUJOCO_GL", "egl")

    from robot_rl.cli.info import print_summary
    from robot_rl.cli.view import view
    from robot_rl.data import EpisodeStore
    from robot_rl.ros.graphs import GRAPHS
    from robot_rl.ros.launcher import Launcher

    stage = StageClock()
    report: dict = {"args": vars(args), "stage_seconds": stage.seconds}
    out = Path(args.out)
    store_path = out / f"{args.robot}_{args.task}.zarr"
    bag_path = out / f"{args.robot}_{args.task}_bag"
    back_path = out / f"{args.robot}_{args.task}_from_bag.zarr"
    for p in (store_path, bag_path, back_path):
        if p.exists():
            shutil.rmtree(p)  # the demo starts from scratch each run
    out.mkdir(parents=True, exist_ok=True)

    stage(f"1/8 teleop -> twin -> recorder over ROS 2: {args.episodes} expert episodes, {args.robot} / {args.task}")
    nodes = GRAPHS["teleop_record"].nodes({"robot": args.robot, "task": args.task, "device": "expert",
                                            "episodes": str(args.episodes), "out": str(store_path),
                                            "bag": str(bag_path)})
    for n in nodes:
        print(f"  {n.name:<9} python -m {n.module} {' '.join(n.args)}")
    log = sys.stdout if args.verbose else io.StringIO()
    t0 = time.perf_counter()
    code = Launcher(nodes, out=log).run()
    dt = time.perf_counter() - t0
    if code != 0:
        if not args.verbose:
            print(log.getvalue()[-4000:])
        print(f"demo: the recording graph failed (exit {code})", file=sys.stderr)
        return code
    with EpisodeStore.open(store_path) as st:
        summary = st.summary()
    print_summary(summary)
    print(f"recorded {summary['steps']} steps in {dt:.1f} s through 3 ROS 2 processes "
          f"(two 96x96 cameras); rosbag2: {bag_path}")

    stage("2/8 rosbag2 (mcap) -> episode store, compared with the live recording")
    from robot_rl.cli.convert import cmd_convert
    cmd_convert([str(bag_path), str(back_path), f"robot={args.robot}", f"task={args.task}"])
    with EpisodeStore.open(back_path) as b:
        n_back, steps_back = b.n_episodes, b.n_steps
    diff = round_trip_difference(store_path, back_path)
    if diff is not None:
        print(f"demo: the bag -> store conversion DIFFERS from the live recording: {diff}", file=sys.stderr)
        return 1
    print(f"bag -> store: {n_back} episodes, {steps_back} steps; identical to the live recording")
    report["bag_round_trip"] = {"episodes": n_back, "steps": steps_back, "identical": True}

    stage("3/8 render an episode")
    files = view(str(store_path), OmegaConf.create({"episode": 0, "format": "mp4", "out": str(out),
                                                     "fps": None, "sheet_frames": 12, "scale": 2}))
    for f in files:
        print(f"wrote {f}")

    if args.camera_seconds > 0:
        stage(f"4/8 cameras at real resolution: two virtual 640x480 twin cameras (MJPEG) -> camera nodes -> "
              f"recorder -> JPEG episode store, {args.camera_seconds:g} s")
        cams = cameras_stage(out, args.camera_seconds, args.verbose)
        if cams is None:
            return 1
        report["cameras"] = cams

    if args.hardware_episodes > 0:
        stage(f"5/8 real hardware, virtual: a factory-new SO-101 (servo buses on pseudo-terminals, the twin's physics) "
              f"-> setup-motors -> calibrate -> leader teleop ({args.hardware_episodes} episodes, two cameras) -> "
              "LeRobot v3 dataset -> train -> deploy")
        from robot_rl.hardware_session import SessionError, run as hardware_session
        try:
            hw = hardware_session(out / "hardware", episodes=args.hardware_episodes, verbose=args.verbose)
        except SessionError as e:
            print(f"demo: hardware stage failed: {e}", file=sys.stderr)
            return 1
        st = hw["store"]
        print(f"virtual SO-101: {st['episodes']} leader episodes ({st['successes']} successful, {st['steps']} steps, "
              f"cameras + joints, no privileged keys) in {hw['record_s']:.0f} s; the trained policy moved the "
              f"follower {hw['deploy']['follower_moved_rad']:.2f} rad through the inference node; "
              f"as a LeRobotDataset v3.0: {hw['lerobot']}; log {out / 'hardware' / 'session.log'}")
        report["hardware"] = hw

    if not args.skip_train:
        stage(f"6/8 train a state-based diffusion policy on the {args.episodes} demos "
              f"({args.train_minutes:g} min of CPU), evaluate it in the twin")
        from robot_rl.cli.main import main as cli
        run_dir = out / f"diffusion_{args.task}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        train_args = ["train", "policy=diffusion", f"dataset={store_path}", "steps=null",
                      f"max_minutes={args.train_minutes}", f"out={run_dir}", "eval_final=false"]
        print("  robot-rl " + " ".join(train_args))
        if cli(train_args) != 0:
            print("demo: training failed", file=sys.stderr)
            return 1
        ck = run_dir / "checkpoints" / "last"

        def evaluate(name: str, *extra: str) -> dict | None:
            eval_args = ["eval", str(ck), *extra, f"out={run_dir / name}"]
            print("  robot-rl " + " ".join(eval_args))
            if cli(eval_args) != 0:
                print(f"demo: evaluation ({name}) failed", file=sys.stderr)
                return None
            r = json.loads((run_dir / name / "eval.json").read_text())
            report[name] = {k: r[k] for k in ("success_rate", "ci95", "episodes")}
            return r

        res = evaluate("eval", f"episodes={args.eval_episodes}", "videos=4")
        # the same policy on randomized twins: friction, masses, damping, gains, delays, noise
        dr = evaluate("eval_randomized", f"episodes={args.dr_episodes}", "videos=0", "randomization=physics") \
            if args.dr_episodes > 0 else {}
        if res is None or dr is None:
            return 1
        report["train"] = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items()
                           if k in ("steps", "train_wall_s", "samples_per_s")} \
            if (run_dir / "summary.json").exists() else {}
        print(f"diffusion policy on {args.task}: success {100 * res['success_rate']:.1f}% "
              f"[{100 * res['ci95'][0]:.1f}, {100 * res['ci95'][1]:.1f}] over {res['episodes']} held-out seeds; "
              f"training curve {run_dir / 'training.png'}, report {run_dir / 'eval' / 'eval.png'}")
        if args.dr_episodes > 0:
            print(f"on randomized twins (randomization=physics): success {100 * dr['success_rate']:.1f}% "
                  f"[{100 * dr['ci95'][0]:.1f}, {100 * dr['ci95'][1]:.1f}] over {dr['episodes']} seeds")

        if args.deploy_episodes > 0:
            stage(f"7/8 deploy through the inference node on the realtime twin: {args.deploy_episodes} episodes, "
                  "RTI warm start, async chunk queue")
            from robot_rl.ros.deploy import DeployError, format_summary, run_deploy_episodes
            print(f"  python -m robot_rl.ros.deploy {ck} --task {args.task} --episodes {args.deploy_episodes} "
                  "--mode warm")
            try:
                dep = run_deploy_episodes(ck, args.task, robot=args.robot, episodes=args.deploy_episodes,
                                          mode="warm", log_dir=out / "deploy", verbose=args.verbose)
            except DeployError as e:
                print(f"demo: deploy failed: {e}", file=sys.stderr)
                return 1
            print(format_summary(dep))
            report["deploy"] = {k: dep.get(k) for k in ("episodes", "successes", "success_rate", "latency_ms",
                                                        "worker_latency_ms", "nfe_per_query", "robot_overruns")}

        if args.rl_steps > 0:
            stage(f"8/8 online RL with simulated interventions: steer the policy's noise for {args.rl_steps} env steps")
            rl_dir = out / f"rl_steer_{args.task}"
            if rl_dir.exists():
                shutil.rmtree(rl_dir)
            # DSRL-NA: the critic over chunks also learns from the demonstrations recorded in stage 1
            rl_args = ["rl", f"task={args.task}", f"robot={args.robot}", f"steer.checkpoint={ck}", "steer.aliased=true",
                       "steer.explore_std=0.05", f"demos={store_path}", "hil=true",
                       "intervention_penalty=0.1", f"env_steps={args.rl_steps}", f"eval_every={args.rl_steps}",
                       f"eval_episodes={args.rl_eval_episodes}", "learning_starts=200", "sac.utd=2",
                       "sac.gamma=0.9", "sac.bc_weight=0.0", "sac.init_temperature=0.05", "sac.actor_l2=0.0",
                       "offline.steps=0", f"out={rl_dir}"]
            print("  robot-rl " + " ".join(rl_args))
            if cli(rl_args) != 0:
                print("demo: online RL failed", file=sys.stderr)
                return 1
            rl = json.loads((rl_dir / "summary.json").read_text())
            report["rl"] = {k: rl.get(k) for k in ("base_success", "final_success", "env_steps", "intervention_rate")}
            print(f"deployed policy on {args.task}: success before online RL {100 * rl['base_success']:.0f}%, "
                  f"after {100 * rl['final_success']:.0f}% ({rl['env_steps']} env steps, "
                  f"{100 * rl['intervention_rate']:.1f}% of them intervened); curves {rl_dir / 'curve.png'}")

    stage("done")
    report["total_seconds"] = round(stage.total(), 1)
    (out / "demo.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"demo finished in {report['total_seconds']:.1f} s; outputs in {out}/ (stage times in {out / 'demo.json'})")
    print(f"inspect: robot-rl info {store_path}    view: robot-rl view {store_path} episode=3")
    print(f"replay the bag: scripts/isolated.sh .venv/bin/robot-rl launch replay bag={bag_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
