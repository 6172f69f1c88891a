"""Text generation with transformers: a causal LM behind :class:`ContinuousBatcher`.

The OpenAI routes use it through :class:`~moorage.server.llm.TextGenerator`. Over OIP it
answers too: v1 ``{"instances": ["prompt", ...]}`` -> ``{"predictions": ["text", ...]}``; v2 a
BYTES input (``text_input`` or the first) -> BYTES output ``text_output``; the request's
``parameters`` may set ``max_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop``.
Encoder-decoder models (``text2text_generation``) run ``generate`` one request at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from moorage.core.config.huggingface import HuggingFaceSettings
from moorage.core.errors import InvalidInput, ModelNotReady
from moorage.server.llm import FinishReason, GenerationChunk, SamplingParams
from moorage.server.runtimes.huggingface._task import MLTask
from moorage.server.runtimes.huggingface._text import TextGenerationModel, load_pretrained

__all__ = ["HuggingFaceGenerativeModel"]

logger = logging.getLogger(__name__)

_DEFAULT_CONTEXT = 2048


class HuggingFaceGenerativeModel(TextGenerationModel):
    """A ``text_generation`` / ``text2text_generation`` model on the transformers backend."""

    platform = "huggingface"

    def __init__(
        self, name: str, source: str | Path, settings: HuggingFaceSettings, task: MLTask
    ) -> None:
        super().__init__(name)
        self.source = str(source)
        self.settings = settings
        self.task = task
        self.tokenizer: Any = None
        self.model: Any = None
        self._batcher: Any = None
        self._context = _DEFAULT_CONTEXT
        self._seq2seq_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> bool:
        import transformers

        seq2seq = self.task is MLTask.text2text_generation
        auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
        self.tokenizer, self.model = load_pretrained(auto, self.source, self.settings)
        self.model.eval()
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._context = self._context_length()
        if not seq2seq:
            from moorage.server.runtimes.huggingface._batching import ContinuousBatcher

            self._batcher = ContinuousBatcher(
                self.model,
                self.tokenizer,
                name=self.name,
                max_batch_size=self.settings.max_batch_size,
                max_waiting=self.settings.max_waiting_requests,
                max_model_len=self._context,
                eos_token_ids=self._eos_ids(),
            )
        self.ready = True
        return True

    def start(self) -> None:
        if self._batcher is not None:
            self._batcher.start()

    def stop(self) -> None:
        self.ready = False
        if self._batcher is not None:
            self._batcher.stop()

    async def healthy(self) -> bool:
        """Ready, and the batching thread alive (a dead loop turns the model unready)."""
        if self._batcher is not None and self.ready and not self._batcher.alive:
            logger.error("model %s: the generation loop is not running", self.name)
            self.ready = False
        return self.ready

    def _context_length(self) -> int:
        if self.settings.max_model_len:
            return self.settings.max_model_len
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        length = getattr(self.tokenizer, "model_max_length", None)
        return length if isinstance(length, int) and 0 < length < 10**7 else _DEFAULT_CONTEXT

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config, self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(v for v in value if isinstance(v, int))
        return sorted(ids)

    # ------------------------------------------------------------------ TextGenerator
    @property
    def max_model_len(self) -> int:
        return self._context

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        special = add_special_tokens and not self.settings.disable_special_tokens
        ids: list[int] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids

    def apply_chat_template(self, messages: Sequence[dict[str, Any]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(
                f"model '{self.name}' has no chat template in its tokenizer; "
                "use the completions route"
            )
        prompt: str = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        return prompt

    def generate(
        self, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        """Validate and queue now (400 for a prompt too long, 503 when the queue is full);
        stream from the returned iterator."""
        if not self.ready:
            raise ModelNotReady(f"Model with name {self.name} is not ready.", model=self.name)
        # A chat prompt comes as ids: its template wrote the special tokens.
        ids = prompt if isinstance(prompt, list) else self.tokenize(prompt)
        if not ids:
            raise InvalidInput("the prompt is empty")
        max_tokens = self._check_length(len(ids), params.max_tokens)
        if self._batcher is None:
            return self._seq2seq_stream(ids, params, max_tokens)
        stream: AsyncIterator[GenerationChunk] = self._batcher.submit(ids, params, max_tokens)
        return stream

    async def _seq2seq_stream(
        self, ids: list[int], params: SamplingParams, max_tokens: int
    ) -> AsyncIterator[GenerationChunk]:
        yield await asyncio.to_thread(self._seq2seq, ids, params, max_tokens)

    def _check_length(self, prompt_tokens: int, max_tokens: int | None) -> int:
        if self.task is MLTask.text2text_generation:
            return max_tokens or 256
        return super()._check_length(prompt_tokens, max_tokens)

    def _seq2seq(self, ids: list[int], params: SamplingParams, max_tokens: int) -> GenerationChunk:
        import torch

        with self._seq2seq_lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            sample = params.temperature > 1e-5
            out = self.model.generate(
                torch.tensor([ids]),
                max_new_tokens=max_tokens,
                do_sample=sample,
                **({"temperature": params.temperature, "top_p": params.top_p} if sample else {}),
            )
        tokens = out[0].tolist()
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for stop in params.stop:
            if stop and stop in text:
                return GenerationChunk(text[: text.index(stop)], len(ids), len(tokens), "stop")
        reason: FinishReason = "length" if len(tokens) >= max_tokens else "stop"
        return GenerationChunk(text, len(ids), len(tokens), reason)
