"""What a language model offers the OpenAI routes, independent of its backend.

A generative model (transformers' continuous batcher, vLLM) implements :class:`TextGenerator`;
an embedding model implements :class:`TextEmbedder`. The OpenAI data plane
(:mod:`moorage.server.openai`) speaks only these protocols, so a backend is added by writing
one class, and the routes never see torch or vLLM.

Backends report what happens to each request to :data:`observers` (time to first token,
inter-token latency, token counts, running and waiting requests); the server's metrics module
adds the Prometheus one at start-up. Observers run on the backend's thread: keep them cheap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "Embeddings",
    "FinishReason",
    "GenerationChunk",
    "GenerationObserver",
    "SamplingParams",
    "TextEmbedder",
    "TextGenerator",
    "notify",
    "observers",
]

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """One sequence's sampling: ``temperature`` 0 is greedy; ``stop`` strings end the text
    (they are not part of it); ``max_tokens`` ``None`` means up to the context length."""

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass(slots=True)
class GenerationChunk:
    """A piece of one sequence: ``text`` is new since the last chunk. The last chunk carries
    ``finish_reason``; every chunk carries the counts so far."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    token_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@runtime_checkable
class TextGenerator(Protocol):
    """A model that continues text (``text_generation`` / ``text2text_generation``)."""

    name: str
    ready: bool

    @property
    def max_model_len(self) -> int: ...

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...

    def apply_chat_template(self, messages: Sequence[dict[str, Any]]) -> str:
        """The prompt for ``messages`` (the tokenizer's chat template); ValueError if the
        tokenizer has none."""
        ...

    def generate(
        self, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        """Stream one sequence. Closing the iterator early (a client gone) stops its
        generation. Raises :class:`~moorage.core.errors.Overloaded` when the queue is full."""
        ...


@runtime_checkable
class TextEmbedder(Protocol):
    """A model that embeds text (``text_embedding``)."""

    name: str
    ready: bool

    async def embed(self, texts: Sequence[str]) -> Embeddings: ...


class GenerationObserver(Protocol):
    """Told what happens to generation requests (on the backend's thread)."""

    def first_token(self, model: str, seconds: float) -> None: ...

    def next_token(self, model: str, seconds: float) -> None: ...

    def finished(self, model: str, prompt_tokens: int, completion_tokens: int) -> None: ...

    def queue(self, model: str, running: int, waiting: int) -> None: ...


#: Observers of every generating backend (the Prometheus one is added by the server).
observers: list[GenerationObserver] = []


def notify(method: str, *args: Any) -> None:
    """Call ``method`` on every observer; an observer's failure never reaches the backend."""
    for observer in observers:
        try:
            getattr(observer, method)(*args)
        except Exception:  # pragma: no cover - an observer bug must not stop generation
            import logging

            logging.getLogger(__name__).exception("generation observer %r failed", observer)
