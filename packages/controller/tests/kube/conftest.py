"""The Kubernetes API stand-in (kmock, ``standin.py``) and a small synchronous client for tests.

The stand-in is ``../shared/testing/kmock_apiserver.py`` (``$MOORAGE_KMOCK_APISERVER`` names
another copy) run by ``standin.py``, which adds apply-as-merge and the garbage collector. It has
no built-in controllers: tests make Deployments available by patching their status themselves.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from moorage.core.resources import builtin_runtimes

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
SHARED_SCRIPT = Path(
    os.environ.get("MOORAGE_KMOCK_APISERVER")
    or HERE.parents[3].parent / "shared" / "testing" / "kmock_apiserver.py"
)

_ADMISSION = "/apis/admissionregistration.k8s.io/v1"
PATHS = {
    "InferenceService": "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices",
    "ServingRuntime": "/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/servingruntimes",
    "ClusterServingRuntime": "/apis/serving.kserve.io/v1alpha1/clusterservingruntimes",
    "TrainedModel": "/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/trainedmodels",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "/api/v1/namespaces/{ns}/services",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
    "Ingress": "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Event": "/api/v1/namespaces/{ns}/events",
    "Lease": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    "ValidatingWebhookConfiguration": f"{_ADMISSION}/validatingwebhookconfigurations",
    "MutatingWebhookConfiguration": f"{_ADMISSION}/mutatingwebhookconfigurations",
}


class Kube:
    """Blocking calls to the stand-in (tests only)."""

    def __init__(self, base: str, kubeconfig: Path) -> None:
        self.base = base
        self.kubeconfig = kubeconfig

    def _call(self, method: str, path: str, body: Any = None, *, content: str = "") -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content or "application/json"}
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def path(self, kind: str, ns: str | None = "default", name: str | None = None) -> str:
        base = PATHS[kind].format(ns=ns)
        return f"{base}/{name}" if name else base

    def create(self, obj: dict[str, Any]) -> Any:
        ns = obj["metadata"].get("namespace", "default")
        return self._call("POST", self.path(obj["kind"], ns), obj)

    def get(self, kind: str, name: str, ns: str = "default") -> Any:
        try:
            return self._call("GET", self.path(kind, ns, name))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def list(self, kind: str, ns: str = "default") -> list[dict[str, Any]]:
        return self._call("GET", self.path(kind, ns))["items"]

    def names(self, kind: str, ns: str = "default") -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.list(kind, ns))

    def patch(
        self, kind: str, name: str, patch: dict[str, Any], ns: str = "default", *, sub: str = ""
    ) -> Any:
        path = self.path(kind, ns, name) + (f"/{sub}" if sub else "")
        return self._call("PATCH", path, patch, content="application/merge-patch+json")

    def delete(self, kind: str, name: str, ns: str = "default") -> Any:
        return self._call("DELETE", self.path(kind, ns, name))

    def make_available(self, name: str, ns: str = "default", *, replicas: int = 1) -> None:
        """What the Deployment controller would write once the pods are ready."""
        deployment = self.get("Deployment", name, ns)
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability."},
            ],
        }  # fmt: skip
        self.patch("Deployment", name, {"status": status}, ns, sub="status")


def wait_for(what: Callable[[], T], *, timeout: float = 20.0, message: str = "") -> T:
    """Poll ``what`` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
        except (urllib.error.URLError, KeyError, TypeError):
            last = None
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message or what}: last {last!r}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    """A fresh stand-in API server with kserve-sklearnserver installed."""
    if not SHARED_SCRIPT.is_file():
        pytest.skip(f"the kmock stand-in is not at {SHARED_SCRIPT}")
    pytest.importorskip("kmock")
    port = _free_port()
    kubeconfig = tmp_path / "kubeconfig"
    log = (tmp_path / "standin.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "standin.py"), str(SHARED_SCRIPT), str(port), str(kubeconfig)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        api = Kube(f"http://127.0.0.1:{port}", kubeconfig)
        wait_for(lambda: kubeconfig.exists() and api.list("Deployment") == [], message="stand-in")
        for runtime in builtin_runtimes():
            if runtime.name == "kserve-sklearnserver":
                api.create(runtime.to_dict())
        yield api
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def isvc(name: str = "iris", *, uri: str = "gs://kfserving-examples/models/sklearn/1.0/model",
         **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}},
            **spec,
        },
    }


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond["type"] == type_:
            return dict(cond)
    return {}


Kube.wait = staticmethod(wait_for)  # type: ignore[attr-defined]
Kube.isvc = staticmethod(isvc)  # type: ignore[attr-defined]
Kube.condition = staticmethod(condition)  # type: ignore[attr-defined]
