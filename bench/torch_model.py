"""The PyTorch side of the bench: a small translator from a bench net's layer list to a
``torch.nn`` module with netspec's initial weights copied in, its SGD optimizer and its inputs.

Convolution, Pooling (Caffe's ceil rule as ``ceil_mode=True``), InnerProduct, ReLU,
SoftmaxWithLoss as mean cross-entropy, Accuracy (test pass only); other layer types raise
NotImplementedError.
"""

from __future__ import annotations

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


def torch_optimizer(model):
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

    groups = [{"params": [p], "lr": SOLVER["base_lr"] * lr, "weight_decay": SOLVER["weight_decay"] * dm}
              for p, lr, dm in model.mults if lr != 0]
    for p, lr, _ in model.mults:
        if lr == 0:
            p.requires_grad_(False)
    return torch.optim.SGD(groups, lr=SOLVER["base_lr"], momentum=SOLVER["momentum"])


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
