"""Which items of each batch a process reads in data-parallel training (Caffe's rule).

Rank r of N ranks, each with ``batch_size`` B, reads the global batch of N·B items a single
process with batch N·B would read, and keeps the items at positions ≡ r (mod N) (Caffe's
``DataLayer`` skip rule). One step over the N ranks then sees exactly the items of one step of
the single process, and over an epoch every item is read by one rank, once. The cursor, the
epoch and the order are the global ones, the same on every rank, so rank 0's snapshot restores
every rank's reader.

Orders drawn at random (``shuffle``, ``rand_skip``) must be the same on every rank while each
rank's own generator differs (Dropout masks, crops): they come from ``order_rng``, a generator
of (``seed``, key) that every rank builds alike and that needs no saved state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shard:
    rank: int   # this process's rank r, 0 <= r < size
    size: int   # the number of ranks N
    seed: int   # the run's random_seed, common to every rank (>= 0)

    def take(self, items):
        """The items of a global batch (N·B, ...) that this rank reads: positions r, r+N, …"""
        return items[self.rank::self.size]

    def order_rng(self, *key: int) -> np.random.Generator:
        """A generator that every rank builds alike from (seed, *key) (e.g. key = the epoch)."""
        return np.random.default_rng([self.seed, *key])
