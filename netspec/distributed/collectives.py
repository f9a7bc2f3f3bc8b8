"""The collectives a ``Group`` runs on, one interface with two implementations:

* ``MpiCollectives``: mpi4py on host buffers (a GPU array is copied to host memory and back);
  CPU ranks, and GPU ranks that share a device.
* ``NcclCollectives``: NCCL through CuPy (``cupy.cuda.nccl``) on device buffers, one GPU per
  rank; small Python objects go over MPI when there is one (under mpiexec), else as pickled
  bytes over NCCL itself (netspec's own launcher, ``launch.py``).

Each has ``sum_(array)`` and ``bcast_(array)`` (in place, root 0), ``allgather(obj)``,
``bcast_obj(obj)`` and ``abort()`` (end this rank so that every rank ends).
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np

from ..arrays import get_array_module, to_numpy


class MpiCollectives:
    """Collectives over an mpi4py communicator, on host memory."""

    def __init__(self, comm, MPI):
        self.comm = comm
        self.MPI = MPI

    def sum_(self, array) -> None:
        self._in_place(array, lambda host: self.comm.Allreduce(self.MPI.IN_PLACE, host,
                                                               op=self.MPI.SUM))

    def bcast_(self, array) -> None:
        self._in_place(array, lambda host: self.comm.Bcast(host, root=0))

    def _in_place(self, array, collective) -> None:
        """Run ``collective(host array)`` on ``array``, through a contiguous host copy when
        ``array`` is on a GPU or not contiguous."""
        host = _host(array)
        collective(host)
        if host is not array:
            array[...] = get_array_module(array).asarray(host)

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj)

    def bcast_obj(self, obj):
        return self.comm.bcast(obj, root=0)

    def abort(self) -> None:
        self.comm.Abort(1)


def _host(array) -> np.ndarray:
    """``array`` itself when MPI can use it in place (contiguous NumPy), else a host copy."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return array
    return np.ascontiguousarray(to_numpy(array))


class NcclCollectives:
    """Collectives over a ``cupy.cuda.nccl.NcclCommunicator`` on the current device, on the
    current CuPy stream. ``objects``: the collectives that carry Python objects and abort
    (MPI under mpiexec); None: objects travel as bytes over NCCL and ``abort`` ends this
    process (the launcher then ends the others)."""

    def __init__(self, comm, size: int, objects: MpiCollectives | None = None):
        self.comm = comm
        self.size = size
        self.objects = objects

    @classmethod
    def create(cls, unique_id: tuple, rank: int, size: int,
               objects: MpiCollectives | None = None) -> "NcclCollectives":
        """Join the communicator ``unique_id`` as ``rank`` of ``size`` on the current device
        (blocks until every rank has joined)."""
        from cupy.cuda import nccl
        return cls(nccl.NcclCommunicator(size, unique_id, rank), size, objects)

    def sum_(self, array) -> None:
        from cupy.cuda import nccl
        self._in_place(array, lambda dev, dtype, stream: self.comm.allReduce(
            dev.data.ptr, dev.data.ptr, dev.size, dtype, nccl.NCCL_SUM, stream))

    def bcast_(self, array) -> None:
        self._in_place(array, lambda dev, dtype, stream: self.comm.bcast(
            dev.data.ptr, dev.size, dtype, 0, stream))

    def _in_place(self, array, collective) -> None:
        """Run ``collective(device array, NCCL type, stream)`` on ``array``, through a
        contiguous device copy when ``array`` is on the host or not contiguous."""
        import cupy
        dev = cupy.ascontiguousarray(cupy.asarray(array))
        collective(dev, nccl_type(dev.dtype), cupy.cuda.get_current_stream().ptr)
        if dev is not array:
            array[...] = cupy.asnumpy(dev) if isinstance(array, np.ndarray) else dev

    def allgather(self, obj) -> list:
        if self.objects is not None:
            return self.objects.allgather(obj)
        import cupy
        return allgather_pickled(obj, self._allgather_array, cupy)

    def _allgather_array(self, dev):
        """The ranks' equal-sized device arrays, concatenated in rank order."""
        import cupy
        out = cupy.empty(dev.size * self.size, dev.dtype)
        self.comm.allGather(dev.data.ptr, out.data.ptr, dev.size, nccl_type(dev.dtype),
                            cupy.cuda.get_current_stream().ptr)
        return out

    def bcast_obj(self, obj):
        if self.objects is not None:
            return self.objects.bcast_obj(obj)
        return self.allgather(obj)[0]

    def abort(self) -> None:
        if self.objects is not None:
            self.objects.abort()
        os._exit(1)


def nccl_type(dtype) -> int:
    """NCCL's code for a NumPy dtype."""
    from cupy.cuda import nccl
    codes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
             np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int32): nccl.NCCL_INT32,
             np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8}
    return codes[np.dtype(dtype)]


def allgather_pickled(obj, allgather_array, xp) -> list:
    """Every rank's ``obj`` through ``allgather_array`` (equal-sized arrays of module ``xp`` in,
    their concatenation in rank order out): the pickled lengths first, then the pickles
    padded to the longest."""
    data = np.frombuffer(pickle.dumps(obj), np.uint8)
    lengths = to_numpy(allgather_array(xp.asarray(np.array([data.size], np.int64))))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:data.size] = data
    rows = to_numpy(allgather_array(xp.asarray(padded))).reshape(len(lengths), -1)
    return [pickle.loads(row[:n].tobytes()) for row, n in zip(rows, lengths)]


def encode_unique_id(unique_id: tuple) -> str:
    """An NCCL unique id (CuPy's tuple of 128 chars, signed or not as the platform's ``char``)
    as text for an environment variable."""
    return json.dumps(list(unique_id), separators=(",", ":"))


def decode_unique_id(text: str) -> tuple:
    """``encode_unique_id``'s inverse: the tuple CuPy's NcclCommunicator takes."""
    return tuple(json.loads(text))
