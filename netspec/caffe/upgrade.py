"""Caffe's format upgrades (``src/caffe/util/upgrade_proto.cpp``), step for step.

Caffe reads a net file, then, in this order: V0 -> V1 (``layers { layer { type: "conv" } }``,
merging V0 ``padding`` layers into the next conv/pool), moves V1 data layers' scale/mean_file/
crop_size/mirror into ``transform_param``, V1 -> current (``layers { type: CONVOLUTION blobs_lr
weight_decay }`` -> ``layer { type: "Convolution" param { lr_mult decay_mult } }``), turns the
``input``/``input_dim``/``input_shape`` header into an Input layer, and gives BatchNorm layers
that declare three ``param`` blocks lr_mult = decay_mult = 0. These functions do the same on
netspec's ``caffe_pb2`` messages; where Caffe logs an error and drops something, they return
a warning that names the layer and the field instead.

The input-header step is optional here (``input_layer=True``): netspec reads the header as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ConvertError, is_repeated, pb2

V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

SOLVER_TYPE_NAMES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                     "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}

# V1 fields copied verbatim into the current LayerParameter (same message type, same name).
_V1_COPIED = ("accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
              "convolution_param", "data_param", "dropout_param", "dummy_data_param",
              "eltwise_param", "exp_param", "hdf5_data_param", "hdf5_output_param",
              "hinge_loss_param", "image_data_param", "infogain_loss_param",
              "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
              "pooling_param", "power_param", "relu_param", "sigmoid_param", "softmax_param",
              "slice_param", "tanh_param", "threshold_param", "window_data_param",
              "transform_param", "loss_param")


@dataclass
class UpgradeLog:
    """What an upgrade did (``steps``) and what it could not carry over (``warnings``)."""

    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def format(self) -> str:
        for s in self.steps:
            if s.startswith("V0"):
                return "V0"
        for s in self.steps:
            if s.startswith("V1"):
                return "V1"
        return "current"


# -- V0 -> V1 --------------------------------------------------------------------------------
def needs_v0_upgrade(net) -> bool:
    return any(l.HasField("layer") for l in net.layers)


def _v0_padding(net, log: UpgradeLog):
    """Caffe's UpgradeV0PaddingLayers: fold V0 'padding' layers into the conv/pool they feed."""
    out = pb2().NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    last_top: dict[str, int] = {name: -1 for name in net.input}
    for i, conn in enumerate(net.layers):
        lp = conn.layer
        if lp.type != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise ConvertError(f"V0 layer '{lp.name}' reads blob '{blob}', which no earlier "
                                   "layer or input produces", where=("layer", lp.name))
            src_idx = last_top[blob]
            if src_idx == -1:
                continue
            src = net.layers[src_idx]
            if src.layer.type == "padding":
                if lp.type not in ("conv", "pool"):
                    raise ConvertError(f"V0 padding layer '{src.layer.name}' feeds layer "
                                       f"'{lp.name}' of type '{lp.type}'; only conv and pool "
                                       "layers can absorb padding", where=("layer", lp.name))
                if len(conn.bottom) != 1 or len(src.bottom) != 1 or len(src.top) != 1:
                    raise ConvertError(f"V0 padding layer '{src.layer.name}' must have one "
                                       f"bottom and one top and feed a one-bottom layer "
                                       f"('{lp.name}')", where=("layer", src.layer.name))
                target = out.layers[len(out.layers) - 1]
                target.layer.pad = src.layer.pad
                target.bottom[j] = src.bottom[0]
                log.steps.append(f"V0: padding layer '{src.layer.name}' folded into "
                                 f"'{lp.name}' (pad {src.layer.pad})")
        for blob in conn.top:
            last_top[blob] = i
    return out


def _v0_layer(conn, log: UpgradeLog):
    """Caffe's UpgradeV0LayerParameter: one V0 layer -> one V1 layer."""
    P = pb2()
    v1 = P.V1LayerParameter()
    v1.bottom.extend(conn.bottom)
    v1.top.extend(conn.top)
    if not conn.HasField("layer"):
        return v1
    v0 = conn.layer
    t = v0.type
    if v0.HasField("name"):
        v1.name = v0.name
    if v0.HasField("type"):
        if t not in V0_TYPES:
            raise ConvertError(f"V0 layer '{v0.name}' has type '{t}', which Caffe's upgrade does "
                               f"not know (known V0 types: {', '.join(sorted(V0_TYPES))})",
                               where=("layer", v0.name))
        v1.type = P.V1LayerParameter.LayerType.Value(V0_TYPES[t])
    for b in v0.blobs:
        v1.blobs.add().CopyFrom(b)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)

    def drop(name):
        log.warnings.append(f"layer '{v0.name}': V0 field '{name}' means nothing for type "
                            f"'{t}'; dropped, as Caffe's upgrade drops it")

    def put(name, value, targets):
        """Set ``value`` at the path for this type in ``targets`` (type -> (message, field))."""
        if t not in targets:
            drop(name)
            return
        path, fld = targets[t]
        msg = v1
        for part in path.split("."):
            msg = getattr(msg, part)
        f = msg.DESCRIPTOR.fields_by_name[fld]
        if is_repeated(f):
            getattr(msg, fld).append(value)
        elif f.message_type is not None:
            getattr(msg, fld).CopyFrom(value)
        else:
            setattr(msg, fld, value)

    conv_ip = lambda fld: {"conv": ("convolution_param", fld), "innerproduct": ("inner_product_param", fld)}  # noqa: E731
    conv_pool = lambda fld: {"conv": ("convolution_param", fld), "pool": ("pooling_param", fld)}  # noqa: E731
    data4 = lambda fld: {"data": ("data_param", fld), "hdf5_data": ("hdf5_data_param", fld),  # noqa: E731
                         "images": ("image_data_param", fld), "window_data": ("window_data_param", fld)}
    if v0.HasField("num_output"):
        put("num_output", v0.num_output, conv_ip("num_output"))
    if v0.HasField("biasterm"):
        put("biasterm", v0.biasterm, conv_ip("bias_term"))
    if v0.HasField("weight_filler"):
        put("weight_filler", v0.weight_filler, conv_ip("weight_filler"))
    if v0.HasField("bias_filler"):
        put("bias_filler", v0.bias_filler, conv_ip("bias_filler"))
    if v0.HasField("pad"):
        put("pad", v0.pad, conv_pool("pad"))
    if v0.HasField("kernelsize"):
        put("kernelsize", v0.kernelsize, conv_pool("kernel_size"))
    if v0.HasField("group"):
        put("group", v0.group, {"conv": ("convolution_param", "group")})
    if v0.HasField("stride"):
        put("stride", v0.stride, conv_pool("stride"))
    if v0.HasField("pool"):
        put("pool", P.V0LayerParameter.PoolMethod.Name(v0.pool),
            {"pool": ("pooling_param", "pool")})
    if v0.HasField("dropout_ratio"):
        put("dropout_ratio", v0.dropout_ratio, {"dropout": ("dropout_param", "dropout_ratio")})
    for name in ("local_size", "alpha", "beta", "k"):
        if v0.HasField(name):
            put(name, getattr(v0, name), {"lrn": ("lrn_param", name)})
    if v0.HasField("source"):
        put("source", v0.source, {**data4("source"),
                                  "infogain_loss": ("infogain_loss_param", "source")})
    if v0.HasField("scale"):
        v1.transform_param.scale = v0.scale
    if v0.HasField("meanfile"):
        v1.transform_param.mean_file = v0.meanfile
    if v0.HasField("batchsize"):
        put("batchsize", v0.batchsize, data4("batch_size"))
    if v0.HasField("cropsize"):
        v1.transform_param.crop_size = v0.cropsize
    if v0.HasField("mirror"):
        v1.transform_param.mirror = v0.mirror
    if v0.HasField("rand_skip"):
        put("rand_skip", v0.rand_skip, {"data": ("data_param", "rand_skip"),
                                        "images": ("image_data_param", "rand_skip")})
    if v0.HasField("shuffle_images"):
        put("shuffle_images", v0.shuffle_images, {"images": ("image_data_param", "shuffle")})
    for name in ("new_height", "new_width"):
        if v0.HasField(name):
            put(name, getattr(v0, name), {"images": ("image_data_param", name)})
    if v0.HasField("concat_dim"):
        put("concat_dim", v0.concat_dim, {"concat": ("concat_param", "concat_dim")})
    for v0_name, name in (("det_fg_threshold", "fg_threshold"), ("det_bg_threshold", "bg_threshold"),
                          ("det_fg_fraction", "fg_fraction"), ("det_context_pad", "context_pad"),
                          ("det_crop_mode", "crop_mode")):
        if v0.HasField(v0_name):
            put(v0_name, getattr(v0, v0_name), {"window_data": ("window_data_param", name)})
    if v0.HasField("hdf5_output_param"):
        if t == "hdf5_output":
            v1.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
        else:
            drop("hdf5_output_param")
    for name in ("new_num", "new_channels"):
        if v0.HasField(name):
            drop(name)
    return v1


def upgrade_v0(net, log: UpgradeLog):
    """Caffe's UpgradeV0Net: a V0 net -> a V1 net."""
    padded = _v0_padding(net, log)
    out = pb2().NetParameter()
    if padded.HasField("name"):
        out.name = padded.name
    for conn in padded.layers:
        out.layers.add().CopyFrom(_v0_layer(conn, log))
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    log.steps.append(f"V0 -> V1: {len(out.layers)} layers (layers {{ layer {{ ... }} }})")
    return out


# -- V1 data transformation ------------------------------------------------------------------
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_DATA_BLOCKS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                "WINDOW_DATA": "window_data_param"}


def needs_data_upgrade(net) -> bool:
    T = pb2().V1LayerParameter.LayerType
    for l in net.layers:
        block = _DATA_BLOCKS.get(T.Name(l.type)) if l.HasField("type") else None
        if block and any(getattr(l, block).HasField(f) for f in _TRANSFORM_FIELDS):
            return True
    return False


def upgrade_data_transformation(net, log: UpgradeLog) -> None:
    """Caffe's UpgradeNetDataTransformation (in place; V1 nets only)."""
    T = pb2().V1LayerParameter.LayerType
    for l in net.layers:
        block = _DATA_BLOCKS.get(T.Name(l.type)) if l.HasField("type") else None
        if not block:
            continue
        src = getattr(l, block)
        dst = l.transform_param
        src.SetInParent()  # Caffe's mutable_*() creates both messages
        dst.SetInParent()
        for f in _TRANSFORM_FIELDS:
            if src.HasField(f):
                setattr(dst, f, getattr(src, f))
                src.ClearField(f)
    log.steps.append("V1 data layers: scale/mean_file/crop_size/mirror moved to transform_param")


# -- V1 -> current ---------------------------------------------------------------------------
def upgrade_v1_layer(v1, log: UpgradeLog):
    """Caffe's UpgradeV1LayerParameter."""
    P = pb2()
    lp = P.LayerParameter()
    lp.bottom.extend(v1.bottom)
    lp.top.extend(v1.top)
    if v1.HasField("name"):
        lp.name = v1.name
    for r in v1.include:
        lp.include.add().CopyFrom(r)
    for r in v1.exclude:
        lp.exclude.add().CopyFrom(r)
    if v1.HasField("type"):
        lp.type = V1_TYPE_NAMES[P.V1LayerParameter.LayerType.Name(v1.type)]
    for b in v1.blobs:
        lp.blobs.add().CopyFrom(b)

    def spec(i):
        while len(lp.param) <= i:
            lp.param.add()
        return lp.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = P.ParamSpec.DimCheckMode.Value(
            P.V1LayerParameter.DimCheckMode.Name(mode))
    for i, v in enumerate(v1.blobs_lr):
        spec(i).lr_mult = v
    for i, v in enumerate(v1.weight_decay):
        spec(i).decay_mult = v
    lp.loss_weight.extend(v1.loss_weight)
    for name in _V1_COPIED:
        if v1.HasField(name):
            getattr(lp, name).CopyFrom(getattr(v1, name))
    if v1.HasField("layer"):
        log.warnings.append(f"layer '{v1.name}': a V0 'layer' block inside a V1 layer; ignored, "
                            "as Caffe ignores it")
    return lp


def upgrade_v1(net, log: UpgradeLog):
    """Caffe's UpgradeV1Net: ``layers`` (V1) -> ``layer``."""
    if len(net.layer):
        raise ConvertError("the file has both 'layer' (current) and 'layers' (V1) entries; Caffe "
                           "would ignore the 'layer' ones. Use one format", where=("key", "layers"))
    out = pb2().NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    del out.layer[:]
    for v1 in net.layers:
        out.layer.add().CopyFrom(upgrade_v1_layer(v1, log))
    log.steps.append(f"V1 -> current: {len(out.layer)} layers (type enums -> names, "
                     "blobs_lr/weight_decay -> param {lr_mult, decay_mult})")
    return out


# -- input header, BatchNorm -------------------------------------------------------------------
def upgrade_input(net, log: UpgradeLog) -> None:
    """Caffe's UpgradeNetInput (in place): the ``input`` header becomes an Input layer first."""
    if not len(net.input):
        return
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        P = pb2()
        layer = P.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            if has_shape:
                layer.input_param.shape.add().CopyFrom(net.input_shape[i])
            else:
                layer.input_param.shape.add().dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer] + [P.LayerParameter.FromString(l.SerializeToString()) for l in net.layer]
        del net.layer[:]
        for l in layers:
            net.layer.add().CopyFrom(l)
        log.steps.append(f"input header -> Input layer 'input' (tops {', '.join(net.input)})")
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_batchnorm(net, log: UpgradeLog) -> None:
    """Caffe's UpgradeNetBatchNorm (in place): 3 param specs on BatchNorm -> lr/decay 0."""
    for lp in net.layer:
        if lp.type == "BatchNorm" and len(lp.param) == 3:
            changed = any(p.lr_mult != 0 or p.decay_mult != 0 for p in lp.param)
            for p in lp.param:
                p.lr_mult = 0.0
                p.decay_mult = 0.0
            if changed:
                log.steps.append(f"BatchNorm '{lp.name}': param lr_mult/decay_mult set to 0 "
                                 "(its blobs are statistics, as Caffe's upgrade says)")


def upgrade_net(net, input_layer: bool = False):
    """Return (upgraded copy, UpgradeLog), as Caffe's UpgradeNetAsNeeded reads ``net``.

    ``input_layer``: also turn the legacy input header into an Input layer, as Caffe does
    (netspec reads the header as it is, so by default it stays).
    """
    log = UpgradeLog()
    out = pb2().NetParameter()
    out.CopyFrom(net)
    if needs_v0_upgrade(out):
        out = upgrade_v0(out, log)
    if needs_data_upgrade(out):
        upgrade_data_transformation(out, log)
    if len(out.layers):
        out = upgrade_v1(out, log)
    if input_layer:
        upgrade_input(out, log)
    upgrade_batchnorm(out, log)
    return out, log


def upgrade_solver(solver):
    """Return (upgraded copy, steps): Caffe's UpgradeSolverType (enum solver_type -> type)."""
    out = pb2().SolverParameter()
    out.CopyFrom(solver)
    steps = []
    if out.HasField("solver_type"):
        if out.HasField("type"):
            raise ConvertError("the solver sets both solver_type (old enum) and type; Caffe "
                               "refuses that too. Keep one", field="solver_type",
                               where=("key", "solver_type"))
        name = SOLVER_TYPE_NAMES[pb2().SolverParameter.SolverType.Name(out.solver_type)]
        out.type = name
        out.ClearField("solver_type")
        steps.append(f"solver_type enum -> type: {name}")
    return out, steps
