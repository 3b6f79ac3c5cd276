import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robot_rl.sim  # noqa: F401  (registers the envs)
from robot_rl.sim import ENV_IDS, make_vec_env


@pytest.mark.parametrize("robot", ["so101", "arm6"])
@pytest.mark.parametrize("task", sorted(ENV_IDS))
def test_registered_envs_pass_the_gymnasium_checker(task, robot):
    env = gym.make(ENV_IDS[task], robot=robot)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["object_state"].shape == (env.unwrapped.task.object_dim,)
    for _ in range(3):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert 0.0 <= r <= 1.0 and "success" in info
    env.close()


def test_cameras_render_real_images():
    env = gym.make(ENV_IDS["pick_cube"], robot="so101", cameras=["front", "wrist"], image_size=64)
    obs, _ = env.reset(seed=0)
    for cam in ("front", "wrist"):
        img = obs[f"image_{cam}"]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a scene, not a blank frame
    assert not np.array_equal(obs["image_front"], obs["image_wrist"])
    frame = env.render()
    assert frame.shape == (256, 256, 3)


def test_sparse_reward_is_success():
    env = gym.make(ENV_IDS["reach"], robot="so101", reward_type="sparse")
    env.reset(seed=0)
    ex = env.unwrapped.make_expert(0)
    obs, _ = env.reset(seed=0)
    rewards = []
    for _ in range(60):
        obs, r, term, trunc, info = env.step(ex.act(obs))
        rewards.append(r)
        assert r == float(info["success"])
        if term:
            break
    assert rewards[-1] == 1.0 and set(rewards) <= {0.0, 1.0}


def test_vector_env_steps_in_lockstep():
    venv = make_vec_env("push", num_envs=3, robot="arm6")
    obs, _ = venv.reset(seed=0)
    assert obs["joint_pos"].shape == (3, 6)
    obs, r, term, trunc, _ = venv.step(venv.action_space.sample())
    assert r.shape == (3,)
    assert not np.allclose(obs["object_state"][0], obs["object_state"][1])  # seeds differ per env
    venv.close()


def test_bad_env_arguments():
    with pytest.raises(ValueError, match="unknown task 'stack'"):
        robot_rl.sim.make_env("stack")
    with pytest.raises(Exception, match="unknown robot 'ur10'"):
        robot_rl.sim.make_env("reach", "ur10")
