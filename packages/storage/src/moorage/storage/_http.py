"""A small blocking HTTP/1.1 client for the data path: ranged GETs straight into a buffer.

Bodies are read with ``HTTPResponse.readinto`` into one reusable buffer per thread and handed
to a sink as a ``memoryview``, so a download costs one copy (socket → buffer) before the
``pwrite``. Connections are kept alive per thread and host. Redirects are followed (at most
five), and an ``Authorization`` header is dropped when a redirect leaves the original host, as
browsers and ``huggingface_hub`` do. Metadata requests (listings, manifests, tokens) use the same
client through :meth:`HttpClient.request`.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from moorage.storage._redact import redact_url

__all__ = ["HttpClient", "HttpError", "HttpResponse", "Sink"]

logger = logging.getLogger(__name__)

Sink = Callable[[memoryview], None]

_BUFFER_SIZE = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


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


@dataclass
class HttpResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    url: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass
class _ThreadState:
    conns: dict[tuple[str, str, int], http.client.HTTPConnection] = field(default_factory=dict)
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
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # -- connections ----------------------------------------------------------------------------
    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None:
            state = _ThreadState()
            self._local.state = state
        return state

    def _ssl_context(self) -> ssl.SSLContext:
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

    def _conn(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        state = self._state()
        key = (scheme, host, port)
        conn = state.conns.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self._connect_timeout, context=self._ssl_context()
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
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
    ) -> tuple[http.client.HTTPResponse, str, tuple[str, str, int]]:
        """Send a request, following redirects; returns the open response and the final URL."""
        sent = dict(headers or {})
        origin = urlsplit(url).hostname
        for _ in range(len(_REDIRECTS) + 1):
            parts = urlsplit(url)
            scheme = parts.scheme
            host = parts.hostname or ""
            port = parts.port or (443 if scheme == "https" else 80)
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
            if response.status in _REDIRECTS and response.getheader("Location"):
                location = response.getheader("Location") or ""
                response.read()
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
    ) -> http.client.HTTPResponse:
        # One silent retry on a stale keep-alive connection, then report.
        for attempt in (0, 1):
            conn = self._conn(*key)
            try:
                conn.request(method, path, body=body, headers=headers)
                if conn.sock is not None:
                    conn.sock.settimeout(self._read_timeout)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(*key)
                if attempt:
                    raise HttpError(
                        f"connection to {key[1]}:{key[2]} failed: {exc}", url=url, retryable=True
                    ) from exc
            except (OSError, http.client.HTTPException) as exc:
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
            # A HEAD answer has no body; reading it still returns the connection to the pool.
            data = response.read(limit + 1) if method != "HEAD" else response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop(*key)
            raise HttpError(
                f"reading {redact_url(final_url)} failed: {_describe(exc)}",
                url=final_url,
                retryable=True,
            ) from exc
        if response.will_close:
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
    ) -> int:
        """GET bytes ``[start, end)`` of ``url`` (``end=None``: to the end) into ``sink``.

        Returns the number of bytes delivered. Raises :class:`HttpError` if the server answers
        with an error, ignores a range it must honour, or the body ends early.
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
            got = self._pump(response, sink, want, should_stop, final_url, key)
        except BaseException:
            self._drop(*key)
            raise
        if response.will_close:
            self._drop(*key)
        return got

    def _pump(
        self,
        response: http.client.HTTPResponse,
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
            except (OSError, http.client.HTTPException) as exc:
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
        if want is not None and response.status == 200 and response.length:
            # A 200 answer to a bounded read: the rest is not drained, so drop the connection.
            self._drop(*key)
        return got


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


def _status_error(
    status: int, url: str, body: bytes, headers: http.client.HTTPMessage | None = None
) -> HttpError:
    return HttpError(
        f"{redact_url(url)} returned HTTP {status}",
        url=url,
        status=status,
        retryable=status in _RETRYABLE_STATUS,
        body=body[:4096],
        headers={k.lower(): v for k, v in (headers.items() if headers is not None else [])},
    )
