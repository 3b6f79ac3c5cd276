"""SIGKILL a recording process again and again on one store: nothing committed is lost.

The writer (tests/_store_writer_proc.py) records episodes whose content is a function of
their index and prints ``COMMITTED i`` after each commit returns. It is killed at random
moments (start-up / crash recovery, add_step with background writes, flush, commit,
discard) ROBOT_RL_STORE_KILLS times (default 25). After every kill the store must open
read-only with every reported episode exact; at the end every episode is checked, the
store opens for append and takes one more episode.
"""
from __future__ import annotations

import os

import pytest

from _store_writer_proc import kill_campaign

N_KILLS = int(os.environ.get("ROBOT_RL_STORE_KILLS", "25"))


@pytest.mark.slow  # (make test-slow; CI runs it)
def test_sigkill_never_loses_committed_episodes(tmp_path):
    r = kill_campaign(tmp_path / "ds", n_kills=N_KILLS, seed=11, rng_seed=5)
    assert r["problems"] == []
    assert r["episodes_lost"] == 0
    assert r["readable_after_every_kill"] and r["appendable_after"]
    assert r["episodes_reported_committed"] >= N_KILLS // 2  # the campaign really exercised commits
    assert r["episodes_in_store"] >= r["episodes_reported_committed"]
    assert sum(r["kills_landed_in"].values()) == N_KILLS
