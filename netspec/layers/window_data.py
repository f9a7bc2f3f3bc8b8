"""WindowData: Caffe's layer that samples windows (boxes) of images listed in an R-CNN window
file, warped to a fixed size (R-CNN's fine-tuning input)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..data.image_list import decode_image, find_image, load_image, resize_linear
from ..data.sources import resolve_file
from ..data.window_file import read_window_file
from ..errors import DataError
from .data import Data
from .registry import register


class Warp(NamedTuple):
    """Where a window goes: the image region ``x1..x2``, ``y1..y2`` (inclusive) is resized to
    ``height``×``width`` and put at row ``pad_h``, column ``pad_w`` of the crop×crop output."""

    x1: int
    y1: int
    x2: int
    y2: int
    height: int
    width: int
    pad_h: int
    pad_w: int


def _round(v) -> int:
    """C's ``round``: halves away from zero."""
    v = float(v)
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def warp_geometry(box, rows: int, cols: int, crop: int, context_pad: int = 0,
                  square: bool = False, mirror: bool = False) -> Warp:
    """Caffe's ``WindowDataLayer::load_batch`` geometry for the window ``box`` (x1, y1, x2, y2)
    of a rows×cols image, in the same float32 arithmetic and C rounding.

    ``warp`` without ``context_pad``: the window itself, stretched to crop×crop. Otherwise the
    window is grown about its centre (``square``: its shorter side first made as long as the
    longer) by crop / (crop − 2·context_pad), so that after warping ``context_pad`` output
    pixels on each side show context; the part outside the image is cut off and its share of
    the output left as padding (on the other side when ``mirror``ed).
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    if not (context_pad > 0 or square):
        return Warp(x1, y1, x2, y2, crop, crop, 0, 0)
    f = np.float32
    context_scale = f(crop) / f(crop - 2 * context_pad)
    half_h = f((y2 - y1 + 1) / 2.0)
    half_w = f((x2 - x1 + 1) / 2.0)
    cx = f(x1) + half_w
    cy = f(y1) + half_h
    if square:
        if half_h > half_w:
            half_w = half_h
        else:
            half_h = half_w
    x1 = _round(cx - half_w * context_scale)
    x2 = _round(cx + half_w * context_scale)
    y1 = _round(cy - half_h * context_scale)
    y2 = _round(cy + half_h * context_scale)
    # the grown region may leave the image: clip it, remembering how much was cut on each side
    unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
    cut_x1, cut_y1 = max(0, -x1), max(0, -y1)
    cut_x2, cut_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
    x1, x2, y1, y2 = x1 + cut_x1, x2 - cut_x2, y1 + cut_y1, y2 - cut_y2
    scale_x = f(crop) / f(unclipped_w)
    scale_y = f(crop) / f(unclipped_h)
    width = _round(f(x2 - x1 + 1) * scale_x)
    height = _round(f(y2 - y1 + 1) * scale_y)
    pad_h = _round(f(cut_y1) * scale_y)
    pad_w = _round(f(cut_x2 if mirror else cut_x1) * scale_x)
    # rounding may overshoot the crop by a pixel
    height = min(height, crop - pad_h)
    width = min(width, crop - pad_w)
    return Warp(x1, y1, x2, y2, height, width, pad_h, pad_w)


@register("WindowData")
class WindowData(Data):
    """Batches of (data, label) sampled from the windows of a window file (Caffe's WindowData).

    ``window_data_param.source``: the window file (``netspec.data.window_file``), relative to
    the net file's folder, then the working directory. Each image is ``root_folder + path``
    (string concatenation, as in Caffe), found as ImageData finds its images; every image must
    exist when the net is built, and is read with Pillow (in colour, B, G, R planes, as OpenCV's
    ``IMREAD_COLOR``) each time one of its windows is drawn (``cache_images``: the files' bytes
    are read once, at set-up, and decoded each time, as Caffe does).

    Windows with overlap ≥ ``fg_threshold`` are foreground (their class index, which must be
    > 0), those with overlap < ``bg_threshold`` background (label 0), the rest unused. Every
    batch is ``batch_size − int(batch_size · fg_fraction)`` background windows then
    ``int(batch_size · fg_fraction)`` foreground ones, each drawn uniformly at random (with
    replacement) by the net's random generator, in TRAIN and TEST alike (as Caffe).

    Each window is warped to crop×crop (``transform_param.crop_size``, required) by
    ``warp_geometry`` and OpenCV's bilinear resize (``image_list.resize_linear``), flipped
    left-right at random when ``mirror`` (in TEST too, as Caffe), then
    out = (pixel − mean) · ``window_data_param.scale``, where mean is the central crop×crop of
    ``mean_file`` at the output position (not mirrored with the window) or ``mean_value`` per
    channel; output pixels outside the warped window (context cut off at the image border)
    are 0. Tops: data (batch, 3, crop, crop), label (batch,) as floats.
    """

    param_block = "window_data_param"
    exact_tops = 2
    min_tops = 2
    max_tops = 2

    def setup(self, bottom_shapes):
        p = self.p
        tp = self.lp.transform_param
        self._refuse_fork_transform_fields()
        self.crop = (tp.crop_size if tp else 0) or p.crop_size
        if self.crop <= 0:
            raise self.spec_error("needs transform_param.crop_size > 0: the size every window is "
                                  "warped to", field="transform_param.crop_size")
        if tp is not None and "scale" in tp.model_fields_set and tp.scale != 1.0:
            raise self.spec_error(
                "Caffe's WindowData does not read transform_param.scale (it scales by "
                "window_data_param.scale, and Caffe's upgrade of a V1 file moves that value "
                "here, where it is then ignored): set window_data_param.scale to scale the "
                "data, or remove transform_param.scale to get Caffe's unscaled output",
                field="transform_param.scale")
        if 2 * p.context_pad >= self.crop:
            raise self.spec_error(f"context_pad {p.context_pad} leaves no room for the window "
                                  f"in crop_size {self.crop} (it must be below crop_size / 2)",
                                  field="window_data_param.context_pad")
        self.mirror = (tp.mirror if tp else False) or p.mirror
        self.scale = p.scale
        self._read_windows()
        self._setup_mean(tp)
        return [(p.batch_size, 3, self.crop, self.crop), (p.batch_size,)]

    # -- set-up ---------------------------------------------------------------------------
    def _fail(self, message: str, field: str = "window_data_param.source"):
        return self.error(message, field=field, cls=DataError)

    def _read_windows(self) -> None:

        p = self.p
        net_dir = self.net_dir
        try:
            self.win = win = read_window_file(resolve_file(p.source, net_dir))
            self.files = [find_image(p.root_folder + im.path, win.path, net_dir, im.line)
                          for im in win.images]
        except DataError as e:
            raise self._fail(e.format()) from None
        for n, im in enumerate(win.images):
            if im.channels != 3:
                raise self._fail(f"{win.path}:{im.line}: image {n} ('{im.path}') has {im.channels} "
                                 "channels; WindowData reads every image in colour (3 planes, "
                                 "B, G, R) and takes the data top's channels from the file")
        fg = win.overlap >= np.float32(p.fg_threshold)
        bg = ~fg & (win.overlap < np.float32(p.bg_threshold))
        bad = np.flatnonzero(fg & (win.label <= 0))
        if bad.size:
            k = int(bad[0])
            raise self._fail(f"{win.path}:{win.line[k]}: a window with overlap "
                             f"{win.overlap[k]:g} ≥ fg_threshold {p.fg_threshold:g} is foreground, "
                             f"so its class index must be > 0 (0 is background), not "
                             f"{win.label[k]}")
        self.fg, self.bg = np.flatnonzero(fg), np.flatnonzero(bg)
        self.num_fg = int(np.float32(p.batch_size) * np.float32(p.fg_fraction))
        self.num_bg = p.batch_size - self.num_fg
        for kind, pool, need, rule in (
                ("foreground", self.fg, self.num_fg, f"overlap ≥ fg_threshold {p.fg_threshold:g}"),
                ("background", self.bg, self.num_bg, f"overlap < bg_threshold {p.bg_threshold:g}")):
            if need and not pool.size:
                raise self._fail(f"{win.path}: no {kind} windows ({rule}), but each batch takes "
                                 f"{need} (batch_size {p.batch_size}, fg_fraction "
                                 f"{p.fg_fraction:g})")
        self.cache: dict[int, bytes] = {}
        if p.cache_images:
            for n, f in enumerate(self.files):
                try:
                    self.cache[n] = f.read_bytes()
                except OSError as e:
                    raise self._fail(f"{win.path}:{win.images[n].line}: cannot read image "
                                     f"'{f}': {e}") from None

    def _setup_mean(self, tp) -> None:
        mean_values = list(tp.mean_value) if tp else []
        mean_file = (tp.mean_file if tp else None) or self.p.mean_file
        field = ("transform_param.mean_file" if tp and tp.mean_file
                 else "window_data_param.mean_file")
        self.mean_crop = self.mean = None
        if mean_file:
            if mean_values:
                raise self.spec_error("set mean_file or mean_value, not both (Caffe refuses both)",
                                      field=field)
            mean = self._load_mean(mean_file, field)
            c, h, w = mean.shape
            off = (w - self.crop) // 2     # Caffe centres the crop by the width, on both axes
            if c != 3 or w < self.crop or off + self.crop > h:
                raise self.error(f"the mean image is {c}×{h}×{w}: WindowData subtracts its central "
                                 f"{self.crop}×{self.crop} (rows and columns from "
                                 f"(width − crop_size) / 2), so it needs 3 channels and at least "
                                 f"crop_size rows and columns", field=field, cls=DataError)
            self.mean_crop = np.ascontiguousarray(mean[:, off:off + self.crop, off:off + self.crop])
        elif mean_values:
            if len(mean_values) not in (1, 3):
                raise self.spec_error(f"{len(mean_values)} mean_value(s) for 3 channels (give 1 "
                                      "or 3)", field="transform_param.mean_value")
            self.mean = np.asarray(mean_values * (3 // len(mean_values)),
                                   dtype=np.float32)[:, None, None]

    # -- batches --------------------------------------------------------------------------
    def _image(self, n: int, seen: dict) -> np.ndarray:
        """Image ``n`` as uint8 B, G, R planes (read once per batch)."""

        if n not in seen:
            try:
                seen[n] = (decode_image(self.cache[n], True) if n in self.cache
                           else load_image(self.files[n], True))
            except DataError as e:
                raise self._fail(f"{e.format()} (image {n}, line {self.win.images[n].line} of "
                                 f"{self.win.path})") from None
        return seen[n]

    def _warp_into(self, dst: np.ndarray, img: np.ndarray, k: int, mirror: bool) -> None:
        """Window ``k`` of ``img`` warped, mean-subtracted and scaled into ``dst`` (C×crop×crop)."""

        p = self.p
        _, rows, cols = img.shape
        g = warp_geometry(self.win.box[k], rows, cols, self.crop, p.context_pad,
                          p.crop_mode == "square", mirror)
        if not (0 <= g.x1 <= g.x2 < cols and 0 <= g.y1 <= g.y2 < rows
                and g.height > 0 and g.width > 0):
            grows = p.context_pad or p.crop_mode == "square"
            grown = " grown by context_pad/square" if grows else ""
            n = int(self.win.image[k])
            raise self._fail(f"{self.win.path}:{self.win.line[k]}: the window "
                             f"{' '.join(map(str, self.win.box[k]))}{grown} does not fit image "
                             f"'{self.files[n]}' ({cols}×{rows}; x1 y1 x2 y2 are 0-based, "
                             "inclusive pixel columns and rows)")
        region = resize_linear(img[:, g.y1:g.y2 + 1, g.x1:g.x2 + 1], g.height, g.width)
        if mirror:
            region = region[:, :, ::-1]
        rs = slice(g.pad_h, g.pad_h + g.height)
        cs = slice(g.pad_w, g.pad_w + g.width)
        x = region.astype(np.float32)
        if self.mean_crop is not None:
            x -= self.mean_crop[:, rs, cs]
        elif self.mean is not None:
            x -= self.mean
        dst[:, rs, cs] = x * np.float32(self.scale)

    def forward(self, bottom, top):
        out = np.zeros((self.p.batch_size, 3, self.crop, self.crop), np.float32)
        labels = np.zeros(self.p.batch_size, np.float32)
        seen: dict[int, np.ndarray] = {}
        item = 0
        for pool, count, is_fg in ((self.bg, self.num_bg, False), (self.fg, self.num_fg, True)):
            for _ in range(count):
                k = int(pool[self.rng.integers(pool.size)])
                mirror = self.mirror and bool(self.rng.integers(2))
                img = self._image(int(self.win.image[k]), seen)
                self._warp_into(out[item], img, k, mirror)
                labels[item] = self.win.label[k] if is_fg else 0
                item += 1
        top[0].data[...] = self.backend.asarray(out)
        top[1].data[...] = self.backend.asarray(labels)

    # the only state is the net's random generator, which snapshots keep
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

