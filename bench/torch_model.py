"""The PyTorch side of the bench: a translator from a bench net's layer list to a
``torch.nn`` module with netspec's weights copied in, its SGD optimizer and its inputs.

Layer types (Caffe's semantics): Input (skipped), Convolution (groups, dilation), Pooling (MAX and
AVE with Caffe's ceil rule as ``ceil_mode=True``, AVE counting the padding, global pooling),
InnerProduct, ReLU (leaky), LRN (across channels: torch's ``local_response_norm`` divides alpha
by the size as Caffe does), Concat, Dropout, Softmax, BatchNorm (Caffe's statistics blobs
divided by the scale factor; batch statistics when training, the stored ones otherwise, as
``use_global_stats`` defaults), Scale (one bottom, per channel, optional bias), Eltwise (SUM
with coefficients, PROD, MAX), SoftmaxWithLoss as mean cross-entropy, Accuracy (test pass only);
other layer types raise NotImplementedError.
"""

from __future__ import annotations

import functools

import numpy as np

from netspec.spec.params.conv import spatial_pair

from bench.shared import SOLVER, as_list, param_specs


def _pair(p: dict, key: str, default):
    """Caffe's (h, w) of a size field of the layer dict ``p``, by netspec's own rule
    (``spatial_pair``; a scalar ``pad``/``stride`` yields to its ``_h``/``_w`` pair)."""
    base = "kernel" if key == "kernel_size" else key
    h, w = p.get(base + "_h"), p.get(base + "_w")
    values = p.get(key)
    if h is not None and not isinstance(values, list):
        values = None
    return spatial_pair(values, h, w, key, default)


def torch_model(spec: dict, weights: dict[str, np.ndarray], device: str = "cpu"):
    """A torch.nn.Module computing the same blobs as the netspec net ``spec`` (same weights).

    forward(inputs: dict) -> (loss, blobs). Unsupported layer types raise NotImplementedError.
    """
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    class Flatten(nn.Module):
        """InnerProduct: flatten the axes from ``axis`` on, then Linear."""

        def __init__(self, lin, axis):
            super().__init__()
            self.lin, self.axis = lin, axis

        def forward(self, x):
            return self.lin(x.flatten(self.axis) if x.dim() > self.axis + 1 else x)

    def cross_entropy(x, label):
        return F.cross_entropy(x, label.long())

    def accuracy(x, label):
        return (x.argmax(1) == label.long()).float().mean()

    class CaffeBatchNorm(nn.Module):
        """Caffe's BatchNorm: (x − mean) / sqrt(var + eps), mean and var the stored sums
        divided by the scale factor (``use_global_stats``, default: not training) or the
        batch's biased statistics (then the stored ones move by ``momentum``)."""

        def __init__(self, blobs, eps, fraction, global_stats):
            super().__init__()
            f = float(blobs[2].reshape(-1)[0])
            f = 0.0 if f == 0 else 1.0 / f
            self.register_buffer("mean", torch.from_numpy(blobs[0] * f))
            self.register_buffer("var", torch.from_numpy(blobs[1] * f))
            self.eps, self.momentum, self.global_stats = eps, 1.0 - fraction, global_stats

        def forward(self, x):
            use_global = not self.training if self.global_stats is None else self.global_stats
            return F.batch_norm(x, self.mean, self.var, training=not use_global,
                                momentum=self.momentum, eps=self.eps)

    class ChannelScale(nn.Module):
        """Caffe's Scale of one bottom along axis 1: x · γ[c] (+ β[c])."""

        def __init__(self, gamma, beta):
            super().__init__()
            self.gamma = nn.Parameter(torch.from_numpy(gamma.copy()))
            self.beta = None if beta is None else nn.Parameter(torch.from_numpy(beta.copy()))

        def forward(self, x):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = x * self.gamma.view(shape)
            return y if self.beta is None else y + self.beta.view(shape)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = nn.ModuleDict()
            self.steps = []          # (fn, bottoms, tops)
            self.mults = []          # (param, lr_mult, decay_mult)
            for lay in spec["layer"]:
                self._add(lay)

        def _add(self, lay):
            t, name = lay["type"], lay["name"]
            bottoms, tops = as_list(lay.get("bottom")), as_list(lay.get("top"))
            mults = param_specs(lay) + [(1.0, 1.0)] * 2
            if t == "Input":
                return
            if t == "Convolution":
                p = lay.get("convolution_param", {})
                w = weights[f"{name}/0"]
                m, cg, kh, kw = w.shape
                g = int(p.get("group", 1))
                bias = p.get("bias_term", True)
                mod = nn.Conv2d(cg * g, m, (kh, kw), stride=_pair(p, "stride", 1),
                                padding=_pair(p, "pad", 0), dilation=_pair(p, "dilation", 1),
                                groups=g, bias=bias)
                self._load(mod, name, bias, transpose=False, mults=mults)
                fn = mod
            elif t == "Pooling":
                p = lay.get("pooling_param", {})
                if "ceil_mode" in p:   # the forks' field (netspec reads it as round_mode)
                    p = {**p, "round_mode": "CEIL" if p["ceil_mode"] else "FLOOR"}
                if p.get("global_pooling"):
                    fn = (nn.AdaptiveMaxPool2d(1) if p.get("pool", "MAX") == "MAX"
                          else nn.AdaptiveAvgPool2d(1))
                else:
                    k, s, pad = _pair(p, "kernel_size", None), _pair(p, "stride", 1), _pair(p, "pad", 0)
                    ceil = p.get("round_mode", "CEIL") == "CEIL"
                    if p.get("pool", "MAX") == "MAX":
                        fn = nn.MaxPool2d(k, s, pad, ceil_mode=ceil)
                    elif p.get("pool") == "AVE":
                        # torch's divisor in ceil mode = Caffe's pool_size (window clipped at
                        # H + pad, padding counted): count_include_pad=True
                        fn = nn.AvgPool2d(k, s, pad, ceil_mode=ceil, count_include_pad=True)
                    else:
                        raise NotImplementedError(f"pool {p.get('pool')}")
            elif t == "InnerProduct":
                p = lay.get("inner_product_param", {})
                w = weights[f"{name}/0"]
                tr = bool(p.get("transpose", False))
                k, n = (w.shape if tr else w.shape[::-1])
                bias = p.get("bias_term", True)
                lin = nn.Linear(k, n, bias=bias)
                self._load(lin, name, bias, transpose=tr, mults=mults)
                axis = int(p.get("axis", 1))
                fn = Flatten(lin, axis)
            elif t == "ReLU":
                slope = float(lay.get("relu_param", {}).get("negative_slope", 0.0))
                inplace = bottoms == tops
                fn = (nn.ReLU(inplace=inplace) if slope == 0
                      else nn.LeakyReLU(slope, inplace=inplace))
            elif t == "LRN":
                p = lay.get("lrn_param", {})
                if p.get("norm_region", "ACROSS_CHANNELS") != "ACROSS_CHANNELS":
                    raise NotImplementedError("LRN WITHIN_CHANNEL in the torch translator")
                size, alpha = int(p.get("local_size", 5)), float(p.get("alpha", 1.0))
                beta, k = float(p.get("beta", 0.75)), float(p.get("k", 1.0))
                fn = nn.LocalResponseNorm(size, alpha, beta, k)
            elif t == "Concat":
                p = lay.get("concat_param", {})
                axis = int(p.get("axis", p.get("concat_dim", 1)))
                fn = lambda *xs, axis=axis: torch.cat(xs, axis)  # noqa: E731
            elif t == "Dropout":
                ratio = float(lay.get("dropout_param", {}).get("dropout_ratio", 0.5))
                fn = nn.Dropout(ratio)
            elif t == "Softmax":
                axis = int(lay.get("softmax_param", {}).get("axis", 1))
                fn = nn.Softmax(axis)
            elif t == "BatchNorm":
                p = lay.get("batch_norm_param", {})
                fn = CaffeBatchNorm([weights[f"{name}/{i}"] for i in range(3)],
                                    float(p.get("eps", 1e-5)),
                                    float(p.get("moving_average_fraction", 0.999)),
                                    p.get("use_global_stats"))
            elif t == "Scale":
                p = lay.get("scale_param", {})
                if len(bottoms) != 1 or int(p.get("axis", 1)) != 1 or int(p.get("num_axes", 1)) != 1:
                    raise NotImplementedError("Scale other than one per-channel factor")
                fn = ChannelScale(weights[f"{name}/0"],
                                  weights[f"{name}/1"] if p.get("bias_term") else None)
                self.mults.append((fn.gamma, *mults[0]))
                if fn.beta is not None:
                    self.mults.append((fn.beta, *mults[1]))
            elif t == "Eltwise":
                p = lay.get("eltwise_param", {})
                op = p.get("operation", "SUM")
                coeff = [float(c) for c in as_list(p.get("coeff"))] or [1.0] * len(bottoms)
                if op == "SUM":
                    def fn(*xs, c=coeff):
                        return functools.reduce(torch.add, [x if ci == 1 else ci * x
                                                            for ci, x in zip(c, xs)])
                elif op == "PROD":
                    def fn(*xs):
                        return functools.reduce(torch.mul, xs)
                else:
                    def fn(*xs):
                        return functools.reduce(torch.maximum, xs)
            elif t == "SoftmaxWithLoss":
                extra = {k for k in ("loss_param", "softmax_param", "loss_weight") if lay.get(k)}
                if extra:
                    raise NotImplementedError(f"SoftmaxWithLoss with {sorted(extra)}")
                fn = cross_entropy
            elif t == "Accuracy":
                fn = accuracy
            else:
                raise NotImplementedError(f"layer type {t} in the torch translator")
            if isinstance(fn, nn.Module):
                self.mods[name] = fn
            self.steps.append((fn, bottoms, tops, t))

        def _load(self, mod, name, bias, transpose, mults):
            w = weights[f"{name}/0"]
            w = w.T if transpose else w
            with torch.no_grad():
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)).reshape(mod.weight.shape))
                if bias:
                    mod.bias.copy_(torch.from_numpy(weights[f"{name}/1"]))
            self.mults.append((mod.weight, *mults[0]))
            if bias:
                self.mults.append((mod.bias, *mults[1]))

        def forward(self, inputs, train=True):
            if self.training != train:
                self.train(train)
            blobs = dict(inputs)
            loss = None
            for fn, bottoms, tops, t in self.steps:
                if t == "Accuracy" and train:
                    continue
                y = fn(*(blobs[b] for b in bottoms))
                blobs[tops[0]] = y
                if t == "SoftmaxWithLoss":
                    loss = y if loss is None else loss + y
            return loss, blobs

    model = Net().to(device)
    return model


def torch_optimizer(model, base_lr: float = SOLVER["base_lr"]):
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

    groups = [{"params": [p], "lr": base_lr * lr, "weight_decay": SOLVER["weight_decay"] * dm}
              for p, lr, dm in model.mults if lr != 0]
    for p, lr, _ in model.mults:
        if lr == 0:
            p.requires_grad_(False)
    return torch.optim.SGD(groups, lr=base_lr, momentum=SOLVER["momentum"])


def torch_inputs(inputs: dict, device: str = "cpu") -> dict:
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

    return {k: torch.from_numpy(v.copy()).to(device) for k, v in inputs.items()}


def torch_train_step(model, opt, inputs: dict):
    """One PyTorch training step of ``model`` on ``inputs`` (zero grads, forward, backward,
    update), as a function returning the loss."""
    def step() -> float:
        opt.zero_grad()
        loss, _ = model(inputs)
        loss.backward()
        opt.step()
        return loss.item()
    return step
