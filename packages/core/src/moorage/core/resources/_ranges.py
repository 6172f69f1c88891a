"""Integer ranges of the Go types behind the schemas: what pydantic's ``int`` lets through.

A YAML integer is unbounded in Python; KServe decodes it into Go's ``int32`` (``format: int32``
in the CRDs: ports, probe periods, ``exitCode``), ``int64`` (``format: int64``) or ``int`` (no
format, 64 bits on every platform KServe runs on), and the API server and the webhook refuse a
value that does not fit. :func:`out_of_range` finds those values in a parsed resource, with the
field path of each, so ``moorage validate`` refuses them as KServe does.

The width of a field comes from the ``format`` the models record (``json_schema_extra``, on the
field or inside its annotation: ``Int32 | None``, ``list[Int64]``); it is looked up once per
model class.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["out_of_range"]

_BITS = {"int32": 32, "int64": 64}
_DEFAULT_BITS = 64  # Go's int


def _format_bits(extra: object) -> int | None:
    if isinstance(extra, dict):
        return _BITS.get(str(extra.get("format")))
    return None


def _annotation_bits(annotation: object) -> int | None:
    """The width an annotation names (in `Annotated` metadata, unions, lists, aliases)."""
    value = getattr(annotation, "__value__", None)  # a TypeAliasType such as k8s.Int64
    if value is not None:
        return _annotation_bits(value)
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, FieldInfo) and (bits := _format_bits(meta.json_schema_extra)):
            return bits
    for arg in typing.get_args(annotation):
        if bits := _annotation_bits(arg):
            return bits
    return None


@functools.cache
def _widths(cls: type[BaseModel]) -> dict[str, tuple[str, int]]:
    """Each field of a model: its wire name and the width of the integers it holds."""
    out: dict[str, tuple[str, int]] = {}
    for name, info in cls.model_fields.items():
        bits = _format_bits(info.json_schema_extra) or _annotation_bits(info.annotation)
        out[name] = (info.alias or name, bits or _DEFAULT_BITS)
    return out


def _walk(value: Any, path: str, bits: int) -> Iterator[tuple[str, int, int]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        limit = 1 << (bits - 1)
        if not -limit <= value < limit:
            yield path, value, bits
    elif isinstance(value, BaseModel):
        widths = _widths(type(value))
        for name, (wire, field_bits) in widths.items():
            child = getattr(value, name, None)
            if child is not None:
                yield from _walk(child, f"{path}.{wire}" if path else wire, field_bits)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]", bits)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}[{key}]", bits)


def out_of_range(resource: BaseModel) -> list[tuple[str, str]]:
    """``(field path, message)`` for every integer that its Go type cannot hold."""
    return [
        (path, f"Invalid value: {value}: must fit in int{bits}")
        for path, value, bits in _walk(resource, "", _DEFAULT_BITS)
    ]
