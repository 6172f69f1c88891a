"""The operator's writes to the API server: one aiohttp session, errors mapped once.

kopf watches; this client sends what :mod:`moorage.controller.operator.apply` builds (server-side
apply, deletes, status patches, Events, the leader Lease) with the same credentials kopf logs in
with (:class:`kopf.ConnectionInfo`: a kubeconfig, or the pod's service account).

Errors are translated in one place, :func:`api_errors`: a conflict (409), throttling (429), a
server error (5xx) or a lost connection is a :class:`kopf.TemporaryError` with a delay (the
``Retry-After`` header when given); any other refusal (400, 403, 422: the API server said no to
what was sent) is a :class:`kopf.PermanentError` naming the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import kopf
import orjson

from moorage.controller.operator.apply import (
    ObjectRef,
    Request,
    apply_request,
    delete_request,
    object_path,
    status_request,
)

__all__ = ["ApiError", "KubeClient", "RateLimiter", "api_errors"]

_RETRYABLE = {408, 409, 429, 500, 502, 503, 504}


class ApiError(Exception):
    """The API server answered ``status`` (a ``kind: Status`` body in ``body``)."""

    def __init__(self, status: int, body: Mapping[str, Any], *, retry_after: float | None = None):
        self.status = status
        self.body = body
        self.retry_after = retry_after
        super().__init__(f"{status}: {body.get('message') or body.get('reason') or body}")


@contextlib.asynccontextmanager
async def api_errors(what: str, *, delay: float = 1.0) -> AsyncIterator[None]:
    """Map API and connection failures to kopf's retry semantics (see the module docstring)."""
    try:
        yield
    except ApiError as exc:
        if exc.status in _RETRYABLE:
            raise kopf.TemporaryError(f"{what}: {exc}", delay=exc.retry_after or delay) from exc
        raise kopf.PermanentError(f"{what}: {exc}") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise kopf.TemporaryError(f"{what}: {type(exc).__name__}: {exc}", delay=delay) from exc


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """kopf's own TLS context of the credentials (CA, client certificate; base64 or PEM)."""
    if not info.server.startswith("https"):
        return False
    return info.as_ssl_context()


class RateLimiter:
    """A token bucket: ``qps`` calls a second on average, bursts of ``burst`` (``qps`` 0: no
    limit). ``clock`` is injectable for tests."""

    def __init__(
        self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._last = clock()

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it."""
        if self.qps <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class KubeClient:
    """A small async client for the calls the operator makes, at most ``qps`` a second."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        timeout: float = 30.0,
        qps: float = 0.0,
        burst: int = 100,
    ) -> None:
        self._info = info
        self._limiter = RateLimiter(qps, burst)
        self._base = info.server.rstrip("/")
        self._headers = {
            "Accept": "application/json",
            "User-Agent": "moorage-operator",
            **info.as_http_headers(),
        }
        self._ssl = _ssl_context(info)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def default_namespace(self) -> str | None:
        return self._info.default_namespace

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def send(self, request: Request) -> dict[str, Any] | None:
        """One call; the decoded answer, None for 404 on DELETE; raises :class:`ApiError`."""
        headers = {"Content-Type": request.content_type} if request.content_type else {}
        await self._limiter.wait()
        async with self._client().request(
            request.method,
            self._base + request.path,
            params=request.params,
            data=request.body,
            headers=headers,
        ) as response:
            raw = await response.read()
            try:
                body = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                body = {"message": raw.decode(errors="replace")[:500]}
            if response.status == 404 and request.method == "DELETE":
                return None
            if response.status >= 400:
                after = response.headers.get("Retry-After")
                raise ApiError(
                    response.status,
                    body if isinstance(body, dict) else {"message": str(body)},
                    retry_after=float(after) if after and after.isdigit() else None,
                )
            return body if isinstance(body, dict) else {}

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.send(apply_request(obj))

    async def delete(self, target: ObjectRef) -> None:
        await self.send(delete_request(target))

    async def patch_status(self, isvc: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        await self.send(status_request(isvc, patch))

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self.send(
                Request("GET", object_path(kind, namespace, name), {}, None, None)
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = obj.get("metadata") or {}
        return await self.send(
            Request(
                "POST",
                object_path(obj["kind"], meta.get("namespace")),
                {},
                "application/json",
                orjson.dumps(obj),
            )
        )

    async def merge(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of ``obj`` (with ``metadata.resourceVersion`` in it, the API
        server refuses it with 409 when the object changed since that version)."""
        meta = obj.get("metadata") or {}
        return await self.send(
            Request(
                "PATCH",
                object_path(obj["kind"], meta.get("namespace"), meta["name"]),
                {},
                "application/merge-patch+json",
                orjson.dumps(obj),
            )
        )
