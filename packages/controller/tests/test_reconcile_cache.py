"""reconcile.desired_objects with a LocalModelCache: the predictor reads the cache's PVC instead of
downloading (KServe v0.14.1's pod webhook), and the objects stay valid Kubernetes 1.30."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from moorage.controller.cli import main
from moorage.controller.reconcile import desired_objects
from moorage.controller.workload import load_workload
from moorage.core.errors import ValidationError

LABEL = "internal.serving.kserve.io/localmodel"
SOURCE = "internal.serving.kserve.io/localmodel-sourceuri"
PVC = "internal.serving.kserve.io/localmodel-pvc-name"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"


def configmap(*, enabled: bool = True, direct: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {
            "localModel": json.dumps({"enabled": enabled}),
            "storageInitializer": json.dumps({"enableDirectPvcVolumeMount": direct}),
        },
    }


def cache(name: str = "llama", uri: str = "s3://models/llama") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelCache",
        "metadata": {"name": name},
        "spec": {"sourceModelUri": uri, "modelSize": "10Gi", "nodeGroups": ["workers"]},
    }


def isvc(uri: str = "s3://models/llama/v1", **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "llm", "namespace": "ml", **metadata},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}},
    }


def render(tmp_path: Path, *documents: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    workload = load_workload([path])
    objects = desired_objects(workload, config=workload.config)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    return objects


def predictor(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [o for o in objects if o["metadata"]["name"] == "llm-predictor"
                    and o["kind"] == "Deployment"]  # fmt: skip
    return deployment


def test_direct_mount_of_the_cache_pvc(tmp_path: Path) -> None:
    deployment = predictor(render(tmp_path, configmap(), cache(), isvc()))
    template = deployment["spec"]["template"]
    pod = template["spec"]
    assert "initContainers" not in pod
    assert "affinity" not in pod and "nodeSelector" not in pod  # the PV carries the affinity
    assert pod["volumes"] == [
        {
            "name": "kserve-pvc-source",
            "persistentVolumeClaim": {"claimName": "llama-workers", "readOnly": True},
        }
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {
            "name": "kserve-pvc-source",
            "mountPath": "/mnt/models",
            "readOnly": True,
            "subPath": "models/llama/v1",
        }
    ]
    annotations = template["metadata"]["annotations"]
    assert annotations[SOURCE_URI] == "s3://models/llama/v1"  # the original URI
    assert annotations[SOURCE] == "s3://models/llama"
    assert annotations[PVC] == "llama-workers"
    assert template["metadata"]["labels"][LABEL] == "llama"
    assert deployment["metadata"]["labels"][LABEL] == "llama"


def test_the_cached_uri_itself_mounts_the_cache_root(tmp_path: Path) -> None:
    pod = predictor(render(tmp_path, configmap(), cache(), isvc("s3://models/llama")))
    pod = pod["spec"]["template"]["spec"]
    assert pod["containers"][0]["volumeMounts"][0]["subPath"] == "models/llama"


def test_source_with_a_trailing_slash(tmp_path: Path) -> None:
    objects = render(tmp_path, configmap(), cache(uri="s3://models/"), isvc("s3://models/a/b"))
    mount = predictor(objects)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["subPath"] == "models/llama/a/b"


def test_without_direct_mount_the_initializer_copies_from_the_pvc(tmp_path: Path) -> None:
    objects = render(tmp_path, configmap(direct=False), cache(), isvc())
    pod = predictor(objects)["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["name"] == "storage-initializer"
    assert init["args"] == ["/mnt/pvc/models/llama/v1", "/mnt/models"]
    pvc_mount = {"name": "kserve-pvc-source", "mountPath": "/mnt/pvc", "readOnly": True}
    assert pvc_mount in init["volumeMounts"]
    assert pvc_mount in pod["containers"][0]["volumeMounts"]
    assert {
        "name": "kserve-pvc-source",
        "persistentVolumeClaim": {"claimName": "llama-workers", "readOnly": True},
    } in pod["volumes"]


def test_readonly_false_reaches_the_cache_mount(tmp_path: Path) -> None:
    writable = isvc(annotations={"storage.kserve.io/readonly": "false"})
    pod = predictor(render(tmp_path, configmap(), cache(), writable))["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is False
    assert pod["containers"][0]["volumeMounts"][0]["readOnly"] is False


@pytest.mark.parametrize(
    "documents",
    [
        pytest.param(
            [configmap(), cache(),
             isvc(annotations={"serving.kserve.io/disable-localmodel": "true"})],
            id="opted-out",
        ),
        pytest.param([configmap(enabled=False), cache(), isvc()], id="cache-disabled"),
        pytest.param([configmap(), cache(uri="s3://models/other"), isvc()], id="no-match"),
        pytest.param(
            # a label left from elsewhere means nothing while the opt-out annotation is there
            [configmap(), isvc(labels={LABEL: "llama"},
                               annotations={"serving.kserve.io/disable-localmodel": "true",
                                            PVC: "llama-workers", SOURCE: "s3://models/llama"})],
            id="opted-out-with-a-label",
        ),
    ],
)  # fmt: skip
def test_normal_download_without_the_cache(tmp_path: Path, documents: list[Any]) -> None:
    pod = predictor(render(tmp_path, *documents))["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["args"] == ["s3://models/llama/v1", "/mnt/models"]
    assert all(v["name"] != "kserve-pvc-source" for v in pod["volumes"])


def test_first_cache_by_name_wins_whatever_the_file_order(tmp_path: Path) -> None:
    wide, narrow = cache("b-wide", "s3://models"), cache("a-narrow", "s3://models/llama")
    for order in ([wide, narrow], [narrow, wide]):
        objects = render(tmp_path, configmap(), *order, isvc())
        pod = predictor(objects)["spec"]["template"]["spec"]
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "a-narrow-workers"
        assert pod["containers"][0]["volumeMounts"][0]["subPath"] == "models/a-narrow/v1"


def test_label_without_the_pvc_annotation_is_kserves_error(tmp_path: Path) -> None:
    # e.g. exported from KServe v0.14.0, whose defaulting sets no PVC name
    labelled = isvc(labels={LABEL: "llama"}, annotations={SOURCE: "s3://models/llama"})
    with pytest.raises(ValidationError) as info:
        render(tmp_path, configmap(), labelled)
    assert info.value.reason == f"Annotation {PVC} not found"
    assert info.value.field == "metadata.annotations"
    assert info.value.details["path"] == str(tmp_path / "all.yaml")


def test_a_stale_label_is_refused_not_mounted(tmp_path: Path) -> None:
    """KServe would mount a made-up subPath; we say which annotation disagrees."""
    stale = isvc(
        "s3://elsewhere/model",
        labels={LABEL: "llama"},
        annotations={SOURCE: "s3://models/llama", PVC: "llama-workers"},
    )
    with pytest.raises(ValidationError, match="is not under s3://models/llama"):
        render(tmp_path, configmap(), stale)
    no_source = isvc(labels={LABEL: "llama"}, annotations={PVC: "llama-workers"})
    with pytest.raises(ValidationError, match=f"Annotation {SOURCE} not found"):
        render(tmp_path, configmap(), no_source)


def test_a_labelled_service_without_the_cache_document_still_mounts(tmp_path: Path) -> None:
    """The annotations say everything the pod needs, as in KServe's pod webhook."""
    labelled = isvc(labels={LABEL: "llama"},
                    annotations={SOURCE: "s3://models/llama", PVC: "llama-workers"})  # fmt: skip
    pod = predictor(render(tmp_path, configmap(), labelled))["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "llama-workers"


def test_the_explainer_downloads_its_own_uri(tmp_path: Path) -> None:
    with_explainer = isvc()
    with_explainer["spec"]["explainer"] = {
        "art": {"type": "SquareAttack", "storageUri": "s3://models/llama/explainer"}
    }
    objects = render(tmp_path, configmap(), cache(), with_explainer)
    [explainer] = [o for o in objects if o["kind"] == "Deployment"
                   and o["metadata"]["name"] == "llm-explainer"]  # fmt: skip
    [init] = explainer["spec"]["template"]["spec"]["initContainers"]
    assert init["args"] == ["s3://models/llama/explainer", "/mnt/models"]


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(args, out=out), out.getvalue()


def test_moorage_render_with_the_three_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cached.yaml"
    path.write_text(yaml.safe_dump_all([configmap(), cache(), isvc()]))
    code, out = run(["render", "-f", str(path)])
    assert code == 0, capsys.readouterr().err
    objects = list(yaml.safe_load_all(out))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    pod = predictor(objects)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "llama-workers"
    assert pod["containers"][0]["volumeMounts"][0]["subPath"] == "models/llama/v1"

    labelled = isvc(labels={LABEL: "llama"}, annotations={SOURCE: "s3://models/llama"})
    path.write_text(yaml.safe_dump_all([configmap(), labelled]))
    code, out = run(["render", "-f", str(path)])
    assert code == 1 and out == ""
    assert f"{path}: metadata.annotations: Annotation {PVC} not found" in capsys.readouterr().err
