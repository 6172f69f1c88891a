"""What the Hugging Face models share: loading a tokenizer and weights with KServe's flags,
reading texts and generation parameters out of OIP requests, and the OIP surface of a text
generator (both backends: transformers and vLLM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from moorage.core.config.huggingface import HuggingFaceSettings
from moorage.core.errors import InvalidInput
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.server.llm import GenerationChunk, SamplingParams
from moorage.server.model import Model

__all__ = [
    "TextGenerationModel",
    "load_pretrained",
    "request_texts",
    "sampling_from_parameters",
]


def load_pretrained(auto_class: Any, source: str, settings: HuggingFaceSettings) -> tuple[Any, Any]:
    """``(tokenizer, model)`` from ``source`` (a directory or a Hub id) with the settings'
    revisions, dtype and ``trust_remote_code``."""
    import torch
    import transformers

    extra = {"do_lower_case": False} if settings.disable_lower_case else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        source,
        revision=settings.tokenizer_revision or settings.model_revision,
        trust_remote_code=settings.trust_remote_code,
        **extra,
    )
    model = auto_class.from_pretrained(
        source,
        revision=settings.model_revision,
        trust_remote_code=settings.trust_remote_code,
        dtype=getattr(torch, settings.dtype_name),
    )
    return tokenizer, model


def request_texts(payload: Any, settings: HuggingFaceSettings) -> tuple[list[str], dict[str, Any]]:
    """The texts of a v1 body (``instances``: strings, or objects with ``text``) or a v2
    request (its BYTES input: ``text_input`` or the first), and the request's parameters."""
    if isinstance(payload, InferRequest):
        if not payload.inputs:
            raise InvalidInput("the request has no inputs; send one BYTES input of texts")
        names = [t.name for t in payload.inputs]
        tensor = payload.input("text_input") if "text_input" in names else payload.inputs[0]
        if tensor.datatype.value != "BYTES":
            raise InvalidInput(
                f"input '{tensor.name}' is {tensor.datatype.value}; a text model takes BYTES"
            )
        texts = [_text(v) for v in np.asarray(tensor.as_numpy()).reshape(-1)]
        return texts, dict(payload.parameters or {})
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise InvalidInput('Expected "instances" to be a list')
    texts = []
    for item in payload["instances"]:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise InvalidInput('each instance must be a string or {"text": "..."}')
    params = payload.get("parameters")
    return texts, params if isinstance(params, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("BYTES input elements must be UTF-8 text") from None
    return str(value)


def sampling_from_parameters(parameters: dict[str, Any]) -> SamplingParams:
    """OIP request parameters -> :class:`SamplingParams` (greedy, 16 tokens by default)."""
    try:
        stop = parameters.get("stop") or ()
        params = SamplingParams(
            max_tokens=int(parameters.get("max_tokens", parameters.get("max_new_tokens", 16))),
            temperature=float(parameters.get("temperature", 0.0)),
            top_p=float(parameters.get("top_p", 1.0)),
            seed=None if parameters.get("seed") is None else int(parameters["seed"]),
            stop=(stop,) if isinstance(stop, str) else tuple(str(s) for s in stop),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid generation parameters: {exc}") from None
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidInput("max_tokens must be at least 1")
    if params.temperature < 0 or not 0 < params.top_p <= 1:
        raise InvalidInput("temperature must be >= 0 and top_p in (0, 1]")
    return params


class TextGenerationModel(Model):
    """OIP v1/v2 over :meth:`generate` (BYTES ``text_input`` -> ``text_output``), shared by the
    transformers and vLLM backends, which implement :meth:`generate`."""

    settings: HuggingFaceSettings

    def generate(
        self, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        raise NotImplementedError

    @property
    def max_model_len(self) -> int:
        raise NotImplementedError

    def _check_length(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The tokens to generate: ``max_tokens``, or what the context leaves after the prompt;
        :class:`InvalidInput` (OpenAI's wording) when the prompt and ``max_tokens`` do not fit."""
        context = self.max_model_len
        if prompt_tokens >= context or (max_tokens and prompt_tokens + max_tokens > context):
            wanted = prompt_tokens + (max_tokens or 0)
            raise InvalidInput(
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {wanted} tokens ({prompt_tokens} in the prompt, {max_tokens or 0} "
                "in the completion). Please reduce the length of the prompt or completion."
            )
        return max_tokens or context - prompt_tokens

    async def complete(self, prompt: str, params: SamplingParams) -> str:
        """The whole text generated for ``prompt``."""
        stream = self.generate(prompt, params)
        try:
            return "".join([chunk.text async for chunk in stream])
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        texts, parameters = request_texts(payload, self.settings)
        params = sampling_from_parameters(parameters)
        outputs = await asyncio.gather(*(self.complete(t, params) for t in texts))
        if isinstance(payload, InferRequest):
            tensor = InferTensor.from_numpy("text_output", list(outputs), datatype="BYTES")
            return InferResponse(self.name, [tensor], id=payload.id)
        return {"predictions": list(outputs)}
