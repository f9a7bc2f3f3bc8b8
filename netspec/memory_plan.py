"""Top blobs sharing memory in nets that run forward only (``Net(reuse_blobs=True)``).

Caffe keeps every blob for the net's lifetime. A net that runs no backward needs a top only
until the last layer that reads it, so blobs whose lives do not overlap can share one array,
as inference runtimes do. The plan, over the layers in order:

* a *storage group* is a blob together with the blobs that alias its array: the same blob
  rewritten in place, and the tops a ``Split`` (fan-out) rebinds to its bottom; it lives from
  the layer that first writes it to the last layer that reads or writes any of its members;
* a group may share only if every layer that touches it writes its tops into the arrays the
  net gave them (``Layer.fills_tops``) or is a ``Split``, and none of its blobs is an input
  (a top of a layer without bottoms), a net output, or one the caller keeps (``keep``);
* groups get arrays from a pool: a group takes the smallest free array large enough (a new
  one when none is) when its first layer runs and returns it after its last layer, so a
  layer's tops never share an array with its own bottoms.

Other blobs keep their own arrays. After a forward, a shared blob's ``data`` holds whatever
the last group to use its array wrote: read only inputs, outputs and kept blobs.

Diffs in training nets (``Net(reuse_diffs=True)``, the solver of ``netspec train``): a blob's
gradient is written by the backward of the last layer that reads the blob and read down to
the backward of the layer that first writes it, so in backward order it lives over the same
span of layers as its data in forward order, and blobs whose spans do not overlap can share one
diff array. A blob's diff may share only if every layer that reads or writes the blob
overwrites the bottom diffs it propagates to and never rebinds a diff
(``Layer.writes_bottom_diffs``), the last of them runs backward into it (so the array's earlier
values are never read), and the blob is not an input, a net output, a loss top (its diff is
the loss weight) or one the caller keeps. Parameter diffs are the solver's and never share.
After a backward, a shared blob's ``diff`` holds whatever the last blob to use its array wrote.

In the same nets an in-place Scale right after the BatchNorm that wrote its bottom reads the
BatchNorm's saved x̂ (the values the Scale overwrites) for its scale gradient instead of
copying its bottom (``link_saved_inputs``): ResNet's BatchNorm + Scale pairs kept two equal
copies of every normalised blob.
"""

from __future__ import annotations

from collections import defaultdict


def plan_groups(layers, bottoms, tops, keep: set[str]) -> list[dict]:
    """The storage groups that may share memory, each {first, last, members} (module doc)."""
    group: dict[int, int] = {}          # id(blob) -> index in groups
    groups: list[dict] = []

    def of(b, i):
        k = group.get(id(b))
        if k is None:
            k = group[id(b)] = len(groups)
            groups.append({"first": i, "last": i, "fixed": False, "members": [b]})
        groups[k]["last"] = i
        return groups[k]

    for i, (layer, bots, tps) in enumerate(zip(layers, bottoms, tops)):
        split = layer.type_name == "Split"
        other = not (split or layer.fills_tops)
        for b in bots:
            of(b, i)["fixed"] |= other
        for j, t in enumerate(tps):
            copy = split and j in layer.copy_tops        # the Split's own array
            if split and not copy and id(t) not in group:
                group[id(t)] = group[id(bots[0])]
                groups[group[id(t)]]["members"].append(t)
            of(t, i)["fixed"] |= other or copy or not bots or t.name in keep
    return [g for g in groups if not g["fixed"]]


def share_memory(layers, bottoms, tops, keep: set[str], backend) -> int:
    """Give the groups of ``plan_groups`` arrays from a pool (module doc); returns the bytes
    of the pool's arrays (the tops of every group share them)."""
    spans = [(g["first"], g["last"], g["members"])
             for g in plan_groups(layers, bottoms, tops, keep)]

    def bind(m, view):
        m.data = view
    return _lend(spans, len(layers), backend, bind)


def plan_diffs(layers, bottoms, tops, layer_backward, propagate, keep: set[str]) -> list[tuple]:
    """The blobs whose diffs may share arrays in a training net, each (first, last, [blob]):
    the span of layers that touch it (module doc)."""
    span: dict[int, list] = {}            # id(blob) -> [first, last, blob, may share]
    for i, (layer, bots, tps) in enumerate(zip(layers, bottoms, tops)):
        for b in list(bots) + list(tps):
            s = span.setdefault(id(b), [i, i, b, True])
            s[1] = i
            s[3] &= layer.writes_bottom_diffs
        for t in tps:
            span[id(t)][3] &= bool(bots) and t.name not in keep
    out = []
    for first, last, blob, ok in span.values():
        positions = [j for j, b in enumerate(bottoms[last]) if b is blob]
        if ok and positions and layer_backward[last] and all(propagate[last][j] for j in positions):
            out.append((first, last, [blob]))
    return out


def share_diffs(layers, bottoms, tops, layer_backward, propagate, keep: set[str], backend) -> int:
    """Give the blobs of ``plan_diffs`` diff arrays from a pool (module doc); returns the bytes
    of the pool's arrays."""
    spans = plan_diffs(layers, bottoms, tops, layer_backward, propagate, keep)

    def bind(m, view):
        m.diff = view
    return _lend(spans, len(layers), backend, bind)


def _lend(spans, n_layers: int, backend, bind) -> int:
    """Lend pool arrays to spans (first layer, last layer, member blobs): a span takes the
    smallest free array large enough (a new one when none is) at its first layer and returns
    it after its last, and ``bind(member, view)`` gives each member its view; returns the bytes
    of the pool's arrays."""
    starts, ends = defaultdict(list), defaultdict(list)
    for first, last, members in spans:
        starts[first].append(members)
        ends[last].append(members)
    free: list = []            # flat arrays not in use
    held: dict[int, object] = {}
    total = 0
    for i in range(n_layers):
        for members in starts[i]:
            dtype = members[0].data.dtype
            need = max(m.data.size for m in members)
            fits = [k for k, a in enumerate(free) if a.dtype == dtype and a.size >= need]
            if fits:
                flat = free.pop(min(fits, key=lambda k: free[k].size))
            else:
                flat = backend.zeros((need,), dtype=dtype)
                total += flat.nbytes
            held[id(members[0])] = flat
            for m in members:
                bind(m, flat[:m.data.size].reshape(m.data.shape))
        for members in ends[i]:
            free.append(held.pop(id(members[0])))
    return total


def link_saved_inputs(layers, bottoms, tops) -> int:
    """Point each in-place Scale that directly follows the BatchNorm writing its bottom at that
    BatchNorm (``Scale.input_from``, module doc); returns how many were linked."""
    linked = 0
    for i in range(1, len(layers)):
        layer, prev = layers[i], layers[i - 1]
        if (layer.type_name == "Scale" and prev.type_name == "BatchNorm"
                and bottoms[i][0] is tops[i][0] and tops[i - 1][0] is bottoms[i][0]):
            layer.input_from = prev
            linked += 1
    return linked
