"""``OpenAIDataPlane``: completions, chat completions, embeddings and models over the models of
one :class:`~moorage.server.dataplane.DataPlane`.

It finds the model named by the body's ``model`` (ready, and able to do what is asked), turns
the request into prompts and :class:`~moorage.server.llm.SamplingParams`, runs them (``n`` x
prompts sequences, concurrently, so they share the backend's batches) and returns OpenAI's
response objects as dicts, or for ``stream`` an async iterator of chunk dicts. Closing that
iterator (the client went away) cancels every sequence still generating.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from moorage.core.errors import InvalidInput
from moorage.server.dataplane import DataPlane
from moorage.server.llm import GenerationChunk, SamplingParams, TextEmbedder, TextGenerator

if TYPE_CHECKING:  # the pydantic schemas load with the first OpenAI request (moorage.server.openai)
    from moorage.server.openai._schema import ChatRequest, CompletionRequest, EmbeddingRequest

__all__ = ["OpenAIDataPlane"]

Stream = AsyncIterator[dict[str, Any]]


class OpenAIDataPlane:
    """The OpenAI operations, independent of HTTP."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.created = int(time.time())

    # ------------------------------------------------------------------ models
    def models(self) -> dict[str, Any]:
        names = self.dataplane.model_names()
        return {"object": "list", "data": [self._card(n) for n in names]}

    def model(self, name: str) -> dict[str, Any]:
        self.dataplane.repository.bound(name)
        return self._card(name)

    def _card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "moorage"}

    def _generator(self, name: str) -> TextGenerator:
        model = self.dataplane.repository.ready_bound(name).model
        if not isinstance(model, TextGenerator):
            raise InvalidInput(
                f"model '{name}' does not generate text (its task is "
                f"{getattr(getattr(model, 'task', None), 'value', 'not generation')})",
                param="model",
            )
        return model

    def _embedder(self, name: str) -> TextEmbedder:
        model = self.dataplane.repository.ready_bound(name).model
        if not isinstance(model, TextEmbedder) or (
            getattr(model, "task", None) is not None
            and (
                getattr(model.task, "value", "") != "text_embedding"  # type: ignore[attr-defined]
            )
        ):
            raise InvalidInput(f"model '{name}' does not embed text", param="model")
        return model

    # ------------------------------------------------------------------ completions
    async def completion(self, request: CompletionRequest) -> dict[str, Any] | Stream:
        model = self._generator(request.model)
        if request.logprobs is not None:
            raise InvalidInput("logprobs is not supported", param="logprobs")
        prompts = request.prompts
        if len(prompts) * request.n > 64:
            raise InvalidInput("at most 64 sequences (prompts x n) per request", param="n")
        jobs = [(p, i) for p in prompts for i in range(request.n)]
        params = [_sampling(request, request.max_tokens, i) for _, i in jobs]
        # Every prompt is checked (length, context, queue room) before the response starts.
        streams = await _start(model, [(p, s) for (p, _), s in zip(jobs, params, strict=True)])
        head = _header("cmpl", "text_completion", request.model)
        echo = [p if request.echo and isinstance(p, str) else "" for p, _ in jobs]
        if request.stream:
            usage = request.n if request.include_usage else 0
            return self._stream_completion(streams, head, usage, echo)
        results = await _collect(streams)
        choices = [
            {"index": i, "text": echo[i] + text, "logprobs": None, "finish_reason": reason}
            for i, (text, reason, _, _) in enumerate(results)
        ]
        return {**head, "choices": choices, "usage": _usage(results, request.n)}

    async def _stream_completion(
        self, streams: list[AsyncIterator[GenerationChunk]], head: dict[str, Any],
        usage_n: int, echo: list[str],
    ) -> Stream:  # fmt: skip
        """Chunks; then, when ``usage_n`` (``n``, for include_usage), the usage chunk."""
        counts: dict[int, GenerationChunk] = {}
        for i, prefix in enumerate(echo):
            if prefix:
                yield {**head, "choices": [_text_choice(i, prefix, None)]}
        async for i, chunk in _merge(streams):
            counts[i] = chunk
            yield {**head, "choices": [_text_choice(i, chunk.text, chunk.finish_reason)]}
        if usage_n:
            yield {**head, "choices": [], "usage": _stream_usage(counts, usage_n)}

    # ------------------------------------------------------------------ chat
    async def chat(self, request: ChatRequest) -> dict[str, Any] | Stream:
        model = self._generator(request.model)
        if request.logprobs:
            raise InvalidInput("logprobs is not supported", param="logprobs")
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            prompt = model.apply_chat_template(messages)
        except InvalidInput:
            raise
        except Exception as exc:  # a template that raises on these messages
            raise InvalidInput(f"the chat template failed on the messages: {exc}") from exc
        ids = model.tokenize(prompt, add_special_tokens=False)
        limit = request.token_limit
        streams = await _start(
            model, [(ids, _sampling(request, limit, i)) for i in range(request.n)]
        )
        head = _header("chatcmpl", "chat.completion", request.model)
        if request.stream:
            head["object"] = "chat.completion.chunk"
            return self._stream_chat(streams, head, request.include_usage)
        results = await _collect(streams)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, (text, reason, _, _) in enumerate(results)
        ]
        return {**head, "choices": choices, "usage": _usage(results, request.n)}

    async def _stream_chat(
        self, streams: list[AsyncIterator[GenerationChunk]], head: dict[str, Any],
        include_usage: bool,
    ) -> Stream:  # fmt: skip
        for i in range(len(streams)):
            delta = {"role": "assistant", "content": ""}
            yield {**head, "choices": [_delta_choice(i, delta, None)]}
        counts: dict[int, GenerationChunk] = {}
        async for i, chunk in _merge(streams):
            counts[i] = chunk
            delta = {"content": chunk.text} if chunk.text else {}
            yield {**head, "choices": [_delta_choice(i, delta, chunk.finish_reason)]}
        if include_usage:
            yield {**head, "choices": [], "usage": _stream_usage(counts, len(streams))}

    # ------------------------------------------------------------------ embeddings
    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        model = self._embedder(request.model)
        texts = [_as_text(model, x) for x in request.inputs]
        result = await model.embed(texts)
        data = []
        for i, vector in enumerate(result.vectors):
            if request.dimensions is not None:
                vector = vector[: request.dimensions]
            value: Any = vector
            if request.encoding_format == "base64":
                value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            data.append({"object": "embedding", "embedding": value, "index": i})
        usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
        return {"object": "list", "data": data, "model": request.model, "usage": usage}


# ---------------------------------------------------------------------------- helpers
def _sampling(request: Any, max_tokens: int | None, index: int) -> SamplingParams:
    seed = request.seed if request.seed is None or index == 0 else request.seed + index
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=seed,
        stop=request.stops,
        ignore_eos=request.ignore_eos,
    )


def _header(prefix: str, kind: str, model: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


def _text_choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}


def _delta_choice(index: int, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}


def _as_text(model: Any, value: str | list[int]) -> str:
    if isinstance(value, str):
        return value
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise InvalidInput("token-id inputs are not supported by this model", param="input")
    return str(tokenizer.decode(value))


async def _start(
    model: TextGenerator, jobs: list[tuple[str | list[int], SamplingParams]]
) -> list[AsyncIterator[GenerationChunk]]:
    """A stream per job, or the first job's error with the streams already queued closed."""
    streams: list[AsyncIterator[GenerationChunk]] = []
    try:
        for prompt, params in jobs:
            streams.append(model.generate(prompt, params))
    except BaseException:
        for stream in streams:
            await _close(stream)
        raise
    return streams


async def _close(stream: AsyncIterator[GenerationChunk]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


Result = tuple[str, str | None, int, int]  # text, finish reason, prompt and completion tokens


async def _collect(streams: Sequence[AsyncIterator[GenerationChunk]]) -> list[Result]:
    async def run(stream: AsyncIterator[GenerationChunk]) -> Result:
        parts, last = [], None
        try:
            async for chunk in stream:
                parts.append(chunk.text)
                last = chunk
        finally:
            await _close(stream)
        if last is None:  # pragma: no cover - a backend always sends a final chunk
            return "", "abort", 0, 0
        return "".join(parts), last.finish_reason, last.prompt_tokens, last.completion_tokens

    tasks = [asyncio.ensure_future(run(s)) for s in streams]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


def _usage(results: Sequence[tuple[str, str | None, int, int]], n: int) -> dict[str, int]:
    prompt = sum(r[2] for i, r in enumerate(results) if i % n == 0)
    completion = sum(r[3] for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def _stream_usage(last: dict[int, GenerationChunk], n: int) -> dict[str, int]:
    results = [
        ("", c.finish_reason, c.prompt_tokens, c.completion_tokens) for _, c in sorted(last.items())
    ]
    return _usage(results, n)


async def _merge(
    streams: Sequence[AsyncIterator[GenerationChunk]],
) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """The chunks of every stream as they come, tagged with the stream's index. Closing this
    closes (cancels) every stream."""
    if len(streams) == 1:
        try:
            async for chunk in streams[0]:
                yield 0, chunk
        finally:
            await _close(streams[0])
        return
    queue: asyncio.Queue[tuple[int, GenerationChunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[GenerationChunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            await _close(stream)
            queue.put_nowait((index, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    open_streams = len(tasks)
    try:
        while open_streams:
            index, item = await queue.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
