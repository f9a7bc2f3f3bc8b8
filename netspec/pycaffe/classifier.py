"""pycaffe's ``caffe.Classifier``: a Net that resizes, crops (or oversamples) and preprocesses
H×W×K images and returns the class scores of its first output (BVLC ``classifier.py``)."""

from __future__ import annotations

import numpy as np

from ..images import classifier_crops
from . import io
from .net import Net


class Classifier(Net):
    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        Net.__init__(self, model_file, pretrained_file, "TEST")
        in_ = self.inputs[0]
        self.transformer = io.Transformer({in_: self.blobs[in_].data.shape})
        self.transformer.set_transpose(in_, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(in_, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(in_, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(in_, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(in_, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if not image_dims:
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        """Class scores (N×classes) of the H×W×K images ``inputs``: resized to ``image_dims``,
        then ten crops averaged (``oversample``) or the centre crop."""
        in_ = self.inputs[0]
        crops = classifier_crops(inputs, self.image_dims, self.crop_dims, ten_crops=oversample)
        caffe_in = self.transformer.preprocess_batch(in_, crops)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
