"""``netspec predict --model DEPLOY --weights W INPUTS…``: the top classes of images, as
pycaffe's ``classify.py`` computes them; see ``netspec/prediction.py``."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from ..prediction import predict
from ..progress import count_progress
from .options import friendly, threads_option


def _numbers(kind, count: int | None = None):
    """A click type for comma-separated numbers (``count`` of them when given)."""
    class Numbers(click.ParamType):
        name = "LIST"

        def convert(self, value, param, ctx):
            if isinstance(value, tuple):
                return value
            try:
                out = tuple(kind(v) for v in str(value).split(","))
            except ValueError:
                self.fail(f"{value!r} is not a comma-separated list of {kind.__name__}s", param, ctx)
            if count is not None and len(out) != count:
                self.fail(f"{value!r}: give {count} values", param, ctx)
            return out
    return Numbers()


def _probability(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 or p == 0 else f"{p:.1e}"


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--model", required=True, type=click.Path(dir_okay=False),
              help="Deploy net (YAML or Caffe .prototxt) with an Input layer.")
@click.option("--weights", required=True, type=click.Path(dir_okay=False),
              help="Weights (.npz or .caffemodel).")
@click.option("--mean-file", type=click.Path(dir_okay=False),
              help="Mean image to subtract: .binaryproto or .npy (K×H×W; its centre when larger "
                   "than the input, or K values).")
@click.option("--mean-value", type=_numbers(float), metavar="B,G,R",
              help="Per-channel mean to subtract, in the net's channel order (after the swap).")
@click.option("--raw-scale", type=float, default=255.0, show_default=True,
              help="Multiply the [0, 1] pixels by this before subtracting the mean.")
@click.option("--scale", type=float, default=None,
              help="Multiply by this after subtracting the mean (Caffe's input_scale; a net "
                   "trained with transform_param.scale S wants --raw-scale 255 --scale S).")
@click.option("--channel-swap", type=_numbers(int), metavar="2,1,0",
              help="Channel order fed to the net [default: 2,1,0 (RGB to BGR) for three "
                   "channels].")
@click.option("--image-dims", type=_numbers(int, 2), metavar="H,W",
              help="Resize to this before cropping the input's size [default: the input's size].")
@click.option("--oversample", is_flag=True,
              help="Average the scores of ten crops (corners, centre, mirrors) instead of "
                   "the centre crop.")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names, one per line (line i: class i), e.g. synset_words.txt.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes shown per input.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Images per forward pass [default: the input's batch size].")
@click.option("--output", "output", default=None, metavar="BLOB",
              help="Blob to rank [default: the net's Softmax output].")
@click.option("--gpu", is_flag=True, help="Run on the GPU with CuPy.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per input: {input, top: [{class, probability, label}]}.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@threads_option
@friendly
def command(inputs, model, weights, mean_file, mean_value, raw_scale, scale, channel_swap,
            image_dims, oversample, labels, top_k, batch, output, gpu, as_json, quiet):
    """Classify INPUTS (image files, directories of images, .npy arrays of images) with a
    trained deploy net, printing the TOP_K classes and probabilities of each.

    Images are read as RGB in [0, 1] (grey for a one-channel input), resized to --image-dims,
    centre-cropped to the input's size, channel-swapped, times --raw-scale, minus the mean,
    times --scale: pycaffe's Classifier. A .npy holds N×H×W×K (or N×K×H×W) images in [0, 1]
    (uint8: 0..255).
    """
    with count_progress("predict", quiet=quiet) as progress:
        results = predict(model, weights, inputs, mean_file=mean_file, mean_value=mean_value,
                          raw_scale=raw_scale, scale=scale, channel_swap=channel_swap,
                          labels=labels, top_k=top_k, batch=batch, image_dims=image_dims,
                          oversample=oversample, output=output, gpu=gpu, progress=progress)
    if as_json:
        for r in results:
            click.echo(json.dumps(r.as_dict()))
        return
    table = Table(show_edge=False, pad_edge=False, box=None)
    for name in ("input", "rank", "class", *(["label"] if labels else []), "probability"):
        table.add_column(name, justify="right" if name in ("rank", "class", "probability") else "left")
    for r in results:
        for i, (c, p) in enumerate(zip(r.classes, r.probabilities)):
            label = [r.labels[i]] if r.labels is not None else []
            table.add_row(r.input if i == 0 else "", str(i + 1), str(c), *label, _probability(p))
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that names never wrap
        console = Console(width=max(console.width, 200))
    console.print(table)
