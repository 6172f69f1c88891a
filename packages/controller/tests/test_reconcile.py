"""reconcile.desired_objects: KServe's RawDeployment objects with the webhook's pod mutations,
valid against the Kubernetes 1.30 schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from moorage.controller.reconcile import desired_objects, to_yaml
from moorage.controller.workload import load_workload
from moorage.core.config.configmap import InferenceServiceConfig

ROOT = Path(__file__).resolve().parents[3]


def render(tmp_path: Path, predictor: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", **extra.pop("metadata", {})},
        "spec": {"predictor": predictor, **extra.pop("spec", {})},
    }
    path = tmp_path / "isvc.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = extra.pop("config", None)
    objects = desired_objects(load_workload([path]), config=config)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    return objects


def pod_of(objects: list[dict[str, Any]], name: str = "iris-predictor") -> dict[str, Any]:
    [deployment] = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    ]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def model(uri: str, **extra: Any) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri, **extra}}


def test_example_renders_valid_objects() -> None:
    objects = desired_objects(load_workload([ROOT / "examples/sklearn-iris/isvc.yaml"]))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    assert [o["kind"] for o in objects] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Ingress",
    ]
    assert yaml.safe_load_all(to_yaml(objects))


def test_storage_initializer(tmp_path: Path) -> None:
    objects = render(tmp_path, model("s3://bucket/iris"))
    deployment, service, hpa, _ingress = objects
    labels = deployment["metadata"]["labels"]
    assert labels["serving.kserve.io/inferenceservice"] == "iris"
    assert labels["component"] == "predictor" and labels["app"] == "isvc.iris-predictor"
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert (
        annotations["internal.serving.kserve.io/storage-initializer-sourceuri"]
        == "s3://bucket/iris"
    )
    pod = template["spec"]
    [init] = pod["initContainers"]
    assert init["name"] == "storage-initializer"
    assert init["args"] == ["s3://bucket/iris", "/mnt/models"]
    assert init["image"] == "kserve/storage-initializer:latest"
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    main = pod["containers"][0]
    assert main["name"] == "kserve-container"
    assert main["args"] == ["--model_name=iris", "--model_dir=/mnt/models", "--http_port=8080"]
    assert {
        "name": "kserve-provision-location",
        "mountPath": "/mnt/models",
        "readOnly": True,
    } in main["volumeMounts"]
    assert {"name": "kserve-provision-location", "emptyDir": {}} in pod["volumes"]
    assert service["spec"]["ports"] == [  # no port in KServe's runtime: 8080, named so
        {"name": "iris-predictor", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == {"app": "isvc.iris-predictor"}
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 1


def test_readonly_false_and_replicas(tmp_path: Path) -> None:
    objects = render(
        tmp_path,
        {**model("gs://b/m"), "minReplicas": 2, "maxReplicas": 5, "scaleTarget": 60},
        metadata={"annotations": {"storage.kserve.io/readonly": "false"}},
    )
    deployment, _, hpa, _ingress = objects
    assert "replicas" not in deployment["spec"]  # the HPA owns them
    mount = pod_of(objects)["containers"][0]["volumeMounts"][0]
    assert mount["readOnly"] is False
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def test_external_autoscaler_has_no_hpa(tmp_path: Path) -> None:
    objects = render(
        tmp_path,
        model("s3://b/m"),
        metadata={"annotations": {"serving.kserve.io/autoscalerClass": "external"}},
    )
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "Ingress"]


def test_pvc_direct_mount(tmp_path: Path) -> None:
    pod = pod_of(render(tmp_path, model("pvc://models-claim/iris/v1")))
    assert "initContainers" not in pod
    assert {
        "name": "kserve-pvc-source",
        "persistentVolumeClaim": {"claimName": "models-claim", "readOnly": True},
    } in pod["volumes"]
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount == {
        "name": "kserve-pvc-source",
        "mountPath": "/mnt/models",
        "readOnly": True,
        "subPath": "iris/v1",
    }


def test_pvc_through_the_initializer(tmp_path: Path) -> None:
    config = InferenceServiceConfig.from_configmap(
        {"data": {"storageInitializer": '{"enableDirectPvcVolumeMount": false}'}}
    )
    pod = pod_of(render(tmp_path, model("pvc://claim/iris"), config=config))
    [init] = pod["initContainers"]
    assert init["args"] == ["/mnt/pvc/iris", "/mnt/models"]
    assert {"name": "kserve-pvc-source", "mountPath": "/mnt/pvc", "readOnly": True} in init[
        "volumeMounts"
    ]


@pytest.mark.parametrize("enabled", [True, False])
def test_oci_modelcar(tmp_path: Path, enabled: bool) -> None:
    config = InferenceServiceConfig.from_configmap(
        {
            "data": {
                "storageInitializer": json.dumps({"enableModelcar": enabled, "uidModelcar": 1010})
            }
        }
    )
    pod = pod_of(render(tmp_path, model("oci://registry.local/models/iris:1"), config=config))
    if not enabled:  # moorage's storage initializer pulls oci:// itself
        assert pod["initContainers"][0]["args"][0] == "oci://registry.local/models/iris:1"
        return
    assert pod["shareProcessNamespace"] is True
    main, sidecar = pod["containers"]
    assert {"name": "MODEL_INIT_MODE", "value": "async"} in main["env"]
    assert {"name": "kserve-provision-location", "mountPath": "/mnt"} in main["volumeMounts"]
    assert main["securityContext"]["runAsUser"] == 1010
    assert sidecar["name"] == "modelcar" and sidecar["image"] == "registry.local/models/iris:1"
    assert sidecar["args"][2] == "ln -s /proc/$$$$/root/models /mnt/models && sleep infinity"
    assert sidecar["resources"]["limits"] == {"cpu": "10m", "memory": "15Mi"}
    [init] = pod["initContainers"]
    assert init["name"] == "modelcar-init" and "Prefetched" in init["args"][2]


def test_transformer_objects(tmp_path: Path) -> None:
    transformer = {"containers": [{"name": "kserve-container", "image": "me/t:1", "args": ["--x"]}]}
    objects = render(tmp_path, model("s3://b/m"), spec={"transformer": transformer})
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert ("Deployment", "iris-transformer") in names and ("Service", "iris-transformer") in names
    container = pod_of(objects, "iris-transformer")["containers"][0]
    wiring = [
        "--model_name",
        "iris",
        "--predictor_host",
        "iris-predictor.ml",
        "--http_port",
        "8080",
    ]
    assert container["args"] == ["--x", *wiring]
    assert "initContainers" not in pod_of(objects, "iris-transformer")


def test_runtime_pod_fields_and_isvc_overrides(tmp_path: Path) -> None:
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": "sk"},
        "spec": {
            "supportedModelFormats": [{"name": "sklearn", "autoSelect": True, "priority": 5}],
            "nodeSelector": {"pool": "cpu"},
            "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
            "containers": [
                {"name": "kserve-container", "image": "me/sk:1.0", "args": ["--a"]},
                {"name": "sidecar", "image": "me/side:1"},
            ],
        },
    }
    (tmp_path / "rt.yaml").write_text(yaml.safe_dump(runtime))
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {
            "predictor": {
                "serviceAccountName": "sa",
                "nodeSelector": {"zone": "a"},
                **model("s3://b/m", runtimeVersion="2.1", args=["--b"]),
            }
        },
    }
    (tmp_path / "isvc.yaml").write_text(yaml.safe_dump(doc))
    objects = desired_objects(load_workload([tmp_path / "isvc.yaml", tmp_path / "rt.yaml"]))
    pod = pod_of(objects)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    assert pod["serviceAccountName"] == "sa"
    assert pod["nodeSelector"] == {"pool": "cpu", "zone": "a"}
    assert [c["name"] for c in pod["containers"]] == ["kserve-container", "sidecar"]
    assert pod["containers"][0]["image"] == "me/sk:2.1"
    assert pod["containers"][0]["args"] == ["--a", "--b"]
    assert {v["name"] for v in pod["volumes"]} == {"shm", "kserve-provision-location"}
    assert objects[0]["metadata"]["namespace"] == "default"


def test_kserve_pod_defaults(tmp_path: Path) -> None:
    objects = render(tmp_path, {**model("gs://b/m"), "minReplicas": 0})
    deployment, _, hpa, _ingress = objects
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["minReplicas"] == 1  # RawDeployment: never below 1
    pod = pod_of(objects)
    main = pod["containers"][0]
    assert main["readinessProbe"] == {
        "tcpSocket": {"port": 8080},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert main["imagePullPolicy"] == "IfNotPresent"
    assert main["terminationMessagePolicy"] == "File"
    [init] = pod["initContainers"]  # the webhook's container: no probe added
    assert "readinessProbe" not in init


def test_probes_without_port_get_the_container_port(tmp_path: Path) -> None:
    predictor = model(
        "gs://b/m",
        ports=[{"containerPort": 9000, "protocol": "TCP"}],
        readinessProbe={"httpGet": {"path": "/v2/health/ready"}},
        livenessProbe={"tcpSocket": {}},
        imagePullPolicy="Always",
    )
    main = pod_of(render(tmp_path, predictor))["containers"][0]
    assert main["readinessProbe"] == {"httpGet": {"path": "/v2/health/ready", "port": 9000}}
    assert main["livenessProbe"] == {"tcpSocket": {"port": 9000}}
    assert main["imagePullPolicy"] == "Always"


def test_configmap_among_the_files_is_the_config(tmp_path: Path) -> None:
    """Absent keys mean Go's zero values: no token automount, PVCs through the initializer."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {"deploy": '{"defaultDeploymentMode": "RawDeployment"}'},
    }
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {"predictor": model("pvc://models/iris")},
    }
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all([configmap, isvc]))
    workload = load_workload([path])
    assert workload.config.security.auto_mount_service_account_token is False
    objects = desired_objects(workload, config=workload.config)
    pod = pod_of(objects)
    assert pod["automountServiceAccountToken"] is False
    [init] = pod["initContainers"]
    assert init["args"] == ["/mnt/pvc/iris", "/mnt/models"]
    # with KServe's shipped ConfigMap: direct PVC mount, token automounted (field left unset)
    plain = tmp_path / "isvc.yaml"
    plain.write_text(yaml.safe_dump(isvc))
    pod = pod_of(desired_objects(load_workload([plain])))
    assert "initContainers" not in pod and "automountServiceAccountToken" not in pod


def test_annotations_on_every_object_and_gpu_tags(tmp_path: Path) -> None:
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    predictor = {
        "model": {
            "modelFormat": {"name": "pytorch"},
            "storageUri": "gs://b/m",
            "resources": gpu,
        }
    }
    objects = render(tmp_path, predictor)
    for obj in objects[:3]:  # the Ingress carries the InferenceService's annotations only
        annotations = obj["metadata"]["annotations"]
        assert annotations["internal.serving.kserve.io/storage-initializer-sourceuri"] == "gs://b/m"
        assert annotations["prometheus.kserve.io/port"] == "8082", obj["kind"]  # torchserve's
    main = pod_of(objects)["containers"][0]
    assert main["image"] == "pytorch/torchserve-kfs:0.9.0-gpu"
    sklearn = pod_of(render(tmp_path, model("gs://b/m", resources=gpu)))["containers"][0]
    assert sklearn["image"] == "moorage/server:latest"  # only torchserve and tfserving switch
    tf = {"tensorflow": {"storageUri": "gs://b/m", "runtimeVersion": "2.6.2", "resources": gpu}}
    assert pod_of(render(tmp_path, tf))["containers"][0]["image"] == "tensorflow/serving:2.6.2-gpu"


def test_ingress_hosts_and_routes(tmp_path: Path) -> None:
    transformer = {"containers": [{"name": "kserve-container", "image": "me/t:1"}]}
    objects = render(tmp_path, model("s3://b/m"), spec={"transformer": transformer})
    [ingress] = [o for o in objects if o["kind"] == "Ingress"]
    kubernetes_validate.validate(ingress, "1.30.0", strict=True)
    assert ingress["metadata"]["name"] == "iris" and ingress["spec"]["ingressClassName"] == "istio"
    routes = [
        (r["host"], r["http"]["paths"][0]["backend"]["service"]["name"])
        for r in ingress["spec"]["rules"]
    ]
    assert routes == [
        ("iris-transformer-ml.example.com", "iris-transformer"),
        ("iris-predictor-ml.example.com", "iris-predictor"),
        ("iris-ml.example.com", "iris-transformer"),  # the top-level host: the transformer
    ]
    local = render(
        tmp_path,
        model("s3://b/m"),
        metadata={"labels": {"networking.kserve.io/visibility": "cluster-local"}},
    )
    assert "Ingress" not in [o["kind"] for o in local]
    config = InferenceServiceConfig.from_configmap(
        {
            "ingress": json.dumps(
                {
                    "ingressGateway": "g",
                    "ingressDomain": "models.corp",
                    "ingressClassName": "nginx",
                    "domainTemplate": "{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}",
                }
            )
        }
    )
    render(tmp_path, model("s3://b/m"))  # rewrites isvc.yaml without the label
    path = tmp_path / "isvc.yaml"
    [ingress] = [
        o for o in desired_objects(load_workload([path]), config=config) if o["kind"] == "Ingress"
    ]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][-1]["host"] == "iris.ml.models.corp"
    off = InferenceServiceConfig.from_configmap(
        {"ingress": '{"ingressGateway": "g", "disableIngressCreation": true}'}
    )
    assert "Ingress" not in [o["kind"] for o in desired_objects(load_workload([path]), config=off)]


def test_explainer_component(tmp_path: Path) -> None:
    explainer = {
        "art": {"type": "SquareAttack", "config": {"nb_classes": "10"}, "storageUri": "gs://b/e"}
    }
    objects = render(tmp_path, model("gs://b/m"), spec={"explainer": explainer})
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert ("Deployment", "iris-explainer") in names and ("Service", "iris-explainer") in names
    assert ("HorizontalPodAutoscaler", "iris-explainer") in names
    pod = pod_of(objects, "iris-explainer")
    main = pod["containers"][0]
    assert main["name"] == "kserve-container"
    assert main["image"] == "kserve/art-explainer:latest"
    assert main["args"] == [
        "--model_name", "iris", "--http_port", "8080", "--predictor_host", "iris-predictor.ml",
        "--adversary_type", "SquareAttack", "--nb_classes", "10",
    ]  # fmt: skip
    assert pod["initContainers"][0]["args"] == ["gs://b/e", "/mnt/models"]
    [ingress] = [o for o in objects if o["kind"] == "Ingress"]
    hosts = {
        r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"]
        for r in ingress["spec"]["rules"]
    }
    assert hosts["iris-explainer-ml.example.com"] == "iris-explainer"
    assert hosts["iris-ml.example.com"] == "iris-predictor"


def test_logger_on_moorage_server_is_in_process(tmp_path: Path) -> None:
    logger = {"url": "http://sink.ml", "mode": "request", "metadataHeaders": ["x-user"]}
    objects = render(tmp_path, {**model("gs://b/m"), "logger": logger})
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    pod = pod_of(objects)
    assert [c["name"] for c in pod["containers"]] == ["kserve-container"]  # no sidecar
    args = pod["containers"][0]["args"]
    assert "--logger_url=http://sink.ml" in args and "--logger_mode=request" in args
    assert "--logger_inference_service=iris" in args and "--logger_namespace=ml" in args
    assert "--logger_component=predictor" in args
    assert "--logger_metadata_headers=x-user" in args
    deployment, service = objects[0], objects[1]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["internal.serving.kserve.io/logger-sink-url"] == "http://sink.ml"
    assert service["spec"]["ports"][0]["targetPort"] == 8080


def test_batcher_on_moorage_server_is_in_process(tmp_path: Path) -> None:
    logger = {"url": "http://sink.ml"}
    config = InferenceServiceConfig.from_configmap(
        {"batcher": json.dumps({"maxBatchSize": "64", "maxLatency": "20"})}
    )
    objects = render(
        tmp_path, {**model("gs://b/m"), "logger": logger, "batcher": {"timeout": 3}}, config=config
    )
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    pod = pod_of(objects)
    assert [c["name"] for c in pod["containers"]] == ["kserve-container"]  # no agent sidecar
    args = pod["containers"][0]["args"]
    assert "--logger_url=http://sink.ml" in args
    assert args[-4:] == [
        "--enable_batcher=true", "--max_batchsize=64", "--max_latency=20", "--batcher_timeout=3",
    ]  # fmt: skip
    deployment, service = objects[0], objects[1]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["internal.serving.kserve.io/batcher"] == "true"
    assert annotations["internal.serving.kserve.io/batcher-max-batchsize"] == "64"
    assert annotations["internal.serving.kserve.io/batcher-max-latency"] == "20"
    assert "internal.serving.kserve.io/agent" not in annotations
    assert service["spec"]["ports"][0]["targetPort"] == 8080

    objects = render(tmp_path, {**model("gs://b/m"), "batcher": {"maxBatchSize": 8}})
    args = pod_of(objects)["containers"][0]["args"]
    assert args[-3:] == ["--enable_batcher=true", "--max_batchsize=8", "--max_latency=5000"]


def test_logger_and_batcher_on_other_servers_use_the_agent(tmp_path: Path) -> None:
    predictor = {
        "model": {"modelFormat": {"name": "pytorch"}, "storageUri": "gs://b/m"},
        "logger": {"mode": "all"},
        "batcher": {"maxBatchSize": 8},
    }
    config = InferenceServiceConfig.from_configmap(
        {"logger": json.dumps({"caBundle": "corp-ca", "caCertFile": "ca.crt"})}
    )
    render(tmp_path, predictor)
    objects = desired_objects(load_workload([tmp_path / "isvc.yaml"]), config=config)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    pod = pod_of(objects)
    assert [c["name"] for c in pod["containers"]] == ["kserve-container", "agent"]
    agent = pod["containers"][1]
    args = agent["args"]
    assert args[:3] == ["--enable-logger", "--log-url", "http://default-broker"]
    assert "--logger-ca-cert-file=ca.crt" in args and "--logger-tls-skip-verify=false" in args
    assert args[-7:] == [
        "--enable-batcher", "--max-batchsize", "8", "--max-latency", "5000",
        "--component-port", "8080",
    ]  # fmt: skip
    assert agent["ports"] == [{"name": "agent-port", "containerPort": 9081, "protocol": "TCP"}]
    assert {"name": "agent-ca-bundle", "mountPath": "/etc/tls/logger", "readOnly": True} in agent[
        "volumeMounts"
    ]
    assert {"name": "agent-ca-bundle", "configMap": {"name": "corp-ca", "optional": True}} in pod[
        "volumes"
    ]
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["ports"][0]["targetPort"] == 9081


def _storage_spec_files(tmp_path: Path, storage: dict[str, Any], secret: dict | None) -> Path:
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storage": storage}}},
    }
    docs = [isvc]
    if secret is not None:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "storage-config", "namespace": "ml"},
                "stringData": {k: json.dumps(v) for k, v in secret.items()},
            }
        )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_storage_spec(tmp_path: Path) -> None:
    secret = {"localMinIO": {"type": "s3", "bucket": "models", "endpoint_url": "http://minio"}}
    path = _storage_spec_files(tmp_path, {"key": "localMinIO", "path": "iris/model"}, secret)
    objects = desired_objects(load_workload([path]))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    pod = pod_of(objects)
    [init] = pod["initContainers"]
    assert init["args"] == ["s3://models/iris/model", "/mnt/models"]
    assert init["env"] == [
        {
            "name": "STORAGE_CONFIG",
            "valueFrom": {"secretKeyRef": {"name": "storage-config", "key": "localMinIO"}},
        }
    ]
    annotations = objects[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["internal.serving.kserve.io/storage-spec"] == "true"
    assert (
        annotations["internal.serving.kserve.io/storage-initializer-sourceuri"]
        == "<scheme-placeholder>://iris/model"
    )
    # no key: default_<type>, parameters override the secret and travel as STORAGE_OVERRIDE_CONFIG
    storage = {"path": "m", "parameters": {"type": "s3", "bucket": "other"}}
    path = _storage_spec_files(tmp_path, storage, {"default_s3": {"type": "s3"}})
    [init] = pod_of(desired_objects(load_workload([path])))["initContainers"]
    assert init["args"][0] == "s3://other/m"
    assert init["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "default_s3"
    assert json.loads(init["env"][1]["value"]) == {"bucket": "other", "type": "s3"}


@pytest.mark.parametrize(
    ("storage", "secret", "message"),
    [
        ({"key": "nope", "path": "m"}, {"other": {"type": "s3"}}, "specified storage key nope"),
        ({"path": "m"}, None, "unable to determine storage type"),
        ({"path": "m", "parameters": {"type": "s3"}}, None, "requires a bucket"),
    ],
)
def test_storage_spec_errors(
    tmp_path: Path, storage: dict[str, Any], secret: dict | None, message: str
) -> None:
    from moorage.core.errors import ValidationError

    path = _storage_spec_files(tmp_path, storage, secret)
    with pytest.raises(ValidationError) as info:
        desired_objects(load_workload([path]))
    assert info.value.field == "spec.predictor.model.storage" and message in info.value.reason
