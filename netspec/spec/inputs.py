"""A net's inputs as a file declares them, edited: Input layers given other shapes
(``with_input_shapes``), and data layers replaced by Input layers of given or declared shapes
(``stand_in_inputs``), so that a net whose data is not on this machine can still be built,
validated and summarised (``netspec validate/summary --input-shape/--no-data``).
"""

from __future__ import annotations

from ..errors import ShapeError, SpecError
from .net import NetParameter
from .params.common import BlobShape
from .params.data import YOLO_ROWS, InputParameter


def with_input_shapes(param: NetParameter, shapes: dict[str, tuple[int, ...]]) -> NetParameter:
    """A copy of ``param`` whose Input layers (and legacy ``input:`` header) give the blobs
    named in ``shapes`` those shapes; every other input keeps its own."""
    out = param.model_copy(deep=True)
    left = dict(shapes)
    if out.input:
        old = _legacy_shapes(out)
        new = [tuple(left.pop(n, old[i])) for i, n in enumerate(out.input)]
        out.input_shape = [BlobShape(dim=list(s)) for s in new]
        out.input_dim = []
    for lp in out.layer:
        if lp.type != "Input" or lp.input_param is None:
            continue
        tops = list(lp.top)
        if not any(t in left for t in tops):
            continue
        old = [list(s.dim) for s in lp.input_param.shape]
        if len(old) == 1:
            old = old * len(tops)
        lp.input_param.shape = [BlobShape(dim=list(left.pop(t, old[k]))) for k, t in enumerate(tops)]
    if left:
        raise ShapeError(f"{', '.join(left)} {'is' if len(left) == 1 else 'are'} not an input of "
                         "the net (only the tops of Input layers can be reshaped)")
    return out


def _legacy_shapes(param: NetParameter) -> list[tuple[int, ...]]:
    if param.input_shape:
        return [tuple(s.dim) for s in param.input_shape]
    dims = list(param.input_dim)
    return [tuple(dims[4 * i:4 * i + 4]) for i in range(len(param.input))]


#: layers that read their tops from files (or a database) and can be stood in for
DATA_LAYERS = ("Data", "ImageData", "WindowData", "HDF5Data", "AnnotatedData", "ImageSegData",
               "MatRead", "VideoData")
#: SSD's AnnotatedData label top stands in as one box per image: (1, 1, N, 8) rows
#: [item, label, instance, xmin, ymin, xmax, ymax, difficult] (the fork sizes it per batch)
BOX_ROW = 8
#: the declared size of a built-in source: channels, height, width
BUILTIN_SIZES = {"builtin:mnist": (1, 28, 28)}


def stand_in_inputs(param: NetParameter, shapes: dict[str, tuple[int, ...]] | None = None,
                    declared: bool = False) -> tuple[NetParameter, list[str]]:
    """(a copy of ``param``, notes): data layers (``DATA_LAYERS``) replaced by Input layers.

    A data layer with a top named in ``shapes`` stands in with that shape for that top; with
    ``declared``, every data layer stands in with the shapes its fields declare
    (``declared_shapes``). A label top not in ``shapes`` is N (the batch of the layer's first
    top). A name in ``shapes`` that is an Input layer's top reshapes it. One note per stand-in
    says what was assumed.
    """
    shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    out = param.model_copy(deep=True)
    notes: list[str] = []
    used: set[str] = set()
    for i, lp in enumerate(out.layer):
        if lp.type not in DATA_LAYERS or not (declared or any(t in shapes for t in lp.top)):
            continue
        own, assumed = declared_shapes(param, i) if declared else ({}, "")
        tops: list[tuple[int, ...]] = []
        for k, top in enumerate(lp.top):
            if top in shapes:
                tops.append(shapes[top])
                used.add(top)
            elif k > 0 and tops:
                tops.append(own.get(top, _label_shape(lp, tops[0], k)))
            elif top in own:
                tops.append(own[top])
            else:
                raise SpecError(f"layer '{lp.name}' ({lp.type}): the shape of '{top}' is not "
                                f"declared in the file; give it: --input-shape {top}=N,C,H,W",
                                **param.where(("layer", i)))
        phase = f", {', '.join(r.phase for r in lp.include if r.phase)}" if lp.include else ""
        given = [t for t in lp.top if t in shapes]
        source = "as given" if given and len(given) == len(lp.top) else (
            "from --input-shape and the layer's fields" if given else "from the layer's fields")
        notes.append(f"layer '{lp.name}' ({lp.type}{phase}) stands in as an Input layer: "
                     + ", ".join(f"{t} {tuple(s)}" for t, s in zip(lp.top, tops))
                     + f" ({source}{'; ' + assumed if assumed else ''})")
        out.layer[i] = lp.model_copy(update={
            "type": "Input", "input_param": InputParameter(shape=[BlobShape(dim=list(s)) for s in tops]),
            "data_param": None, "image_data_param": None, "window_data_param": None,
            "hdf5_data_param": None, "transform_param": None, "annotated_data_param": None,
            "mat_read_param": None, "video_data_param": None})
    left = {k: v for k, v in shapes.items() if k not in used}
    if left:
        try:
            out = with_input_shapes(out, left)
        except ShapeError:
            data_tops = [t for lp in param.layer if lp.type in (*DATA_LAYERS, "Input") for t in lp.top]
            raise SpecError(f"{', '.join(left)}: not a top of a data or Input "
                            f"layer (those are: {', '.join(dict.fromkeys(data_tops)) or 'none'})",
                            field="--input-shape") from None
    return out, notes


def _label_shape(lp, first: tuple[int, ...], k: int) -> tuple[int, ...]:
    """The stand-in shape of top ``k`` > 0 of data layer ``lp`` whose top 0 is ``first``
    (N, …): (N,); AnnotatedData's box rows, or with MobileNet-YOLO's ``yolo_data_type: 1``
    YOLO's (N, 1, YOLO_ROWS, 5) rows; ImageSegData's label image (N, 1, H, W) and data_dim
    (N, 1, 1, 2)."""
    n = first[0]
    if lp.type == "ImageSegData":
        return (n, 1, *first[2:]) if k == 1 else (n, 1, 1, 2)
    if lp.type != "AnnotatedData":
        return (n,)
    ap = lp.annotated_data_param
    return (n, 1, YOLO_ROWS, 5) if ap is not None and ap.yolo_data_type == 1 else (1, 1, n, BOX_ROW)


def declared_shapes(param: NetParameter, index: int) -> tuple[dict[str, tuple[int, ...]], str]:
    """(top shapes, what was assumed): the shapes the fields of data layer ``index`` declare,
    without reading its data. N from ``batch_size``; H×W from ``crop_size`` (else SSD's
    ``resize_param`` height/width — the first policy's of several —, else ImageData's
    ``new_height``/``new_width``; DeepLab's ImageSegData: ``crop_size`` or
    ``crop_height``×``crop_width``); C from ``is_color`` (ImageData, ImageSegData),
    ``force_gray`` / ``force_color``, a built-in source, else 3 (an assumption, said in the
    second item); other tops by ``_label_shape``. Tops it cannot size (HDF5Data's, MatRead's)
    are absent."""
    lp = param.layer[index]
    tp = lp.transform_param
    block = {"Data": lp.data_param, "ImageData": lp.image_data_param,
             "WindowData": lp.window_data_param, "HDF5Data": lp.hdf5_data_param,
             "AnnotatedData": lp.data_param, "ImageSegData": lp.image_data_param,
             "VideoData": lp.data_param,
             "MatRead": lp.mat_read_param}[lp.type]
    if block is None or lp.type in ("HDF5Data", "MatRead") or not lp.top:
        return {}, ""  # HDF5 datasets have any shape: only --input-shape sizes them
    n = block.batch_size
    crop = (tp.crop_size if tp else 0) or getattr(block, "crop_size", 0)
    size = (crop, crop) if crop else None
    if lp.type == "ImageSegData" and tp is not None and tp.crop_height and tp.crop_width:
        size = (tp.crop_height, tp.crop_width)
    assumed = ""
    policies = tp.resize_param if tp is not None else []
    if size is None and policies and policies[0].height:
        size = (policies[0].height, policies[0].width)   # SSD's resize of every image
        if len(policies) > 1:      # MobileNet-YOLO's multi-scale training starts with the first
            assumed = (f"the first of {len(policies)} resize policies "
                       f"({', '.join(f'{r.height}×{r.width}' for r in policies)}): training "
                       "draws one every 10 batches")
    if lp.type in ("ImageData", "ImageSegData"):
        channels = 3 if block.is_color else 1
        if size is None and block.new_height and block.new_width:
            size = (block.new_height, block.new_width)
    elif tp is not None and (tp.force_gray or tp.force_color):
        channels = 1 if tp.force_gray else 3
    elif lp.type == "VideoData":
        channels = 3                                        # OpenCV decodes frames as BGR
    elif lp.type == "Data" and block.source in BUILTIN_SIZES:
        channels, h, w = BUILTIN_SIZES[block.source]
        size = size or (h, w)
    else:
        channels = 3
        assumed = "; ".join(filter(None, [assumed, "3 channels assumed: the file does not "
                                          "declare them"]))
    out: dict[str, tuple[int, ...]] = {}
    if size is not None:
        out[lp.top[0]] = (n, channels, *size)
    for k, t in enumerate(lp.top[1:], 1):
        if size is not None or lp.type != "ImageSegData":
            out[t] = _label_shape(lp, (n, channels, *(size or ())), k)
    return out, assumed
