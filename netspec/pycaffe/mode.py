"""pycaffe's global mode: ``caffe.set_mode_cpu()`` / ``set_mode_gpu()`` / ``set_device(i)``,
read when a ``caffe.Net`` or solver is made."""

from __future__ import annotations

gpu = False
device = 0


def set_mode_cpu() -> None:
    global gpu
    gpu = False


def set_mode_gpu() -> None:
    global gpu
    gpu = True


def set_device(device_id: int) -> None:
    global device
    device = int(device_id)
