"""From a NetParameter to an executable layer list, in small passes (Caffe's net.cpp).

1. ``filter_phase``: keep layers whose include/exclude rules meet the NetState (phase, level,
   stages).
2. ``legacy_inputs``: the old ``input:``/``input_shape``/``input_dim`` header becomes an Input
   layer.
3. ``resolve``: check that every bottom is produced earlier, that no top is produced twice
   (in-place only at the same index: ``top[i] == bottom[i]``), and that no shape written in
   the file (``input_param``, ``dummy_data_param``, ``parameter_param`` ...) holds more than
   ``MAX_BLOB_COUNT`` values.
4. ``insert_splits``: a blob read by several layers (or read and also weighted into the loss)
   gets a Split layer, so every consumer's gradient is summed into the producer's diff.

Each pass takes and returns plain ``LayerDef`` lists and is testable alone.
``check_trainable`` is the extra check for a net about to be trained: its TRAIN phase must
compute a loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .blob import MAX_BLOB_COUNT
from .errors import SpecError, suggest
from .layers import registry
from .spec.net import LayerParameter, NetParameter
from .spec.params import BlobShape, NetState, NetStateRule
from .spec.yaml_lines import dotted

@dataclass
class LayerDef:
    """A layer as the graph sees it: its parameters, resolved blob names and loss weights."""

    lp: Any                     # LayerParameter
    bottoms: list[str]
    tops: list[str]
    loss_weights: list[float] = field(default_factory=list)
    index: int | None = None    # position in the file's layer list (None if synthesised)


def rule_met(rule: NetStateRule, state: NetState) -> bool:
    """Caffe's StateMeetsRule: every condition the rule sets must hold."""
    if rule.phase is not None and rule.phase != state.phase:
        return False
    if rule.min_level is not None and state.level < rule.min_level:
        return False
    if rule.max_level is not None and state.level > rule.max_level:
        return False
    if any(s not in state.stage for s in rule.stage):
        return False
    if any(s in state.stage for s in rule.not_stage):
        return False
    return True


def layer_included(lp: Any, state: NetState) -> bool:
    """Include rules: any must match (none = included); exclude rules: none may match."""
    if lp.include and lp.exclude:
        raise SpecError(f"layer '{lp.name}' gives both include and exclude rules; use one")
    if lp.phase is not None and lp.phase != state.phase and not lp.include:
        return False
    if lp.include:
        return any(rule_met(r, state) for r in lp.include)
    return not any(rule_met(r, state) for r in lp.exclude)


def filter_phase(net: NetParameter, state: NetState) -> list[LayerDef]:
    out = []
    for i, lp in enumerate(net.layer):
        if lp.include and lp.exclude:
            raise SpecError(f"layer '{lp.name}' gives both include and exclude rules; use one",
                            **net.where(("layer", i, "exclude")), field=f"layer {lp.name}.exclude")
        if layer_included(lp, state):
            out.append(LayerDef(lp, list(lp.bottom), list(lp.top), list(lp.loss_weight), i))
    return out


def legacy_inputs(net: NetParameter) -> list[LayerDef]:
    """The deprecated ``input``/``input_shape``/``input_dim`` header as one Input layer."""
    if not net.input:
        return []
    if net.input_shape:
        shapes = [{"dim": list(s.dim)} for s in net.input_shape]
    elif net.input_dim:
        dims = list(net.input_dim)
        if len(dims) != 4 * len(net.input):
            raise SpecError("input_dim must give 4 values per input", **net.where(("input_dim",)),
                            field="input_dim")
        shapes = [{"dim": dims[4 * i: 4 * i + 4]} for i in range(len(net.input))]
    else:
        raise SpecError("'input' needs input_shape or input_dim", **net.where(("input",)), field="input")
    if len(shapes) != len(net.input):
        raise SpecError(f"{len(net.input)} inputs but {len(shapes)} shapes", **net.where(("input",)),
                        field="input_shape")
    key = "input_shape" if net.input_shape else "input_dim"
    for i, shape in enumerate(shapes):
        _check_count(shape["dim"], "the legacy input",
                     net.where((key, i) if net.input_shape else (key,)), key)
    lp = LayerParameter.model_validate({"name": "input", "type": "Input", "top": list(net.input),
                                        "input_param": {"shape": shapes}})
    return [LayerDef(lp, [], list(net.input))]


def resolve(defs: list[LayerDef], net: NetParameter) -> None:
    """Every bottom must exist already; a top may only be re-produced in place.

    Layer names may repeat (Caffe allows it, and BVLC's own mnist_autoencoder names two loss
    layers 'loss'); ``Net`` refuses a repeat only where it would make parameter blobs
    ambiguous.
    """
    available: dict[str, str] = {}
    for d in defs:
        loc = ("layer", d.index) if d.index is not None else ()
        if d.index is not None:
            for sub, dims in _declared_shapes(d.lp, ()):
                _check_count(dims, f"layer '{d.lp.name}'", net.where(loc + sub),
                             f"layer {d.lp.name}.{dotted(sub)}")
        for j, b in enumerate(d.bottoms):
            if b not in available:
                hint = suggest(b, available)
                raise SpecError(
                    f"layer '{d.lp.name}' reads bottom '{b}', which no earlier layer in this "
                    f"phase produces.{hint} Available: {', '.join(available) or 'none'}",
                    **net.where(loc + ("bottom", j)), field=f"layer {d.lp.name}.bottom")
        for j, t in enumerate(d.tops):
            if t in d.tops[:j]:
                raise SpecError(f"layer '{d.lp.name}' lists top '{t}' twice",
                                **net.where(loc + ("top", j)), field=f"layer {d.lp.name}.top")
            in_place = j < len(d.bottoms) and d.bottoms[j] == t
            if t in available and not in_place:
                raise SpecError(
                    f"top '{t}' of layer '{d.lp.name}' is already produced by layer "
                    f"'{available[t]}'. A top may reuse a name only in place (top[i] == "
                    f"bottom[i]); give it a new name",
                    **net.where(loc + ("top", j)), field=f"layer {d.lp.name}.top")
            available[t] = d.lp.name


def _declared_shapes(msg: BaseModel, loc: tuple):
    """(location, dims) of every BlobShape set in a message, at any depth."""
    for name in msg.model_fields_set:
        value = getattr(msg, name)
        many = isinstance(value, list)
        for j, item in enumerate(value if many else [value]):
            sub = loc + ((name, j) if many else (name,))
            if isinstance(item, BlobShape):
                yield sub, list(item.dim)
            elif isinstance(item, BaseModel):
                yield from _declared_shapes(item, sub)


def _check_count(dims: list[int], owner: str, where: dict, field: str) -> None:
    count = math.prod(d for d in dims if d > 0)
    if count > MAX_BLOB_COUNT:
        raise SpecError(f"{owner} declares the shape {list(dims)}, {count:,} values; a blob holds "
                        f"at most {MAX_BLOB_COUNT:,} (Caffe's limit)", **where, field=field)


def split_name(blob: str, layer: str, top_index: int, k: int | None = None) -> str:
    base = f"{blob}_{layer}_{top_index}_split"
    return base if k is None else f"{base}_{k}"


def insert_splits(defs: list[LayerDef], loss_weight_of) -> list[LayerDef]:
    """Insert Split layers for blobs with several consumers (Caffe's InsertSplits).

    ``loss_weight_of(def, top_index)`` gives a top's effective loss weight; a weighted top
    counts as one more consumer. In-place consumers of a split blob stop being in place.
    """
    producer: dict[str, tuple[int, int]] = {}
    consumers: dict[tuple[int, int], int] = {}
    bottom_src: dict[tuple[int, int], tuple[int, int]] = {}
    for i, d in enumerate(defs):
        for j, b in enumerate(d.bottoms):
            src = producer[b]
            bottom_src[(i, j)] = src
            consumers[src] = consumers.get(src, 0) + 1
        for k, t in enumerate(d.tops):
            producer[t] = (i, k)
            if loss_weight_of(d, k):
                consumers[(i, k)] = consumers.get((i, k), 0) + 1
    next_split: dict[tuple[int, int], int] = {}
    out: list[LayerDef] = []
    for i, d in enumerate(defs):
        new_bottoms = list(d.bottoms)
        for j, b in enumerate(d.bottoms):
            src = bottom_src[(i, j)]
            if consumers.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                new_bottoms[j] = split_name(b, defs[src[0]].lp.name, src[1], k)
        out.append(LayerDef(d.lp, new_bottoms, list(d.tops), list(d.loss_weights), d.index))
        for k, t in enumerate(d.tops):
            n = consumers.get((i, k), 0)
            if n > 1:
                weight = loss_weight_of(d, k)
                split_lp = LayerParameter.model_validate(
                    {"name": split_name(t, d.lp.name, k), "type": "Split", "bottom": t,
                     "top": [split_name(t, d.lp.name, k, m) for m in range(n)]})
                split_weights = [weight] + [0.0] * (n - 1) if weight else []
                out.append(LayerDef(split_lp, [t], list(split_lp.top), split_weights))
                if weight:  # the split's top 0 carries the loss weight instead
                    producer_def = out[-2]
                    producer_def.loss_weights = [0.0 if kk == k else loss_weight_of(d, kk)
                                                 for kk in range(len(d.tops))]
                    next_split[(i, k)] = 1
    return out


def check_trainable(net: NetParameter, state: NetState, trained_by: str = "") -> None:
    """A net about to be trained must compute a loss in its TRAIN phase.

    A top counts as a loss when its ``loss_weight`` is non-zero, or when it is the first top of
    a loss layer (``is_loss``) that gives no ``loss_weight`` (Caffe's default weight 1). Nets
    without a loss are fine for ``netspec test`` and inference; only training needs one.
    ``trained_by`` names the solver file for the message.
    """
    defs = legacy_inputs(net) + filter_phase(net, state)
    by = f" (trained by {trained_by})" if trained_by else ""
    where = net.where(("layer",))
    if not defs:
        raise SpecError(f"the TRAIN net{by} is empty: no layer is included in the TRAIN phase "
                        f"(level {state.level}, stages {list(state.stage) or 'none'})",
                        **where, field="layer")
    for d in defs:
        if d.loss_weights:
            if any(w for w in d.loss_weights[:len(d.tops)]):
                return
        elif d.tops and getattr(registry.LAYERS.get(d.lp.type), "is_loss", False):
            return
    raise SpecError(
        f"the TRAIN net{by} has no loss: no layer in the TRAIN phase is a loss layer (such as "
        "SoftmaxWithLoss or EuclideanLoss) or gives a non-zero loss_weight, so training could "
        "not change any weight. Add a loss layer; a net without one can still be run with "
        "`netspec test`", **where, field="layer")
