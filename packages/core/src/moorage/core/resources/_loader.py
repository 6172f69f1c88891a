"""Parse YAML/JSON documents into typed resources, with field paths in every error."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml

from moorage.core.errors import ValidationError
from moorage.core.resources._meta import Resource

__all__ = ["KINDS", "field_path", "load_resources", "parse_resource", "resource_class"]


def _kinds() -> dict[tuple[str, str], type[Resource]]:
    from moorage.core.resources import _inferencegraph as ig
    from moorage.core.resources import _inferenceservice as isvc
    from moorage.core.resources import _localmodel as lm
    from moorage.core.resources import _servingruntime as sr
    from moorage.core.resources import _storagecontainer as sc
    from moorage.core.resources import _trainedmodel as tm

    classes: list[type[Resource]] = [
        isvc.InferenceService,
        sr.ServingRuntime,
        sr.ClusterServingRuntime,
        lm.LocalModelCache,
        lm.LocalModelNodeGroup,
        lm.LocalModelNode,
        sc.ClusterStorageContainer,
        tm.TrainedModel,
        ig.InferenceGraph,
    ]
    return {(c.API_VERSION, c.KIND): c for c in classes}


#: (apiVersion, kind) -> model class, for every kind moorage knows.
KINDS: dict[tuple[str, str], type[Resource]] = _kinds()


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as Kubernetes' YAML-to-JSON step does."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def resource_class(api_version: str, kind: str) -> type[Resource]:
    """The model class for an apiVersion/kind; ValidationError (field ``kind``) if unknown."""
    try:
        return KINDS[(api_version, kind)]
    except KeyError:
        raise ValidationError(
            f'no matches for kind "{kind}" in version "{api_version}"', field="kind"
        ) from None


def _segment(path: str, seg: str | int) -> str:
    if isinstance(seg, int):
        return f"{path}[{seg}]"
    if "." in seg or "/" in seg:
        return f"{path}[{seg}]"
    return f"{path}.{seg}" if path else seg


def _child(node: Any, seg: str | int) -> tuple[bool, Any]:
    if isinstance(node, Mapping) and seg in node:
        return True, node[seg]
    if isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
        return True, node[seg]
    return False, None


def field_path(loc: Iterable[str | int], data: Any, *, missing: bool = False) -> str:
    """A dotted field path (``spec.predictor.containers[0].name``) from a pydantic error location.

    Location parts that do not name a key or index of ``data`` (union member tags such as ``int``
    or ``str``) are left out; the last part is kept when it names a missing field.
    """
    parts = list(loc)
    path = ""
    current: Any = data
    for index, seg in enumerate(parts):
        last = index == len(parts) - 1
        found, child = _child(current, seg)
        if found:
            current = child
            path = _segment(path, seg)
        elif last and missing and isinstance(seg, str):
            path = _segment(path, seg)
    return path


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "Required value"
    if kind == "extra_forbidden":
        return "unknown field"
    ctx = error.get("ctx", {})
    if kind == "too_long":
        return (
            f"Too many: {ctx.get('actual_length')}: must have at most {ctx.get('max_length')} items"
        )
    if kind == "too_short":
        return f"Invalid value: must have at least {ctx.get('min_length')} items"
    if kind == "greater_than_equal":
        value = error.get("input")
        return f"Invalid value: {value!r}: should be greater than or equal to {ctx.get('ge')}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"Unsupported value: {error.get('input')!r}: supported values: {expected}"
    return str(error["msg"])


def _translate(exc: pydantic.ValidationError, data: Any, **details: Any) -> ValidationError:
    errors = [
        ValidationError(
            _message(e),
            field=field_path(e["loc"], data, missing=e["type"] == "missing"),
            **details,
        )
        for e in exc.errors()
    ]
    first = errors[0]
    return ValidationError(first.reason, field=first.field, errors=errors, **details)


def parse_resource(data: Mapping[str, Any], **details: Any) -> Resource:
    """One resource from a decoded document (a dict), by its apiVersion and kind."""
    if not isinstance(data, Mapping):
        raise ValidationError("a resource must be a mapping", field="", **details)
    for key in ("apiVersion", "kind"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise ValidationError("Required value", field=key, **details)
    cls = resource_class(data["apiVersion"], data["kind"])
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _translate(exc, data, **details) from None


def _read(source: str | os.PathLike[str]) -> tuple[str, str | None]:
    if isinstance(source, os.PathLike):
        return Path(source).read_text(), os.fspath(source)
    if "\n" not in source and len(source) < 4096:
        candidate = Path(source)
        if candidate.suffix in (".yaml", ".yml", ".json") and candidate.is_file():
            return candidate.read_text(), source
    return source, None


def load_resources(source: str | os.PathLike[str]) -> list[Resource]:
    """Every resource in a multi-document YAML text or file, in document order.

    Empty documents are skipped. Errors are :class:`~moorage.core.errors.ValidationError` with
    ``field`` set and ``details`` naming the ``document`` index (and ``path`` for files).
    """
    text, path = _read(source)
    details: dict[str, Any] = {"path": path} if path else {}
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {exc}", **details) from None
    out: list[Resource] = []
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        out.append(parse_resource(doc, document=index, **details))
    return out
