"""pycaffe's ``caffe.NetSpec``, ``caffe.layers`` and ``caffe.params`` (BVLC ``net_spec.py``):
write a net in Python and get its Caffe ``NetParameter`` message with ``to_proto()``.

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 28, 28]))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20)
    text = str(n.to_proto())          # a .prototxt, loadable by caffe.Net / netspec.load

A keyword of a layer sets the field of its ``<type>_param`` message when that message has it,
else the field of the layer (``param``, ``include`` …); ``ntop`` gives the number of tops,
``in_place=True`` makes the top the bottom. Needs protobuf.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from ..caffe import pb2


def param_name_dict() -> dict[str, str]:
    """Layer type -> its parameter field stem (``Convolution`` -> ``convolution``), from
    the message type of every ``*_param`` field of ``LayerParameter``."""
    layer = pb2().LayerParameter()
    out = {}
    for f in layer.DESCRIPTOR.fields:
        if f.name.endswith("_param") and f.message_type is not None:
            type_name = f.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[:-len("Parameter")]] = f.name[:-len("_param")]
    return out


def assign_proto(proto, name: str, val: Any) -> None:
    """Set field ``name`` of ``proto`` from a value, a list (repeated) or a dict (message)."""
    field = getattr(proto, name)
    is_repeated = hasattr(field, "extend")
    if is_repeated and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if val and isinstance(val[0], dict):
            for item in val:
                proto_item = field.add()
                for k, v in item.items():
                    assign_proto(proto_item, k, v)
        else:
            field.extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(field, k, v)
    else:
        setattr(proto, name, val)


class Top:
    """One output of a layer function: an input to later layers."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """The NetParameter of the net that computes this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its type, bottoms (Tops) and parameters."""

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(inp)})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top: Top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames) -> None:
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = pb2().LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        stems = param_name_dict()
        for k, v in self.params.items():
            if k.endswith("param"):              # a generic *param: param, input_param …
                assign_proto(layer, k, v)
                continue
            try:
                assign_proto(getattr(layer, stems[self.type_name] + "_param"), k, v)
            except (AttributeError, KeyError):
                assign_proto(layer, k, v)
        layers[self] = layer


def to_proto(*tops):
    """The NetParameter of the layers that compute ``tops``."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = pb2().NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops, assigned as attributes (``n.conv1 = L.Convolution(n.data, …)``)."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def to_proto(self):
        """The NetParameter: one layer per function, named after its first top's name."""
        names = {v: k for k, v in self.tops.items()}
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = pb2().NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``L.Convolution(bottom, …)``: a function per layer type, returning its top(s)."""

    def __getattr__(self, name):
        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer_fn


class Parameters:
    """``P.Pooling.MAX``: the enum values of Caffe's parameter messages."""

    def __getattr__(self, name):
        class Param:
            def __getattr__(self, param_name):
                return getattr(getattr(pb2(), name + "Parameter"), param_name)
        return Param()


layers = Layers()
params = Parameters()
