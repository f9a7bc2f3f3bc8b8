"""The hand-written NumPy float32 MLP the bench times the seeds' MLP against: forward, backward
and the SGD-momentum update of models/mlp.yaml written out by hand."""

from __future__ import annotations

import numpy as np

from bench.shared import SOLVER, param_specs


class NumpyMLP:
    """784-200-200-10 ReLU MLP, softmax cross-entropy, SGD momentum with L2 on the weights only.

    Same layout as netspec's InnerProduct (W is (out, in)), float32 throughout, in-place where
    NumPy allows it.
    """

    def __init__(self, weights: dict, x: np.ndarray, label: np.ndarray, decay_mults):
        self.W = [weights[f"fc{i}/0"].copy() for i in (1, 2, 3)]
        self.b = [weights[f"fc{i}/1"].copy() for i in (1, 2, 3)]
        self.vW = [np.zeros_like(w) for w in self.W]
        self.vb = [np.zeros_like(b) for b in self.b]
        self.x = x.reshape(x.shape[0], -1).astype(np.float32)
        self.y = label.astype(np.int64)
        self.decay = decay_mults
        self.rows = np.arange(self.x.shape[0])

    def step(self) -> float:
        f32 = np.float32
        W, b, x, y, n = self.W, self.b, self.x, self.y, self.x.shape[0]
        h1 = x @ W[0].T
        h1 += b[0]
        np.maximum(h1, 0, out=h1)
        h2 = h1 @ W[1].T
        h2 += b[1]
        np.maximum(h2, 0, out=h2)
        s = h2 @ W[2].T
        s += b[2]
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        loss = float(-np.log(np.maximum(s[self.rows, y], f32(1.1754944e-38))).mean())
        d3 = s
        d3[self.rows, y] -= 1
        d3 *= f32(1.0 / n)
        gW = [None, None, d3.T @ h2]
        gb = [None, None, d3.sum(axis=0)]
        d2 = d3 @ W[2]
        d2 *= h2 > 0
        gW[1], gb[1] = d2.T @ h1, d2.sum(axis=0)
        d1 = d2 @ W[1]
        d1 *= h1 > 0
        gW[0], gb[0] = d1.T @ x, d1.sum(axis=0)
        lr, mu, wd = f32(SOLVER["base_lr"]), f32(SOLVER["momentum"]), SOLVER["weight_decay"]
        for i in range(3):
            for p, g, v, dm in ((W[i], gW[i], self.vW[i], self.decay[i][0]),
                                (b[i], gb[i], self.vb[i], self.decay[i][1])):
                if wd * dm:
                    g += f32(wd * dm) * p
                v *= mu
                v += lr * g
                p -= v
        return loss


def mlp_decay(spec) -> list[tuple[float, float]]:
    """(weight, bias) decay_mult of each InnerProduct layer of ``spec``."""
    out = []
    for lay in spec["layer"]:
        if lay["type"] == "InnerProduct":
            ps = param_specs(lay) + [(1.0, 1.0)] * 2
            out.append((ps[0][1], ps[1][1]))
    return out
