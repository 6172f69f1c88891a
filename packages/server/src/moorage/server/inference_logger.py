"""The inference logger: CloudEvents copies of requests and responses, posted to a sink.

What KServe's agent sidecar does for an InferenceService with a ``logger`` spec, inside the
server process and for REST and gRPC alike. Configuration mirrors the agent's flags
(``--log-url``, ``--log-mode``, ``--source-uri``, ``--inference-service``, ``--namespace``,
``--endpoint``, ``--component``, ``--metadata-headers``, ``--logger-ca-cert-file``,
``--logger-tls-skip-verify``; moorage spells them ``--logger_url`` ... and accepts both).

Each event is a CloudEvents 1.0 HTTP POST in binary content mode: the body is the request (or
response) as JSON (v2 tensors as OIP JSON, v1 bodies as they are, raw bodies as bytes), and the
attributes are headers: ``ce-specversion: 1.0``, ``ce-id`` (the request id, shared by the
request and the response event), ``ce-type`` (``org.kubeflow.serving.inference.request`` /
``.response``), ``ce-source``, ``ce-time``, and KServe's extensions ``ce-inferenceservicename``,
``ce-namespace``, ``ce-component``, ``ce-endpoint`` and ``ce-metadata`` (JSON object: each of
``metadataHeaders`` present on the request -> list of its values). Moorage adds
``ce-modelname``. Values are percent-encoded as the CloudEvents HTTP binding requires (space,
``"``, ``%`` and anything outside printable ASCII), so ``ce-metadata`` reads
``{%22X-Tenant%22:[%22acme%22]}`` on the wire; CloudEvents SDKs decode it. A failed
inference logs its error body (``{"error", "code"}``) as the response.

It never blocks or fails the inference path: the hooks only put the event on a bounded queue (a
full queue drops it). Requests are encoded when they arrive (the model's stages may change them
in place); responses, which nothing changes after ``postprocess``, are encoded by the sender.
A few worker tasks deliver, retrying a failed delivery (connection error, timeout, 5xx, 408, 429)
a bounded number of times with exponential backoff and jitter (:mod:`moorage.core.retry`);
every event given up on counts in
``moorage_server_inference_logger_dropped_total{reason}``.

TLS (``https`` sinks): the CA bundle ``--logger_ca_cert_file`` (a relative name is looked up in
``/etc/tls/logger``, where KServe mounts the ``caBundle`` ConfigMap; a missing file logs a warning
and falls back to the system CAs, as KServe does), TLS 1.2 or newer, and
``--logger_tls_skip_verify`` to accept any certificate.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from moorage.core.config.server import ServerSettings
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.core.protocol.rest import encode_request, encode_response
from moorage.core.protocol.v1 import encode_v1_response
from moorage.core.retry import Backoff, retry_async
from moorage.server.dataplane import InferenceEvent
from moorage.server.errors import error_body, to_moorage_error
from moorage.server.metrics import LOGGER_DROPPED, LOGGER_EVENTS, LOGGER_RETRIES

__all__ = [
    "CE_REQUEST",
    "CE_RESPONSE",
    "LOGGER_CA_CERT_DIR",
    "InferenceLogger",
    "ce_header_value",
    "sink_ssl_context",
]

logger = logging.getLogger(__name__)

CE_REQUEST = "org.kubeflow.serving.inference.request"
CE_RESPONSE = "org.kubeflow.serving.inference.response"
#: Where KServe mounts the logger's CA bundle ConfigMap in the agent container.
LOGGER_CA_CERT_DIR = "/etc/tls/logger"

Mode = Literal["all", "request", "response"]
Kind = Literal["request", "response"]

_RETRY_STATUSES = frozenset({408, 429})


class _Undelivered(Exception):
    """A delivery that failed; ``retry``: whether trying again may help (5xx, 408, 429, I/O)."""

    def __init__(self, problem: str, *, retry: bool) -> None:
        super().__init__(problem)
        self.retry = retry


_BINARY_PARAMETERS = ("binary_data", "binary_data_size")


@dataclass(slots=True)
class _Pending:
    kind: Kind
    request_id: str
    model_name: str
    payload: Any
    error: BaseException | None
    metadata: dict[str, list[str]]
    time: str


#: CloudEvents HTTP binding (binary mode): attribute values are percent-encoded except printable
#: ASCII other than space, '"' and '%'.
_CE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def ce_header_value(value: str) -> str:
    """``value`` as a ``ce-*`` header value (percent-encoded UTF-8 where the binding asks)."""
    return urllib.parse.quote(value, safe=_CE_SAFE)


def sink_ssl_context(
    url: str, *, ca_cert_file: str | None, skip_verify: bool
) -> ssl.SSLContext | bool:
    """The ``verify`` argument for httpx: KServe's TLS rules for the logger sink."""
    if not url.lower().startswith("https://"):
        return True
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_cert_file:
        path = Path(ca_cert_file)
        if not path.is_absolute():
            path = Path(LOGGER_CA_CERT_DIR) / path
        if path.is_file():
            context.load_verify_locations(cafile=str(path))
        else:
            logger.warning("using https sink %s but could not find CA cert file %s", url, path)
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _json_only(tensors: Sequence[InferTensor]) -> list[InferTensor]:
    out = []
    for tensor in tensors:
        if any(p in tensor.parameters for p in _BINARY_PARAMETERS):
            params = {k: v for k, v in tensor.parameters.items() if k not in _BINARY_PARAMETERS}
            tensor = InferTensor(tensor.name, tensor.datatype, tensor.shape, tensor.data, params)
        out.append(tensor)
    return out


@dataclass(slots=True, frozen=True)
class _Encoded:
    body: bytes
    content_type: str


def encode_payload(payload: Any, error: BaseException | None = None) -> tuple[bytes, str]:
    """``(body, content type)`` of one logged request or response."""
    if error is not None:
        return error_body(to_moorage_error(error)), "application/json"
    if isinstance(payload, _Encoded):
        return payload.body, payload.content_type
    if isinstance(payload, InferRequest):
        request = InferRequest(
            payload.model_name,
            _json_only(payload.inputs),
            id=payload.id,
            parameters=payload.parameters,
            outputs=payload.outputs,
            model_version=payload.model_version,
        )
        body, _ = encode_request(request)
        return body, "application/json"
    if isinstance(payload, InferResponse):
        response = InferResponse(
            payload.model_name,
            _json_only(payload.outputs),
            id=payload.id,
            parameters=payload.parameters,
            model_version=payload.model_version,
        )
        body, _ = encode_response(response)
        return body, "application/json"
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), "application/octet-stream"
    if isinstance(payload, str):
        return payload.encode(), "text/plain; charset=utf-8"
    if isinstance(payload, dict):
        return encode_v1_response(payload), "application/json"
    return encode_v1_response(payload), "application/json"


class InferenceLogger:
    """An :class:`~moorage.server.dataplane.InferenceHook` posting CloudEvents to ``url``."""

    def __init__(
        self,
        url: str,
        *,
        mode: Mode = "all",
        source_uri: str = "http://localhost:8080/",
        inference_service: str = "",
        namespace: str = "",
        endpoint: str = "",
        component: str = "",
        metadata_headers: Sequence[str] = (),
        ca_cert_file: str | None = None,
        tls_skip_verify: bool = False,
        queue_size: int = 1000,
        workers: int = 5,
        retries: int = 2,
        timeout: float = 5.0,
        backoff: float = 0.1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.mode: Mode = mode
        self.source_uri = source_uri
        self.metadata_headers = [(h, h.lower()) for h in metadata_headers]
        self.queue_size = queue_size
        self.workers = workers
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._verify = sink_ssl_context(url, ca_cert_file=ca_cert_file, skip_verify=tls_skip_verify)
        self._transport = transport
        self._static_headers = {
            "ce-specversion": "1.0",
            "ce-source": ce_header_value(source_uri),
            "ce-inferenceservicename": ce_header_value(inference_service),
            "ce-namespace": ce_header_value(namespace),
            "ce-component": ce_header_value(component),
            "ce-endpoint": ce_header_value(endpoint),
        }
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> InferenceLogger | None:
        """The logger ``settings`` ask for (``None`` without ``--logger_url``)."""
        if not settings.logger_url:
            return None
        return cls(
            settings.logger_url,
            mode=settings.logger_mode,
            source_uri=settings.logger_source_uri or f"http://localhost:{settings.http_port}/",
            inference_service=settings.logger_inference_service,
            namespace=settings.logger_namespace,
            endpoint=settings.logger_endpoint,
            component=settings.logger_component,
            metadata_headers=settings.logger_metadata_headers,
            ca_cert_file=settings.logger_ca_cert_file,
            tls_skip_verify=settings.logger_tls_skip_verify,
            queue_size=settings.logger_queue_size,
            workers=settings.logger_workers,
            retries=settings.logger_retries,
            timeout=settings.logger_timeout_seconds,
        )

    # ------------------------------------------------------------------ hooks (event loop)
    def on_request(self, event: InferenceEvent) -> None:
        if event.request_id is None:
            # Both events of one inference share the id (and later hooks see it too).
            event.request_id = uuid.uuid4().hex
        if self.mode != "response":
            self._enqueue("request", event, event.request, None)

    def on_response(self, event: InferenceEvent) -> None:
        if self.mode != "request":
            self._enqueue("response", event, event.response, event.error)

    def _enqueue(
        self, kind: Kind, event: InferenceEvent, payload: Any, error: BaseException | None
    ) -> None:
        if self._closed:
            LOGGER_DROPPED.labels("shutdown").inc()
            return
        queue = self._queue
        if queue is None or self._loop is not asyncio.get_running_loop():
            queue = self._start()
        if queue.full():
            LOGGER_DROPPED.labels("queue_full").inc()
            return
        if kind == "request":
            # Encoded now: the model's stages may change the request objects in place.
            try:
                payload = _Encoded(*encode_payload(payload))
            except Exception as exc:
                self._encode_failed(kind, event.model_name, event.request_id, exc)
                return
        metadata: dict[str, list[str]] = {}
        for name, lower in self.metadata_headers:
            value = event.headers.get(lower)
            if value is not None:
                metadata[name] = [value if isinstance(value, str) else repr(value)]
        item = _Pending(
            kind,
            event.request_id or uuid.uuid4().hex,
            event.model_name,
            payload,
            error,
            metadata,
            _now(),
        )
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            LOGGER_DROPPED.labels("queue_full").inc()

    # ------------------------------------------------------------------ delivery
    def _start(self) -> asyncio.Queue[_Pending]:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.queue_size)
        self._client = httpx.AsyncClient(
            verify=self._verify,
            timeout=self.timeout,
            transport=self._transport,
            limits=httpx.Limits(max_connections=self.workers),
        )
        self._tasks = [
            asyncio.create_task(self._work(), name=f"moorage-inference-logger-{i}")
            for i in range(self.workers)
        ]
        return self._queue

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            item = await queue.get()
            try:
                await self._deliver(item)
            except Exception:  # never let a worker die
                logger.exception("inference logger failed on event %s", item.request_id)
                LOGGER_DROPPED.labels("send_failed").inc()
            finally:
                queue.task_done()

    def _encode_failed(
        self, kind: Kind, model_name: str, request_id: str | None, exc: Exception
    ) -> None:
        logger.warning(
            "inference logger cannot encode the %s of %s: %s",
            kind,
            model_name,
            exc,
            extra={"request_id": request_id, "model": model_name},
        )
        LOGGER_DROPPED.labels("encode_failed").inc()

    async def _deliver(self, item: _Pending) -> None:
        try:
            body, content_type = encode_payload(item.payload, item.error)
        except Exception as exc:
            self._encode_failed(item.kind, item.model_name, item.request_id, exc)
            return
        headers = dict(self._static_headers)
        headers["ce-id"] = ce_header_value(item.request_id)
        headers["ce-type"] = CE_REQUEST if item.kind == "request" else CE_RESPONSE
        headers["ce-time"] = item.time
        headers["ce-modelname"] = ce_header_value(item.model_name)
        headers["ce-metadata"] = ce_header_value(orjson.dumps(item.metadata).decode())
        headers["content-type"] = content_type
        client = self._client
        assert client is not None

        async def send() -> None:
            try:
                response = await client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise _Undelivered(f"{type(exc).__name__}: {exc}", retry=True) from exc
            if not response.is_success:
                status = response.status_code
                raise _Undelivered(
                    f"HTTP {status}", retry=status >= 500 or status in _RETRY_STATUSES
                )

        try:
            await retry_async(
                send,
                Backoff(attempts=self.retries + 1, initial=self.backoff),
                retry_on=lambda exc: isinstance(exc, _Undelivered) and exc.retry,
                on_retry=lambda *_: LOGGER_RETRIES.inc(),
            )
        except _Undelivered as exc:
            problem = str(exc)
        else:
            LOGGER_EVENTS.labels(item.kind).inc()
            return
        LOGGER_DROPPED.labels("send_failed").inc()
        logger.warning(
            "inference logger could not deliver the %s event of %s to %s: %s",
            item.kind,
            item.model_name,
            self.url,
            problem,
            extra={"request_id": item.request_id, "model": item.model_name},
        )

    # ------------------------------------------------------------------ lifecycle
    @property
    def pending(self) -> int:
        """Events queued and not yet taken by a worker."""
        return self._queue.qsize() if self._queue is not None else 0

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was delivered or given up on; ``False`` on timeout."""
        if self._queue is None or self._loop is not asyncio.get_running_loop():
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop accepting events, deliver what is queued for up to ``timeout`` s, close."""
        self._closed = True
        if self._queue is None or self._loop is not asyncio.get_running_loop():
            return
        if not await self.flush(timeout):
            logger.warning("inference logger: %d events not delivered at shutdown", self.pending)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        left = self._queue.qsize()
        if left:
            LOGGER_DROPPED.labels("shutdown").inc(left)
        if self._client is not None:
            await self._client.aclose()
        self._tasks = []
        self._queue = None


def _now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}Z"
