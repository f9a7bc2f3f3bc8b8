"""Blob: a named array pair (``data``, ``diff``) in NCHW, like Caffe's Blob."""

from __future__ import annotations

from typing import Any

#: A blob holds at most this many values: Caffe counts them in an int (``Blob::Reshape``
#: checks ``count <= INT_MAX``). Shapes written in a net file are checked by ``graph``, shapes
#: a layer computes (tops, parameters) before anything is allocated.
MAX_BLOB_COUNT = 2**31 - 1


class Blob:
    """``data`` holds values, ``diff`` gradients of the loss w.r.t. them (same shape, dtype).

    ``diff`` is allocated lazily on first access, so forward-only blobs cost no gradient memory.
    """

    __slots__ = ("name", "data", "_diff", "_xp")

    def __init__(self, name: str, data: Any, xp: Any):
        self.name = name
        self.data = data
        self._diff = None
        self._xp = xp

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def count(self) -> int:
        return int(self.data.size)

    @property
    def diff(self) -> Any:
        if self._diff is None or self._diff.shape != self.data.shape:
            self._diff = self._xp.zeros_like(self.data)
        return self._diff

    @diff.setter
    def diff(self, value: Any) -> None:
        self._diff = value

    def zero_diff(self) -> None:
        if self._diff is not None:
            self._diff.fill(0)

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={self.shape})"


class Param(Blob):
    """A learnable parameter blob with Caffe's ``lr_mult``/``decay_mult`` and an owner label.

    ``diff_is_zero``: the solver has just zeroed ``diff`` and no layer has written it since
    (``Net.backward`` clears it after each layer's backward), so the first layer to produce this
    gradient may write it instead of adding to zeros (``InnerProduct``). False by default:
    every other caller accumulates, as Caffe's layers do.
    """

    __slots__ = ("lr_mult", "decay_mult", "owner", "share_name", "diff_is_zero")

    def __init__(self, name: str, data: Any, xp: Any, lr_mult: float = 1.0,
                 decay_mult: float = 1.0, owner: str = "", share_name: str | None = None):
        super().__init__(name, data, xp)
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult
        self.owner = owner
        self.share_name = share_name
        self.diff_is_zero = False
