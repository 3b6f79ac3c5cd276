"""SequenceSampler: exact windows and edge padding on hand-made episodes; splits; sources."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from robot_rl.data import EpisodeStore, SequenceSampler, episode_split


def toy(lengths=(3, 5)):
    """obs x = global step index, action = 100 + global step index."""
    n = sum(lengths)
    return {"x": np.arange(n, dtype=np.float32)[:, None], "action": 100 + np.arange(n, dtype=np.int64),
            "img": np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8),
            "episode_ends": np.cumsum(lengths)}


def items(s):
    return [s[i] for i in range(len(s))]


def test_default_padding_exact():
    s = SequenceSampler(toy(), ["x"], "action", n_obs_steps=2, horizon=4)
    assert (s.pad_before, s.pad_after) == (1, 2)
    assert len(s) == 8  # every step is the current step of one window
    got = items(s)
    # episode 0 = rows 0..2
    exp = [  # (obs rows, action rows, is_pad)
        ([0, 0], [0, 0, 1, 2], [1, 0, 0, 0]),
        ([0, 1], [0, 1, 2, 2], [0, 0, 0, 1]),
        ([1, 2], [1, 2, 2, 2], [0, 0, 1, 1]),
        # episode 1 = rows 3..7
        ([3, 3], [3, 3, 4, 5], [1, 0, 0, 0]),
        ([3, 4], [3, 4, 5, 6], [0, 0, 0, 0]),
        ([4, 5], [4, 5, 6, 7], [0, 0, 0, 0]),
        ([5, 6], [5, 6, 7, 7], [0, 0, 0, 1]),
        ([6, 7], [6, 7, 7, 7], [0, 0, 1, 1]),
    ]
    for i, (it, (o, a, p)) in enumerate(zip(got, exp)):
        assert set(it) == {"x", "action", "is_pad"}
        np.testing.assert_array_equal(it["x"], np.float32(o)[:, None], err_msg=f"item {i}")
        np.testing.assert_array_equal(it["action"], 100 + np.array(a), err_msg=f"item {i}")
        np.testing.assert_array_equal(it["is_pad"], np.array(p, bool), err_msg=f"item {i}")
        assert it["x"].dtype == np.float32 and it["action"].dtype == np.int64
    assert [s.window(i) for i in range(8)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    # current step t = window(i)[1]; action[n_obs_steps - 1] is the action at t
    for i, it in enumerate(got):
        ep, t = s.window(i)
        assert it["action"][1] == 100 + [0, 3][ep] + t
    assert np.array_equal(s[-1]["action"], got[-1]["action"])
    with pytest.raises(IndexError):
        s[8]


def test_no_padding_and_short_episodes():
    s = SequenceSampler(toy(), ["x"], "action", n_obs_steps=2, horizon=4, pad_before=0, pad_after=0)
    assert len(s) == 2  # episode 0 (3 steps) is too short for a 4-step window
    np.testing.assert_array_equal(s[0]["action"], 100 + np.array([3, 4, 5, 6]))
    np.testing.assert_array_equal(s[1]["action"], 100 + np.array([4, 5, 6, 7]))
    np.testing.assert_array_equal(s[1]["x"][:, 0], [4, 5])
    assert not s[0]["is_pad"].any() and not s[1]["is_pad"].any()


def test_large_padding_never_mixes_episodes():
    s = SequenceSampler(toy((2, 1, 4)), ["x", "img"], "action", n_obs_steps=3, horizon=5,
                        pad_before=4, pad_after=4)
    ends = np.array([2, 3, 7])
    starts = np.array([0, 2, 3])
    n = 0
    for e, L in enumerate([2, 1, 4]):
        n_win = L - 5 + 4 + 4 + 1
        for _ in range(n_win):
            it = s[n]
            ep, t = s.window(n)
            assert ep == e
            lo, hi = starts[e], ends[e]
            assert ((it["action"] - 100 >= lo) & (it["action"] - 100 < hi)).all()
            assert ((it["x"] >= lo) & (it["x"] < hi)).all()
            rel = np.arange(t - 2, t + 3)
            np.testing.assert_array_equal(it["is_pad"], (rel < 0) | (rel >= L))
            np.testing.assert_array_equal(it["action"] - 100, lo + np.clip(rel, 0, L - 1))
            np.testing.assert_array_equal(it["img"][:, 0, 0, 0], lo + np.clip(rel[:3], 0, L - 1))
            assert it["img"].shape == (3, 2, 2, 3)
            n += 1
    assert n == len(s)
    # a window fully before the episode: obs and actions all repeat the first frame
    first = s[0]
    np.testing.assert_array_equal(first["action"] - 100, [0, 0, 0, 0, 0])
    assert first["is_pad"].tolist() == [True, True, True, True, False]


def test_act_style_single_obs():
    s = SequenceSampler(toy(), ["x"], "action", n_obs_steps=1, horizon=3)
    assert len(s) == 8 and (s.pad_before, s.pad_after) == (0, 2)
    it = s[2]  # episode 0, current step 2: the last one
    np.testing.assert_array_equal(it["x"][:, 0], [2])
    np.testing.assert_array_equal(it["action"] - 100, [2, 2, 2])
    assert it["is_pad"].tolist() == [False, True, True]


def test_episode_mask_and_indices():
    s = SequenceSampler(toy(), ["x"], "action", n_obs_steps=2, horizon=4, episode_mask=[False, True])
    assert len(s) == 5 and s.n_episodes == 1
    np.testing.assert_array_equal(s[0]["action"] - 100, [3, 3, 4, 5])
    assert s.window(0) == (1, 0)
    s2 = SequenceSampler(toy(), ["x"], "action", n_obs_steps=2, horizon=4, episode_mask=np.array([1]))
    assert all(np.array_equal(s[i]["action"], s2[i]["action"]) for i in range(5))
    with pytest.raises(ValueError, match="episode_mask has shape"):
        SequenceSampler(toy(), ["x"], episode_mask=[True])


def test_errors():
    with pytest.raises(KeyError, match="keys \\['nope'\\] not in the data"):
        SequenceSampler(toy(), ["nope"])
    with pytest.raises(ValueError, match="horizon"):
        SequenceSampler(toy(), ["x"], n_obs_steps=4, horizon=2)
    with pytest.raises(ValueError, match="must not contain the action key"):
        SequenceSampler(toy(), ["x", "action"])
    with pytest.raises(TypeError, match="SequenceSampler needs"):
        SequenceSampler(42, ["x"])


def test_episode_split():
    tr, va = episode_split(10, val_ratio=0.2, seed=3)
    assert tr.dtype == bool and va.sum() == 2 and tr.sum() == 8 and not (tr & va).any()
    tr2, va2 = episode_split(10, val_ratio=0.2, seed=3)
    assert np.array_equal(va, va2)
    assert any(not np.array_equal(va, episode_split(10, 0.2, seed=s)[1]) for s in range(4, 10))
    assert episode_split(3, 0.01)[1].sum() == 1  # at least one val episode
    assert episode_split(1, 0.5)[0].sum() == 1  # ... but never all of them
    assert episode_split(5, 0.0)[1].sum() == 0
    tr, va = episode_split(20, 0.1, seed=0, max_train_episodes=5)
    assert tr.sum() == 5 and va.sum() == 2 and not (tr & va).any()


def _store(tmp_path, lengths=(6, 9, 4, 12, 7)):
    path = tmp_path / "ds"
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, "so101", chunk_steps={"image_front": 4, "action": 5}) as st:
        for i, n in enumerate(lengths):
            ep = st.start_episode("pick", source="expert")
            for t in range(n):
                ep.add_step({"image_front": rng.integers(0, 255, (6, 8, 3), dtype=np.uint8),
                             "joint_pos": rng.normal(size=6).astype(np.float32),
                             "action": rng.normal(size=7).astype(np.float32)}, timestamp=t / 20)
            ep.commit(success=True)
    return path


def test_store_in_memory_equals_lazy_equals_plain_zarr(tmp_path):
    path = _store(tmp_path)
    keys = ["image_front", "joint_pos"]
    with EpisodeStore.open(path) as st:
        mem = SequenceSampler(st, keys, n_obs_steps=2, horizon=8)
        lazy = SequenceSampler(st, keys, n_obs_steps=2, horizon=8, in_memory=False)
        plain = SequenceSampler(zarr.open_group(str(path), mode="r"), keys, n_obs_steps=2, horizon=8)
        by_path = SequenceSampler(str(path), keys, n_obs_steps=2, horizon=8)
        assert len(mem) == len(lazy) == len(plain) == len(by_path) == st.n_steps == 38
        for i in range(len(mem)):
            a, b, c = mem[i], lazy[i], plain[i]
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
                np.testing.assert_array_equal(a[k], c[k])
        # check one window against the episode itself
        ep, t = mem.window(10)
        e = st.episode(ep)
        rel = np.clip(np.arange(t - 1, t + 7), 0, len(e["action"]) - 1)
        np.testing.assert_array_equal(mem[10]["action"], e["action"][rel])
        np.testing.assert_array_equal(mem[10]["image_front"], e["image_front"][rel[:2]])
        assert mem[10]["image_front"].shape == (2, 6, 8, 3)


def test_split_sampler_and_torch_loader(tmp_path):
    path = _store(tmp_path)
    with EpisodeStore.open(path) as st:
        smp = SequenceSampler(st, ["joint_pos"], n_obs_steps=2, horizon=4)
        train, val = smp.split(val_ratio=0.4, seed=1)
        assert set(train.episode_indices).isdisjoint(val.episode_indices)
        assert sorted([*train.episode_indices, *val.episode_indices]) == [0, 1, 2, 3, 4]
        assert len(val.episode_indices) == 2 and len(train) + len(val) == len(smp)
        torch = pytest.importorskip("torch")
        loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True)
        batch = next(iter(loader))
        assert batch["joint_pos"].shape == (4, 2, 6) and batch["action"].shape == (4, 4, 7)
        assert batch["is_pad"].dtype == torch.bool


def test_get_batch_matches_items(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [5, 1, 9, 3]
    ends = np.cumsum(lengths)
    data = {"obs": rng.normal(size=(ends[-1], 3)).astype(np.float32),
            "img": rng.integers(0, 255, (ends[-1], 4, 4, 3), dtype=np.uint8),
            "action": rng.normal(size=(ends[-1], 2)).astype(np.float32), "episode_ends": ends}
    for kw in ({}, {"pad_before": 0, "pad_after": 0}, {"episode_mask": [True, False, True, True]}):
        smp = SequenceSampler(data, obs_keys=["obs", "img"], n_obs_steps=2, horizon=4, **kw)
        idx = rng.integers(-len(smp), len(smp), 50)
        got = smp.get_batch(idx)
        for k in ("obs", "img", "action", "is_pad"):
            want = np.stack([smp[int(i)][k] for i in idx])
            assert got[k].dtype == want.dtype and np.array_equal(got[k], want), (kw, k)
        with pytest.raises(IndexError):
            smp.get_batch([len(smp)])
