"""Net: an instantiated, shape-checked layer graph with forward and backward.

Built from a NetParameter for one NetState (phase, level, stages) by the passes in
``graph.py``; owns the blobs, the layers and the learnable parameters (shared by
``param.name`` within a net, and by layer name between the TRAIN and TEST nets).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import numpy as np

from . import graph
from .backend import Backend
from .blob import Blob, Param
from .errors import NetspecError, ShapeError, SpecError
from .layers import registry
from .layers.conv_columns import tuning as conv_tuning
from .layers.conv_fold import fold_into_convolutions, unfolded
from .memory_plan import link_saved_inputs, share_diffs, share_memory
from .parallel import blas_threads
from .spec.net import NetParameter
from .spec.params import LAYER_PARAM_BLOCKS, NetState


class Net:
    def __init__(self, net_param: NetParameter, phase: str = "TRAIN", backend: Backend | None = None,
                 rng: np.random.Generator | None = None, level: int = 0,
                 stages: list[str] | tuple[str, ...] = (), shard=None, reuse_blobs: bool = False,
                 keep_blobs: list[str] | tuple[str, ...] = (), reuse_diffs: bool = False):
        """The net of ``net_param`` in ``phase``. ``reuse_blobs``: in a net that runs no
        backward, top blobs whose lives do not overlap share arrays (``memory_plan``); after a
        forward only its inputs, outputs and ``keep_blobs`` hold their own values.
        ``reuse_diffs``: in a net with a backward, blob diffs whose lives do not overlap share
        arrays (``memory_plan``; not with ``force_backward``, whose point is reading them);
        after a backward only the diffs of inputs, outputs, loss tops and ``keep_blobs`` hold
        their own values, and an in-place Scale after a BatchNorm reads the BatchNorm's saved
        x̂ instead of copying its bottom. Parameter diffs and every computed value stay the
        same."""
        self.param = net_param
        #: data-parallel training: this rank's share of every data layer's batches (a
        #: ``netspec.data.shard.Shard``); None reads whole batches
        self.shard = shard
        self.name = net_param.name
        self.phase = phase
        self.backend = backend or Backend()
        self.xp = self.backend.xp
        self.rng = rng if rng is not None else np.random.default_rng(0)
        state = NetState(phase=phase, level=level or net_param.state.level,
                         stage=list(stages) or list(net_param.state.stage))
        self.stages = tuple(state.stage)
        defs = graph.legacy_inputs(net_param) + graph.filter_phase(net_param, state)
        graph.resolve(defs, net_param)
        self.defs = graph.insert_splits(defs, self._loss_weight)
        self._choose_threads()
        self.layers: list[Any] = []
        self.bottoms: list[list[Blob]] = []
        self.tops: list[list[Blob]] = []
        #: each layer's bottom shapes when it was last set up (``reshape`` compares them)
        self.setup_shapes: list[list[tuple[int, ...]]] = []
        self.blobs: dict[str, Blob] = {}
        self.loss_terms: list[tuple[Blob, float]] = []
        self._build()
        self._share_params()
        self._plan_backward(net_param.force_backward)
        self._find_outputs()
        t = conv_tuning()
        #: ``ConvTuning.single_sample_blas_threads`` when the net was built
        self.single_sample_blas_threads = t.single_sample_blas_threads
        #: Convolutions with BatchNorm [+ Scale] [+ ReLU] folded in
        self.folded: list[str] = []
        if not self.backend.is_gpu and (t.fold_batch_norm or t.fold_relu):
            self.folded = fold_into_convolutions(self.layers, self.bottoms, self.tops,
                                                 self.layer_backward, t.fold_batch_norm,
                                                 t.fold_relu)
        self.blobs_shared = reuse_blobs and not any(self.layer_backward)
        unknown = [k for k in keep_blobs if k not in self.blobs]
        if unknown:
            raise SpecError(f"keep_blobs: the net has no blob named {unknown[0]!r}",
                            **self.param.where(()))
        self.keep_blobs = set(keep_blobs)
        self.diffs_shared = (reuse_diffs and any(self.layer_backward)
                             and not net_param.force_backward)
        self._plan_memory()
        if self.diffs_shared:
            link_saved_inputs(self.layers, self.bottoms, self.tops)
        #: how many times ``reshape`` set layers up again for new shapes
        self.reshapes = 0

    # -- construction ---------------------------------------------------------------------
    def _plan_memory(self) -> None:
        """Lend shared arrays to the blobs (``memory_plan``) for the blobs' current shapes."""
        #: bytes of the arrays the blobs share (``memory_plan``; reuse_blobs, forward only):
        #: then only inputs, outputs and ``keep_blobs`` hold their values after a forward
        self.shared_bytes = 0
        if self.blobs_shared:
            self.shared_bytes = share_memory(self.layers, self.bottoms, self.tops,
                                             self.keep_blobs | set(self.output_names),
                                             self.backend)
        #: bytes of the arrays the blob diffs share (``memory_plan``; reuse_diffs, training)
        self.shared_diff_bytes = 0
        if self.diffs_shared:
            keep = (self.keep_blobs | set(self.output_names)
                    | {b.name for b, _ in self.loss_terms})
            self.shared_diff_bytes = share_diffs(self.layers, self.bottoms, self.tops,
                                                 self.layer_backward, self.propagate, keep,
                                                 self.backend)

    def _choose_threads(self) -> None:
        """How the CPU threads are used (``parallel.py``): a net with a layer that splits its
        batch runs its layers on ``backend.threads`` threads with BLAS at one thread per call;
        any other net gives the threads to BLAS (its layers see ``threads`` = 1)."""
        self.blas_threads = 1
        if self.backend.is_gpu or self.backend.threads == 1:
            return
        if not any(registry.get(d.lp.type).splits_batch for d in self.defs):
            self.blas_threads = self.backend.threads
            self.backend = dataclasses.replace(self.backend, threads=1)

    def pass_blas_threads(self) -> int:
        """BLAS threads for a forward or backward pass now: ``blas_threads``, except that a net
        whose batch-splitting layers all see fewer samples than its threads (batch 1 on 2
        threads) cannot split them, so with ``ConvTuning.single_sample_blas_threads`` BLAS
        threads each GEMM instead (ResNet-50 at batch 1 on 2 threads on a quiet machine: 0.67
        of the one-thread time); by default the convolutions split their own GEMMs over the
        threads then, and BLAS stays at one (``bench/NOTES.md``)."""
        T = self.backend.threads
        if self.blas_threads > 1 or T == 1 or self.backend.is_gpu:
            return self.blas_threads
        if not self.single_sample_blas_threads:   # the convolutions split their GEMMs
            return 1
        batches = [b[0].shape[0] for layer, b in zip(self.layers, self.bottoms)
                   if layer.splits_batch and b and b[0].shape]
        return T if batches and max(batches) < T else 1

    def _loss_weight(self, d: graph.LayerDef, k: int) -> float:
        """Explicit ``loss_weight[k]``, else 1 for a loss layer's first top, else 0."""
        if d.loss_weights:
            w = d.loss_weights[k] if k < len(d.loss_weights) else 0.0
            return float(w if w is not None else 0.0)
        return 1.0 if (k == 0 and registry.get(d.lp.type).is_loss) else 0.0

    def _where(self, d: graph.LayerDef, *loc) -> dict:
        if d.index is None:
            return self.param.where(())
        return self.param.where(("layer", d.index) + loc)

    def _build(self) -> None:
        for d in self.defs:
            cls = registry.get(d.lp.type)
            where = self._where(d, "type")
            if d.loss_weights and len(d.loss_weights) > len(d.tops):
                raise SpecError(f"layer '{d.lp.name}' gives {len(d.loss_weights)} loss_weight "
                                f"values for {len(d.tops)} tops", **self._where(d, "loss_weight"),
                                field="loss_weight")
            self._check_blocks(d, cls)
            layer = cls(d.lp, self.phase, self.backend, self.rng, where)
            layer.shard = self.shard
            layer.check_arity(len(d.bottoms), len(d.tops))
            bottoms = [self.blobs[b] for b in d.bottoms]
            top_shapes = self._set_up(layer, d, bottoms, layer.setup)
            if len(top_shapes) != len(d.tops):
                raise layer.spec_error(f"produces {len(top_shapes)} tops but {len(d.tops)} are named",
                                       field="top")
            tops = []
            for j, (name, shape) in enumerate(zip(d.tops, top_shapes)):
                if j < len(d.bottoms) and d.bottoms[j] == name:
                    blob = self.blobs[name]  # in place: the very same blob
                    if blob.shape != tuple(shape):
                        raise layer.error(f"runs in place on '{name}' but changes its shape "
                                          f"{blob.shape} -> {tuple(shape)}")
                else:
                    layer.check_count(shape, f"its top '{name}'")
                    try:
                        blob = Blob(name, self.backend.zeros(tuple(shape)), self.xp)
                    except MemoryError:
                        raise layer.error(f"its top '{name}' of shape {tuple(shape)} does not "
                                          "fit in memory") from None
                self.blobs[name] = blob
                tops.append(blob)
                w = self._loss_weight(d, j)
                if w:
                    self.loss_terms.append((blob, w))
            self.layers.append(layer)
            self.bottoms.append(bottoms)
            self.tops.append(tops)
            self.setup_shapes.append([b.shape for b in bottoms])

    def _set_up(self, layer, d: graph.LayerDef, bottoms: list[Blob], how) -> list:
        """``how(bottom shapes)`` (the layer's setup or reshape), its failures as errors
        naming the layer, its file and line."""
        where = self._where(d, "type")
        try:
            return how([b.shape for b in bottoms])
        except NetspecError:
            raise  # already names the layer, file and line
        except MemoryError:
            raise ShapeError(f"layer '{d.lp.name}' ({d.lp.type}) does not fit in memory on "
                             f"bottoms of shapes {[b.shape for b in bottoms]}", **where) from None
        except (ValueError, IndexError, TypeError) as e:
            raise ShapeError(f"layer '{d.lp.name}' ({d.lp.type}) cannot take bottoms of shapes "
                             f"{[b.shape for b in bottoms]}: {e}", **where) from None

    def reshape(self, start: int = 0) -> list[str]:
        """Set up again, for the current shapes of their bottoms, the layers from ``start`` on
        whose bottoms changed shape since they were set up (Caffe's Net::Reshape, which its
        Layer::Forward runs on every forward): each layer's ``reshape`` (its parameter blobs
        stay the very same objects with their values: no fill, no random draw), new arrays
        for the tops that change shape (the same Blob objects), then the memory plans
        (``reuse_blobs``, ``reuse_diffs``) made again for the new shapes. Layers without
        bottoms (data layers) shape their own tops. The backward plan depends on the graph
        only and stays. Returns the names of the layers set up again."""
        changed = []
        for i in range(start, len(self.layers)):
            layer, d, bottoms = self.layers[i], self.defs[i], self.bottoms[i]
            shapes = [b.shape for b in bottoms]
            if not bottoms or shapes == self.setup_shapes[i]:
                continue
            top_shapes = self._set_up(layer, d, bottoms, layer.reshape)
            for j, (blob, shape) in enumerate(zip(self.tops[i], top_shapes)):
                shape = tuple(int(v) for v in shape)
                if j < len(bottoms) and bottoms[j] is blob:
                    if blob.shape != shape:
                        raise layer.error(f"runs in place on '{blob.name}' but changes its "
                                          f"shape {blob.shape} -> {shape}")
                elif blob.shape != shape:
                    layer.check_count(shape, f"its top '{blob.name}'")
                    blob.data = self.backend.zeros(shape)
                    blob.diff = None
            self.setup_shapes[i] = shapes
            changed.append(layer.name)
        if changed:
            self._plan_memory()
            self.reshapes += 1
        return changed

    def _check_blocks(self, d: graph.LayerDef, cls) -> None:
        for key in LAYER_PARAM_BLOCKS:
            if getattr(d.lp, key, None) is not None and key != cls.param_block and \
                    key not in cls.extra_blocks:
                raise SpecError(f"layer '{d.lp.name}' of type {d.lp.type} does not read '{key}'"
                                + (f"; it reads '{cls.param_block}'" if cls.param_block else ""),
                                **self._where(d, key), field=key)

    def _share_params(self) -> None:
        """Parameters with the same ``param.name`` are one blob (shape and multipliers must agree)."""
        owners: dict[str, Param] = {}
        self.params: list[Param] = []
        with_params: dict[str, Any] = {}
        for layer, d in zip(self.layers, self.defs):
            if layer.blobs:
                if layer.name in with_params:
                    raise SpecError(f"two layers with parameters are named '{layer.name}'; weights "
                                    "are stored and shared by layer name, so give them distinct names",
                                    **self._where(d, "name"), field="name")
                with_params[layer.name] = layer
        for layer in self.layers:
            for i, p in enumerate(layer.blobs):
                if p.share_name:
                    owner = owners.get(p.share_name)
                    if owner is None:
                        owners[p.share_name] = p
                    else:
                        self._check_share(owner, p, layer)
                        layer.blobs[i] = owner
                        continue
                self.params.append(p)

    @staticmethod
    def _check_share(owner: Param, p: Param, layer) -> None:
        what = f"parameter '{p.share_name}' shared by layers '{owner.owner}' and '{p.owner}'"
        if owner.shape != p.shape:
            raise layer.spec_error(f"{what} has shapes {owner.shape} and {p.shape}", field="param")
        if owner.lr_mult != p.lr_mult or owner.decay_mult != p.decay_mult:
            raise layer.spec_error(
                f"{what} has different multipliers (lr_mult {owner.lr_mult} vs {p.lr_mult}, "
                f"decay_mult {owner.decay_mult} vs {p.decay_mult}); give both the same", field="param")

    def _plan_backward(self, force: bool) -> None:
        """Which layers run backward, and into which bottoms (Caffe's need_backward logic)."""
        need: dict[str, bool] = {}
        self.layer_backward: list[bool] = []
        self.propagate: list[list[bool]] = []
        for layer, d, bottoms in zip(self.layers, self.defs, self.bottoms):
            pd = list(d.lp.propagate_down)
            if pd and len(pd) != len(d.bottoms):
                raise layer.spec_error(f"propagate_down has {len(pd)} entries for "
                                       f"{len(d.bottoms)} bottoms", field="propagate_down")
            prop = []
            for j, b in enumerate(d.bottoms):
                ok = layer.has_backward and j not in layer.no_grad_bottoms and (not pd or pd[j])
                prop.append(ok and (need.get(b, False) or force))
            learns = any(p.lr_mult != 0 for p in layer.blobs)
            runs = layer.has_backward and (any(prop) or learns)
            for t in d.tops:
                need[t] = need.get(t, False) or runs or (force and layer.has_backward)
            self.layer_backward.append(runs)
            self.propagate.append(prop)
        # only layers under a loss need backward
        under_loss: set[str] = {b.name for b, _ in self.loss_terms}
        for i in range(len(self.layers) - 1, -1, -1):
            d = self.defs[i]
            if any(t in under_loss for t in d.tops):
                under_loss.update(d.bottoms)
            elif not force:
                self.layer_backward[i] = False

    def _find_outputs(self) -> None:
        """Net outputs: blobs no later layer consumes (Caffe's ``net_output_blobs``). As in
        Caffe's ``Net::Init``, a layer's bottoms leave the available set and its tops enter it,
        so a blob an in-place layer rewrites last (a final ReLU) is an output."""
        available: dict[str, None] = {}
        for d in self.defs:
            for b in d.bottoms:
                available.pop(b, None)
            for t in d.tops:
                available.pop(t, None)
                available[t] = None
        self.output_names = list(available)

    # -- execution --------------------------------------------------------------------------
    def forward(self, start: int = 0, end: int | None = None) -> float:
        """Run the layers ``start`` up to, not including, ``end`` (default: every layer)
        forward; return the weighted loss Σ w·loss (float)."""
        with blas_threads(self.backend, self.pass_blas_threads()):
            part = (contextlib.nullcontext() if start == 0 and end is None else
                    unfolded(self.layers if self.folded else ()))  # a part: each layer its own forward (conv_fold)
            with part:
                for i in range(start, len(self.layers) if end is None else end):
                    layer = self.layers[i]
                    layer.forward(self.bottoms[i], self.tops[i])
                    if layer.reshaped_tops:     # a data layer's new input size (multi-scale)
                        layer.reshaped_tops = False
                        self.reshape(i + 1)
        loss = 0.0
        for blob, w in self.loss_terms:
            loss += w * float(blob.data.sum())
        return loss

    def seed_loss_diffs(self) -> None:
        """Set each loss top's diff to its loss weight (where backward starts)."""
        for blob, w in self.loss_terms:
            blob.diff[...] = w

    def backward(self, start: int | None = None, end: int = 0, seed: bool = True) -> None:
        """Seed loss tops with their weights (``seed``) and run backward in reverse order, from
        layer ``start`` (default: the last) down to layer ``end``, both included. After a
        layer's backward its parameters' gradients are no longer zero (``Param.diff_is_zero``)."""
        if seed:
            self.seed_loss_diffs()
        first = len(self.layers) - 1 if start is None else start
        with blas_threads(self.backend, self.pass_blas_threads()):
            for i in range(first, end - 1, -1):
                if self.layer_backward[i]:
                    layer = self.layers[i]
                    layer.backward(self.tops[i], self.propagate[i], self.bottoms[i])
                    for p in layer.blobs:
                        p.diff_is_zero = False

    def forward_backward(self) -> float:
        loss = self.forward()
        self.backward()
        return loss

    def clear_param_diffs(self) -> None:
        for p in self.params:
            p.zero_diff()

    def outputs(self) -> dict[str, Any]:
        return {n: self.blobs[n].data for n in self.output_names}

    def loss_weight_of(self, name: str) -> float:
        for blob, w in self.loss_terms:
            if blob.name == name:
                return w
        return 0.0

    # -- parameters -------------------------------------------------------------------------
    def layer_by_name(self, name: str):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def share_with(self, other: "Net") -> None:
        """Use ``other``'s parameter blobs for layers of the same name (Caffe's ShareTrainedLayersWith)."""
        theirs = {layer.name: layer for layer in other.layers}
        for layer in self.layers:
            src = theirs.get(layer.name)
            if src is None or not layer.blobs:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise SpecError(f"layer '{layer.name}' has {len(layer.blobs)} parameter blobs in "
                                f"{self.phase} but {len(src.blobs)} in {other.phase}")
            for i, (mine, src_p) in enumerate(zip(layer.blobs, src.blobs)):
                if mine.shape != src_p.shape:
                    raise ShapeError(f"layer '{layer.name}' parameter {i} has shape {mine.shape} in "
                                     f"{self.phase} but {src_p.shape} in {other.phase}")
                layer.blobs[i] = src_p
        self._share_params()

    def named_params(self) -> dict[str, Param]:
        """'layer/i' -> Param for every parameter blob (shared blobs listed under each user)."""
        return {f"{layer.name}/{i}": p for layer in self.layers for i, p in enumerate(layer.blobs)}

    def param_count(self) -> int:
        return sum(p.count for p in self.params)

    def summary_rows(self) -> list[dict]:
        rows = []
        for layer, d, tops in zip(self.layers, self.defs, self.tops):
            rows.append({
                "name": layer.name, "type": layer.type_name,
                "bottoms": list(d.bottoms), "tops": [(t.name, t.shape) for t in tops],
                "params": [(f"{layer.name}/{i}", p.shape, p.lr_mult, p.decay_mult)
                           for i, p in enumerate(layer.blobs)],
                "count": sum(math.prod(p.shape) for p in layer.blobs),
            })
        return rows
