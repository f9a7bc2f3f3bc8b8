"""``netspec test --model NET --weights W``: score a trained model (Caffe's ``caffe test``)."""

from __future__ import annotations

import click
import numpy as np

from .. import workflows
from ..log import CaffeLog, fmt
from .options import friendly, threads_option


@click.command("test")
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False), help="Network YAML or Caffe .prototxt.")
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Weights (.npz or .caffemodel).")
@click.option("--allow-partial", is_flag=True,
              help="Accept weights that lack some of the net's blobs (new or renamed layers "
                   "keep their fillers' values); without it that is an error.")
@click.option("--iterations", default=50, show_default=True, help="Number of batches to average.")
@click.option("--gpu", is_flag=True, help="Run on the GPU with CuPy.")
@click.option("--phase", type=click.Choice(["TEST", "TRAIN"]), default="TEST", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a layer field.")
@click.option("--ap-version", type=click.Choice(["Integral", "MaxIntegral", "11point"]),
              default="Integral", show_default=True,
              help="How a DetectionEvaluate output's mean average precision is computed (SSD's "
                   "ap_version).")
@threads_option
@friendly
def command(model, weights, allow_partial, iterations, gpu, phase, sets, ap_version):
    """Score a trained model: average each net output over ITERATIONS batches (a
    DetectionEvaluate output: its mAP over them)."""
    scores = workflows.score(model, weights, iterations=iterations, gpu=gpu, phase=phase, sets=sets,
                             allow_partial=allow_partial, ap_version=ap_version)
    log = CaffeLog()
    if scores.missing:
        log.warn(f"not in {weights}, left as initialised: {', '.join(scores.missing)}")
    for name, mean in scores.outputs.items():
        for v in np.reshape(mean, -1):
            log.info(f"{name} = {fmt(float(v))}", "caffe.cpp")
