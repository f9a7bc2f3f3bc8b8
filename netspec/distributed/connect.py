"""Forming the group of ranks: under an MPI launcher (mpiexec, srun) or under netspec's own
launcher (``launch.py``, ``netspec train --gpu 0,1``), and choosing each rank's collectives."""

from __future__ import annotations

import os
import socket

import numpy as np

from .. import parallel
from ..arrays import cupy_available
from .collectives import MpiCollectives, NcclCollectives, decode_unique_id
from .group import DistributedError, Group

#: environment variables in which MPI launchers give the number of processes started: MPICH's
#: and Intel MPI's Hydra (also srun --mpi=pmi2), Open MPI's mpirun, MVAPICH2's
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

#: what netspec's own launcher tells each child: its rank, the number of ranks, its GPU, the
#: NCCL unique id (hex) and the run's random seed
RANK_VAR, SIZE_VAR, DEVICE_VAR, NCCL_ID_VAR, SEED_VAR = (
    "NETSPEC_RANK", "NETSPEC_WORLD_SIZE", "NETSPEC_DEVICE", "NETSPEC_NCCL_ID", "NETSPEC_SEED")


def launched_size(environ=os.environ) -> int:
    """How many processes a launcher (MPI's or netspec's) started together with this one
    (1: none)."""
    sizes = []
    for name in (*SIZE_VARIABLES, SIZE_VAR):
        try:
            sizes.append(int(environ.get(name, "1")))
        except ValueError:
            pass
    return max(sizes, default=1)


def connect(environ=os.environ) -> Group | None:
    """The group of ranks when a launcher started this process with N > 1 processes, else
    None. netspec's launcher: NCCL on the GPU it names; an MPI launcher: MPI (``use_nccl``
    moves the arrays to NCCL once the ranks are on their GPUs). Sets this rank's CPU threads
    to cores / (ranks on this machine) unless ``--threads``/``NETSPEC_NUM_THREADS`` chose
    them."""
    n = launched_size(environ)
    if n <= 1:
        return None
    group = _self_launched(environ) if SIZE_VAR in environ else _mpi(n)
    if not parallel.threads_chosen():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        parallel.set_num_threads(max(1, (cores or 1) // group.local_size))
    return group


def _mpi(n: int) -> Group:
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            f"this process was started by an MPI launcher as one of {n} processes, but mpi4py "
            "is not installed, so the ranks cannot train together: pip install "
            "'netspec[mpi]' (mpi4py and the MPICH wheel), or run without mpiexec") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != n:
        raise DistributedError(
            f"the launcher started {n} processes but MPI sees {comm.Get_size()}: mpi4py uses "
            "another MPI library than the launcher (run the mpiexec of the MPI that mpi4py was "
            "built with; under Slurm, srun --mpi=pmi2 or pmix)")
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    collectives = MpiCollectives(comm, MPI)
    seed = int(collectives.bcast_obj(int(np.random.SeedSequence().entropy % (2**31))))
    group = Group(collectives, comm.Get_rank(), comm.Get_size(), local.Get_rank(),
                  local.Get_size(), seed)
    local.Free()
    return group


def _self_launched(environ) -> Group:
    """A child of ``launch.py``: every rank on this machine, one GPU each, NCCL for all."""
    rank, size = int(environ[RANK_VAR]), int(environ[SIZE_VAR])
    device = int(environ[DEVICE_VAR])
    if not cupy_available():
        raise DistributedError(f"rank {rank} of {size}: netspec's launcher gave this process "
                               f"GPU {device} but CuPy is not installed or sees no GPU")
    import cupy
    cupy.cuda.Device(device).use()
    collectives = NcclCollectives.create(decode_unique_id(environ[NCCL_ID_VAR]), rank, size)
    return Group(collectives, rank, size, rank, size, int(environ[SEED_VAR]), device=device)


def use_nccl(group: Group) -> str:
    """Move an MPI group's array collectives to NCCL when every rank is on a GPU of its own
    and CuPy has NCCL; returns how the gradients travel (for the log). Every rank calls it,
    on its GPU, after the start-up agreement."""
    if not isinstance(group.collectives, MpiCollectives):
        return "NCCL (device to device)"
    import cupy
    try:
        from cupy.cuda import nccl
        has_nccl = bool(nccl.available)
    except Exception:  # noqa: BLE001 - CuPy without NCCL (absent, or its library fails to load)
        has_nccl = False
    device = cupy.cuda.Device()
    # the PCI address names a GPU across processes (each may see its own as device 0)
    gpu = getattr(device, "pci_bus_id", None) or device.id
    places = group.allgather((socket.gethostname(), gpu, has_nccl))
    if len({(host, gpu) for host, gpu, _ in places}) < group.size:
        return "MPI through host memory (ranks share a GPU; NCCL needs one GPU per rank)"
    if not all(ok for _, _, ok in places):
        return "MPI through host memory (CuPy has no NCCL on some rank)"
    unique_id = group.bcast_obj(nccl.get_unique_id() if group.is_root else None)
    try:
        group.collectives = NcclCollectives.create(unique_id, group.rank, group.size,
                                                   objects=group.collectives)
    except Exception as e:  # noqa: BLE001 - the other ranks wait in NCCL's set-up
        group.abort(e, "joining the NCCL communicator")
    return "NCCL (device to device)"
