"""The one place where errors become wire responses, for REST and for gRPC.

Core's typed errors carry their HTTP status and a stable ``code``; the gRPC status comes from
core's ``HTTP_TO_GRPC`` table (:func:`moorage.core.errors.grpc_status_for`). Everything else is
translated here by :func:`to_moorage_error`:

- ``NotImplementedError`` (a stage the model does not have) -> 501 / UNIMPLEMENTED;
- any other exception -> 500 / INTERNAL with a message naming its type (and the model, where the
  data plane knows it); the server logs it and keeps serving.

REST bodies are ``{"error": "<message>", "code": "<code>"}`` (KServe sends ``{"error": ...}``);
gRPC errors carry the same ``code`` in the trailing metadata ``moorage-error-code``
(:data:`moorage.core.errors.ERROR_CODE_METADATA`), which moorage's client maps back to the
typed error (a 503 may be ``overloaded``, ``server_not_ready`` or ``model_not_ready``).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from moorage.core.errors import ERROR_CODE_METADATA, MoorageError, ServerError, grpc_status_for
from moorage.core.http2.grpcwire import StatusCode

if TYPE_CHECKING:
    import grpc

__all__ = [
    "AbortError",
    "NotImplementedByModel",
    "error_response",
    "grpc_errors",
    "grpc_errors_blocking",
    "grpc_trailers",
    "install_exception_handlers",
    "to_moorage_error",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class NotImplementedByModel(MoorageError):
    """The model does not implement the requested stage (KServe answers 501)."""

    status = HTTPStatus.NOT_IMPLEMENTED
    code = "not_implemented"


def to_moorage_error(exc: BaseException) -> MoorageError:
    """``exc`` as a :class:`MoorageError` (itself when it already is one)."""
    if isinstance(exc, MoorageError):
        return exc
    if isinstance(exc, NotImplementedError):
        return NotImplementedByModel(str(exc) or "not implemented")
    return ServerError(f"{type(exc).__name__} : {exc}")


# ----------------------------------------------------------------------------- REST
def error_body(error: MoorageError) -> bytes:
    return orjson.dumps({"error": error.message, "code": error.code})


def error_response(exc: BaseException) -> Response:
    """The REST response for any exception."""
    error = to_moorage_error(exc)
    return Response(error_body(error), status_code=int(error.status), media_type="application/json")


async def _moorage_handler(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, NotImplementedError):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(exc)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = orjson.dumps({"error": str(exc.detail), "code": f"http_{exc.status_code}"})
    return Response(
        body, status_code=exc.status_code, media_type="application/json", headers=exc.headers
    )


def install_exception_handlers(app: Any) -> None:
    """Map every exception an endpoint can raise to ``{"error", "code"}`` (FastAPI/Starlette)."""
    app.add_exception_handler(MoorageError, _moorage_handler)
    app.add_exception_handler(HTTPException, _http_handler)
    app.add_exception_handler(NotImplementedError, _unexpected_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


# ----------------------------------------------------------------------------- gRPC
# grpcio is imported only where its server or client is used (``--grpc_server grpcio``, a
# transformer's grpc-v2 predictor): the native server and REST run without it (issue 17).
class AbortError(Exception):
    """What the native server's ``context.abort`` raises: its stand-in for grpc.aio's."""


def abort_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a ``context.abort`` raises: the native one, and grpc.aio's once grpcio is
    imported (without it no grpcio context exists)."""
    grpc_module = sys.modules.get("grpc")
    if grpc_module is None:
        return (AbortError,)
    return (AbortError, grpc_module.aio.AbortError)


def grpc_status(error: MoorageError) -> StatusCode | grpc.StatusCode:
    """The status code for ``error``: grpcio's member once grpcio is imported (what a grpcio
    context takes; the native one takes either), core's otherwise."""
    name = grpc_status_for(error.status)
    grpc_module = sys.modules.get("grpc")
    if grpc_module is None:
        return StatusCode[name]
    code: grpc.StatusCode = grpc_module.StatusCode[name]
    return code


def grpc_trailers(error: MoorageError, context: Any) -> tuple[tuple[str, Any], ...]:
    """The trailing metadata of a failed call: what the call set already (a request id) and
    the error's stable ``code``."""
    kept = tuple(
        (key, value)
        for key, value in context.trailing_metadata() or ()
        if key != ERROR_CODE_METADATA
    )
    return (*kept, (ERROR_CODE_METADATA, error.code))


def grpc_errors(
    rpc: Callable[[T, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[T, grpc.aio.ServicerContext], Awaitable[R]]:
    """Wrap an RPC so that every exception aborts the call with the mapped status code."""

    @functools.wraps(rpc)
    async def wrapper(request: T, context: grpc.aio.ServicerContext) -> R:
        try:
            return await rpc(request, context)
        except MoorageError as exc:
            await context.abort(grpc_status(exc), exc.message, grpc_trailers(exc, context))
        except Exception as exc:
            if isinstance(exc, abort_errors()):
                raise
            if not isinstance(exc, NotImplementedError):
                logger.exception("unhandled error in gRPC %s", rpc.__name__)
            error = to_moorage_error(exc)
            await context.abort(grpc_status(error), error.message, grpc_trailers(error, context))
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    return wrapper


def grpc_errors_blocking(
    rpc: Callable[[T, grpc.ServicerContext], R],
) -> Callable[[T, grpc.ServicerContext], R]:
    """:func:`grpc_errors` for the threaded server's sync RPCs."""

    @functools.wraps(rpc)
    def wrapper(request: T, context: grpc.ServicerContext) -> R:
        try:
            return rpc(request, context)
        except MoorageError as exc:
            context.set_trailing_metadata(grpc_trailers(exc, context))
            context.abort(grpc_status(exc), exc.message)
        except Exception as exc:
            if context.code() is not None:  # context.abort's own exception
                raise
            if not isinstance(exc, NotImplementedError):
                logger.exception("unhandled error in gRPC %s", rpc.__name__)
            error = to_moorage_error(exc)
            context.set_trailing_metadata(grpc_trailers(error, context))
            context.abort(grpc_status(error), error.message)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    return wrapper
