"""Recurrent layers: ``RNN``, ``LSTM`` and ``LSTMUnit`` (BVLC Caffe's RecurrentLayer family).

Caffe builds each as an unrolled net of InnerProduct, Scale, Eltwise, TanH and LSTMUnit layers
(``src/caffe/layers/{recurrent,rnn,lstm,lstm_unit}_layer.cpp``). netspec computes the same
function directly: the input projection of all T steps is one GEMM, the time loop does the
recurrent GEMM and the element-wise gate math of one step for the whole batch, and backward
through time collects the gate gradients of every step so each weight gradient is one GEMM.

Blobs (H = ``num_output``, I = Π x.shape[2:], S = Π x_static.shape[1:]):

* bottoms: ``x`` (T × N × ...), ``cont`` (T × N; 0 starts a new sequence at that step),
  optional ``x_static`` (N × ..., the same for every step), then with ``expose_hidden`` the
  initial state ``h_0`` (1 × N × H) and, for LSTM, ``c_0`` (1 × N × H);
* tops: the output (T × N × H), then with ``expose_hidden`` ``h_T`` (and ``c_T``), 1 × N × H.

LSTM, gates in Caffe's order i, f, o, g::

    [i'; f'; o'; g'] = W_xc x_t + b_c + W_xc_static x_static + W_hc (cont_t · h_{t-1})
    i = σ(i'),  f = cont_t · σ(f'),  o = σ(o'),  g = tanh(g')
    c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)             top: h_1 … h_T

    parameter blobs: W_xc (4H × I), b_c (4H), [W_xc_static (4H × S)], W_hc (4H × H)

RNN::

    h_t = tanh(W_xh x_t + b_h + W_xh_static x_static + W_hh (cont_t · h_{t-1}))
    o_t = tanh(W_ho h_t + b_o)                                   top: o_1 … o_T

    parameter blobs: W_xh (H × I), b_h (H), [W_xh_static (H × S)], W_hh (H × H), W_ho (H × H),
    b_o (H)

LSTMUnit is one LSTM step with its gate pre-activations given as a bottom (Caffe's cell of
the unrolled LSTM): bottoms c_{t-1}, [i'; f'; o'; g'], cont_t; tops c_t, h_t; no parameters.
LSTM and LSTMUnit share the step's gate math (``_lstm_gates_``, ``_lstm_cell``,
``_lstm_cell_backward``).

The blob order is the order in which Caffe's unrolled net creates them, so ``.caffemodel``
weights load as they are. Weights use ``weight_filler``, biases ``bias_filler``.

Caffe's conventions, kept:

* Without ``expose_hidden`` the state carries over between forward calls: h_0 (and c_0) of a
  forward is h_T (and c_T) of this layer's previous forward, zeros at first. A stream with
  cont = 0 at its first step ignores it. The carried state is saved in snapshots
  (``state_dict``) so a resumed run continues exactly (Caffe does not save it).
* Back-propagation is truncated at the batch: nothing flows into the carried state, into
  ``cont``, into the exposed initial state bottoms or from the exposed final state tops (Caffe
  shares their data with its unrolled net, not their diffs).
* The forget-gate gradient is LSTMUnit's ∂f' = ∂c_t · c_{t-1} · f(1 − f) with f = cont · σ(f'):
  the exact derivative for the binary cont that Caffe documents.
* ``debug_info`` (Caffe: log the unrolled net) has no effect.
"""

from __future__ import annotations

import math
from typing import ClassVar

from ..backend import to_numpy
from .base import Layer
from .registry import register


def _sigmoid_(xp, a) -> None:
    """σ(a) in place, as 0.5·tanh(0.5·a) + 0.5 (no overflow)."""
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5


# -- one LSTM step (Caffe's LSTMUnit), shared by LSTM and LSTMUnit ---------------------------
def _split_gates(a, H: int):
    """Views (i, f, o, g) of an N × 4H array in Caffe's gate order."""
    return a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]


def _lstm_gates_(xp, a, cont, H: int):
    """Gate pre-activations a = [i'; f'; o'; g'] (N × 4H) become, in place, the gate values
    i = σ(i'), f = cont·σ(f'), o = σ(o'), g = tanh(g'); returns their views (i, f, o, g).
    ``cont`` is N × 1."""
    _sigmoid_(xp, a[:, :3 * H])
    xp.tanh(a[:, 3 * H:], out=a[:, 3 * H:])
    i, f, o, g = _split_gates(a, H)
    f *= cont
    return i, f, o, g


def _lstm_cell(xp, gates, c_prev, c, tanh_c, h) -> None:
    """c = f ⊙ c_prev + i ⊙ g, tanh_c = tanh(c), h = o ⊙ tanh_c, into the arrays given."""
    i, f, o, g = gates
    xp.multiply(f, c_prev, out=c)
    c += i * g
    xp.tanh(c, out=tanh_c)
    xp.multiply(o, tanh_c, out=h)


def _lstm_cell_backward(gates, c_prev, tanh_c, dh, dc, d) -> None:
    """Backward of one step, Caffe's LSTMUnit::Backward. In: ∂h_t (``dh``) and the ∂c_t that
    reaches c_t from outside the step (``dc``: the c top, or the next step). Out: the gate
    pre-activation gradients in ``d`` (N × 4H) and, in ``dc`` (in place), ∂c_{t−1} = ∂c_t·f.

    ∂f' = ∂c_t · c_{t−1} · f(1 − f) with f = cont·σ(f'): exact for binary cont (Caffe's form)."""
    i, f, o, g = gates
    di, df, do, dg = _split_gates(d, i.shape[1])
    dc += dh * o * (1 - tanh_c * tanh_c)                 # ∂c_t in full
    di[...] = dc * g * i * (1 - i)
    df[...] = dc * c_prev * f * (1 - f)
    do[...] = dh * tanh_c * o * (1 - o)
    dg[...] = dc * i * (1 - g * g)
    dc *= f


class _Recurrent(Layer):
    """Shapes, parameters, the batched input projection and its gradients, the carried state."""

    param_block = "recurrent_param"
    #: recurrent state blobs: h (RNN); h and c (LSTM)
    states: ClassVar[int] = 1
    #: rows of the input and recurrent weights per hidden unit: 1 (RNN), 4 gates (LSTM)
    gates: ClassVar[int] = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exposed = self.states if self.p.expose_hidden else 0
        self.min_bottoms = 2 + self.exposed
        self.max_bottoms = 3 + self.exposed
        self.exact_tops = 1 + self.exposed

    # -- setup ------------------------------------------------------------------------------
    def setup(self, bottom_shapes):
        p = self.p
        if p.num_output <= 0:
            raise self.spec_error("recurrent_param.num_output must be set to a positive number",
                                  field="recurrent_param")
        if self.lp.top and self.lp.bottom and self.lp.top[0] == self.lp.bottom[0]:
            raise self.spec_error("cannot run in place (its top must not be its bottom 'x')",
                                  field="top")
        x_shape = tuple(bottom_shapes[0])
        if len(x_shape) < 2 or 0 in x_shape[:2]:
            raise self.error(f"bottom 0 (x) must be T × N × ... with T, N > 0, got {x_shape}")
        self.T, self.N = x_shape[:2]
        self.H = H = p.num_output
        self.I = math.prod(x_shape[2:])
        if tuple(bottom_shapes[1]) != (self.T, self.N):
            raise self.error(f"bottom 1 (cont) must be T × N = {(self.T, self.N)}, "
                             f"got {tuple(bottom_shapes[1])}")
        self.static = len(bottom_shapes) > 2 + self.exposed
        first = 2 + self.static  # index of the first exposed state bottom
        if self.static:
            s_shape = tuple(bottom_shapes[2])
            if len(s_shape) < 1 or s_shape[0] != self.N:
                raise self.error(f"bottom 2 (x_static) must be N × ... with N = {self.N}, "
                                 f"got {s_shape}")
            self.S = math.prod(s_shape[1:])
        state_shape = (1, self.N, H)
        for j in range(first, first + self.exposed):
            if tuple(bottom_shapes[j]) != state_shape:
                raise self.error(f"bottom {j} (initial state) must be 1 × N × num_output = "
                                 f"{state_shape}, got {tuple(bottom_shapes[j])}")
        self.state_bottoms = tuple(range(first, first + self.exposed))
        self.no_grad_bottoms = (1,) + self.state_bottoms  # as Caffe: see the module docstring
        self._add_params()
        self.carry = [self.backend.zeros((self.N, H)) for _ in range(self.states)]
        T, N = self.T, self.N
        self.hc = self.backend.zeros((T, N, H))  # cont_t · h_{t-1}, the recurrent GEMM's input
        self._setup_buffers()
        return [(T, N, H)] + [state_shape] * self.exposed

    def _add_params(self) -> None:
        p, G = self.p, self.gates * self.H
        self.add_param((G, self.I), p.weight_filler, "W_x")
        self.add_param((G,), p.bias_filler, "b")
        if self.static:
            self.add_param((G, self.S), p.weight_filler, "W_x_static")
        self.i_wh = self.next_param_index()
        self.add_param((G, self.H), p.weight_filler, "W_h")

    def _setup_buffers(self) -> None:
        """Arrays the subclass keeps between forward and backward."""

    # -- shared pieces ----------------------------------------------------------------------
    def _input_projection(self, bottom):
        """W_x x_t + b (+ W_static x_static) for all steps at once: (T, N, gates·H)."""
        T, N, G = self.T, self.N, self.gates * self.H
        x = bottom[0].data.reshape(T * N, self.I)
        z = x @ self.blobs[0].data.T
        z += self.blobs[1].data
        z = z.reshape(T, N, G)
        if self.static:
            xs = bottom[2].data.reshape(N, self.S)
            z += xs @ self.blobs[2].data.T
        return z

    def _initial_state(self, bottom) -> list:
        if self.exposed:
            return [bottom[j].data.reshape(self.N, self.H) for j in self.state_bottoms]
        return self.carry

    def _final_state(self, top, final) -> None:
        """Expose h_T (c_T) as tops, or carry them into the next forward."""
        if self.exposed:
            for j, s in enumerate(final):
                top[1 + j].data[...] = s.reshape(top[1 + j].shape)
        else:
            self.carry = [s.copy() for s in final]

    def _input_backward(self, dz, bottom, propagate_down) -> None:
        """From dz = ∂loss/∂(gate pre-activations), (T, N, gates·H): the gradients of W_x, b,
        W_static, W_h (one GEMM each over all steps) and of x and x_static."""
        xp = self.xp
        T, N, H, G = self.T, self.N, self.H, self.gates * self.H
        dz2 = dz.reshape(T * N, G)
        x = bottom[0].data.reshape(T * N, self.I)
        self.blobs[0].diff += dz2.T @ x
        self.blobs[1].diff += dz2.sum(axis=0)
        self.blobs[self.i_wh].diff += dz2.T @ self.hc.reshape(T * N, H)
        if propagate_down[0]:
            xp.matmul(dz2, self.blobs[0].data, out=bottom[0].diff.reshape(T * N, self.I))
        if self.static:
            dzs = dz.sum(axis=0)
            self.blobs[2].diff += dzs.T @ bottom[2].data.reshape(N, self.S)
            if propagate_down[2]:
                xp.matmul(dzs, self.blobs[2].data, out=bottom[2].diff.reshape(N, self.S))

    def _cont(self, bottom, t):
        return bottom[1].data[t][:, None]

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero the carried state (Caffe's RecurrentLayer::Reset)."""
        for s in self.carry:
            s.fill(0)

    def state_dict(self) -> dict:
        if self.exposed:
            return {}
        return {f"state{j}": to_numpy(s).copy() for j, s in enumerate(self.carry)}

    def load_state_dict(self, state: dict) -> None:
        for j in range(len(self.carry)):
            key = f"state{j}"
            if key in state:
                self.carry[j] = self.backend.asarray(state[key]).reshape(self.N, self.H)


@register("LSTM")
class LSTM(_Recurrent):
    """Long short-term memory (Caffe's LSTMLayer); see the module docstring."""

    writes_bottom_diffs = True

    states = 2
    gates = 4

    def _setup_buffers(self):
        T, N, H = self.T, self.N, self.H
        self.cs = self.backend.zeros((T + 1, N, H))      # c_0 … c_T
        self.tanh_c = self.backend.zeros((T, N, H))

    def forward(self, bottom, top):
        xp, H = self.xp, self.H
        acts = self._input_projection(bottom)  # pre-activations, made gate values in place
        h, c = self._initial_state(bottom)
        self.cs[0] = c
        w_hc_t = self.blobs[self.i_wh].data.T
        hs = top[0].data
        for t in range(self.T):
            cont = self._cont(bottom, t)
            xp.multiply(h, cont, out=self.hc[t])
            a = acts[t]
            a += self.hc[t] @ w_hc_t
            gates = _lstm_gates_(xp, a, cont, H)
            _lstm_cell(xp, gates, self.cs[t], self.cs[t + 1], self.tanh_c[t], hs[t])
            h = hs[t]
        self.acts = acts
        self._final_state(top, [hs[-1], self.cs[-1]])

    def backward(self, top, propagate_down, bottom):
        xp, H = self.xp, self.H
        acts, dh_top = self.acts, top[0].diff
        dz = xp.empty_like(acts)
        w_hc = self.blobs[self.i_wh].data
        dh_next = xp.zeros_like(self.cs[0])
        dc = xp.zeros_like(self.cs[0])
        for t in range(self.T - 1, -1, -1):
            d = dz[t]
            dh = dh_top[t] + dh_next
            # dc: ∂c_t from step t+1 in, ∂c_{t-1} out
            _lstm_cell_backward(_split_gates(acts[t], H), self.cs[t], self.tanh_c[t], dh, dc, d)
            dh_next = (d @ w_hc) * self._cont(bottom, t)     # ∂h_{t-1} through cont_t · h_{t-1}
        self._input_backward(dz, bottom, propagate_down)


@register("RNN")
class RNN(_Recurrent):
    """Elman recurrent net with a tanh output layer (Caffe's RNNLayer); see the module docstring."""

    writes_bottom_diffs = True

    def _add_params(self):
        super()._add_params()
        p, H = self.p, self.H
        self.i_wo = self.next_param_index()
        self.add_param((H, H), p.weight_filler, "W_ho")
        self.add_param((H,), p.bias_filler, "b_o")

    def _setup_buffers(self):
        self.hs = self.backend.zeros((self.T, self.N, self.H))  # h_1 … h_T

    def forward(self, bottom, top):
        xp, T, N, H = self.xp, self.T, self.N, self.H
        z = self._input_projection(bottom)
        h = self._initial_state(bottom)[0]
        w_hh_t = self.blobs[self.i_wh].data.T
        for t in range(T):
            xp.multiply(h, self._cont(bottom, t), out=self.hc[t])
            z[t] += self.hc[t] @ w_hh_t
            xp.tanh(z[t], out=self.hs[t])
            h = self.hs[t]
        o = top[0].data.reshape(T * N, H)
        xp.matmul(self.hs.reshape(T * N, H), self.blobs[self.i_wo].data.T, out=o)
        o += self.blobs[self.i_wo + 1].data
        xp.tanh(o, out=o)
        self._final_state(top, [self.hs[-1]])

    def backward(self, top, propagate_down, bottom):
        T, N, H = self.T, self.N, self.H
        o = top[0].data.reshape(T * N, H)
        do = top[0].diff.reshape(T * N, H) * (1 - o * o)
        w_ho = self.blobs[self.i_wo]
        w_ho.diff += do.T @ self.hs.reshape(T * N, H)
        self.blobs[self.i_wo + 1].diff += do.sum(axis=0)
        dz = (do @ w_ho.data).reshape(T, N, H)   # ∂h_t from the output; becomes ∂(pre-tanh)
        w_hh = self.blobs[self.i_wh].data
        dh_next = None
        for t in range(T - 1, -1, -1):
            d = dz[t]
            if dh_next is not None:
                d += dh_next
            d *= 1 - self.hs[t] * self.hs[t]
            dh_next = (d @ w_hh) * self._cont(bottom, t)
        self._input_backward(dz, bottom, propagate_down)


@register("LSTMUnit")
class LSTMUnit(Layer):
    """One LSTM step for a batch of streams (Caffe's LSTMUnitLayer, the cell of Caffe's unrolled
    LSTM); no parameters.

    Bottoms: ``c_prev`` (1 × N × H), ``x`` (1 × N × 4H, the gate pre-activations i', f', o', g'),
    ``cont`` (1 × N). Tops: ``c`` and ``h`` (1 × N × H)::

        i = σ(i'),  f = cont · σ(f'),  o = σ(o'),  g = tanh(g')
        c = f ⊙ c_prev + i ⊙ g,   h = o ⊙ tanh(c)

    Backward to ``c_prev`` and ``x``, never to ``cont`` (Caffe refuses it); the forget-gate
    gradient is Caffe's ∂f' = ∂c · c_prev · f(1 − f), exact for binary cont. The same gate math
    as LSTM (``_lstm_gates_``, ``_lstm_cell``, ``_lstm_cell_backward``). Cannot run in place:
    backward reads ``c_prev``.
    """

    writes_bottom_diffs = True

    exact_bottoms = 3
    exact_tops = 2
    no_grad_bottoms = (2,)

    def setup(self, bottom_shapes):
        if set(self.lp.top) & set(self.lp.bottom):
            raise self.spec_error("cannot run in place (its tops c, h must not be its bottoms)",
                                  field="top")
        c_shape, x_shape, cont_shape = (tuple(s) for s in bottom_shapes)
        if len(c_shape) != 3 or c_shape[0] != 1:
            raise self.error(f"bottom 0 (c_prev) must be 1 × N × H, got {c_shape}")
        _, N, H = c_shape
        if x_shape != (1, N, 4 * H):
            raise self.error(f"bottom 1 (x, the gate inputs) must be 1 × N × 4H = "
                             f"{(1, N, 4 * H)}, got {x_shape}")
        if cont_shape != (1, N):
            raise self.error(f"bottom 2 (cont) must be 1 × N = {(1, N)}, got {cont_shape}")
        self.N, self.H = N, H
        self.acts = self.backend.zeros((N, 4 * H))    # gate values, kept for backward
        self.tanh_c = self.backend.zeros((N, H))
        return [c_shape, c_shape]

    def forward(self, bottom, top):
        xp, N, H = self.xp, self.N, self.H
        self.acts[...] = bottom[1].data.reshape(N, 4 * H)
        gates = _lstm_gates_(xp, self.acts, bottom[2].data.reshape(N, 1), H)
        _lstm_cell(xp, gates, bottom[0].data.reshape(N, H), top[0].data.reshape(N, H),
                   self.tanh_c, top[1].data.reshape(N, H))

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp, N, H = self.xp, self.N, self.H
        dc = top[0].diff.reshape(N, H).copy()
        d = bottom[1].diff.reshape(N, 4 * H) if propagate_down[1] else xp.empty((N, 4 * H),
                                                                                 self.dtype)
        _lstm_cell_backward(_split_gates(self.acts, H), bottom[0].data.reshape(N, H),
                            self.tanh_c, top[1].diff.reshape(N, H), dc, d)
        if propagate_down[0]:
            bottom[0].diff[...] = dc.reshape(bottom[0].shape)
