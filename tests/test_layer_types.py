"""The spec's list of layer types (assembled from ``netspec/spec/params/``) is exactly the
layer registry's, family by family: the spec validates type names without importing the
layers, so the two must not drift."""

from __future__ import annotations

from netspec.layers import registry
from netspec.spec.params import FAMILIES, LAYER_PARAM_BLOCKS, LAYER_TYPES


def test_layer_types_equal_the_registry():
    assert sorted(LAYER_TYPES) == sorted(registry.LAYERS)
    assert len(LAYER_TYPES) == len(set(LAYER_TYPES))


def test_each_family_declares_the_types_of_its_layer_module():
    for family in FAMILIES:
        name = family.__name__.rsplit(".", 1)[1]
        modules = {registry.LAYERS[t].__module__.rsplit(".", 1)[1] for t in family.TYPES}
        if name == "data":      # the data family's messages serve eight layer modules
            assert modules == {"data", "image_data", "window_data", "hdf5", "annotated_data",
                               "image_seg_data", "mat_files", "video_data"}
        else:
            assert modules == {name}, name


def test_every_param_block_is_read_by_a_layer():
    read = {registry.LAYERS[t].param_block for t in LAYER_TYPES}
    read |= {b for t in LAYER_TYPES for b in registry.LAYERS[t].extra_blocks}
    assert set(LAYER_PARAM_BLOCKS) == read - {None}


def test_no_implemented_type_is_called_fork_only():
    """The converter's list of types that exist only in a fork (for its refusal message) holds
    no type netspec implements."""
    from netspec.caffe.to_yaml import FORK_TYPES

    assert not set(FORK_TYPES) & set(LAYER_TYPES)
