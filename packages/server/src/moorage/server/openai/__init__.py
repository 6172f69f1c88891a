"""The OpenAI-compatible API's data plane: request schemas and :class:`OpenAIDataPlane`
(the routes are in :mod:`moorage.server.rest.openai`)."""

from moorage.server.openai._plane import OpenAIDataPlane
from moorage.server.openai._schema import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse,
)

__all__ = ["ChatRequest", "CompletionRequest", "EmbeddingRequest", "OpenAIDataPlane", "parse"]
