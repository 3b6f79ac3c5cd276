"""Datasets: the crash-safe episode store and the sequence sampler for training."""
from robot_rl.data.sampler import SequenceSampler, episode_split
from robot_rl.data.store import (FORMAT, FORMAT_VERSION, SOURCES, TIMESTAMP, Episode,
                                 EpisodeStore, KeySpec, StoreError)

__all__ = ["EpisodeStore", "Episode", "StoreError", "KeySpec", "SOURCES", "TIMESTAMP", "FORMAT",
           "FORMAT_VERSION", "SequenceSampler", "episode_split"]
