"""Domain randomization as data (sim/randomization.py): terms applied to cached nominal
values of the real MuJoCo model, seeded per env, one clear error per bad file."""
from __future__ import annotations

import numpy as np
import pytest

from robot_rl.sim import make_env
from robot_rl.sim.randomization import Randomization, RandomizationError, available


def _env(terms, task="pick_cube", **kw):
    return make_env(task, "so101", randomization={"name": "t", "terms": terms}, **kw)


def test_resets_apply_to_the_nominal_value_and_never_accumulate():
    env = _env([{"field": "body_mass", "names": ["objects"], "operation": "scale", "range": [0.5, 1.5]},
                {"field": "geom_friction", "names": ["cube"], "operation": "add", "range": [0.1, 0.2]}])
    m = env.twin.model
    cube = m.body("cube").id
    g = m.geom("cube").id
    mass0, fric0, inertia0 = m.body_mass[cube], m.geom_friction[g, 0], m.body_inertia[cube].copy()
    try:
        masses = []
        for s in range(40):
            env.reset(seed=s)
            masses.append(m.body_mass[cube])
            assert 0.5 * mass0 - 1e-12 <= m.body_mass[cube] <= 1.5 * mass0 + 1e-12
            assert fric0 + 0.1 - 1e-12 <= m.geom_friction[g, 0] <= fric0 + 0.2 + 1e-12
            np.testing.assert_allclose(m.body_inertia[cube], inertia0 * m.body_mass[cube] / mass0)
        assert np.std(masses) > 0.1 * mass0  # it does vary, around the nominal value
        # the arm is not an object: untouched
        assert m.body_mass[m.body("link1").id] == pytest.approx(env.twin._nominal["body_mass"][m.body("link1").id])
    finally:
        env.close()


def test_seeded_each_env_draws_its_own_and_the_scene_stays_the_seeds():
    terms = [{"field": "actuator_kp", "names": ["arm"], "operation": "scale", "distribution": "log_uniform",
              "range": [0.5, 2.0]}]
    a, b, plain = _env(terms), _env(terms), make_env("pick_cube", "so101")
    try:
        oa, _ = a.reset(seed=7)
        ob, _ = b.reset(seed=7)
        kp = a.twin.model.actuator_gainprm[:5, 0].copy()
        np.testing.assert_array_equal(kp, b.twin.model.actuator_gainprm[:5, 0])
        # a position servo keeps biasprm[1] = -kp
        np.testing.assert_array_equal(a.twin.model.actuator_biasprm[:5, 1], -kp)
        b.reset(seed=8)
        assert not np.allclose(kp, b.twin.model.actuator_gainprm[:5, 0])
        # the same seed places the cube where it does without randomization
        op, _ = plain.reset(seed=7)
        np.testing.assert_array_equal(oa["object_state"], op["object_state"])
    finally:
        for e in (a, b, plain):
            e.close()


def test_distributions_and_operations():
    r = np.random.default_rng(0)
    from robot_rl.sim.randomization import Term
    u = Term.from_dict({"field": "body_mass", "distribution": "log_uniform", "range": [0.5, 2.0]}).sample(r, 4000)
    assert u.min() >= 0.5 and u.max() <= 2.0 and abs(np.median(u) - 1.0) < 0.05  # log-symmetric
    g = Term.from_dict({"field": "body_com", "operation": "add", "distribution": "gaussian",
                        "range": [0.01, 0.002]}).sample(r, 4000)
    assert abs(g.mean() - 0.01) < 2e-4 and abs(g.std() - 0.002) < 2e-4
    env = _env([{"field": "joint_damping", "names": ["shoulder_pan"], "operation": "abs", "range": [3.0, 3.0]}])
    try:
        env.reset(seed=0)
        m = env.twin.model
        dof = m.jnt_dofadr[m.joint("shoulder_pan").id]
        assert m.dof_damping[dof] == 3.0 and m.dof_damping[dof + 1] == env.twin._nominal["dof_damping"][dof + 1]
    finally:
        env.close()


def test_interval_terms_redraw_every_n_steps_and_state_terms_reach_the_observation():
    env = _env([{"field": "light_diffuse", "operation": "scale", "range": [0.2, 1.0], "mode": "interval",
                 "interval_steps": 3},
                {"field": "joint_offset", "names": ["elbow_flex"], "operation": "add", "range": [0.05, 0.05],
                 "mode": "startup"},
                {"field": "action_delay", "operation": "abs", "range": [2, 2]}])
    try:
        env.reset(seed=0)
        m = env.twin.model
        seen = [m.light_diffuse.copy()]
        zero = np.zeros(env.action_space.shape, np.float32)
        for _ in range(6):
            obs, *_ = env.step(zero)
            seen.append(m.light_diffuse.copy())
        changed = [not np.array_equal(seen[i], seen[i - 1]) for i in range(1, 7)]
        assert changed == [False, False, True, False, False, True]
        # encoder bias: what the arm reports is the true joint angle + 0.05 on elbow_flex, and
        # the end-effector pose is computed from the biased angles
        true_q = env.twin.q
        j = env.robot_spec.joint_names.index("elbow_flex")
        np.testing.assert_allclose(obs["joint_pos"] - true_q, np.eye(len(true_q))[j] * 0.05, atol=1e-6)
        np.testing.assert_allclose(obs["ee_pos"], env.twin.fk(true_q + np.eye(len(true_q))[j] * 0.05)[0], atol=1e-6)
        assert env.twin.params.action_latency_steps == 2
    finally:
        env.close()


def test_visual_terms_change_the_rendered_frames():
    plain = make_env("pick_cube", "so101", cameras=["front"], image_size=48)
    env = make_env("pick_cube", "so101", cameras=["front"], image_size=48, randomization="visuals")
    try:
        a, _ = plain.reset(seed=3)
        b, _ = env.reset(seed=3)
        assert np.abs(a["image_front"].astype(int) - b["image_front"].astype(int)).mean() > 1.0
    finally:
        plain.close()
        env.close()


def test_texture_terms_change_the_pattern_the_camera_sees():
    """texture_rgb: per-texel draws on the nominal pixels (the table's checker), uploaded to the
    renderer before its next frame; a draw of exactly 1 gives the nominal pixels back."""
    env = _env([{"field": "texture_rgb", "names": ["grid"], "operation": "scale", "range": [0.5, 1.5]}],
               cameras=["front"], image_size=64)
    try:
        m = env.twin.model
        nominal = m.tex_data.copy()
        a, _ = env.reset(seed=1)
        t = m.texture("grid").id
        adr, n = int(m.tex_adr[t]), int(m.tex_width[t] * m.tex_height[t] * m.tex_nchannel[t])
        px = m.tex_data[adr:adr + n].reshape(-1, int(m.tex_nchannel[t]))[:, :3].astype(int)
        assert len(np.unique(px)) > 50  # a mottled pattern, not the two checker colours
        b, _ = env.reset(seed=2)
        assert not np.array_equal(a["image_front"], b["image_front"])  # the renderer got the new texels
        env.randomizer.randomization = Randomization.load(
            {"name": "one", "terms": [{"field": "texture_rgb", "operation": "scale", "range": [1.0, 1.0]}]})
        env.randomizer._index = {tt: np.arange(m.ntex) for tt in env.randomizer.randomization.terms}
        c, _ = env.reset(seed=1)
        np.testing.assert_array_equal(m.tex_data, nominal)  # from the cached nominal: nothing accumulates
        plain = make_env("pick_cube", "so101", cameras=["front"], image_size=64)
        d, _ = plain.reset(seed=1)
        plain.close()
        np.testing.assert_array_equal(c["image_front"], d["image_front"])
    finally:
        env.close()


@pytest.mark.parametrize("terms,match", [
    ([{"field": "body_volume"}], "field must be one of"),
    ([{"field": "body_mass", "operation": "multiply"}], "operation must be one of"),
    ([{"field": "body_mass", "distribution": "log_uniform", "range": [0, 1]}], "log_uniform needs a positive"),
    ([{"field": "body_mass", "range": [2, 1]}], "low 2.0 > high 1.0"),
    ([{"field": "body_mass", "mode": "interval"}], "interval_steps"),
    ([{"field": "action_delay", "operation": "scale"}], "use operation abs"),
    ([{"field": "body_mass", "names": ["teapot"]}], "match no body"),
    ([{"field": "body_mass", "colour": "red"}], "unknown keys"),
])
def test_a_bad_term_is_one_clear_error(terms, match):
    with pytest.raises(RandomizationError, match=match):
        _env(terms).close()


def test_shipped_files_load_and_a_missing_one_names_them(tmp_path):
    assert {"physics", "visuals", "sim2real"} <= set(available())
    for name in available():
        assert Randomization.load(name).terms
    with pytest.raises(RandomizationError, match="not one of"):
        Randomization.load("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("terms: [")
    with pytest.raises(RandomizationError, match="not valid YAML"):
        Randomization.load(bad)


def test_record_and_eval_take_a_randomization(tmp_path, capsys):
    from robot_rl.cli.main import main
    from robot_rl.data import EpisodeStore
    out = tmp_path / "dr.zarr"
    assert main(["record", "sim", "task=reach", "episodes=2", "cameras=[]", f"out={out}", "progress=false",
                 "randomization=physics"]) == 0
    with EpisodeStore.open(out) as st:
        assert st.n_episodes == 2 and st.episode_meta(0)["extra"]["randomization"] == "physics"
    capsys.readouterr()
    assert main(["record", "sim", "task=reach", "episodes=1", "cameras=[]", f"out={tmp_path / 'x.zarr'}",
                 "progress=false", "randomization=nope"]) == 2
    err = capsys.readouterr().err
    assert "no randomization 'nope'" in err and "Traceback" not in err


def test_a_randomization_file_path_works_where_a_name_does(tmp_path):
    from robot_rl.cli.main import main
    from robot_rl.data import EpisodeStore
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nterms:\n  - {field: joint_damping, names: [arm], operation: scale, range: [0.9, 1.1]}\n")
    out = tmp_path / "f.zarr"
    assert main(["record", "sim", "task=reach", "episodes=1", "cameras=[]", f"out={out}", "progress=false",
                 f"randomization={f}"]) == 0
    with EpisodeStore.open(out) as st:
        assert st.episode_meta(0)["extra"]["randomization"] == "mine"


def test_a_fixed_perturbation_is_exactly_its_value_every_episode():
    from robot_rl.sim.randomization import Randomization
    r = Randomization.fixed({"geom_friction": 0.5, "body_mass": {"value": 2.0, "names": ["cube"]},
                             "action_delay": 3, "camera_pos": 0.02})
    env = make_env("pick_cube", "so101", randomization=r)
    m = env.twin.model
    f0, m0, c0 = (env.randomizer._nominal[a].copy() for a in ("geom_friction", "body_mass", "cam_pos"))
    for seed in (1, 2):
        env.reset(seed=seed)
        assert np.allclose(m.geom_friction[:, 0], 0.5 * f0[:, 0])
        assert m.body_mass[m.body("cube").id] == pytest.approx(2.0 * m0[m.body("cube").id])
        assert np.allclose(m.cam_pos, c0 + 0.02) and env.twin.params.action_latency_steps == 3
    with pytest.raises(RandomizationError, match="not a field"):
        Randomization.fixed({"friction": 0.5})
    assert (Randomization.load("physics") + r).terms[-1].name == "camera_pos=0.02"


def test_observation_delay_and_the_robot_group():
    env = _env([{"field": "obs_delay", "operation": "abs", "range": [2, 2]},
                {"field": "geom_rgba", "names": ["robot"], "operation": "abs", "range": [0.3, 0.3]}])
    obs0, _ = env.reset(seed=0)
    m = env.twin.model
    robot = [g for g in range(m.ngeom) if m.body_rootid[m.geom_bodyid[g]] == m.body("base").id]
    assert robot and np.allclose(m.geom_rgba[robot, :3], 0.3)
    assert not np.allclose(m.geom_rgba[m.geom("cube").id, :3], 0.3)  # not the objects
    seen, true = [], []
    for _ in range(5):
        obs, *_ = env.step(np.r_[0.02, 0.0, 0.0, np.zeros(3), 0.0].astype(np.float32)[:env.action_space.shape[0]])
        seen.append(obs["joint_pos"].copy())
        true.append(env.twin.observe()["joint_pos"].copy())
    np.testing.assert_allclose(seen[0], obs0["joint_pos"])  # the first two steps still show the start
    np.testing.assert_allclose(seen[4], true[2], atol=1e-6)  # then the world as it was 2 steps ago


def test_train_and_rl_take_a_randomization():
    from robot_rl.cli.main import compose
    from robot_rl.cli.record import randomization_arg
    from robot_rl.rl.loop import RLConfig, make_rl_env
    cfg = compose("train", ["dataset=x.zarr", "randomization=physics"])
    assert randomization_arg(cfg)["name"] == "physics"
    d = dict(compose("rl", ["randomization=wide"]))
    env = make_rl_env(RLConfig(task="reach", randomization=d["randomization"]))
    assert env.randomizer is not None and env.randomizer.randomization.name == "wide"


def test_the_sim_robot_is_the_randomized_calibrated_twin_behind_the_robot_interface(tmp_path):
    """SimRobot / the sim driver / the robot node's --randomization and --calibration: draws at
    every reset, seeded; encoder offsets, observation delay and action delay reach what the
    robot reports; a bad file is one DriverError before anything connects."""
    from robot_rl.drivers.registry import DriverError, make_driver
    from robot_rl.ros.robot_node import build_parser, make_robot
    rand = {"name": "t", "terms": [
        {"field": "geom_friction", "names": ["objects"], "operation": "scale", "range": [0.5, 1.5]},
        {"field": "joint_offset", "names": ["elbow_flex"], "operation": "add", "range": [0.05, 0.05], "mode": "startup"},
        {"field": "obs_delay", "operation": "abs", "range": [1, 1]},
        {"field": "action_delay", "operation": "abs", "range": [1, 1]}]}
    import yaml
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(rand))
    r = make_driver("sim", robot="so101", task="pick_cube", randomization=str(f), seed=3)
    r.connect()
    try:
        m = r.twin.model
        cube = m.geom("cube").id
        fr = [m.geom_friction[cube, 0].copy()]
        for s in (4, 5):
            r.reset(s)
            fr.append(m.geom_friction[cube, 0].copy())
        assert len(set(np.round(fr, 6))) == 3
        r.reset(4)
        assert m.geom_friction[cube, 0] == fr[1]  # same seed, same draw
        j = r.spec.joint_names.index("elbow_flex")
        assert r.twin.params.action_latency_steps == 1
        q0 = r.twin.q.copy()
        res = r.act(np.r_[q0 + 0.05, 0.0], mode="joint_pos")
        assert "latency" in res.events  # one step of action delay: nothing applied yet
        seen = [r.observe(images=False)["joint_pos"].copy()]
        true = [r.twin.q.copy()]
        for _ in range(3):
            r.act(np.r_[q0 + 0.05, 0.0], mode="joint_pos")
            seen.append(r.observe(images=False)["joint_pos"].copy())
            true.append(r.twin.q.copy())
        # what the robot reports: the true angles one step ago, elbow_flex read 0.05 high
        np.testing.assert_allclose(seen[3] - true[2], np.eye(len(q0))[j] * 0.05, atol=1e-6)
    finally:
        r.disconnect()
    # the robot node's flags reach the driver; errors name the cause before connecting
    args = build_parser().parse_args(["--driver", "sim", "--randomization", "physics", "--cameras", "none"])
    assert make_robot(args)._env_kwargs["randomization"] == "physics"
    with pytest.raises(DriverError, match="nope"):
        make_robot(build_parser().parse_args(["--driver", "sim", "--randomization", "nope"]))
    with pytest.raises(DriverError, match="twin calibration folder"):
        make_robot(build_parser().parse_args(["--driver", "sim", "--calibration", str(f)]))
    with pytest.raises(ValueError, match="--randomization is for --driver sim"):
        make_robot(build_parser().parse_args(["--driver", "feetech", "--port", "/dev/null", "--randomization", "physics"]))
