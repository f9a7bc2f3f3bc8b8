"""Classify images with a trained deploy net: ``netspec.predict`` and ``netspec predict``.

The pipeline is pycaffe's ``caffe.Classifier`` (BVLC ``python/caffe/classifier.py`` and
``python/classify.py``), with ``netspec/images.py`` doing each step:

1. decode every image as H×W×K float32 in [0, 1] (K = 3, RGB; K = 1 when the net's input has
   one channel), or take the images of a ``.npy`` (see ``read_npy``);
2. resize to ``image_dims`` (default: the input's H×W), then cut the centre crop of the input's
   size, or the ten crops of ``oversample`` whose scores are averaged;
3. ``Transformer``: H×W×K -> K×H×W, channels reordered by ``channel_swap`` (default 2,1,0 for
   three channels: RGB -> Caffe's BGR), ``x·raw_scale − mean``, then ``·scale``
   (``input_scale``): a net trained on bytes scaled by ``transform_param.scale`` s wants
   ``raw_scale 255, scale s``;
4. forward in batches of ``batch``; the probabilities are the output made by a Softmax layer
   (or the blob named by ``output``), and each input gets its ``top_k`` classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.sources import load_mean_file
from .errors import DataError, ShapeError, SpecError
from .images import Transformer, classifier_crops, load_image
from .model import Model, load

#: file suffixes taken from a directory (lower case)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm")

#: layer types whose output is read as class probabilities without ``output``
PROBABILITY_LAYERS = ("Softmax",)


@dataclass(frozen=True)
class Prediction:
    """The ``top_k`` classes of one input, most probable first."""
    input: str                 # the file, or ``file.npy[i]``
    classes: list[int]         # class indices
    probabilities: list[float]
    labels: list[str] | None = field(default=None)  # the labels file's lines for ``classes``

    def as_dict(self) -> dict:
        top = [{"class": c, "probability": p} for c, p in zip(self.classes, self.probabilities)]
        if self.labels is not None:
            for t, label in zip(top, self.labels):
                t["label"] = label
        return {"input": self.input, "top": top}


@dataclass(frozen=True)
class _Item:
    """One input: an image file, or image ``index`` of a ``.npy``."""
    path: Path
    index: int | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.index is None else f"{self.path}[{self.index}]"


# -- inputs ---------------------------------------------------------------------------------------
def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory becomes its image files (``IMAGE_SUFFIXES``, not recursive),
    sorted by name."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this directory",
                                file=str(p))
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise DataError("no such file or directory", file=str(p))
    if not out:
        raise DataError("no inputs: give image files, directories of images or .npy files")
    return out


def read_npy(path: Path, channels: int) -> np.ndarray:
    """The images of a ``.npy`` as N×H×W×K float32, K = ``channels``.

    Layouts: N×H×W×K or N×K×H×W (4-D; the last axis is the channels when it has K entries);
    H×W×K or K×H×W (one image; for K = 1 another 3-D array is N×H×W, a stack of grey images);
    H×W (one grey image). uint8 values are divided by 255; other values are taken as they are,
    in the [0, 1] of a decoded image, so the same ``raw_scale`` applies to both.
    """
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the .npy: {e}", file=str(path)) from None
    shape, k = a.shape, channels
    if a.ndim == 4 and shape[3] == k:
        pass
    elif a.ndim == 4 and shape[1] == k:
        a = a.transpose(0, 2, 3, 1)
    elif a.ndim == 3 and shape[2] == k:
        a = a[None]
    elif a.ndim == 3 and shape[0] == k:
        a = a.transpose(1, 2, 0)[None]
    elif a.ndim == 3 and k == 1:
        a = a[..., None]
    elif a.ndim == 2 and k == 1:
        a = a[None, :, :, None]
    else:
        raise ShapeError(f"an array of shape {shape} holds no images of {k} channel(s) "
                         f"(N×H×W×{k}, N×{k}×H×W, H×W×{k} or {k}×H×W)", file=str(path))
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255)
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"the array holds {a.dtype}, not numbers", file=str(path))
    return a.astype(np.float32)


def read_labels(path: str | Path, classes: int) -> list[str]:
    """One label per line (``synset_words.txt``: ``n01440764 tench, Tinca tinca``), line i for
    class i; trailing empty lines are ignored."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read the labels file: {e.strerror or e}", file=str(path)) from None
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != classes:
        raise DataError(f"{len(lines)} labels (one per line) for a net with {classes} classes: "
                        "line i must name class i", file=str(path))
    return [line.strip() for line in lines]


def read_mean(mean_file: str | Path | None, mean_value: Sequence[float] | None,
              input_shape: tuple[int, ...]) -> np.ndarray | None:
    """The mean to subtract, K×H×W for the net's input (K×H×W of ``input_shape``).

    ``mean_file``: Caffe's ``.binaryproto`` or a ``.npy`` (K×H×W or K values); a mean image
    larger than the input gives its centre (as Caffe's TEST-phase data layer subtracts it under
    ``crop_size``). ``mean_value``: one value per channel, or one for all.
    """
    k, h, w = input_shape[1:]
    if mean_file is not None and mean_value is not None:
        raise SpecError("give a mean file or mean values, not both")
    if mean_value is not None:
        mv = np.asarray(mean_value, np.float32).reshape(-1)
        if mv.size not in (1, k):
            raise ShapeError(f"{mv.size} mean values for an input of {k} channel(s): give "
                             f"{k} (in the net's channel order) or one")
        return np.broadcast_to(mv[:, None, None], (k, h, w)).astype(np.float32)
    if mean_file is None:
        return None
    path = Path(mean_file)
    if path.suffix.lower() == ".npy":
        try:
            mean = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read the mean: {e}", file=str(path)) from None
        if mean.ndim == 1 and mean.size == k:
            return read_mean(None, mean, input_shape)
    else:
        mean = load_mean_file(path)
    if mean.ndim == 2:
        mean = mean[None]
    if mean.ndim != 3 or mean.shape[0] != k or mean.shape[1] < h or mean.shape[2] < w:
        _bad_mean(path, mean.shape, input_shape)
    top, left = (mean.shape[1] - h) // 2, (mean.shape[2] - w) // 2
    return np.ascontiguousarray(mean[:, top:top + h, left:left + w])


def _bad_mean(path: Path, shape: tuple, input_shape: tuple) -> None:
    k, h, w = input_shape[1:]
    raise ShapeError(f"the mean has shape {'×'.join(map(str, shape))}; the net's input is "
                     f"{k}×{h}×{w}: a mean image needs {k} channels and at least {h}×{w} "
                     "(its centre is used), or give --mean-value", file=str(path))


# -- the net ---------------------------------------------------------------------------------------
def probability_output(model: Model, output: str | None = None) -> str:
    """The blob read as class probabilities: ``output``, else the one net output made by a
    Softmax layer."""
    if output is not None:
        if output not in model.net.blobs:
            raise SpecError(f"the net has no blob '{output}' (outputs: {', '.join(model.outputs)})")
        return output
    made_by = {t.name: layer.type_name for layer, tops in zip(model.net.layers, model.net.tops)
               for t in tops}
    found = [n for n in model.outputs if made_by.get(n) in PROBABILITY_LAYERS]
    if len(found) == 1:
        return found[0]
    outs = ", ".join(f"'{n}' ({made_by.get(n)})" for n in model.outputs) or "none"
    if not found:
        raise SpecError(f"the net has no probability output: its outputs are {outs}, none made "
                        "by a Softmax layer. Add a Softmax layer on the class scores (a deploy "
                        "net's 'prob'), or name the blob to rank with --output",
                        file=model.source or None)
    raise SpecError(f"the net has several Softmax outputs ({', '.join(found)}): choose one with "
                    "--output", file=model.source or None)


def _input_blob(model: Model) -> tuple[str, tuple[int, ...]]:
    if len(model.inputs) != 1:
        raise SpecError(f"predict needs a deploy net with one Input layer top; this net has "
                        f"{len(model.inputs) or 'no'} input blob(s) "
                        f"{'(' + ', '.join(model.inputs) + ')' if model.inputs else ''}: "
                        "convert the train net's data layer into an Input layer",
                        file=model.source or None)
    name = model.inputs[0]
    shape = tuple(model.net.blobs[name].shape)
    if len(shape) != 4:
        raise ShapeError(f"input '{name}' has shape {shape}; images need N×K×H×W",
                         file=model.source or None)
    return name, shape


def make_transformer(input_name: str, input_shape: tuple[int, ...], *, mean=None,
                     raw_scale: float | None = 255.0, scale: float | None = None,
                     channel_swap: Sequence[int] | None = None) -> Transformer:
    """The ``Transformer`` for ``input_name``: transpose to K×H×W, ``channel_swap`` (default
    2,1,0 for three channels, none otherwise), ``raw_scale``, ``mean`` (K×H×W), ``scale``."""
    k = input_shape[1]
    t = Transformer({input_name: input_shape})
    t.set_transpose(input_name, (2, 0, 1))
    if channel_swap is None and k == 3:
        channel_swap = (2, 1, 0)
    if channel_swap is not None:
        if sorted(channel_swap) != list(range(k)):
            raise ShapeError(f"channel swap {','.join(map(str, channel_swap))} is not an order "
                             f"of the input's {k} channel(s) (e.g. "
                             f"{','.join(map(str, reversed(range(k))))})")
        t.set_channel_swap(input_name, tuple(channel_swap))
    if raw_scale is not None:
        t.set_raw_scale(input_name, raw_scale)
    if mean is not None:
        t.set_mean(input_name, mean)
    if scale is not None:
        t.set_input_scale(input_name, scale)
    return t


# -- predict ---------------------------------------------------------------------------------------
def predict(model: str | Path | Model, weights: str | Path | None = None,
            inputs: Iterable[str | Path] = (), *, mean_file: str | Path | None = None,
            mean_value: Sequence[float] | None = None, raw_scale: float | None = 255.0,
            scale: float | None = None, channel_swap: Sequence[int] | None = None,
            labels: str | Path | None = None, top_k: int = 5, batch: int | None = None,
            image_dims: Sequence[int] | None = None, oversample: bool = False,
            output: str | None = None, gpu: bool = False,
            progress: Callable[[int, int], None] | None = None) -> list[Prediction]:
    """The ``top_k`` classes of every input (image files, directories of them, ``.npy``
    arrays), by the deploy net ``model`` (a file, or a ``Model``) with ``weights``; the steps
    and options are the module docstring's. ``batch``: images per forward (default: the
    input's batch size, at most the number of inputs; a ``Model`` given is reshaped to it);
    ``progress(done, total)`` is called after each batch."""
    if top_k < 1:
        raise SpecError(f"top_k must be at least 1, not {top_k}")
    # a net loaded here runs whole forwards and is read at its output: its blobs share memory
    m = model if isinstance(model, Model) else load(model, weights, gpu=gpu,
                                                    keep_blobs=[] if output is None else None)
    if isinstance(model, Model) and weights is not None:
        m.load_weights(weights)
    in_name, in_shape = _input_blob(m)
    out_name = probability_output(m, output)
    out_shape = tuple(m.net.blobs[out_name].shape)
    if len(out_shape) < 2 or any(d != 1 for d in out_shape[2:]):
        raise ShapeError(f"'{out_name}' has shape {out_shape}: predict ranks one score per "
                         "class (N×classes, or N×classes×1×1)", file=m.source or None)
    names = read_labels(labels, out_shape[1]) if labels is not None else None
    transformer = make_transformer(in_name, in_shape, raw_scale=raw_scale, scale=scale,
                                   channel_swap=channel_swap,
                                   mean=read_mean(mean_file, mean_value, in_shape))
    k = in_shape[1]
    items: list[_Item] = []
    arrays: dict[Path, np.ndarray] = {}
    for p in expand_inputs(inputs):
        if p.suffix.lower() == ".npy":
            arrays[p] = read_npy(p, k)
            items.extend(_Item(p, i) for i in range(len(arrays[p])))
        elif k not in (1, 3):
            raise ShapeError(f"the net's input has {k} channels; image files give 1 or 3: "
                             "pass the images as a .npy", file=str(p))
        else:
            items.append(_Item(p))
    crops = 10 if oversample else 1
    size = int(batch) if batch is not None else min(in_shape[0], len(items) * crops)
    if size < 1:
        raise SpecError(f"batch must be at least 1, not {batch}")
    if size != in_shape[0]:
        m.reshape(**{in_name: (size, *in_shape[1:])})
        in_shape = (size, *in_shape[1:])
    dims = tuple(image_dims) if image_dims else in_shape[2:]
    per_step = max(1, size // crops)
    probs = []
    for start in range(0, len(items), per_step):
        chunk = items[start:start + per_step]
        images = [arrays[it.path][it.index] if it.index is not None
                  else load_image(it.path, color=k == 3) for it in chunk]
        x = transformer.preprocess_batch(in_name, classifier_crops(images, dims, in_shape[2:],
                                                                   ten_crops=oversample))
        p = m.forward_all(**{in_name: x}, blobs=[out_name])[out_name]
        p = p.reshape(len(chunk), crops, -1).mean(axis=1)
        probs.append(p)
        if progress is not None:
            progress(start + len(chunk), len(items))
    return rank(np.concatenate(probs), [it.name for it in items], top_k, names)


def rank(probabilities: np.ndarray, names: Sequence[str], top_k: int,
         labels: Sequence[str] | None = None) -> list[Prediction]:
    """N×classes ``probabilities`` -> one ``Prediction`` per row: its ``top_k`` classes (ties
    in class order)."""
    k = min(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(probabilities, order, axis=1)
    return [Prediction(name, [int(c) for c in cls], [float(v) for v in val],
                       [labels[c] for c in cls] if labels is not None else None)
            for name, cls, val in zip(names, order, top)]
