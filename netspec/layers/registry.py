"""Layer registry: Caffe type name -> layer class (``@register("Convolution")``)."""

from __future__ import annotations

LAYERS: dict[str, type] = {}


def register(type_name: str):
    """Class decorator registering a layer under its Caffe type name."""
    def deco(cls):
        if type_name in LAYERS:
            raise RuntimeError(f"layer type {type_name!r} registered twice")
        cls.type_name = type_name
        LAYERS[type_name] = cls
        return cls
    return deco


def get(type_name: str) -> type:
    return LAYERS[type_name]
