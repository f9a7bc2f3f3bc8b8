"""Data-layer messages: Input, Data, DummyData, MemoryData, ImageData, WindowData, HDF5Data,
HDF5Output; SegNet's DenseImageData; SSD's AnnotatedData; DeepLab v2's ImageSegData, MatRead,
MatWrite.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, NonNegativeInt

from ..base import Message, Repeated
from .common import BlobShape, FillerParameter


class InputParameter(Message):
    shape: Repeated[BlobShape] = Field(default_factory=list)


class DataParameter(Message):
    """Caffe's DataParameter plus netspec's ``split`` and ``shuffle`` for built-in/npz sources.

    ``source``: ``builtin:mnist``, a ``.npz`` with arrays ``data`` and ``label``, a directory
    holding MNIST IDX files, or a Caffe LevelDB or LMDB of Datum records (``backend``).
    ``shuffle`` (netspec): reshuffle the order every epoch (Caffe's Data layer reads in file
    order, which is the default here too). Data and AnnotatedData need ``source``; SSD's
    VideoData reads only ``batch_size``.
    """

    source: Optional[str] = None
    batch_size: int = Field(gt=0)
    rand_skip: int = 0
    backend: Literal["LEVELDB", "LMDB"] = "LEVELDB"
    scale: float = 1.0
    mean_file: Optional[str] = None
    crop_size: int = 0
    mirror: bool = False
    force_encoded_color: bool = False
    prefetch: int = 4
    split: Literal["train", "test"] = "train"
    shuffle: bool = False
    limit: int = Field(default=0, ge=0, description="netspec: use only the first N records (0 = all)")
    offset: int = Field(default=0, ge=0, description="netspec: skip the first N records")


class DummyDataParameter(Message):
    """``dummy_data_param`` (109): tops of fixed shapes filled by fillers.

    ``shape`` (one for all tops or one per top), or the legacy 4-D ``num``/``channels``/
    ``height``/``width`` (each given once or once per top). ``data_filler``: none (constant 0),
    one for all tops, or one per top.
    """

    data_filler: Repeated[FillerParameter] = Field(default_factory=list)
    shape: Repeated[BlobShape] = Field(default_factory=list)
    num: Repeated[int] = Field(default_factory=list)
    channels: Repeated[int] = Field(default_factory=list)
    height: Repeated[int] = Field(default_factory=list)
    width: Repeated[int] = Field(default_factory=list)


class MemoryDataParameter(Message):
    """``memory_data_param`` (119): batches of (data, label) from arrays set in Python."""

    batch_size: int = Field(default=0, ge=0)
    channels: int = Field(default=0, ge=0)
    height: int = Field(default=0, ge=0)
    width: int = Field(default=0, ge=0)


class ImageDataParameter(Message):
    """``image_data_param`` (115): images listed in a text file, one ``path label`` a line.

    ``source`` is required (Caffe's has no usable default). ``new_height``/``new_width``: resize
    every image (both or neither). ``is_color``: 3 planes (B, G, R) or 1 (grey). ``root_folder``
    is prepended to each listed path, as a string (Caffe: ``root_folder + path``). ``scale``,
    ``mean_file``, ``crop_size`` and ``mirror`` are Caffe's deprecated copies of
    ``transform_param``'s; netspec reads them when ``transform_param`` does not set them.
    ``ignore_label`` and ``label_type`` are DeepLab v2's (its ImageSegData layer: the label of
    padding, and whether a list line's second entry is a label image (PIXEL), a class (IMAGE)
    or absent (NONE)); ImageData refuses them.
    """

    source: str
    batch_size: int = Field(default=1, gt=0)
    rand_skip: int = Field(default=0, ge=0)
    shuffle: bool = False
    new_height: int = Field(default=0, ge=0)
    new_width: int = Field(default=0, ge=0)
    is_color: bool = True
    scale: float = 1.0
    mean_file: Optional[str] = None
    crop_size: int = Field(default=0, ge=0)
    mirror: bool = False
    root_folder: str = ""
    #: DeepLab v2's (15, 16 in the fork and here), read by ImageSegData only
    ignore_label: int = 255
    label_type: Literal["NONE", "IMAGE", "PIXEL"] = "IMAGE"


class DenseImageDataParameter(Message):
    """``dense_image_data_param`` (SegNet, alexgkendall/caffe-segnet; 138 in the fork, where
    BVLC has ``tile_param``: 2138 here): pairs ``image label_image`` listed in a text file.

    ``source`` and ``batch_size`` are required (the fork has no usable defaults).
    ``new_height``/``new_width``: resize both images (both or neither; the label image with
    nearest neighbours). ``crop_height``/``crop_width`` (both or neither): the same random crop
    of both; ``mirror``: the same random left-right flip of both. ``is_color``: 3 planes
    (B, G, R) or 1 (grey). ``root_folder`` is prepended to both paths. ``mean_file`` is declared
    by the fork but never read by its layer.
    """

    source: str
    batch_size: int = Field(gt=0)
    rand_skip: int = Field(default=0, ge=0)
    shuffle: bool = False
    new_height: int = Field(default=0, ge=0)
    new_width: int = Field(default=0, ge=0)
    is_color: bool = True
    mean_file: Optional[str] = None
    root_folder: str = ""
    mirror: bool = False
    crop_width: int = Field(default=0, ge=0)
    crop_height: int = Field(default=0, ge=0)


class WindowDataParameter(Message):
    """``window_data_param`` (129): windows (boxes) of images listed in an R-CNN window file.

    ``source`` (the window file) and ``batch_size`` are required. Each batch holds
    ``int(batch_size · fg_fraction)`` foreground windows (overlap ≥ ``fg_threshold``, their
    class) after the background ones (overlap < ``bg_threshold``, label 0), drawn at random.
    ``crop_mode``: ``warp`` stretches the window to crop_size×crop_size, ``square`` first
    widens its shorter side; ``context_pad`` pixels of the output are context around the
    window. ``scale`` multiplies the mean-subtracted pixels (Caffe's WindowData reads this one,
    not ``transform_param.scale``). ``cache_images`` keeps decoded images in memory.
    ``mean_file``, ``crop_size`` and ``mirror`` are Caffe's deprecated copies of
    ``transform_param``'s; netspec reads them when ``transform_param`` does not set them.
    """

    source: str
    scale: float = 1.0
    mean_file: Optional[str] = None
    batch_size: int = Field(gt=0)
    crop_size: int = Field(default=0, ge=0)
    mirror: bool = False
    fg_threshold: float = 0.5
    bg_threshold: float = 0.5
    fg_fraction: float = Field(default=0.25, ge=0, le=1)
    context_pad: int = Field(default=0, ge=0)
    crop_mode: Literal["warp", "square"] = "warp"
    cache_images: bool = False
    root_folder: str = ""


class MatReadParameter(Message):
    """``mat_read_param`` (DeepLab v2; 151 in the fork and here): blobs read from MATLAB files
    ``prefix + name + '_blob_<top>.mat'``, names from the ``source`` list (first word of each
    line, ``strip`` characters cut from its end), else ``iter_<k>``; ``batch_size`` files a
    forward. ``prefix`` is required (the fork declares it ``required``)."""

    prefix: str
    source: str = ""
    strip: int = Field(default=0, ge=0)
    batch_size: int = Field(default=1, gt=0)


class MatWriteParameter(Message):
    """``mat_write_param`` (DeepLab v2; 145 in the fork, where BVLC has ``parameter_param``:
    2145 here): each bottom written to ``prefix + name + '_blob_<bottom>.mat'`` every
    ``period`` forwards, names as MatRead's. ``prefix`` is required."""

    prefix: str
    source: str = ""
    strip: int = Field(default=0, ge=0)
    period: int = Field(default=1, gt=0)


class HDF5DataParameter(Message):
    """``hdf5_data_param`` (112): ``source`` is a text file listing .h5 files, one per line."""

    source: str
    batch_size: int = Field(gt=0)
    shuffle: bool = False


class HDF5OutputParameter(Message):
    """``hdf5_output_param`` (113): ``file_name``, the .h5 file HDF5Output writes (relative to
    the net file's folder). Caffe's field has no usable default (an empty name fails to open), so
    netspec requires it."""

    file_name: str


class Sampler(Message):
    """SSD's sampler: the scale and aspect-ratio ranges of a sampled crop."""

    min_scale: float = 1.0
    max_scale: float = 1.0
    min_aspect_ratio: float = 1.0
    max_aspect_ratio: float = 1.0


class SampleConstraint(Message):
    """SSD's sample_constraint: overlap and coverage bounds a sampled crop must meet."""

    min_jaccard_overlap: Optional[float] = None
    max_jaccard_overlap: Optional[float] = None
    min_sample_coverage: Optional[float] = None
    max_sample_coverage: Optional[float] = None
    min_object_coverage: Optional[float] = None
    max_object_coverage: Optional[float] = None


class BatchSampler(Message):
    """SSD's batch_sampler: up to ``max_sample`` crops in ``max_trials`` tries."""

    use_original_image: bool = True
    sampler: Optional[Sampler] = None
    sample_constraint: Optional[SampleConstraint] = None
    max_sample: Optional[NonNegativeInt] = None
    max_trials: NonNegativeInt = 100


#: label rows per image with ``yolo_data_type: 1`` (the MobileNet-YOLO fork's fixed 300)
YOLO_ROWS = 300


class AnnotatedDataParameter(Message):
    """SSD's ``annotated_data_param`` (its field 200): random crops (``batch_sampler``), the
    label map file (names of the labels; not read by the layer) and the annotation type."""

    batch_sampler: Repeated[BatchSampler] = Field(default_factory=list)
    label_map_file: Optional[str] = None
    anno_type: Optional[Literal["BBOX"]] = None
    #: eric612/MobileNet-YOLO's fields: ``yolo_data_type: 1`` gives YOLO's labels (N, 1, 300,
    #: 5) [class, x, y, w, h] for its ``Yolov3`` loss, with a random crop of each side in
    #: [1 − ``yolo_data_jitter``, 1] when there is no batch_sampler; ``train_diffcult`` (sic)
    #: false leaves difficult boxes out of them
    yolo_data_type: int = 0
    yolo_data_jitter: float = 0.3
    train_diffcult: bool = True


class VideoDataParameter(Message):
    """SSD's ``video_data_param`` (its field 207): frames from a webcam (``device_id``) or a
    video file (``video_file``), ``skip_frames`` frames skipped before each one read."""

    video_type: Literal["WEBCAM", "VIDEO"] = "WEBCAM"
    device_id: int = 0
    video_file: Optional[str] = None
    skip_frames: NonNegativeInt = 0


#: the Caffe layer types of this family
TYPES = ("Input", "Data", "DummyData", "MemoryData", "ImageData", "WindowData", "HDF5Data", "HDF5Output",
         "DenseImageData", "AnnotatedData", "ImageSegData", "MatRead", "MatWrite", "VideoData",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "input_param": InputParameter,
    "data_param": DataParameter,
    "annotated_data_param": AnnotatedDataParameter,
    "video_data_param": VideoDataParameter,
    "dummy_data_param": DummyDataParameter,
    "memory_data_param": MemoryDataParameter,
    "image_data_param": ImageDataParameter,
    "window_data_param": WindowDataParameter,
    "dense_image_data_param": DenseImageDataParameter,
    "hdf5_data_param": HDF5DataParameter,
    "hdf5_output_param": HDF5OutputParameter,
    "mat_read_param": MatReadParameter,
    "mat_write_param": MatWriteParameter,
}
