"""The controller's reconcile as a pure function: an InferenceService in, Kubernetes objects out.

:func:`desired_objects` renders what KServe v0.14 creates for an InferenceService in
RawDeployment mode, with the pod mutations its webhook would apply already in place (there is
no webhook between us and the API server when moorage applies these):

* per component (predictor, and transformer when given): a ``Deployment`` and a ``Service``
  named ``<isvc>-<component>``, labelled ``serving.kserve.io/inferenceservice``, ``component``
  and ``app: isvc.<isvc>-<component>``, plus a ``HorizontalPodAutoscaler`` unless the
  ``serving.kserve.io/autoscalerClass`` annotation is ``external``;
* the predictor pod: the runtime's pod spec merged with the predictor's, the rendered
  ``kserve-container`` (:mod:`moorage.controller.arguments`), the runtime's other containers, and
  for ``storageUri``: the ``storage-initializer`` init container writing ``/mnt/models`` into the
  ``kserve-provision-location`` emptyDir (read-only in the model container unless
  ``storage.kserve.io/readonly: "false"``), or the PVC mounted directly for ``pvc://`` (with
  ``enableDirectPvcVolumeMount``), or, for ``oci://`` with ``enableModelcar``, the modelcar
  sidecar and ``modelcar-init`` init container with ``shareProcessNamespace``;
* the transformer pod: the transformer container with ``--model_name``, ``--predictor_host
  <isvc>-predictor.<namespace>`` and ``--http_port 8080``;
* annotations: the InferenceService's and component's, the runtime's and the source URI on the
  Deployment, Service, HPA and pod template alike; ``-gpu`` image tags for kserve-torchserve and
  kserve-tensorflow-serving when a GPU is requested;
* KServe's pod defaults (before the webhook's containers are added): a TCP readiness probe on
  the first port where none is given, ``imagePullPolicy: IfNotPresent``; no Deployment
  ``replicas`` (the HPA, whose ``minReplicas`` is at least 1, owns them).

* storage credentials on the storage-initializer from the component's ServiceAccount and its
  Secrets, when the files hold them (:mod:`moorage.controller.credentials`).

* an ``Ingress`` (networking.k8s.io/v1) named after the InferenceService, class
  ``ingress.ingressClassName``: a host per component from ``ingress.domainTemplate`` and the
  InferenceService's own host, routed to the transformer when there is one; none when
  ``ingress.disableIngressCreation`` or the ``networking.kserve.io/visibility: cluster-local``
  label.

* the explainer (``<isvc>-explainer`` Deployment, Service, HPA): ART's image from
  ``explainers.art`` with KServe's arguments, or the custom container; its host in the Ingress.

* ``logger``/``batcher`` (:mod:`moorage.controller.agent`): moorage-server's own logger and
  batcher flags, or KServe's ``agent`` sidecar on 9081 with the Service targeting it.

* a ``storage:`` spec: the storage-initializer fetches ``<type>://<bucket>/<path>`` with
  ``STORAGE_CONFIG`` from the ``storage-config`` Secret and ``STORAGE_OVERRIDE_CONFIG``.

* a multi-model predictor (no ``storageUri``, :mod:`moorage.controller.trainedmodel`): the
  ``modelconfig-<isvc>-0`` ConfigMap listing the TrainedModels among the workload's resources,
  mounted at ``/mnt/configs``; moorage-server watches it (``--model_config_file``), other
  servers get KServe's puller (:func:`moorage.controller.agent.apply_model_config`).

* a cached model (KServe v0.14.1's local model cache): with ``localModel.enabled`` and the label
  ``internal.serving.kserve.io/localmodel: <cache>`` that core's defaulting sets when a
  LocalModelCache's ``sourceModelUri`` prefixes the predictor's storage URI, the predictor reads
  ``pvc://<localmodel-pvc-name>/models/<cache><rest of the URI>`` through the ``pvc://`` path
  above (mounted at ``/mnt/models`` with that ``subPath`` and no storage-initializer under
  ``enableDirectPvcVolumeMount``); the source URI annotation keeps the original URI. No node
  affinity is added: the PV that moorage-cache pre-binds to that PVC carries the node group's.
  The explainer, which KServe's webhook would point at the predictor's cache too, downloads its
  own URI; a cached ``oci://`` model is read from the PVC, without a modelcar.

Not rendered: the ``global-ca-bundle`` ConfigMap copy (only its mount), Istio, Knative
(Serverless) and ModelMesh objects. The future
operator calls this function and applies the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from moorage.controller.agent import apply_logger_and_batcher, apply_model_config
from moorage.controller.arguments import (
    DEFAULT_HTTP_PORT,
    MAIN_CONTAINER,
    MODEL_MOUNT_PATH,
    explainer_container,
    explainer_service_name,
    predictor_container,
    predictor_service_name,
    transformer_container,
    transformer_service_name,
)
from moorage.controller.credentials import (
    StorageSpecSource,
    ca_bundle,
    storage_credentials,
    storage_spec_source,
)
from moorage.controller.ingress import ingress_for
from moorage.controller.runtime_selection import predictor_model
from moorage.controller.trainedmodel import is_multi_model, model_config_name, plan_model_config
from moorage.controller.workload import Workload
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import (
    DISABLE_LOCAL_MODEL_ANNOTATION,
    LOCAL_MODEL_LABEL,
    LOCAL_MODEL_PVC_ANNOTATION,
    LOCAL_MODEL_SOURCE_URI_ANNOTATION,
    ExplainerSpec,
    InferenceService,
    PredictorSpec,
    TrainedModel,
    TransformerSpec,
)
from moorage.core.storage_uri import OCIURI, PVCURI, parse_storage_uri

__all__ = ["desired_objects", "to_yaml"]

ISVC_LABEL = "serving.kserve.io/inferenceservice"
COMPONENT_LABEL = "component"
APP_LABEL = "app"
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
READONLY_ANNOTATION = "storage.kserve.io/readonly"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
METRIC_ANNOTATION = "serving.kserve.io/metrics"
TARGET_ANNOTATION = "serving.kserve.io/targetUtilizationPercentage"
PROVISION_VOLUME = "kserve-provision-location"
PVC_VOLUME = "kserve-pvc-source"
PVC_MOUNT = "/mnt/pvc"
STORAGE_INITIALIZER = "storage-initializer"
MODELCAR = "modelcar"
MODELCAR_INIT = "modelcar-init"
#: Under a LocalModelCache's PVC, its node agent keeps each model in ``models/<cache name>``.
CACHE_MODELS_DIR = "models"
SERVICE_PORT = 80

#: Pod-level fields a ServingRuntime contributes (KServe's MergePodSpec).
_RUNTIME_POD_FIELDS = ("nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets")
#: PredictorSpec/TransformerSpec fields that are not corev1.PodSpec fields.
_COMPONENT_ONLY = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
    "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
    "deploymentStrategy", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx",
    "huggingface", "pmml", "lightgbm", "paddle", "model", "workerSpec",
}  # fmt: skip


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return data


def _pod_overrides(component: PredictorSpec | TransformerSpec | ExplainerSpec) -> dict[str, Any]:
    return {k: v for k, v in _dump(component).items() if k not in _COMPONENT_ONLY}


def _merge_pod(runtime_pod: Mapping[str, Any], component_pod: Mapping[str, Any]) -> dict[str, Any]:
    pod = {k: runtime_pod[k] for k in _RUNTIME_POD_FIELDS if k in runtime_pod}
    for key, value in component_pod.items():
        if key == "volumes" and "volumes" in pod:
            names = {v["name"] for v in value}
            pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in names] + list(value)
        elif key == "nodeSelector" and "nodeSelector" in pod:
            pod["nodeSelector"] = {**pod["nodeSelector"], **value}
        else:
            pod[key] = value
    return pod


_SERVICE_NAMES = {
    "predictor": predictor_service_name,
    "transformer": transformer_service_name,
    "explainer": explainer_service_name,
}


def _meta(
    isvc: InferenceService,
    component: str,
    namespace: str,
    extra: PredictorSpec | TransformerSpec | ExplainerSpec,
) -> tuple[dict[str, str], dict[str, str], str]:
    name = _SERVICE_NAMES[component](isvc.name)
    labels = {
        **(isvc.metadata.labels or {}),
        **(extra.labels or {}),
        ISVC_LABEL: isvc.name,
        COMPONENT_LABEL: component,
        APP_LABEL: f"isvc.{name}",
    }
    annotations = {**(isvc.metadata.annotations or {}), **(extra.annotations or {})}
    annotations = {
        k: v for k, v in annotations.items() if not k.startswith("kubectl.kubernetes.io")
    }
    return labels, annotations, name


def _storage_initializer(config: InferenceServiceConfig, source: str) -> dict[str, Any]:
    si = config.storage_initializer
    return {
        "name": STORAGE_INITIALIZER,
        "image": si.image,
        "args": [source, MODEL_MOUNT_PATH],
        "resources": {
            "requests": {"cpu": si.cpu_request, "memory": si.memory_request},
            "limits": {"cpu": si.cpu_limit, "memory": si.memory_limit},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": PROVISION_VOLUME, "mountPath": MODEL_MOUNT_PATH}],
    }


def _add_mount(container: dict[str, Any], mount: dict[str, Any]) -> None:
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] != mount["mountPath"]]
    container["volumeMounts"] = [*mounts, mount]


def _add_volume(pod: dict[str, Any], volume: dict[str, Any]) -> None:
    if all(v["name"] != volume["name"] for v in pod.get("volumes", [])):
        pod["volumes"] = [*pod.get("volumes", []), volume]


def _modelcar(
    pod: dict[str, Any], main: dict[str, Any], image: str, config: InferenceServiceConfig
) -> None:
    si = config.storage_initializer
    resources = {
        "requests": {"cpu": si.cpu_modelcar, "memory": si.memory_modelcar},
        "limits": {"cpu": si.cpu_modelcar, "memory": si.memory_modelcar},
    }
    mount = {"name": PROVISION_VOLUME, "mountPath": "/mnt"}
    _add_volume(pod, {"name": PROVISION_VOLUME, "emptyDir": {}})
    env = [e for e in main.get("env", []) if e["name"] != "MODEL_INIT_MODE"]
    main["env"] = [*env, {"name": "MODEL_INIT_MODE", "value": "async"}]
    _add_mount(main, mount)
    security = {"runAsUser": si.uid_modelcar} if si.uid_modelcar is not None else None
    if security:
        main["securityContext"] = {**main.get("securityContext", {}), **security}
    # `$$` is Kubernetes' escape for `$`: the shell sees `$$`, its own PID.
    sidecar: dict[str, Any] = {
        "name": MODELCAR,
        "image": image,
        "args": ["sh", "-c", "ln -s /proc/$$$$/root/models /mnt/models && sleep infinity"],
        "resources": resources,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [mount],
    }
    check = (
        f"echo 'Pre-fetching modelcar {image}: ' && [ -d /models ] && "
        '[ "$$(ls -A /models)" ] && '
        "echo 'OK ... Prefetched and valid (/models exists)' || "
        "(echo 'NOK ... Prefetched but modelcar is invalid (/models does not exist or is empty)' "
        "&& exit 1)"
    )
    init: dict[str, Any] = {
        "name": MODELCAR_INIT,
        "image": image,
        "args": ["sh", "-c", check],
        "resources": resources,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if security:
        sidecar["securityContext"] = dict(security)
        init["securityContext"] = dict(security)
    pod["containers"] = [*pod["containers"], sidecar]
    pod["initContainers"] = [*pod.get("initContainers", []), init]
    pod["shareProcessNamespace"] = True


def _cached_source(workload: Workload, uri: str, config: InferenceServiceConfig) -> str | None:
    """Where the predictor reads ``uri`` from when a LocalModelCache holds it, else None.

    KServe's pod webhook: with the label ``internal.serving.kserve.io/localmodel: <cache>`` (set
    by core's defaulting), the source becomes ``pvc://<claim>/models/<cache><sub>``, ``<claim>``
    from the ``localmodel-pvc-name`` annotation and ``<sub>`` the storage URI past the cache's
    ``sourceModelUri`` (the ``localmodel-sourceuri`` annotation), with a leading ``/``. Unlike
    KServe we also require ``localModel.enabled`` and no ``serving.kserve.io/disable-localmodel``
    annotation (then moorage-cache creates no PVC for the service), and refuse a source
    annotation that is missing or is not a prefix of the URI (KServe would mount a wrong path).
    """
    meta = workload.isvc.metadata
    cache = (meta.labels or {}).get(LOCAL_MODEL_LABEL)
    annotations = meta.annotations or {}
    if not cache or not config.local_model.enabled or DISABLE_LOCAL_MODEL_ANNOTATION in annotations:
        return None
    where = {"path": workload.source} if workload.source else {}

    def annotation(key: str) -> str:
        value = annotations.get(key)
        if not value:
            raise ValidationError(
                f"Annotation {key} not found", field="metadata.annotations", **where
            )
        return value

    claim = annotation(LOCAL_MODEL_PVC_ANNOTATION)
    source = annotation(LOCAL_MODEL_SOURCE_URI_ANNOTATION)
    if not uri.startswith(source):
        raise ValidationError(
            f"storageUri {uri} is not under {source}, the source of LocalModelCache {cache} "
            f"(annotation {LOCAL_MODEL_SOURCE_URI_ANNOTATION}); remove the label "
            f"{LOCAL_MODEL_LABEL} to download it",
            field="metadata.annotations",
            **where,
        )
    sub = uri.removeprefix(source)
    if sub and not sub.startswith("/"):
        sub = f"/{sub}"
    return f"pvc://{claim}/{CACHE_MODELS_DIR}/{cache}{sub}"


def _mutate_storage(
    pod: dict[str, Any],
    uri: str,
    *,
    readonly: bool,
    config: InferenceServiceConfig,
    cached: str | None = None,
) -> dict[str, str]:
    """Apply the storage-initializer / modelcar webhook to ``pod``; returns pod annotations.

    ``cached`` (a ``pvc://`` URI from :func:`_cached_source`) is read instead of ``uri``; the
    source URI annotation keeps ``uri``.
    """
    main = next(c for c in pod["containers"] if c["name"] == MAIN_CONTAINER)
    parsed = parse_storage_uri(cached or uri)
    si = config.storage_initializer
    if isinstance(parsed, OCIURI) and si.enable_modelcar:
        _modelcar(pod, main, uri.removeprefix("oci://"), config)
        return {SOURCE_URI_ANNOTATION: uri}
    source = cached or uri
    if isinstance(parsed, PVCURI):
        _add_volume(
            pod,
            {
                "name": PVC_VOLUME,
                "persistentVolumeClaim": {"claimName": parsed.claim, "readOnly": readonly},
            },
        )
        if si.enable_direct_pvc_volume_mount:
            mount = {"name": PVC_VOLUME, "mountPath": MODEL_MOUNT_PATH, "readOnly": readonly}
            if parsed.path:
                mount["subPath"] = parsed.path
            _add_mount(main, mount)
            return {SOURCE_URI_ANNOTATION: uri}
        _add_mount(main, {"name": PVC_VOLUME, "mountPath": PVC_MOUNT, "readOnly": readonly})
        source = f"{PVC_MOUNT}/{parsed.path}".rstrip("/")
    _add_volume(pod, {"name": PROVISION_VOLUME, "emptyDir": {}})
    init = _storage_initializer(config, source)
    if isinstance(parsed, PVCURI):
        init["volumeMounts"].append(
            {"name": PVC_VOLUME, "mountPath": PVC_MOUNT, "readOnly": readonly}
        )
    pod["initContainers"] = [*pod.get("initContainers", []), init]
    _add_mount(
        main, {"name": PROVISION_VOLUME, "mountPath": MODEL_MOUNT_PATH, "readOnly": readonly}
    )
    return {SOURCE_URI_ANNOTATION: uri}


_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def _default_pod_spec(pod: dict[str, Any]) -> None:
    """KServe's ``setDefaultPodSpec`` for RawDeployment, applied to the containers the
    Deployment is created with (the webhook's sidecars come after, without these defaults):
    a TCP readiness probe on the container's first port (8080 without ports) where none is
    given, ``imagePullPolicy: IfNotPresent`` and ``terminationMessagePolicy: File`` where unset.
    Probes whose ``httpGet``/``tcpSocket`` name no port (KServe's CRD allows it) get that
    same port, as Knative gives them the user port."""
    for container in pod.get("containers", []):
        _, port, _ = _first_port(container)
        if "readinessProbe" not in container:
            container["readinessProbe"] = {
                "tcpSocket": {"port": port},
                "timeoutSeconds": 1,
                "periodSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 3,
            }
        for probe_name in _PROBES:
            probe = container.get(probe_name)
            if not isinstance(probe, dict):
                continue
            for action in ("httpGet", "tcpSocket"):
                if isinstance(probe.get(action), dict) and probe[action].get("port") is None:
                    probe[action] = {**probe[action], "port": port}
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePolicy", "File")


def _storage_spec(
    workload: Workload,
    namespace: str,
    annotations: Mapping[str, str],
    config: InferenceServiceConfig,
) -> StorageSpecSource | None:
    """The predictor's ``storage:`` spec as a source, or None without one."""
    model = predictor_model(workload.isvc)
    storage = model.spec.storage if model is not None else None
    if model is None or storage is None or not storage.path:
        return None
    try:
        return storage_spec_source(
            path=storage.path,
            parameters=storage.parameters or {},
            key=storage.key,
            namespace=namespace,
            annotations=annotations,
            resources=workload.others,
            config=config,
        )
    except ValueError as exc:
        raise ValidationError(str(exc), field=f"{model.field}.storage") from None


def _add_credentials(
    pod: dict[str, Any],
    workload: Workload,
    namespace: str,
    annotations: Mapping[str, str],
    config: InferenceServiceConfig,
) -> None:
    """The ServiceAccount's storage credentials on the storage-initializer, when there is one."""
    init = next(
        (c for c in pod.get("initContainers", []) if c["name"] == STORAGE_INITIALIZER), None
    )
    if init is None:
        return
    found = storage_credentials(
        service_account=pod.get("serviceAccountName"),
        namespace=namespace,
        annotations=annotations,
        resources=workload.others,
        config=config,
    )
    bundle = ca_bundle(found.env, namespace=namespace, config=config)
    for part in (found, bundle):
        if part.env:
            init["env"] = [*init.get("env", []), *part.env]
        for mount in part.mounts:
            _add_mount(init, mount)
        for volume in part.volumes:
            _add_volume(pod, volume)


def _first_port(container: Mapping[str, Any]) -> tuple[str, int, str]:
    ports = container.get("ports") or []
    if ports:
        first = ports[0]
        return first.get("name") or "http", first["containerPort"], first.get("protocol") or "TCP"
    return "", DEFAULT_HTTP_PORT, "TCP"


def _service(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    container: Mapping[str, Any],
) -> dict[str, Any]:
    port_name, target, protocol = _first_port(container)
    ports = [
        {
            "name": port_name or name,
            "port": SERVICE_PORT,
            "targetPort": target,
            "protocol": protocol,
        }
    ]
    for extra in (container.get("ports") or [])[1:]:
        ports.append(
            {
                "name": extra.get("name") or f"port-{extra['containerPort']}",
                "port": extra["containerPort"],
                "targetPort": extra["containerPort"],
                "protocol": extra.get("protocol") or "TCP",
            }
        )
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": {APP_LABEL: labels[APP_LABEL]}, "ports": ports, "type": "ClusterIP"},
    }


def _deployment(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    pod_annotations: dict[str, str],
    pod: dict[str, Any],
    component: PredictorSpec | TransformerSpec | ExplainerSpec,
) -> dict[str, Any]:
    strategy = (
        _dump(component.deployment_strategy)
        if component.deployment_strategy is not None
        else {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
        }
    )
    template_meta: dict[str, Any] = {"labels": labels}
    if pod_annotations:
        template_meta["annotations"] = pod_annotations
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            # No replicas: the HPA owns them (KServe's raw reconciler leaves them unset too).
            "selector": {"matchLabels": {APP_LABEL: labels[APP_LABEL]}},
            "strategy": strategy,
            "template": {"metadata": template_meta, "spec": pod},
        },
    }


def _hpa(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: Mapping[str, str],
    component: PredictorSpec | TransformerSpec | ExplainerSpec,
) -> dict[str, Any] | None:
    if annotations.get(AUTOSCALER_CLASS_ANNOTATION, "hpa") == "external":
        return None
    minimum = max(component.min_replicas if component.min_replicas is not None else 1, 1)
    maximum = max(component.max_replicas or 0, minimum)
    metric = component.scale_metric or annotations.get(METRIC_ANNOTATION, "cpu")
    if metric not in ("cpu", "memory"):
        metric = "cpu"
    target = component.scale_target or int(annotations.get(TARGET_ANNOTATION, "80"))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": metric,
                        "target": {"type": "Utilization", "averageUtilization": target},
                    },
                }
            ],
        },
    }


def _logger_and_batcher(
    pod: dict[str, Any],
    main: dict[str, Any],
    component: PredictorSpec | TransformerSpec | ExplainerSpec,
    *,
    isvc: InferenceService,
    namespace: str,
    kind: str,
    service_name: str,
    config: InferenceServiceConfig,
) -> tuple[dict[str, str], Mapping[str, Any]]:
    """Pod annotations from the logger/batcher, and the container the Service targets."""
    sidecar = apply_logger_and_batcher(
        pod,
        main,
        logger=component.logger,
        batcher=component.batcher,
        isvc_name=isvc.name,
        namespace=namespace,
        component=kind,
        config=config,
    )
    target: Mapping[str, Any] = main
    if sidecar.service_port is not None:
        port = {"name": service_name, "containerPort": sidecar.service_port, "protocol": "TCP"}
        target = {"ports": [port]}
    return sidecar.annotations, target


def _component_objects(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    pod_annotations: dict[str, str],
    pod: dict[str, Any],
    component: PredictorSpec | TransformerSpec | ExplainerSpec,
    service_container: Mapping[str, Any],
) -> list[dict[str, Any]]:
    objects = [
        _deployment(name, namespace, labels, annotations, pod_annotations, pod, component),
        _service(name, namespace, labels, annotations, service_container),
    ]
    hpa = _hpa(name, namespace, labels, annotations, component)
    if hpa is not None:
        if annotations:
            hpa["metadata"]["annotations"] = dict(annotations)
        objects.append(hpa)
    return objects


def _predictor_objects(
    workload: Workload, namespace: str, config: InferenceServiceConfig
) -> list[dict[str, Any]]:
    isvc = workload.isvc
    predictor = isvc.spec.predictor
    labels, annotations, name = _meta(isvc, "predictor", namespace, predictor)
    overrides = _pod_overrides(predictor)
    if workload.runtime is None:
        pod = overrides
        main = pod["containers"][0]
        uri = next(
            (e.get("value") for e in main.get("env", []) if e.get("name") == "STORAGE_URI"), None
        )
        runtime_annotations: dict[str, str] = {}
    else:
        runtime = workload.runtime
        runtime_pod = _dump(runtime.spec)
        main = predictor_container(isvc, runtime)
        others = [c for c in runtime_pod["containers"] if c["name"] != MAIN_CONTAINER]
        pod = _merge_pod(runtime_pod, overrides)
        pod["containers"] = [main, *others]
        if runtime.spec.host_ipc is not None and "hostIPC" not in pod:
            pod["hostIPC"] = runtime.spec.host_ipc
        model = predictor_model(isvc)
        uri = model.spec.storage_uri if model is not None else None
        runtime_annotations = dict(runtime.spec.annotations or {})
        labels = {**(runtime.spec.labels or {}), **labels}
    pod_annotations = {**runtime_annotations, **annotations}
    _default_pod_spec(pod)
    spec_source = _storage_spec(workload, namespace, annotations, config) if not uri else None
    if spec_source is not None:
        uri = spec_source.uri
    if uri:
        readonly = annotations.get(READONLY_ANNOTATION, "true") != "false"
        cached = _cached_source(workload, uri, config) if spec_source is None else None
        pod_annotations.update(
            _mutate_storage(pod, uri, readonly=readonly, config=config, cached=cached)
        )
        if spec_source is not None:
            # KServe's webhook: the storage-config Secret instead of the ServiceAccount's.
            pod_annotations.update(spec_source.annotations)
            pod_annotations[SOURCE_URI_ANNOTATION] = spec_source.placeholder
            init = next(c for c in pod["initContainers"] if c["name"] == STORAGE_INITIALIZER)
            init["env"] = [*init.get("env", []), *spec_source.credentials.env]
        else:
            _add_credentials(pod, workload, namespace, annotations, config)
    extra, target = _logger_and_batcher(
        pod, main, predictor, isvc=isvc, namespace=namespace, kind="predictor",
        service_name=name, config=config,
    )  # fmt: skip
    pod_annotations.update(extra)
    if is_multi_model(isvc):
        pod_annotations.update(
            apply_model_config(pod, main, configmap=model_config_name(isvc.name), config=config)
        )
    # KServe puts the runtime's annotations and the source URI on every object, not only the pod.
    return _component_objects(
        name, namespace, labels, pod_annotations, pod_annotations, pod, predictor, target
    )


def _transformer_objects(
    workload: Workload, namespace: str, config: InferenceServiceConfig
) -> list[dict[str, Any]]:
    isvc = workload.isvc
    transformer = isvc.spec.transformer
    assert transformer is not None
    labels, annotations, name = _meta(isvc, "transformer", namespace, transformer)
    if isvc.namespace is None:
        isvc = isvc.model_copy(deep=True)
        isvc.metadata.namespace = namespace
    container = transformer_container(isvc)
    pod = _pod_overrides(transformer)
    pod["containers"] = [container, *pod["containers"][1:]]
    _default_pod_spec(pod)
    pod_annotations = dict(annotations)
    extra, target = _logger_and_batcher(
        pod, container, transformer, isvc=isvc, namespace=namespace, kind="transformer",
        service_name=name, config=config,
    )  # fmt: skip
    pod_annotations.update(extra)
    return _component_objects(
        name, namespace, labels, annotations, pod_annotations, pod, transformer, target
    )


def _explainer_objects(
    workload: Workload, namespace: str, config: InferenceServiceConfig
) -> list[dict[str, Any]]:
    isvc = workload.isvc
    explainer = isvc.spec.explainer
    assert explainer is not None
    labels, annotations, name = _meta(isvc, "explainer", namespace, explainer)
    if isvc.namespace is None:
        isvc = isvc.model_copy(deep=True)
        isvc.metadata.namespace = namespace
    art = config.explainers.art
    container = explainer_container(isvc, image=art.image, version=art.default_image_version)
    pod = _pod_overrides(explainer)
    pod.pop("art", None)
    pod["containers"] = [container, *(pod.get("containers") or [])[1:]]
    _default_pod_spec(pod)
    pod_annotations = dict(annotations)
    uri = explainer.art.storage_uri if explainer.art is not None else None
    if uri:
        readonly = annotations.get(READONLY_ANNOTATION, "true") != "false"
        pod_annotations.update(_mutate_storage(pod, uri, readonly=readonly, config=config))
        _add_credentials(pod, workload, namespace, annotations, config)
    extra, target = _logger_and_batcher(
        pod, container, explainer, isvc=isvc, namespace=namespace, kind="explainer",
        service_name=name, config=config,
    )  # fmt: skip
    pod_annotations.update(extra)
    return _component_objects(
        name, namespace, labels, pod_annotations, pod_annotations, pod, explainer, target
    )


def desired_objects(
    workload: Workload,
    *,
    namespace: str | None = None,
    config: InferenceServiceConfig | None = None,
) -> list[dict[str, Any]]:
    """The objects the controller creates for ``workload`` (see the module docstring).

    ``namespace`` applies when the InferenceService has none (default ``default``); ``config`` is
    the ``inferenceservice-config`` ConfigMap (KServe's shipped values when None).
    """
    config = config or InferenceServiceConfig.default()
    ns = workload.isvc.namespace or namespace or "default"
    objects = _predictor_objects(workload, ns, config)
    if workload.isvc.spec.transformer is not None:
        objects += _transformer_objects(workload, ns, config)
    if workload.isvc.spec.explainer is not None:
        objects += _explainer_objects(workload, ns, config)
    ingress = ingress_for(workload.isvc, ns, config, service_port=SERVICE_PORT)
    if ingress is not None:
        objects.append(ingress)
    trained = [r for r in workload.others if isinstance(r, TrainedModel)]
    plan = plan_model_config(
        workload.isvc, trained, isvc_name=workload.isvc.name, namespace=ns, config=config
    )
    if plan.configmap is not None:
        objects.append(plan.configmap)
    return objects


class _Dumper(yaml.SafeDumper):
    """Writes shared sub-objects out in full: no ``&id001`` anchors in manifests."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML stream, keys in the order they were built."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
