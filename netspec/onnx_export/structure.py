"""Concat, Slice, Eltwise, Silence and SENet's Axpy (Split is an alias in ``convert``: its
tops are its bottom's tensor)."""

from __future__ import annotations

from .builder import Site, translates


@translates("Concat")
def concat(g, s: Site) -> None:
    if len(s.bottoms) == 1:
        g.identity(s.bottoms[0], s.tops[0])
    else:
        g.node("Concat", s.bottoms, s.tops, axis=s.layer.axis)


@translates("Slice")
def slice_(g, s: Site) -> None:
    """``Split`` with the tops' sizes along the axis where they differ from the bottom."""
    shape = s.bottom_shapes[0]
    if len(s.tops) == 1:
        g.identity(s.bottoms[0], s.tops[0])
        return
    axis = next(a for a in range(len(shape)) if s.top_shapes[0][a] != shape[a])
    sizes = g.shape_const([t[axis] for t in s.top_shapes], f"{s.name}/sizes")
    g.node("Split", [s.bottoms[0], sizes], s.tops, axis=axis)


@translates("Eltwise")
def eltwise(g, s: Site) -> None:
    """SUM: Σ cᵢ·xᵢ (a Mul per coefficient ≠ 1); PROD: Mul chain; MAX: Max."""
    L = s.layer
    if L.op == "MAX":
        g.node("Max", s.bottoms, s.tops)
        return
    xs = list(s.bottoms)
    if L.op == "SUM":
        xs = [x if c == 1.0 else g.node("Mul", [x, g.const(c, f"{s.name}/coeff{i}")],
                                         base=f"{s.name}/term{i}")
              for i, (x, c) in enumerate(zip(xs, L.coeff))]
    op = "Add" if L.op == "SUM" else "Mul"
    acc = xs[0]
    for i, x in enumerate(xs[1:], 1):
        acc = g.node(op, [acc, x], s.tops[0] if i == len(xs) - 1 else None,
                     base=f"{s.name}/partial")


@translates("Silence")
def silence(g, s: Site) -> None:
    """No tops: nothing to compute."""


@translates("Axpy")
def axpy(g, s: Site) -> None:
    """top = a·x + y with a (N, C) or (N, C, 1, 1) per image and channel."""
    a, x, y = s.bottoms
    rank = len(s.bottom_shapes[1])
    target = tuple(s.bottom_shapes[0][:2]) + (1,) * (rank - 2)
    if tuple(s.bottom_shapes[0]) != target:
        a = g.reshape(a, target, base=f"{s.name}/a")
    ax = g.node("Mul", [a, x], base=f"{s.name}/ax")
    g.node("Add", [ax, y], s.tops)
