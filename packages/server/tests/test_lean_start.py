"""What a default ``moorage-server`` imports (issue 17: cold start and idle RSS near the bare
model-load floor): a real server process on the iris model, with native gRPC and REST, asked
over both, must never import grpcio (nor httpx), which only ``--grpc_server grpcio`` and a
transformer's predictor client need, nor pydantic at all (``ServerSettings`` is a plain class
that parses its own flags and environment; the OpenAI request schemas and the huggingface
runtime's settings, pydantic models, load when first used). ``PYTHONPROFILEIMPORTTIME`` makes
the process list every module it imports on stderr."""

from __future__ import annotations

import enum
from pathlib import Path

import grpc
import httpx
import pytest

from moorage.core.http2.grpcwire import StatusCode
from moorage.core.protocol.grpc import METHODS, SERVICE_NAME, pb

from .conftest import IRIS_ROWS
from .test_integration import start, stop

pytestmark = pytest.mark.integration

#: Top-level modules the default path must not import.
LAZY = ("grpc", "httpx", "pydantic", "pydantic_core", "pydantic_settings")


def imported(log: str) -> set[str]:
    """The modules named by ``-X importtime`` lines in a process's output."""
    names = set()
    for line in log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_default_server_imports_no_grpcio(
    iris_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    server = start(["--model_name", "iris", "--model_dir", str(iris_dir)], tmp_path / "log")
    try:
        data = [value for row in IRIS_ROWS for value in row]
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": data}]}
        reply = httpx.post(f"{server.url}/v2/models/iris/infer", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        # The native gRPC server answers, an error included (a status from core's table).
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
            ready = channel.unary_unary(
                f"/{SERVICE_NAME}/ModelReady",
                request_serializer=METHODS["ModelReady"][0].SerializeToString,
                response_deserializer=METHODS["ModelReady"][1].FromString,
            )
            assert ready(pb.ModelReadyRequest(name="iris"), timeout=10).ready
            with pytest.raises(grpc.RpcError) as failed:
                ready(pb.ModelReadyRequest(name="absent"), timeout=10)
            assert failed.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        stop(server)
    names = imported(server.output())
    assert "moorage.server.grpc.native" in names  # the profile covers the serving process
    for module in LAZY:
        assert not {n for n in names if n == module or n.startswith(module + ".")}, module


def test_status_codes_are_grpcio_s() -> None:
    """Core's grpcio-free codes: grpcio's names and values, so either serves a context."""
    assert issubclass(StatusCode, enum.Enum)
    assert [(c.name, c.value) for c in StatusCode] == [(c.name, c.value) for c in grpc.StatusCode]


def test_openai_schemas_load_with_a_text_model_only() -> None:
    """pydantic (the OpenAI request schemas) is imported when a model that generates or embeds
    text is created, not for any other model, so an LLM's first OpenAI request does not pay
    for it."""
    import subprocess
    import sys

    code = """if True:
        import sys
        from moorage.server._loading import _prepare_openai
        from moorage.server.model import Model

        class Generator(Model):
            async def generate(self, prompt, params):
                yield None

        _prepare_openai(Model("plain"))
        assert "pydantic" not in sys.modules, "plain"
        _prepare_openai(Generator("llm"))
        assert "moorage.server.openai._schema" in sys.modules, "llm"
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
