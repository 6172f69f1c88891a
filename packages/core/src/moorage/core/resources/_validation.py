"""KServe's validating webhooks, as pure functions that report every problem at once.

:func:`validate` returns a list of :class:`~moorage.core.errors.ValidationError` (empty when the
resource is valid), each with ``field`` set (``spec.predictor.minReplicas``) and KServe v0.14's
message where KServe has one. :func:`ensure_valid` raises the first of them, carrying the whole
list in ``details["errors"]``. :func:`validate_update` adds the rules that compare an update with
the stored object (LocalModelCache's immutable ``sourceModelUri``, ...).

Rules that KServe leaves to a later failure (a reconcile error, a knative rejection) and that
moorage checks up front are marked "moorage:" below.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from moorage.core._generated import k8s
from moorage.core.errors import InvalidStorageURI, ValidationError
from moorage.core.resources._inferencegraph import InferenceGraph
from moorage.core.resources._inferenceservice import (
    FRAMEWORKS,
    ComponentExtensionSpec,
    ExplainerSpec,
    InferenceService,
    PredictorExtensionSpec,
    PredictorSpec,
    StorageSpec,
    TransformerSpec,
)
from moorage.core.resources._localmodel import LocalModelCache, LocalModelNodeGroup
from moorage.core.resources._meta import Resource
from moorage.core.resources._servingruntime import ClusterServingRuntime, ServingRuntime
from moorage.core.resources._storagecontainer import (
    ClusterStorageContainer,
    StorageContainerSpec,
    SupportedUriFormat,
)
from moorage.core.resources._trainedmodel import TrainedModel
from moorage.core.storage_uri import check_controller_storage_uri

__all__ = [
    "default_storage_container",
    "ensure_valid",
    "validate",
    "validate_storage_uri",
    "validate_update",
]

NAME_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_NAME_RE = re.compile(f"^{NAME_FMT}$")

#: ``storage.parameters.type`` values (SupportedStorageSpecURIPrefixList without ``://``).
STORAGE_SPEC_TYPES = ("s3", "hdfs", "webhdfs")
#: Kubernetes resource.Quantity syntax.
_QUANTITY_RE = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
KNATIVE_CLASS_ANNOTATION = "autoscaling.knative.dev/class"
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"
AUTOSCALER_CLASSES = ("hpa", "external")
HPA_METRICS = ("cpu", "memory")
KPA_METRICS = ("concurrency", "rps")
TRANSFORMER_CONTAINER = "transformer-container"
STORAGE_URI_ENV = "STORAGE_URI"

_PREDICTOR_IMPLEMENTATIONS = (
    "SKLearn, XGBoost, Tensorflow, PyTorch, Triton, ONNX, HuggingFace, PMML, LightGBM, Paddle, "
    "Model, WorkerSpec, PodSpec"
)


def default_storage_container() -> ClusterStorageContainer:
    """KServe's shipped ClusterStorageContainer ``default`` (config/storagecontainers/default.yaml).

    It is what lets ``hf://`` URIs (and Azure file shares) pass URI validation on a cluster.
    """
    return ClusterStorageContainer(
        metadata=k8s.ObjectMeta(name="default"),
        spec=StorageContainerSpec(
            container=k8s.Container(
                name="storage-initializer", image="kserve/storage-initializer:latest"
            ),
            supported_uri_formats=[
                SupportedUriFormat(prefix="gs://"),
                SupportedUriFormat(prefix="s3://"),
                SupportedUriFormat(prefix="hdfs://"),
                SupportedUriFormat(prefix="hf://"),
                SupportedUriFormat(prefix="webhdfs://"),
                SupportedUriFormat(regex=r"https://(.+?).blob.core.windows.net/(.+)"),
                SupportedUriFormat(regex=r"https://(.+?).file.core.windows.net/(.+)"),
                SupportedUriFormat(regex=r"https?://(.+)/(.+)"),
            ],
            workload_type="initContainer",
        ),
    )


def validate_storage_uri(
    uri: str, *, storage_containers: Sequence[ClusterStorageContainer] | None = None
) -> str | None:
    """KServe's ValidateStorageURI: None when ``uri`` is acceptable, else the error message.

    ``storage_containers`` defaults to KServe's shipped ``default`` ClusterStorageContainer.
    """
    containers = [default_storage_container()] if storage_containers is None else storage_containers
    if any(c.supports(uri) for c in containers):
        return None
    try:
        check_controller_storage_uri(uri)
    except InvalidStorageURI as exc:
        return exc.message
    return None


def validate(
    resource: Resource,
    /,
    *,
    storage_containers: Sequence[ClusterStorageContainer] | None = None,
    existing: Iterable[Resource] = (),
) -> list[ValidationError]:
    """Every rule ``resource`` breaks (empty list when valid).

    ``existing`` holds other stored objects for cross-object rules (two LocalModelCaches with one
    source URI, two runtimes with the same priority for a format).
    """
    errors: list[ValidationError] = []
    others = [o for o in existing if o is not resource]
    if isinstance(resource, InferenceService):
        _check_isvc(resource, errors, storage_containers)
    elif isinstance(resource, ServingRuntime | ClusterServingRuntime):
        _check_runtime(resource, errors, others)
    elif isinstance(resource, LocalModelCache):
        _check_cache(resource, errors, others, storage_containers)
    elif isinstance(resource, LocalModelNodeGroup):
        _check_quantity(resource.spec.storage_limit, "spec.storageLimit", errors)
    elif isinstance(resource, TrainedModel):
        _check_trained_model(resource, errors, storage_containers)
    elif isinstance(resource, InferenceGraph):
        _check_graph(resource, errors)
    elif isinstance(resource, ClusterStorageContainer):
        _check_storage_container(resource, errors)
    return errors


def validate_update(
    old: Resource,
    new: Resource,
    /,
    *,
    storage_containers: Sequence[ClusterStorageContainer] | None = None,
    existing: Iterable[Resource] = (),
) -> list[ValidationError]:
    """:func:`validate` of ``new`` plus the rules on what an update may change."""
    errors: list[ValidationError] = []
    if (
        isinstance(old, LocalModelCache)
        and isinstance(new, LocalModelCache)
        and old.spec.source_model_uri != new.spec.source_model_uri
    ):
        errors.append(ValidationError("StorageUri is immutable", field="spec.sourceModelUri"))
    if (
        isinstance(old, TrainedModel)
        and isinstance(new, TrainedModel)
        and str(old.spec.model.memory) != str(new.spec.model.memory)
    ):
        errors.append(
            ValidationError(
                f'the memory spec of TrainedModel "{new.name}" is immutable',
                field="spec.model.memory",
            )
        )
    if isinstance(old, InferenceService) and isinstance(new, InferenceService):
        _check_mode_change(old, new, errors)
    errors += validate(
        new,
        storage_containers=storage_containers,
        existing=[e for e in existing if e.name != new.name],
    )
    return errors


def ensure_valid(resource: Resource, /, **kwargs: object) -> None:
    """Raise the first :func:`validate` error (with all of them in ``details["errors"]``)."""
    errors = validate(resource, **kwargs)  # type: ignore[arg-type]
    if errors:
        first = errors[0]
        raise ValidationError(first.reason, field=first.field, errors=errors)


# --- InferenceService -------------------------------------------------------------------------


def _check_name(kind_label: str, name: str, errors: list[ValidationError]) -> None:
    if not _NAME_RE.match(name):
        # KServe's wording, "a InferenceService" included.
        errors.append(
            ValidationError(
                f'the {kind_label} "{name}" is invalid: a {kind_label} name must consist of '
                "lower case alphanumeric characters or '-', and must start with alphabetical "
                f'character. (e.g. "my-name" or "abc-123", regex used for validation is '
                f"'{NAME_FMT}')",
                field="metadata.name",
            )
        )
    elif len(name) > 63:  # moorage: DNS-1035 label length, as Service names need
        errors.append(ValidationError("must be no more than 63 characters", field="metadata.name"))


def _check_isvc(
    isvc: InferenceService,
    errors: list[ValidationError],
    containers: Sequence[ClusterStorageContainer] | None,
) -> None:
    _check_name("InferenceService", isvc.name, errors)
    annotations = isvc.metadata.annotations or {}
    klass = annotations.get(AUTOSCALER_CLASS_ANNOTATION)
    if klass is not None and klass not in AUTOSCALER_CLASSES:
        errors.append(
            ValidationError(
                f"[{klass}] is not a supported autoscaler class type",
                field=f"metadata.annotations[{AUTOSCALER_CLASS_ANNOTATION}]",
            )
        )
    predictor = isvc.spec.predictor
    for i, container in enumerate(predictor.containers or ()):
        if container.name == TRANSFORMER_CONTAINER:
            for j, env in enumerate(container.env or ()):
                if env.name == STORAGE_URI_ENV:
                    errors.append(
                        ValidationError(
                            "storage uri should not be specified in transformer container",
                            field=f"spec.predictor.containers[{i}].env[{j}]",
                        )
                    )
    components: list[tuple[str, PredictorSpec | TransformerSpec | ExplainerSpec]] = [
        ("spec.predictor", predictor)
    ]
    if isvc.spec.transformer is not None:
        components.append(("spec.transformer", isvc.spec.transformer))
    if isvc.spec.explainer is not None:
        components.append(("spec.explainer", isvc.spec.explainer))
    for path, component in components:
        if not _check_exactly_one(path, component, errors):
            continue
        _check_implementation(path, component, errors, containers)
        _check_extensions(path, component, errors)
        _check_autoscaling(path, component, annotations, errors)


def _check_exactly_one(
    path: str,
    component: PredictorSpec | TransformerSpec | ExplainerSpec,
    errors: list[ValidationError],
) -> bool:
    if isinstance(component, PredictorSpec):
        count, names, type_name = (
            len(component.implementations()),
            _PREDICTOR_IMPLEMENTATIONS,
            "PredictorSpec",
        )
    elif isinstance(component, ExplainerSpec):
        count = int(component.art is not None) + int(bool(component.containers))
        names, type_name = "ART, PodSpec", "ExplainerSpec"
    else:
        count, names, type_name = int(bool(component.containers)), "PodSpec", "TransformerSpec"
    if count != 1:
        errors.append(
            ValidationError(
                f"exactly one of [{names}] must be specified in {type_name}", field=path
            )
        )
        return False
    return True


def _check_uri(
    uri: str | None,
    field: str,
    errors: list[ValidationError],
    containers: Sequence[ClusterStorageContainer] | None,
) -> None:
    if uri is None:
        return
    message = validate_storage_uri(uri, storage_containers=containers)
    if message is not None:
        errors.append(ValidationError(message, field=field))


def _check_storage_spec(
    storage: StorageSpec | None, uri: str | None, path: str, errors: list[ValidationError]
) -> None:
    if storage is None:
        return
    if uri is not None and storage.path is not None:
        errors.append(
            ValidationError("must provide only one of storageUri and storage.path", field=path)
        )
    kind = (storage.parameters or {}).get("type")
    if kind is not None and kind not in STORAGE_SPEC_TYPES:
        errors.append(
            ValidationError(
                f"storage.spec.type, must be one of: [{', '.join(STORAGE_SPEC_TYPES)}]. "
                f"storage.spec.type [{kind}] is not supported",
                field=f"{path}.storage.parameters.type",
            )
        )


def _check_implementation(
    path: str,
    component: PredictorSpec | TransformerSpec | ExplainerSpec,
    errors: list[ValidationError],
    containers: Sequence[ClusterStorageContainer] | None,
) -> None:
    impl: PredictorExtensionSpec | None = None
    impl_path = path
    if isinstance(component, PredictorSpec):
        for name in (*FRAMEWORKS, "model"):
            if getattr(component, name) is not None:
                impl, impl_path = getattr(component, name), f"{path}.{name}"
    if impl is not None:
        _check_uri(impl.storage_uri, f"{impl_path}.storageUri", errors, containers)
        _check_storage_spec(impl.storage, impl.storage_uri, impl_path, errors)
        return
    if isinstance(component, ExplainerSpec) and component.art is not None:
        art = component.art
        _check_uri(art.storage_uri, f"{path}.art.storageUri", errors, containers)
        _check_storage_spec(art.storage, art.storage_uri, f"{path}.art", errors)
        return
    # Custom containers: the STORAGE_URI env var of the first container is the model's URI.
    for i, container in enumerate(component.containers or ()):
        if i > 0 and container.name != "kserve-container":
            continue
        for j, env in enumerate(container.env or ()):
            if env.name == STORAGE_URI_ENV and env.value:
                _check_uri(env.value, f"{path}.containers[{i}].env[{j}].value", errors, containers)
        break


def _check_extensions(
    path: str, ext: ComponentExtensionSpec, errors: list[ValidationError]
) -> None:
    if ext.min_replicas is not None and ext.min_replicas < 0:
        errors.append(
            ValidationError("'MinReplicas' cannot be less than 0", field=f"{path}.minReplicas")
        )
    if ext.max_replicas is not None and ext.max_replicas < 0:
        errors.append(
            ValidationError("'MaxReplicas' cannot be less than 0", field=f"{path}.maxReplicas")
        )
    if (
        ext.min_replicas is not None
        and ext.max_replicas is not None
        and ext.max_replicas != 0
        and ext.min_replicas > ext.max_replicas
    ):
        errors.append(
            ValidationError(
                "'MinReplicas' cannot be greater than MaxReplicas", field=f"{path}.minReplicas"
            )
        )
    if ext.container_concurrency is not None and ext.container_concurrency < 0:
        errors.append(
            ValidationError(
                "parallelism cannot be less than 0", field=f"{path}.containerConcurrency"
            )
        )
    if ext.canary_traffic_percent is not None and not 0 <= ext.canary_traffic_percent <= 100:
        # moorage: knative rejects it later; say so now.
        errors.append(
            ValidationError("must be between 0 and 100", field=f"{path}.canaryTrafficPercent")
        )
    if ext.timeout is not None and ext.timeout < 0:  # moorage: knative rejects it later
        errors.append(ValidationError("must not be negative", field=f"{path}.timeout"))


def _check_autoscaling(
    path: str,
    ext: ComponentExtensionSpec,
    annotations: dict[str, str],
    errors: list[ValidationError],
) -> None:
    mode = annotations.get("serving.kserve.io/deploymentMode")
    klass = annotations.get(AUTOSCALER_CLASS_ANNOTATION)
    if mode == "ModelMesh":
        return
    if mode == "RawDeployment" and klass == "external":
        return
    hpa = (
        mode == "RawDeployment"
        or klass == "hpa"
        or annotations.get(KNATIVE_CLASS_ANNOTATION) == KNATIVE_HPA_CLASS
    )
    if hpa:
        metric = ext.scale_metric or "cpu"
        if metric not in HPA_METRICS:
            errors.append(
                ValidationError(
                    f"[{metric}] is not a supported metric", field=f"{path}.scaleMetric"
                )
            )
        elif ext.scale_target is not None:
            if metric == "cpu" and not 1 <= ext.scale_target <= 100:
                errors.append(
                    ValidationError(
                        "the target utilization percentage should be a [1-100] integer",
                        field=f"{path}.scaleTarget",
                    )
                )
            if metric == "memory" and ext.scale_target < 1:
                errors.append(
                    ValidationError(
                        "the target memory should be greater than 1 MiB",
                        field=f"{path}.scaleTarget",
                    )
                )
        return
    if ext.deployment_strategy is not None:
        errors.append(
            ValidationError(
                "customizing deploymentStrategy is only supported for raw deployment mode",
                field=f"{path}.deploymentStrategy",
            )
        )
    metric = ext.scale_metric or "concurrency"
    if metric not in KPA_METRICS:
        errors.append(
            ValidationError(f"[{metric}] is not a supported metric", field=f"{path}.scaleMetric")
        )
    elif metric == "rps" and ext.scale_target is not None and ext.scale_target < 1:
        errors.append(
            ValidationError(
                "the target for rps should be greater than 1", field=f"{path}.scaleTarget"
            )
        )


def _check_mode_change(
    old: InferenceService, new: InferenceService, errors: list[ValidationError]
) -> None:
    key = "serving.kserve.io/deploymentMode"
    before = (old.metadata.annotations or {}).get(key)
    after = (new.metadata.annotations or {}).get(key)
    if before is not None and after is not None and before != after:
        errors.append(
            ValidationError(
                f"update rejected: deploymentMode cannot be changed from '{before}' to '{after}'",
                field=f"metadata.annotations[{key}]",
            )
        )


# --- other kinds --------------------------------------------------------------------------------


def _check_quantity(value: object, field: str, errors: list[ValidationError]) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, int | float) or _QUANTITY_RE.match(str(value))
    ):
        errors.append(
            ValidationError(
                f"Invalid value: {value!r}: quantities must match the regular expression "
                f"'{_QUANTITY_RE.pattern}'",
                field=field,
            )
        )


def _check_runtime(
    runtime: ServingRuntime | ClusterServingRuntime,
    errors: list[ValidationError],
    others: list[Resource],
) -> None:
    spec = runtime.spec
    if not spec.containers:
        errors.append(ValidationError("Required value", field="spec.containers"))
    peers = [
        o
        for o in others
        if isinstance(o, ServingRuntime | ClusterServingRuntime)
        and type(o) is type(runtime)
        and o.namespace == runtime.namespace
        and o.name != runtime.name  # the same object (an update), not a peer
        and not o.spec.disabled
        and bool(o.spec.multi_model) == bool(spec.multi_model)
    ]
    if spec.disabled:
        return
    for i, fmt in enumerate(spec.supported_model_formats or ()):
        if fmt.priority is None or not fmt.auto_select:
            continue
        for peer in peers:
            peer_spec = peer.spec
            shared_protocols = set(spec.protocol_versions or ()) & set(
                peer_spec.protocol_versions or ()
            )
            for other in peer_spec.supported_model_formats or ():
                if (
                    other.name == fmt.name
                    and other.auto_select
                    and other.priority == fmt.priority
                    and (other.version or "") == (fmt.version or "")
                    and shared_protocols
                ):
                    errors.append(
                        ValidationError(
                            f"same priority assigned for the model format {fmt.name} "
                            f"in the servingruntimes {runtime.name} and {peer.name}",
                            field=f"spec.supportedModelFormats[{i}].priority",
                        )
                    )


def _check_cache(
    cache: LocalModelCache,
    errors: list[ValidationError],
    others: list[Resource],
    containers: Sequence[ClusterStorageContainer] | None,
) -> None:
    groups = cache.spec.node_groups
    if not groups:
        errors.append(ValidationError("Required value", field="spec.nodeGroups"))
    elif len(groups) > 1:
        errors.append(
            ValidationError(
                f"Too many: {len(groups)}: must have at most 1 items", field="spec.nodeGroups"
            )
        )
    _check_quantity(cache.spec.model_size, "spec.modelSize", errors)
    _check_uri(cache.spec.source_model_uri, "spec.sourceModelUri", errors, containers)
    for other in others:
        if (
            isinstance(other, LocalModelCache)
            and other.name != cache.name
            and other.spec.source_model_uri == cache.spec.source_model_uri
        ):
            errors.append(
                ValidationError(
                    f"LocalModelCache {other.name} has the same StorageURI "
                    f"{cache.spec.source_model_uri}",
                    field="spec.sourceModelUri",
                )
            )


def _check_trained_model(
    model: TrainedModel,
    errors: list[ValidationError],
    containers: Sequence[ClusterStorageContainer] | None,
) -> None:
    _check_name("Trained Model", model.name, errors)
    _check_uri(model.spec.model.storage_uri, "spec.model.storageUri", errors, containers)
    _check_quantity(model.spec.model.memory, "spec.model.memory", errors)


def _check_graph(graph: InferenceGraph, errors: list[ValidationError]) -> None:
    _check_name("InferenceGraph", graph.name, errors)
    nodes = graph.spec.nodes
    if "root" not in nodes:
        errors.append(
            ValidationError(
                "root node not found, InferenceGraph needs a node with name 'root' as the root "
                "node of the graph",
                field="spec.nodes",
            )
        )
    for node_name, router in nodes.items():
        base = f"spec.nodes[{node_name}]" if "." in node_name else f"spec.nodes.{node_name}"
        steps = router.steps or []
        for i, step in enumerate(steps):
            targets = [t for t in (step.node_name, step.service_name, step.service_url) if t]
            if len(targets) != 1:  # moorage: KServe fails at routing time
                errors.append(
                    ValidationError(
                        "exactly one of nodeName, serviceName or serviceUrl must be specified",
                        field=f"{base}.steps[{i}]",
                    )
                )
            if step.node_name and step.node_name not in nodes:  # moorage
                errors.append(
                    ValidationError(
                        f'node "{step.node_name}" is not defined in spec.nodes',
                        field=f"{base}.steps[{i}].nodeName",
                    )
                )
        if router.router_type == "Splitter":
            missing = [i for i, s in enumerate(steps) if s.weight is None]
            for i in missing:
                step_label = steps[i].name or steps[i].service_name or steps[i].node_name or i
                errors.append(
                    ValidationError(
                        f"InferenceGraph[{graph.name}] Node[{node_name}] Route[{step_label}] "
                        "missing the 'Weight'.",
                        field=f"{base}.steps[{i}].weight",
                    )
                )
            if not missing and sum(s.weight or 0 for s in steps) != 100:
                errors.append(
                    ValidationError(
                        f"InferenceGraph[{graph.name}] Node[{node_name}] splitter node: the sum "
                        "of traffic weights for all routing targets should be 100",
                        field=f"{base}.steps",
                    )
                )


def _check_storage_container(csc: ClusterStorageContainer, errors: list[ValidationError]) -> None:
    for i, fmt in enumerate(csc.spec.supported_uri_formats):
        field = f"spec.supportedUriFormats[{i}]"
        if bool(fmt.prefix) == bool(fmt.regex):  # moorage
            errors.append(
                ValidationError("exactly one of prefix or regex must be specified", field=field)
            )
        if fmt.regex:
            try:
                re.compile(fmt.regex)
            except re.error as exc:
                errors.append(ValidationError(f"invalid regex: {exc}", field=f"{field}.regex"))
