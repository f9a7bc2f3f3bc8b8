"""The ranks of a data-parallel run and what they agree on: failures, start-up, the config.

A ``Group`` runs on one ``Collectives`` (``collectives.py``: MPI with host buffers, or NCCL with
device buffers); the agreement and fault logic here is the same for both.
"""

from __future__ import annotations

import hashlib
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import NetspecError

#: the solver fields that may differ between ranks (each rank's own GPU)
PER_RANK_FIELDS = ("device_id",)


class DistributedError(NetspecError):
    """A failure that stopped every rank; its message names the rank(s) and the cause."""


class PeerFailure(DistributedError):
    """Raised on ranks other than 0 when every rank stops: rank 0 prints the message."""


@dataclass
class Group:
    """The ranks of one data-parallel run: the collectives they run on and what each rank
    needs to know about the others."""

    collectives: Any         # collectives.MpiCollectives or NcclCollectives
    rank: int
    size: int
    local_rank: int          # rank among the ranks on this machine
    local_size: int          # ranks on this machine
    seed: int                # rank 0's random seed, used when the solver's random_seed < 0
    device: int | None = None    # the GPU the launcher gave this rank (netspec's own launcher)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def sum_(self, array) -> None:
        """array ← Σ over ranks of array, in place."""
        self.collectives.sum_(array)

    def bcast_(self, array) -> None:
        """array ← rank 0's array, in place."""
        self.collectives.bcast_(array)

    def allgather(self, obj) -> list:
        """Every rank's ``obj`` (a small picklable value), in rank order."""
        return self.collectives.allgather(obj)

    def bcast_obj(self, obj):
        """Rank 0's ``obj`` (a small picklable value)."""
        return self.collectives.bcast_obj(obj)

    def agree(self, error: BaseException | None, where: str) -> list:
        """Every rank's (error message or None); raise the agreed error if any rank failed
        (rank 0 a DistributedError with the message, the others a PeerFailure)."""
        messages = self.allgather(None if error is None else describe(error))
        if any(m is not None for m in messages):
            raise self.failure(messages, where)
        return messages

    def failure(self, messages: list, where: str) -> DistributedError:
        """The error every rank raises when the ranks whose ``messages`` are not None failed."""
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if len({m for _, m in failed}) == 1:
            if len(failed) == self.size:
                who = "every rank"
            else:
                who = ("rank " if len(failed) == 1 else "ranks ") + ", ".join(
                    str(r) for r, _ in failed)
            text = f"{who} of {self.size} failed {where}: {failed[0][1]}"
        else:
            text = f"{len(failed)} of {self.size} ranks failed {where}: " + "; ".join(
                f"rank {r}: {m}" for r, m in failed)
        text += " (every rank stopped)"
        return DistributedError(text) if self.is_root else PeerFailure(text)

    def abort(self, error: BaseException, where: str) -> None:
        """Print one line naming this rank and the cause, then end every rank: for a failure
        where the ranks cannot agree any more (between two collectives)."""
        print(f"netspec: error: rank {self.rank} of {self.size} failed {where}: "
              f"{describe(error)} (aborting every rank)", file=sys.stderr, flush=True)
        self.collectives.abort()


def describe(error: BaseException) -> str:
    """One line for an error of any rank, as the command line would print it."""
    if isinstance(error, NetspecError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"internal error: {type(error).__name__}: {error}"


def config_digest(sp, net_param, **options) -> tuple[str, dict]:
    """(SHA-256, the dict hashed) of the parsed solver (less ``PER_RANK_FIELDS``), its train
    net and the run's options: ranks that would train different things differ here."""
    solver = sp.model_dump(mode="json", exclude=set(PER_RANK_FIELDS))
    config = {"solver": solver, "net": net_param.model_dump(mode="json"),
              "options": {k: None if v is None else str(v) for k, v in options.items()}}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), config


def first_difference(a, b, path: str = "") -> str:
    """The first field path where two JSON-like values differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}.{i}")
    return f"{path or 'value'}: {json.dumps(a, default=str)[:80]} vs {json.dumps(b, default=str)[:80]}"


class Startup:
    """What the start-up agreement checks: set ``config`` (``config_digest``'s pair) inside
    ``startup``'s block."""

    config: tuple[str, dict] | None = None


@contextmanager
def startup(group: Group | None):
    """Run the block (load files, build the solver, restore) on every rank, then agree: any
    rank's exception, or solver/net files that differ between ranks, stop every rank with
    one message. Without a group the block just runs."""
    state = Startup()
    if group is None:
        yield state
        return
    try:
        yield state
    except BaseException as e:  # noqa: BLE001 - every rank must learn of it
        group.agree(e, "at start-up")
        raise
    group.agree(None, "at start-up")
    digests = group.allgather(state.config[0] if state.config else None)
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    if odd:
        configs = group.allgather(state.config[1] if state.config else None)
        what = ": " + first_difference(configs[0], configs[odd[0]]) if group.is_root else ""
        cls = DistributedError if group.is_root else PeerFailure
        raise cls(f"rank{'s' * (len(odd) > 1)} {', '.join(map(str, odd))} of {group.size} "
                  f"loaded a different solver, net or option than rank 0{what}. Every rank "
                  "must train the same files (same paths on every machine, same --set)")
