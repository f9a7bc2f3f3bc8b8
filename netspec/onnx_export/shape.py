"""Flatten, Reshape, Crop, Tile; the forks' Permute, Upsample (nearest), ShuffleChannel and
Interp (bilinear, aligned corners). Shapes are static: the net's own (``convert``)."""

from __future__ import annotations

from .builder import Site, translates


@translates("Flatten", "Reshape")
def reshape(g, s: Site) -> None:
    g.reshape(s.bottoms[0], s.top_shapes[0], s.tops[0], base=s.name)


@translates("Crop")
def crop(g, s: Site) -> None:
    """``Slice`` of bottom 0 by the index netspec computed (offset and bottom 1's size)."""
    axes, starts, ends = [], [], []
    for a, sl in enumerate(s.layer.index):
        if sl.start is not None:
            axes.append(a)
            starts.append(sl.start)
            ends.append(sl.stop)
    if not axes:
        g.identity(s.bottoms[0], s.tops[0])
        return
    g.node("Slice", [s.bottoms[0], g.shape_const(starts, f"{s.name}/starts"),
                     g.shape_const(ends, f"{s.name}/ends"), g.shape_const(axes, f"{s.name}/axes")],
           s.tops)


@translates("Tile")
def tile(g, s: Site) -> None:
    repeats = [t // b for t, b in zip(s.top_shapes[0], s.bottom_shapes[0])]
    g.node("Tile", [s.bottoms[0], g.shape_const(repeats, f"{s.name}/repeats")], s.tops)


@translates("Permute")
def permute(g, s: Site) -> None:
    g.node("Transpose", s.bottoms, s.tops, perm=list(s.layer.order))


@translates("ShuffleChannel")
def shuffle_channel(g, s: Site) -> None:
    """(N, g, C/g, S) → transpose the two channel axes → the bottom's shape."""
    N, groups, k, S = s.layer.groups
    x = g.reshape(s.bottoms[0], (N, groups, k, S), base=f"{s.name}/groups")
    t = g.node("Transpose", [x], base=f"{s.name}/shuffled", perm=[0, 2, 1, 3])
    g.reshape(t, s.top_shapes[0], s.tops[0], base=s.name)


@translates("Upsample")
def upsample(g, s: Site) -> None:
    """Nearest neighbour: y[h, w] = x[h // s, w // s] (asymmetric coordinates, floor)."""
    g.node("Resize", [s.bottoms[0], "", "", g.shape_const(s.top_shapes[0], f"{s.name}/sizes")],
           s.tops, mode="nearest", coordinate_transformation_mode="asymmetric",
           nearest_mode="floor")


@translates("Interp")
def interp(g, s: Site) -> None:
    """Crop by pad_beg/pad_end (≤ 0), then bilinear ``Resize`` with aligned corners."""
    p = s.layer.p
    x = s.bottoms[0]
    N, C, H, W = s.bottom_shapes[0]
    if p.pad_beg or p.pad_end:
        b, e = -p.pad_beg, -p.pad_end
        x = g.node("Slice", [x, g.shape_const([b, b], f"{s.name}/starts"),
                             g.shape_const([H - e, W - e], f"{s.name}/ends"),
                             g.shape_const([2, 3], f"{s.name}/axes")], base=f"{s.name}/crop")
    g.node("Resize", [x, "", "", g.shape_const(s.top_shapes[0], f"{s.name}/sizes")], s.tops,
           mode="linear", coordinate_transformation_mode="align_corners")
