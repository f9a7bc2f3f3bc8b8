"""Shared pytest set-up: tests marked ``gpu`` skip unless CuPy sees a CUDA device; the
``layout`` fixture that runs convolution tests under each code path."""

from __future__ import annotations

import dataclasses

import pytest


def pytest_collection_modifyitems(config, items):
    from netspec.backend import cupy_available

    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU (pip install 'netspec[gpu]')")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


#: the convolution code paths the ``layout`` fixture runs (``ConvTuning`` fields): one sample or
#: the whole batch per chunk; NHWC "rows" or NCHW "columns" im2col layout; stride-1 bottom diffs
#: as a transposed convolution or not, and then by col2im or per-tap products; per-sample or
#: whole-chunk weight-gradient GEMMs; columns along W with one GEMM per kernel row (one group,
#: stride_h 1) or not, and then their weight products as colsᵀ @ zᵀ or z @ cols; 1x1 and
#: depthwise convolutions by columns or directly (``conv_direct``)
#: the column paths only: 1x1 and depthwise convolutions through the columns too
COLUMNS_ONLY = dict(pointwise_gemm=False, depthwise_taps=False, winograd=False)
#: every 3x3 stride-1 one-group forward by Winograd F(2x2, 3x3) (``conv_winograd``)
WINOGRAD_ALWAYS = dict(winograd=True, winograd_min_channels=0, winograd_min_positions=0,
                       winograd_min_batch_positions=0, winograd_min_chunk_tiles=0)
CONV_LAYOUTS = {
    "chunk1_krows_transposed": dict(col_chunk_bytes=1, row_layout_min_run=0,
                                    transposed_backward=True, split_dw_max_weights=0,
                                    col2im_backward=True, kernel_rows=True,
                                    pair_transposed_min_columns=0, **COLUMNS_ONLY),
    "chunk1_cols_col2im_split": dict(col_chunk_bytes=1, row_layout_min_run=10**9,
                                     transposed_backward=False, split_dw_max_weights=10**9,
                                     col2im_backward=True, kernel_rows=True,
                                     pair_transposed_min_columns=0, **COLUMNS_ONLY),
    "whole_rows_taps_split": dict(col_chunk_bytes=1 << 40, row_layout_min_run=0,
                                  transposed_backward=False, split_dw_max_weights=10**9,
                                  col2im_backward=False, kernel_rows=False,
                                  pair_transposed_min_columns=0, **COLUMNS_ONLY),
    "whole_krows_col2im": dict(col_chunk_bytes=1 << 40, row_layout_min_run=0,
                               transposed_backward=True, split_dw_max_weights=0,
                               col2im_backward=True, kernel_rows=True,
                               pair_transposed_min_columns=10**9, **COLUMNS_ONLY),
    "whole_cols_transposed": dict(col_chunk_bytes=1 << 40, row_layout_min_run=10**9,
                                  transposed_backward=True, split_dw_max_weights=0,
                                  col2im_backward=True, kernel_rows=True,
                                  pair_transposed_min_columns=0, **COLUMNS_ONLY),
    # 1x1 and depthwise convolutions without columns (conv_direct), 3x3 stride-1 forwards by
    # Winograd (conv_winograd), the others as the first; depthwise ones by NumPy's taps, or
    # (whole_direct) by the compiled kernels where numba is installed (conv_compiled)
    "chunk1_direct": dict(col_chunk_bytes=1, row_layout_min_run=0, transposed_backward=True,
                          split_dw_max_weights=0, col2im_backward=True, kernel_rows=True,
                          pair_transposed_min_columns=0, pointwise_gemm=True, depthwise_taps=True,
                          depthwise_taps_max_forward_positions=10**9, compiled=False,
                          **WINOGRAD_ALWAYS),
    "whole_direct": dict(col_chunk_bytes=1 << 40, row_layout_min_run=0, transposed_backward=False,
                         split_dw_max_weights=10**9, col2im_backward=False, kernel_rows=False,
                         pair_transposed_min_columns=0, pointwise_gemm=True, depthwise_taps=True,
                         depthwise_taps_max_forward_positions=0, compiled=True,
                         **WINOGRAD_ALWAYS),
}


def _tuning_fixture(module):
    """Yield a setter of ``module``'s tuning fields for one test; the defaults come back after."""
    original = module.tuning()

    def set_fields(**fields):
        module.use_tuning(dataclasses.replace(module.tuning(), **fields))

    yield set_fields
    module.use_tuning(original)


@pytest.fixture
def conv_tuning():
    """``conv_tuning(col_chunk_bytes=..., ...)``: set convolution tuning fields for one test."""
    from netspec.layers import conv_columns

    yield from _tuning_fixture(conv_columns)


@pytest.fixture
def pool_tuning():
    """``pool_tuning(chunk_bytes=..., ...)``: set Pooling tuning fields for one test."""
    from netspec.layers import pool

    yield from _tuning_fixture(pool)


@pytest.fixture(params=list(CONV_LAYOUTS))
def layout(request, conv_tuning):
    """Run a Convolution-machinery test under each code path of ``netspec/layers/conv_columns``."""
    layout = dict(CONV_LAYOUTS[request.param])
    layout["pair_transposed_min_aspect"] = layout["pair_transposed_min_columns"]
    conv_tuning(transposed_max_growth=10.0**9, transposed_min_channels=1, **layout)
    return request.param
