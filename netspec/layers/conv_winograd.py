"""The forward of 3×3, stride-1, one-group convolutions by Winograd's minimal filtering
F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), on the
CPU: 16 GEMMs of (M×C)·(C×tiles) instead of one of (M×9C)·(9C×positions), 2.25× fewer
multiply-adds. ``ConvTuning.winograd`` and its thresholds choose it (``Convolution._columns``);
weight and bottom gradients run by columns (``ConvColumns``, built at the first backward).

The output is cut into 2×2 tiles; tile (a, b) reads the 4×4 patch d = x_pad[2a:2a+4, 2b:2b+4]
(x zero-padded by ``pad`` and, for odd outputs, one more row/column below and right). With

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]],
    G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]],
    Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]],

    U[ξ, ν, m, c] = (G g[m, c] Gᵀ)[ξ, ν]                  (weights, recomputed every forward)
    V[ξ, ν, c, t] = (Bᵀ d[c, t] B)[ξ, ν]                   (bottom tiles)
    Z[ξ, ν, m, t] = Σ_c U[ξ, ν, m, c] · V[ξ, ν, c, t]      (16 GEMMs)
    y[m, tile t] = Aᵀ Z[:, :, m, t] A + b[m]               (2×2 outputs)

Each transform is four array operations over strided views (rows, then columns), the bias is
added to Z[1, 1] (Aᵀ's column 1 is all ones, so it reaches the four outputs of every tile).
The result equals the direct convolution up to rounding (``tests/test_conv_winograd.py``).
"""

from __future__ import annotations


import numpy

from .. import parallel
from .base import sample_chunks, thread_scratch
from .conv_columns import ConvColumns, _chunk_size, tuning


#: G of the module doc: the weight transform
_G = numpy.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_GG = numpy.kron(_G, _G)        # (16, 9): U_flat = (G⊗G) g_flat


class WinogradConv:
    """x (N, C, H, W) -> y (N, M, Ho, Wo) with weight (M, C, 3, 3), stride 1, any pad: forward
    by F(2×2, 3×3) per chunk of samples (module doc), channels last so that every transform's
    inner loop runs along C; ``ConvColumns``' API."""

    def __init__(self, backend, N, C, H, W, M, Ho, Wo, pad, threads=1):
        self.backend, self.xp = backend, backend.xp
        self.threads = threads      # the 16 GEMMs split over these (when BLAS runs one thread)
        self.N, self.C, self.H, self.W, self.M, self.Ho, self.Wo = N, C, H, W, M, Ho, Wo
        self.pad = pad
        self.ranges = [(0, N)]
        self.Th, self.Tw = Th, Tw = -(-Ho // 2), -(-Wo // 2)     # tiles down and across
        Hb, Wb = 2 * Th + 2, 2 * Tw + 2                           # padded (and rounded) bottom
        itemsize = numpy.dtype(backend.dtype).itemsize
        per_sample = (C * (Hb * Wb + 4 * Th * Wb + 16 * Th * Tw) + 28 * M * Th * Tw) * itemsize
        # at least winograd_min_chunk_tiles tiles per chunk: the 16 GEMMs need rows, and U is
        # read once per chunk (ResNet's 512@7², batch 16: 1.61 -> 0.66 of the columns' time
        # at 256 tiles instead of 16)
        self.chunk = n = max(_chunk_size(backend, N, per_sample),
                             min(N, -(-tuning().winograd_min_chunk_tiles // (Th * Tw))))
        self.buf = backend.zeros((n, Hb, Wb, C))          # zero-bordered NHWC bottom
        self._columns = None          # the gradients' machinery (lazily)

    def _view(self, role, shape):
        """This thread's work array ``role`` as ``shape``, shared by every WinogradConv
        (``thread_scratch``): the transforms' buffers cost the largest layer's chunk, not the
        sum over layers (ResNet-50, batch 1: 11 MiB instead of ~60)."""
        return thread_scratch(self.backend, ("winograd", role), shape)

    def _weights(self, w):
        """U (16, M, C) = G g Gᵀ per (m, c) from w (M, C, 3, 3): one GEMM with G ⊗ G."""
        xp = self.xp
        GG = xp.asarray(_GG, dtype=w.dtype)
        return (GG @ w.reshape(self.M * self.C, 9).T).reshape(16, self.M, self.C)

    def _input_transform(self, buf, n):
        """V = Bᵀ d B of every tile of the chunk's padded NHWC bottom, (16, n·Th·Tw, C): the
        rows' combinations over whole padded rows, then the columns'."""
        xp, Th, Tw, C = self.xp, self.Th, self.Tw, self.C
        R = self._view("R", (4, n, Th, buf.shape[2], C))          # Bᵀ d
        V = self._view("V", (4, 4, n, Th, Tw, C))                # Bᵀ d B
        d0, d1, d2, d3 = (buf[:, r:r + 2 * Th:2] for r in range(4))
        xp.subtract(d0, d2, out=R[0])
        xp.add(d1, d2, out=R[1])
        xp.subtract(d2, d1, out=R[2])
        xp.subtract(d1, d3, out=R[3])
        c0, c1, c2, c3 = (R[:, :, :, s:s + 2 * Tw:2] for s in range(4))
        xp.subtract(c0, c2, out=V[:, 0])
        xp.add(c1, c2, out=V[:, 1])
        xp.subtract(c2, c1, out=V[:, 2])
        xp.subtract(c1, c3, out=V[:, 3])
        return V.reshape(16, -1, C)

    def _output_transform(self, Z, n, bias):
        """Y (n, 2·Th, 2·Tw, M) = Aᵀ Z A per tile (+ bias, added to Z[1, 1])."""
        xp, Th, Tw, M = self.xp, self.Th, self.Tw, self.M
        P = self._view("P", (2, 4, n, Th, Tw, M))                # Aᵀ Z
        Y = self._view("Y", (n, Th, 2, Tw, 2, M))                # Aᵀ Z A
        if bias is not None:
            Z[1, 1] += bias
        xp.add(Z[0], Z[1], out=P[0])
        P[0] += Z[2]
        xp.subtract(Z[1], Z[2], out=P[1])
        P[1] -= Z[3]
        P = P.transpose(1, 2, 3, 0, 4, 5)                   # (4, n, Th, 2, Tw, M)
        y0, y1 = Y[:, :, :, :, 0], Y[:, :, :, :, 1]
        xp.add(P[0], P[1], out=y0)
        y0 += P[2]
        xp.subtract(P[1], P[2], out=y1)
        y1 -= P[3]
        return Y.reshape(n, 2 * Th, 2 * Tw, M)

    def forward(self, x, w, y, bias=None):
        xp, (ph, pw), Th, Tw, M = self.xp, self.pad, self.Th, self.Tw, self.M
        UT = self._weights(w).transpose(0, 2, 1)
        for n0, n in sample_chunks(x.shape[0], self.chunk):
            buf = self.buf[:n]
            buf[:, ph:ph + self.H, pw:pw + self.W] = x[n0:n0 + n].transpose(0, 2, 3, 1)
            V = self._input_transform(buf, n)
            Z = self._view("Z", (16, n * Th * Tw, M))              # the 16 GEMMs
            if self.threads > 1 and parallel.blas_threads.current == 1:
                parallel.run(lambda a, k: xp.matmul(V[a:a + k], UT[a:a + k], out=Z[a:a + k]),
                             parallel.split(16, self.threads))
            else:
                xp.matmul(V, UT, out=Z)
            Y = self._output_transform(Z.reshape(4, 4, n, Th, Tw, M), n, bias)
            y[n0:n0 + n] = Y[:, :self.Ho, :self.Wo].transpose(0, 3, 1, 2)

    # -- gradients: by columns -------------------------------------------------------------
    def _cols(self):
        if self._columns is None:
            self._columns = ConvColumns(self.backend, self.N, self.C, self.H, self.W, self.M,
                                        self.Ho, self.Wo, 1, (3, 3), self.pad, (1, 1), (1, 1))
        return self._columns

    def backward(self, x, dy, w, dx=None):
        return self._cols().backward(x, dy, w, dx)

    def weight_grad(self, x, dy):
        return self._cols().weight_grad(x, dy)

    def backward_data(self, dy, w, dx):
        self._cols().backward_data(dy, w, dx)
