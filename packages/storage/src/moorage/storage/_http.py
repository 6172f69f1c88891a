"""A small blocking HTTP/1.1 client for the data path: ranged GETs straight into a buffer.

Bodies are read with ``socket.recv_into`` into one reusable buffer per thread and handed to a
sink as a ``memoryview``, so a download costs one copy (socket → buffer) before the ``pwrite``.
Connections are kept alive per thread and host. Redirects are followed (at most five), and an
``Authorization`` header is dropped when a redirect leaves the original host, as browsers and
``huggingface_hub`` do. Metadata requests (listings, manifests, tokens) use the same client
through :meth:`HttpClient.request`.

The protocol is spoken here rather than through ``http.client``: a storage initializer makes one
request per object, and ``http.client`` parses every response's headers with the ``email``
package and wraps its socket in a new file object per response (~0.2 ms of CPU per object, and
~10 ms of imports at every start). What is read is bounded: a status line and headers of at most
64 KiB and 200 lines, chunk-size lines of at most 1 KiB.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from moorage.storage._redact import redact_url

if TYPE_CHECKING:  # ssl is imported by the first https connection (~5 ms of every start)
    import ssl

__all__ = ["HttpClient", "HttpError", "HttpResponse", "Sink"]

logger = logging.getLogger(__name__)

Sink = Callable[[memoryview], None]

_BUFFER_SIZE = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_HEAD_LIMIT = 64 * 1024
_HEAD_LINES = 200
_LINE_LIMIT = 1024
_INTERIM = 8
_RECV = 16 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class HttpError(Exception):
    """An HTTP exchange failed: a status we did not want, or a broken transfer.

    ``status`` is 0 for transport failures. ``retryable`` says whether trying again may help.
    The message never contains a URL's query string (it may hold a signature or SAS token).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int = 0,
        retryable: bool = False,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.retryable = retryable
        self.body = body
        self.headers = dict(headers or {})


class _ProtocolError(Exception):
    """The peer broke HTTP/1.1 (a bad status line, oversized headers, a short body)."""


class _Disconnected(_ProtocolError):
    """The peer closed the connection before answering (a stale keep-alive connection)."""


@dataclass
class HttpResponse:
    status: int
    #: response headers, names lower-cased (the first of repeated headers)
    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


class _Connection:
    """One keep-alive connection: a socket and the bytes read from it but not consumed yet."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.host = host
        self.port = port
        self.host_header = _host_header(scheme, host, port)
        #: an ASCII name as bytes: getaddrinfo would load the IDNA codec to encode a str
        self._address: str | bytes = host.encode() if host.isascii() else host
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl = ssl_context
        self.sock: socket.socket | None = None
        self._pending = b""
        self._pending_at = 0
        #: the response whose body is still being read; a new request needs it finished
        self.current: _Response | None = None

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._pending, self._pending_at, self.current = b"", 0, None
        if sock is not None:
            sock.close()

    def send(self, request: bytes) -> None:
        if self.current is not None and not self.current.complete:
            self.close()  # the last body was not read to its end: the stream is out of step
        self.current = None
        if self.sock is None:
            sock = socket.create_connection(
                (self._address, self.port),  # type: ignore[arg-type]  # bytes: getaddrinfo takes them
                timeout=self._connect_timeout,
            )
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._ssl is not None:
                    sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
            self.sock = sock
        self.sock.sendall(request)
        self.sock.settimeout(self._read_timeout)

    # -- reading --------------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Read more into the pending bytes; False at end of stream."""
        assert self.sock is not None
        data = self.sock.recv(_RECV)
        if not data:
            return False
        rest = self._pending[self._pending_at :]
        self._pending, self._pending_at = (rest + data if rest else data), 0
        return True

    def read_head(self) -> bytes:
        """The status line and headers, up to the blank line (bounded)."""
        searched = 0
        while True:
            buffered = self._pending[self._pending_at :]
            end = buffered.find(b"\r\n\r\n", max(0, searched - 3))
            size = 4
            if end < 0:
                end = buffered.find(b"\n\n", max(0, searched - 1))
                size = 2
            if end >= 0:
                self._pending_at += end + size
                return buffered[: end + size]
            if len(buffered) > _HEAD_LIMIT:
                raise _ProtocolError(f"response headers over {_HEAD_LIMIT} bytes")
            searched = len(buffered)
            if not self._fill():
                if buffered:
                    raise _ProtocolError("connection closed inside the response headers")
                raise _Disconnected("connection closed before a response")

    def readline(self) -> bytes:
        """One line (chunk sizes, trailers), bounded."""
        while True:
            at = self._pending.find(b"\n", self._pending_at)
            if at >= 0:
                line = self._pending[self._pending_at : at + 1]
                self._pending_at = at + 1
                return line
            if len(self._pending) - self._pending_at > _LINE_LIMIT:
                raise _ProtocolError(f"a line of the response is over {_LINE_LIMIT} bytes")
            if not self._fill():
                raise _ProtocolError("connection closed inside a chunked body")

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes of the stream; 0 at its end."""
        if self._pending_at < len(self._pending):
            n = min(len(view), len(self._pending) - self._pending_at)
            view[:n] = self._pending[self._pending_at : self._pending_at + n]
            self._pending_at += n
            return n
        assert self.sock is not None
        return self.sock.recv_into(view, len(view))


class _Response:
    """A response being read: status, headers and a body reader over the connection."""

    def __init__(self, conn: _Connection, method: str) -> None:
        self.conn = conn
        for _ in range(_INTERIM):
            head = conn.read_head()
            lines = head.split(b"\n")
            version, status, reason = _status_line(lines[0])
            if not 100 <= status < 200 or status == 101:
                break  # 1xx (100 Continue, 103 Early Hints) precede the real answer
        else:
            raise _ProtocolError(f"more than {_INTERIM} interim (1xx) responses")
        if len(lines) > _HEAD_LINES:
            raise _ProtocolError(f"more than {_HEAD_LINES} response header lines")
        self.status = status
        self.reason = reason
        self.headers = _parse_headers(lines[1:])
        connection = self.headers.get("connection", "").lower()
        self.will_close = "close" in connection or (
            version == "HTTP/1.0" and "keep-alive" not in connection
        )
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._chunk_left = 0
        #: body bytes still to come (Content-Length), None when the body is chunked or runs to EOF
        self.length: int | None = None
        if method == "HEAD" or status in (204, 304):
            self.length = 0
        elif not self.chunked:
            length = self.headers.get("content-length")
            if length is not None:
                if not length.strip().isdigit():
                    raise _ProtocolError(f"bad Content-Length {length[:40]!r}")
                self.length = int(length)
            else:
                self.will_close = True  # the body runs to the end of the stream
        self.complete = self.length == 0

    def getheader(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def readinto(self, view: memoryview) -> int:
        if self.complete or not view:
            return 0
        if self.chunked:
            return self._read_chunked(view)
        if self.length is not None:
            view = view[: min(len(view), self.length)]
        n = self.conn.readinto(view)
        if self.length is not None:
            if not n:
                raise _ProtocolError(f"connection closed with {self.length} body bytes to come")
            self.length -= n
            self.complete = self.length == 0
        elif not n:
            self.complete = True
        return n

    def _read_chunked(self, view: memoryview) -> int:
        if not self._chunk_left:
            line = self.conn.readline().split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                size = -1
            if size < 0 or not line.isalnum():
                raise _ProtocolError(f"bad chunk size {line[:20]!r}")
            if size == 0:
                for _ in range(_HEAD_LINES):  # trailers, up to the blank line
                    if not self.conn.readline().strip():
                        self.complete = True
                        return 0
                raise _ProtocolError(f"more than {_HEAD_LINES} trailer lines")
            self._chunk_left = size
        n = self.conn.readinto(view[: min(len(view), self._chunk_left)])
        if not n:
            raise _ProtocolError("connection closed inside a chunk")
        self._chunk_left -= n
        if not self._chunk_left and self.conn.readline().strip():
            raise _ProtocolError("a chunk is longer than its size")
        return n

    def read(self, amount: int | None = None) -> bytes:
        """The body (at most ``amount`` bytes)."""
        out = bytearray()
        scratch = memoryview(bytearray(64 * 1024))
        while amount is None or len(out) < amount:
            want = len(scratch) if amount is None else min(len(scratch), amount - len(out))
            n = self.readinto(scratch[:want])
            if not n:
                break
            out += scratch[:n]
        return bytes(out)


@dataclass
class _ThreadState:
    conns: dict[tuple[str, str, int], _Connection] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=lambda: bytearray(_BUFFER_SIZE))


class HttpClient:
    """Blocking keep-alive HTTP client; safe to share between threads (state is per thread).

    ``verify`` is ``True``, ``False`` or a CA bundle path. ``default_headers`` maps a host to
    headers added to every request to that host (KServe's ``<host>-headers``).
    """

    def __init__(
        self,
        *,
        verify: bool | str = True,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        default_headers: Mapping[str, Mapping[str, str]] | None = None,
        user_agent: str = "moorage-storage",
    ) -> None:
        self._verify = verify
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._default_headers = {k: dict(v) for k, v in (default_headers or {}).items()}
        self._user_agent = user_agent
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None
        self._all: list[_Connection] = []
        self._lock = threading.Lock()

    # -- connections ----------------------------------------------------------------------------
    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None:
            state = _ThreadState()
            self._local.state = state
        return state

    def _ssl_context(self) -> ssl.SSLContext:
        import ssl

        with self._lock:
            if self._ssl is None:
                if self._verify is False:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                elif isinstance(self._verify, str):
                    ctx = ssl.create_default_context(cafile=self._verify)
                else:
                    ctx = ssl.create_default_context()
                self._ssl = ctx
            return self._ssl

    def _conn(self, scheme: str, host: str, port: int) -> _Connection:
        state = self._state()
        key = (scheme, host, port)
        conn = state.conns.get(key)
        if conn is None:
            conn = _Connection(
                scheme,
                host,
                port,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                ssl_context=self._ssl_context() if scheme == "https" else None,
            )
            state.conns[key] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self, scheme: str, host: str, port: int) -> None:
        conn = self._state().conns.pop((scheme, host, port), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    # -- requests -------------------------------------------------------------------------------
    def _open(
        self, method: str, url: str, headers: Mapping[str, str] | None, body: bytes | None = None
    ) -> tuple[_Response, str, tuple[str, str, int]]:
        """Send a request, following redirects; returns the open response and the final URL."""
        sent = dict(headers or {})
        origin = urlsplit(url).hostname
        for _ in range(len(_REDIRECTS) + 1):
            parts = urlsplit(url)
            scheme = parts.scheme
            if scheme not in ("http", "https"):
                raise HttpError(f"cannot fetch {redact_url(url)}: not http(s)", url=url)
            host = parts.hostname or ""
            try:
                port = parts.port or (443 if scheme == "https" else 80)
            except ValueError:
                raise HttpError(f"bad port in {redact_url(url)}", url=url) from None
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            request_headers = {"User-Agent": self._user_agent}
            request_headers.update(self._default_headers.get(host, {}))
            if host != origin:
                sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
            request_headers.update(sent)
            key = (scheme, host, port)
            response = self._send(key, method, path, request_headers, body, url)
            location = response.getheader("Location")
            if response.status in _REDIRECTS and location:
                response.read(64 * 1024)
                if not response.complete or response.will_close:
                    self._drop(*key)
                url = urljoin(url, location)
                if response.status == 303:
                    method, body = "GET", None
                continue
            return response, url, key
        raise HttpError(f"too many redirects for {redact_url(url)}", url=url)

    def _send(
        self,
        key: tuple[str, str, int],
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        url: str,
    ) -> _Response:
        # One silent retry on a stale keep-alive connection, then report.
        for attempt in (0, 1):
            conn = self._conn(*key)
            request = _request_bytes(method, path, conn.host_header, headers, body, url)
            try:
                conn.send(request)
                response = _Response(conn, method)
                conn.current = response
                return response
            except (_Disconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(*key)
                if attempt:
                    raise HttpError(
                        f"connection to {key[1]}:{key[2]} failed: {_describe(exc)}",
                        url=url,
                        retryable=True,
                    ) from exc
            except (OSError, _ProtocolError) as exc:
                self._drop(*key)
                raise HttpError(
                    f"connection to {key[1]}:{key[2]} failed: {_describe(exc)}",
                    url=url,
                    retryable=True,
                ) from exc
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200,),
        limit: int = 64 * 1024 * 1024,
        skip_large: bool = False,
    ) -> HttpResponse:
        """A request with a small body; raises :class:`HttpError` unless status is in ``ok``.

        ``skip_large=True``: a body over ``limit`` is not read (the connection is dropped) and
        the response comes back with an empty body, for probing a file's headers.
        """
        response, final_url, key = self._open(method, url, headers, body)
        length = response.getheader("Content-Length")
        if skip_large and (length is None or not length.isdigit() or int(length) > limit):
            self._drop(*key)
            if response.status not in ok:
                raise _status_error(response.status, final_url, b"", response.headers)
            return HttpResponse(response.status, response.headers, b"", final_url)
        try:
            data = response.read(limit + 1)
        except (OSError, _ProtocolError) as exc:
            self._drop(*key)
            raise HttpError(
                f"reading {redact_url(final_url)} failed: {_describe(exc)}",
                url=final_url,
                retryable=True,
            ) from exc
        if response.will_close or not response.complete:
            self._drop(*key)
        if len(data) > limit:
            self._drop(*key)
            raise HttpError(f"response from {redact_url(final_url)} is too large", url=final_url)
        if response.status not in ok:
            raise _status_error(response.status, final_url, data, response.headers)
        return HttpResponse(response.status, response.headers, data, final_url)

    def fetch(
        self,
        url: str,
        sink: Sink,
        *,
        start: int = 0,
        end: int | None = None,
        headers: Mapping[str, str] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_headers: Callable[[Callable[[str], str | None]], None] | None = None,
    ) -> int:
        """GET bytes ``[start, end)`` of ``url`` (``end=None``: to the end) into ``sink``.

        Returns the number of bytes delivered. Raises :class:`HttpError` if the server answers
        with an error, ignores a range it must honour, or the body ends early. ``on_headers``
        is given the successful response's header lookup (a lower-case name -> its value, or
        ``None``) before the body reaches ``sink``.
        """
        sent = dict(headers or {})
        ranged = start > 0 or end is not None
        if ranged:
            sent["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        sent.setdefault("Accept-Encoding", "identity")
        response, final_url, key = self._open("GET", url, sent)
        try:
            if response.status not in (200, 206):
                data = response.read(64 * 1024)
                raise _status_error(response.status, final_url, data)
            if ranged and response.status == 200 and start > 0:
                self._drop(*key)
                raise HttpError(f"{redact_url(final_url)} ignored a Range request", url=final_url)
            want: int | None = None if end is None else end - start
            length = response.getheader("Content-Length")
            if response.status == 200 and end is not None and length and int(length) < end:
                raise HttpError(
                    f"{redact_url(final_url)} is shorter than expected ({length} < {end} bytes)",
                    url=final_url,
                    retryable=True,
                )
            if on_headers is not None:
                on_headers(response.getheader)
            got = self._pump(response, sink, want, should_stop, final_url, key)
        except BaseException:
            self._drop(*key)
            raise
        if response.will_close or not response.complete:
            self._drop(*key)
        return got

    def _pump(
        self,
        response: _Response,
        sink: Sink,
        want: int | None,
        should_stop: Callable[[], bool] | None,
        url: str,
        key: tuple[str, str, int],
    ) -> int:
        buffer = memoryview(self._state().buffer)
        got = 0
        while want is None or got < want:
            if should_stop is not None and should_stop():
                raise HttpError("download cancelled", url=url)
            chunk = buffer if want is None else buffer[: min(len(buffer), want - got)]
            try:
                n = response.readinto(chunk)
            except (OSError, _ProtocolError) as exc:
                raise HttpError(
                    f"transfer from {key[1]}:{key[2]} broke after {got} bytes: {_describe(exc)}",
                    url=url,
                    retryable=True,
                ) from exc
            if not n:
                break
            sink(chunk[:n])
            got += n
        if want is not None and got < want:
            raise HttpError(
                f"transfer from {key[1]}:{key[2]} ended early ({got} of {want} bytes)",
                url=url,
                retryable=True,
            )
        return got


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


def _status_error(
    status: int, url: str, body: bytes, headers: Mapping[str, str] | None = None
) -> HttpError:
    return HttpError(
        f"{redact_url(url)} returned HTTP {status}",
        url=url,
        status=status,
        retryable=status in _RETRYABLE_STATUS,
        body=body[:4096],
        headers=headers,
    )


def _host_header(scheme: str, host: str, port: int) -> str:
    try:
        name = host.encode("ascii").decode()
    except UnicodeEncodeError:
        name = host.encode("idna").decode()
    if ":" in name:  # an IPv6 literal
        name = f"[{name}]"
    default = 443 if scheme == "https" else 80
    return name if port == default else f"{name}:{port}"


def _request_bytes(
    method: str, path: str, host: str, headers: Mapping[str, str], body: bytes | None, url: str
) -> bytes:
    if not (path.isascii() and path.isprintable()) or " " in path:
        raise HttpError(f"{redact_url(url)}: the path holds control characters", url=url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    given = {name.lower() for name in headers}
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: identity")
    if (body is not None or method in _BODY_METHODS) and "content-length" not in given:
        lines.append(f"Content-Length: {len(body or b'')}")
    for name, value in headers.items():
        value = str(value)
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise HttpError(f"header {name[:40]!r} for {redact_url(url)} is malformed", url=url)
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        data = "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise HttpError(f"a header for {redact_url(url)} is not Latin-1", url=url) from None
    return data + body if body else data


def _status_line(line: bytes) -> tuple[str, int, str]:
    parts = line.rstrip(b"\r").decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3:
        raise _ProtocolError(f"bad status line {line[:60]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise _ProtocolError(f"bad status line {line[:60]!r}") from None
    return parts[0], status, parts[2] if len(parts) > 2 else ""


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    last = ""
    for raw in lines:
        line = raw.rstrip(b"\r").decode("latin-1")
        if not line:
            continue
        if line[0] in " \t" and last:  # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _ProtocolError(f"bad header line {line[:60]!r}")
        last = name.lower()
        headers.setdefault(last, value.strip())
    return headers
