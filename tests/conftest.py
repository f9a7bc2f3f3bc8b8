"""Shared pytest set-up: tests marked ``gpu`` skip unless CuPy sees a CUDA device; the
``layout`` fixture that runs convolution tests under each code path."""

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


#: (COL_CHUNK_BYTES, ROW_LAYOUT_MIN_RUN, TRANSPOSED_BACKWARD, SPLIT_DW_MAX_WEIGHTS,
#: COL2IM_BACKWARD, KERNEL_ROWS, PAIR_TRANSPOSED_MIN_COLUMNS and _ASPECT): one sample or the
#: whole batch per chunk; NHWC "rows" or NCHW "columns" im2col layout; stride-1 bottom diffs
#: as a transposed convolution or not, and then
#: by col2im or per-tap products; per-sample or whole-chunk weight-gradient GEMMs; rows as
#: columns along W with one GEMM per kernel row (one group, stride_h 1) or not, and then their
#: weight products as colsᵀ @ zᵀ (chunk1_krows_transposed) or z @ cols (whole_krows_col2im)
CONV_LAYOUTS = {"chunk1_krows_transposed": (1, 0, True, 0, True, True, 0),
                "chunk1_cols_col2im_split": (1, 10**9, False, 10**9, True, True, 0),
                "whole_rows_taps_split": (1 << 40, 0, False, 10**9, False, False, 0),
                "whole_krows_col2im": (1 << 40, 0, False, 0, True, True, 10**9),
                "whole_cols_transposed": (1 << 40, 10**9, True, 0, True, True, 0)}


@pytest.fixture(params=list(CONV_LAYOUTS))
def layout(request, monkeypatch):
    """Run a Convolution-machinery test under each code path of netspec/layers/conv.py."""
    from netspec.layers import conv as conv_module

    chunk_bytes, min_run, transposed, split, col2im, krows, pair_t = CONV_LAYOUTS[request.param]
    monkeypatch.setattr(conv_module, "COL_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_module, "ROW_LAYOUT_MIN_RUN", min_run)
    monkeypatch.setattr(conv_module, "TRANSPOSED_BACKWARD", transposed)
    monkeypatch.setattr(conv_module, "TRANSPOSED_MAX_GROWTH", 10.0**9)
    monkeypatch.setattr(conv_module, "TRANSPOSED_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_module, "SPLIT_DW_MAX_WEIGHTS", split)
    monkeypatch.setattr(conv_module, "COL2IM_BACKWARD", col2im)
    monkeypatch.setattr(conv_module, "KERNEL_ROWS", krows)
    monkeypatch.setattr(conv_module, "PAIR_TRANSPOSED_MIN_COLUMNS", pair_t)
    monkeypatch.setattr(conv_module, "PAIR_TRANSPOSED_MIN_ASPECT", pair_t)
    return request.param
