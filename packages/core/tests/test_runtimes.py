"""moorage's built-in ClusterServingRuntimes: KServe v0.14.1's ten under KServe's names (formats,
versions, priorities, protocols, arguments and images as KSERVE-FACTS 9.4/13.4 list them), the
moorage 0.1 aliases, and the chart's copies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from moorage.core.resources import ClusterServingRuntime, builtin_runtimes, validate
from moorage.core.resources._builtin import builtin_runtime_files

ROOT = Path(__file__).resolve().parents[3]
MOORAGE_IMAGE = "moorage/server:latest"
STANDARD_ARGS = ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]

#: name -> (image, [(format, version, autoSelect, priority)], protocols)
KSERVE = {
    "kserve-sklearnserver": (MOORAGE_IMAGE, [("sklearn", "1", True, 1)], ["v1", "v2"]),
    "kserve-xgbserver": (MOORAGE_IMAGE, [("xgboost", "1", True, 1)], ["v1", "v2"]),
    "kserve-lgbserver": (MOORAGE_IMAGE, [("lightgbm", "3", True, 1)], ["v1", "v2"]),
    "kserve-huggingfaceserver": (MOORAGE_IMAGE, [("huggingface", "1", True, 1)], ["v2", "v1"]),
    "kserve-mlserver": (
        "docker.io/seldonio/mlserver:1.5.0",
        [
            ("sklearn", "0", True, 2),
            ("sklearn", "1", True, 2),
            ("xgboost", "1", True, 2),
            ("xgboost", "2", True, 2),
            ("lightgbm", "3", True, 2),
            ("lightgbm", "4", True, 2),
            ("mlflow", "1", True, 1),
            ("mlflow", "2", True, 1),
        ],
        ["v2"],
    ),
    "kserve-paddleserver": (
        "kserve/paddleserver:v0.14.1",
        [("paddle", "2", True, 1)],
        ["v1", "v2"],
    ),
    "kserve-pmmlserver": (
        "kserve/pmmlserver:v0.14.1",
        [("pmml", "3", True, 1), ("pmml", "4", True, 1)],
        ["v1", "v2"],
    ),
    "kserve-tensorflow-serving": (
        "tensorflow/serving:2.6.2",
        [("tensorflow", "1", True, 2), ("tensorflow", "2", True, 2)],
        ["v1", "grpc-v1"],
    ),
    "kserve-torchserve": (
        "pytorch/torchserve-kfs:0.9.0",
        [("pytorch", "1", True, 2)],
        ["v1", "v2", "grpc-v2"],
    ),
    "kserve-tritonserver": (
        "nvcr.io/nvidia/tritonserver:23.05-py3",
        [
            ("tensorrt", "8", True, 1),
            ("tensorflow", "1", True, 1),
            ("tensorflow", "2", True, 1),
            ("onnx", "1", True, 1),
            ("pytorch", "1", None, None),
            ("triton", "2", True, 1),
        ],
        ["v2", "grpc-v2"],
    ),
}
ALIASES = {"moorage-sklearn", "moorage-xgboost", "moorage-lightgbm"}


def _by_name() -> dict[str, ClusterServingRuntime]:
    return {r.name: r for r in builtin_runtimes()}


def test_builtin_names() -> None:
    assert set(_by_name()) == set(KSERVE) | ALIASES


@pytest.mark.parametrize("name", sorted(KSERVE))
def test_kserve_runtime(name: str) -> None:
    runtime = _by_name()[name]
    image, formats, protocols = KSERVE[name]
    spec = runtime.spec
    container = spec.container()
    assert container is not None and container.name == "kserve-container"
    assert container.image == image
    got = [(f.name, f.version, f.auto_select, f.priority) for f in spec.supported_model_formats]
    assert got == formats
    assert spec.protocol_versions == protocols
    assert validate(runtime) == []
    if image == MOORAGE_IMAGE:
        assert container.command == ["moorage-server"]
        expected = {
            "kserve-xgbserver": [*STANDARD_ARGS, "--nthread=1"],
            "kserve-lgbserver": [*STANDARD_ARGS, "--nthread=1"],
            "kserve-huggingfaceserver": ["--model_name={{.Name}}"],
        }.get(name, STANDARD_ARGS)
        assert container.args == expected
    elif name in ("kserve-paddleserver", "kserve-pmmlserver"):
        assert container.args == STANDARD_ARGS


def test_upstream_command_lines() -> None:
    runtimes = _by_name()
    tf = runtimes["kserve-tensorflow-serving"].spec.container()
    assert tf is not None and tf.command == ["/usr/bin/tensorflow_model_server"]
    assert tf.args is not None and "--model_base_path=/mnt/models" in tf.args
    triton = runtimes["kserve-tritonserver"].spec.container()
    assert triton is not None and triton.args is not None
    assert triton.args[:2] == ["tritonserver", "--model-store=/mnt/models"]
    torch = runtimes["kserve-torchserve"].spec.container()
    assert (
        torch is not None and torch.args is not None and torch.args[:2] == ["torchserve", "--start"]
    )
    assert [e.name for e in torch.env or []] == ["TS_SERVICE_ENVELOPE"]
    mlserver = runtimes["kserve-mlserver"].spec.container()
    assert mlserver is not None
    assert {e.name for e in mlserver.env or []} >= {"MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT"}
    annotations = {n: r.spec.annotations or {} for n, r in runtimes.items()}
    assert annotations["kserve-tritonserver"]["prometheus.kserve.io/port"] == "8002"
    assert annotations["kserve-torchserve"]["prometheus.kserve.io/port"] == "8082"
    assert annotations["kserve-sklearnserver"]["prometheus.kserve.io/port"] == "8080"


def test_huggingface_has_dev_shm() -> None:
    spec = _by_name()["kserve-huggingfaceserver"].spec
    assert spec.host_ipc is False
    assert [v.name for v in spec.volumes or []] == ["devshm"]
    container = spec.container()
    assert container is not None
    assert [(m.name, m.mount_path) for m in container.volume_mounts or []] == [
        ("devshm", "/dev/shm")
    ]


def test_aliases_are_explicit_only() -> None:
    runtimes = _by_name()
    for name in ALIASES:
        formats = runtimes[name].spec.supported_model_formats or []
        assert formats and all(not f.auto_select and f.priority is None for f in formats)


def test_all_builtins_apply_together() -> None:
    """KServe's webhook refuses two runtimes with one priority for one format and protocol."""
    runtimes = builtin_runtimes()
    for runtime in runtimes:
        assert validate(runtime, existing=runtimes) == [], runtime.name


def test_chart_copies_are_fresh() -> None:
    chart = ROOT / "charts/moorage/runtimes"
    assert {p.name: p.read_text() for p in chart.glob("*.yaml")} == builtin_runtime_files()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen-runtimes.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
