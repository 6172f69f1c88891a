"""From the cluster's state to the objects an InferenceService should have: pure.

:func:`render` takes the InferenceService as the API server holds it and a :class:`ClusterState`
(what the operator's watches hold: runtimes, the ``inferenceservice-config`` ConfigMap,
ServiceAccounts, Secrets, LocalModelCaches) and returns a :class:`Rendering`: either the objects
of :func:`moorage.controller.reconcile.desired_objects`, or a :class:`Failure` that says why not,
with KServe's ``modelStatus.lastFailureInfo.reason`` (``NoSupportingRuntime``,
``RuntimeNotRecognized``, ``RuntimeDisabled``, ``InvalidPredictorSpec``) and the field at fault.

Nothing is applied when a rendering fails: the operator writes the failure into the status and
records an Event instead, and keeps the objects it applied last.

Unlike ``moorage render``, the runtimes are only those on the cluster (the built-in ones are
installed as ClusterServingRuntimes by the chart): selection sees what KServe's controller sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moorage.controller.reconcile import desired_objects
from moorage.controller.runtime_selection import (
    AnyRuntime,
    SelectedRuntime,
    predictor_model,
    select_runtime,
)
from moorage.controller.workload import Workload
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import (
    ClusterServingRuntime,
    InferenceService,
    LocalModelCache,
    Resource,
    Secret,
    ServiceAccount,
    ServingRuntime,
    TrainedModel,
    default,
    ensure_valid,
    parse_resource,
)

__all__ = ["ClusterState", "Failure", "Rendering", "render", "trained_models"]

#: KServe's reasons (``modelStatus.lastFailureInfo.reason``) and transition states.
INVALID_SPEC = "InvalidSpec"
INVALID_PREDICTOR_SPEC = "InvalidPredictorSpec"
CONFIG_INVALID = "InvalidConfig"
SECRET_NOT_FOUND = "SecretNotFound"


@dataclass(frozen=True)
class Failure:
    """Why an InferenceService cannot be rendered.

    ``reason`` is KServe's failure reason for runtime problems (``NoSupportingRuntime``,
    ``RuntimeNotRecognized``, ``RuntimeDisabled``, ``InvalidPredictorSpec``), or
    ``InvalidConfig`` / ``SecretNotFound`` for the cluster's configuration; ``field`` is the path
    of the offending field (``spec.predictor.model.runtime``, ``data.ingress``).
    ``model_failure`` is true when KServe would write it into ``modelStatus.lastFailureInfo``.
    """

    reason: str
    message: str
    field: str = ""
    model_failure: bool = True

    def describe(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True)
class Rendering:
    """The objects to apply, or the failure that stopped the rendering."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    failure: Failure | None = None
    runtime: str | None = None
    isvc: InferenceService | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class ClusterState:
    """What the operator knows of the cluster besides the InferenceServices (raw objects).

    ``config`` is the ``inferenceservice-config`` ConfigMap (None: KServe's shipped values).
    """

    runtimes: list[Mapping[str, Any]] = field(default_factory=list)
    cluster_runtimes: list[Mapping[str, Any]] = field(default_factory=list)
    config: Mapping[str, Any] | None = None
    service_accounts: list[Mapping[str, Any]] = field(default_factory=list)
    secrets: list[Mapping[str, Any]] = field(default_factory=list)
    local_model_caches: list[Mapping[str, Any]] = field(default_factory=list)
    trained_models: list[Mapping[str, Any]] = field(default_factory=list)


_DEFAULT_CONFIG = InferenceServiceConfig.default()
#: Parsed objects by (kind, namespace, name, uid, resourceVersion): a version of an object on
#: the API server never changes, so it is parsed once however many renderings read it. Bounded.
_PARSED: dict[tuple[Any, ...], Any] = {}
_PARSED_MAX = 4096


def _version(body: Mapping[str, Any]) -> tuple[Any, ...] | None:
    meta = body.get("metadata") or {}
    if not meta.get("resourceVersion") or not meta.get("uid"):
        return None
    key = (body.get("kind"), meta.get("namespace"), meta.get("name"))
    return (*key, meta["uid"], meta["resourceVersion"])


def _parse_once(body: Mapping[str, Any]) -> Resource:
    key = _version(body)
    found = _PARSED.get(key) if key is not None else None
    if found is None:
        try:
            found = parse_resource(_clean(body))
        except ValidationError as exc:
            found = exc
        if key is not None:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[key] = found
    if isinstance(found, ValidationError):
        raise found
    return found


def parse_config(configmap: Mapping[str, Any] | None) -> InferenceServiceConfig:
    """The ConfigMap decoded; raises ValidationError (``field`` ``data.<key>``)."""
    if configmap is None:
        return _DEFAULT_CONFIG
    key = _version(configmap)
    found = _PARSED.get(key) if key is not None else None
    if isinstance(found, ValidationError):
        raise found
    if found is not None:
        return found
    try:
        config = InferenceServiceConfig.from_configmap(configmap)
    except ValidationError as exc:
        if key is not None:
            _PARSED[key] = exc
        raise
    if key is not None:
        _PARSED[key] = config
    return config


def _parsed(raw: Iterable[Mapping[str, Any]]) -> list[Resource]:
    out = []
    for body in raw:
        try:
            out.append(_parse_once(body))
        except ValidationError:
            continue  # a broken runtime or Secret is skipped, as an unlisted one would be
    return out


def trained_models(state: ClusterState, namespace: str) -> list[TrainedModel]:
    """The TrainedModels of ``namespace`` in ``state`` (malformed ones skipped)."""
    return [
        r
        for r in _parsed(state.trained_models)
        if isinstance(r, TrainedModel) and (r.namespace or "default") == namespace
    ]


def _clean(body: Mapping[str, Any]) -> dict[str, Any]:
    """A live object as a file would hold it: no status, no server-side metadata."""
    meta = {
        k: v
        for k, v in (body.get("metadata") or {}).items()
        if k not in ("managedFields", "ownerReferences", "selfLink")
    }
    return {**{k: v for k, v in body.items() if k != "status"}, "metadata": meta}


def _failure(exc: ValidationError, *, default_reason: str) -> Failure:
    reason = exc.details.get("reason") or default_reason
    return Failure(reason=str(reason), message=exc.reason, field=exc.field)


def _missing_secret(
    isvc: InferenceService, namespace: str, config: InferenceServiceConfig, names: set[str]
) -> Failure | None:
    """A Secret the InferenceService names by annotation that is not on the cluster."""
    annotations = isvc.metadata.annotations or {}
    wanted = annotations.get(config.credentials.storage_secret_name_annotation)
    if wanted and wanted not in names:
        return Failure(
            reason=SECRET_NOT_FOUND,
            message=f'secret "{wanted}" not found in namespace "{namespace}"',
            field=f"metadata.annotations[{config.credentials.storage_secret_name_annotation}]",
            model_failure=False,
        )
    return None


def render(
    body: Mapping[str, Any],
    state: ClusterState,
) -> Rendering:
    """The objects for the InferenceService ``body`` (see the module docstring)."""
    try:
        config = parse_config(state.config)
    except ValidationError as exc:
        return Rendering(
            failure=Failure(
                reason=CONFIG_INVALID,
                message=f"inferenceservice-config: {exc.reason}",
                field=exc.field,
                model_failure=False,
            )
        )
    try:
        isvc = parse_resource(_clean(body))
    except ValidationError as exc:
        return Rendering(failure=_failure(exc, default_reason=INVALID_PREDICTOR_SPEC))
    assert isinstance(isvc, InferenceService)
    namespace = isvc.namespace or "default"
    caches = [c for c in _parsed(state.local_model_caches) if isinstance(c, LocalModelCache)]
    try:
        isvc = default(isvc, config=config, local_model_caches=caches)
        ensure_valid(isvc)
    except ValidationError as exc:
        return Rendering(failure=_failure(exc, default_reason=INVALID_PREDICTOR_SPEC), isvc=isvc)
    runtimes: list[AnyRuntime] = [
        r
        for r in _parsed([*state.runtimes, *state.cluster_runtimes])
        if isinstance(r, ServingRuntime | ClusterServingRuntime)
        and (not isinstance(r, ServingRuntime) or r.namespace in (None, namespace))
    ]
    selected: SelectedRuntime | None = None
    if predictor_model(isvc) is not None:
        try:
            selected = select_runtime(isvc, runtimes)
        except ValidationError as exc:
            return Rendering(failure=_failure(exc, default_reason="NoSupportingRuntime"), isvc=isvc)
    others: list[Resource] = [
        r
        for r in _parsed([*state.service_accounts, *state.secrets])
        if isinstance(r, ServiceAccount | Secret) and r.namespace in (None, namespace)
    ]
    secret_names = {r.name for r in others if isinstance(r, Secret)}
    missing = _missing_secret(isvc, namespace, config, secret_names)
    if missing is not None:
        return Rendering(failure=missing, isvc=isvc)
    workload = Workload(
        isvc=isvc,
        runtimes=runtimes,
        base_dir=Path("/"),
        runtime=selected,
        others=[*others, *caches, *trained_models(state, namespace)],
        config=config,
    )
    try:
        objects = desired_objects(workload, namespace=namespace, config=config)
    except ValidationError as exc:
        return Rendering(failure=_failure(exc, default_reason=INVALID_PREDICTOR_SPEC), isvc=isvc)
    except ValueError as exc:  # the storage spec's Secret lacks what it needs
        return Rendering(
            failure=Failure(
                reason=INVALID_PREDICTOR_SPEC, message=str(exc), field="spec.predictor"
            ),
            isvc=isvc,
        )
    return Rendering(objects=objects, runtime=selected.name if selected else None, isvc=isvc)
