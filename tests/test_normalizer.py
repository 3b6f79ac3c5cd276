import numpy as np
import pytest
import torch

from robot_rl.policies.common.normalizer import Normalizer


def test_minmax_maps_range_to_unit_interval_and_back():
    rng = np.random.default_rng(0)
    a = rng.uniform([-3, 10, 5], [1, 20, 5], size=(500, 3))  # last dim constant
    n = Normalizer.fit({"action": a})
    y = n.normalize("action", a)
    assert y[:, :2].min() == pytest.approx(-1) and y[:, :2].max() == pytest.approx(1)
    assert np.allclose(y[:, 2], 0)  # constant dimension: no division by ~0
    assert np.allclose(n.unnormalize("action", y), a, atol=1e-5)
    t = torch.as_tensor(a, dtype=torch.float32)
    assert torch.allclose(n.unnormalize("action", n.normalize("action", t)), t, atol=1e-4)


def test_meanstd_and_state_dict_round_trip():
    rng = np.random.default_rng(1)
    x = rng.normal(4, 2, size=(1000, 5))
    n = Normalizer.fit({"obs": x}, modes="meanstd")
    z = n.normalize("obs", x)
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0), 1, atol=1e-3)
    n2 = Normalizer.from_state_dict(n.state_dict(), n.modes)
    assert np.array_equal(n2.normalize("obs", x), n.normalize("obs", x))


def test_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="NaN"):
        Normalizer.fit({"a": np.array([[1.0], [np.nan]])})
    with pytest.raises(ValueError, match="mode"):
        Normalizer.fit({"a": np.zeros((3, 2))}, modes="zscore")
    with pytest.raises(KeyError, match="no normaliser for 'b'"):
        Normalizer.fit({"a": np.zeros((3, 2))}).normalize("b", np.zeros(2))
    with pytest.raises(ValueError, match="no normaliser for 'x'"):
        Normalizer.from_state_dict({}, {"x": "minmax"})


def test_fit_from_an_episode_store(tmp_path):
    from robot_rl.data import EpisodeStore
    with EpisodeStore.create(tmp_path / "s.zarr", "so101") as st:
        ep = st.start_episode(task="t", source="expert")
        for i in range(10):
            ep.add_step({"action": np.full(7, i, np.float32)}, timestamp=i * 0.05)
        ep.commit(success=True)
    with EpisodeStore.open(tmp_path / "s.zarr") as st:
        n = Normalizer.from_store(st, ["action"])
    assert n.normalize("action", np.full(7, 9.0)) == pytest.approx(np.ones(7))
