"""The REST client's fast path: an HTTP/1.1 keep-alive connection pool over asyncio.

httpx + httpcore spend most of a small inference call's client CPU in their own machinery
(per-request pool scans that poll every idle socket, anyio locks and cancel scopes, headers and
body written in two ``send`` calls). For plain ``http://`` and ``https://`` over HTTP/1.1, with
no custom transport, auth flow or proxy, :class:`ConnectionPool` does the same job with one
``asyncio.Protocol`` per connection and the ``httptools`` (llhttp) parser: the request goes out
in one write, the response is parsed in C, and the call waits on one future.

Behaviour follows httpx's default transport: ``httpx.Timeout``'s connect/read/write/pool
phases (read = longest silence while waiting for the answer), connection retries with
httpcore's back-off (0, 0.5, 1, 2 ... s; jittered here, :mod:`moorage.core.retry`),
``httpx.Limits`` (connections, keep-alive connections, keep-alive expiry), TLS with the
client's ``SSLContext``, chunked and read-until-close bodies, gzip/deflate content encodings.
Failures are raised as the httpx exceptions that transport would raise (``ConnectError``,
``ReadTimeout``, ...), so the client's one mapping
(:func:`moorage.client._errors.map_httpx_errors`) turns them into core's typed errors. A
keep-alive connection that the server closed before answering is retried
once on a fresh connection, as httpcore does for a connection it finds closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections import deque
from typing import Any, NamedTuple

import httptools
import httpx

from moorage.core.retry import Backoff, retry_async

__all__ = ["ConnectionPool", "Reply", "Route", "Timeouts", "route_for"]

#: connect, read, write, pool (seconds or ``None``), as in ``httpx.Timeout``.
Timeouts = tuple[float | None, float | None, float | None, float | None]
Origin = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_BAD_NAME = frozenset(' \t:"(),/;<=>?@[\\]{}')  # not allowed in a header name (RFC 9110 token)
_LARGE_BODY = 64 * 1024  # bodies above this are written after the head, not joined to it


class Route(NamedTuple):
    """Where a request goes: the URL, its origin and the bytes of its request target."""

    url: httpx.URL
    origin: Origin
    target: bytes
    host: bytes


def route_for(url: httpx.URL) -> Route:
    """The :class:`Route` of an absolute ``http``/``https`` URL."""
    scheme = url.scheme
    port = url.port or _DEFAULT_PORTS.get(scheme, 0)
    return Route(url, (scheme, url.host, port), url.raw_path, url.netloc)


class Reply:
    """A complete response: status, lower-cased headers (repeats joined by ``", "``), body."""

    __slots__ = (
        "content",
        "headers",
        "http_version",
        "raw_headers",
        "reason_phrase",
        "status_code",
        "url",
    )

    def __init__(
        self,
        url: httpx.URL,
        status_code: int,
        reason_phrase: str,
        http_version: str,
        raw_headers: list[tuple[bytes, bytes]],
        content: bytes,
    ) -> None:
        self.url = url
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.http_version = http_version
        self.raw_headers = raw_headers
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers
        encoding = headers.get("content-encoding")
        self.content = _decoded(content, encoding) if encoding else content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def is_client_error(self) -> bool:
        return 400 <= self.status_code < 500

    def to_httpx(self, method: str) -> httpx.Response:
        """The same response as an ``httpx.Response`` (for errors and cookies: not hot)."""
        headers = [(k, v) for k, v in self.raw_headers if k.lower() not in (b"content-encoding",)]
        return httpx.Response(
            self.status_code,
            headers=headers,
            content=self.content,
            request=httpx.Request(method, self.url),
            extensions={
                "reason_phrase": self.reason_phrase.encode("latin-1"),
                "http_version": self.http_version.encode("ascii"),
            },
        )


def _decoded(content: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(content, zlib.MAX_WBITS | 16)
        if encoding == "deflate":
            try:
                return zlib.decompress(content)
            except zlib.error:
                return zlib.decompress(content, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode {encoding} response body: {exc}") from exc
    if encoding in ("", "identity"):
        return content
    raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, answers parsed by httptools."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.origin = origin
        self.closed = False
        self.idle_since = 0.0
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._read_timeout: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_rx = 0.0
        self._reset()

    def _reset(self) -> None:
        self._received = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._headers_done = False
        self._delimited = False  # Content-Length or chunked: the body has a known end
        self._complete = False
        self._keep_alive = False

    # ------------------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._timer is not None:
            self._last_rx = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the call

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and not self._delimited and not self._complete:
                self._complete = True  # the body ran until the server closed
                waiter.set_result(None)
            elif self._received == 0:
                waiter.set_exception(_Stale("Server disconnected without sending a response."))
            else:
                waiter.set_exception(
                    httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body"
                    )
                )
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(httpx.WriteError(str(exc or "connection closed while writing")))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ------------------------------------------------------------------------- httptools
    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._delimited = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            self._reset()  # an interim 1xx answer: the real one follows
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------------- calls
    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                self._transport.close()

    @property
    def reusable(self) -> bool:
        return not self.closed and self._complete and self._keep_alive

    async def roundtrip(
        self, url: httpx.URL, method: str, head: bytes, body: bytes, timeouts: Timeouts
    ) -> Reply:
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            raise _Stale("connection closed")
        self._reset()
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        if len(body) > _LARGE_BODY:
            transport.write(head)
            transport.write(body)
        else:
            transport.write(head + body if body else head)
        if self._paused:
            await self._drained(timeouts[2])
        read = timeouts[1]
        if read is not None:
            self._read_timeout = read
            self._last_rx = loop.time()
            self._timer = loop.call_at(self._last_rx + read, self._check_read)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        chunks = self._chunks
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        major, minor = self._parser.get_http_version().split(".")[:2]
        return Reply(
            url,
            self._parser.get_status_code(),
            self._reason.decode("latin-1").strip(),
            f"HTTP/{major}.{minor}",
            self._headers,
            content,
        )

    async def _drained(self, timeout: float | None) -> None:
        self._drain = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drain
        except TimeoutError:
            self.close()
            raise httpx.WriteTimeout("timed out writing the request") from None
        finally:
            self._drain = None

    def _check_read(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self._read_timeout is None:
            return
        due = self._last_rx + self._read_timeout
        if due > self._loop.time():
            self._timer = self._loop.call_at(due, self._check_read)
            return
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the response"))
        self.close()

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class _Stale(httpx.RemoteProtocolError):
    """A connection closed before any byte of the answer (retried once if it was reused)."""


class ConnectionPool:
    """HTTP/1.1 keep-alive connections per origin, within ``httpx.Limits``."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None, limits: httpx.Limits, retries: int = 0
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        #: httpcore's connect retries: the first at once, then 0.5, 1, 2 ... s (with jitter).
        self._connect_backoff = Backoff(attempts=retries + 1, initial=0.5, immediate_first=True)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    async def request(
        self, route: Route, method: str, head: bytes, body: bytes, timeouts: Timeouts
    ) -> Reply:
        """Send one request (``head`` is the request line and headers) and read the answer."""
        conn, reused = await self._acquire(route.origin, timeouts)
        while True:
            try:
                reply = await conn.roundtrip(route.url, method, head, body, timeouts)
            except _Stale:
                self._release(conn, keep=False)
                if not reused:
                    raise
                conn, reused = await self._acquire(route.origin, timeouts, fresh=True)
                continue
            except BaseException:
                conn.close()
                self._release(conn, keep=False)
                raise
            self._release(conn, keep=conn.reusable)
            return reply

    async def aclose(self) -> None:
        self.closed = True
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------------- internals
    async def _acquire(
        self, origin: Origin, timeouts: Timeouts, *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first call, or a new event loop (asyncio.run again)
            self._forget_connections()
            self._loop = loop
        while True:
            idle = None if fresh else self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if conn.closed or (
                    self._expiry is not None and loop.time() - conn.idle_since > self._expiry
                ):
                    conn.close()
                    self._open -= 1
                    continue
                return conn, True
            if self._max_connections is None or self._open < self._max_connections:
                break
            if self._close_one_idle():
                continue
            await self._wait_for_slot(timeouts[3])
        self._open += 1
        try:
            conn = await self._connect(loop, origin, timeouts[0])
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        return conn, False

    async def _wait_for_slot(self, timeout: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free connection") from None
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _forget_connections(self) -> None:
        # connections of another loop cannot be used (nor closed) from this one
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()
        self._open = 0
        self._waiters.clear()

    def _idle_count(self) -> int:
        return sum(len(connections) for connections in self._idle.values())

    def _close_one_idle(self) -> bool:
        for connections in self._idle.values():
            if connections:
                connections.pop(0).close()
                self._open -= 1
                return True
        return False

    def _release(self, conn: _Connection, *, keep: bool) -> None:
        if keep and not self.closed and self._max_idle != 0:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(conn.origin, []).append(conn)
            if self._max_idle is not None and self._idle_count() > self._max_idle:
                self._close_one_idle()  # the oldest of the first origin, as a bound
        else:
            conn.close()
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, origin: Origin, timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        context = self._ssl_context if scheme == "https" else None

        async def connect() -> _Connection:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
            return conn

        try:
            return await retry_async(connect, self._connect_backoff, retry_on=OSError)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc


def encode_headers(headers: Any) -> bytes:
    """``Name: value\\r\\n`` lines for ``(name, value)`` pairs, refusing CR/LF injection."""
    lines = []
    for name, value in headers:
        line = f"{name}: {value}\r\n"
        if "\r" in line[:-2] or "\n" in line[:-2] or not name or _BAD_NAME.intersection(name):
            raise httpx.LocalProtocolError(f"invalid header {name!r}: {value!r}")
        lines.append(line)
    return "".join(lines).encode()
