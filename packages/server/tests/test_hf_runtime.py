"""The huggingface runtime in-process: flags, tasks, continuous batching against transformers'
own ``generate``, stop sequences, cancellation, overload, encoder tasks over OIP v1/v2."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from moorage.core.config.huggingface import HuggingFaceSettings
from moorage.core.config.server import ServerSettings
from moorage.core.errors import InvalidInput, Overloaded
from moorage.server import DataPlane, ModelRepository
from moorage.server.llm import SamplingParams
from moorage.server.rest import create_app
from moorage.server.runtimes import detect_runtime, get_runtime
from moorage.server.runtimes.huggingface import MLTask, infer_task, parse_task
from moorage.server.runtimes.huggingface._runtime import _implied_task

from .hf_models import make_tiny_llm, make_tiny_t5, minilm_dir

pytest.importorskip("transformers")
pytest.importorskip("torch")


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


def _model(path: Path, *args: str, name: str = "tiny") -> Any:
    settings = ServerSettings.from_cli(["--model_name", name, "--model_dir", str(path), *args])
    return get_runtime("huggingface").create(name, path, settings)


@pytest.fixture(scope="module")
def generator(tiny_llm: Path) -> Any:
    model = _model(tiny_llm, "--max_batch_size", "4", "--max_waiting_requests", "2")
    model.load()
    model.start()
    yield model
    model.stop()


async def idle(model: Any) -> None:
    """Wait until the batcher has dropped the sequences of earlier tests."""
    for _ in range(200):
        if model._batcher.running == 0 and model._batcher.waiting == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batcher did not go idle")


def reference(model: Any, prompt: str, max_tokens: int) -> str:
    """transformers' own greedy ``generate`` on the same weights."""
    inputs = model.tokenizer(prompt, return_tensors="pt")
    out = model.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    new = out[0][inputs["input_ids"].shape[1] :]
    return str(model.tokenizer.decode(new, skip_special_tokens=True))


# ---------------------------------------------------------------------------- flags and tasks
def test_flags_kserve_names_and_store_true() -> None:
    s = HuggingFaceSettings.from_args(
        ["--model_id", "org/m", "--trust_remote_code", "--task", "fill_mask", "--max_length",
         "128", "--dtype=bfloat16", "--return_probabilities=false", "--tensor_input_names",
         "input_ids,attention_mask", "--tensor-parallel-size", "2"]
    )  # fmt: skip
    assert s.model_id == "org/m" and s.trust_remote_code and s.task == "fill_mask"
    assert s.max_model_len == 128 and s.dtype == "bfloat16" and not s.return_probabilities
    assert s.tensor_input_names == ["input_ids", "attention_mask"]
    assert s.engine_args == ["--tensor-parallel-size", "2"]
    with pytest.raises(ValueError, match="backend"):
        HuggingFaceSettings.from_args(["--backend", "tensorrt"])


def test_task_inferred_from_architecture() -> None:
    def config(arch: str) -> Any:
        return SimpleNamespace(architectures=[arch])

    assert infer_task(config("LlamaForCausalLM")) is MLTask.text_generation
    assert infer_task(config("T5ForConditionalGeneration")) is MLTask.text2text_generation
    assert infer_task(config("BertForMaskedLM")) is MLTask.fill_mask
    assert infer_task(config("BertForSequenceClassification")) is MLTask.sequence_classification
    with pytest.raises(InvalidInput, match="couldn't be inferred from BertModel"):
        infer_task(config("BertModel"))
    with pytest.raises(InvalidInput, match="not supported"):
        infer_task(config("BertForQuestionAnswering"))
    assert parse_task("Text-Generation") is MLTask.text_generation
    with pytest.raises(InvalidInput, match="Unsupported task: translation"):
        parse_task("translation")


def test_detects_a_transformers_directory(tiny_llm: Path) -> None:
    assert detect_runtime(tiny_llm).name == "huggingface"
    assert detect_runtime(minilm_dir()).name == "huggingface"


def test_impossible_task_is_a_clear_error(tiny_llm: Path) -> None:
    with pytest.raises(InvalidInput, match="LlamaForCausalLM cannot do task"):
        _model(tiny_llm, "--task", "sequence_classification")
    bare = SimpleNamespace(architectures=["BertModel"])
    with pytest.raises(InvalidInput, match="Task couldn't be inferred"):
        _implied_task(bare, str(tiny_llm))
    assert _implied_task(bare, str(minilm_dir())) is MLTask.text_embedding  # sentence-transformers
    with pytest.raises(Exception, match="vllm"):
        _model(tiny_llm, "--backend", "vllm")


# ---------------------------------------------------------------------------- generation
async def test_one_request_matches_transformers_generate(generator: Any) -> None:
    text = await generator.complete("Hello world", SamplingParams(max_tokens=12, temperature=0))
    assert text == reference(generator, "Hello world", 12)


async def test_concurrent_requests_share_steps_and_match(generator: Any) -> None:
    prompts = ["Hello world", "The quick brown fox", "KServe is", "Predictors serve models. The"]
    lengths = [12, 5, 9, 7]  # sequences leave the batch at different steps
    texts = await asyncio.gather(
        *(generator.complete(p, SamplingParams(max_tokens=n, temperature=0))
          for p, n in zip(prompts, lengths, strict=True))
    )  # fmt: skip
    for prompt, n, text in zip(prompts, lengths, texts, strict=True):
        assert text == reference(generator, prompt, n)


async def test_late_joiner_matches(generator: Any) -> None:
    params = SamplingParams(max_tokens=20, temperature=0)
    first = asyncio.ensure_future(generator.complete("The quick brown fox", params))
    await asyncio.sleep(0.02)
    late = await generator.complete("Hello", SamplingParams(max_tokens=6, temperature=0))
    assert late == reference(generator, "Hello", 6)
    assert await first == reference(generator, "The quick brown fox", 20)


async def test_seeded_sampling_repeats_and_stop_sequences_cut(generator: Any) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    a, b = await asyncio.gather(generator.complete("Hello", params),
                                generator.complete("Hello", params))  # fmt: skip
    assert a == b
    full = reference(generator, "Hello world", 12)
    stop = full[3:5]
    cut = await generator.complete(
        "Hello world", SamplingParams(max_tokens=12, temperature=0, stop=(stop,))
    )
    assert cut == full[: full.index(stop)]


async def test_prompt_longer_than_the_context_is_refused(generator: Any) -> None:
    with pytest.raises(InvalidInput, match="maximum context length is 256"):
        generator.generate("fox " * 300, SamplingParams(max_tokens=4))


async def test_cancelled_stream_leaves_the_batch(generator: Any) -> None:
    stream = generator.generate("Hello", SamplingParams(max_tokens=200, ignore_eos=True))
    await stream.__anext__()
    await stream.aclose()
    batcher = generator._batcher
    for _ in range(100):
        if batcher.running == 0:
            break
        await asyncio.sleep(0.01)
    assert batcher.running == 0


async def test_full_queue_is_overloaded_not_growth(generator: Any) -> None:
    await idle(generator)
    params = SamplingParams(max_tokens=200, ignore_eos=True)
    streams = []
    with pytest.raises(Overloaded):
        for _ in range(20):  # 4 running + 2 waiting fit
            streams.append(generator.generate("Hello", params))
    assert 4 <= len(streams) <= 6
    for stream in streams:
        await stream.aclose()


async def test_overload_is_429_on_openai_routes_and_503_over_oip(generator: Any) -> None:
    repository = ModelRepository("/nonexistent")
    repository.update(generator)
    app = create_app(DataPlane(repository))
    params = SamplingParams(max_tokens=200, ignore_eos=True)
    streams = []
    await idle(generator)
    try:
        with pytest.raises(Overloaded):
            for _ in range(20):
                streams.append(generator.generate("Hello", params))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"model": "tiny", "prompt": "Hello", "max_tokens": 2}
            r = await client.post("/openai/v1/completions", json=body)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "overloaded"
            r = await client.post("/v1/models/tiny:predict", json={"instances": ["Hello"]})
            assert r.status_code == 503 and r.json()["code"] == "overloaded"
    finally:
        for stream in streams:
            await stream.aclose()


async def test_oip_v1_and_v2_generate(generator: Any) -> None:
    repository = ModelRepository("/nonexistent")
    repository.update(generator)
    app = create_app(DataPlane(repository))
    expected = reference(generator, "Hello world", 8)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post(
            "/v1/models/tiny:predict",
            json={"instances": ["Hello world"], "parameters": {"max_tokens": 8}},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [expected]}
        body = {
            "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES",
                        "data": ["Hello world"]}],
            "parameters": {"max_tokens": 8},
        }  # fmt: skip
        r = await client.post("/v2/models/tiny/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [expected]


async def test_text2text_generation(tmp_path: Path) -> None:
    model = _model(make_tiny_t5(tmp_path / "t5"), name="t5")
    assert model.task is MLTask.text2text_generation
    model.load()
    params = SamplingParams(max_tokens=5, temperature=0)
    first = await model.complete("Hello world", params)
    assert first == await model.complete("Hello world", params)
    result = await model.predict({"instances": ["Hello world"], "parameters": {"max_tokens": 5}})
    assert result == {"predictions": [first]}


# ---------------------------------------------------------------------------- encoders
@pytest.fixture(scope="module")
def embedder() -> Any:
    model = _model(minilm_dir(), "--task", "text_embedding", name="minilm")
    model.load()
    return model


async def test_embeddings_match_sentence_transformers(embedder: Any) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["KServe serves models.", "The quick brown fox jumps over the lazy dog."]
    reference_model = SentenceTransformer(str(minilm_dir()), device="cpu")
    expected = reference_model.encode(texts, normalize_embeddings=True)
    # Concurrent requests are encoded together and each gets its own rows back.
    results = await asyncio.gather(*(embedder.embed([t]) for t in texts))
    got = np.array([r.vectors[0] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert all(r.prompt_tokens > 2 for r in results)


@pytest.mark.parametrize(
    ("task", "check"),
    [
        ("sequence_classification", lambda p: isinstance(p[0], int)),
        ("fill_mask", lambda p: isinstance(p[0], str)),
        ("token_classification", lambda p: isinstance(p[0], list)),
    ],
)
async def test_encoder_tasks_over_v1(task: str, check: Any) -> None:
    model = _model(minilm_dir(), "--task", task, name="enc")
    model.load()
    text = "The capital of France is [MASK]." if task == "fill_mask" else "moorage serves models"
    result = await model.predict({"instances": [text]})
    assert len(result["predictions"]) == 1 and check(result["predictions"])


# ---------------------------------------------------------------------------- vLLM (not installed)
def test_vllm_engine_arguments_pass_through() -> None:
    from moorage.server.runtimes.huggingface._vllm import engine_arguments

    s = HuggingFaceSettings.from_args(
        ["--trust_remote_code", "--max_length", "512", "--model_revision", "abc",
         "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8"]
    )  # fmt: skip
    args = engine_arguments("/m", s)
    assert args[:4] == ["--model", "/m", "--dtype", "auto"]
    assert "--trust-remote-code" in args and args[args.index("--max-model-len") + 1] == "512"
    assert args[args.index("--revision") + 1] == "abc"
    assert args[-4:] == ["--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8"]


def test_vllm_shm_too_small_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from moorage.server.runtimes.huggingface import _vllm

    small = SimpleNamespace(f_frsize=4096, f_blocks=16384)  # 64 MiB
    monkeypatch.setattr(_vllm.os, "statvfs", lambda path: small)
    _vllm.check_shm(1)
    with pytest.raises(Exception, match="/dev/shm holds 64 MiB; tensor parallel size 2"):
        _vllm.check_shm(2)


async def test_vllm_backend_without_vllm_and_engine_health(tiny_llm: Path) -> None:
    import importlib.util

    from moorage.server.runtimes.huggingface._vllm import VLLMModel

    model = VLLMModel("v", str(tiny_llm), HuggingFaceSettings())
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(Exception, match=r"moorage-server\[vllm\]"):
            model.load()

    class DeadEngine:
        async def check_health(self) -> None:
            raise RuntimeError("engine loop died")

    model.engine, model.ready = DeadEngine(), True
    repository = ModelRepository("/nonexistent")
    repository.update(model)
    plane = DataPlane(repository)
    assert not await plane.ready()  # a dead engine turns the server unready
    assert not model.ready


async def test_dead_generation_loop_turns_the_model_unready(tiny_llm: Path) -> None:
    model = _model(tiny_llm, name="dying")
    model.load()
    model.start()
    assert await model.healthy()
    model._batcher.stop()  # the loop ends while the model still says it is ready
    assert not await model.healthy() and not model.ready
