"""Container rendering: merge, placeholders, transformer wiring, image tag."""

from __future__ import annotations

import pytest

from moorage.controller.arguments import (
    merge_containers,
    predictor_container,
    replace_placeholders,
    transformer_container,
)
from moorage.controller.runtime_selection import select_runtime
from moorage.core.errors import ValidationError
from moorage.core.resources import ObjectMeta

SK = {"name": "sklearn", "autoSelect": True}


def test_merge_concatenates_args_and_merges_env_by_name() -> None:
    base = {
        "name": "kserve-container",
        "image": "rt:1",
        "args": ["--a=1"],
        "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
        "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
        "ports": [{"containerPort": 8080, "name": "http1"}],
    }
    over = {
        "args": ["--b=2"],
        "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}],
        "resources": {"limits": {"memory": "4Gi"}},
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "image": "mine:2",
    }
    merged = merge_containers(base, over)
    assert merged["args"] == ["--a=1", "--b=2"]
    assert merged["env"] == [
        {"name": "X", "value": "1"},
        {"name": "Y", "value": "3"},
        {"name": "Z", "value": "4"},
    ]
    assert merged["resources"] == {"limits": {"cpu": "1", "memory": "4Gi"}}
    assert merged["ports"] == [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}]
    assert merged["image"] == "mine:2" and merged["name"] == "kserve-container"


def test_placeholders_render_metadata() -> None:
    meta = ObjectMeta(
        name="iris", namespace="ml", labels={"team": "a"}, annotations={"x.io/y": "z"}
    )
    container = {
        "args": [
            "--model_name={{.Name}}",
            "--ns={{ .Namespace }}",
            "--team={{.Labels.team}}",
            '--y={{index .Annotations "x.io/y"}}',
            "--missing={{.Labels.nope}}",
        ],
        "env": [{"name": "N", "value": "{{.Name}}-{{.Namespace}}"}],
    }
    out = replace_placeholders(container, meta)
    assert out["args"] == ["--model_name=iris", "--ns=ml", "--team=a", "--y=z", "--missing="]
    assert out["env"][0]["value"] == "iris-ml"


def test_unknown_placeholder_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        replace_placeholders({"args": ["ok", "{{.Spec}}"]}, ObjectMeta(name="x"), field="c")
    assert info.value.field == "c.args[1]"
    assert "{{.Spec}}" in info.value.reason


def test_predictor_container_merges_isvc_fields(make_isvc, make_runtime) -> None:
    rt = make_runtime("sk", [SK])
    service = make_isvc(
        {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "s3://b/m",
                "runtimeVersion": "2.0",
                "args": ["--workers=2"],
                "env": [{"name": "LOG", "value": "debug"}],
            }
        }
    )
    container = predictor_container(service, select_runtime(service, [rt]))
    assert container["args"] == ["--model_name=iris", "--model_dir=/mnt/models", "--workers=2"]
    assert container["env"] == [{"name": "LOG", "value": "debug"}]
    assert container["image"] == "example/sk:2.0"
    assert "storageUri" not in container and "modelFormat" not in container


def test_runtime_without_kserve_container(make_isvc, make_runtime) -> None:
    rt = make_runtime("sk", [SK])
    rt.spec.containers[0].name = "server"
    service = make_isvc({"model": {"modelFormat": {"name": "sklearn"}}})
    with pytest.raises(ValidationError, match=r"failed to find kserve-container.*has: server"):
        predictor_container(service, select_runtime(service, [rt]))


def test_transformer_gets_predictor_wiring(make_isvc) -> None:
    service = make_isvc(
        {"model": {"modelFormat": {"name": "sklearn"}}},
        metadata={"namespace": "ml"},
        transformer={
            "containerConcurrency": 3,
            "containers": [{"name": "kserve-container", "image": "t", "args": ["--x"]}],
        },
    )
    args = transformer_container(service)["args"]
    assert args == [
        "--x",
        "--model_name",
        "iris",
        "--predictor_host",
        "iris-predictor.ml",
        "--http_port",
        "8080",
        "--workers",
        "3",
    ]


def test_transformer_keeps_given_model_name(make_isvc) -> None:
    service = make_isvc(
        {"model": {"modelFormat": {"name": "sklearn"}}},
        transformer={"containers": [{"name": "t", "image": "t", "args": ["--model_name=m"]}]},
    )
    args = transformer_container(service)["args"]
    assert args.count("--model_name") == 0 and "--model_name=m" in args
    assert "iris-predictor.default" in args
