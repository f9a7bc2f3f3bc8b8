"""Images for Caffe's data layers, read with Pillow as OpenCV reads them; ImageData's lists.

``read_image_list``: like Caffe's ImageDataLayer, each line is split at its *last* space, so a
path may hold spaces; the label is an integer. Blank lines are skipped.

``load_image``: like Caffe's ``ReadImageToCVMat`` (OpenCV's ``imread`` + ``resize``): colour
images as 3 planes in OpenCV's order B, G, R, grey as 1 plane (uint8, C×H×W); resized, when
asked, as OpenCV's ``INTER_LINEAR`` (pixel centres aligned, two taps per axis, no antialiasing,
OpenCV's fixed-point arithmetic; see ``resize_linear``). ``decode_image`` does the same for
encoded bytes (the ``encoded`` Datums of an LMDB or LevelDB).

``read_image_pairs``: SegNet's DenseImageData lists, ``image label_image`` a line;
``read_seg_list``: DeepLab v2's ImageSegData lists (a label image, a class or nothing after the
image).

``find_image``: where an image named in a list file (ImageData, WindowData, DenseImageData) is.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataError
from .interpolation import centred_positions, nearest_indices

INSTALL = "pip install 'netspec[caffe]'"


class ImageEntry(NamedTuple):
    path: str    # as written in the list
    label: int
    line: int    # 1-based line of the list file


class ImagePair(NamedTuple):
    path: str          # the image, as written in the list
    label_path: str    # its label image
    line: int          # 1-based line of the list file


def _list_lines(path: Path):
    """(line number, stripped text) of the non-blank lines of a list file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("image list not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read image list: {e}", file=str(path)) from None
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)]
    lines = [(i, line) for i, line in lines if line]
    if not lines:
        raise DataError("the image list is empty", file=str(path))
    return lines


def read_image_pairs(path: str | Path) -> list[ImagePair]:
    """The ``(image, label image, line)`` entries of a DenseImageData ``source`` file (SegNet:
    two whitespace-separated paths a line), in file order."""
    path = Path(path)
    out = []
    for i, line in _list_lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"expected 'image label_image' (two paths), got {line!r}",
                            file=str(path), line=i)
        out.append(ImagePair(parts[0], parts[1], i))
    return out


def read_seg_list(path: str | Path, label_type: str) -> list[ImagePair]:
    """The entries of a DeepLab v2 ImageSegData ``source`` file, in file order: the first
    whitespace-separated word of a line is the image; the second is its label image
    (``label_type`` PIXEL), its class, an integer in [0, 255] (IMAGE), or not read (NONE:
    ``label_path`` ""). Further words are ignored, as the fork reads words with ``>>``."""
    path = Path(path)
    out = []
    for i, line in _list_lines(path):
        parts = line.split()
        if label_type == "NONE":
            out.append(ImagePair(parts[0], "", i))
            continue
        if len(parts) < 2:
            what = "image label_image" if label_type == "PIXEL" else "image class"
            raise DataError(f"expected '{what}' (label_type {label_type}), got {line!r}",
                            file=str(path), line=i)
        if label_type == "IMAGE" and not (parts[1].isdigit() and int(parts[1]) <= 255):
            raise DataError(f"the class {parts[1]!r} is not an integer in [0, 255] (label_type "
                            "IMAGE: a line is 'image class')", file=str(path), line=i)
        out.append(ImagePair(parts[0], parts[1], i))
    return out


def read_image_list(path: str | Path) -> list[ImageEntry]:
    """The ``(path, label, line)`` entries of an ImageData ``source`` file, in file order."""
    path = Path(path)
    out = []
    for i, line in _list_lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(f"expected 'path label', got {line!r}", file=str(path), line=i)
        try:
            label = int(parts[1])
        except ValueError:
            raise DataError(f"the label {parts[1]!r} is not an integer (a line is 'path label')",
                            file=str(path), line=i) from None
        out.append(ImageEntry(parts[0], label, i))
    return out


def find_image(name: str, listing: Path, net_dir: Path | None, line: int) -> Path:
    """The file of an image named ``name`` (``root_folder + path``) on line ``line`` of the list
    file ``listing``: as given when absolute, else looked up from the net file's folder, the
    list file's folder, then the working directory. Missing: a DataError at ``listing:line``."""
    p = Path(name).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [d / p for d in (net_dir, listing.parent) if d is not None]
        candidates.append(Path.cwd() / p)
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise DataError(f"image '{name}' not found (looked for {looked})", file=str(listing), line=line)


def load_image(path: str | Path, is_color: bool = True, new_height: int = 0,
               new_width: int = 0, nearest: bool = False) -> np.ndarray:
    """One image file -> uint8 (C, H, W): B, G, R planes (``is_color``) or 1 grey plane;
    resized with ``resize_nearest`` instead of ``resize_linear`` when ``nearest`` (label
    images)."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            img.load()
            a = pil_to_caffe(img, bool(is_color))
    except FileNotFoundError:
        raise DataError("image file not found", file=str(path)) from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for bad files
        raise DataError(f"cannot read image: {e}", file=str(path)) from None
    if new_height > 0 and new_width > 0:
        a = (resize_nearest if nearest else resize_linear)(a, new_height, new_width)
    return a


def _pil():
    try:
        from PIL import Image  # noqa: PLC0415 - optional: Pillow (the caffe extra)
    except ImportError:
        raise DataError(f"decoding images needs the 'Pillow' package: {INSTALL}") from None
    return Image


_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def pil_to_caffe(img, color: bool | None) -> np.ndarray:
    """A Pillow image -> uint8 (C, H, W) in OpenCV's channel order (B, G, R) or grey (1 plane).

    ``color``: True = 3 planes, False = 1, None = the image's own (OpenCV's IMREAD_ANYCOLOR).
    16-bit images keep their high byte (OpenCV converts them to 8 bits the same way).
    """
    grey = img.mode in _GREY_MODES
    if color is None:
        color = not grey
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        img = _from_16bit(img)
    if color:
        a = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))
    a = np.asarray(img.convert("L"), dtype=np.uint8)
    return np.ascontiguousarray(a[None])


def _from_16bit(img):
    Image = _pil()
    a = np.asarray(img).astype(np.int64)
    if a.max(initial=0) > 255 or img.mode.startswith("I;16"):
        a = a >> 8
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def decode_image(raw: bytes, color: bool | None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, …) -> uint8 (C, H, W), see ``pil_to_caffe``."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return pil_to_caffe(img, color)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for bad files
        raise DataError(f"cannot decode the encoded image ({len(raw)} bytes): {e}") from None


_COEF = 2048   # OpenCV's INTER_RESIZE_COEF_SCALE: 11-bit fixed-point weights


def linear_taps(src, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps for one axis: source indices i0, i1 and fixed-point weights
    w0, w1 (cv::resize: centres aligned, clamped at the edges, weights rounded to 1/2048).
    ``src`` is one size, or an array of sizes (n, 1) giving (n, dst) taps."""
    src = np.asarray(src)
    i0, frac = centred_positions(src, dst)
    low = i0 < 0
    i0, frac = np.where(low, 0, i0), np.where(low, np.float32(0), frac)
    high = i0 >= src - 1
    i0, frac = np.where(high, src - 1, i0), np.where(high, np.float32(0), frac)
    i1 = np.minimum(i0 + 1, src - 1)
    w1 = np.rint(frac * np.float32(_COEF)).astype(np.int64)
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF)).astype(np.int64)
    return i0, i1, w0, w1


def resize_linear(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (C, H, W) -> (C, height, width) as OpenCV's ``cv::resize(..., INTER_LINEAR)``.

    Integer arithmetic of OpenCV's vectorised 8-bit path: rows are interpolated exactly with
    11-bit weights, then columns as ``((w0·(r0 >> 4)) >> 16) + ((w1·(r1 >> 4)) >> 16) + 2 >> 2``.
    Checked against cv2.resize (OpenCV 5.0): identical when shrinking; when enlarging, a few
    pixels of the first and last rows can differ by 1.
    """
    c, h, w = a.shape
    if (h, w) == (height, width):
        return a
    y0, y1, b0, b1 = linear_taps(h, height)
    x0, x1, a0, a1 = linear_taps(w, width)
    x = a.astype(np.int64)
    rows = x[:, :, x0] * a0 + x[:, :, x1] * a1            # (C, h, width), exact
    r0, r1 = rows[:, y0, :] >> 4, rows[:, y1, :] >> 4
    out = (((b0[None, :, None] * r0) >> 16) + ((b1[None, :, None] * r1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def resize_nearest(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) -> (C, height, width) as OpenCV's ``cv::resize(..., INTER_NEAREST)``: output
    pixel (y, x) is input pixel (min(floor(y·H/height), H − 1), min(floor(x·W/width), W − 1))."""
    c, h, w = a.shape
    rows, cols = nearest_indices(h, height), nearest_indices(w, width)
    return a[:, rows[:, None], cols[None, :]]
