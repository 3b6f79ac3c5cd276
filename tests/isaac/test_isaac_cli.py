"""`robot-rl record sim backend=isaac` end to end in the Isaac venv: worlds in parallel, one
episode store, the same layout as on the MuJoCo twin (state only)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.isaac


def test_record_sim_backend_isaac(tmp_path, capsys):
    from robot_rl.cli.main import main
    from robot_rl.data.store import EpisodeStore
    out = tmp_path / "pick.zarr"
    assert main(["record", "sim", "backend=isaac", "num_envs=4", "task=pick_cube", "cameras=[]", "episodes=5",
                 f"out={out}", "progress=false"]) == 0
    store = EpisodeStore.open(out)
    try:
        assert store.n_episodes == 5
        seeds = sorted(int(store.episode_meta(i)["extra"]["seed"]) for i in range(5))
        assert len(set(seeds)) == 5 and min(seeds) == 0
        ep = store.episode(0)
        assert {"joint_pos", "ee_pos", "object_state", "action"} <= set(ep)
        assert not any(k.startswith("image_") for k in ep)
        assert np.all(np.isfinite(ep["action"])) and len(ep["action"]) > 10
        assert store.episode_meta(0)["extra"]["backend"] == "isaac"
    finally:
        store.close()
    # cameras on the Isaac twin: one clear error, nothing written
    bad = tmp_path / "bad.zarr"
    assert main(["record", "sim", "backend=isaac", "task=pick_cube", "cameras=[front]", "episodes=1",
                 f"out={bad}"]) == 2
    assert "renders no cameras" in capsys.readouterr().err
    assert not bad.exists()
