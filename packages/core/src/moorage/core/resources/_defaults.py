"""KServe's defaulting (mutating) webhook, as one pure function.

:func:`default` returns a defaulted copy and never changes its argument. For an InferenceService
it follows KServe v0.14's ``DefaultInferenceService``:

1. ``serving.kserve.io/deploymentMode`` is set from ``deploy.defaultDeploymentMode`` when that is
   ``RawDeployment`` or ``ModelMesh`` and the annotation is absent (Serverless needs none).
2. Unless the mode is ModelMesh, a framework shorthand (``sklearn:`` ...) becomes
   ``model: {modelFormat: {name: sklearn}, ...}``; triton, onnx and huggingface get
   ``protocolVersion: v2`` when unset, and so does any ``model`` whose format is triton.
3. Every component with exactly one implementation gets container name ``kserve-container``
   and default resource requests/limits (``inferenceService.resource`` of the ConfigMap; KServe
   v0.14's fixed cpu 1 / memory 2Gi otherwise) for the keys it does not set; the ART explainer
   gets ``runtimeVersion`` from ``explainers.art.defaultImageVersion``; a logger gets
   ``mode: all``.
4. With ``localModel.enabled`` (and without the ``serving.kserve.io/disable-localmodel``
   annotation) the first LocalModelCache by name whose ``sourceModelUri`` prefixes the
   predictor's storage URI (:func:`~moorage.core.resources.matching_cache`, whatever order the
   caches come in) labels the service: label ``internal.serving.kserve.io/localmodel: <cache>``,
   annotations ``internal.serving.kserve.io/localmodel-sourceuri: <sourceModelUri>`` and
   ``internal.serving.kserve.io/localmodel-pvc-name: <cache>-<nodeGroups[0]>`` (v0.14.1).
5. With ``security.autoMountServiceAccountToken: false``, components that do not say otherwise
   get ``automountServiceAccountToken: false``.

Other kinds have no defaults in KServe v0.14 and come back as copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from moorage.core._generated import k8s
from moorage.core.resources._inferenceservice import (
    FRAMEWORKS,
    ComponentExtensionSpec,
    ExplainerSpec,
    InferenceService,
    ModelFormat,
    ModelSpec,
    PodSpec,
    PredictorSpec,
    TransformerSpec,
)
from moorage.core.resources._localmodel import LocalModelCache, matching_cache
from moorage.core.resources._meta import Resource

if TYPE_CHECKING:
    from moorage.core.config.configmap import InferenceServiceConfig

__all__ = [
    "DEPLOYMENT_MODE_ANNOTATION",
    "DISABLE_LOCAL_MODEL_ANNOTATION",
    "LOCAL_MODEL_LABEL",
    "LOCAL_MODEL_PVC_ANNOTATION",
    "LOCAL_MODEL_SOURCE_URI_ANNOTATION",
    "MAIN_CONTAINER",
    "default",
]

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DISABLE_LOCAL_MODEL_ANNOTATION = "serving.kserve.io/disable-localmodel"
LOCAL_MODEL_LABEL = "internal.serving.kserve.io/localmodel"
LOCAL_MODEL_SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/localmodel-sourceuri"
LOCAL_MODEL_PVC_ANNOTATION = "internal.serving.kserve.io/localmodel-pvc-name"
MAIN_CONTAINER = "kserve-container"

#: Shorthands whose protocol defaults to v2 when they are turned into ``model``.
_V2_BY_DEFAULT = frozenset({"triton", "onnx", "huggingface"})

R = TypeVar("R", bound=Resource)


def default(
    resource: R,
    /,
    *,
    config: InferenceServiceConfig | None = None,
    local_model_caches: Iterable[LocalModelCache] = (),
) -> R:
    """A copy of ``resource`` with KServe's defaults applied (see the module docstring)."""
    copy = resource.model_copy(deep=True)
    if isinstance(copy, InferenceService):
        if config is None:
            from moorage.core.config.configmap import InferenceServiceConfig

            config = InferenceServiceConfig.default()
        _default_isvc(copy, config, list(local_model_caches))
    return copy


def _default_isvc(
    isvc: InferenceService, config: InferenceServiceConfig, caches: list[LocalModelCache]
) -> None:
    meta = isvc.metadata
    annotations = meta.annotations or {}
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    if mode is None and config.deploy.default_deployment_mode in ("RawDeployment", "ModelMesh"):
        mode = config.deploy.default_deployment_mode
        meta.annotations = {**annotations, DEPLOYMENT_MODE_ANNOTATION: mode}

    predictor = isvc.spec.predictor
    components: list[PredictorSpec | TransformerSpec | ExplainerSpec] = []
    if mode != "ModelMesh":
        _shorthand_to_model(predictor)
        components.append(predictor)
    components += [c for c in (isvc.spec.transformer, isvc.spec.explainer) if c is not None]
    for component in components:
        _default_component(component, config)

    if config.local_model.enabled and DISABLE_LOCAL_MODEL_ANNOTATION not in (
        meta.annotations or {}
    ):
        _set_local_model(isvc, caches)

    if not config.security.auto_mount_service_account_token:
        for comp in (predictor, isvc.spec.transformer, isvc.spec.explainer):
            if comp is not None and comp.automount_service_account_token is None:
                comp.automount_service_account_token = False


def _shorthand_to_model(predictor: PredictorSpec) -> None:
    for field, format_name in FRAMEWORKS.items():
        spec = getattr(predictor, field)
        if spec is None:
            continue
        values = {name: getattr(spec, name) for name in type(spec).model_fields}
        if field in _V2_BY_DEFAULT and values.get("protocol_version") is None:
            values["protocol_version"] = "v2"
        predictor.model = ModelSpec(model_format=ModelFormat(name=format_name), **values)
        setattr(predictor, field, None)
        break
    model = predictor.model
    if model is not None and model.protocol_version is None and model.model_format.name == "triton":
        model.protocol_version = "v2"


def _implementation_count(component: PredictorSpec | TransformerSpec | ExplainerSpec) -> int:
    if isinstance(component, PredictorSpec):
        return len(component.implementations())
    if isinstance(component, ExplainerSpec):
        return int(component.art is not None) + int(bool(component.containers))
    return int(bool(component.containers))


def _default_resources(
    requirements: k8s.ResourceRequirements | None, config: InferenceServiceConfig
) -> k8s.ResourceRequirements:
    defaults = config.inference_service.resource
    requirements = requirements or k8s.ResourceRequirements()
    requests = dict(requirements.requests or {})
    limits = dict(requirements.limits or {})
    for key, value in (("cpu", defaults.cpu_request), ("memory", defaults.memory_request)):
        if value:
            requests.setdefault(key, value)
    for key, value in (("cpu", defaults.cpu_limit), ("memory", defaults.memory_limit)):
        if value:
            limits.setdefault(key, value)
    requirements.requests = requests
    requirements.limits = limits
    return requirements


def _default_component(
    component: PredictorSpec | TransformerSpec | ExplainerSpec, config: InferenceServiceConfig
) -> None:
    if _implementation_count(component) != 1:
        return  # validation reports it; KServe's webhook logs and skips defaulting
    if isinstance(component, PredictorSpec) and component.model is not None:
        target = component.model
        target.name = target.name or MAIN_CONTAINER
        target.resources = _default_resources(target.resources, config)
    elif isinstance(component, ExplainerSpec) and component.art is not None:
        art = component.art
        art.name = art.name or MAIN_CONTAINER
        if art.runtime_version is None:
            art.runtime_version = config.explainers.art.default_image_version
        art.resources = _default_resources(art.resources, config)
    elif isinstance(component, PredictorSpec) and component.implementation() is not None:
        # A shorthand left in place (ModelMesh mode): name and resources as KServe does.
        impl = component.implementation()
        assert impl is not None
        impl.name = impl.name or MAIN_CONTAINER
        impl.resources = _default_resources(impl.resources, config)
    elif isinstance(component, PodSpec) and component.containers:
        first = component.containers[0]
        if not first.name:
            first.name = MAIN_CONTAINER
        first.resources = _default_resources(first.resources, config)
    logger = component.logger if isinstance(component, ComponentExtensionSpec) else None
    if logger is not None and logger.mode is None:
        logger.mode = "all"


def _set_local_model(isvc: InferenceService, caches: list[LocalModelCache]) -> None:
    impl = isvc.spec.predictor.implementation()
    uri = impl.storage_uri if impl is not None else None
    if not uri:
        return
    by_name = {cache.name: cache for cache in caches}
    name = matching_cache(uri, {n: c.spec.source_model_uri for n, c in by_name.items()})
    if name is None:
        return
    cache = by_name[name]
    meta = isvc.metadata
    meta.labels = {**(meta.labels or {}), LOCAL_MODEL_LABEL: name}
    meta.annotations = {
        **(meta.annotations or {}),
        LOCAL_MODEL_SOURCE_URI_ANNOTATION: cache.spec.source_model_uri,
        LOCAL_MODEL_PVC_ANNOTATION: f"{name}-{cache.spec.node_groups[0]}",
    }
