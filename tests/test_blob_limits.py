"""Shapes a layer computes (not written in the file) that no blob may hold, or that do not fit
in memory, are errors naming the layer and its line before anything huge is allocated."""

from __future__ import annotations

import pytest

from netspec.backend import get_backend
from netspec.errors import ShapeError
from netspec.layers.base import Layer
from netspec.net import Net
from netspec.spec import load_net

HEAD = """\
name: huge
layer:
  - {name: data, type: Input, top: [x], input_param: {shape: [{dim: [4, 6]}]}}
"""


def build(tmp_path, layer: str):
    path = tmp_path / "net.yaml"
    path.write_text(HEAD + layer)
    return path, lambda: Net(load_net(str(path)), "TEST", get_backend())


def test_a_parameter_blob_over_the_limit(tmp_path):
    path, make = build(tmp_path, "  - {name: fc, type: InnerProduct, bottom: x, top: y, "
                                 "inner_product_param: {num_output: 2000000000}}\n")
    with pytest.raises(ShapeError) as e:
        make()
    assert str(e.value).startswith(f"{path}:4: layer 'fc' (InnerProduct): its parameter blob 0 "
                                   "would have shape (2000000000, 6), 12,000,000,000 values")


def test_a_top_over_the_limit(tmp_path):
    path, make = build(tmp_path, "  - {name: tile, type: Tile, bottom: x, top: y, "
                                 "tile_param: {axis: 1, tiles: 1000000000}}\n")
    with pytest.raises(ShapeError) as e:
        make()
    assert str(e.value).startswith(f"{path}:4: layer 'tile' (Tile): its top 'y' would have "
                                   "shape (4, 6000000000)")


def test_memory_error_in_set_up_names_the_layer(tmp_path, monkeypatch):
    path, make = build(tmp_path, "  - {name: fc, type: InnerProduct, bottom: x, top: y, "
                                 "inner_product_param: {num_output: 3}}\n")

    def no_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Layer, "add_param", no_memory)
    with pytest.raises(ShapeError, match=r"net.yaml:4: layer 'fc' \(InnerProduct\) does not "
                                         r"fit in memory"):
        make()
