"""``--gpu`` values (Caffe's): ``N`` one device, ``N,M,…`` one rank per listed device, ``all``
one rank per device of the machine; a bare ``--gpu`` means the solver's ``device_id``."""

from __future__ import annotations

from ..arrays import _cupy
from ..errors import NetspecError

ALL = "all"


def parse_gpu(text: str) -> list[int] | str:
    """The devices a ``--gpu`` value names, in order, or ``ALL``. One-line errors for a value
    that is not a device number, a comma-separated list of them, or ``all``, and for a device
    named twice (one rank per GPU)."""
    text = text.strip()
    if text == ALL:
        return ALL
    items = [i.strip() for i in text.split(",")]
    if not all(i.isdigit() for i in items):
        raise NetspecError(f"--gpu {text}: expected a device number (0), a list of devices "
                           "(0,1) or all")
    ids = [int(i) for i in items]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise NetspecError(f"--gpu {text}: device {twice[0]} is named twice; name each GPU "
                           "once (netspec runs one rank per GPU; NCCL cannot put two ranks on "
                           "one device)")
    return ids


def device_count() -> int | None:
    """How many GPUs CuPy sees; None without CuPy (or without a GPU)."""
    cp = _cupy()
    count = 0 if cp is None else int(cp.cuda.runtime.getDeviceCount())
    return count or None


def resolve(text: str, count: int | None) -> list[int]:
    """``parse_gpu``'s devices with ``all`` expanded, checked against the ``count`` devices of
    this machine (None: not known, nothing checked; ``all`` then is an error)."""
    ids = parse_gpu(text)
    if ids == ALL:
        if count is None:
            raise NetspecError("--gpu all: CuPy is not installed or sees no GPU, so there are "
                               "no devices to train on (pip install 'netspec[gpu]')")
        return list(range(count))
    missing = [i for i in ids if count is not None and i >= count]
    if missing:
        raise NetspecError(f"--gpu {text.strip()}: there is no GPU {missing[0]}; CuPy sees "
                           f"{count} (device{'s 0-' if count > 1 else ' '}{count - 1})")
    return ids
