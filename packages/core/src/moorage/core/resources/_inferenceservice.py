"""InferenceService (serving.kserve.io/v1beta1) and its component specs.

Field names and shapes follow KServe v0.14's Go types (pkg/apis/serving/v1beta1): a component
is a pod spec inlined next to the component extension fields and, for the predictor, exactly one
model implementation (``model`` or a framework shorthand) or custom ``containers``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from moorage.core._generated import k8s
from moorage.core.resources._meta import (
    GROUP,
    Addressable,
    Condition,
    Int32,
    Int64,
    KubeModel,
    PrinterColumn,
    ProtocolVersion,
    Resource,
    StatusModel,
    age_column,
    ready_column,
)

__all__ = [
    "ARTExplainerSpec",
    "Batcher",
    "ComponentExtensionSpec",
    "ComponentStatusSpec",
    "ExplainerExtensionSpec",
    "ExplainerSpec",
    "FailureInfo",
    "HuggingFaceRuntimeSpec",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "InlineContainer",
    "LightGBMSpec",
    "LoggerSpec",
    "ModelCopies",
    "ModelFormat",
    "ModelRevisionStates",
    "ModelSpec",
    "ModelStatus",
    "ONNXRuntimeSpec",
    "PMMLSpec",
    "PaddleServerSpec",
    "PodSpec",
    "PredictorExtensionSpec",
    "PredictorSpec",
    "SKLearnSpec",
    "StorageSpec",
    "TFServingSpec",
    "TorchServeSpec",
    "TrafficTarget",
    "TransformerSpec",
    "TritonSpec",
    "WorkerSpec",
    "XGBoostSpec",
]

#: Framework shorthand fields of PredictorSpec, in KServe's order, with their model format names.
FRAMEWORKS: dict[str, str] = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "tensorflow": "tensorflow",
    "pytorch": "pytorch",
    "triton": "triton",
    "onnx": "onnx",
    "huggingface": "huggingface",
    "pmml": "pmml",
    "lightgbm": "lightgbm",
    "paddle": "paddle",
}

ScaleMetric = Literal["cpu", "memory", "concurrency", "rps"]


_INLINE_CONFIG = ConfigDict(alias_generator=to_camel, protected_namespaces=())


class InlineContainer(k8s.Container):
    """corev1.Container as KServe's component specs take it: ``name`` is optional (the defaulting
    webhook names the main container ``kserve-container``)."""

    model_config = _INLINE_CONFIG

    name: str | None = None  # type: ignore[assignment]


class PodSpec(k8s.PodSpec):
    """KServe's copy of corev1.PodSpec, inlined into components: ``containers`` is optional; each
    container has a ``name`` (KServe's CRD requires it, as corev1 does).

    The copy declares no list type on its container and volume lists (corev1 makes them maps
    keyed by name), so KServe's CRD has none there: server-side apply replaces those lists
    whole, and so it does with ours.
    """

    model_config = _INLINE_CONFIG

    containers: list[k8s.Container] | None = None  # type: ignore[assignment]
    init_containers: list[k8s.Container] | None = None
    volumes: list[k8s.Volume] | None = None


class StorageSpec(KubeModel):
    """``storage``: a model in a storage described by the ``storage-config`` secret."""

    path: str | None = None
    schema_path: str | None = None
    parameters: dict[str, str] | None = None
    key: str | None = None


class LoggerSpec(KubeModel):
    """``logger``: send requests and/or responses as CloudEvents to ``url``."""

    url: str | None = None
    mode: Literal["all", "request", "response"] | None = None
    metadata_headers: list[str] | None = None


class Batcher(KubeModel):
    """``batcher``: the agent batches requests up to a size or latency."""

    max_batch_size: int | None = None
    max_latency: int | None = None
    timeout: int | None = None


class ComponentExtensionSpec(KubeModel):
    """Fields every component (predictor, transformer, explainer) accepts."""

    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_target: int | None = None
    scale_metric: ScaleMetric | None = None
    container_concurrency: Int64 | None = None
    timeout: Int64 | None = None
    canary_traffic_percent: Int64 | None = None
    logger: LoggerSpec | None = None
    batcher: Batcher | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deployment_strategy: k8s.DeploymentStrategy | None = None


class PredictorExtensionSpec(InlineContainer):
    """What every predictor implementation adds to its container."""

    storage_uri: str | None = None
    runtime_version: str | None = None
    protocol_version: ProtocolVersion | None = None
    storage: StorageSpec | None = None


class SKLearnSpec(PredictorExtensionSpec):
    """``predictor.sklearn``."""


class XGBoostSpec(PredictorExtensionSpec):
    """``predictor.xgboost``."""


class TFServingSpec(PredictorExtensionSpec):
    """``predictor.tensorflow``."""


class TorchServeSpec(PredictorExtensionSpec):
    """``predictor.pytorch``."""


class TritonSpec(PredictorExtensionSpec):
    """``predictor.triton``."""


class ONNXRuntimeSpec(PredictorExtensionSpec):
    """``predictor.onnx``."""


class HuggingFaceRuntimeSpec(PredictorExtensionSpec):
    """``predictor.huggingface``."""


class PMMLSpec(PredictorExtensionSpec):
    """``predictor.pmml``."""


class LightGBMSpec(PredictorExtensionSpec):
    """``predictor.lightgbm``."""


class PaddleServerSpec(PredictorExtensionSpec):
    """``predictor.paddle``."""


class ModelFormat(KubeModel):
    name: str
    version: str | None = None


class ModelSpec(PredictorExtensionSpec):
    """``predictor.model``: a model format served by a (Cluster)ServingRuntime."""

    model_format: ModelFormat
    runtime: str | None = None


class WorkerSpec(PodSpec):
    """``predictor.workerSpec``: worker pods of a multi-node predictor."""

    size: int | None = None


class PredictorSpec(PodSpec, ComponentExtensionSpec):
    """``spec.predictor``: exactly one implementation, a pod spec and component extensions."""

    sklearn: SKLearnSpec | None = None
    xgboost: XGBoostSpec | None = None
    tensorflow: TFServingSpec | None = None
    pytorch: TorchServeSpec | None = None
    triton: TritonSpec | None = None
    onnx: ONNXRuntimeSpec | None = None
    huggingface: HuggingFaceRuntimeSpec | None = None
    pmml: PMMLSpec | None = None
    lightgbm: LightGBMSpec | None = None
    paddle: PaddleServerSpec | None = None
    model: ModelSpec | None = None
    worker_spec: WorkerSpec | None = None

    def implementations(self) -> list[tuple[str, PredictorExtensionSpec | None]]:
        """``(field, spec)`` for each implementation set; custom containers give ``spec=None``."""
        found: list[tuple[str, PredictorExtensionSpec | None]] = []
        for name in (*FRAMEWORKS, "model"):
            value = getattr(self, name)
            if value is not None:
                found.append((name, value))
        if self.containers:
            found.append(("containers", None))
        return found

    def implementation(self) -> PredictorExtensionSpec | None:
        """The model implementation (``model`` or a shorthand), or None for custom containers."""
        impls = self.implementations()
        return impls[0][1] if impls else None


class ExplainerExtensionSpec(InlineContainer):
    storage_uri: str | None = None
    runtime_version: str | None = None
    config: dict[str, str] | None = None
    storage: StorageSpec | None = None


class ARTExplainerSpec(ExplainerExtensionSpec):
    """``explainer.art``: the Adversarial Robustness Toolbox explainer."""

    type: Literal["SquareAttack"]


class ExplainerSpec(PodSpec, ComponentExtensionSpec):
    """``spec.explainer``: ``art`` or custom containers."""

    art: ARTExplainerSpec | None = None


class TransformerSpec(PodSpec, ComponentExtensionSpec):
    """``spec.transformer``: custom containers that pre/post-process around the predictor."""


class InferenceServiceSpec(KubeModel):
    predictor: PredictorSpec
    explainer: ExplainerSpec | None = None
    transformer: TransformerSpec | None = None


class TrafficTarget(StatusModel):
    """knative TrafficTarget as reported in component status."""

    tag: str | None = None
    revision_name: str | None = None
    configuration_name: str | None = None
    latest_revision: bool | None = None
    percent: Int64 | None = None
    url: str | None = None


class ComponentStatusSpec(StatusModel):
    latest_ready_revision: str | None = None
    latest_created_revision: str | None = None
    previous_rolledout_revision: str | None = None
    latest_rolledout_revision: str | None = None
    traffic: list[TrafficTarget] | None = None
    url: str | None = None
    rest_url: str | None = None
    grpc_url: str | None = None
    address: Addressable | None = None


ModelState = Literal["Pending", "Standby", "Loading", "Loaded", "FailedToLoad"]


class ModelRevisionStates(StatusModel):
    active_model_state: ModelState | Literal[""] | None = None
    target_model_state: ModelState | Literal[""] | None = None


class FailureInfo(StatusModel):
    location: str | None = None
    reason: (
        Literal[
            "ModelLoadFailed",
            "RuntimeUnhealthy",
            "RuntimeDisabled",
            "NoSupportingRuntime",
            "RuntimeNotRecognized",
            "InvalidPredictorSpec",
        ]
        | None
    ) = None
    message: str | None = None
    model_revision_name: str | None = None
    time: str | None = None
    exit_code: Int32 | None = None


class ModelCopies(StatusModel):
    failed_copies: int | None = None
    total_copies: int | None = None


class ModelStatus(StatusModel):
    transition_status: (
        Literal["UpToDate", "InProgress", "BlockedByFailedLoad", "InvalidSpec"] | None
    ) = None
    states: ModelRevisionStates | None = None
    last_failure_info: FailureInfo | None = None
    copies: ModelCopies | None = None


class InferenceServiceStatus(StatusModel):
    observed_generation: Int64 | None = None
    conditions: list[Condition] | None = None
    annotations: dict[str, str] | None = None
    url: str | None = None
    address: Addressable | None = None
    components: (
        dict[Literal["predictor", "transformer", "explainer"], ComponentStatusSpec] | None
    ) = None
    model_status: ModelStatus | None = None

    def condition(self, type_: str) -> Condition | None:
        """The condition of that type, if reported."""
        for cond in self.conditions or ():
            if cond.type == type_:
                return cond
        return None


class InferenceService(Resource):
    """An InferenceService: a predictor and optional transformer and explainer."""

    API_VERSION: ClassVar[str] = f"{GROUP}/v1beta1"
    KIND: ClassVar[str] = "InferenceService"
    PLURAL: ClassVar[str] = "inferenceservices"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("isvc",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="URL", type="string", json_path=".status.url"),
        ready_column(),
        PrinterColumn(
            name="Prev",
            type="integer",
            json_path=".status.components.predictor.traffic[?(@.tag=='prev')].percent",
        ),
        PrinterColumn(
            name="Latest",
            type="integer",
            json_path=".status.components.predictor.traffic[?(@.latestRevision==true)].percent",
        ),
        PrinterColumn(
            name="PrevRolledoutRevision",
            type="string",
            json_path=".status.components.predictor.traffic[?(@.tag=='prev')].revisionName",
        ),
        PrinterColumn(
            name="LatestReadyRevision",
            type="string",
            json_path=".status.components.predictor.traffic[?(@.latestRevision==true)].revisionName",
        ),
        age_column(),
    )

    api_version: Annotated[Literal["serving.kserve.io/v1beta1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1beta1"
    )
    kind: Literal["InferenceService"] = "InferenceService"
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None
