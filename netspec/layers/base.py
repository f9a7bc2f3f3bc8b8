"""The Layer base class: Caffe's setup -> forward -> backward contract.

A layer sees ``bottom`` blobs (inputs) and ``top`` blobs (outputs):

* ``setup(bottom_shapes) -> top_shapes``: check arity and shapes, create parameter blobs in
  ``self.blobs`` (learnable ``Param`` objects), precompute what the shapes allow.
* ``reshape(bottom_shapes) -> top_shapes``: the same for new bottom shapes, keeping the
  parameter blobs (Caffe's Reshape; ``Net.reshape`` calls it when a data layer's top changed
  shape): by default ``setup`` again, ``add_param`` handing back the existing blobs.
* ``forward(bottom, top)``: write ``top[i].data`` from ``bottom[i].data``.
* ``backward(top, propagate_down, bottom)``: from ``top[i].diff`` *overwrite*
  ``bottom[i].diff`` where ``propagate_down[i]`` and *accumulate* into ``self.blobs[j].diff``
  (Caffe semantics: parameter gradients add up over ``iter_size`` and shared uses).

Array work uses ``self.xp`` (numpy or cupy) and ``self.dtype`` only.
"""

from __future__ import annotations

import abc
import math
import threading
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy

from .. import parallel
from ..backend import Backend
from ..blob import MAX_BLOB_COUNT, Blob, Param
from ..data.sources import resolve_file
from ..errors import ShapeError, SpecError
from ..fillers import fill
from ..spec.params import LAYER_PARAM_BLOCKS
from ..spec.params.conv import spatial_pair


def samples_per_chunk(N: int, per_sample_bytes: int, budget_bytes: int) -> int:
    """How many samples of a batch of N fit ``budget_bytes`` of per-sample work buffers
    (CPU layers work chunk by chunk so the buffers stay in cache); at least 1, at most N."""
    return max(1, min(N, budget_bytes // max(per_sample_bytes, 1)))


_scratch = threading.local()


def thread_scratch(backend, key, shape):
    """A work array of ``shape`` (an int: flat) of the backend's dtype, a view of one flat
    array per (thread, key, dtype) grown to the largest size asked: layers run one after
    another on a thread (and the batch parts of a split layer on different threads), so layers
    that use an array only within one call share it instead of each owning one. The values are
    left from its last user."""
    shape = (int(shape),) if numpy.ndim(shape) == 0 else tuple(int(d) for d in shape)
    size = math.prod(shape)
    pool = getattr(_scratch, "pool", None)
    if pool is None:
        pool = _scratch.pool = {}
    k = (key, numpy.dtype(backend.dtype).str, backend.is_gpu)
    flat = pool.get(k)
    if flat is None or flat.size < size:
        flat = pool[k] = backend.empty(size)
    return flat[:size].reshape(shape)


def sample_chunks(N: int, chunk: int) -> list[tuple[int, int]]:
    """(first sample, sample count) of each chunk of a batch of N: the fewest chunks of at
    most ``chunk`` samples, of near-equal size (``parallel.split``), so that no chunk is a
    small remainder (30 samples in chunks of 27: 15 + 15, not 27 + 3)."""
    return parallel.split(N, -(-N // max(chunk, 1)))


def add_param_diff(blob, grad) -> None:
    """blob.diff += grad, or blob.diff = grad when the solver has just zeroed it
    (``Param.diff_is_zero``, then cleared: a second bottom or pass adds)."""
    if getattr(blob, "diff_is_zero", False):
        blob.diff[...] = grad
        blob.diff_is_zero = False
    else:
        blob.diff += grad


class Layer(abc.ABC):
    type_name: ClassVar[str] = ""
    #: layer-specific parameter block this layer reads (e.g. "convolution_param")
    param_block: ClassVar[Optional[str]] = None
    #: further parameter blocks the layer reads (e.g. SoftmaxWithLoss reads softmax_param)
    extra_blocks: ClassVar[tuple[str, ...]] = ()
    #: the layer splits its batch over the CPU threads (``parallel.py``); a net with such a
    #: layer runs BLAS single-threaded, any other gives its threads to BLAS (``Net``)
    splits_batch: ClassVar[bool] = False
    #: backward writes (not adds) the whole gradient of each of its parameters when
    #: ``Param.diff_is_zero``: the solver then need not zero what such a layer produces first
    writes_param_diffs: ClassVar[bool] = False
    #: the first top may be the first bottom (Caffe's in-place computation): only layers whose
    #: forward and backward stay exact when they share one blob say so
    allows_in_place: ClassVar[bool] = False
    #: forward writes every value of its tops into the arrays the net gave them (never rebinds
    #: ``top.data``, never reads a top's previous values): a forward-only net may then lend
    #: those arrays to other blobs (``memory_plan``)
    fills_tops: ClassVar[bool] = False
    #: backward overwrites every value of each bottom diff it propagates to (never reads or
    #: adds to the old values) and never rebinds a blob's ``diff``: a training net may then
    #: lend diff arrays to other blobs between uses (``memory_plan``; checked for each such
    #: layer in tests/test_memory_plan_diffs.py with diffs filled with NaN before its backward)
    writes_bottom_diffs: ClassVar[bool] = False
    exact_bottoms: ClassVar[Optional[int]] = None
    min_bottoms: ClassVar[int] = 0
    max_bottoms: ClassVar[Optional[int]] = None
    exact_tops: ClassVar[Optional[int]] = None
    min_tops: ClassVar[int] = 0
    max_tops: ClassVar[Optional[int]] = None
    #: loss layers put loss_weight 1 on their first top by default
    is_loss: ClassVar[bool] = False
    #: False for layers whose bottoms never receive gradient (data, accuracy)
    has_backward: ClassVar[bool] = True
    #: which bottoms can never take a gradient (labels, indices); None = all can
    no_grad_bottoms: ClassVar[tuple[int, ...]] = ()

    def __init__(self, lp: Any, phase: str, backend: Backend, rng: numpy.random.Generator,
                 where: dict | None = None):
        self.lp = lp
        self.name: str = lp.name
        self.phase = phase
        self.backend = backend
        self.xp = backend.xp
        self.dtype = backend.dtype
        #: CPU threads the layer may split its batch over (``parallel.py``); 1 on a GPU
        self.threads = 1 if backend.is_gpu else backend.threads
        self.rng = rng
        #: data-parallel training: which items of each batch this rank reads (a
        #: ``netspec.data.shard.Shard``, set by the Net before ``setup``); None in one process
        self.shard = None
        self.where = where or {}
        self.blobs: list[Param] = []
        #: set up again by ``reshape``: the index of the next existing blob ``add_param`` hands
        #: back; None in the first setup
        self._params_again: Optional[int] = None
        #: forward sets it when it gave its tops new shapes (a data layer's multi-scale
        #: training): the Net then sets the layers after it up again (``Net.reshape``)
        self.reshaped_tops = False
        self.p = getattr(lp, self.param_block) if self.param_block else None
        if self.param_block and self.p is None:
            self.p = self._default_block()

    def _default_block(self):

        try:
            return LAYER_PARAM_BLOCKS[self.param_block]()
        except Exception:  # noqa: BLE001 - required fields missing
            raise self.error(f"needs a '{self.param_block}' block", field=self.param_block) from None

    def weights_hint(self, arrays) -> str | None:
        """A sentence for a weights file whose ``layer/index`` arrays do not fit this layer's
        blobs in a way the layer can explain (another layer under the same type name); None."""
        return None

    # -- helpers for subclasses ------------------------------------------------------------

    def spatial_pair(self, values, h, w, name: str, default) -> tuple[int, int]:
        """``spatial_pair`` of this layer's block, its error as a spec error naming ``name``."""
        try:
            return spatial_pair(values, h, w, name, default)
        except ValueError as e:
            raise self.spec_error(str(e), field=name) from None

    @property
    def net_dir(self) -> Optional[Path]:
        """The folder of the net file this layer was read from, as the user named the file
        (a symlinked net file's own folder, not its target's; the same rule as a solver's
        ``net:``), or None for a net built from a string. Relative paths in layer fields
        (sources, mean files, Python modules) start there, then at the working directory."""
        f = self.where.get("file")
        if not f or str(f).startswith("<"):
            return None
        return Path(f).expanduser().absolute().parent

    def resolve_path(self, path: str) -> Path:
        """``path`` resolved against ``net_dir``, then the working directory (Caffe's)."""
        return resolve_file(path, self.net_dir)
    def error(self, message: str, field: str | None = None, cls=ShapeError):
        """An error naming this layer, its file and line."""
        return cls(f"layer '{self.name}' ({self.type_name}): {message}", **self.where,
                   field=field)

    def spec_error(self, message: str, field: str | None = None):
        return self.error(message, field, SpecError)

    def check_count(self, shape, what: str) -> None:
        """Raise this layer's error when ``shape`` holds more than a blob may (Caffe's int)."""
        count = math.prod(int(d) for d in shape)
        if count > MAX_BLOB_COUNT:
            raise self.error(f"{what} would have shape {tuple(int(d) for d in shape)}, {count:,} "
                             f"values; a blob holds at most {MAX_BLOB_COUNT:,} (Caffe's limit)")

    def nchw(self, shape) -> tuple[int, int, int, int]:
        """``shape`` as a tuple, or this layer's error unless it has 4 axes (N, C, H, W)."""
        shape = tuple(shape)
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), "
                             f"got shape {shape}")
        return shape

    def add_param(self, shape: tuple[int, ...], filler: Any, name_suffix: str) -> Param:
        """Create a parameter blob filled by ``filler`` (a FillerParameter); in ``reshape``,
        the layer's existing blob at that index, untouched (no fill, no random draw)."""
        if self._params_again is not None:
            return self._existing_param(tuple(int(s) for s in shape))
        index = len(self.blobs)
        self.check_count(shape, f"its parameter blob {index}")
        shape = tuple(int(s) for s in shape)
        try:
            if filler.type == "constant":   # in the net's dtype: no float64 copy (2x the blob)
                data = self.xp.full(shape, filler.value, dtype=self.dtype)
            else:
                data = self.backend.asarray(fill(filler, shape, self.rng))
        except MemoryError:
            raise self.error(f"its parameter blob {index} of shape {tuple(shape)} does not fit "
                             "in memory") from None
        spec = self.lp.param[index] if index < len(self.lp.param) else None
        param = Param(f"{self.name}/{index}", data, self.xp,
                      lr_mult=spec.lr_mult if spec else 1.0,
                      decay_mult=spec.decay_mult if spec else 1.0,
                      owner=self.name, share_name=spec.name if spec else None)
        self.blobs.append(param)
        return param

    def next_param_index(self) -> int:
        """The index the next ``add_param`` gives its blob (in ``setup`` and ``reshape``)."""
        return len(self.blobs) if self._params_again is None else self._params_again

    def _existing_param(self, shape: tuple[int, ...]) -> Param:
        index = self._params_again
        if index >= len(self.blobs) or self.blobs[index].shape != shape:
            had = self.blobs[index].shape if index < len(self.blobs) else "none"
            raise self.error(f"new bottom shapes would change its parameter blob {index} "
                             f"({had} -> {shape}); parameters keep their shapes when a net "
                             "is reshaped (multi-scale training needs parameters whose "
                             "shapes do not depend on the input size)")
        self._params_again = index + 1
        return self.blobs[index]

    def check_arity(self, n_bottoms: int, n_tops: int) -> None:
        def bad(kind, n, want):
            return self.spec_error(f"takes {want} {kind} blob(s), got {n}", field=kind)
        if self.exact_bottoms is not None and n_bottoms != self.exact_bottoms:
            raise bad("bottom", n_bottoms, f"exactly {self.exact_bottoms}")
        if n_bottoms < self.min_bottoms:
            raise bad("bottom", n_bottoms, f"at least {self.min_bottoms}")
        if self.max_bottoms is not None and n_bottoms > self.max_bottoms:
            raise bad("bottom", n_bottoms, f"at most {self.max_bottoms}")
        if self.exact_tops is not None and n_tops != self.exact_tops:
            raise bad("top", n_tops, f"exactly {self.exact_tops}")
        if n_tops < self.min_tops:
            raise bad("top", n_tops, f"at least {self.min_tops}")
        if self.max_tops is not None and n_tops > self.max_tops:
            raise bad("top", n_tops, f"at most {self.max_tops}")
        shared = [t for t, b in zip(self.lp.top, self.lp.bottom) if t == b]
        if shared and (not self.allows_in_place or self.lp.top[0] != self.lp.bottom[0]
                       or len(shared) > 1):
            raise self.spec_error(
                f"cannot run in place: its top '{shared[-1]}' is also its bottom, and "
                f"{self.type_name} would compute wrong results on one shared blob. Give the "
                "top its own name (in-place layers: the element-wise ones but AbsVal, Dropout, BN, "
                "BatchNorm, Scale, Bias, MVN, Softmax, Python)", field="top")

    # -- the contract ---------------------------------------------------------------------
    @abc.abstractmethod
    def setup(self, bottom_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Check shapes, create parameters; return the top shapes."""

    @abc.abstractmethod
    def forward(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Compute ``top[i].data`` from ``bottom[i].data``."""

    def backward(self, top: list[Blob], propagate_down: list[bool], bottom: list[Blob]) -> None:
        """Default for layers without a gradient: nothing to do."""

    def reshape(self, bottom_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Set the layer up again for new bottom shapes; return the top shapes. Parameter
        blobs stay the very same objects with their values (``add_param`` hands them back and
        checks their shapes); everything ``setup`` derives from the shapes is derived again."""
        self._params_again = 0
        try:
            tops = self.setup(bottom_shapes)
            if self._params_again != len(self.blobs):
                raise self.error(f"set up again it created {self._params_again} of its "
                                 f"{len(self.blobs)} parameter blobs")
        finally:
            self._params_again = None
        return tops

    # -- state beyond parameters (e.g. a data cursor), saved in snapshots ------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def canonical_axis(axis: int, ndim: int) -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} out of range for {ndim}-D blob")
    return axis % ndim


def checked_axis(layer: "Layer", axis: int, ndim: int, field: str) -> int:
    """``canonical_axis`` with the error as the layer's spec error naming ``field``."""
    try:
        return canonical_axis(axis, ndim)
    except ValueError as e:
        raise layer.spec_error(str(e), field=field) from None


def proto_float(v: float) -> float:
    """A ``float`` proto field as Caffe sees it (rounded to float32)."""
    return float(numpy.float32(v))


def legacy_dim(shape: tuple[int, ...], index: int) -> int:
    """Caffe's LegacyShape: num/channels/height/width, 1 for axes a blob lacks."""
    return shape[index] if index < len(shape) else 1


def in_place(lp) -> bool:
    """Whether the layer parameter names its first top as its first bottom."""
    return bool(lp.top) and bool(lp.bottom) and lp.top[0] == lp.bottom[0]


def scatter_add(xp, target, index, values) -> None:
    """``target[index[i]] += values[i]`` for every i; repeated indices add up (numpy.add.at)."""
    at = getattr(xp.add, "at", None)
    if at is not None:
        at(target, index, values)
    else:  # CuPy before ufunc.at
        import cupyx  # noqa: PLC0415 - optional: CuPy's scatter_add, GPU only

        cupyx.scatter_add(target, index, values)


def check_indices(layer: "Layer", values, limit: int, what: str, integral: bool) -> None:
    """Raise unless every value v satisfies 0 <= v < limit (and is an integer, if asked);
    one device-to-host transfer when there is a bad value."""
    xp = layer.xp
    bad = (values < 0) | (values >= limit)
    if integral:
        bad |= values != xp.floor(values)
    if bool(bad.any()):
        host = numpy.asarray(values.get() if hasattr(values, "get") else values)
        bad_h = numpy.asarray(bad.get() if hasattr(bad, "get") else bad)
        first = host.reshape(-1)[numpy.flatnonzero(bad_h.reshape(-1))[:5]]
        kind = "integers in" if integral else "in"
        raise layer.error(f"{what} must be {kind} [0, {limit}); got {first.tolist()}")
