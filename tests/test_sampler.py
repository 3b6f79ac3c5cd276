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


def test_resized_images_are_read_per_batch_not_loaded(tmp_path):
    """image_size != stored size: the key stays out of memory and every batch reads its
    rows, resized with INTER_AREA; state keys stay in memory; items == batches."""
    import cv2
    path = _store(tmp_path)
    keys = ["image_front", "joint_pos"]

    def area(frames, h, w):
        return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])

    with EpisodeStore.open(path) as st:
        full = SequenceSampler(st, keys, n_obs_steps=2, horizon=8)
        assert full.lazy_images == [] and isinstance(full.arrays["image_front"], np.ndarray)
        sources = {"store": st, "zarr": zarr.open_group(str(path), mode="r"),
                   "dict": {**{k: np.asarray(st.data[k][:]) for k in ("image_front", "joint_pos", "action")},
                            "episode_ends": st.episode_ends}}
        for name, src in sources.items():
            for size in ((3, 4), {"image_front": (3, 4)}):
                smp = SequenceSampler(src, keys, n_obs_steps=2, horizon=8, image_size=size,
                                      episode_mask=[True, False, True, True, True], preload_images_mb=0)
                assert smp.lazy_images == ["image_front"], name
                assert smp.image_shapes == {"image_front": (3, 4, 3)}
                assert smp.source_image_shapes == {"image_front": (6, 8, 3)}
                assert isinstance(smp.arrays["joint_pos"], np.ndarray)
                assert not isinstance(smp.arrays["image_front"], np.ndarray) or name == "dict"
                ref = SequenceSampler(src, keys, n_obs_steps=2, horizon=8,
                                      episode_mask=[True, False, True, True, True])
                idx = np.arange(-len(smp), len(smp), 3)
                got = smp.get_batch(idx)
                want = ref.get_batch(idx)
                assert got["image_front"].shape == (len(idx), 2, 3, 4, 3) and got["image_front"].dtype == np.uint8
                exp = area(want["image_front"].reshape(-1, 6, 8, 3), 3, 4).reshape(len(idx), 2, 3, 4, 3)
                np.testing.assert_array_equal(got["image_front"], exp, err_msg=name)
                for k in ("joint_pos", "action", "is_pad"):
                    np.testing.assert_array_equal(got[k], want[k])
                for i in idx[:5]:
                    np.testing.assert_array_equal(smp[int(i)]["image_front"], got["image_front"][list(idx).index(i)])
                # decoded + resized once and held in memory (the default when it fits): same batches
                held = SequenceSampler(src, keys, n_obs_steps=2, horizon=8, image_size=size,
                                       episode_mask=[True, False, True, True, True])
                assert held.lazy_images == [] and held.preloaded_images == ["image_front"]
                assert isinstance(held.arrays["image_front"], np.ndarray) and held.arrays["image_front"].dtype == np.uint8
                for k in ("image_front", "joint_pos", "action", "is_pad"):
                    np.testing.assert_array_equal(held.get_batch(idx)[k], got[k], err_msg=f"{name} {k}")
        # same size as stored: in memory, as before
        same = SequenceSampler(st, keys, n_obs_steps=2, horizon=8, image_size=(6, 8))
        assert same.lazy_images == []
        # split keeps the size
        tr, va = SequenceSampler(st, keys, n_obs_steps=2, horizon=8, image_size=4, preload_images_mb=0).split(0.4)
        assert tr.lazy_images == va.lazy_images == ["image_front"] and tr.image_shapes["image_front"] == (4, 4, 3)
        lazy = SequenceSampler(st, keys, n_obs_steps=2, horizon=8, image_size=4, in_memory=False)
        np.testing.assert_array_equal(lazy.get_batch([0, 5])["image_front"],
                                      SequenceSampler(st, keys, n_obs_steps=2, horizon=8,
                                                      image_size=4).get_batch([0, 5])["image_front"])
        with pytest.raises(ValueError, match="not an image key"):
            SequenceSampler(st, keys, image_size={"joint_pos": (2, 2)})
        with pytest.raises(ValueError, match="height, width"):
            SequenceSampler(st, keys, image_size=(0, 4))


class _FakeStore:
    """A source with the EpisodeStore frame-reading API: codec() + read_frames()."""

    def __init__(self, data):
        self.data, self.episode_ends, self.calls = data, data["episode_ends"], []

    def __contains__(self, k):
        return k in ("data", "meta")

    def __getitem__(self, k):
        return self.data if k == "data" else {"episode_ends": self.episode_ends}

    def codec(self, key):
        return "jpeg:90" if key == "img" else "lossless"

    def read_frames(self, key, rows, size=None):
        self.calls.append((key, list(rows), size))
        from robot_rl.data.sampler import resize_frames
        return resize_frames(self.data[key][np.asarray(rows)], size)


def test_jpeg_keys_use_read_frames_even_at_the_stored_size():
    rng = np.random.default_rng(1)
    ends = np.cumsum([4, 6])
    data = {"img": rng.integers(0, 255, (10, 6, 6, 3), dtype=np.uint8),
            "x": rng.normal(size=(10, 2)).astype(np.float32),
            "action": rng.normal(size=(10, 2)).astype(np.float32), "episode_ends": ends}
    fake = _FakeStore(data)
    smp = SequenceSampler(fake, ["img", "x"], n_obs_steps=2, horizon=3, preload_images_mb=0)
    assert smp.lazy_images == ["img"] and smp.image_shapes["img"] == (6, 6, 3)
    ref = SequenceSampler(data, ["img", "x"], n_obs_steps=2, horizon=3)
    got = smp.get_batch(np.arange(len(smp)))
    np.testing.assert_array_equal(got["img"], ref.get_batch(np.arange(len(smp)))["img"])
    key, rows, size = fake.calls[-1]
    assert key == "img" and size is None and rows == sorted(set(rows)) and rows == list(range(10))
    smp = SequenceSampler(fake, ["img", "x"], n_obs_steps=2, horizon=3, image_size=(3, 3), preload_images_mb=0)
    smp.get_batch([0, 1])
    assert fake.calls[-1] == ("img", [0, 1], (3, 3))


def test_jpeg_store_reads_through_read_frames(tmp_path):
    path = tmp_path / "jpeg"
    rng = np.random.default_rng(2)
    base = rng.integers(0, 255, (1, 48, 64, 3), dtype=np.uint8)
    with EpisodeStore.create(path, "so101", image_codecs={"image_front": "jpeg:90"}) as st:
        for n in (5, 7):
            ep = st.start_episode("pick", source="expert")
            for t in range(n):
                ep.add_step({"image_front": np.roll(base[0], t, axis=1), "joint_pos": rng.normal(size=6).astype(np.float32),
                             "action": rng.normal(size=7).astype(np.float32)}, timestamp=t / 20)
            ep.commit(success=True)
    with EpisodeStore.open(path) as st:
        assert st.codec("image_front").startswith("jpeg")
        smp = SequenceSampler(st, ["image_front", "joint_pos"], n_obs_steps=2, horizon=4, preload_images_mb=0)
        assert smp.lazy_images == ["image_front"] and smp.image_shapes["image_front"] == (48, 64, 3)
        small = SequenceSampler(st, ["image_front", "joint_pos"], n_obs_steps=2, horizon=4, image_size=(12, 16),
                                preload_images_mb=0)
        idx = np.arange(len(smp))
        full, got = smp.get_batch(idx), small.get_batch(idx)
        assert got["image_front"].shape == (len(idx), 2, 12, 16, 3)
        e, t = smp.window(3)
        rows = int(st.episode_ends[e - 1]) * (e > 0) + np.clip([t - 1, t], 0, None)
        np.testing.assert_array_equal(full["image_front"][3], st.read_frames("image_front", rows))
        np.testing.assert_array_equal(got["image_front"][3], st.read_frames("image_front", rows, (12, 16)))
        np.testing.assert_array_equal(full["joint_pos"], got["joint_pos"])
