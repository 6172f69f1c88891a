"""The helm umbrella chart (charts/moorage): lint, render with several values sets, validate
every rendered object (built-in kinds with kubernetes-validate, our custom resources against the
chart's own CRDs), pod security, the inferenceservice-config ConfigMap against core's model,
the operator's RBAC against the calls its code makes, refusals through values.schema.json,
and ``helm package``. helm comes from a PyPI wheel (conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from moorage.core.config.configmap import InferenceServiceConfig
from moorage.storage.testing import Registry

from .conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHART = ROOT / "charts" / "moorage"
K8S_VERSION = "1.30.0"
NAMESPACE = "kserve"

VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    # everything on: the cache with a kopf-managed webhook, a registry and tag, one namespace
    "all-features": {
        "global": {"imageRegistry": "registry.example.com/ml", "imageTag": "0.1.0-rc1",
                   "imagePullSecrets": ["regcred"]},
        "controller": {"replicas": 2, "watchNamespace": "models", "workers": 4,
                       "nodeSelector": {"kubernetes.io/os": "linux"},
                       "config": {"deploy": {"defaultDeploymentMode": "RawDeployment"},
                                  "localModel": {"enabled": True}}},
        "cache": {"enabled": True,
                  "webhook": {"enabled": True},
                  "agent": {"nodeSelector": {"moorage.io/model-cache": "true"},
                            "tolerations": [{"key": "gpu", "operator": "Exists"}],
                            "env": [{"name": "S3_ENDPOINT", "value": "http://minio:9000"}],
                            "envFrom": [{"secretRef": {"name": "s3-credentials"}}]}},
    },
    # the cache's own ValidatingWebhookConfiguration, CA injected by cert-manager
    "cache-webhook-cert-manager": {
        "cache": {"enabled": True,
                  "webhook": {"enabled": True, "managed": False,
                              "certificate": {"certManager": {
                                  "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}}},
    },
    # the cache alone (KServe's controller elsewhere), a certificate the user provides
    "cache-only": {
        "controller": {"enabled": False}, "runtimes": {"install": False},
        "storageContainer": {"install": False},
        "cache": {"enabled": True,
                  "webhook": {"enabled": True, "certificate": {"secretName": "my-tls"}},
                  "agent": {"prepareRoot": False}},
    },
    "single-replica-no-metrics-no-webhooks": {
        "controller": {"leaderElection": False, "metricsPort": 0, "webhook": {"enabled": False}},
    },
}  # fmt: skip


def _helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def _values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _render(helm: Path, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    out = _helm(
        helm,
        "template",
        "moorage",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "-f",
        str(_values_file(tmp_path, values)),
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → openAPIV3Schema from the chart's CRDs."""
    schemas = {}
    for path in (CHART / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    return []


@pytest.mark.parametrize("name", sorted(VALUES))
def test_lint_render_validate(helm: Path, tmp_path: Path, crd_schemas: dict, name: str) -> None:
    values = VALUES[name]
    _helm(helm, "lint", "--strict", str(CHART), "-f", str(_values_file(tmp_path, values)))
    objects = _render(helm, tmp_path, values)
    assert objects
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        assert key not in seen, f"rendered twice: {key}"
        seen.add(key)
        api_version = obj["apiVersion"]
        if api_version.startswith("serving.kserve.io/"):
            schema = crd_schemas[(api_version, obj["kind"])]
            jsonschema.validate(obj, schema)
        elif api_version.startswith("cert-manager.io/"):
            assert obj["kind"] in ("Issuer", "Certificate")  # cert-manager's CRDs are not ours
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        for spec in _pod_specs(obj):
            _check_pod_security(obj, spec)


def _check_pod_security(obj: dict[str, Any], spec: dict[str, Any]) -> None:
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    pod = spec.get("securityContext") or {}
    assert pod.get("runAsNonRoot") is True, where
    assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    assert spec.get("serviceAccountName"), where
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container.get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False, (where, container["name"])
        assert sc.get("readOnlyRootFilesystem") is True, (where, container["name"])
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), (where, container["name"])
        if container["name"] == "prepare-root":  # the one root step: chown of the model root
            assert sc["capabilities"].get("add") == ["CHOWN"] and container["command"][0] == "chown"
        else:
            assert sc.get("runAsUser", pod.get("runAsUser")) != 0, (where, container["name"])
            assert not sc.get("capabilities", {}).get("add"), (where, container["name"])
        assert container.get("resources", {}).get("limits"), (where, container["name"])


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_default_install(helm: Path, tmp_path: Path) -> None:
    """What a plain install gets: the operator, its ConfigMap, the runtimes with moorage's
    images, the default ClusterStorageContainer; no cache."""
    objects = _render(helm, tmp_path, {})
    deployment = _by_kind(objects, "Deployment")["moorage-controller"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "moorage/controller:0.1.0"
    assert container["args"][0] == "operator"
    assert "--webhooks" in container["args"]
    assert "--webhook-host=moorage-operator.kserve.svc" in container["args"]
    webhook = _by_kind(objects, "Service")["moorage-operator"]["spec"]["ports"][0]
    assert webhook["port"] == 9443 and webhook["targetPort"] == "webhook"
    assert {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in container["env"]
    assert "DaemonSet" not in {o["kind"] for o in objects}
    runtimes = _by_kind(objects, "ClusterServingRuntime")
    assert {
        "kserve-sklearnserver",
        "kserve-xgbserver",
        "kserve-lgbserver",
        "kserve-huggingfaceserver",
        "kserve-mlserver",
        "kserve-tritonserver",
        "kserve-torchserve",
        "kserve-tensorflow-serving",
        "kserve-paddleserver",
        "kserve-pmmlserver",
    } <= set(runtimes)
    image = lambda name: runtimes[name]["spec"]["containers"][0]["image"]  # noqa: E731
    assert image("kserve-sklearnserver") == "moorage/server:0.1.0"
    assert image("kserve-huggingfaceserver") == "moorage/huggingfaceserver:0.1.0"
    assert image("kserve-tritonserver").startswith("nvcr.io/nvidia/tritonserver:")
    # the runtimes' own templates reach the cluster unrendered
    assert (
        "--model_name={{.Name}}"
        in runtimes["kserve-sklearnserver"]["spec"]["containers"][0]["args"]
    )
    storage = _by_kind(objects, "ClusterStorageContainer")["default"]
    assert storage["spec"]["container"]["image"] == "moorage/storage-initializer:0.1.0"


def test_configmap_is_kserve_defaults(helm: Path, tmp_path: Path) -> None:
    """Every key of KServe's inferenceservice-config, and read with core's model it is KServe's
    shipped configuration, but for the storage-initializer image, which is moorage's, and the
    default deployment mode: RawDeployment, the only mode moorage's operator serves (KServe's
    default, Serverless, needs Knative)."""
    configmap = _by_kind(_render(helm, tmp_path, {}), "ConfigMap")["inferenceservice-config"]
    assert configmap["metadata"]["namespace"] == NAMESPACE
    keys = set(InferenceServiceConfig.KEYS) - {"inferenceService"}  # a moorage extension
    assert set(configmap["data"]) == keys
    parsed = InferenceServiceConfig.from_configmap(configmap)
    expected = InferenceServiceConfig.default()
    expected.storage_initializer.image = "moorage/storage-initializer:0.1.0"
    expected.local_model.default_job_image = "moorage/storage-initializer:0.1.0"
    assert expected.deploy.default_deployment_mode == "Serverless"  # KServe's
    expected.deploy.default_deployment_mode = "RawDeployment"
    assert parsed == expected
    operator = (ROOT / "packages" / "controller" / "README.md").read_text()
    assert "Every InferenceService is served in RawDeployment mode" in operator
    changed = _by_kind(
        _render(
            helm,
            tmp_path,
            {
                "controller": {
                    "config": {
                        "storageInitializer": {"image": "x/si:1"},
                        "ingress": {"ingressDomain": "ml.example.org"},
                    }
                }
            },
        ),
        "ConfigMap",
    )["inferenceservice-config"]
    parsed = InferenceServiceConfig.from_configmap(changed)
    assert parsed.storage_initializer.image == "x/si:1"
    assert parsed.ingress.ingress_domain == "ml.example.org"
    assert (
        parsed.ingress.ingress_gateway == expected.ingress.ingress_gateway
    )  # merged, not replaced


def test_cache(helm: Path, tmp_path: Path) -> None:
    objects = _render(helm, tmp_path, VALUES["all-features"])
    agent = _by_kind(objects, "DaemonSet")["moorage-cache-agent"]["spec"]["template"]["spec"]
    container = agent["containers"][0]
    assert container["image"] == "registry.example.com/ml/moorage/cache:0.1.0-rc1"
    assert container["args"][0] == "agent"
    assert {
        "name": "NODE_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    } in container["env"]
    assert agent["nodeSelector"] == {"moorage.io/model-cache": "true"}
    assert agent["volumes"][0]["hostPath"]["path"] == "/mnt/models"
    controller = _by_kind(objects, "Deployment")["moorage-cache-controller"]["spec"]["template"][
        "spec"
    ]
    args = controller["containers"][0]["args"]
    assert args[0] == "controller"
    assert "--webhook-host=moorage-cache-webhook.kserve.svc" in args
    assert "--webhook-configuration=moorage-moorage-cache" in args
    assert (
        _by_kind(objects, "Certificate")["moorage-cache-webhook"]["spec"]["dnsNames"][0]
        == "moorage-cache-webhook.kserve.svc"
    )
    assert "ValidatingWebhookConfiguration" not in {o["kind"] for o in objects}  # kopf keeps it
    rules = _by_kind(objects, "ClusterRole")["moorage-cache-controller"]["rules"]
    assert {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["validatingwebhookconfigurations"],
        "verbs": ["create", "patch"],
    } in rules
    unmanaged = _render(helm, tmp_path, VALUES["cache-webhook-cert-manager"])
    webhook = _by_kind(unmanaged, "ValidatingWebhookConfiguration")["moorage-moorage-cache"]
    assert webhook["webhooks"][0]["clientConfig"]["service"]["path"] == "/localmodelcache"
    assert "Issuer" not in {o["kind"] for o in unmanaged}


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _operator_calls() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every call `moorage operator` makes, read from its code:
    the kopf registry's watches, the kinds it applies and prunes, status, Events, the Lease."""
    pytest.importorskip("kopf")
    from moorage.controller.operator import apply
    from moorage.controller.operator.controller import Snapshot
    from moorage.controller.operator.handlers import build_registry

    class _Controller:
        snapshot = Snapshot()

    registry = build_registry(_Controller(), config_namespace=NAMESPACE)  # type: ignore[arg-type]
    calls: set[tuple[str, str, str]] = set()
    for handlers in (registry._indexing, registry._watching):
        for handler in handlers.get_all_handlers():
            selector = handler.selector
            for verb in ("list", "watch"):
                calls.add((selector.group or "", selector.plural or selector.any_name, verb))

    def group(kind: str) -> str:
        api_version = apply.KINDS[kind].api_version
        return api_version.split("/")[0] if "/" in api_version else ""

    for kind in apply.OWNED_KINDS:  # server-side apply (create on first apply) and pruning
        for verb in ("create", "patch", "delete"):
            calls.add((group(kind), apply.KINDS[kind].plural, verb))
    calls.add(("serving.kserve.io", "inferenceservices/status", "patch"))
    calls.add(("serving.kserve.io", "trainedmodels/status", "patch"))
    calls.add(("serving.kserve.io", "trainedmodels", "patch"))  # KServe's labels
    calls.add(("", "events", "create"))
    # --webhooks: kopf creates and patches the webhook configurations it is told to keep
    from moorage.controller.operator import webhooks

    assert webhooks.CONFIGURATION_NAME
    for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        for verb in ("create", "patch"):
            calls.add(("admissionregistration.k8s.io", resource, verb))
    return calls


def _cluster_scoped() -> set[str]:
    """The cluster-scoped resources the operator may touch: ours from the chart's CRDs, and
    the built-in kinds kopf reads or keeps."""
    ours = {
        crd["spec"]["names"]["plural"]
        for crd in map(yaml.safe_load, map(Path.read_text, (CHART / "crds").glob("*.yaml")))
        if crd["spec"]["scope"] == "Cluster"
    }
    return ours | {
        "customresourcedefinitions",
        "namespaces",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    }


@pytest.mark.parametrize("watch", ["", "models"], ids=["cluster-wide", "watch-namespace"])
def test_operator_rbac_matches_its_calls(helm: Path, tmp_path: Path, watch: str) -> None:
    """Every call the operator makes is granted and nothing else is, each where it is made:
    cluster-wide in a ClusterRole when it serves every namespace; with watchNamespace, the
    namespaced kinds in a Role in that namespace and in the release namespace (kopf watches
    both), the ClusterRole left with the cluster-scoped kinds."""
    objects = _render(helm, tmp_path, {"controller": {"watchNamespace": watch}})
    cluster = _grants(_by_kind(objects, "ClusterRole")["moorage-controller"])
    roles = {
        o["metadata"]["namespace"]: _grants(o)
        for o in objects
        if o["kind"] == "Role" and o["metadata"]["name"] == "moorage-controller"
    }
    bindings = {
        o["metadata"]["namespace"]: o
        for o in objects
        if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "moorage-controller"
    }
    lease = _grants(_by_kind(objects, "Role")["moorage-controller-leader-election"])
    calls = _operator_calls()
    # what is granted beyond the calls, each for a reason named in rbac.yaml
    framework = {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),  # kopf's resource scan
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("events.k8s.io", "events", "create"),  # kopf posts to either events API
    }
    if not watch:
        assert roles == {} and bindings == {}
        granted = cluster
    else:
        framework |= {("", "namespaces", "list"), ("", "namespaces", "watch")}  # kopf observes
        assert set(roles) == {watch, NAMESPACE} == set(bindings)
        assert roles[watch] == roles[NAMESPACE]
        for binding in bindings.values():
            assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                          "kind": "Role", "name": "moorage-controller"}  # fmt: skip
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "moorage-controller",
                                            "namespace": NAMESPACE}]  # fmt: skip
        scoped = _cluster_scoped()
        outside = {r for _, r, _ in cluster if r.split("/")[0] not in scoped}
        assert outside == set(), "the ClusterRole grants namespaced kinds cluster-wide"
        inside = {r for _, r, _ in roles[watch] if r.split("/")[0] in scoped}
        assert inside == set(), "a Role names cluster-scoped kinds"
        granted = cluster | roles[watch]
    assert calls - granted == set(), "the operator calls what its roles do not grant"
    assert granted - calls - framework == set(), "the roles grant more than is used"
    assert lease == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "patch")}
    assert not any(verb in ("*", "update", "deletecollection") for _, _, verb in granted)
    assert not any(resource == "*" for _, resource, _ in granted)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"controller": {"workers": 0}}, "controller.workers"),
        (
            {"controller": {"config": {"deploy": {"defaultDeploymentMode": "Knative"}}}},
            "controller.config.deploy.defaultDeploymentMode",
        ),
        (
            {"controller": {"config": {"ingress": {"ingressGateway": ""}}}},
            "controller.config.ingress.ingressGateway",
        ),
        ({"controller": {"replica": 2}}, "controller"),
        ({"cache": {"agent": {"verify": "md5"}}}, "cache.agent.verify"),
        ({"cache": {"agent": {"modelRoot": "models"}}}, "cache.agent.modelRoot"),
        ({"global": {"imagePullPolicy": "Sometimes"}}, "global.imagePullPolicy"),
    ],
)
def test_schema_refuses_bad_values(helm: Path, tmp_path: Path, values: dict, field: str) -> None:
    done = _helm(
        helm,
        "template",
        "moorage",
        str(CHART),
        "-f",
        str(_values_file(tmp_path, values)),
        check=False,
    )
    assert done.returncode != 0
    assert field in done.stderr, done.stderr


def test_refusals_in_templates(helm: Path, tmp_path: Path) -> None:
    done = _helm(
        helm,
        "template",
        "moorage",
        str(CHART),
        "-f",
        str(_values_file(tmp_path, {"controller": {"replicas": 2, "leaderElection": False}})),
        check=False,
    )
    assert done.returncode != 0 and "leaderElection" in done.stderr


def test_package_and_push(helm: Path, tmp_path: Path, oci_registry_server: Registry) -> None:
    _helm(helm, "package", str(CHART), "-d", str(tmp_path))
    packaged = tmp_path / "moorage-0.1.0.tgz"
    assert packaged.is_file()
    env_home = ["--registry-config", str(tmp_path / "registry.json")]
    _helm(
        helm,
        "push",
        str(packaged),
        f"oci://{oci_registry_server.host}/charts",
        "--plain-http",
        *env_home,
    )
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    _helm(helm, "pull", f"oci://{oci_registry_server.host}/charts/moorage", "--version", "0.1.0",
          "--plain-http", "-d", str(pulled), *env_home)  # fmt: skip
    assert (pulled / "moorage-0.1.0.tgz").read_bytes() == packaged.read_bytes()
    # the package renders the same as the directory
    assert (
        _helm(helm, "template", "moorage", str(packaged)).stdout
        == _helm(helm, "template", "moorage", str(CHART)).stdout
    )


def test_runtimes_in_sync() -> None:
    """charts/moorage/runtimes/ is moorage-core's built-in runtimes (scripts/gen-runtimes.py)."""
    done = subprocess.run(
        ["python", str(ROOT / "scripts" / "gen-runtimes.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _cache_calls(module: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of the API calls in moorage-cache's ``module`` (controller.py
    or agent.py), read from its source: ``self.kube.<verb>(KIND, ...)`` and the controller's
    helpers around it (``items(KIND)`` lists, ``self._create(KIND, ...)`` creates), a ``kind``
    variable resolved from its assignments, ``status=True`` for the status subresource, and
    the kinds kopf watches (``kopf.on.event`` over a list of (group, version, plural))."""
    import ast

    from moorage.cache import _kube

    kinds = {name: value for name, value in vars(_kube).items() if isinstance(value, _kube.Kind)}
    source = Path(_kube.__file__).with_name(f"{module}.py").read_text()
    tree = ast.parse(source)
    verbs = {"get": "get", "list": "list", "watch": "watch", "create": "create", "patch": "patch",
             "delete": "delete", "items": "list", "_create": "create"}  # fmt: skip
    calls: set[tuple[str, str, str]] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        variables: dict[str, set[str]] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.IfExp):
                names = {
                    n.id for n in ast.walk(node.value) if isinstance(n, ast.Name) and n.id in kinds
                }
                for target in node.targets:
                    if isinstance(target, ast.Name) and names:
                        variables.setdefault(target.id, set()).update(names)
        for node in ast.walk(function):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            method = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if method not in verbs:
                continue
            if isinstance(func, ast.Attribute) and method in ("get", "list", "watch", "create",
                                                               "patch", "delete"):  # fmt: skip
                owner = func.value
                if not (isinstance(owner, ast.Attribute) and owner.attr == "kube"):
                    continue
            first = node.args[0]
            if not isinstance(first, ast.Name):
                continue
            names = {first.id} if first.id in kinds else variables.get(first.id, set())
            status = any(k.arg == "status" for k in node.keywords)
            for name in names:
                kind = kinds[name]
                resource = kind.plural + ("/status" if status else "")
                calls.add((kind.group, resource, verbs[method]))
    if module == "controller":  # kopf's watches
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and len(node.elts) == 3:
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if (
                    len(values) == 3
                    and all(isinstance(v, str) for v in values)
                    and values[2].endswith("s")
                ):
                    calls.update({(values[0], values[2], "list"), (values[0], values[2], "watch")})
    return calls


def test_cache_rbac_matches_its_calls(helm: Path, tmp_path: Path) -> None:
    pytest.importorskip("moorage.cache")
    objects = _render(helm, tmp_path, VALUES["all-features"])
    roles = _by_kind(objects, "ClusterRole")
    controller = _grants(roles["moorage-cache-controller"]) | _grants(
        _by_kind(objects, "Role")["moorage-cache-controller"]
    )
    agent = _grants(roles["moorage-cache-agent"])
    controller_calls = _cache_calls("controller")
    agent_calls = _cache_calls("agent")
    assert ("", "configmaps", "get") in controller_calls and (
        "",
        "nodes",
        "watch",
    ) in controller_calls
    assert controller_calls - controller == set(), (
        "the cache controller calls what it is not granted"
    )
    assert agent_calls - agent == set(), "the cache agent calls what it is not granted"
    framework = {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),  # kopf's resource scan
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "events", "create"), ("events.k8s.io", "events", "create"),  # kopf's Events
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "create"),  # kopf
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch"),
    }  # fmt: skip
    assert controller - controller_calls - framework == set(), (
        "the controller is granted more than it uses"
    )
    # the agent's watch of its own LocalModelNode lists it first (field selector)
    assert agent - agent_calls - {("serving.kserve.io", "localmodelnodes", "list")} == set()
