"""TrainedModels (multi-model serving) as pure functions: KServe's model config and statuses.

KServe v0.14's TrainedModel controller adds each TrainedModel of a multi-model InferenceService
to the ConfigMap ``modelconfig-<isvc>-0`` (key ``models.json``, a JSON list of
``{"modelName", "modelSpec": {"storageUri", "framework", "memory"}}``) that the predictor pod
mounts at ``/mnt/configs``; its ``agent`` sidecar (the puller) downloads the models and loads
them. :func:`plan_model_config` renders that ConfigMap from all the InferenceService's
TrainedModels at once, and each TrainedModel's status:

* an InferenceService is multi-model (:func:`is_multi_model`, KServe's ``IsMMSPredictor``) when
  its predictor has neither ``storageUri`` nor ``storage`` and is not a Hugging Face model, or
  when its custom container sets ``MULTI_MODEL_SERVER=true``;
* conditions ``InferenceServiceReady``, ``MemoryResourceAvailable`` and ``IsMMSPredictor`` with
  KServe's reasons and messages, and ``Ready`` when all three are true; ``url`` and
  ``address.url`` are the InferenceService's with ``/v1/models/<name>:predict`` (or
  ``/v2/models/<name>/infer`` for a ``v2`` predictor) appended;
* memory: TrainedModels are allocated in order (those KServe already allocated first, then by
  creation), each while the sum of their ``spec.model.memory`` fits the predictor container's
  memory limit (``inferenceService.resource.memoryLimit``, 2Gi, when it sets none);
* ``models.json`` lists the allocated models sorted by name (KServe's order is a map's).

Where moorage differs, on purpose: the ConfigMap is rendered whole from the TrainedModels (so a
deleted TrainedModel leaves it without a finalizer, and the operator applies it with the rest of
the InferenceService's objects, owned by it); a TrainedModel is listed as soon as it fits,
without waiting for the InferenceService to be ready (its status still says whether it is); a
TrainedModel whose framework is not the predictor's model format is not listed, its ``Ready``
condition is false with reason ``FrameworkNotSupported`` (KServe has the message but no check);
a TrainedModel whose InferenceService is gone is reported (``InferenceServiceNotFound``), not
deleted. :func:`admission_errors` is the validating webhook's part that needs the cluster: the
InferenceService exists, is multi-model, serves the framework, and has the memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from moorage.controller.agent import (
    MODEL_CONFIG_DIR,
    MODEL_CONFIG_KEY,
    MODEL_CONFIG_VOLUME,
    MODEL_DIR_VOLUME,
)
from moorage.controller.runtime_selection import predictor_model
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import InferenceService, TrainedModel

__all__ = [
    "ALLOCATED_LABEL",
    "MODEL_CONFIG_DIR",
    "MODEL_CONFIG_KEY",
    "MODEL_CONFIG_VOLUME",
    "MODEL_DIR_VOLUME",
    "ModelConfigPlan",
    "TrainedModelState",
    "admission_errors",
    "is_multi_model",
    "model_config_name",
    "parse_quantity",
    "plan_model_config",
    "predict_path",
]

ALLOCATED_LABEL = "serving.kserve.io/trainedmodel-allocated"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
MULTI_MODEL_ENV = "MULTI_MODEL_SERVER"

ISVC_READY = "InferenceServiceReady"
MEMORY_AVAILABLE = "MemoryResourceAvailable"
IS_MMS = "IsMMSPredictor"
READY = "Ready"

_NOT_READY = 'Inference Service "{isvc}" is not ready. Trained Model "{tm}" cannot deploy'
_NOT_MMS = (
    'Inference Service "{isvc}" predictor is not configured for multi-model serving. '
    'Trained Model "{tm}" cannot deploy'
)
_NO_MEMORY = (
    'Inference Service "{isvc}" memory resources are not available. '
    'Trained Model "{tm}" cannot deploy'
)
_NO_FRAMEWORK = (
    'Inference Service "{isvc}" does not support the Trained Model "{tm}" framework "{framework}"'
)

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}  # fmt: skip


def model_config_name(isvc_name: str, shard: int = 0) -> str:
    """KServe's ``constants.ModelConfigName``: ``modelconfig-<isvc>-<shard>``."""
    return f"modelconfig-{isvc_name}-{shard}"


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity (``1Gi``, ``500M``, ``1e9``, ``0.5``) as a number (``ValueError``)."""
    text = str(value).strip()
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return _number(text[: -len(suffix)], value) * factor
    for suffix in sorted(_DECIMAL, key=len, reverse=True):
        if suffix and text.endswith(suffix) and not text.lower().endswith(f"e{suffix}"):
            return _number(text[: -len(suffix)], value) * _DECIMAL[suffix]
    return _number(text, value)


def _number(text: str, original: object) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a quantity: {original!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a quantity: {original!r}")
    return number


def is_multi_model(isvc: InferenceService) -> bool:
    """KServe's ``IsMMSPredictor`` (see the module docstring)."""
    predictor = isvc.spec.predictor
    containers = predictor.containers or []
    if containers:
        env = containers[0].env or []
        return any(e.name == MULTI_MODEL_ENV and e.value == "true" for e in env)
    model = predictor_model(isvc)
    if model is None or model.model_format.name == "huggingface":
        return False
    return not model.spec.storage_uri and model.spec.storage is None


def predict_path(name: str, protocol: str | None) -> str:
    """KServe's ``constants.PredictPath``."""
    if protocol == "v2":
        return f"/v2/models/{name}/infer"
    return f"/v1/models/{name}:predict"


def _protocol(isvc: InferenceService) -> str:
    model = predictor_model(isvc)
    return (model.spec.protocol_version if model is not None else None) or "v1"


def _memory_limit(isvc: InferenceService, config: InferenceServiceConfig) -> Decimal:
    model = predictor_model(isvc)
    containers = isvc.spec.predictor.containers or []
    source: Any = model.spec if model is not None else (containers[0] if containers else None)
    resources = source.resources if source is not None else None
    limit = None
    if resources is not None:
        limits = resources.model_dump(by_alias=True, exclude_none=True).get("limits") or {}
        limit = limits.get("memory")
    return parse_quantity(limit or config.inference_service.resource.memory_limit)


def _serves_framework(isvc: InferenceService, framework: str) -> bool:
    model = predictor_model(isvc)
    return model is None or model.model_format.name.lower() == framework.lower()


def _is_ready(status: Mapping[str, Any] | None) -> bool:
    for condition in (status or {}).get("conditions") or ():
        if condition.get("type") == READY:
            return bool(condition.get("status") == "True")
    return False


@dataclass(frozen=True)
class TrainedModelState:
    """One TrainedModel's outcome: listed in ``models.json`` or not, and its status."""

    name: str
    allocated: bool
    status: dict[str, Any]


@dataclass(frozen=True)
class ModelConfigPlan:
    """The ``modelconfig-<isvc>-0`` ConfigMap (None unless the InferenceService is multi-model)
    and the state of every TrainedModel that names the InferenceService."""

    configmap: dict[str, Any] | None
    models: list[TrainedModelState]


def _condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    condition: dict[str, Any] = {"type": kind, "status": status}
    if not ok:
        condition["reason"] = reason
        condition["message"] = message
    before = previous.get(kind)
    same = before is not None and before.get("status") == status
    condition["lastTransitionTime"] = (before or {}).get("lastTransitionTime") if same else now
    if condition["lastTransitionTime"] is None:
        condition["lastTransitionTime"] = now
    return condition


def _status(
    tm: TrainedModel,
    isvc: InferenceService | None,
    isvc_status: Mapping[str, Any] | None,
    *,
    multi_model: bool,
    fits: bool,
    framework_ok: bool,
    now: str,
) -> dict[str, Any]:
    old = tm.status.model_dump(by_alias=True, exclude_none=True) if tm.status else {}
    previous = {c["type"]: c for c in old.get("conditions") or () if "type" in c}
    isvc_name = tm.spec.inference_service
    if isvc is None:
        ready_reason = "InferenceServiceNotFound"
        ready_message = f'InferenceService "{isvc_name}" not found'
    else:
        ready_reason = "InferenceServiceNotReady"
        ready_message = "Inference Service needs to be ready before Trained Model can be ready"
    conditions = [
        _condition(
            ISVC_READY, isvc is not None and _is_ready(isvc_status), ready_reason, ready_message,
            previous, now,
        ),
        _condition(
            IS_MMS, multi_model, "IsNotMMSPredictor",
            "Inference Service predictor is not configured for multi-model serving",
            previous, now,
        ),
        _condition(
            MEMORY_AVAILABLE, fits, "MemoryResourceNotAvailable",
            "Inference Service does not have enough memory resources for Trained Model",
            previous, now,
        ),
    ]  # fmt: skip
    failing = next((c for c in conditions if c["status"] != "True"), None)
    if failing is None and not framework_ok:
        message = _NO_FRAMEWORK.format(
            isvc=isvc_name, tm=tm.name, framework=tm.spec.model.framework
        )
        failing = {"reason": "FrameworkNotSupported", "message": message}
    ready = _condition(
        READY,
        failing is None,
        (failing or {}).get("reason", ""),
        (failing or {}).get("message", ""),
        previous,
        now,
    )
    status: dict[str, Any] = {"conditions": sorted([*conditions, ready], key=lambda c: c["type"])}
    if isvc is not None and isvc_status:
        path = predict_path(tm.name, _protocol(isvc))
        if isvc_status.get("url"):
            status["url"] = f"{isvc_status['url']}{path}"
        address = (isvc_status.get("address") or {}).get("url")
        if address:
            status["address"] = {"url": f"{address}{path}"}
    if tm.metadata.generation is not None:
        status["observedGeneration"] = tm.metadata.generation
    return status


def _allocation_order(models: Iterable[TrainedModel]) -> list[TrainedModel]:
    def key(tm: TrainedModel) -> tuple[int, str, str]:
        allocated = ALLOCATED_LABEL in (tm.metadata.labels or {})
        created = str(tm.metadata.creation_timestamp or "")
        return (0 if allocated else 1, created, tm.name)

    return sorted(models, key=key)


def plan_model_config(
    isvc: InferenceService | None,
    trained_models: Sequence[TrainedModel],
    *,
    isvc_name: str,
    namespace: str,
    isvc_status: Mapping[str, Any] | None = None,
    config: InferenceServiceConfig | None = None,
    now: str = "",
) -> ModelConfigPlan:
    """The model config of the InferenceService ``isvc_name`` (``isvc``, None when it does not
    exist) and the states of ``trained_models`` that name it (others are ignored, as are those
    being deleted); ``isvc_status`` is its status as the API server holds it."""
    config = config or InferenceServiceConfig.default()
    mine = [
        tm
        for tm in trained_models
        if tm.spec.inference_service == isvc_name and not tm.metadata.deletion_timestamp
    ]
    multi_model = isvc is not None and is_multi_model(isvc)
    limit = _memory_limit(isvc, config) if isvc is not None else Decimal(0)
    used = Decimal(0)
    states: list[TrainedModelState] = []
    entries: list[dict[str, Any]] = []
    for tm in _allocation_order(mine):
        framework_ok = isvc is not None and _serves_framework(isvc, tm.spec.model.framework)
        try:
            memory = parse_quantity(tm.spec.model.memory)
        except ValueError:
            memory = limit + 1
        fits = isvc is not None and used + memory <= limit
        allocated = multi_model and fits and framework_ok
        if allocated:
            used += memory
            entries.append(
                {
                    "modelName": tm.name,
                    "modelSpec": {
                        "storageUri": tm.spec.model.storage_uri,
                        "framework": tm.spec.model.framework,
                        "memory": str(tm.spec.model.memory),
                    },
                }
            )
        status = _status(
            tm, isvc, isvc_status, multi_model=multi_model, fits=fits,
            framework_ok=framework_ok, now=now,
        )  # fmt: skip
        states.append(TrainedModelState(tm.name, allocated, status))
    configmap = None
    if isvc is not None and multi_model:
        entries.sort(key=lambda e: e["modelName"])
        # KServe labels it with the InferenceService's labels; the operator finds it by the last.
        labels = {**(isvc.metadata.labels or {}), ISVC_LABEL: isvc_name}
        meta = {"name": model_config_name(isvc_name), "namespace": namespace, "labels": labels}
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {MODEL_CONFIG_KEY: json.dumps(entries, separators=(",", ":"))},
        }
    states.sort(key=lambda s: s.name)
    return ModelConfigPlan(configmap, states)


def admission_errors(
    tm: TrainedModel,
    isvc: InferenceService | None,
    siblings: Iterable[TrainedModel] = (),
    *,
    config: InferenceServiceConfig | None = None,
) -> list[ValidationError]:
    """Why the validating webhook refuses ``tm`` given the cluster: its InferenceService
    (``isvc``, None when missing) and the other TrainedModels of the namespace."""
    config = config or InferenceServiceConfig.default()
    name = tm.spec.inference_service
    if isvc is None:
        return [
            ValidationError(
                f'InferenceService "{name}" not found: Trained Model "{tm.name}" cannot deploy',
                field="spec.inferenceService",
            )
        ]
    errors: list[ValidationError] = []
    if not is_multi_model(isvc):
        errors.append(
            ValidationError(_NOT_MMS.format(isvc=name, tm=tm.name), field="spec.inferenceService")
        )
    if not _serves_framework(isvc, tm.spec.model.framework):
        message = _NO_FRAMEWORK.format(isvc=name, tm=tm.name, framework=tm.spec.model.framework)
        errors.append(ValidationError(message, field="spec.model.framework"))
    try:
        total = parse_quantity(tm.spec.model.memory)
        for other in siblings:
            if other.name != tm.name and other.spec.inference_service == name:
                total += parse_quantity(other.spec.model.memory)
    except ValueError:
        return errors  # the stateless rules report the malformed quantity
    if total > _memory_limit(isvc, config):
        errors.append(
            ValidationError(_NO_MEMORY.format(isvc=name, tm=tm.name), field="spec.model.memory")
        )
    return errors
