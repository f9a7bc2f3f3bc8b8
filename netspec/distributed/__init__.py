"""Data-parallel training over MPI and NCCL, with Caffe's multi-GPU semantics
(``docs/distributed.md``).

``mpiexec -n N netspec train solver.yaml`` starts N ranks; ``netspec train solver.yaml --gpu
0,1`` (or ``all``) starts one rank per GPU itself (``launch.py``). Each rank holds the whole
net and reads its share of every batch (``netspec/data/shard.py``: rank r keeps the items ≡ r
mod N of the global batch of N·B). One iteration on every rank:

  1. forward/backward ``iter_size`` times on its share (gradients accumulate in ``flat_diff``)
  2. status all-reduce of [failed, stop requested, loss]: a rank that raised, or a Ctrl-C on
     any rank, stops every rank at the same point; the displayed loss is the mean over ranks
  3. gradient all-reduce, in place on the flat buffer: g ← (Σ_ranks g) / N
  4. the identical update (clipping on the averaged gradient, iter_size, decay, rule)

so N ranks × batch B compute what one process with batch N·B computes, up to the order of the
sums. Parameters and solver state (a resume's too) are broadcast from rank 0 at the start; each
rank's generator is seeded with random_seed + rank (Dropout masks and random crops differ per
rank, as in Caffe); BatchNorm statistics stay per rank. Only rank 0 logs, tests and snapshots.

Start-up is one agreement: every rank loads its files and builds its solver, then all exchange
(error, hash of the parsed solver and nets); any failure or any difference stops every rank
with one message naming the rank. A rank that is killed makes the launcher end the others.

Modules: ``group`` (the agreement and fault logic, one copy for both transports),
``collectives`` (MPI on host buffers, NCCL on device buffers), ``connect`` (forming the group
under a launcher), ``solver`` (``DataParallelSolver``), ``devices`` (``--gpu`` values),
``launch`` (netspec's own one-process-per-GPU launcher and its supervision).
"""

from .connect import connect, launched_size, use_nccl
from .group import (DistributedError, Group, PeerFailure, config_digest, describe,
                    first_difference, startup)
from .solver import DataParallelSolver

__all__ = ["DataParallelSolver", "DistributedError", "Group", "PeerFailure", "config_digest",
           "connect", "describe", "first_difference", "launched_size", "startup", "use_nccl"]
