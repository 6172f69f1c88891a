"""One parsing path for ``moorage run``, ``validate`` and ``render``: files in, a checked
:class:`Workload` out.

A workload is one InferenceService, defaulted and validated as the API server's webhooks would,
the runtimes it may use (those given in files, then moorage's built-in ClusterServingRuntimes)
and the runtime selected for its predictor. The cluster state it needs comes from the files too:
an ``inferenceservice-config`` ConfigMap among them is the configuration (KServe's shipped one
otherwise), and LocalModelCaches take part in defaulting. Every failure is a
:class:`moorage.core.errors.ValidationError` whose ``field`` is the offending path and whose
``details`` name the file (``path``) and document index when there is one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moorage.controller.runtime_selection import (
    AnyRuntime,
    SelectedRuntime,
    predictor_model,
    select_runtime,
)
from moorage.core.config.configmap import CONFIGMAP_NAME, InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import (
    ClusterServingRuntime,
    ConfigMap,
    InferenceService,
    LocalModelCache,
    ModelFormat,
    ModelSpec,
    ObjectMeta,
    PredictorSpec,
    Resource,
    ServingRuntime,
    builtin_runtimes,
    default,
    ensure_valid,
    load_resources,
)
from moorage.core.resources import InferenceServiceSpec as _Spec

__all__ = ["Workload", "load_workload", "one_off_workload"]

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Workload:
    """An InferenceService ready to render or run.

    ``base_dir`` is the directory of the file that held the InferenceService (local relative
    storage URIs are resolved against it); ``runtime`` is None for a custom-container predictor.
    """

    isvc: InferenceService
    runtimes: list[AnyRuntime]
    base_dir: Path
    runtime: SelectedRuntime | None
    source: str = ""
    others: list[Resource] = field(default_factory=list)
    config: InferenceServiceConfig = field(default_factory=InferenceServiceConfig.default)


def _located(exc: ValidationError, path: str) -> ValidationError:
    """``exc`` with ``details["path"]`` set (its sub-errors keep theirs)."""
    if not path or exc.details.get("path"):
        return exc
    details = {k: v for k, v in exc.details.items() if k not in ("field", "path")}
    return ValidationError(exc.reason, field=exc.field, path=path, **details)


def _read(path: Path) -> list[Resource]:
    if not path.is_file():
        raise ValidationError(f"no such file: {path}", field="", path=str(path))
    try:
        return load_resources(path)
    except ValidationError as exc:
        raise _located(exc, str(path)) from None


def _finish(
    isvc: InferenceService,
    runtimes: list[AnyRuntime],
    *,
    base_dir: Path,
    source: str,
    others: list[Resource],
    include_builtin: bool,
    config: InferenceServiceConfig | None,
) -> Workload:
    config = config or _config_from(others)
    caches = [o for o in others if isinstance(o, LocalModelCache)]
    try:
        isvc = default(isvc, config=config, local_model_caches=caches)
        ensure_valid(isvc)
    except ValidationError as exc:
        raise _located(exc, source) from None
    candidates = list(runtimes)
    if include_builtin:
        given = {(r.kind, r.name) for r in runtimes}
        candidates += [r for r in builtin_runtimes(copy=False) if (r.kind, r.name) not in given]
    selected: SelectedRuntime | None = None
    if predictor_model(isvc) is not None:
        try:
            selected = select_runtime(isvc, candidates)
        except ValidationError as exc:
            raise _located(exc, source) from None
    return Workload(
        isvc=isvc,
        runtimes=candidates,
        base_dir=base_dir,
        runtime=selected,
        source=source,
        others=others,
        config=config,
    )


def _config_from(others: list[Resource]) -> InferenceServiceConfig:
    """The ``inferenceservice-config`` ConfigMap among the files, or KServe's shipped one."""
    for resource in others:
        if isinstance(resource, ConfigMap) and resource.name == CONFIGMAP_NAME:
            try:
                return InferenceServiceConfig.from_configmap(resource.to_dict())
            except ValidationError as exc:
                raise ValidationError(exc.reason, field=exc.field, kind="ConfigMap") from None
    return InferenceServiceConfig.default()


def load_workload(
    files: Sequence[str | os.PathLike[str]],
    *,
    name: str | None = None,
    include_builtin: bool = True,
    config: InferenceServiceConfig | None = None,
) -> Workload:
    """The workload described by ``files`` (multi-document YAML or JSON).

    Exactly one InferenceService must be among them, or ``name`` must pick one. The runtimes in
    the files come before the built-in ones and replace a built-in of the same kind and name.
    ``config`` wins over an ``inferenceservice-config`` ConfigMap in the files.
    """
    if not files:
        raise ValidationError("no file given: pass -f isvc.yaml", field="")
    services: list[tuple[InferenceService, Path]] = []
    runtimes: list[AnyRuntime] = []
    others: list[Resource] = []
    for raw in files:
        path = Path(raw)
        for resource in _read(path):
            if isinstance(resource, InferenceService):
                services.append((resource, path))
            elif isinstance(resource, ServingRuntime | ClusterServingRuntime):
                runtimes.append(resource)
            else:
                others.append(resource)
    if name is not None:
        services = [(s, p) for s, p in services if s.name == name]
    if len(services) != 1:
        listed = ", ".join(str(f) for f in files)
        if not services:
            wanted = f"named {name!r} " if name else ""
            raise ValidationError(f"no InferenceService {wanted}in {listed}", field="kind")
        names = ", ".join(s.name for s, _ in services)
        raise ValidationError(
            f"{len(services)} InferenceServices in {listed} ({names}); pick one with --name",
            field="metadata.name",
        )
    isvc, path = services[0]
    return _finish(
        isvc,
        runtimes,
        base_dir=path.resolve().parent,
        source=str(path),
        others=others,
        include_builtin=include_builtin,
        config=config,
    )


def _default_name(storage_uri: str, model_format: str) -> str:
    tail = storage_uri.rstrip("/").rsplit("/", 1)[-1]
    tail = tail.split(":", 1)[0].rsplit(".", 1)[0] if "." in tail else tail.split(":", 1)[0]
    candidate = _NOT_DNS.sub("-", tail.lower()).strip("-")
    if not candidate or not candidate[0].isalpha():
        candidate = model_format.lower()
    return candidate[:63].rstrip("-") or "model"


def one_off_workload(
    *,
    model_format: str,
    storage_uri: str,
    name: str | None = None,
    format_version: str | None = None,
    runtime: str | None = None,
    protocol_version: str | None = None,
    runtime_files: Sequence[str | os.PathLike[str]] = (),
    base_dir: Path | None = None,
    include_builtin: bool = True,
) -> Workload:
    """The workload of ``moorage run --model-format F --storage-uri URI`` (no YAML file)."""
    runtimes: list[AnyRuntime] = []
    others: list[Resource] = []
    for raw in runtime_files:
        for resource in _read(Path(raw)):
            if isinstance(resource, ServingRuntime | ClusterServingRuntime):
                runtimes.append(resource)
            elif isinstance(resource, InferenceService):
                raise ValidationError(
                    f"{raw} holds an InferenceService; use either -f isvc.yaml or "
                    "--model-format/--storage-uri, not both",
                    field="kind",
                    path=str(raw),
                )
            else:
                others.append(resource)
    model = ModelSpec.model_validate(
        {
            "modelFormat": ModelFormat(name=model_format, version=format_version),
            "storageUri": storage_uri,
            "runtime": runtime,
            "protocolVersion": protocol_version,
        }
    )
    isvc = InferenceService(
        metadata=ObjectMeta(name=name or _default_name(storage_uri, model_format)),
        spec=_Spec(predictor=PredictorSpec(model=model)),
    )
    return _finish(
        isvc,
        runtimes,
        base_dir=base_dir or Path.cwd(),
        source="",
        others=others,
        include_builtin=include_builtin,
        config=None,
    )
