"""Admission for KServe's kinds: core's defaulting and validating rules, as webhook answers. Pure.

* :func:`defaults` is the mutating webhook: the merge patch that turns the object into what
  :func:`moorage.core.resources.default` makes of it (KServe's defaulting: the shorthand
  framework turned into ``model``, resources, the deployment-mode annotation, the local-model
  label, ...). Computed between the parsed object and the defaulted one, so that a field written
  differently (``"1"`` for ``1``) is not rewritten.
* :func:`refusals` is the validating webhook: every rule the object breaks, each
  ``<field path>: <message>`` as ``kubectl`` prints admission errors (schema first: an object
  that does not parse is refused with the path of the offending field), plus the rules on what an
  update may change (:func:`moorage.core.resources.validate_update`); for a TrainedModel, the
  rules that need its InferenceService (:mod:`moorage.controller.trainedmodel`).

Served for InferenceService, ServingRuntime, ClusterServingRuntime, TrainedModel,
InferenceGraph and LocalModelCache (:data:`WEBHOOK_KINDS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from moorage.controller.operator.apply import merge_patch
from moorage.controller.trainedmodel import admission_errors
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import (
    InferenceService,
    LocalModelCache,
    Resource,
    TrainedModel,
    default,
    parse_resource,
    validate,
    validate_update,
)

__all__ = ["WEBHOOK_KINDS", "WebhookKind", "defaults", "refusals"]


class WebhookKind(NamedTuple):
    kind: str
    version: str
    plural: str


GROUP = "serving.kserve.io"
WEBHOOK_KINDS = (
    WebhookKind("InferenceService", "v1beta1", "inferenceservices"),
    WebhookKind("ServingRuntime", "v1alpha1", "servingruntimes"),
    WebhookKind("ClusterServingRuntime", "v1alpha1", "clusterservingruntimes"),
    WebhookKind("TrainedModel", "v1alpha1", "trainedmodels"),
    WebhookKind("InferenceGraph", "v1alpha1", "inferencegraphs"),
    WebhookKind("LocalModelCache", "v1alpha1", "localmodelcaches"),
)

_SERVER_FIELDS = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp")


def _parse(body: Mapping[str, Any]) -> Resource:
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    clean = {k: v for k, v in body.items() if k != "status"}
    clean["metadata"] = meta
    return parse_resource(clean)


def defaults(
    body: Mapping[str, Any],
    *,
    config: InferenceServiceConfig | None = None,
    local_model_caches: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The merge patch of KServe's defaulting (empty: nothing to default, or the object does
    not parse, which the validating webhook refuses)."""
    try:
        resource = _parse(body)
    except ValidationError:
        return {}
    caches = []
    for raw in local_model_caches:
        try:
            cache = _parse(raw)
        except ValidationError:
            continue
        if isinstance(cache, LocalModelCache):
            caches.append(cache)
    defaulted = default(resource, config=config, local_model_caches=caches)
    patch = merge_patch(resource.to_dict(), defaulted.to_dict())
    return {k: v for k, v in patch.items() if k in ("metadata", "spec")}


def refusals(
    body: Mapping[str, Any],
    *,
    old: Mapping[str, Any] | None = None,
    existing: Iterable[Mapping[str, Any]] = (),
    inference_services: Mapping[str, Mapping[str, Any]] | None = None,
    config: InferenceServiceConfig | None = None,
) -> list[str]:
    """Why the API server must refuse ``body`` (``old``: the stored object, on an update);
    ``existing`` holds the other stored objects of its kind for cross-object rules. Empty when
    it is admitted.

    For a TrainedModel created or whose spec changes, ``inference_services`` (the namespace's,
    by name; None to skip) adds :func:`moorage.controller.trainedmodel.admission_errors`: its
    InferenceService exists, is multi-model, serves its framework and has the memory."""
    try:
        resource = _parse(body)
    except ValidationError as exc:
        return [str(exc)]
    others = []
    for raw in existing:
        try:
            others.append(_parse(raw))
        except ValidationError:
            continue
    errors: list[ValidationError]
    if old is not None:
        try:
            previous = _parse(old)
        except ValidationError:
            errors = validate(resource, existing=others)
        else:
            errors = validate_update(previous, resource, existing=others)
    else:
        errors = validate(resource, existing=others)
    changed = old is None or (old.get("spec") != body.get("spec"))
    if isinstance(resource, TrainedModel) and inference_services is not None and changed:
        errors += _trained_model_errors(resource, others, inference_services, config)
    return [str(e) for e in errors]


def _trained_model_errors(
    tm: TrainedModel,
    others: list[Resource],
    inference_services: Mapping[str, Mapping[str, Any]],
    config: InferenceServiceConfig | None,
) -> list[ValidationError]:
    raw = inference_services.get(tm.spec.inference_service)
    isvc = None
    if raw is not None:
        try:
            parsed = _parse(raw)
        except ValidationError:
            return []  # its own webhook refused it; nothing to compare with
        if isinstance(parsed, InferenceService):
            isvc = default(parsed, config=config)
    siblings = [o for o in others if isinstance(o, TrainedModel)]
    return admission_errors(tm, isvc, siblings, config=config)
