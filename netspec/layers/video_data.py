"""SSD's VideoData layer (weiliu89/caffe): frames of a webcam or a video file, read with
OpenCV's VideoCapture."""

from __future__ import annotations

import numpy as np

from ..data.sources import resolve_file
from ..data.ssd_augment import draw_modes, resize_policy
from ..errors import DataError
from ..spec.params.common import DEEPLAB_TRANSFORM_FIELDS, SSD_TRANSFORM_FIELDS
from .data import Data
from .registry import register

#: the extra that installs OpenCV (pyproject.toml)
OPENCV_EXTRA = "compare"


def _cv2(layer):
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        raise layer.error("VideoData reads frames with OpenCV, which is not installed: "
                          f"pip install 'netspec[{OPENCV_EXTRA}]'", field="video_data_param",
                          cls=DataError) from None
    return cv2


@register("VideoData")
class VideoData(Data):
    """Frames (batch, 3, H, W) from ``video_data_param``: ``video_type: WEBCAM`` opens camera
    ``device_id``; ``VIDEO`` the file ``video_file`` (relative to the net file's folder, else
    the working directory). Tops: data, and label (batch,) of 0 (as SSD).

    As SSD's ``VideoDataLayer``: the first frame sets the shape when the layer is built (a
    video then starts again from its first frame; a webcam's first frame is used up); each
    forward reads ``batch_size`` frames in order, BGR 8-bit as OpenCV decodes them, after
    skipping ``skip_frames`` frames before each (SSD's proto: "frames to be skipped before
    processing a frame"; skipped frames count toward the end). At the end of a video SSD
    stops the process (SIGINT); netspec raises a DataError naming the file and the number of
    frames. Transform as SSD's DataTransformer of an image: ``resize_param`` (its first
    policy: WARP, FIT_LARGE_SIZE_AND_PAD or FIT_SMALL_SIZE, an ``interp_mode`` drawn per frame
    — ``ssd_augment.resize_policy``), then ``crop_size``, ``mirror`` (TRAIN), mean and scale
    as the Data layer. SSD's random steps (distortion, expansion, noise) are AnnotatedData's
    and refused here.
    """

    extra_blocks = ("video_data_param",)
    max_tops = 2

    def setup(self, bottom_shapes):
        vp = self.lp.video_data_param
        self.video_type = vp.video_type if vp is not None else "WEBCAM"
        self.skip = vp.skip_frames if vp is not None else 0
        self.source = self._source(vp)
        self.cap = self._open()
        first = self._read()
        if self.video_type == "VIDEO":        # back to the first frame (SSD: POS_FRAMES 0)
            self.cap.release()
            self.cap = self._open()
            self.total = int(self.cap.get(_cv2(self).CAP_PROP_FRAME_COUNT))
            self.processed = 0
        tp = self.lp.transform_param
        self.policy = tp.resize_param[0] if tp is not None and tp.resize_param else None
        if self.policy is not None and not (self.policy.height and self.policy.width):
            raise self.spec_error(f"{self.policy.resize_mode} needs height and width",
                                  field="transform_param.resize_param.height")
        if self.policy is not None and len(self.policy.pad_value) not in (0, 1, 3):
            raise self.spec_error(f"{len(self.policy.pad_value)} pad_value for 3-channel "
                                  "frames: SSD takes one or one per channel",
                                  field="transform_param.resize_param.pad_value")
        shape = self._resized(first[None]).shape[1:]
        shape = self._setup_transform(tuple(shape), "data_param")
        tops = [(self.p.batch_size,) + tuple(shape)]
        if len(self.lp.top) > 1:
            tops.append((self.p.batch_size,))
        return tops

    def _source(self, vp):
        if self.video_type == "WEBCAM":
            return int(vp.device_id) if vp is not None else 0
        if vp is None or not vp.video_file:
            raise self.spec_error("video_type VIDEO needs video_file (SSD: \"Must provide "
                                  "video file!\")", field="video_data_param.video_file")
        return str(resolve_file(vp.video_file, self.net_dir))

    def _open(self):
        cap = _cv2(self).VideoCapture(self.source)
        if not cap.isOpened():
            what = ("webcam", "video_data_param.device_id") if self.video_type == "WEBCAM" else (
                "video", "video_data_param.video_file")
            raise self.error(f"cannot open {what[0]} {self.source}", field=what[1],
                             cls=DataError)
        return cap

    def _read(self) -> np.ndarray:
        """The next frame as uint8 (3, H, W) BGR."""
        ok, frame = self.cap.read()
        if not ok or frame is None:
            raise self.error(f"could not read a frame from {self.source}",
                             field="video_data_param", cls=DataError)
        if frame.ndim == 2:
            frame = frame[:, :, None].repeat(3, 2)
        return frame.transpose(2, 0, 1)

    def _next_frame(self) -> np.ndarray:
        for _ in range(self.skip + 1):
            if self.video_type == "VIDEO":
                if self.processed >= self.total:
                    raise self.error(f"the video's {self.total} frames are all read (SSD stops "
                                     "the run here)", field="video_data_param.video_file",
                                     cls=DataError)
                self.processed += 1
            frame = self._read()
        return frame

    def _resized(self, frames: np.ndarray) -> np.ndarray:
        """SSD's ApplyResize of uint8 frames (n, 3, h, w) by the first resize policy."""
        if self.policy is None:
            return frames
        n, _, h, w = frames.shape
        sizes = np.tile([h, w], (n, 1))
        rect = np.concatenate([np.zeros_like(sizes), sizes], 1)
        modes = draw_modes(self.rng, self.policy.interp_mode or ["LINEAR"], n)
        return resize_policy(frames, sizes, np.zeros_like(sizes), rect, self.policy,
                             np.zeros(3, np.int32), modes)

    def _refuse_fork_transform_fields(self) -> None:
        """SSD's DataTransformer of an image reads resize_param (and noise_param, refused
        unless its probability is 0); the other SSD fields are AnnotatedData's."""
        tp = self.lp.transform_param
        if tp is None:
            return
        if tp.noise_param is not None and tp.noise_param.prob > 0:
            raise self.spec_error("random noise (prob > 0); netspec's VideoData does not run it",
                                  field="transform_param.noise_param")
        for f in SSD_TRANSFORM_FIELDS:
            if f not in ("resize_param", "noise_param") and f in tp.model_fields_set:
                raise self.spec_error(f"{f} is read by SSD's AnnotatedData only",
                                      field=f"transform_param.{f}")
        if len(tp.resize_param) > 1:
            raise self.spec_error("several resize_param: SSD's VideoData resizes by one",
                                  field="transform_param.resize_param")
        for f in DEEPLAB_TRANSFORM_FIELDS:
            if f in tp.model_fields_set:
                raise self.spec_error(f"{f} is a field of DeepLab v2's transform, read by its "
                                      "ImageSegData layer only", field=f"transform_param.{f}")

    def forward(self, bottom, top):
        frames = np.stack([self._next_frame() for _ in range(self.p.batch_size)])
        x = self._transform(self._resized(frames))
        if top[0].shape != x.shape:             # FIT_SMALL_SIZE of frames of another size
            top[0].data = self.backend.zeros(x.shape)
            self.reshaped_tops = True
        top[0].data[...] = self.backend.asarray(x)
        if len(top) > 1:
            top[1].data[...] = 0

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
