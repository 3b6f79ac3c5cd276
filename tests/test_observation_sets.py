"""Observation sets as data (robot_rl/conf/observations): what a policy config resolves to,
training on a store that lacks a key, eval deployable=true, and the inference node naming
the keys its robot does not provide."""
from __future__ import annotations

import pytest

from robot_rl import observations
from robot_rl.learn.train import TrainError, check_keys, policy_keys


def test_sets_and_defaults():
    assert observations.available() == ["deployable", "privileged", "proprio"]
    dep = observations.load("deployable")
    assert dep.deployable and dep.cameras == ("front", "wrist") and "object_state" not in dep.state_keys
    assert not observations.load("privileged").deployable
    # no set named: a state policy keeps the privileged keys of its published figures, an image
    # policy reads what a real robot has
    assert policy_keys({"state_keys": None, "cameras": []}) == (["joint_pos", "gripper", "ee_pos", "object_state"], [])
    s, c = policy_keys({"state_keys": None, "cameras": ["front"]})
    assert "object_state" not in s and c == ["image_front"]
    # a named set; cameras given in the config replace the set's
    assert policy_keys({"observations": "deployable"}) == (list(dep.state_keys), ["image_front", "image_wrist"])
    assert policy_keys({"observations": "deployable", "cameras": ["wrist"]})[1] == ["image_wrist"]
    assert policy_keys({"state_keys": ["joint_pos"], "cameras": []}) == (["joint_pos"], [])
    with pytest.raises(TrainError, match="no observation set 'telepathy'"):
        policy_keys({"observations": "telepathy"})
    assert observations.privileged(["joint_pos", "object_state"]) == ["object_state"]


def test_training_on_a_store_without_a_key_is_one_error(tmp_path):
    from robot_rl.data.store import EpisodeStore
    from robot_rl.spec import load_spec
    with EpisodeStore.create(tmp_path / "s.zarr", load_spec("so101")) as st:
        with pytest.raises(TrainError) as e:
            check_keys(st, ["joint_pos", "object_state"], "diffusion")
    assert "lacks" in str(e.value)


def test_eval_deployable_refuses_a_privileged_checkpoint(tmp_path, capsys):
    import torch

    from robot_rl.cli.main import main
    from robot_rl.policies.base import PolicyConfig, import_policies, save_checkpoint
    from robot_rl.policies.common.normalizer import Normalizer
    from robot_rl.spec import load_spec
    import_policies()
    from robot_rl.policies.mlp_bc import MLPBCPolicy
    keys = ["joint_pos", "gripper", "ee_pos", "object_state"]
    dims = {"joint_pos": 5, "gripper": 1, "ee_pos": 3, "object_state": 14}
    cfg = PolicyConfig(state_keys=keys, state_dims=dims, action_dim=7, n_obs_steps=2, horizon=8, n_action_steps=3)
    import numpy as np
    rng = np.random.default_rng(0)
    norm = Normalizer.fit({k: rng.normal(size=(10, d)).astype(np.float32) for k, d in {**dims, "action": 7}.items()})
    torch.manual_seed(0)
    ck = save_checkpoint(MLPBCPolicy(cfg, norm), tmp_path / "priv", load_spec("so101"),
                         {"task": "pick_cube", "action_mode": "ee_delta"})
    assert main(["eval", str(ck), "deployable=true", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert "['object_state']" in err and "only the twin has" in err and "observations=deployable" in err
