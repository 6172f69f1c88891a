"""The OpenAI-compatible API's data plane: request schemas and :class:`OpenAIDataPlane`
(the routes are in :mod:`moorage.server.rest.openai`).

The request schemas are pydantic models; they (and pydantic) are imported on first use of one of
their names here, so a server that never gets an OpenAI request never imports pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moorage.server.openai._plane import OpenAIDataPlane

if TYPE_CHECKING:
    from moorage.server.openai._schema import (
        ChatRequest,
        CompletionRequest,
        EmbeddingRequest,
        parse,
    )

__all__ = ["ChatRequest", "CompletionRequest", "EmbeddingRequest", "OpenAIDataPlane", "parse"]

_LAZY = {"ChatRequest", "CompletionRequest", "EmbeddingRequest", "parse"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from moorage.server.openai import _schema

        return getattr(_schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
