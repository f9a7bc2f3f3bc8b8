"""Reading a solver state file for ``Solver.restore``: every record is checked against the
solver that resumes from it before anything changes, and each problem is a SnapshotError naming
the file and the record."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SnapshotError
from ..snapshot import load_npz, sha256_hex, unpack_state


def read_state(solver, path: Path) -> dict:
    where = {"file": str(path)}
    if path.suffix == ".caffemodel":
        raise SnapshotError("this is a Caffe .caffemodel (weights), not a solver state: "
                            "--snapshot resumes from a .solverstate.npz written by netspec "
                            "train; to start from these weights use --weights", **where)
    flat = load_npz(path, "solver state")
    if "iter" not in flat and flat and all("/" in k for k in flat):
        raise SnapshotError("this is a weights file, not a solver state: --snapshot resumes "
                            "from the .solverstate.npz written beside it; to start from "
                            "these weights use --weights", **where)
    try:
        st = unpack_state(flat)
    except ValueError as e:
        raise SnapshotError(f"the solver state is corrupt: {e}", **where) from None
    absent = [k for k in ("iter", "type", "weights", "rng", "history") if k not in st]
    if absent:
        raise SnapshotError(f"the solver state has no {', '.join(repr(k) for k in absent)} "
                            "record: the file is incomplete or was not written by netspec "
                            "train", **where)
    kind = state_text(st, "type", where)
    if kind != solver.sp.type:
        raise SnapshotError(f"the state was written by a {kind} solver, this one is "
                            f"{solver.sp.type}", **where)
    return st

def state_text(st: dict, key: str, where: dict) -> str:
    v = st[key]
    if isinstance(v, dict) or np.ndim(v) != 0 or np.asarray(v).dtype.kind != "U" or not str(v):
        raise SnapshotError(f"the record '{key}' should be a text, not {_show(v)}", **where)
    return str(v)

def state_iter(st: dict, where: dict) -> int:
    v = st["iter"]
    if (isinstance(v, dict) or np.ndim(v) != 0 or np.asarray(v).dtype.kind not in "iu"
            or int(v) < 0):
        raise SnapshotError(f"the record 'iter' is {_show(v)}, not an iteration number "
                            "(an integer >= 0)", **where)
    return int(v)

def state_array(st: dict, key: str, default, kinds: str, where: dict):
    v = st.get(key, default)
    if isinstance(v, dict) or np.ndim(v) != 1 or np.asarray(v).dtype.kind not in kinds + "iu":
        raise SnapshotError(f"the record '{key}' should be a list of numbers, not "
                            f"{_show(v)}", **where)
    return np.asarray(v)

def group_text(rows) -> str:
    return ", ".join(f"(lr_mult {r[0]:g}, decay_mult {r[1]:g}: {int(r[2])} values)" for r in rows)

def state_history(solver, st: dict, where: dict) -> list[dict]:
    """The update rule's arrays, one dict per parameter group, each checked against the
    group of this net (same lr_mult/decay_mult grouping, names, sizes)."""
    mine = [(g.lr_mult, g.decay_mult, g.count) for g in solver.groups]
    redo = ("Resuming needs the net's lr_mult and decay_mult as they were; to continue from "
            "the weights alone, start with --weights")
    if "groups" in st:
        theirs = st["groups"]
        rows = None
        if (not isinstance(theirs, dict) and np.ndim(theirs) == 1
                and np.asarray(theirs).dtype.kind in "fiu" and np.size(theirs) % 3 == 0):
            rows = np.asarray(theirs, dtype=np.float64).reshape(-1, 3).tolist()
        if rows is None:
            raise SnapshotError(f"the record 'groups' should be (lr_mult, decay_mult, count) "
                                f"triples, not {_show(theirs)}", **where)
        if [tuple(r) for r in rows] != [tuple(map(float, m)) for m in mine]:
            raise SnapshotError(
                f"the parameter groups changed since this state was written: it holds "
                f"{group_text(rows)}, this net has {group_text(mine)}. {redo}",
                **where)
    history = st["history"]
    if not isinstance(history, dict) or sorted(history) != [str(j) for j in range(len(mine))]:
        n = len(history) if isinstance(history, dict) else _show(history)
        raise SnapshotError(f"the state holds {n} parameter histories, this net has "
                            f"{len(mine)} parameter groups (blobs with the same lr_mult and "
                            f"decay_mult): {group_text(mine)}. {redo}", **where)
    out = []
    for j, s in enumerate(solver.state):
        h = history[str(j)]
        if not isinstance(h, dict) or sorted(h) != sorted(s):
            raise SnapshotError(f"the history of parameter group {j} should hold "
                                f"{sorted(s)} for {solver.sp.type}, it holds "
                                f"{sorted(h) if isinstance(h, dict) else _show(h)}", **where)
        for k, ref in s.items():
            v = h[k]
            if np.shape(v) != tuple(ref.shape) or np.asarray(v).dtype.kind not in "fiu":
                raise SnapshotError(
                    f"the history '{k}' of parameter group {j} has {_show(v)}, this net's "
                    f"group {group_text([mine[j]])} needs {ref.shape[0]} numbers. "
                    f"{redo}", **where)
            if not np.isfinite(v).all():
                raise SnapshotError(f"the history '{k}' of parameter group {j} holds NaN or "
                                    "Inf values", **where)
        out.append(h)
    return out

def state_data(solver, st: dict, where: dict) -> list:
    """(layer, record) for every stateful layer of the nets, each record checked against the
    layer's own (names, shapes, integer kinds, positions within their orders)."""
    data = st.get("data", {})
    if not isinstance(data, dict):
        raise SnapshotError(f"the record 'data' should hold data-layer records, not "
                            f"{_show(data)}", **where)
    out, known = [], set()
    for tag, net in solver.all_nets():
        for layer in net.layers:
            fresh = layer.state_dict()
            key = f"{tag}:{layer.name}"
            known.add(key)
            if not fresh:
                continue
            if key not in data:
                solver.log.warn(f"{where['file']} has no record of layer '{layer.name}' ({tag} "
                              "net): it starts from its beginning")
                continue
            out.append((layer, _check_layer_record(layer.name, data[key], fresh, where)))
    extra = sorted(set(data) - known)
    if extra:
        solver.log.warn(f"{where['file']} has records of layers this net does not have, "
                      f"ignored: {', '.join(extra)}")
    return out

def state_weights(solver, st: dict, state_path: Path) -> tuple[Path, bytes]:
    """The weights file the state names and its bytes, checked against the state's
    SHA-256 of them."""
    where = {"file": str(state_path)}
    weights = state_path.parent / state_text(st, "weights", where)
    try:
        raw = weights.read_bytes()
    except OSError as e:
        raise SnapshotError(f"cannot read the weights file this state names, {weights}: "
                            f"{e.strerror or e}", **where) from None
    if "weights_sha256" not in st:
        solver.log.warn(f"{state_path} holds no checksum of its weights file (written by an "
                      f"older netspec): cannot check that {weights.name} belongs to it")
    elif sha256_hex(raw) != state_text(st, "weights_sha256", where):
        raise SnapshotError(
            f"the weights file it names, {weights}, is not the one written with this state "
            "(its SHA-256 differs): the two come from different snapshots, e.g. a run "
            "killed between writing the weights and the state while another run used the "
            "same snapshot_prefix. Resume from a state whose weights file belongs to it, or "
            f"start from {weights.name} alone with --weights", **where)
    return weights, raw


#: a data layer's position record -> (the order it indexes, whether it may equal its length)
_POSITIONS = {"cursor": ("order", True), "current_row": ("row_order", True),
              "current_file": ("file_order", False)}
#: order records whose length is not the layer's at start-up (HDF5: the current file's rows)
_PER_FILE = {"row_order"}


def _check_layer_record(name: str, saved, fresh: dict, where: dict) -> dict:
    """A data layer's saved record, checked against its fresh ``state_dict()``."""
    if not isinstance(saved, dict):
        raise SnapshotError(f"the data record of layer '{name}' is {_show(saved)}, not a record",
                            **where)
    again = ("Resuming needs the same data (source, limit, offset, batch size) as when the "
             "state was written; to continue from the weights alone, start with --weights")
    for k, ref in fresh.items():
        if k not in saved:
            raise SnapshotError(f"the data record of layer '{name}' has no '{k}'", **where)
        v, ref = np.asarray(saved[k]), np.asarray(ref)
        if ref.dtype.kind in "iu" and v.dtype.kind not in "iu":
            raise SnapshotError(f"'{k}' of layer '{name}' is {_show(v)}, not an integer", **where)
        if ref.dtype.kind == "f" and v.dtype.kind not in "fiu":
            raise SnapshotError(f"'{k}' of layer '{name}' is {_show(v)}, not numbers", **where)
        if v.ndim != ref.ndim or (k not in _PER_FILE and v.shape != ref.shape):
            raise SnapshotError(f"'{k}' of layer '{name}' has shape {v.shape} in the state, "
                                f"{ref.shape} in this net. {again}", **where)
        if v.dtype.kind in "iu" and v.size and int(v.min()) < 0:
            raise SnapshotError(f"'{k}' of layer '{name}' is negative ({_show(v)})", **where)
        if k in ("order", "row_order", "file_order") and not np.array_equal(
                np.sort(v), np.arange(v.size)):
            raise SnapshotError(f"'{k}' of layer '{name}' is not an order of its {v.size} records "
                                f"(each index once). {again}", **where)
    for pos, (order, inclusive) in _POSITIONS.items():
        if pos in fresh and order in fresh:
            p, n = int(saved[pos]), np.asarray(saved[order]).size
            if p > n or (p == n and not inclusive):
                raise SnapshotError(f"'{pos}' of layer '{name}' is {p}, past the end of its "
                                    f"{n} records. {again}", **where)
    return saved


def _show(v) -> str:
    """A short description of a record's value for messages."""
    if isinstance(v, dict):
        return f"a group of records ({', '.join(sorted(v))})"
    a = np.asarray(v)
    if a.ndim == 0:
        return repr(a.item())
    return f"{a.size} {a.dtype} values of shape {a.shape}"
