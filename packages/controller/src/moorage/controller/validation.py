"""``moorage validate``: every document of every file, checked as a KServe cluster would.

Each document (each item of a ``kind: List``) gets one :class:`Finding`: where it is (file,
document index, item), what it is (kind/name) and the errors found, each with its field path.
The checks, in order:

* parsing: YAML, a kind KServe v0.14 serves (or a Kubernetes core kind that travels with it:
  ServiceAccount, Secret, ConfigMap, ...), the fields of its schema and their types;
* the validating webhooks (:func:`moorage.core.resources.validate`), with the other documents
  of all files as the cluster's other objects (runtime priorities, caches of one URI,
  ClusterStorageContainers for storage URIs);
* for an InferenceService: KServe's defaulting, then its validation, then runtime selection
  among the runtimes of the files and moorage's built-ins (those of the files win by name) — the
  runtime chosen is reported;
* for the ``inferenceservice-config`` ConfigMap: each key decodes as its section;
* for the core kinds: ``metadata.name`` (or ``generateName``) is set.

Nothing stops at the first error: a broken document does not hide the others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moorage.controller.runtime_selection import AnyRuntime, predictor_model, select_runtime
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import (
    ClusterServingRuntime,
    ClusterStorageContainer,
    ConfigMap,
    CoreObject,
    Document,
    InferenceService,
    LocalModelCache,
    Resource,
    ServingRuntime,
    builtin_runtimes,
    default,
    parse_documents,
    validate,
)
from moorage.core.resources._validation import default_storage_container

__all__ = ["Finding", "validate_files"]

_CONFIGMAP_NAME = "inferenceservice-config"


@dataclass
class Finding:
    """The verdict on one document."""

    file: str
    document: int | None
    kind: str = ""
    name: str = ""
    item: int | None = None
    errors: list[ValidationError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def where(self) -> str:
        """``isvc.yaml`` / ``isvc.yaml, document 2`` / ``..., document 2, items[0]``."""
        parts = [self.file]
        if self.document is not None:
            parts.append(f"document {self.document}")
        if self.item is not None:
            parts.append(f"items[{self.item}]")
        return ", ".join(parts)

    @property
    def what(self) -> str:
        if not self.kind:
            return ""
        return f"{self.kind}/{self.name}" if self.name else self.kind

    def lines(self) -> list[str]:
        """Human-readable lines: one for a valid document, one per error otherwise."""
        head = f"{self.where}: {self.what}" if self.what else self.where
        if self.ok:
            notes = f" ({'; '.join(self.notes)})" if self.notes else ""
            return [f"{head}: valid{notes}"]
        return [
            f"{head}: {e.field}: {e.reason}" if e.field else f"{head}: {e.reason}"
            for e in self.errors
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "document": self.document,
            "item": self.item,
            "kind": self.kind,
            "name": self.name,
            "valid": self.ok,
            "errors": [{"field": e.field, "message": e.reason} for e in self.errors],
            "notes": list(self.notes),
        }


def _config(resources: Sequence[Resource]) -> tuple[InferenceServiceConfig, ConfigMap | None]:
    for resource in resources:
        if isinstance(resource, ConfigMap) and resource.name == _CONFIGMAP_NAME:
            try:
                return InferenceServiceConfig.from_configmap(resource.to_dict()), resource
            except ValidationError:
                return InferenceServiceConfig.default(), resource
    return InferenceServiceConfig.default(), None


class _Context:
    """The cluster the documents are checked against: all files' resources plus built-ins."""

    def __init__(self, resources: list[Resource], *, include_builtin: bool) -> None:
        self.resources = resources
        self.runtimes: list[AnyRuntime] = [
            r for r in resources if isinstance(r, ServingRuntime | ClusterServingRuntime)
        ]
        if include_builtin:
            given = {(r.kind, r.name) for r in self.runtimes}
            self.runtimes += [
                r for r in builtin_runtimes(copy=False) if (r.kind, r.name) not in given
            ]
        containers = [r for r in resources if isinstance(r, ClusterStorageContainer)]
        if not any(c.name == "default" for c in containers):
            containers.append(default_storage_container())
        self.storage_containers = containers
        self.caches = [r for r in resources if isinstance(r, LocalModelCache)]
        self.config, _ = _config(resources)


def _check(resource: Resource, context: _Context) -> tuple[list[ValidationError], list[str]]:
    errors: list[ValidationError] = []
    notes: list[str] = []
    if isinstance(resource, CoreObject):
        meta = resource.metadata
        if not (meta.name or meta.generate_name):
            errors.append(ValidationError("Required value", field="metadata.name"))
        if isinstance(resource, ConfigMap) and resource.name == _CONFIGMAP_NAME:
            try:
                InferenceServiceConfig.from_configmap(resource.to_dict())
            except ValidationError as exc:
                errors.append(exc)
        return errors, notes
    target = resource
    if isinstance(resource, InferenceService):
        target = default(resource, config=context.config, local_model_caches=context.caches)
    errors += validate(
        target, storage_containers=context.storage_containers, existing=context.resources
    )
    if isinstance(target, InferenceService) and not errors:
        if predictor_model(target) is None:
            notes.append("custom predictor containers")
        else:
            try:
                chosen = select_runtime(target, context.runtimes)
            except ValidationError as exc:
                errors.append(exc)
            else:
                notes.append(f"runtime {chosen.kind}/{chosen.name}")
    return errors, notes


def _finding(path: str, document: Document) -> Finding:
    return Finding(
        file=path,
        document=document.index,
        item=document.item,
        kind=document.kind,
        name=document.name,
        errors=list(document.errors),
    )


def validate_files(
    files: Sequence[str | os.PathLike[str]],
    *,
    include_builtin: bool = True,
    name: str | None = None,
) -> list[Finding]:
    """A :class:`Finding` per document of ``files`` (see the module docstring); with ``name``,
    only the documents of that name are reported (the others still form the context)."""
    parsed: list[tuple[str, Document]] = []
    findings: list[Finding] = []
    for raw in files:
        path = os.fspath(raw)
        if not Path(path).is_file():
            findings.append(
                Finding(file=path, document=None, errors=[ValidationError(f"no such file: {path}")])
            )
            continue
        try:
            documents = parse_documents(Path(path))
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(
                Finding(file=path, document=None, errors=[ValidationError(f"cannot read: {exc}")])
            )
            continue
        if not documents:
            findings.append(
                Finding(file=path, document=None, errors=[ValidationError("no documents")])
            )
        parsed += [(path, d) for d in documents]
    resources = [d.resource for _, d in parsed if d.resource is not None]
    context = _Context(resources, include_builtin=include_builtin)
    for path, document in parsed:
        if name is not None and document.name != name:
            continue
        finding = _finding(path, document)
        if document.resource is not None:
            finding.errors, finding.notes = _check(document.resource, context)
        findings.append(finding)
    if name is not None and not any(f.document is not None for f in findings):
        findings.append(
            Finding(
                file=", ".join(os.fspath(f) for f in files),
                document=None,
                errors=[ValidationError(f"no document named {name!r}", field="metadata.name")],
            )
        )
    return findings
