"""The client's one boundary for foreign exceptions.

Every httpx and grpc failure becomes one of core's typed errors (:mod:`moorage.core.errors`),
chained to the original, carrying the server's own message. Callers write
``except ModelNotFound`` whether they use REST or gRPC; no raw httpx/grpc exception escapes.

REST (:func:`map_httpx_errors`, :func:`raise_for_response`):

==================================  ===============================================
httpx ``TimeoutException``          :class:`Timeout` (connect, read, write, pool)
httpx ``NetworkError``              :class:`ConnectionFailed` (refused, reset, TLS)
httpx ``RemoteProtocolError``       :class:`ConnectionFailed` (server hung up)
httpx ``InvalidURL`` / scheme       :class:`InvalidInput`
other httpx ``HTTPError``           :class:`ServerError`
non-2xx answer                      the body's ``code`` if it names a core error,
                                    else :func:`error_for_status` (404 → ModelNotFound,
                                    503 → ModelNotReady, 400 → InvalidInput, ...)
==================================  ===============================================

gRPC (:func:`map_grpc_errors`, for grpcio's ``RpcError`` and the native transport's
:class:`RpcFailure` alike; the table is :func:`error_from_status`): the status code goes
through :data:`GRPC_STATUS_NAMES` to an HTTP status and then the same table, except that
``UNAVAILABLE`` raised by the channel itself (nothing listening, TLS handshake failed, the
connection lost) is :class:`ConnectionFailed`, ``DEADLINE_EXCEEDED`` is :class:`Timeout`, and a
message over the size limit is :class:`PayloadTooLarge`. A server may name the exact error in
the trailing metadata key ``moorage-error-code``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import grpc
import httpx
import orjson

from moorage.core.errors import (
    ERROR_CODE_METADATA,
    GRPC_STATUS_NAMES,
    ConnectionFailed,
    InvalidInput,
    MoorageError,
    PayloadTooLarge,
    ServerError,
    Timeout,
    error_for_code,
    error_for_status,
)

__all__ = [
    "ERROR_CODE_METADATA",
    "RpcFailure",
    "error_from_grpc",
    "error_from_response",
    "error_from_status",
    "map_grpc_errors",
    "map_httpx_errors",
    "raise_for_response",
]


#: Messages grpc core itself writes when the channel never reached a server.
_CHANNEL_FAILURE = re.compile(
    r"failed to connect|connection refused|connect failed|socket closed|connection reset|"
    r"handshake|ssl|tls|dns resolution|empty address list|all backends failing|"
    r"name resolution|no route to host|network is unreachable|broken pipe|goaway",
    re.IGNORECASE,
)
_TOO_LARGE = re.compile(r"larger than max", re.IGNORECASE)


# ----------------------------------------------------------------------------- REST
@contextmanager
def map_httpx_errors(url: object = None) -> Iterator[None]:
    """Turn httpx exceptions raised inside the block into core errors, chained."""
    try:
        yield
    except httpx.TimeoutException as exc:
        phase = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "waiting for the answer from",
            httpx.WriteTimeout: "sending the request to",
            httpx.PoolTimeout: "waiting for a free connection to",
        }.get(type(exc), "talking to")
        raise Timeout(f"timed out {phase} {_where(exc, url)}", url=_url(exc, url)) from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise ConnectionFailed(
            f"cannot reach {_where(exc, url)}: {exc or type(exc).__name__}", url=_url(exc, url)
        ) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise InvalidInput(f"invalid URL {_where(exc, url)}: {exc}", url=_url(exc, url)) from exc
    except httpx.HTTPError as exc:
        raise ServerError(
            f"request to {_where(exc, url)} failed: {exc or type(exc).__name__}",
            url=_url(exc, url),
        ) from exc


def _url(exc: Exception, fallback: object) -> str:
    try:
        return str(exc.request.url)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # no request attached (raised before sending)
        return "" if fallback is None else str(fallback)


def _where(exc: Exception, fallback: object) -> str:
    url = _url(exc, fallback)
    return f"'{url}'" if url else "the server"


def error_from_response(response: httpx.Response) -> MoorageError:
    """The core error for a non-2xx response, carrying the server's message and ``code``."""
    message, code = _server_message(response)
    cls = (error_for_code(code) if code else None) or error_for_status(response.status_code)
    reason = response.reason_phrase or _reason(response.status_code)
    text = f"{message}, '{response.status_code} {reason}' for url '{response.request.url}'"
    details: dict[str, Any] = {
        "status_code": response.status_code,
        "url": str(response.request.url),
    }
    if code:
        details["server_code"] = code
    return cls(text, **details)


def raise_for_response(response: httpx.Response) -> None:
    """Raise :func:`error_from_response` unless the response is 2xx."""
    if response.is_success:
        return
    error = error_from_response(response)
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise error from exc
    raise error  # 1xx/3xx that httpx does not count as an error


def _server_message(response: httpx.Response) -> tuple[str, str | None]:
    body = response.content
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        code = doc.get("code")
        code = code if isinstance(code, str) else None
        for key in ("error", "detail", "message"):
            if key in doc and doc[key] not in (None, ""):
                value = doc[key]
                return (value if isinstance(value, str) else _compact(value)), code
        return _compact(doc), code
    if body:
        text = body[:2048].decode("utf-8", errors="replace").strip()
        if text:
            return text, None
    return _reason(response.status_code), None


def _compact(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# ----------------------------------------------------------------------------- gRPC
class RpcFailure(grpc.RpcError):
    """A failed call on the native transport (:mod:`moorage.client._channel`), shaped as the
    ``grpc.RpcError`` that grpcio raises: ``code()``, ``details()``, ``trailing_metadata()``.

    ``unreachable``: the call never got an answer from a server (connect failure, TLS, lost
    connection); ``retryable``: the retry policy may run it again (the server cannot have
    processed it, or answered with a retryable status); ``transparent``: it never reached the
    server at all (GOAWAY, REFUSED_STREAM), so it may be sent again even without retries;
    ``pushback``: the server's ``grpc-retry-pushback-ms`` in seconds (negative: no retry).
    """

    def __init__(
        self,
        code: str,
        details: str,
        trailing: tuple[tuple[str, str], ...] = (),
        *,
        unreachable: bool = False,
        retryable: bool = False,
        transparent: bool = False,
        pushback: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {details}")
        self.status = code
        self.message = details
        self.trailing = trailing
        self.unreachable = unreachable
        self.retryable = retryable
        self.transparent = transparent
        self.pushback = pushback

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.status]

    def details(self) -> str:
        return self.message

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.trailing


def error_from_status(
    name: str,
    message: str,
    *,
    target: str = "",
    server_code: str | None = None,
    unreachable: bool = False,
) -> MoorageError:
    """The core error for gRPC status ``name`` (a ``grpc.StatusCode`` member name).

    The one status -> error table of the client: ``server_code`` (the ``moorage-error-code``
    trailer) names the class if it can; ``unreachable`` turns ``UNAVAILABLE`` into
    :class:`ConnectionFailed` (no server answered); else via :data:`GRPC_STATUS_NAMES`.
    """
    message = message or name
    where = f" ({target})" if target else ""
    details: dict[str, Any] = {"grpc_status": name, "target": target}
    if server_code and (cls := error_for_code(server_code)) is not None:
        return cls(message, server_code=server_code, **details)
    if name == "DEADLINE_EXCEEDED":
        return Timeout(f"{message}{where}", **details)
    if name == "UNAVAILABLE" and unreachable:
        return ConnectionFailed(f"cannot reach {target or 'the server'}: {message}", **details)
    if name == "CANCELLED":
        return ConnectionFailed(f"call cancelled{where}: {message}", **details)
    if name == "RESOURCE_EXHAUSTED" and _TOO_LARGE.search(message):
        return PayloadTooLarge(message, **details)
    status = GRPC_STATUS_NAMES.get(name, HTTPStatus.INTERNAL_SERVER_ERROR)
    return error_for_status(status)(message, **details)


def error_from_grpc(exc: grpc.RpcError, target: str = "") -> MoorageError:
    """The core error for a failed gRPC call (grpcio's or the native transport's)."""
    if isinstance(exc, RpcFailure):
        return error_from_status(
            exc.status,
            exc.message,
            target=target,
            server_code=_metadata_code(exc),
            unreachable=exc.unreachable,
        )
    code = _call(exc, "code")
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    message = _call(exc, "details") or name
    # grpcio does not say whether UNAVAILABLE came from a server or from the channel itself
    # (nothing listening, TLS handshake failed): its own messages tell
    unreachable = name == "UNAVAILABLE" and bool(
        _CHANNEL_FAILURE.search(f"{message} {_debug(exc)}")
    )
    return error_from_status(
        name, message, target=target, server_code=_metadata_code(exc), unreachable=unreachable
    )


@contextmanager
def map_grpc_errors(target: str = "") -> Iterator[None]:
    """Turn grpc exceptions raised inside the block into core errors, chained."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_grpc(exc, target) from exc
    except grpc.aio.UsageError as exc:
        raise ConnectionFailed(f"gRPC channel to {target or 'the server'} unusable: {exc}") from exc


def _call(exc: grpc.RpcError, method: str) -> Any:
    fn = getattr(exc, method, None)
    try:
        return fn() if callable(fn) else None
    except Exception:  # a half-built RpcError; never let the mapping itself fail
        return None


def _debug(exc: grpc.RpcError) -> str:
    return str(_call(exc, "debug_error_string") or "")


def _metadata_code(exc: grpc.RpcError) -> str | None:
    metadata = _call(exc, "trailing_metadata") or ()
    try:
        for key, value in metadata:
            if key == ERROR_CODE_METADATA:
                return value.decode() if isinstance(value, bytes) else str(value)
    except (TypeError, ValueError):
        return None
    return None
