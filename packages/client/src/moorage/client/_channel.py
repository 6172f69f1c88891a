"""The native gRPC transport: unary calls over :mod:`moorage.client._h2`, no grpcio involved.

gRPC over HTTP/2 as the gRPC PROTOCOL-HTTP2 spec writes it: ``POST /<service>/<method>``,
``content-type: application/grpc``, ``te: trailers``, ``grpc-timeout`` from the deadline,
user metadata (``-bin`` values base64), one 5-byte length-prefixed message each way, the
status in the trailers (or a trailers-only response), an HTTP status other than 200 mapped
as the spec's table says. Failures are :class:`~moorage.client._errors.RpcFailure` (a
``grpc.RpcError``), which the client's one mapping turns into core's typed errors.

What it honours of the grpcio channel it replaces (:class:`NativeOptions`): the deadline,
enforced locally too (the stream is reset with CANCEL); the retry policy of
``grpc.service_config`` (attempts, backoff, retryable status codes, server pushback) for calls
the server cannot have processed — connect failures, GOAWAY / REFUSED_STREAM — and for
retryable statuses; message size limits; TLS from PEM roots, key and chain with ALPN ``h2``;
``grpc.ssl_target_name_override``, ``grpc.default_authority`` and the user agent options. One
connection per channel, opened on first use and replaced after GOAWAY or a failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from moorage.client import _h2
from moorage.client._errors import RpcFailure
from moorage.client._version import __version__
from moorage.core.errors import InvalidInput
from moorage.core.http2.grpcwire import (
    HTTP_STATUS_TO_GRPC,
    PREFIX,
    RESET_STATUS,
    STATUS_NAMES,
    MessageError,
    decode_metadata_value,
    format_timeout,
    inflate,
    message_prefix,
    metadata_key,
    metadata_value,
    percent_decode,
    read_unary,
    status_name,
)
from moorage.core.http2.hpack import Field, Headers, header_field

__all__ = ["Channel", "NativeOptions", "RetryPolicy", "native_options"]

_CONNECT_TIMEOUT = 20.0  # grpc's minimum connect timeout, when the deadline allows it
_TRANSPARENT_RETRIES = 3  # sends of a call the server never saw, beyond the policy's


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class RetryPolicy:
    """grpc's ``retryPolicy`` (gRFC A6): attempts (capped at 5, as grpc does) and backoff."""

    attempts: int = 1
    initial_backoff: float = 0.1
    max_backoff: float = 1.0
    multiplier: float = 2.0
    codes: frozenset[str] = frozenset({"UNAVAILABLE"})

    def backoff(self, attempt: int) -> float:
        """The random wait before attempt ``attempt + 1`` (full jitter, as grpc)."""
        ceiling = min(self.initial_backoff * self.multiplier ** (attempt - 1), self.max_backoff)
        return random.uniform(0, ceiling)


@dataclass(frozen=True)
class NativeOptions:
    """The grpcio channel arguments the native transport honours (all others need grpcio):

    ``grpc.max_send_message_length``, ``grpc.max_receive_message_length`` (-1: no limit),
    ``grpc.enable_retries``, ``grpc.service_config`` (its ``retryPolicy`` only),
    ``grpc.ssl_target_name_override``, ``grpc.default_authority``,
    ``grpc.primary_user_agent``, ``grpc.secondary_user_agent``.
    """

    max_send: int | None = None
    max_receive: int | None = 4 << 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    server_hostname: str | None = None
    authority: str | None = None
    user_agent: str = f"grpc-python-moorage/{__version__}"


HONOURED_OPTIONS = frozenset(
    {
        "grpc.max_send_message_length",
        "grpc.max_receive_message_length",
        "grpc.enable_retries",
        "grpc.service_config",
        "grpc.ssl_target_name_override",
        "grpc.default_authority",
        "grpc.primary_user_agent",
        "grpc.secondary_user_agent",
    }
)


def native_options(options: Sequence[tuple[str, Any]]) -> NativeOptions | str:
    """:class:`NativeOptions` from grpcio channel arguments, or why grpcio is needed."""
    values = dict(options)
    unknown = sorted(set(values) - HONOURED_OPTIONS)
    if unknown:
        return f"channel_args {', '.join(unknown)} need grpcio"
    try:
        retry = _retry_policy(values.get("grpc.service_config"))
    except (ValueError, TypeError, KeyError) as exc:
        return f"grpc.service_config needs grpcio ({exc})"
    if not values.get("grpc.enable_retries", 1):
        retry = RetryPolicy(attempts=1)
    agent = NativeOptions.user_agent
    if values.get("grpc.primary_user_agent"):
        agent = f"{values['grpc.primary_user_agent']} {agent}"
    if values.get("grpc.secondary_user_agent"):
        agent = f"{agent} {values['grpc.secondary_user_agent']}"
    override = values.get("grpc.ssl_target_name_override")
    return NativeOptions(
        max_send=_limit(values.get("grpc.max_send_message_length", -1)),
        max_receive=_limit(values.get("grpc.max_receive_message_length", 4 << 20)),
        retry=retry,
        server_hostname=override,
        authority=values.get("grpc.default_authority") or override,
        user_agent=agent,
    )


def _limit(value: Any) -> int | None:
    value = int(value)
    return None if value < 0 else value


_POLICY_KEYS = frozenset(
    {"maxAttempts", "initialBackoff", "maxBackoff", "backoffMultiplier", "retryableStatusCodes"}
)


def _retry_policy(config: Any) -> RetryPolicy:
    """The retry policy for the inference service in a service config (JSON)."""
    if config is None:
        return RetryPolicy()
    doc = orjson.loads(config)
    if set(doc) - {"methodConfig"}:
        raise ValueError(f"keys {sorted(set(doc) - {'methodConfig'})}")
    for method in doc.get("methodConfig", []):
        if set(method) - {"name", "retryPolicy"}:
            raise ValueError(f"methodConfig keys {sorted(set(method) - {'name', 'retryPolicy'})}")
        names = method.get("name") or [{}]
        if any(set(n) - {"service"} for n in names):
            raise ValueError("per-method configs")
        if not any(n.get("service") in (None, "", "inference.GRPCInferenceService") for n in names):
            continue
        policy = method.get("retryPolicy")
        if policy is None:
            return RetryPolicy()
        if set(policy) - _POLICY_KEYS:
            raise ValueError(f"retryPolicy keys {sorted(set(policy) - _POLICY_KEYS)}")
        codes = frozenset(
            STATUS_NAMES[c] if isinstance(c, int) else str(c).upper()
            for c in policy["retryableStatusCodes"]
        )
        return RetryPolicy(
            attempts=max(1, min(int(policy["maxAttempts"]), 5)),
            initial_backoff=_duration(policy["initialBackoff"]),
            max_backoff=_duration(policy["maxBackoff"]),
            multiplier=float(policy["backoffMultiplier"]),
            codes=codes,
        )
    return RetryPolicy()


def _duration(text: str) -> float:
    if not isinstance(text, str) or not text.endswith("s"):
        raise ValueError(f"duration {text!r}")
    return float(text[:-1])


# ----------------------------------------------------------------------------- TLS
def ssl_context(
    root_certificates: bytes | None,
    private_key: bytes | None,
    certificate_chain: bytes | None,
) -> ssl.SSLContext:
    """A client TLS context with ALPN ``h2``: ``root_certificates`` (PEM) or the system's."""
    context = ssl.create_default_context(
        cadata=root_certificates.decode("ascii") if root_certificates else None
    )
    if (private_key is None) != (certificate_chain is None):
        raise InvalidInput("private_key and certificate_chain go together")
    if private_key is not None and certificate_chain is not None:
        # load_cert_chain reads files: the PEM goes through a private temporary directory
        with tempfile.TemporaryDirectory(prefix="moorage-tls-") as directory:
            chain = os.path.join(directory, "chain.pem")
            key = os.path.join(directory, "key.pem")
            for path, data in ((chain, certificate_chain), (key, private_key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
                    handle.write(data)
            try:
                context.load_cert_chain(chain, key)
            except ssl.SSLError as exc:
                raise InvalidInput(f"cannot load the client certificate: {exc}") from exc
    context.set_alpn_protocols(["h2"])
    return context


# ----------------------------------------------------------------------------- metadata
def metadata_fields(pairs: Iterable[tuple[str, Any]]) -> Headers:
    """User metadata as header fields: lower-case keys, ``-bin`` values base64 (no padding)."""
    out = []
    for key, value in pairs:
        name = metadata_key(str(key))
        if name is None:
            raise InvalidInput(f"invalid gRPC metadata key {key!r}")
        text = metadata_value(name, value if isinstance(value, str | bytes) else str(value))
        if text is None:
            raise InvalidInput(f"gRPC metadata {name.decode()!r} must be printable ASCII")
        out.append((name, text))
    return tuple(out)


def _timeout(seconds: float) -> Field:
    return (b"grpc-timeout", format_timeout(seconds))


def metadata_block(pairs: Iterable[tuple[str, Any]]) -> bytes:
    """Per-call metadata as HPACK literals without indexing (never in the server's table)."""
    return b"".join(header_field(name, value) for name, value in metadata_fields(pairs))


# ----------------------------------------------------------------------------- channel
class Channel:
    """Unary gRPC calls to one ``host:port`` over one HTTP/2 connection at a time."""

    def __init__(
        self,
        target: str,
        host: str,
        port: int,
        *,
        options: NativeOptions,
        context: ssl.SSLContext | None = None,
        metadata: Iterable[tuple[str, Any]] = (),
        service: str = "inference.GRPCInferenceService",
    ) -> None:
        self.target = target
        self._host = host
        self._port = port
        self._context = context
        self._options = options
        self._service = service
        self._limit = None if options.max_receive is None else options.max_receive + 5
        self._metadata = metadata_fields(metadata)
        self._heads: dict[str, Headers] = {}
        # the request's header fields by (method, timeout): grpc-timeout is the call's timeout
        self._fields: dict[tuple[str, float], Headers] = {}
        self._seen: set[tuple[str, float]] = set()
        self._conn: _h2.Connection | None = None
        self._old: list[_h2.Connection] = []  # replaced, finishing their streams
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _head(self, method: str) -> Headers:
        authority = self._options.authority or self.target
        head = (
            (b":method", b"POST"),
            (b":scheme", b"https" if self._context is not None else b"http"),
            (b":path", f"/{self._service}/{method}".encode()),
            (b":authority", authority.encode("ascii", "replace")),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", self._options.user_agent.encode("latin-1")),
            *self._metadata,
        )
        self._heads[method] = head
        return head

    def _indexed(self, method: str, timeout: float) -> Headers | None:
        """The fields with ``grpc-timeout: timeout`` once that timeout repeats (a timeout seen
        once goes as a literal: timeouts computed per call must not churn the server's table)."""
        key = (method, timeout)
        if key not in self._seen:
            if len(self._seen) >= 1024:
                self._seen.clear()
            self._seen.add(key)
            return None
        fields = (*(self._heads.get(method) or self._head(method)), _timeout(timeout))
        if len(self._fields) < 64:
            self._fields[key] = fields
        return fields

    async def unary(
        self,
        method: str,
        message: bytes,
        timeout: float | None,
        metadata: Iterable[tuple[str, Any]] | None = None,
    ) -> memoryview:
        """Call ``method`` with one serialized message; the serialized reply."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        deadline = None if timeout is None else loop.time() + timeout
        options = self._options
        if options.max_send is not None and len(message) > options.max_send:
            raise RpcFailure(
                "RESOURCE_EXHAUSTED",
                f"Sent message larger than max ({len(message)} vs. {options.max_send})",
            )
        extra = metadata_block(metadata) if metadata else b""
        prefix = message_prefix(len(message))
        attempt, transparent = 1, 0
        policy = options.retry
        while True:
            try:
                conn = self._conn
                if conn is None or not conn.usable:
                    conn = await self._connection(deadline)
                late = extra
                fields: Headers | None = None
                if timeout is None:
                    fields = self._heads.get(method) or self._head(method)
                elif attempt == 1 and not transparent:
                    fields = self._fields.get((method, timeout)) or self._indexed(method, timeout)
                if fields is None:  # a once-off timeout or a later attempt: not indexed
                    assert deadline is not None
                    left = deadline - loop.time()
                    if left <= 0:
                        raise RpcFailure("DEADLINE_EXCEEDED", "Deadline Exceeded")
                    fields = self._heads.get(method) or self._head(method)
                    late = header_field(b"grpc-timeout", format_timeout(left)) + extra
                stream = await conn.request(fields, late, prefix, message, deadline, self._limit)
                return self._reply(stream)
            except _h2.StreamError as exc:
                failure = self._stream_failure(exc)
            except RpcFailure as exc:
                failure = exc
            if failure.transparent and transparent < _TRANSPARENT_RETRIES:
                transparent += 1
                continue
            if not failure.retryable or attempt >= policy.attempts:
                raise failure
            delay = policy.backoff(attempt) if failure.pushback is None else failure.pushback
            if delay < 0 or (deadline is not None and loop.time() + delay >= deadline):
                raise failure
            await asyncio.sleep(delay)
            attempt += 1

    async def close(self) -> None:
        """Close the connections; calls still running fail as a lost connection."""
        self._closed = True
        for conn in [*self._old, *([self._conn] if self._conn else [])]:
            conn.close()
        self._conn = None
        self._old.clear()

    # ------------------------------------------------------------------------- internals
    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        # connections of another (finished) loop cannot be used, nor closed, from this one
        self._loop = loop
        self._conn = None
        self._old.clear()
        self._lock = asyncio.Lock()

    async def _connection(self, deadline: float | None) -> _h2.Connection:
        """The usable connection, opened by the first caller that finds none."""
        assert self._lock is not None
        try:
            async with asyncio.timeout_at(deadline):  # behind another caller's connect
                await self._lock.acquire()
        except TimeoutError:
            raise RpcFailure("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
        try:
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            if self._closed:
                raise RpcFailure("CANCELLED", "the channel is closed")
            self._old = [c for c in self._old if not c.idle]
            if conn is not None and not conn.idle:
                self._old.append(conn)  # still finishing its streams; closed with the channel
            self._conn = None
            self._conn = await self._open(deadline)
            return self._conn
        finally:
            self._lock.release()

    async def _open(self, deadline: float | None) -> _h2.Connection:
        loop = self._loop
        assert loop is not None
        limit = _CONNECT_TIMEOUT
        if deadline is not None:
            limit = max(min(deadline - loop.time(), limit), 0)
        try:
            async with asyncio.timeout(limit):
                return await _h2.connect(
                    loop,
                    self._host,
                    self._port,
                    ssl=self._context,
                    server_hostname=self._options.server_hostname or self._host,
                )
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline - 1e-3:
                raise RpcFailure("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
            raise RpcFailure(
                "UNAVAILABLE",
                f"failed to connect to {self.target}: timed out",
                unreachable=True,
                retryable=True,
            ) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError)
            raise RpcFailure(
                "UNAVAILABLE",
                f"failed to connect to {self.target}: {exc or type(exc).__name__}",
                unreachable=True,
                retryable=True,
            ) from exc

    def _stream_failure(self, exc: _h2.StreamError) -> RpcFailure:
        codes = self._options.retry.codes
        if isinstance(exc, _h2.DeadlineExceeded):
            return RpcFailure("DEADLINE_EXCEEDED", "Deadline Exceeded")
        if isinstance(exc, _h2.BodyTooLarge):
            size = PREFIX.unpack(exc.first)[1] if len(exc.first) == PREFIX.size else "?"
            limit = self._options.max_receive
            return RpcFailure(
                "RESOURCE_EXHAUSTED", f"Received message larger than max ({size} vs. {limit})"
            )
        if exc.refused:
            return RpcFailure(
                "UNAVAILABLE",
                f"{exc} (the server did not process the call)",
                unreachable=True,
                retryable="UNAVAILABLE" in codes,
                transparent=True,
            )
        if exc.connection:
            return RpcFailure("UNAVAILABLE", str(exc), unreachable=True)
        status = RESET_STATUS.get(exc.code, "INTERNAL") if exc.code is not None else "INTERNAL"
        return RpcFailure(status, str(exc))

    def _reply(self, stream: _h2.Stream) -> memoryview:
        headers = stream.headers or ()
        trailers = stream.trailers
        if trailers is None:  # trailers-only response
            trailers = headers
        status = message = pushback = None
        for name, value in trailers:
            if name == b"grpc-status":
                status = value
            elif name == b"grpc-message":
                message = value
            elif name == b"grpc-retry-pushback-ms":
                pushback = value
        if status != b"0":
            raise self._status_failure(headers, trailers, status, message, pushback)
        data = stream.data
        body = data[0] if len(data) == 1 else b"".join(data)
        limit = self._options.max_receive
        try:
            compressed, view = read_unary(body, max_length=limit)
            if compressed:
                encoding = next((v for k, v in headers if k == b"grpc-encoding"), b"identity")
                # bounded: a small "gzip bomb" never inflates past the receive limit
                view = memoryview(inflate(view, encoding, limit=limit))
        except MessageError as exc:
            raise RpcFailure(exc.status, exc.message) from None
        return view

    def _status_failure(
        self,
        headers: Headers,
        trailers: Headers,
        status: bytes | None,
        message: bytes | None,
        pushback: bytes | None,
    ) -> RpcFailure:
        http = next((v for k, v in headers if k == b":status"), b"")
        if status is None:
            if http != b"200":
                name = HTTP_STATUS_TO_GRPC.get(http, "UNKNOWN")
                return RpcFailure(
                    name,
                    f"Received http2 header with status: {http.decode('latin-1')}",
                    retryable=name in self._options.retry.codes,
                )
            return RpcFailure("UNKNOWN", "the server sent no grpc-status")
        name = status_name(status)
        delay = None
        if pushback is not None:
            try:
                delay = int(pushback) / 1000
            except ValueError:
                delay = -1.0  # malformed pushback: no retry (gRFC A6)
        metadata = tuple(
            (k.decode("latin-1"), decode_metadata_value(k, v).decode("latin-1"))
            for k, v in trailers
            if not k.startswith(b":") and k not in _NOT_METADATA
        )
        return RpcFailure(
            name,
            percent_decode(message) if message else "",
            metadata,
            retryable=name in self._options.retry.codes,
            pushback=delay,
        )


_NOT_METADATA = frozenset({b"grpc-status", b"grpc-message", b"content-type"})


def parse_target(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` / ``[v6]:port`` target; ``None`` for other grpc
    target forms (``dns:///``, ``unix:``, ...), which need grpcio."""
    host, sep, port = url.rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in host:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        return host[1:-1], int(port)
    if ":" in host:
        return None
    return host, int(port)


def pairs(mapping: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple((k.lower(), v) for k, v in (mapping or {}).items())
