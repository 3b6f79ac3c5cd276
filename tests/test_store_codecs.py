"""Per-key image codecs of the episode store: lossless / JPEG (sharded, one frame per
inner chunk), defaults, recording in the commit record, validation, read_frames, no
re-encoding of committed frames, recovery of a torn JPEG write."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pytest
import zarr

from robot_rl.data.codecs import JpegCodec, jpeg_encode_frame, parse_codec_name
from robot_rl.data.store import EpisodeStore, StoreError
from robot_rl.drivers.virtual.camera import camera_like_frames as camera_frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / mse)


def record(path: Path, episodes: list[dict[str, np.ndarray]], **kwargs) -> EpisodeStore:
    """Create a store at ``path`` and commit ``episodes`` (dicts of per-step arrays)."""
    st = EpisodeStore.create(path, "so101", **kwargs)
    for e, steps in enumerate(episodes):
        ep = st.start_episode("pick_cube")
        n = len(next(iter(steps.values())))
        for t in range(n):
            ep.add_step({k: v[t] for k, v in steps.items()}, timestamp=e * 100.0 + t)
        ep.commit(success=True)
    return st


def shard_frame_bytes(store_path: Path, key: str, chunk_steps: int, row: int) -> bytes | None:
    """Stored JPEG bytes of ``row``, parsed independently from the shard file (sharding
    index at the end: uint64 (offset, nbytes) per inner chunk + 4-byte crc32c)."""
    f = store_path / "data" / key / "c" / str(row // chunk_steps) / "0" / "0" / "0"
    raw = f.read_bytes()
    table = np.frombuffer(raw[len(raw) - chunk_steps * 16 - 4:len(raw) - 4], "<u8").reshape(chunk_steps, 2)
    off, nb = (int(x) for x in table[row % chunk_steps])
    return None if off == 2**64 - 1 else raw[off:off + nb]


@pytest.fixture(scope="module")
def cams() -> np.ndarray:
    return camera_frames(12)


# ------------------------------------------------------------------------------ codec
def test_codec_names():
    assert parse_codec_name("lossless") == "lossless"
    assert parse_codec_name("jpeg") == "jpeg:90"
    assert parse_codec_name("JPEG:75") == "jpeg:75"
    for bad in ("png", "jpeg:0", "jpeg:101", "jpeg:abc", "jpeg:", 90, None):
        with pytest.raises(ValueError):
            parse_codec_name(bad)
    c = JpegCodec(quality=80)
    assert JpegCodec.from_dict(c.to_dict()) == c
    assert c.to_dict() == {"name": "robot_rl.jpeg", "configuration": {"quality": 80, "subsampling": "444"}}
    with pytest.raises(ValueError):
        JpegCodec(quality=0)


def test_lossless_round_trip_exact(tmp_path, cams):
    small = camera_frames(30, 96, 96, seed=1)
    with record(tmp_path / "s", [{"cam": cams[:7], "wrist": small[:7]}, {"cam": cams[7:], "wrist": small[7:12]}],
                image_codecs={"cam": "lossless"}) as st:
        assert st.codecs == {"cam": "lossless", "wrist": "lossless"}
        assert np.array_equal(st.data["cam"][:], cams)
        assert np.array_equal(st.data["wrist"][:], small[:12])


def test_jpeg90_quality_and_ratio(tmp_path, cams):
    with record(tmp_path / "s", [{"cam": cams, "state": np.zeros((len(cams), 3), np.float32)}]) as st:
        assert st.codec("cam") == "jpeg:90" and st.codec("state") is None
        got = st.data["cam"][:]
        assert got.shape == cams.shape and got.dtype == np.uint8
        assert psnr(got, cams) >= 38.0
        k = st.summary()["keys"]["cam"]
        assert k["codec"] == "jpeg:90"
        assert k["compression_ratio"] >= 15.0, k
        # the stored frame is the JPEG itself: decodes to what zarr returns
        enc = jpeg_encode_frame(cams[3], 90)
        assert np.array_equal(imagecodecs.jpeg8_decode(enc), got[3])


def test_default_codec_by_size(tmp_path):
    steps = {
        "cam224": np.zeros((2, 224, 300, 3), np.uint8) + 7,
        "cam223": np.zeros((2, 223, 300, 3), np.uint8) + 7,
        "gray": np.zeros((2, 240, 320, 1), np.uint8) + 7,
        "rgba": np.zeros((2, 240, 320, 4), np.uint8) + 7,
        "depth": np.zeros((2, 240, 320), np.uint16),
    }
    with record(tmp_path / "s", [steps]) as st:
        assert st.codecs == {"cam224": "jpeg:90", "cam223": "lossless", "gray": "jpeg:90", "rgba": "lossless"}
        assert st.codec("depth") is None
        assert np.array_equal(st.data["gray"][:], steps["gray"])  # flat grey: JPEG exact
        assert st.data["gray"][:].shape == (2, 240, 320, 1)


def test_codec_recorded_and_reopened(tmp_path, cams, capsys):
    path = tmp_path / "s"
    record(path, [{"cam": cams[:5], "small": cams[:5, :64, :64]}], image_codecs={"cam": "jpeg:75"}).close()
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    assert attrs["codecs"] == {"cam": "jpeg:75", "small": "lossless"}
    meta = json.loads((path / "data" / "cam" / "zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    assert meta["codecs"][0]["configuration"]["codecs"][0] == JpegCodec(quality=75).to_dict()
    with EpisodeStore.open(path) as st:
        assert st.codec("cam") == "jpeg:75" and st.codec("small") == "lossless"
        assert st.summary()["keys"]["cam"]["codec"] == "jpeg:75"
    # append keeps the codec; asking for another one is an error
    with EpisodeStore.open_or_create(path, "so101", image_codecs={"cam": "jpeg:75"}) as st:
        ep = st.start_episode("t")
        for t in range(5, 8):
            ep.add_step({"cam": cams[t], "small": cams[t, :64, :64]})
        ep.commit(True)
        assert st.codec("cam") == "jpeg:75"
    with pytest.raises(StoreError, match="stored as 'jpeg:75'"):
        EpisodeStore.open_or_create(path, "so101", image_codecs={"cam": "lossless"})
    with pytest.raises(StoreError, match="does not have"):
        EpisodeStore.open(path, mode="a", image_codecs={"nope": "jpeg"})
    with pytest.raises(StoreError, match="mode='a'"):
        EpisodeStore.open(path, image_codecs={"cam": "jpeg:75"})
    # plain zarr reads it once robot_rl.data.codecs is imported
    arr = zarr.open_group(path, mode="r")["data/cam"]
    assert arr.shape[0] == 8 and psnr(arr[:8], cams[:8]) > 35
    from robot_rl.cli.info import info
    info(str(path))
    out = capsys.readouterr().out
    assert "jpeg:75" in out and "lossless" in out


def test_old_store_without_codecs_attr_is_lossless(tmp_path, cams):
    path = tmp_path / "s"
    record(path, [{"cam": cams[:3, :100, :100]}]).close()
    doc = json.loads((path / "zarr.json").read_text())
    for k in ("codecs", "image_codecs"):
        doc["attributes"].pop(k)
    (path / "zarr.json").write_text(json.dumps(doc))
    with EpisodeStore.open(path, mode="a") as st:
        assert st.codec("cam") == "lossless"
        assert np.array_equal(st.read_frames("cam", [2, 0]), cams[[2, 0], :100, :100])


def test_invalid_codecs(tmp_path, cams):
    for bad, msg in [({"cam": "png"}, "unknown codec"), ({"cam": "jpeg:0"}, "1..100"),
                     ({"cam": "jpeg:x"}, "1..100"), ({"cam": 5}, "must be a string"), (["cam"], "dict")]:
        with pytest.raises(StoreError, match=msg):
            EpisodeStore.create(tmp_path / "bad", "so101", image_codecs=bad)
        assert not (tmp_path / "bad").exists()
    for steps, codecs, msg in [
        ({"x": np.zeros((1, 3), np.float32)}, {"x": "jpeg"}, "needs a uint8 image"),
        ({"d": np.zeros((1, 240, 320, 3), np.uint16)}, {"d": "jpeg"}, "needs a uint8 image"),
        ({"rgba": np.zeros((1, 240, 320, 4), np.uint8)}, {"rgba": "jpeg:80"}, "needs a uint8 image"),
        ({"cam": cams[:1]}, {"camera": "jpeg"}, "does not have"),
    ]:
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        with EpisodeStore.create(path, "so101", image_codecs=codecs) as st:
            ep = st.start_episode("t")
            with pytest.raises(StoreError, match=msg):
                ep.add_step({k: v[0] for k, v in steps.items()})
            assert len(ep) == 0
            ep.discard()
    with EpisodeStore.create(tmp_path / "ok", "so101") as st:
        ep = st.start_episode("t")
        ep.add_step({"x": np.zeros(3, np.float32)})
        ep.commit(True)
        with pytest.raises(StoreError, match="not an image key"):
            st.read_frames("x", [0])
        with pytest.raises(KeyError):
            st.codec("nope")


# ------------------------------------------------------------------------------ read_frames
def test_read_frames_lossless(tmp_path):
    frames = camera_frames(25, 64, 80, seed=3)
    gray = frames[..., :1].copy()
    with record(tmp_path / "s", [{"cam": frames[:9], "g": gray[:9]}, {"cam": frames[9:], "g": gray[9:]}],
                chunk_steps={"cam": 4, "g": 4}) as st:
        assert st.codec("cam") == "lossless"
        rows = [24, 3, 3, 0, 17, 9]
        assert np.array_equal(st.read_frames("cam", rows), st.data["cam"][:][rows])
        assert np.array_equal(st.read_frames("g", np.array(rows)), gray[rows])
        got = st.read_frames("cam", rows, size=(32, 40))
        ref = np.stack([cv2.resize(frames[i], (40, 32), interpolation=cv2.INTER_AREA) for i in rows])
        assert np.array_equal(got, ref)
        g = st.read_frames("g", rows, size=(16, 20))
        assert g.shape == (6, 16, 20, 1)
        assert st.read_frames("cam", []).shape == (0, 64, 80, 3)
        assert st.read_frames("cam", [], size=(8, 8)).shape == (0, 8, 8, 3)
        with pytest.raises(IndexError):
            st.read_frames("cam", [25])
        with pytest.raises(IndexError):
            st.read_frames("cam", [-1])
        with pytest.raises(StoreError, match="size"):
            st.read_frames("cam", [0], size=(0, 5))


def test_read_frames_jpeg(tmp_path, cams):
    zero = np.zeros_like(cams[:2])
    data = np.concatenate([cams[:5], zero, cams[5:]])  # all-zero frames are stored as no chunk
    gray = np.ascontiguousarray(data[..., 1:2])
    with record(tmp_path / "s", [{"cam": data[:6], "g": gray[:6]}, {"cam": data[6:], "g": gray[6:]}],
                chunk_steps={"cam": 4, "g": 4}) as st:
        assert st.codec("cam") == "jpeg:90" and st.codec("g") == "jpeg:90"
        full = st.data["cam"][:]
        rows = [13, 0, 5, 5, 6, 9, 2]
        assert np.array_equal(st.read_frames("cam", rows), full[rows])
        assert not st.read_frames("cam", [5, 6]).any()
        assert np.array_equal(st.read_frames("g", rows), st.data["g"][:][rows])
        for size in [(96, 96), (240, 320), (60, 80), (300, 400), (480, 640)]:
            got = st.read_frames("cam", rows, size=size)
            ref = np.stack([cv2.resize(full[i], size[::-1], interpolation=cv2.INTER_AREA) for i in rows])
            assert got.shape == (len(rows),) + size + (3,)
            diff = np.abs(got.astype(np.int16) - ref)
            assert diff.mean() < 1.5 and diff.max() < 40, (size, diff.mean(), diff.max())
        g = st.read_frames("g", rows, size=(96, 96))
        refg = np.stack([cv2.resize(st.data["g"][i][..., 0], (96, 96), interpolation=cv2.INTER_AREA)
                         for i in rows])
        assert g.shape == (7, 96, 96, 1) and np.abs(g[..., 0].astype(np.int16) - refg).mean() < 1.5

        # thread-safe: worker threads reading random rows get what one thread gets
        rng = np.random.default_rng(0)
        batches = [rng.integers(0, len(data), 5) for _ in range(24)]
        want = [st.read_frames("cam", b, size=(96, 96)) for b in batches]
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(lambda b: st.read_frames("cam", b, size=(96, 96)), batches))
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_read_frames_jpeg_corrupt_index_is_detected(tmp_path, cams):
    with record(tmp_path / "s", [{"cam": cams[:4]}], chunk_steps={"cam": 4}) as st:
        f = tmp_path / "s" / "data" / "cam" / "c" / "0" / "0" / "0" / "0"
        raw = bytearray(f.read_bytes())
        raw[-10] ^= 0xFF  # a flipped bit in the index: the crc32c catches it
        f.write_bytes(bytes(raw))
        with pytest.raises(StoreError, match="checksum"):
            st.read_frames("cam", [1])


# ------------------------------------------------------------------------------ writing
def test_no_generation_loss_in_shared_shard(tmp_path, cams):
    """The shard shared by two episodes is read-modify-written when the second one is
    appended: the first episode's frames keep their stored JPEG bytes (never re-encoded)."""
    path = tmp_path / "s"
    with record(path, [{"cam": cams[:5]}], chunk_steps={"cam": 8}) as st:
        before = [shard_frame_bytes(path, "cam", 8, i) for i in range(5)]
        assert all(b is not None for b in before)
        assert before[2] == jpeg_encode_frame(cams[2], 90)
        decoded = st.data["cam"][:5]
        for rnd in range(3):  # append into the same shard again and again
            ep = st.start_episode("t")
            lo = st.n_steps
            ep.add_step({"cam": cams[5 + rnd]})
            ep.commit(True)
            assert st.n_steps == lo + 1 and lo + 1 <= 8  # still the first shard
            assert [shard_frame_bytes(path, "cam", 8, i) for i in range(5)] == before
            assert np.array_equal(st.data["cam"][:5], decoded)
        assert shard_frame_bytes(path, "cam", 8, 7) == jpeg_encode_frame(cams[7], 90)


def test_torn_jpeg_write_recovers(tmp_path, cams):
    """A recording that dies mid-episode (full shards past the committed end already on
    disk) leaves a store that opens read-only and is repaired on open for append."""
    path, crashed = tmp_path / "s", tmp_path / "crashed"
    st = record(path, [{"cam": cams[:3]}], chunk_steps={"cam": 4})
    committed = st.data["cam"][:3]
    ep = st.start_episode("t")
    for t in range(3, 12):
        ep.add_step({"cam": cams[t]})
    st.flush()  # shards 0 (read-modify-written), 1 and 2 (past the end) are on disk
    shutil.copytree(path, crashed)  # the directory as a SIGKILL right now would leave it
    ep.discard()
    st.close()
    assert (crashed / "data" / "cam" / "c" / "2").exists()
    with EpisodeStore.open(crashed) as ro:
        assert ro.n_steps == 3 and np.array_equal(ro.read_frames("cam", [0, 1, 2]), committed)
    with EpisodeStore.open(crashed, mode="a") as rw:
        assert rw.data["cam"].shape[0] == 3 and not (crashed / "data" / "cam" / "c" / "2").exists()
        assert np.array_equal(rw.data["cam"][:3], committed)
        ep = rw.start_episode("t")
        for t in range(3, 6):
            ep.add_step({"cam": cams[t]})
        ep.commit(True)
        assert np.array_equal(rw.data["cam"][:3], committed)
        assert psnr(rw.read_frames("cam", [3, 4, 5]), cams[3:6]) >= 38.0


def test_stored_jpegs(tmp_path, cams):
    with record(tmp_path / "s", [{"cam": cams[:6], "small": cams[:6, :64, :64]}], chunk_steps={"cam": 4}) as st:
        got = st.stored_jpegs("cam", [5, 0])
        assert got == [shard_frame_bytes(tmp_path / "s", "cam", 4, 5), jpeg_encode_frame(cams[0], 90)]
        assert st.stored_jpegs("small", [0]) is None
        with pytest.raises(IndexError):
            st.stored_jpegs("cam", [6])
