"""Parse YAML/JSON documents into typed resources, with field paths in every error.

A file is split into its documents (``---``) before decoding, so that one broken document (a
Go-template placeholder such as ``{{ .Values.uri }}`` is not YAML) does not hide the others,
and a ``kind: List`` is unpacked into its items. :func:`parse_documents` returns every document
with its resource or its errors; :func:`load_resources` returns the resources or raises the
first error. Accepted kinds: KServe's (:data:`KINDS`) and the Kubernetes core objects that
travel with them (:data:`CORE_KINDS`: ServiceAccount, Secret, ConfigMap, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from moorage.core.errors import ValidationError
from moorage.core.resources._corekinds import CORE_KINDS
from moorage.core.resources._meta import GROUP, Resource
from moorage.core.resources._ranges import out_of_range

__all__ = [
    "KINDS",
    "Document",
    "field_path",
    "load_resources",
    "parse_documents",
    "parse_resource",
    "resource_class",
]


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


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same rules over libyaml's parser where PyYAML has it (several times faster)."""


_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def _unknown_kind(api_version: str, kind: str) -> tuple[str, str]:
    """``(field, hint)``: which field is wrong and what is served instead (hint may be empty)."""
    known = {k: v for (v, k) in KINDS} | {k: v for (v, k) in CORE_KINDS}
    if kind == "ClusterLocalModel":
        return "kind", (
            "ClusterLocalModel is KServe v0.14.0's kind; v0.14.1 (which moorage follows) renamed "
            f"it LocalModelCache ({GROUP}/v1alpha1), with spec.nodeGroups: [<group>] in place "
            "of spec.nodeGroup"
        )
    group = api_version.rpartition("/")[0]
    if group == "serving.kubeflow.org":
        where = f" ({known[kind]})" if kind in known else ""
        return (
            "apiVersion",
            f"serving.kubeflow.org is KFServing's group; KServe's is {GROUP}{where}",
        )
    if kind in known:
        return "apiVersion", f"KServe v0.14 serves {kind} in {known[kind]}"
    if group == GROUP:
        return "kind", f"{GROUP} has the kinds {', '.join(sorted(k for (_, k) in KINDS))}"
    core = ", ".join(sorted(k for (_, k) in CORE_KINDS))
    return "kind", f"moorage reads KServe's kinds and, beside them, the core kinds {core}"


def resource_class(api_version: str, kind: str) -> type[Resource]:
    """The model class for an apiVersion/kind; ValidationError (field ``kind`` or
    ``apiVersion``, with what is served instead) if unknown."""
    cls = KINDS.get((api_version, kind)) or CORE_KINDS.get((api_version, kind))
    if cls is not None:
        return cls
    where, hint = _unknown_kind(api_version, kind)
    raise ValidationError(
        f'no matches for kind "{kind}" in version "{api_version}": {hint}', field=where
    )


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
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        what = "quantities" if "[KMGTPE]i" in str(pattern) else "values"
        return (
            f"Invalid value: {error.get('input')!r}: {what} must match the regular expression "
            f"'{pattern}'"
        )
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"Unsupported value: {error.get('input')!r}: supported values: {expected}"
    return str(error["msg"])


#: Errors of the number branches of a quantity (int | float | pattern-checked str): when the
#: string branch failed on its pattern too, that one alone says what is wrong.
_NUMBER_BRANCHES = {"int_parsing", "float_parsing", "int_type", "float_type", "int_from_float"}


def _translate(exc: pydantic.ValidationError, data: Any, **details: Any) -> ValidationError:
    raw = exc.errors()
    located = [(field_path(e["loc"], data, missing=e["type"] == "missing"), e) for e in raw]
    patterned = {where for where, e in located if e["type"] == "string_pattern_mismatch"}
    errors = [
        ValidationError(_message(e), field=where, **details)
        for where, e in located
        if not (where in patterned and e["type"] in _NUMBER_BRANCHES)
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
    try:
        cls = resource_class(data["apiVersion"], data["kind"])
    except ValidationError as exc:
        raise ValidationError(exc.reason, field=exc.field, **details) from None
    try:
        resource = cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _translate(exc, data, **details) from None
    if wide := out_of_range(resource):
        errors = [ValidationError(reason, field=where, **details) for where, reason in wide]
        raise ValidationError(errors[0].reason, field=errors[0].field, errors=errors, **details)
    return resource


def _read(source: str | os.PathLike[str]) -> tuple[str, str | None]:
    if isinstance(source, os.PathLike):
        return Path(source).read_text(), os.fspath(source)
    if "\n" not in source and len(source) < 4096:
        candidate = Path(source)
        if candidate.suffix in (".yaml", ".yml", ".json") and candidate.is_file():
            return candidate.read_text(), source
    return source, None


@dataclass
class Document:
    """One document of a file (one item, for a ``kind: List``), parsed or not.

    ``index`` counts the file's documents from 0; ``item`` is the position inside a
    ``kind: List``. ``errors`` hold every problem found while parsing (a schema error per
    field); ``resource`` is set when there is none.
    """

    index: int
    item: int | None = None
    data: Any = None
    resource: Resource | None = None
    errors: list[ValidationError] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind") or "") if isinstance(self.data, Mapping) else ""

    @property
    def name(self) -> str:
        if isinstance(self.data, Mapping) and isinstance(self.data.get("metadata"), Mapping):
            return str(self.data["metadata"].get("name") or "")
        return ""

    @property
    def where(self) -> str:
        """``document 2`` or ``document 2, items[0]``."""
        return f"document {self.index}" + (f", items[{self.item}]" if self.item is not None else "")


#: A line that ends one YAML document and starts the next.
_SEPARATOR = re.compile(r"^---(?=\s|$)")
_SENTINEL = "__moorage_not_yaml__"


def _chunks(text: str) -> list[tuple[int, str]]:
    """``(first line, text)`` of each document, split at ``---`` lines (as ``load_all`` would,
    but so that each can fail alone). Text before the first separator counts only when it holds
    more than comments."""
    chunks: list[tuple[int, list[str]]] = [(0, [])]
    for number, line in enumerate(text.splitlines()):
        if _SEPARATOR.match(line):
            rest = line[3:].strip()
            if rest and not rest.startswith("#"):  # "--- {...}": the document starts here
                chunks.append((number, [" " * 3 + rest]))
            else:
                chunks.append((number + 1, []))
        else:
            chunks[-1][1].append(line)
    out = [(start, "\n".join(lines) + "\n") for start, lines in chunks]
    first = out[0][1]
    if len(out) > 1 and all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in first.split("\n")
    ):
        out = out[1:]
    return out


def _find(node: Any, path: str = "") -> str | None:
    """The field path of the sentinel string inside decoded YAML."""
    if node == _SENTINEL:
        return path
    items: Iterable[tuple[str | int, Any]] = ()
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    for key, child in items:
        found = _find(child, _segment(path, key if isinstance(key, int) else str(key)))
        if found is not None:
            return found
    return None


def _yaml_error_field(text: str, exc: yaml.YAMLError) -> tuple[str, Any]:
    """``(field, data)``: the field whose value is not YAML, and the document with that value
    replaced by a sentinel string (from the column where the parser gave up) — or ``("",
    None)`` when the replacement does not make the document YAML."""
    lines = text.split("\n")
    marks = [getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)]
    for mark in marks:
        if mark is None or not 0 <= mark.line < len(lines):
            continue
        line = lines[mark.line]
        patched = [*lines]
        patched[mark.line] = f"{line[: mark.column]}{_SENTINEL}"
        try:
            data = yaml.load("\n".join(patched), Loader=_Loader)
        except yaml.YAMLError:
            continue
        found = _find(data)
        if found:
            return found, data
    return "", None


def _yaml_problem(exc: yaml.YAMLError, first_line: int) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[-1]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {first_line + mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"invalid YAML{where}: {problem}"


def parse_documents(source: str | os.PathLike[str]) -> list[Document]:
    """Every document of a YAML/JSON text or file, each parsed on its own (see the module
    docstring). Empty documents are left out; nothing is raised for their content."""
    text, path = _read(source)
    details: dict[str, Any] = {"path": path} if path else {}
    out: list[Document] = []
    for index, (first_line, chunk) in enumerate(_chunks(text)):
        try:
            data = yaml.load(chunk, Loader=_FastLoader)
        except yaml.YAMLError as exc:
            where, patched = _yaml_error_field(chunk, exc)
            error = ValidationError(
                _yaml_problem(exc, first_line), field=where, document=index, **details
            )
            out.append(Document(index=index, data=patched, errors=[error]))
            continue
        if data is None:
            continue
        if isinstance(data, Mapping) and data.get("kind") == "List" and "items" in data:
            items = data.get("items")
            if not isinstance(items, list):
                error = ValidationError("must be a list", field="items", document=index, **details)
                out.append(Document(index=index, data=data, errors=[error]))
                continue
            for position, item in enumerate(items):
                out.append(_parse(item, index, position, details))
            continue
        out.append(_parse(data, index, None, details))
    return out


def _parse(data: Any, index: int, item: int | None, details: dict[str, Any]) -> Document:
    where = {"document": index, **({"item": item} if item is not None else {}), **details}
    document = Document(index=index, item=item, data=data)
    try:
        document.resource = parse_resource(data, **where)
    except ValidationError as exc:
        document.errors = list(exc.details.get("errors") or [exc])
    return document


def load_resources(source: str | os.PathLike[str]) -> list[Resource]:
    """Every resource in a multi-document YAML text or file, in document order.

    Empty documents are skipped and ``kind: List`` is unpacked. Errors are
    :class:`~moorage.core.errors.ValidationError` with ``field`` set and ``details`` naming the
    ``document`` index (and ``path`` for files); the first one is raised, with all of that
    document's in ``details["errors"]``.
    """
    out: list[Resource] = []
    for document in parse_documents(source):
        if document.errors:
            first = document.errors[0]
            if len(document.errors) == 1:
                raise first
            extra = {k: v for k, v in first.details.items() if k not in ("field", "errors")}
            raise ValidationError(first.reason, field=first.field, errors=document.errors, **extra)
        assert document.resource is not None
        out.append(document.resource)
    return out
