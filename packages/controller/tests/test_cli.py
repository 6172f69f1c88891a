"""The moorage command: errors fail fast with file and field path; a taken port is named."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
import yaml

from moorage.controller.cli import main

ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "iris"},
    "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "./m"}}},
}


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue()


def test_validate_ok_names_the_runtime(write) -> None:
    path = write("isvc.yaml", [ISVC])
    code, out = run(["validate", "-f", str(path)])
    assert code == 0
    assert out == (
        f"{path}, document 0: InferenceService/iris: valid "
        "(runtime ClusterServingRuntime/kserve-sklearnserver)\n"
    )


def test_unknown_field_fails_with_path(write, capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(ISVC))
    bad["spec"]["predictor"]["model"]["storageURI"] = "typo"
    path = write("bad.yaml", [bad])
    for command in ("validate", "render", "run"):
        code, _ = run([command, "-f", str(path)])
        err = capsys.readouterr().err
        assert code == 1
        where = f"{path}, document 0: InferenceService/iris" if command == "validate" else path
        assert f"{where}: spec.predictor.model.storageURI: unknown field" in err


def test_missing_required_field(write, capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(ISVC))
    del bad["spec"]["predictor"]["model"]["modelFormat"]["name"]
    code, _ = run(["validate", "-f", str(write("bad.yaml", [bad]))])
    assert code == 1
    assert "spec.predictor.model.modelFormat.name: Required value" in capsys.readouterr().err


def test_webhook_rule_is_reported(write, capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(ISVC))
    bad["metadata"]["name"] = "Iris_Model"
    code, _ = run(["validate", "-f", str(write("bad.yaml", [bad]))])
    assert code == 1
    assert "metadata.name" in capsys.readouterr().err


def test_no_runtime_names_the_format(write, capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(ISVC))
    bad["spec"]["predictor"]["model"]["modelFormat"]["name"] = "caffe"
    code, _ = run(["validate", "-f", str(write("bad.yaml", [bad]))])
    err = capsys.readouterr().err
    assert code == 1
    assert "spec.predictor.model.modelFormat: no runtime found" in err and "caffe" in err


def test_broken_yaml_and_missing_file(
    write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(["validate", "-f", str(write("broken.yaml", "spec: [unclosed"))])
    assert code == 1 and "invalid YAML" in capsys.readouterr().err
    code, _ = run(["validate", "-f", str(tmp_path / "nope.yaml")])
    assert code == 1 and "no such file" in capsys.readouterr().err


def test_two_services_need_a_name(write, capsys: pytest.CaptureFixture[str]) -> None:
    other = {**ISVC, "metadata": {"name": "other"}}
    path = write("two.yaml", [ISVC, other])
    code, _ = run(["render", "-f", str(path)])
    assert code == 1 and "pick one with --name" in capsys.readouterr().err
    code, out = run(["render", "-f", str(path), "--name", "other"])
    assert code == 0 and "name: other-predictor" in out
    code, out = run(["validate", "-f", str(path)])  # validate checks them all
    assert code == 0 and "InferenceService/iris: valid" in out and "document 1: Inference" in out
    code, out = run(["validate", "-f", str(path), "--name", "other"])
    assert code == 0 and "InferenceService/other: valid" in out and "iris" not in out


def test_runtime_file_is_used(write) -> None:
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "my-sklearn"},
        "spec": {
            "supportedModelFormats": [{"name": "sklearn", "autoSelect": True}],
            "containers": [{"name": "kserve-container", "image": "me/sk:1"}],
        },
    }
    code, out = run(
        ["validate", "-f", str(write("i.yaml", [ISVC])), "-f", str(write("r.yaml", [runtime]))]
    )
    assert code == 0 and "ServingRuntime/my-sklearn" in out


def test_port_in_use_is_reported_before_anything_starts(
    write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m").mkdir()
    path = write("isvc.yaml", [ISVC])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = run(["run", "-f", str(path), "--port", str(port), "--grpc-port", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"port {port} (--port) already in use" in err
    assert "nothing was started" in err and "--port " in err
    assert "starting" not in out and "fetching" not in out


def test_same_port_twice(write, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(
        ["run", "-f", str(write("isvc.yaml", [ISVC])), "--port", "9999", "--grpc-port", "9999"]
    )
    assert code == 1 and "both ask for port 9999" in capsys.readouterr().err


def test_one_off_needs_both_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--model-format", "sklearn"])
    assert info.value.code == 2
    assert "--model-format and --storage-uri go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run"])
    assert "give -f isvc.yaml" in capsys.readouterr().err


def test_file_without_a_service(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["validate", "-f", "/dev/null"])
    assert code == 1 and "no such file" in capsys.readouterr().err  # not a regular file


def test_render_prints_yaml_objects(write, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["render", "-f", str(write("isvc.yaml", [ISVC])), "--namespace", "ml"])
    assert code == 0
    assert "storageUri ./m is a path on this machine" in capsys.readouterr().err
    kinds = [
        (d["kind"], d["metadata"]["name"], d["metadata"]["namespace"])
        for d in yaml.safe_load_all(out)
    ]
    assert kinds == [
        ("Deployment", "iris-predictor", "ml"),
        ("Service", "iris-predictor", "ml"),
        ("HorizontalPodAutoscaler", "iris-predictor", "ml"),
        ("Ingress", "iris", "ml"),
    ]
    assert "&id" not in out


def test_render_with_configmap(write) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config"},
        "data": {"storageInitializer": '{"image": "moorage/storage-initializer:0.1"}'},
    }
    code, out = run(
        [
            "render",
            "-f",
            str(write("isvc.yaml", [ISVC])),
            "--config",
            str(write("c.yaml", [config])),
        ]
    )
    assert code == 0 and "image: moorage/storage-initializer:0.1" in out


def test_version() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0


def test_run_refuses_an_image_runtime_in_one_line(
    write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    triton = yaml.safe_load(yaml.safe_dump(ISVC))
    triton["spec"]["predictor"] = {"triton": {"storageUri": "s3://bucket/never-fetched"}}
    path = write("triton.yaml", [triton])
    code, out = run(["run", "-f", str(path), "--port", "0", "--grpc-port", "0",
                     "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "fetching" not in out
    [line] = err.splitlines()
    assert line.startswith(
        "moorage: error: runtime kserve-tritonserver runs image "
        "nvcr.io/nvidia/tritonserver:23.05-py3, which moorage run cannot start"
    )
    assert "deploy it to a cluster" in line
