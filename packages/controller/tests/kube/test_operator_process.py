"""``moorage operator`` as a real process against the kmock stand-in (see conftest.py).

The stand-in has no Deployment controller: tests write Deployment status and Pods themselves.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from moorage.controller.testing import OperatorRunner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "Ingress")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def operator(kube: Any) -> Iterator[OperatorRunner]:
    port = _free_port()
    args = [
        "--kubeconfig",
        str(kube.kubeconfig),
        "--metrics-port",
        str(port),
        "--log-format",
        "json",
    ]
    with OperatorRunner(args) as runner:
        runner.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
        yield runner
    assert runner.exit_code == 0  # SIGTERM: a graceful stop
    assert "Traceback" not in runner.output, runner.output


def _objects(kube: Any) -> dict[str, list[str]]:
    return {kind: kube.names(kind) for kind in KINDS}


def _predictor_args(kube: Any, name: str = "iris") -> list[str]:
    deployment = kube.get("Deployment", f"{name}-predictor")
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    return list(next(c for c in init if c["name"] == "storage-initializer")["args"])


def _pod(name: str, isvc: str, *, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"serving.kserve.io/inferenceservice": isvc, "component": "predictor"},
        },
        "spec": {"containers": [{"name": "kserve-container", "image": "x"}]},
        "status": status,
    }


def test_create_update_delete(kube: Any, operator: OperatorRunner) -> None:
    created = kube.create(kube.isvc())
    uid = created["metadata"]["uid"]
    objects = kube.wait(lambda: (o := _objects(kube))["Ingress"] and o, message="objects applied")
    assert objects == {
        "Deployment": ["iris-predictor"],
        "Service": ["iris-predictor"],
        "HorizontalPodAutoscaler": ["iris-predictor"],
        "Ingress": ["iris"],
    }
    for kind in KINDS:
        for obj in kube.list(kind):
            [owner] = obj["metadata"]["ownerReferences"]
            assert owner["uid"] == uid and owner["controller"] is True
            assert owner["kind"] == "InferenceService" and owner["name"] == "iris"
    deployment = kube.get("Deployment", "iris-predictor")
    assert "replicas" not in deployment["spec"]  # the HPA owns them
    status = kube.wait(lambda: kube.get("InferenceService", "iris").get("status"))
    assert status["url"] == "http://iris-default.example.com"
    assert status["address"]["url"] == "http://iris-predictor.default.svc.cluster.local"
    assert kube.condition(kube.get("InferenceService", "iris"), "Ready")["status"] != "True"

    # The Deployment becomes available, a pod runs: Ready, URL per component, model Loaded.
    kube.make_available("iris-predictor")
    kube.create(_pod("iris-predictor-abc", "iris", status={"phase": "Running"}))
    ready = kube.wait(
        lambda: (
            (o := kube.get("InferenceService", "iris"))
            and kube.condition(o, "Ready").get("status") == "True"
            and (o["status"].get("modelStatus") or {}).get("transitionStatus") == "UpToDate"
            and o
        ),
        message="Ready",
    )
    assert ready["status"]["components"]["predictor"]["url"] == (
        "http://iris-predictor-default.example.com"
    )
    assert ready["status"]["modelStatus"]["states"] == {
        "activeModelState": "Loaded", "targetModelState": "Loaded",
    }  # fmt: skip
    assert ready["status"]["modelStatus"]["copies"] == {"totalCopies": 1}
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    for type_ in ("PredictorReady", "IngressReady", "LatestDeploymentReady"):
        assert kube.condition(ready, type_)["status"] == "True", type_

    # Idempotent: once settled, nothing is written again.
    time.sleep(1.5)
    before = (
        kube.get("InferenceService", "iris")["metadata"]["resourceVersion"],
        kube.get("Deployment", "iris-predictor")["metadata"]["resourceVersion"],
    )
    time.sleep(2)
    after = (
        kube.get("InferenceService", "iris")["metadata"]["resourceVersion"],
        kube.get("Deployment", "iris-predictor")["metadata"]["resourceVersion"],
    )
    assert before == after

    # A new storageUri reaches the storage-initializer.
    kube.patch(
        "InferenceService", "iris", {"spec": {"predictor": {"model": {"storageUri": "gs://b/v2"}}}}
    )
    kube.wait(lambda: _predictor_args(kube)[0] == "gs://b/v2", message="new storageUri")

    # A transformer added, then removed: its objects come, then go.
    transformer = {"containers": [{"name": "kserve-container", "image": "example/t:1"}]}
    kube.patch("InferenceService", "iris", {"spec": {"transformer": transformer}})
    kube.wait(lambda: "iris-transformer" in kube.names("Deployment"), message="transformer")
    assert "iris-transformer" in kube.names("Service")
    assert "iris-transformer" in kube.names("HorizontalPodAutoscaler")
    kube.patch("InferenceService", "iris", {"spec": {"transformer": None}})
    kube.wait(lambda: kube.names("Deployment") == ["iris-predictor"], message="transformer pruned")
    kube.wait(lambda: kube.names("Service") == ["iris-predictor"], message="transformer Service")
    assert kube.names("HorizontalPodAutoscaler") == ["iris-predictor"]

    # Deleted: its objects go (owner references; the stand-in's garbage collector).
    kube.delete("InferenceService", "iris")
    kube.wait(lambda: not any(_objects(kube).values()), message="objects deleted")

    # Metrics and structured logs name what happened.
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:  # type: ignore[attr-defined]
        metrics = response.read().decode()
    assert 'moorage_controller_reconciles_total{result="success"}' in metrics
    assert 'moorage_controller_pruned_objects_total{kind="Deployment"} 1.0' in metrics
    assert "moorage_controller_reconcile_duration_seconds_count" in metrics
    logs = [json.loads(line) for line in operator.output.splitlines() if line.startswith("{")]
    applied = [e for e in logs if e["message"].startswith("applied ")]
    assert applied and all(e["isvc"] == "iris" and e["namespace"] == "default" for e in applied)


def test_runtime_and_configmap_changes_render_again(kube: Any, operator: OperatorRunner) -> None:
    kube.create(kube.isvc())
    kube.wait(lambda: kube.names("Ingress") == ["iris"], message="applied")
    runtime = kube.get("ClusterServingRuntime", "kserve-sklearnserver", ns=None)
    container = runtime["spec"]["containers"][0]
    kube.patch(
        "ClusterServingRuntime",
        "kserve-sklearnserver",
        {"spec": {"containers": [{**container, "image": "example/sklearn:changed"}]}},
        ns=None,
    )

    def image() -> str:
        pod = kube.get("Deployment", "iris-predictor")["spec"]["template"]["spec"]
        return str(next(c for c in pod["containers"] if c["name"] == "kserve-container")["image"])

    kube.wait(lambda: image() == "example/sklearn:changed", message="runtime change rendered")
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {"ingress": '{"ingressGateway": "g", "ingressDomain": "models.test", '
                            '"ingressClassName": "nginx"}'},
    }  # fmt: skip
    kube.create(config)

    def hosts() -> list[str]:
        ingress = kube.get("Ingress", "iris")
        return sorted(r["host"] for r in ingress["spec"]["rules"])

    kube.wait(lambda: "iris-default.models.test" in hosts(), message="ConfigMap change rendered")
    assert kube.get("Ingress", "iris")["spec"]["ingressClassName"] == "nginx"
    kube.wait(
        lambda: (
            kube.get("InferenceService", "iris")["status"]["url"]
            == "http://iris-default.models.test"
        )
    )
    # A broken ConfigMap: nothing applied, the status says why, the objects stay.
    kube.patch(
        "ConfigMap", "inferenceservice-config", {"data": {"ingress": "{not json"}}, ns="kserve"
    )
    broken = kube.wait(
        lambda: (
            (o := kube.get("InferenceService", "iris"))
            and kube.condition(o, "Ready").get("reason") == "InvalidConfig"
            and o
        ),
        message="InvalidConfig",
    )
    assert "data.ingress" in kube.condition(broken, "Ready")["message"]
    assert kube.names("Deployment") == ["iris-predictor"]


def test_bad_input_is_reported_and_others_go_on(kube: Any, operator: OperatorRunner) -> None:
    unknown = kube.isvc("unknown")
    unknown["spec"]["predictor"]["model"]["modelFormat"] = {"name": "caffe"}
    kube.create(unknown)
    pinned = kube.isvc("pinned")
    pinned["spec"]["predictor"]["model"]["runtime"] = "my-runtime"
    kube.create(pinned)
    kube.create(kube.isvc("fine"))
    kube.wait(lambda: "fine-predictor" in kube.names("Deployment"), message="fine applied")

    def failure(name: str) -> dict[str, Any]:
        status = (kube.get("InferenceService", name) or {}).get("status") or {}
        return dict((status.get("modelStatus") or {}).get("lastFailureInfo") or {})

    assert kube.wait(lambda: failure("unknown"))["reason"] == "NoSupportingRuntime"
    assert kube.wait(lambda: failure("pinned"))["reason"] == "RuntimeNotRecognized"
    status = kube.get("InferenceService", "unknown")["status"]
    assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    assert "caffe" in status["modelStatus"]["lastFailureInfo"]["message"]
    ready = kube.condition(kube.get("InferenceService", "unknown"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "NoSupportingRuntime"
    assert kube.names("Deployment") == ["fine-predictor"]  # nothing half-applied
    events = kube.wait(
        lambda: (
            {e["reason"] for e in kube.list("Event")}
            >= {"NoSupportingRuntime", "RuntimeNotRecognized"}
            and kube.list("Event")
        )
    )
    assert {e["involvedObject"]["name"] for e in events} == {"unknown", "pinned"}
    assert all(e["type"] == "Warning" for e in events)

    # The pinned runtime appears: the InferenceService waiting for it is rendered.
    runtime = kube.get("ClusterServingRuntime", "kserve-sklearnserver", ns=None)
    kube.create({
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "my-runtime", "namespace": "default"},
        "spec": runtime["spec"],
    })  # fmt: skip
    kube.wait(lambda: "pinned-predictor" in kube.names("Deployment"), message="pinned rendered")
    kube.wait(lambda: not failure("pinned"), message="failure cleared")


def test_crash_looping_server_shows_its_termination_message(
    kube: Any, operator: OperatorRunner
) -> None:
    kube.create(kube.isvc())
    kube.wait(lambda: kube.names("Deployment") == ["iris-predictor"])
    crash = {
        "name": "kserve-container",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                     "message": "ModuleNotFoundError: No module named 'sklearn'"}},
    }  # fmt: skip
    kube.create(
        _pod("iris-predictor-x", "iris", status={"phase": "Running", "containerStatuses": [crash]})
    )
    status = kube.wait(
        lambda: (
            (s := kube.get("InferenceService", "iris")["status"])
            and s.get("modelStatus", {}).get("transitionStatus") == "BlockedByFailedLoad"
            and s
        ),
        message="BlockedByFailedLoad",
    )
    assert status["modelStatus"]["lastFailureInfo"] == {
        "reason": "ModelLoadFailed",
        "message": "ModuleNotFoundError: No module named 'sklearn'",
        "exitCode": 1,
    }
    assert status["modelStatus"]["states"]["targetModelState"] == "FailedToLoad"


@pytest.mark.slow
def test_killed_mid_reconcile_and_restarted_converges(kube: Any) -> None:
    args = ["--kubeconfig", str(kube.kubeconfig), "--metrics-port", "0", "--no-leader-election"]
    runner = OperatorRunner(args).start()
    try:
        names = [f"m{i}" for i in range(20)]
        for name in names:
            kube.create(kube.isvc(name))
        kube.wait(lambda: kube.names("Deployment"), message="first objects")
        runner.kill()  # somewhere in the middle of the 20
        runner.start()
        expected = sorted(f"{n}-predictor" for n in names)
        kube.wait(lambda: kube.names("HorizontalPodAutoscaler") == expected, timeout=40)
        kube.wait(lambda: kube.names("Ingress") == sorted(names), timeout=20)
        assert kube.names("Deployment") == expected
        assert kube.names("Service") == expected
        for deployment in kube.list("Deployment"):
            owner = deployment["metadata"]["labels"]["serving.kserve.io/inferenceservice"]
            uid = kube.get("InferenceService", owner)["metadata"]["uid"]
            assert [r["uid"] for r in deployment["metadata"]["ownerReferences"]] == [uid]
        kube.wait(
            lambda: all(kube.get("InferenceService", n).get("status") for n in names),
            message="statuses",
        )
    finally:
        runner.stop()
    assert "Traceback" not in runner.output, runner.output


@pytest.mark.slow
def test_one_replica_leads(kube: Any) -> None:
    args = ["--kubeconfig", str(kube.kubeconfig), "--metrics-port", "0"]
    first = OperatorRunner(args).start()
    second: OperatorRunner | None = None
    try:
        kube.wait(lambda: kube.get("Lease", "moorage-operator", ns="kserve"), message="Lease taken")
        second = OperatorRunner(args).start()
        time.sleep(2)
        holder = kube.get("Lease", "moorage-operator", ns="kserve")["spec"]["holderIdentity"]
        assert holder.endswith(f"-{first.pid}")
        first.stop()  # graceful: releases the Lease
        assert first.exit_code == 0
        kube.wait(
            lambda: kube.get("Lease", "moorage-operator", ns="kserve")["spec"][
                "holderIdentity"
            ].endswith(f"-{second.pid}"),
            timeout=20,
            message="the standby takes over",
        )
        kube.create(kube.isvc())
        kube.wait(lambda: kube.names("Deployment") == ["iris-predictor"], message="standby serves")
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _review(
    url: str, ca: str, obj: dict[str, Any], *, old: dict[str, Any] | None = None
) -> dict[str, Any]:
    version = obj["apiVersion"].split("/")[1]
    plural = url.rsplit("-", 1)[1]
    request = {
        "uid": "r-1",
        "kind": {"group": "serving.kserve.io", "version": version, "kind": obj["kind"]},
        "resource": {"group": "serving.kserve.io", "version": version, "resource": plural},
        "operation": "UPDATE" if old else "CREATE",
        "object": obj,
        "oldObject": old,
        "name": obj["metadata"]["name"],
        "namespace": "default",
        "userInfo": {"username": "test"},
        "dryRun": False,
    }
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    context = ssl.create_default_context(cadata=ca)
    data = json.dumps(review).encode()
    post = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, context=context, timeout=10) as response:
        return dict(json.loads(response.read())["response"])


def test_admission_webhooks(kube: Any) -> None:
    port = _free_port()
    args = [
        "--kubeconfig", str(kube.kubeconfig), "--metrics-port", "0", "--no-leader-election",
        "--webhooks", "--webhook-port", str(port), "--webhook-host", "127.0.0.1",
    ]  # fmt: skip
    with OperatorRunner(args) as runner:
        # kopf creates each configuration, then patches its webhooks in: wait for both.
        def filled(kind: str) -> Any:
            found = kube.get(kind, "moorage.serving.kserve.io", ns=None)
            return found if found and found.get("webhooks") else None

        configuration = kube.wait(
            lambda: filled("ValidatingWebhookConfiguration"), message="webhook configuration"
        )
        webhooks = {w["name"]: w for w in configuration["webhooks"]}
        hook = webhooks["validate-inferenceservices.moorage.serving.kserve.io"]
        assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{port}/validate-inferenceservices"
        ca = base64.b64decode(hook["clientConfig"]["caBundle"]).decode()
        mutating = kube.wait(lambda: filled("MutatingWebhookConfiguration"))
        assert len(mutating["webhooks"]) == 6

        bad = kube.isvc()
        bad["spec"]["predictor"].update(minReplicas=5, maxReplicas=2)
        answer = _review(f"https://127.0.0.1:{port}/validate-inferenceservices", ca, bad)
        assert answer["allowed"] is False
        message = "spec.predictor.minReplicas: 'MinReplicas' cannot be greater than MaxReplicas"
        assert answer["status"] == {"code": 422, "message": message}
        shorthand = kube.isvc()
        shorthand["spec"]["predictor"] = {"sklearn": {"storageUri": "gs://b/m"}}
        answer = _review(f"https://127.0.0.1:{port}/default-inferenceservices", ca, shorthand)
        assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(answer["patch"]))
        assert {"op": "remove", "path": "/spec/predictor/sklearn"} in ops
        model = next(op for op in ops if op["path"] == "/spec/predictor/model")["value"]
        assert model["modelFormat"] == {"name": "sklearn"}
        cache = {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "LocalModelCache",
            "metadata": {"name": "c"},
            "spec": {"sourceModelUri": "gs://a/b", "modelSize": "1Gi", "nodeGroups": ["g"]},
        }
        moved = {**cache, "spec": {**cache["spec"], "sourceModelUri": "gs://a/c"}}
        answer = _review(
            f"https://127.0.0.1:{port}/validate-localmodelcaches", ca, moved, old=cache
        )
        assert answer["status"]["message"] == "spec.sourceModelUri: StorageUri is immutable"
    assert runner.exit_code == 0


def test_one_namespace(kube: Any) -> None:
    args = ["--kubeconfig", str(kube.kubeconfig), "--metrics-port", "0", "--no-leader-election",
            "--namespace", "kserve-test"]  # fmt: skip
    with OperatorRunner(args) as runner:
        elsewhere = kube.isvc("elsewhere")
        kube.create(elsewhere)
        here = kube.isvc("here")
        here["metadata"]["namespace"] = "kserve-test"
        kube.create(here)
        kube.wait(
            lambda: kube.names("Deployment", "kserve-test") == ["here-predictor"],
            message="the served namespace",
        )
        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
            "data": {"ingress": '{"ingressGateway": "g", "ingressDomain": "ns.test"}'},
        }
        kube.create(config)  # in $POD_NAMESPACE, watched as well
        kube.wait(
            lambda: (
                kube.get("InferenceService", "here", "kserve-test")["status"]["url"]
                == "http://here-kserve-test.ns.test"
            ),
            message="the ConfigMap seen",
        )
        assert kube.names("Deployment") == []
        assert not kube.get("InferenceService", "elsewhere").get("status")
    assert runner.exit_code == 0
