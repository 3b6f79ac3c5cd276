"""The robot-rl CLI as a user runs it: real processes, real stores on disk."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robot_rl.data.store import EpisodeStore
from tests.policy_helpers import record_expert_store


def cli(*args, cwd=None):
    env = {**os.environ, "MUJOCO_GL": "egl"}
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "pick.zarr"
    r = cli("record", "sim", "robot=so101", "task=pick_cube", "episodes=3", f"out={out}", "image_size=48")
    assert r.returncode == 0, r.stderr
    return out, r


def test_record_writes_a_store_with_images_state_and_actions(recorded):
    out, r = recorded
    assert "episodes  3" in r.stdout and "success   100.0%" in r.stdout
    with EpisodeStore.open(out) as st:
        assert st.n_episodes == 3 and st.spec.name == "so101"
        ep = st.episode(1)
        meta = st.episode_meta(1)
        assert meta["task"] == "pick_cube" and meta["source"] == "expert" and meta["success"]
        assert ep["image_front"].shape[1:] == (48, 48, 3) and ep["image_wrist"].shape[1:] == (48, 48, 3)
        assert ep["action"].shape == (len(ep["timestamp"]), 7)
        assert np.all(np.diff(ep["timestamp"]) > 0)
        # the cube ends up lifted in the recorded privileged state
        assert ep["object_state"][-1, 2] > ep["object_state"][0, 2] + 0.04


def test_record_appends_with_new_seeds(recorded, tmp_path):
    out, _ = recorded
    r = cli("record", "sim", "robot=so101", "task=pick_cube", "episodes=1", f"out={out}", "image_size=48",
            "progress=false")
    assert r.returncode == 0, r.stderr
    with EpisodeStore.open(out) as st:
        assert st.n_episodes == 4
        seeds = [st.episode_meta(i)["extra"]["seed"] for i in range(4)]
        assert len(set(seeds)) == 4


def test_info_and_json(recorded):
    out, _ = recorded
    r = cli("info", str(out))
    assert r.returncode == 0, r.stderr
    assert "robot     so101" in r.stdout and "image_front" in r.stdout
    r = cli("info", str(out), "json=true")
    import json
    s = json.loads(r.stdout)
    assert s["episodes"] >= 3 and s["success_rate"] == 1.0 and s["bytes_total"] > 0


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_view_renders_video_and_contact_sheet(recorded, tmp_path, fmt):
    out, _ = recorded
    r = cli("view", str(out), "episode=0", f"format={fmt}", f"out={tmp_path}")
    assert r.returncode == 0, r.stderr
    video = tmp_path / f"pick_ep0.{fmt}"
    sheet = tmp_path / "pick_ep0_sheet.png"
    assert video.stat().st_size > 1000
    img = Image.open(sheet)
    assert img.size[0] > 300 and np.asarray(img).std() > 10
    if fmt == "gif":
        with EpisodeStore.open(out) as st:
            assert Image.open(video).n_frames == len(st.episode(0, keys=["timestamp"])["timestamp"])


def test_wrong_config_key_is_one_clear_error(tmp_path):
    r = cli("record", "sim", "robot=so101", "episdoes=3", f"out={tmp_path / 'x.zarr'}")
    assert r.returncode == 2
    assert "unknown setting 'episdoes'" in r.stderr and "episodes" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.zarr").exists()
    r = cli("record", "sim", "robot=ur10")
    assert r.returncode == 2 and "unknown robot 'ur10'" in r.stderr and "so101" in r.stderr


def test_missing_store_path_is_one_clear_error(tmp_path):
    for cmd in ("info", "view"):
        r = cli(cmd, str(tmp_path / "nope.zarr"))
        assert r.returncode == 2 and "no episode store at" in r.stderr and "Traceback" not in r.stderr
    r = cli("info")
    assert r.returncode == 2 and "needs a store path" in r.stderr


def test_store_from_another_robot_is_refused_and_nothing_is_lost(recorded):
    out, _ = recorded
    with EpisodeStore.open(out) as st:
        before = st.n_episodes, st.n_steps
    r = cli("record", "sim", "robot=arm6", "episodes=1", f"out={out}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'so101'" in r.stderr and "'arm6'" in r.stderr
    with EpisodeStore.open(out) as st:
        assert (st.n_episodes, st.n_steps) == before


def test_view_of_missing_episode(recorded):
    out, _ = recorded
    r = cli("view", str(out), "episode=99")
    assert r.returncode == 2 and "episode 99 does not exist" in r.stderr


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_demo_runs_end_to_end(tmp_path):
    # every stage, shortened: 2 demos, 3 s of two 640x480 cameras, 2 leader episodes on the virtual SO-101, ~5 s of training, 3 evaluation episodes, 2 deployed episodes,
    # 300 env steps of online RL
    r = subprocess.run([sys.executable, "-m", "robot_rl.demo", "--episodes", "2", "--out", str(tmp_path),
                        "--train-minutes", "0.08", "--camera-seconds", "3", "--eval-episodes", "3", "--deploy-episodes", "2",
                        "--dr-episodes", "2", "--rl-steps", "300", "--rl-eval-episodes", "2"],
                       capture_output=True, text=True, timeout=420, env={**os.environ, "MUJOCO_GL": "egl"})
    assert r.returncode == 0, r.stderr
    assert "demo finished" in r.stdout
    assert (tmp_path / "so101_pick_cube_ep0_sheet.png").exists()
    with EpisodeStore.open(tmp_path / "so101_pick_cube.zarr") as st:
        assert st.n_episodes == 2
    assert "diffusion policy on pick_cube: success" in r.stdout and "over 3 held-out seeds" in r.stdout
    run = tmp_path / "diffusion_pick_cube"
    ev = json.loads((run / "eval" / "eval.json").read_text())
    assert ev["episodes"] == 3 and (run / "checkpoints" / "last" / "model.safetensors").exists()
    assert json.loads((run / "eval_randomized" / "eval.json").read_text())["episodes"] == 2
    assert "on randomized twins (randomization=physics): success" in r.stdout
    assert (run / "training.png").exists() and (run / "eval" / "eval.png").exists()
    dep = json.loads((tmp_path / "deploy" / "deploy.json").read_text())
    assert dep["episodes"] == 2 and len(dep["outcomes"]) == 2, dep
    assert "7/8 deploy through the inference node" in r.stdout and "inference latency ms" in r.stdout
    rl = json.loads((tmp_path / "rl_steer_pick_cube" / "summary.json").read_text())
    assert rl["env_steps"] >= 300 and rl["updates"] > 0 and 0 <= rl["base_success"] <= 1
    assert rl["demo_decisions"] > 0 and (tmp_path / "rl_steer_pick_cube" / "bank.safetensors").exists()  # DSRL-NA
    assert "success before online RL" in r.stdout and (tmp_path / "rl_steer_pick_cube" / "curve.png").exists()
    assert "identical to the live recording" in r.stdout
    rep = json.loads((tmp_path / "demo.json").read_text())
    assert set(rep["stage_seconds"]) == {"1/8", "2/8", "3/8", "4/8", "5/8", "6/8", "7/8", "8/8", "done"}
    hw = rep["hardware"]  # the virtual SO-101: leader episodes recorded, a policy trained on them moved the follower
    assert hw["store"]["episodes"] == 2 and "image_front" in hw["store"]["keys"] and "object_state" not in hw["store"]["keys"]
    assert hw["deploy"]["follower_moved_rad"] > 0.01
    # ... and exported as a LeRobotDataset v3.0 in LeRobot's units through the follower's calibration
    info = json.loads((Path(hw["lerobot"]) / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["robot_type"] == "so101_follower"
    assert info["features"]["observation.state"]["names"][-1] == "gripper.pos"
    assert "calibration" in info["features"]["observation.state"]["robot_rl"]["units"]["source"]
    cams = rep["cameras"]["cameras"]
    assert set(cams) == {"image_front", "image_wrist"} and rep["cameras"]["steps"] > 30
    assert all(c["shape"] == [480, 640, 3] and c["codec"] == "jpeg:90" and c["raw_over_stored"] > 10
               for c in cams.values()), cams
    assert rep["bag_round_trip"]["identical"] and rep["eval"]["episodes"] == 3 and rep["deploy"]["episodes"] == 2
    # each stage time and the total are rounded to 0.1 s: the sum may exceed the total by the roundings
    assert 0 < sum(rep["stage_seconds"].values()) <= rep["total_seconds"] + 0.05 * len(rep["stage_seconds"])


def test_demo_round_trip_check_finds_any_difference(tmp_path):
    """Stage 2 of the demo fails it (exit 1) when the store converted from the bag is not the
    live recording; the check itself, on real stores."""
    from robot_rl.demo import round_trip_difference
    live = record_expert_store(tmp_path / "live.zarr", "reach", episodes=2)
    same = tmp_path / "same.zarr"
    shutil.copytree(live, same)
    assert round_trip_difference(live, same) is None
    longer = record_expert_store(tmp_path / "longer.zarr", "reach", episodes=2, extra_steps=1)
    assert "steps from the bag" in round_trip_difference(live, longer)
    # the same episodes with one joint position nudged by 1e-6 rad
    nudged = tmp_path / "nudged.zarr"
    with EpisodeStore.open(live) as a, EpisodeStore.create(nudged, a.spec) as b:
        for i in range(a.n_episodes):
            e = a.episode(i)
            ep = b.start_episode(task="reach", source="expert")
            for t in range(len(e["timestamp"])):
                step = {k: v[t].copy() for k, v in e.items() if k != "timestamp"}
                if i == 1 and t == 3:
                    step["joint_pos"][2] += 1e-6
                ep.add_step(step, timestamp=float(e["timestamp"][t]))
            ep.commit(success=True)
    msg = round_trip_difference(live, nudged)
    assert msg is not None and msg.startswith("episode 1, joint_pos: max abs diff 1.0")  # float32 storage


def test_bench_inference_bad_input_is_one_line(tmp_path):
    r = cli("bench", "inference")
    assert r.returncode == 2 and "usage: robot-rl bench inference CHECKPOINT" in r.stderr
    r = cli("bench", "inference", str(tmp_path / "nothing"), "sections=[latency,speed]")
    assert r.returncode == 2 and "unknown sections ['speed']" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("bench", "inference", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no checkpoint at" in r.stderr and "Traceback" not in r.stderr
    r = cli("bench", "inference", str(tmp_path / "nothing"), "episodez=3")
    assert r.returncode == 2 and "unknown setting 'episodez'" in r.stderr
