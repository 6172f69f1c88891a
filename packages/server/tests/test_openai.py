"""The OpenAI-compatible routes of a real ``moorage-server`` process on loopback, driven by the
``openai`` Python client: completions, chat (streaming, usage, n, stop), embeddings, errors,
a client leaving mid-stream, the LLM metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .hf_models import make_tiny_llm, minilm_dir
from .test_integration import Server, start, stop

openai = pytest.importorskip("openai")
pytest.importorskip("transformers")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server, two models (KServe's multi-model layout): ``tiny`` (a causal LM) and
    ``minilm`` (sentence embeddings)."""
    root = tmp_path_factory.mktemp("llm-models")
    make_tiny_llm(root / "tiny")
    (root / "minilm").symlink_to(minilm_dir(), target_is_directory=True)
    log = root.parent / "llm-server.log"
    server = start(["--model_dir", str(root), "--max_batch_size", "8"], log, timeout=120)
    yield server
    stop(server)


def client(server: Server, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}{prefix}", api_key="none", max_retries=0)


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
def test_completion(llm_server: Server, prefix: str) -> None:
    c = client(llm_server, prefix)
    result = c.completions.create(model="tiny", prompt="Hello world", max_tokens=8, temperature=0)
    again = c.completions.create(model="tiny", prompt="Hello world", max_tokens=8, temperature=0)
    assert result.object == "text_completion" and result.model == "tiny"
    assert result.choices[0].text == again.choices[0].text
    assert result.choices[0].finish_reason in ("stop", "length")
    usage = result.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completion_n_and_several_prompts(llm_server: Server) -> None:
    result = client(llm_server).completions.create(
        model="tiny", prompt=["Hello", "The quick"], n=2, max_tokens=4, seed=3
    )
    assert sorted(c.index for c in result.choices) == [0, 1, 2, 3]


def test_chat_streaming_with_usage(llm_server: Server) -> None:
    c = client(llm_server)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello world"},
    ]
    whole = c.chat.completions.create(model="tiny", messages=messages, max_tokens=10,
                                      temperature=0)  # fmt: skip
    stream = c.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finals[-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]


def test_stop_sequence(llm_server: Server) -> None:
    c = client(llm_server)
    full = c.completions.create(model="tiny", prompt="Hello world", max_tokens=12, temperature=0)
    text = full.choices[0].text
    stop_at = text[4:6]
    cut = c.completions.create(
        model="tiny", prompt="Hello world", max_tokens=12, temperature=0, stop=[stop_at]
    )
    assert cut.choices[0].text == text[: text.index(stop_at)]
    assert cut.choices[0].finish_reason == "stop"


def test_embeddings(llm_server: Server) -> None:
    c = client(llm_server)
    # The client asks for base64 by default and decodes it; floats when asked.
    one = c.embeddings.create(model="minilm", input=["KServe serves models.", "Hello"])
    floats = c.embeddings.create(model="minilm", input="Hello", encoding_format="float")
    assert len(one.data) == 2 and len(one.data[0].embedding) == 384
    assert one.data[1].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert one.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("call", "status", "fragment"),
    [
        (lambda c: c.completions.create(model="tiny", prompt="fox " * 400), 400,
         "maximum context length"),
        (lambda c: c.chat.completions.create(
            model="tiny", messages=[{"role": "wizard", "content": "hi"}]), 400, "unknown role"),
        (lambda c: c.completions.create(model="tiny", prompt="hi", temperature=5), 400,
         "temperature"),
        (lambda c: c.completions.create(model="nope", prompt="hi"), 404, "nope"),
        (lambda c: c.embeddings.create(model="tiny", input="hi"), 400, "does not embed"),
        (lambda c: c.completions.create(model="minilm", prompt="hi"), 400, "does not generate"),
    ],
)  # fmt: skip
def test_errors_in_openai_shape(llm_server: Server, call, status, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.APIStatusError) as info:
        call(client(llm_server))
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict) and fragment in body["message"]
    assert {"message", "type", "param", "code"} <= set(body)


def test_malformed_json_and_the_server_keeps_serving(llm_server: Server) -> None:
    r = httpx.post(f"{llm_server.url}/v1/completions", content=b"{not json",
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    ok = client(llm_server).completions.create(model="tiny", prompt="Hello", max_tokens=2)
    assert ok.choices[0].text is not None


def _metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf'^{name}{{model="tiny"}} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_client_leaving_mid_stream_stops_generation(llm_server: Server) -> None:
    before = _metric(llm_server, "moorage_server_generation_tokens_total")
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 240, "stream": True,
            "ignore_eos": True}  # fmt: skip
    with httpx.stream("POST", f"{llm_server.url}/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # leave after the first token
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _metric(llm_server, "moorage_server_generation_requests_running") == 0:
            break
        time.sleep(0.05)
    assert _metric(llm_server, "moorage_server_generation_requests_running") == 0
    generated = _metric(llm_server, "moorage_server_generation_tokens_total") - before
    assert 0 < generated < 240
    text = httpx.get(f"{llm_server.url}/metrics").text
    assert 'moorage_server_time_to_first_token_seconds_count{model="tiny"}' in text
    assert 'moorage_server_inter_token_latency_seconds_count{model="tiny"}' in text
    assert "moorage_server_prompt_tokens_total" in text


def test_models(llm_server: Server) -> None:
    ids = {m.id for m in client(llm_server, "/openai/v1").models.list()}
    assert ids == {"tiny", "minilm"}
    assert client(llm_server, "/openai/v1").models.retrieve("tiny").id == "tiny"
    # vLLM's prefix: the same listing, with KServe's v1 "models" beside it
    assert {m.id for m in client(llm_server, "/v1").models.list()} == {"tiny", "minilm"}
    assert set(httpx.get(f"{llm_server.url}/v1/models").json()["models"]) == {"tiny", "minilm"}


def test_model_dir_without_model_id_needs_no_network(tmp_path: Path) -> None:
    """The single-model layout: --model_dir is the model itself (KServe's runtime args)."""
    path = make_tiny_llm(tmp_path / "m")
    server = start(["--model_name", "solo", "--model_dir", str(path)], tmp_path / "log",
                   timeout=120)  # fmt: skip
    try:
        r = client(server).completions.create(model="solo", prompt="Hello", max_tokens=3)
        assert r.usage is not None and r.usage.completion_tokens <= 3
        ready = httpx.get(f"{server.url}/v2/models/solo/ready")
        assert ready.status_code == 200
    finally:
        stop(server)


def test_oip_v2_over_grpc_generates_and_embeds(llm_server: Server) -> None:
    import grpc
    import numpy as np

    from moorage.core.protocol import InferRequest, InferTensor
    from moorage.core.protocol.grpc import (
        METHODS,
        SERVICE_NAME,
        request_to_proto,
        response_from_proto,
    )

    request_cls, response_cls = METHODS["ModelInfer"]
    texts = InferTensor.from_numpy("text_input", np.array(["Hello world"], dtype=object))
    with grpc.insecure_channel(f"127.0.0.1:{llm_server.grpc}") as channel:
        infer = channel.unary_unary(
            f"/{SERVICE_NAME}/ModelInfer",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        generated = response_from_proto(
            infer(request_to_proto(InferRequest("tiny", [texts], parameters={"max_tokens": 5})),
                  timeout=30)
        )  # fmt: skip
        text = generated.output("text_output").data.tolist()[0]
        assert isinstance(text, bytes | str) and len(text) > 0
        embedded = response_from_proto(
            infer(request_to_proto(InferRequest("minilm", [texts])), timeout=30)
        )
        vector = embedded.output("output-0")
        assert vector.datatype.value == "FP32" and vector.shape == (1, 384)


def test_chat_stream_with_n_choices(llm_server: Server) -> None:
    stream = client(llm_server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=5, n=2,
        seed=1, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    finished = {ch.choices[0].index for ch in chunks if ch.choices and ch.choices[0].finish_reason}
    assert finished == {0, 1}
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens <= 10
