"""Shared pydantic plumbing: strict messages and Caffe's `repeated` fields."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr

T = TypeVar("T")


def _as_list(v: Any) -> Any:
    """A single value stands for a one-element list (``top: conv1`` == ``top: [conv1]``)."""
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


Repeated = Annotated[list[T], BeforeValidator(_as_list)]
"""A Caffe ``repeated`` field: a list, or one value standing for a one-element list."""


class Message(BaseModel):
    """A Caffe protobuf message as a pydantic model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    _origin: Any = PrivateAttr(default=None)  # (file, LineMap) for top-level files

    def where(self, loc: tuple = ()) -> dict:
        """``file=``/``line=`` keyword arguments for an error about ``loc`` in this file."""
        if self._origin is None:
            return {}
        file, lines = self._origin
        return {"file": file, "line": lines.line(tuple(loc))}

    def explicit(self) -> dict:
        """The fields the file actually set (like protobuf's has_field)."""
        return self.model_dump(exclude_unset=True)


class FieldError(ValueError):
    """Raised inside a model validator to blame one field (the loader appends it to the loc)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)
