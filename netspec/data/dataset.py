"""A dataset in memory: raw data rows and their labels, as every data source returns it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """``data`` (N, ...) raw values (uint8 for images) and ``label`` (N,)."""

    data: np.ndarray   # (N, ...) raw values (uint8 for images)
    label: np.ndarray  # (N,)

    def __len__(self) -> int:
        return int(self.data.shape[0])
