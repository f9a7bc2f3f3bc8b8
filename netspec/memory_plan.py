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
    starts, ends = defaultdict(list), defaultdict(list)
    for g in plan_groups(layers, bottoms, tops, keep):
        starts[g["first"]].append(g["members"])
        ends[g["last"]].append(g["members"])
    free: list = []            # flat arrays not in use
    held: dict[int, object] = {}
    total = 0
    for i in range(len(layers)):
        for members in starts[i]:
            dtype = members[0].data.dtype
            need = max(m.data.size for m in members)
            fits = [k for k, a in enumerate(free) if a.dtype == dtype and a.size >= need]
            if fits:
                flat = free.pop(min(fits, key=lambda k: free[k].size))
            else:
                flat = backend.empty(need, dtype=dtype)
                total += flat.nbytes
            held[id(members[0])] = flat
            for m in members:
                m.data = flat[:m.data.size].reshape(m.data.shape)
        for members in ends[i]:
            free.append(held.pop(id(members[0])))
    return total
