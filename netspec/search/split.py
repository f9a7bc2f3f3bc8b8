"""The validation split, carved from the training data only.

The records the TRAIN Data layer would read (its source, ``split``, ``offset``, ``limit``) are
shuffled with the search's seed; the first ``int(n * val_fraction)`` become the validation
part, the rest the train part, and both are written as ``.npz`` sources. The test split is
never read. The validation net reads its part in ``val_iter`` batches of ``val_batch``
(at most ``VAL_BATCH_CAP``; exactly the whole part when it fits one batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import open_source
from ..graph import layer_included
from .config import SearchError

VAL_BATCH_CAP = 500          # validation batch at most this; exact when n_val <= cap


@dataclass(frozen=True)
class ValidationSplit:
    train_npz: Path
    val_npz: Path
    n_train: int
    n_val: int
    n_records: int
    val_batch: int
    val_iter: int


def data_layers(net, state) -> list[int]:
    """Indices of the Data layers of ``net`` (a NetParameter) in the net of ``state``."""
    return [i for i, lp in enumerate(net.layer) if lp.type == "Data" and layer_included(lp, state)]


def carve_split(net, net_file: Path, train_state, val_fraction: float, seed: int,
                workdir: Path) -> ValidationSplit:
    """Split the records of the TRAIN net's one Data layer; write both parts under ``workdir``."""
    train = data_layers(net, train_state)
    if len(train) != 1:
        raise SearchError(f"a search needs exactly one Data layer in the TRAIN net of "
                          f"{net_file}; found {len(train)}", file=str(net_file))
    lp = net.layer[train[0]]
    p = lp.data_param
    if p.split == "test":
        raise SearchError(f"the TRAIN Data layer '{lp.name}' reads split 'test'; a search carves "
                          "its validation part from the training data and never reads the test "
                          "split", **net.where(("layer", train[0], "data_param", "split")),
                          field="data_param.split")
    if p.source is None:
        raise SearchError(f"the TRAIN Data layer '{lp.name}' has no data_param.source",
                          file=str(net_file), field="data_param.source")
    ds = open_source(p.source, p.split, net_file.parent, backend=p.backend)
    end = len(ds) if p.limit == 0 else min(len(ds), p.offset + p.limit)
    images, labels = ds.data[p.offset:end], ds.label[p.offset:end]
    n = len(labels)
    n_val = int(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        raise SearchError(f"--val-fraction {val_fraction} of {n} training records leaves "
                          f"{n_val} for validation and {n - n_val} for training", field="--val-fraction")
    order = np.random.default_rng(seed).permutation(n)
    val, tr = order[:n_val], order[n_val:]
    train_npz = workdir / "search_train.npz"
    val_npz = workdir / "search_val.npz"
    np.savez(train_npz, data=images[tr], label=labels[tr])
    np.savez(val_npz, data=images[val], label=labels[val])
    steps = math.ceil(n_val / VAL_BATCH_CAP)
    return ValidationSplit(train_npz, val_npz, n_train=n - n_val, n_val=n_val, n_records=n,
                           val_batch=math.ceil(n_val / steps), val_iter=steps)
