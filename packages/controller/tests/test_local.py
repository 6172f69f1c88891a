"""The local backend: plans, the model cache, the banner, and the runner with a stand-in server."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from moorage.controller.local import (
    PortInUse,
    RunOptions,
    ServerCrashed,
    UnsupportedLocally,
    cache_dir_for,
    check_ports_free,
    fetch_model,
    free_port,
    plan_processes,
    run_local,
    sample_inputs,
    set_flag,
)
from moorage.controller.local.banner import Banner
from moorage.controller.workload import load_workload, one_off_workload

FAKE = Path(__file__).parent / "data" / "fake_server.py"


def fake_runtime(extra_args: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "fake"},
        "spec": {
            "supportedModelFormats": [{"name": "fake", "autoSelect": True}],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "fake:1",
                    "command": ["python", str(FAKE)],
                    "args": [
                        "--model_name={{.Name}}",
                        "--model_dir=/mnt/models",
                        "--http_port=8080",
                        *(extra_args or []),
                    ],
                    "env": [
                        {"name": "MODEL_PATH", "value": "/mnt/models/model.bin"},
                        {
                            "name": "SECRET",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                        },
                    ],
                }
            ],
        },
    }


def fake_isvc(name: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "fake"}, "storageUri": "./model"}},
            **spec,
        },
    }


@pytest.fixture
def example(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.bin").write_text("weights")
    return tmp_path


def workload_for(example: Path, docs: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    path = example / "isvc.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return load_workload([path])


# --- pure pieces ------------------------------------------------------------------------------


def test_set_flag_replaces_either_form_or_appends() -> None:
    assert set_flag(["--http_port=8080", "x"], "--http_port", "1") == ["--http_port=1", "x"]
    assert set_flag(["--http_port", "8080", "x"], "--http_port", "1") == ["--http_port", "1", "x"]
    assert set_flag(["x"], "--http_port", "1") == ["x", "--http_port=1"]
    assert set_flag(["--http_port_extra=3"], "--http_port", "1")[-1] == "--http_port=1"


def test_plan_rewrites_mount_ports_and_python(example: Path) -> None:
    workload = workload_for(example, [fake_isvc(), fake_runtime()])
    [spec] = plan_processes(
        workload, model_dir=example / "model", http_port=9001, grpc_port=9002, python="/py"
    )
    assert spec.argv == [
        "/py",
        str(FAKE),
        "--model_name=demo",
        f"--model_dir={example / 'model'}",
        "--http_port=9001",
        "--grpc_port=9002",
    ]
    assert spec.env == {"MODEL_PATH": f"{example / 'model'}/model.bin"}
    assert spec.warnings and "SECRET" in spec.warnings[0]
    assert spec.cwd == example and spec.model_name == "demo"


def test_moorage_server_command_becomes_this_python(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    workload = one_off_workload(model_format="sklearn", storage_uri=str(tmp_path / "m"))
    [spec] = plan_processes(workload, model_dir=tmp_path / "m", http_port=1, grpc_port=2)
    assert spec.argv[:3] == [sys.executable, "-m", "moorage.server"]
    assert f"--model_dir={tmp_path / 'm'}" in spec.argv
    assert workload.isvc.name == "m"


def test_plan_binds_loopback_unless_told(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    workload = one_off_workload(model_format="sklearn", storage_uri=str(tmp_path / "m"))
    [spec] = plan_processes(workload, model_dir=tmp_path / "m", http_port=1, grpc_port=2)
    assert "--host=127.0.0.1" in spec.argv and spec.rest_url == "http://127.0.0.1:1"
    [spec] = plan_processes(
        workload, model_dir=tmp_path / "m", http_port=1, grpc_port=2, host="0.0.0.0"
    )
    assert "--host=0.0.0.0" in spec.argv  # a wildcard is reached over loopback
    assert (spec.rest_url, spec.grpc_address) == ("http://127.0.0.1:1", "127.0.0.1:2")
    [spec] = plan_processes(workload, model_dir=tmp_path / "m", http_port=1, grpc_port=2, host="::")
    assert (spec.rest_url, spec.grpc_address) == ("http://[::1]:1", "[::1]:2")
    [spec] = plan_processes(
        workload, model_dir=tmp_path / "m", http_port=1, grpc_port=2, host="192.0.2.7"
    )
    assert spec.rest_url == "http://192.0.2.7:1"


def test_model_dir_is_given_where_the_runtime_leaves_it_out(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    workload = one_off_workload(model_format="huggingface", storage_uri=str(tmp_path / "m"))
    assert workload.runtime is not None and workload.runtime.name == "kserve-huggingfaceserver"
    [spec] = plan_processes(workload, model_dir=tmp_path / "m", http_port=1, grpc_port=2)
    assert f"--model_dir={tmp_path / 'm'}" in spec.argv
    assert "--model_name=m" in spec.argv


def test_a_batcher_becomes_moorage_server_flags(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "./m"},
                "batcher": {"maxBatchSize": 16, "maxLatency": 10},
            }
        },
    }
    workload = workload_for(tmp_path, [isvc])
    [spec] = plan_processes(workload, model_dir=tmp_path / "m", http_port=1, grpc_port=2)
    assert spec.argv[:3] == [sys.executable, "-m", "moorage.server"]
    assert spec.argv[-3:] == ["--enable_batcher=true", "--max_batchsize=16", "--max_latency=10"]


def test_one_off_names(tmp_path: Path) -> None:
    made = one_off_workload(model_format="sklearn", storage_uri="s3://bucket/Iris_Model/")
    assert made.isvc.name == "iris-model"
    made = one_off_workload(model_format="sklearn", storage_uri="/data/model.joblib")
    assert made.isvc.name == "model"
    made = one_off_workload(model_format="sklearn", storage_uri="hf://org/repo:main", name="mine")
    assert made.isvc.name == "mine" and made.runtime is not None
    assert one_off_workload(model_format="sklearn", storage_uri="./7").isvc.name == "sklearn"


def test_transformer_plan_wires_ports(example: Path) -> None:
    transformer = {"containers": [{"name": "t", "image": "t", "command": ["python", str(FAKE)]}]}
    workload = workload_for(example, [fake_isvc(transformer=transformer), fake_runtime()])
    ports = iter([7001, 7002])
    predictor, trans = plan_processes(
        workload, model_dir=example, http_port=9001, grpc_port=9002, pick_port=lambda: next(ports)
    )
    assert (predictor.http_port, predictor.grpc_port) == (7001, 7002)
    assert (trans.http_port, trans.grpc_port) == (9001, 9002)
    assert trans.argv[-1] == "--host=127.0.0.1" and predictor.host == "127.0.0.1"
    assert "127.0.0.1:7001" in trans.argv and "--model_name" in trans.argv
    assert "--http_port" in trans.argv and trans.argv[trans.argv.index("--http_port") + 1] == "9001"
    predictor, trans = plan_processes(
        workload, model_dir=example, http_port=1, grpc_port=2, host="0.0.0.0", pick_port=lambda: 7
    )
    assert trans.argv[-1] == "--host=0.0.0.0" and predictor.host == "127.0.0.1"  # private


def test_image_only_transformer_is_refused(example: Path) -> None:
    transformer = {"containers": [{"name": "t", "image": "me/transformer:1"}]}
    workload = workload_for(example, [fake_isvc(transformer=transformer), fake_runtime()])
    with pytest.raises(UnsupportedLocally, match="me/transformer:1 without a command"):
        plan_processes(workload, model_dir=example, http_port=1, grpc_port=2)


def test_missing_command_is_refused(example: Path) -> None:
    runtime = fake_runtime()
    runtime["spec"]["containers"][0]["command"] = ["tritonserver-not-here"]
    workload = workload_for(example, [fake_isvc(), runtime])
    with pytest.raises(UnsupportedLocally, match="'tritonserver-not-here' is not found"):
        plan_processes(workload, model_dir=example, http_port=1, grpc_port=2)


def test_cache_dir_is_per_uri(tmp_path: Path) -> None:
    a = cache_dir_for(tmp_path, "s3://b/a")
    assert a == cache_dir_for(tmp_path, "s3://b/a") != cache_dir_for(tmp_path, "s3://b/b")
    assert a.parent == tmp_path / "models" and len(a.name) == 16


def test_fetch_local_dir_in_place_and_file_through_storage(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    fetched = fetch_model("m", base_dir=tmp_path, cache_root=tmp_path / "cache")
    assert fetched.in_place and fetched.path == tmp_path / "m"
    (tmp_path / "one.joblib").write_text("x")
    calls: list[tuple[str, Path, bool]] = []

    def download(uri: str, dest: Path, *, force: bool) -> Path:
        calls.append((uri, dest, force))
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "one.joblib").write_text("x")
        return dest

    first = fetch_model(
        "./one.joblib", base_dir=tmp_path, cache_root=tmp_path / "c", download=download
    )
    again = fetch_model(
        "./one.joblib", base_dir=tmp_path, cache_root=tmp_path / "c", download=download
    )
    assert calls[0][0] == str(tmp_path / "one.joblib") and not first.reused and again.reused
    assert first.path == cache_dir_for(tmp_path / "c", str(tmp_path / "one.joblib"))


def test_fetch_errors(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedLocally, match="PersistentVolumeClaim"):
        fetch_model("pvc://claim/m", base_dir=tmp_path, cache_root=tmp_path)
    with pytest.raises(UnsupportedLocally, match="resolved against"):
        fetch_model("./missing", base_dir=tmp_path, cache_root=tmp_path)


def test_fetch_real_local_file_with_storage(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"abc")
    fetched = fetch_model("model.joblib", base_dir=tmp_path, cache_root=tmp_path / "cache")
    assert (fetched.path / "model.joblib").read_bytes() == b"abc"
    assert fetch_model("model.joblib", base_dir=tmp_path, cache_root=tmp_path / "cache").reused


def test_sample_inputs_follow_metadata() -> None:
    inputs, guessed = sample_inputs(
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 2]}]}
    )
    assert inputs == [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 1]}]
    assert not guessed
    inputs, guessed = sample_inputs({"inputs": []})
    assert guessed and inputs[0]["shape"] == [1, 4]


def test_banner_curls_are_valid_json() -> None:
    banner = Banner(
        name="demo", model_name="demo", rest_url="http://127.0.0.1:1", grpc_address="127.0.0.1:2",
        runtime="fake", model_dir="/m", metadata=None, seconds=1.0,
    )  # fmt: skip
    text = banner.render()
    assert "gRPC  127.0.0.1:2" in text and "/v1/models/demo:predict" in text
    body = banner.curl_v1().split(" -d ", 1)[1].strip("'")
    assert json.loads(body) == {"instances": [[0.5, 0.5, 0.5, 0.5]]}
    assert "listening on" not in text


def test_banner_says_who_can_connect() -> None:
    def render(*listening: str) -> str:
        return Banner(
            name="d", model_name="d", rest_url="http://127.0.0.1:1", grpc_address=None,
            runtime="f", model_dir="/m", metadata=None, seconds=1.0, listening=listening,
        ).render()  # fmt: skip

    local = render("127.0.0.1:1", "127.0.0.1:2")
    assert "listening on 127.0.0.1:1, 127.0.0.1:2 (loopback only: this machine alone" in local
    assert "(every interface: other machines can connect)" in render("0.0.0.0:1", "[::]:2")
    assert "other machines on that network can connect" in render("192.0.2.7:1")


def test_check_ports_free(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUse) as info:
            check_ports_free({"--port": free_port(), "--grpc-port": port})
    assert f"port {port} (--grpc-port) already in use" in str(info.value)
    if sys.platform == "linux":  # the holder is named from /proc
        assert f"(pid {os.getpid()})" in str(info.value)


# --- the runner, with the stand-in server ---------------------------------------------------


@dataclass
class Running:
    stop: threading.Event
    ready: threading.Event
    thread: threading.Thread
    result: dict[str, Any]
    out: io.StringIO
    log: io.StringIO


def start(workload, **options: Any) -> Running:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    ready = threading.Event()
    out = io.StringIO()
    log = io.StringIO()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["code"] = run_local(
                workload,
                RunOptions(http_port=0, grpc_port=0, ready_timeout=20, stop_grace=5, **options),
                out=out,
                log=log,
                stop=stop,
                on_ready=lambda specs: (result.setdefault("specs", specs), ready.set()),
            )
        except Exception as exc:
            result["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return Running(stop, ready, thread, result, out, log)


def get(url: str, body: bytes | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def test_run_serves_until_stopped(example: Path) -> None:
    workload = workload_for(example, [fake_isvc(), fake_runtime()])
    run = start(workload)
    assert run.ready.wait(20), run.out.getvalue()
    assert "error" not in run.result, run.result
    [spec] = run.result["specs"]
    answer = get(spec.rest_url + "/v2/models/demo/infer", b"{}")
    assert answer["model_dir"] == str(example / "model")
    text = run.out.getvalue()
    assert "demo is ready" in text and '"shape":[1,3]' in text  # sample from metadata
    assert "[predictor] fake server ready" in run.log.getvalue()
    run.stop.set()
    run.thread.join(10)
    assert run.result["code"] == 0 and "moorage: stopping" in run.out.getvalue()
    with pytest.raises(OSError):
        get(spec.rest_url + "/v2/health/ready")


def test_run_reports_a_crash_with_its_last_lines(example: Path) -> None:
    workload = workload_for(example, [fake_isvc(), fake_runtime(["--exit-after=0.5"])])
    run = start(workload)
    assert run.ready.wait(20)
    run.thread.join(20)
    assert run.result["code"] == 1
    text = run.out.getvalue()
    assert "the predictor" in text and "exited with code 3" in text
    assert "out of memory (pretend)" in text


def test_run_start_failure_raises_with_log_tail(example: Path) -> None:
    workload = workload_for(example, [fake_isvc(), fake_runtime(["--fail-at-start"])])
    run = start(workload)
    run.thread.join(20)
    error = run.result["error"]
    assert isinstance(error, ServerCrashed)
    assert "exited with code 2" in error.message
    assert "loading model failed: no model file" in error.message


def test_run_predictor_and_transformer(example: Path) -> None:
    transformer = {"containers": [{"name": "t", "image": "t", "command": ["python", str(FAKE)]}]}
    workload = workload_for(example, [fake_isvc(transformer=transformer), fake_runtime()])
    run = start(workload)
    assert run.ready.wait(20), run.out.getvalue()
    trans = run.result["specs"][1]
    answer = get(trans.rest_url + "/v2/models/demo/infer", b"{}")
    assert answer["via"] == "transformer" and answer["model_dir"] == str(example / "model")
    assert "[transformer] fake server ready" in run.log.getvalue()
    run.stop.set()
    run.thread.join(10)
    assert run.result["code"] == 0


def test_run_one_off_with_a_runtime_file(example: Path) -> None:
    runtime = example / "runtime.yaml"
    runtime.write_text(yaml.safe_dump(fake_runtime()))
    workload = one_off_workload(
        model_format="fake",
        storage_uri=str(example / "model"),
        name="adhoc",
        runtime_files=[runtime],
        include_builtin=False,
    )
    run = start(workload)
    assert run.ready.wait(20), run.out.getvalue()
    [spec] = run.result["specs"]
    assert get(spec.rest_url + "/v2/models/adhoc/infer", b"{}")["name"] == "adhoc"
    run.stop.set()
    run.thread.join(10)
    assert run.result["code"] == 0


@pytest.mark.parametrize(
    ("predictor", "runtime", "image", "todo"),
    [
        (
            {"tensorflow": {}},
            "kserve-tensorflow-serving",
            "tensorflow/serving:2.6.2",
            "'/usr/bin/tensorflow_model_server' is not found on this machine; moorage run starts "
            "processes, this server needs a container engine); moorage-server does not serve "
            "tensorflow with protocol v1: deploy it to a cluster",
        ),
        (
            {"triton": {}},
            "kserve-tritonserver",
            "nvcr.io/nvidia/tritonserver:23.05-py3",
            "deploy it to a cluster (moorage render",
        ),
        (
            {"pytorch": {}},
            "kserve-torchserve",
            "pytorch/torchserve-kfs:0.9.0",
            "deploy it to a cluster",
        ),
        (
            {"sklearn": {"protocolVersion": "v2"}},
            "kserve-mlserver",
            "docker.io/seldonio/mlserver:1.5.0",
            "pin a runtime moorage-server runs (spec.predictor.model.runtime: "
            "kserve-sklearnserver)",
        ),
    ],
)
def test_image_runtimes_are_refused_in_one_line(
    tmp_path: Path, predictor: dict[str, Any], runtime: str, image: str, todo: str
) -> None:
    for spec in predictor.values():
        spec["storageUri"] = "./m"
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "demo"},
        "spec": {"predictor": predictor},
    }
    path = tmp_path / "isvc.yaml"
    path.write_text(yaml.safe_dump(isvc))
    workload = load_workload([path])
    with pytest.raises(UnsupportedLocally) as info:
        plan_processes(workload, model_dir=tmp_path, http_port=1, grpc_port=2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"runtime {runtime} runs image {image}, which moorage run cannot")
    assert "container engine" in message and todo in message
    assert info.value.details["runtime"] == runtime and info.value.details["image"] == image
