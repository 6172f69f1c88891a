"""Per-request observability at the transports: request ids, access log lines, HTTP/gRPC metrics.

**Request ids.** Every REST request and gRPC call gets one: the ``x-request-id`` header (gRPC
metadata) the caller sent, or a fresh uuid4 hex. It is carried in
:data:`~moorage.server.dataplane.request_id_var` for the duration of the request (log records
pick it up through :class:`~moorage.server.logs.RequestContextFilter`), added to the request
headers the model sees when the caller sent none, and echoed back: a REST response header, gRPC
trailing metadata. The inference logger uses it as the CloudEvent ``id``.

**Access log.** With ``--access_log_format`` (KServe's flag; the format uses gunicorn's atoms,
as KServe's ``asgi-logger`` does) or ``--enable_access_log``, one line per request goes to the
``moorage.server.access`` logger at INFO, with the fields also attached to the record
(``extra``) for the JSON formatter: ``request_id``, ``method``, ``path``, ``route``, ``status``,
``duration_ms``, ``client``, ``bytes``. Atoms: ``h`` client address, ``l``/``u`` ``-``, ``t``
time, ``r`` request line, ``m`` method, ``U`` path, ``q`` query, ``H`` HTTP version, ``s``
status, ``B``/``b`` response bytes, ``f`` referer, ``a`` user agent, ``T`` seconds, ``M``
milliseconds, ``D`` microseconds, ``L`` seconds with decimals, ``p`` pid, ``{name}i`` request
header, ``{name}o`` response header.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moorage.core.http2.grpcwire import StatusCode
from moorage.server import metrics
from moorage.server._ids import uuid4_hex
from moorage.server.dataplane import request_id_var
from moorage.server.errors import error_response
from moorage.server.logs import plain_text_handler

if TYPE_CHECKING:
    import grpc

__all__ = [
    "DEFAULT_ACCESS_LOG_FORMAT",
    "AccessLogMiddleware",
    "GrpcAccessInterceptor",
    "new_request_id",
    "register_with_grpcio",
]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("moorage.server.access")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = REQUEST_ID_HEADER.encode()
#: Longer incoming ids are replaced (they end up in every log line and CloudEvent).
MAX_REQUEST_ID_LENGTH = 256

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms %({x-request-id}i)s'


def new_request_id() -> str:
    """A random (version 4) UUID in hex, as ``uuid.uuid4().hex`` gives it."""
    return uuid4_hex()


def _usable(value: str | None) -> bool:
    return bool(value) and len(value) <= MAX_REQUEST_ID_LENGTH  # type: ignore[arg-type]


class _Atoms(Mapping[str, str]):
    """gunicorn-style access-log atoms, computed only when the format asks for them."""

    def __init__(self, scope: Scope, status: int, sent: int, seconds: float, out: list[Any]):
        self.scope = scope
        self.status = status
        self.sent = sent
        self.seconds = seconds
        self.out = out

    def _header(self, headers: Iterable[tuple[bytes, bytes]], name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for key, value in headers:
            if key.lower() == wanted:
                return str(value.decode("latin-1"))
        return "-"

    def __getitem__(self, key: str) -> str:
        scope = self.scope
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return self._header(scope["headers"], name)
            if kind == "o":
                return self._header(self.out, name)
            raise KeyError(key)
        match key:
            case "h":
                client = scope.get("client")
                return str(client[0]) if client else "-"
            case "l" | "u":
                return "-"
            case "t":
                return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
            case "r":
                return f"{scope['method']} {self._target()} HTTP/{scope.get('http_version', '1.1')}"
            case "m":
                return str(scope["method"])
            case "U":
                return str(scope["path"])
            case "q":
                return str(scope.get("query_string", b"").decode("latin-1"))
            case "H":
                return f"HTTP/{scope.get('http_version', '1.1')}"
            case "s":
                return str(self.status)
            case "B":
                return str(self.sent)
            case "b":
                return str(self.sent) if self.sent else "-"
            case "f":
                return self._header(scope["headers"], "referer")
            case "a":
                return self._header(scope["headers"], "user-agent")
            case "T":
                return str(int(self.seconds))
            case "M":
                return f"{self.seconds * 1000:.3f}"
            case "D":
                return str(int(self.seconds * 1_000_000))
            case "L":
                return f"{self.seconds:.6f}"
            case "p":
                return f"<{os.getpid()}>"
        raise KeyError(key)

    def _target(self) -> str:
        query = self.scope.get("query_string", b"")
        path = str(self.scope["path"])
        return f"{path}?{query.decode('latin-1')}" if query else path

    def __iter__(self) -> Iterator[str]:
        return iter("hlutrmUqHsBbfaTMDLp")

    def __len__(self) -> int:
        return 19


_PLACEHOLDER = re.compile(r"%\(([^)]*)\)s")

#: One atom of a line: ``(scope, status, bytes sent, seconds, response headers) -> text``.
Atom = Callable[[Scope, int, int, float, list[Any]], str]

#: Atoms that depend only on the request and outcome, as plain functions (the others go
#: through :class:`_Atoms`).
_FAST_ATOMS: dict[str, Atom] = {
    "h": lambda scope, status, sent, seconds, out: (
        str(scope["client"][0]) if scope.get("client") else "-"
    ),
    "r": lambda scope, status, sent, seconds, out: (
        f"{scope['method']} {scope['path']}"
        + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        + f" HTTP/{scope.get('http_version', '1.1')}"
    ),
    "m": lambda scope, status, sent, seconds, out: str(scope["method"]),
    "U": lambda scope, status, sent, seconds, out: str(scope["path"]),
    "s": lambda scope, status, sent, seconds, out: str(status),
    "B": lambda scope, status, sent, seconds, out: str(sent),
    "b": lambda scope, status, sent, seconds, out: str(sent) if sent else "-",
    "M": lambda scope, status, sent, seconds, out: f"{seconds * 1000:.3f}",
    "D": lambda scope, status, sent, seconds, out: str(int(seconds * 1_000_000)),
    "L": lambda scope, status, sent, seconds, out: f"{seconds:.6f}",
}


def _request_header(name: str) -> Atom:
    """The ``{name}i`` atom (ASGI gives request header names lower-cased)."""
    wanted = name.lower().encode("latin-1")

    def atom(scope: Scope, status: int, sent: int, seconds: float, out: list[Any]) -> str:
        for key, value in scope["headers"]:
            if key == wanted:
                return str(value.decode("latin-1"))
        return "-"

    return atom


def _slow_atom(key: str) -> Atom:
    def atom(scope: Scope, status: int, sent: int, seconds: float, out: list[Any]) -> str:
        return _Atoms(scope, status, sent, seconds, out)[key]

    return atom


def _compile(fmt: str) -> list[str | Atom] | None:
    """``fmt`` as literal strings and atom functions, when it uses only ``%(atom)s``
    placeholders; ``None`` otherwise (then ``%`` formatting with :class:`_Atoms` does it, and
    reports what is wrong with it)."""
    parts: list[str | Atom] = []
    position = 0
    for match in _PLACEHOLDER.finditer(fmt):
        literal = fmt[position : match.start()]
        if "%" in literal:
            return None
        key = match.group(1)
        try:
            _Atoms({"headers": [], "method": "GET", "path": "/"}, 200, 0, 0.0, [])[key]
        except KeyError:
            return None
        if key in _FAST_ATOMS:
            atom = _FAST_ATOMS[key]
        elif key.startswith("{") and key.endswith("}i"):
            atom = _request_header(key[1:-2])
        else:
            atom = _slow_atom(key)
        parts += [literal, atom]
        position = match.end()
    if "%" in fmt[position:]:
        return None
    parts.append(fmt[position:])
    return [p for p in parts if p != ""]


class AccessLogMiddleware:
    """ASGI middleware: request id, HTTP metrics and (optionally) one access line per request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: bool = False,
        access_log_format: str | None = None,
        record_metrics: bool = True,
    ) -> None:
        self.app = app
        self.format = access_log_format or DEFAULT_ACCESS_LOG_FORMAT
        self.access_log = access_log or bool(access_log_format)
        self.record_metrics = record_metrics
        self._templates: dict[int, str] = {}
        self._compiled = _compile(self.format)

    def request_id(self, scope: Scope) -> str:
        """The request's id: the caller's ``x-request-id`` when usable, else a new one, which
        replaces the header in ``scope`` (so the model sees it too)."""
        request_id = None
        for key, value in scope["headers"]:
            if key == _REQUEST_ID:
                request_id = value.decode("latin-1")
                break
        if request_id is None or not _usable(request_id):
            request_id = new_request_id()
            headers = [(k, v) for k, v in scope["headers"] if k != _REQUEST_ID]
            headers.append((_REQUEST_ID, request_id.encode()))
            scope["headers"] = headers
        return request_id

    def finish(
        self,
        scope: Scope,
        request_id: str,
        route: str,
        status: int,
        sent: int,
        seconds: float,
        response_headers: list[Any],
    ) -> None:
        """Record a finished request: HTTP metrics and, when on, its access line."""
        if self.record_metrics:
            metrics.observe_http(scope["method"], route, status, seconds)
        if self.access_log and access_logger.isEnabledFor(logging.INFO):
            self._log(scope, request_id, route, status, sent, seconds, response_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = self.request_id(scope)
        encoded_id = request_id.encode("latin-1")
        status = 500
        sent = 0
        response_headers: list[Any] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent, response_headers
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", ()))
                if not any(k.lower() == _REQUEST_ID for k, _ in response_headers):
                    response_headers.append((_REQUEST_ID, encoded_id))
                message["headers"] = response_headers
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Errors inside the data plane are answered by the exception handlers; one that
            # escapes the app (a bug in a route or middleware) is answered here, so that its
            # 500 still carries the request id and the error body, instead of a bare 500.
            if response_headers:
                raise  # the response had begun: nothing sensible can follow
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await error_response(exc)(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)
            seconds = time.perf_counter() - start
            self.finish(
                scope, request_id, self._template(scope), status, sent, seconds, response_headers
            )

    def _template(self, scope: Scope) -> str:
        """The matched route's path template (a bounded metrics label)."""
        path = getattr(scope.get("route"), "path", None)
        if path:
            return str(path)
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "unmatched"
        # Plain Starlette routes do not record themselves in the scope; their endpoint does.
        key = id(endpoint)
        template = self._templates.get(key)
        if template is None:
            router = scope.get("router")
            for route in getattr(router, "routes", ()):
                if hasattr(route, "endpoint") and hasattr(route, "path"):
                    self._templates[id(route.endpoint)] = route.path
            template = self._templates.setdefault(key, "other")
        return template

    def _log(
        self,
        scope: Scope,
        request_id: str,
        route: str,
        status: int,
        sent: int,
        seconds: float,
        response_headers: list[Any],
    ) -> None:
        compiled = self._compiled
        if compiled is not None:
            line = "".join(
                [
                    part
                    if type(part) is str
                    else part(scope, status, sent, seconds, response_headers)  # type: ignore[operator]
                    for part in compiled
                ]
            )
        else:
            atoms = _Atoms(scope, status, sent, seconds, response_headers)
            try:
                line = self.format % atoms
            except (KeyError, ValueError, TypeError) as exc:
                line = f"{atoms['r']} {status} (bad --access_log_format: {exc})"
        if _write_plain(line):
            return
        client = scope.get("client")
        _write_record(
            line,
            {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "bytes": sent,
            },
        )


_UNKNOWN = object()
#: What :func:`plain_text_handler` found for the access logger in this event-loop pass.
_plain_handler: Any = _UNKNOWN


def _forget_plain_handler() -> None:
    global _plain_handler
    _plain_handler = _UNKNOWN


def _write_plain(line: str) -> bool:
    """In the default configuration (text lines on stderr) write the access line as logging
    would, without a LogRecord (what the access log costs is most of that); ``False`` when
    logging is configured otherwise. The handler is looked up once per event-loop pass (the
    lines of the requests a pass finishes share it), each time off a loop."""
    global _plain_handler
    direct = _plain_handler
    if direct is _UNKNOWN:
        direct = plain_text_handler(access_logger, logging.INFO)
        loop = asyncio._get_running_loop()
        if loop is not None:
            _plain_handler = direct
            loop.call_soon(_forget_plain_handler)
    if direct is None:
        return False
    direct.write_line(access_logger.name, "INFO", line)
    return True


def _write_record(line: str, extra: dict[str, Any]) -> None:
    """What ``access_logger.info(line, extra=extra)`` does, less its search of the stack for the
    caller's file and line (the same for every access line)."""
    record = access_logger.makeRecord(
        access_logger.name, logging.INFO, __file__, 0, line, (), None, "_write_record", extra
    )
    access_logger.handle(record)


# ----------------------------------------------------------------------------- gRPC
#: An RPC behavior: ``(request, context) -> reply`` (a grpc.aio or native context).
Behavior = Callable[[Any, Any], Awaitable[Any]]


class GrpcAccessInterceptor:
    """The gRPC twin of :class:`AccessLogMiddleware`: request id, call metrics, access lines.

    A ``grpc.aio.ServerInterceptor`` for grpcio's servers once :func:`register_with_grpcio`
    has run (they call it); the native server calls :meth:`wrap_async` and needs no grpcio."""

    def __init__(self, *, access_log: bool = False, record_metrics: bool = True) -> None:
        self.access_log = access_log
        self.record_metrics = record_metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        metadata = handler_call_details.invocation_metadata or ()
        behavior = self._wrap(handler.unary_unary, method, metadata)
        import grpc

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def wrap_blocking(
        self, method: str, inner: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        """The same per call for the threaded server, applied once per method (no per-call
        interceptor)."""

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            rid = _request_id(context.invocation_metadata())
            code: StatusCode | grpc.StatusCode = StatusCode.OK
            token = request_id_var.set(rid)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
            try:
                return inner(request, context)
            except BaseException:
                code = context.code() or StatusCode.UNKNOWN
                raise
            finally:
                request_id_var.reset(token)
                self._observe(method, code, time.perf_counter() - start, rid, context)

        return behavior

    def wrap_async(self, method: str, inner: Behavior) -> Behavior:
        """The same per call for the native gRPC server (an async behavior and a context with
        grpc.aio's interface), applied once per method."""

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            rid = _request_id(context.invocation_metadata() or ())
            return await self._call(inner, method, rid, request, context)

        return behavior

    def _observe(
        self,
        method: str,
        code: StatusCode | grpc.StatusCode,
        seconds: float,
        rid: str,
        context: Any,
    ) -> None:
        if self.record_metrics:
            metrics.observe_grpc(method, code, seconds)
        if self.access_log and access_logger.isEnabledFor(logging.INFO):
            peer = context.peer()
            line = f"{peer} gRPC {method} {code.name} {seconds * 1000:.3f}ms"
            if _write_plain(line):
                return
            _write_record(
                line,
                {
                    "request_id": rid,
                    "method": method,
                    "status": code.name,
                    "duration_ms": round(seconds * 1000, 3),
                    "client": peer,
                },
            )

    def _wrap(self, inner: Behavior, method: str, metadata: Iterable[Any]) -> Behavior:
        rid = _request_id(metadata)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self._call(inner, method, rid, request, context)

        return behavior

    async def _call(
        self,
        inner: Behavior,
        method: str,
        rid: str,
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        start = time.perf_counter()
        code: StatusCode | grpc.StatusCode = StatusCode.OK
        token = request_id_var.set(rid)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
        try:
            return await inner(request, context)
        except BaseException:
            # An abort, or a cancellation (the native server sets CANCELLED or
            # DEADLINE_EXCEEDED first); UNKNOWN for anything else.
            code = context.code() or StatusCode.UNKNOWN
            raise
        finally:
            request_id_var.reset(token)
            self._observe(method, code, time.perf_counter() - start, rid, context)


def register_with_grpcio() -> None:
    """Make :class:`GrpcAccessInterceptor` a ``grpc.aio.ServerInterceptor`` (an ABC, so a
    virtual subclass) for grpcio's servers: done where grpcio is imported, not at start-up."""
    import grpc

    grpc.aio.ServerInterceptor.register(GrpcAccessInterceptor)


def _request_id(metadata: Iterable[Any]) -> str:
    """The caller's ``x-request-id`` when usable, else a new one."""
    for key, value in metadata:
        if key == REQUEST_ID_HEADER and isinstance(value, str):
            if _usable(value):
                return value
            break
    return new_request_id()
