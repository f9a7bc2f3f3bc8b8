"""Shared pytest set-up: tests marked ``gpu`` skip unless CuPy sees a CUDA device."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    from netspec.backend import cupy_available

    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU (pip install 'netspec[gpu]')")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
