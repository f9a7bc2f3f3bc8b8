"""Shared pydantic plumbing: strict messages, strict numbers and Caffe's `repeated` fields."""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, TypeVar

from pydantic import (BaseModel, BeforeValidator, ConfigDict, PrivateAttr, ValidationInfo,
                      field_validator)

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


#: Caffe's integer fields are int32 except these int64 ones (caffe.proto: BlobShape.dim,
#: SolverParameter.random_seed); a larger value is out of range, as it is for Caffe.
INT64_FIELDS = frozenset({"dim", "random_seed"})
_INT32 = (-2**31, 2**31 - 1)
_INT64 = (-2**63, 2**63 - 1)

#: Text that is a plain decimal number. PyYAML reads ``1e-3`` (no dot) as text, so a float
#: field takes such text; any other text (``nan``, ``1_000``, `` 1``, ``four``) is refused.
_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _number_kind(annotation: Any) -> str | None:
    """'int' or 'float' for an int/float field (also Optional, constrained or a list of them)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin is not None:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if origin in (list, tuple) or len(args) == 1:
                if not args:
                    return None
                annotation = args[0]
                continue
            return None
        if annotation is int:
            return "int"
        if annotation is float:
            return "float"
        return None


_NUMBER_FIELDS: dict[type, dict[str, str]] = {}


def _number_fields(cls: type[BaseModel]) -> dict[str, str]:
    """{field name: 'int' | 'float'} of a message class, computed once per class."""
    kinds = _NUMBER_FIELDS.get(cls)
    if kinds is None:
        kinds = {name: kind for name, f in cls.model_fields.items()
                 if (kind := _number_kind(f.annotation)) is not None}
        _NUMBER_FIELDS[cls] = kinds
    return kinds


class ItemError(ValueError):
    """A bad value at ``index`` of a list field (the loader appends the index to the loc)."""

    def __init__(self, index: int | None, message: str):
        self.index = index
        super().__init__(message)


def check_number(value: Any, kind: str, field: str, index: int | None = None) -> None:
    """Refuse what pydantic's lax mode would coerce into a number field.

    Booleans are never numbers (``kernel_size: true`` is not 1). An int field takes an int or
    an integral float (``3.0``) and no text; a float field takes an int, a float or a plain
    decimal number written as text (``1e-3``, see ``_NUMBER_TEXT``). Integers must fit Caffe's
    field types (int32; int64 for ``INT64_FIELDS``).
    """
    expected = "an integer" if kind == "int" else "a number"
    if isinstance(value, bool):
        raise ItemError(index, f"expected {expected}, got the boolean {str(value).lower()}")
    if isinstance(value, str):
        if kind == "float" and _NUMBER_TEXT.fullmatch(value):
            return
        text, hint = value.strip(), ""
        if re.fullmatch(r"[-+]?[0-9]+", text) or (kind == "float" and _NUMBER_TEXT.fullmatch(text)):
            hint = " (write the number without quotes)"
        elif _NUMBER_TEXT.fullmatch(text):
            hint = " (write an integer in digits, such as 1000 rather than 1e3)"
        raise ItemError(index, f"expected {expected}, got the text '{value}'{hint}")
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            low, high = _INT64 if field in INT64_FIELDS else _INT32
            if not low <= value <= high:
                bits = 64 if field in INT64_FIELDS else 32
                raise ItemError(index, f"{value} is out of range: this field is a {bits}-bit "
                                       f"integer in Caffe ({low} to {high})")


class Message(BaseModel):
    """A Caffe protobuf message as a pydantic model: unknown keys are errors, and number fields
    take numbers only (``check_number``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    _origin: Any = PrivateAttr(default=None)  # (file, LineMap) for top-level files

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        kind = _number_fields(cls).get(info.field_name)
        if kind is None or value is None:
            return value
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                check_number(item, kind, info.field_name, i)
        else:
            check_number(value, kind, info.field_name)
        return value

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
