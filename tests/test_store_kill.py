"""SIGKILL a recording process again and again on one store: nothing committed is lost.

The writer (tests/_store_writer_proc.py) records episodes whose content is a function of
their index and prints ``COMMITTED i`` after each commit returns. It is killed at random
moments (start-up / crash recovery, add_step with background writes, flush, commit,
discard) ROBOT_RL_STORE_KILLS times (default 25). After every kill the store must open
read-only with every reported episode exact; at the end every episode is checked, the
store opens for append and takes one more episode.

The JPEG variant records two 224x256 JPEG q90 cameras (sharded arrays, read-modify-write
of the shard shared with the previous episode) and expects exactly the JPEG round trip
of every frame: ROBOT_RL_STORE_JPEG_KILLS kills (default 5).
"""
from __future__ import annotations

import os

import pytest

from _store_writer_proc import kill_campaign

N_KILLS = int(os.environ.get("ROBOT_RL_STORE_KILLS", "25"))
N_JPEG_KILLS = int(os.environ.get("ROBOT_RL_STORE_JPEG_KILLS", "5"))


@pytest.mark.slow  # (make test-slow; CI runs it)
@pytest.mark.parametrize("codec", ["lossless", "jpeg"])
def test_sigkill_never_loses_committed_episodes(tmp_path, codec):
    n_kills = N_KILLS if codec == "lossless" else N_JPEG_KILLS
    r = kill_campaign(tmp_path / "ds", n_kills=n_kills, seed=11, rng_seed=5, codec=codec,
                      image_shape=(224, 256, 3), cameras=2, max_delay=0.4 if codec == "lossless" else 1.0)
    assert r["problems"] == []
    assert r["episodes_lost"] == 0
    assert r["readable_after_every_kill"] and r["appendable_after"]
    assert r["episodes_reported_committed"] >= n_kills // 2  # the campaign really exercised commits
    assert r["episodes_in_store"] >= r["episodes_reported_committed"]
    assert sum(r["kills_landed_in"].values()) == n_kills
    if codec == "jpeg":
        assert r["store_codecs"] == {"image_front": "jpeg:90", "image_wrist": "jpeg:90"}
