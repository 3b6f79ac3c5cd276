"""Policy evaluation on the twin and ``robot-rl eval``: Wilson intervals, both execution
modes, determinism, batched queries, the report, videos, and the CLI's refusals."""
import json
import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from policy_helpers import KEYS, record_expert_store  # noqa: E402
from robot_rl.cli.main import main  # noqa: E402
from robot_rl.data import EpisodeStore, SequenceSampler  # noqa: E402
from robot_rl.learn.evaluate import EvalError, EvalResult, evaluate, wilson_interval, write_report  # noqa: E402
from robot_rl.policies.base import PolicyConfig, save_checkpoint  # noqa: E402
from robot_rl.policies.common.normalizer import Normalizer  # noqa: E402
from robot_rl.policies.mlp_bc import MLPBCPolicy  # noqa: E402
from robot_rl.spec import load_spec  # noqa: E402

MAX_STEPS = 24


def _wilson_by_hand(k, n, z=1.96):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_interval_known_values():
    # 0/10 and 10/10: the bound is z^2 / (n + z^2) = 3.8416 / 13.8416 = 0.27754 from the edge
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(3.8416 / 13.8416, abs=1e-9) == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / 13.8416, abs=1e-9) == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    for k, n in [(5, 10), (1, 7), (189, 200), (3, 50)]:
        assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)
    assert wilson_interval(189, 200) == pytest.approx((0.9042, 0.9690), abs=1e-4)  # 94.5% [90.4, 96.9]
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # a wider z, a wider interval; always contains the rate
    assert wilson_interval(5, 10, z=2.58)[0] < wilson_interval(5, 10)[0]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny MLP-BC policy, trained for a few dozen steps on two pick_cube demos."""
    path = record_expert_store(tmp_path_factory.mktemp("evalbc") / "pick.zarr", "pick_cube", episodes=2, keys=KEYS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with EpisodeStore.open(path) as st:
            norm = Normalizer.from_store(st, KEYS + ["action"])
            dims = {k: st.schema[k].shape[0] for k in KEYS}
            cfg = PolicyConfig(state_keys=KEYS, state_dims=dims, action_dim=7, n_obs_steps=2, horizon=8,
                               n_action_steps=3)
            torch.manual_seed(0)
            pol = MLPBCPolicy(cfg, norm)
            sampler = SequenceSampler(st, obs_keys=KEYS, action_key="action", n_obs_steps=2, horizon=8)
            batch = {k: torch.as_tensor(np.stack([sampler[i][k] for i in range(len(sampler))]))
                     for k in KEYS + ["action", "is_pad"]}
        opt = torch.optim.AdamW(pol.parameters(), lr=3e-3)
        for _ in range(30):
            opt.zero_grad()
            pol.loss(batch).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return pol.eval()


@pytest.fixture(scope="module")
def checkpoint(policy, tmp_path_factory):
    return save_checkpoint(policy, tmp_path_factory.mktemp("ck") / "mlp", load_spec("so101"),
                           {"task": "pick_cube", "action_mode": "ee_delta", "execution": "ensemble"})


def _run(policy, **kw):
    args = dict(episodes=3, n_envs=2, seed=100_000, max_episode_steps=MAX_STEPS, progress=False)
    args.update(kw)
    return evaluate(policy, "pick_cube", load_spec("so101"), **args)


@pytest.mark.parametrize("execution", ["chunk", "ensemble"])
def test_evaluate_is_consistent_batched_and_deterministic(policy, execution):
    calls = []
    orig = policy.predict_chunks

    def spy(obs, generator=None):
        calls.append(len(next(iter(obs.values()))))
        return orig(obs, generator)

    policy.predict_chunks = spy
    try:
        r = _run(policy, execution=execution)
    finally:
        del policy.predict_chunks
    assert isinstance(r, EvalResult) and r.execution == execution and r.task == "pick_cube" and r.robot == "so101"
    assert r.episodes == len(r.successes) == len(r.returns) == len(r.lengths) == len(r.episode_time_s) == 3
    assert r.seeds == [100_000, 100_001, 100_002]
    assert all(1 <= n <= MAX_STEPS for n in r.lengths) and r.max_episode_steps == MAX_STEPS
    assert r.episode_time_s == pytest.approx([n / 20.0 for n in r.lengths])
    assert r.mean_episode_time_s == pytest.approx(np.mean(r.episode_time_s))
    assert r.success_rate == pytest.approx(sum(r.successes) / 3)
    assert r.ci95 == wilson_interval(sum(r.successes), 3) and r.ci95[0] <= r.success_rate <= r.ci95[1]
    assert all(s for s, n in zip(r.successes, r.lengths) if n < MAX_STEPS)  # ended early only by success
    # one batched query per step over the envs that need a chunk
    assert r.policy_queries == len(calls) and r.chunks_predicted == sum(calls) and max(calls) == 2
    assert r.chunk_len == policy.chunk_len == 7
    if execution == "chunk":
        assert r.n_action_steps == 3
        assert r.chunks_predicted == sum(math.ceil(n / 3) for n in r.lengths)
    else:
        assert r.chunks_predicted == sum(r.lengths)  # a query every step
    assert "success" in r.summary_line() and f"/{r.episodes})" in r.summary_line()
    # the same policy, seeds and generator seed -> the same result
    again = _run(policy, execution=execution).to_dict()
    first = r.to_dict()
    for d in (first, again):
        d.pop("wall_s"), d.pop("episodes_per_s")
    assert again == first
    assert torch.get_num_threads() >= 1 and not policy.training


def test_n_action_steps_is_clipped_and_bad_settings_refused(policy):
    r = _run(policy, episodes=1, n_envs=1, n_action_steps=100)
    assert r.n_action_steps == policy.chunk_len
    assert r.chunks_predicted == math.ceil(r.lengths[0] / policy.chunk_len)
    with pytest.raises(EvalError, match="execution"):
        _run(policy, execution="sometimes")
    with pytest.raises(EvalError, match="unknown task"):
        evaluate(policy, "juggle", "so101", episodes=1)
    with pytest.raises(EvalError, match="8-dim|7-dim"):
        evaluate(policy, "pick_cube", "so101", episodes=1, action_mode="joint_pos")  # 5 joints + gripper


def test_report_and_video(policy, tmp_path):
    r = _run(policy, episodes=2, videos=1, video_dir=tmp_path / "vid", render_size=64)
    assert len(r.videos) == 1
    vid = r.videos[0]
    outcome = "success" if r.successes[0] else "fail"
    assert vid.endswith(f"episode_100000_{outcome}.mp4") and os.path.getsize(vid) > 1000
    import imageio.v2 as imageio
    frames = imageio.mimread(vid)
    assert frames[0].shape == (64, 64, 3) and len(frames) > r.lengths[0]  # reset frame + steps + a hold
    files = write_report(r, tmp_path / "rep", title="tiny BC")
    assert [f.name for f in files] == ["eval.json", "eval.png"]
    d = json.loads(files[0].read_text())
    assert d["successes"] == r.successes and d["ci95"] == list(r.ci95) and d["videos"] == r.videos
    assert d["n_successes"] == sum(r.successes) and d["episodes"] == 2
    assert files[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    with Image.open(files[1]) as im:
        im.verify()
        assert im.size[0] > 600 and im.size[1] > 400


def test_cli_eval_end_to_end(checkpoint, capsys):
    rc = main(["eval", str(checkpoint), "episodes=2", "n_envs=2", "videos=1", f"max_episode_steps={MAX_STEPS}",
               "render_size=64", "progress=false"])  # task and execution from the checkpoint
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("success ") and "/2)" in out
    res = checkpoint / "eval_pick_cube"
    assert (res / "eval.json").is_file() and (res / "eval.png").is_file()
    assert len(list(res.glob("episode_100000_*.mp4"))) == 1
    d = json.loads((res / "eval.json").read_text())
    assert d["task"] == "pick_cube" and d["robot"] == "so101" and d["execution"] == "ensemble"
    assert f"wrote {res / 'eval.json'}" in out


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_eval_refusals(checkpoint, tmp_path, policy, capsys):
    assert main(["eval", str(tmp_path / "missing"), "progress=false"]) == 2
    assert "no checkpoint" in _error_line(capsys)
    # a checkpoint of the so101 is refused for the arm6
    assert main(["eval", str(checkpoint), "robot=arm6", "progress=false"]) == 2
    err = _error_line(capsys)
    assert "'arm6'" in err and "'so101'" in err
    # the same robot by name is fine for the settings check (task refused next, before any rollout)
    assert main(["eval", str(checkpoint), "robot=so101", "task=juggle"]) == 2
    assert "unknown task 'juggle'" in _error_line(capsys)
    # no task in the checkpoint and none given
    bare = save_checkpoint(policy, tmp_path / "bare", load_spec("so101"))
    assert main(["eval", str(bare), "progress=false"]) == 2
    assert "task=" in _error_line(capsys)
    # corrupt weights
    raw = (bare / "model.safetensors").read_bytes()
    (bare / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    assert main(["eval", str(bare), "task=pick_cube"]) == 2
    assert "corrupt" in _error_line(capsys)
    assert main(["eval"]) == 2 and "CHECKPOINT" in _error_line(capsys)
    assert main(["eval", str(checkpoint), "execution=sometimes"]) == 2
    assert "chunk, ensemble" in _error_line(capsys)


class _RowPolicy:
    """Stub policy: row j of every chunk is the action (j / 10, 0, ..., 0, 0.5); records the
    observation histories it is asked about."""

    def __init__(self):
        self.config = PolicyConfig(state_keys=["ee_pos"], state_dims={"ee_pos": 3}, action_dim=7,
                                   n_obs_steps=2, horizon=6, n_action_steps=3)
        self.chunk_len = 5
        self.device = torch.device("cpu")
        self.training = False
        self.seen = []

    def reset(self):
        pass

    def eval(self):
        return self

    def train(self, mode=True):
        self.training = mode

    def predict_chunks(self, obs, generator=None):
        self.seen.append(np.array(obs["ee_pos"]))
        c = np.zeros((len(obs["ee_pos"]), self.chunk_len, 7), np.float32)
        c[:, :, 0] = np.arange(self.chunk_len) / 10
        c[:, :, 6] = 0.5
        return c


@pytest.mark.parametrize("execution", ["chunk", "ensemble"])
def test_executed_actions_and_observation_history(execution, monkeypatch):
    from robot_rl.sim.env import RobotEnv
    log = []
    step = RobotEnv.step

    def spy(self, action):
        out = step(self, action)
        log.append((np.array(action), out[0]["ee_pos"].copy()))
        return out

    monkeypatch.setattr(RobotEnv, "step", spy)
    pol = _RowPolicy()
    r = evaluate(pol, "pick_cube", "so101", episodes=1, n_envs=1, max_episode_steps=8, execution=execution,
                 progress=False)
    assert r.lengths == [8] and len(log) == 8
    first = [a[0] for a, _ in log]
    if execution == "chunk":
        assert first == pytest.approx([0, .1, .2, 0, .1, .2, 0, .1], abs=1e-6)
        assert len(pol.seen) == 3
        query_steps = [0, 3, 6]
    else:
        w = np.exp(-0.01)  # the newest prediction weighs exp(-k) relative to the older
        assert first[0] == pytest.approx(0) and first[1] == pytest.approx(0.1 / (1 + w), abs=1e-6)
        assert len(pol.seen) == 8
        query_steps = list(range(8))
    # the history: copies of the first observation at reset, then the last two observations
    h0 = pol.seen[0][0]
    assert np.array_equal(h0[0], h0[1])
    for q, t in zip(pol.seen[1:], query_steps[1:]):
        prev = log[t - 2][1] if t >= 2 else h0[1]
        assert np.array_equal(q[0, 0], prev) and np.array_equal(q[0, 1], log[t - 1][1])


def test_a_resized_policy_sees_the_recorded_cameras_resized_like_training():
    """A checkpoint trained on 96x96 frames resized to 64: the twin renders 96 and each frame
    is resized with area interpolation (as the loader did, and the inference node does)."""
    import cv2

    from robot_rl.learn.evaluate import _EnvList, camera_plan, checkpoint_image_sizes
    spec = load_spec("so101")
    meta = {"image_size": 64, "image_resize": "area",
            "image_source_size": {"image_front": [96, 96], "image_wrist": [96, 96]}}
    size, camera = checkpoint_image_sizes(meta, spec, ["front", "wrist"])
    assert (size, camera) == (64, 96)
    # trained at the stored size: no resize; a non-square policy size is (width, height)
    assert checkpoint_image_sizes({"image_size": 96, "image_resize": None}, spec, ["front"]) == (96, None)
    assert checkpoint_image_sizes({"image_size": [32, 24], "image_resize": "area",
                                   "image_source_size": {"image_front": [64, 48]}}, spec, ["front"]) == ((32, 24), (64, 48))
    render, resize = camera_plan(["image_front"], size, camera)
    assert render == 96 and resize == (["image_front"], (64, 64))
    assert camera_plan(["image_front"], 64, 64) == (64, None)
    from robot_rl.spec import resolve_spec
    pool = _EnvList(1, resize=resize, task="reach", robot=resolve_spec(spec, "ee_delta", ["front"], render),
                    action_mode="ee_delta", cameras=["front"])
    try:
        obs = pool.reset(0, 3)
        raw = pool.envs[0].reset(seed=3)[0]["image_front"]
    finally:
        pool.close()
    assert raw.shape == (96, 96, 3) and obs["image_front"].shape == (64, 64, 3)
    np.testing.assert_array_equal(obs["image_front"], cv2.resize(raw, (64, 64), interpolation=cv2.INTER_AREA))


def test_cli_eval_fixed_perturbations_and_a_sweep(checkpoint, tmp_path, capsys):
    """twin.<field>=value and perturb=FILE perturb every episode by exactly that value; sweep=FILE
    evaluates each factor value (the nominal point once) and writes sweep.json + sweep.png."""
    base = [f"max_episode_steps={MAX_STEPS}", "n_envs=2", "videos=0", "progress=false"]
    out = tmp_path / "pert"
    pf = tmp_path / "p.yaml"
    pf.write_text("geom_friction: 0.5\n")
    assert main(["eval", str(checkpoint), "episodes=2", f"out={out}", f"perturb={pf}", "twin.action_delay=2",
                 *base]) == 0
    assert json.loads((out / "eval.json").read_text())["episodes"] == 2
    sw = tmp_path / "s.yaml"
    sw.write_text("episodes: 2\nfactors:\n  friction: {field: geom_friction, values: [0.5, 1.0]}\n"
                  "  action_delay: [0, 3]\n")
    capsys.readouterr()
    assert main(["eval", str(checkpoint), f"sweep={sw}", f"out={tmp_path / 'sw'}", *base]) == 0
    text = capsys.readouterr().out
    assert "[3/3]" in text and "[4/" not in text  # friction 1.0 and delay 0 are one nominal evaluation
    res = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    (r,) = res.values()
    assert r["factors"]["friction"]["values"] == [0.5, 1.0] and len(r["factors"]["action_delay"]["success"]) == 2
    assert r["factors"]["friction"]["success"][1] == r["factors"]["action_delay"]["success"][0]
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 5000
    for bad, msg in ((["twin.nope=1"], "not a field"), (["twin.geom_friction=abc"], "must be a number"),
                     ([f"sweep={tmp_path / 'none.yaml'}"], "no sweep")):
        assert main(["eval", str(checkpoint), "episodes=1", *base, *bad]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
