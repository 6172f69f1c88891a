"""Prometheus metrics of the model server, and ``GET /metrics``.

Collectors are module-level. Inference metrics are labelled ``model`` and ``protocol``
(``v1``, ``v2`` or ``grpc-v2``: KServe's ``PredictorProtocol`` names):

==========================================================  =========  =========================
name                                                        type       labels
==========================================================  =========  =========================
``moorage_server_requests_total``                           counter    model, protocol, status
``moorage_server_request_duration_seconds``                 histogram  model, protocol
``moorage_server_preprocess_duration_seconds``              histogram  model, protocol
``moorage_server_predict_duration_seconds``                 histogram  model, protocol
``moorage_server_postprocess_duration_seconds``             histogram  model, protocol
``moorage_server_explain_duration_seconds``                 histogram  model, protocol
``request_preprocess_seconds`` (and ``_predict_``,          histogram  model_name
``_postprocess_``, ``_explain_``: KServe's names)
``moorage_server_http_requests_total``                      counter    method, route, status
``moorage_server_http_request_duration_seconds``            histogram  method, route
``moorage_server_grpc_requests_total``                      counter    method, code
``moorage_server_grpc_request_duration_seconds``            histogram  method
``moorage_server_inference_logger_events_total``            counter    type
``moorage_server_inference_logger_dropped_total``           counter    reason
``moorage_server_inference_logger_retries_total``           counter
``moorage_server_time_to_first_token_seconds``              histogram  model
``moorage_server_inter_token_latency_seconds``              histogram  model
``moorage_server_prompt_tokens_total``                      counter    model
``moorage_server_generation_tokens_total``                  counter    model
``moorage_server_generation_requests_running``              gauge      model
``moorage_server_generation_requests_waiting``              gauge      model
==========================================================  =========  =========================

``status`` is the HTTP status of the outcome (``200``, ``400``, ``503``, ...), for gRPC too;
``route`` is the matched route template (``/v2/models/{model_name}/infer``), so labels stay bounded.

**Several workers** (``--workers N``). Each worker is a process with its own counters. When
``PROMETHEUS_MULTIPROC_DIR`` names a directory, prometheus-client's multiprocess mode is on:
every worker writes its samples there and ``/metrics``, whichever worker answers, reports the sum
over all of them; the server clears stale sample files from it at startup. Without it each
worker reports only its own samples, so a scrape sees one worker at random (the server logs a
warning at startup when ``--workers`` > 1). The variable must be set before the server starts
(prometheus-client reads it when it is imported), as with gunicorn.

**Tallies.** The request path observes 18 values a request (counters, bucket counts and sums
of the inference and transport metrics). Instead of taking prometheus-client's lock for each,
it adds them, under one lock, to plain per-series tallies; a collection of these metrics (a
scrape, ``REGISTRY.get_sample_value``, any registry read) first adds the tallies to
prometheus-client's values, so every read sees every request that finished before it. In
multiprocess mode the values live in the sample files other workers read, and are written at
once, as before.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.values import MutexValue
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router

from moorage.core.errors import MoorageError
from moorage.core.http2.grpcwire import StatusCode
from moorage.server.dataplane import InferenceEvent

if TYPE_CHECKING:
    import grpc

__all__ = [
    "GenerationMetrics",
    "MetricsHook",
    "clear_multiprocess_dir",
    "metrics_router",
    "observe_grpc",
    "observe_http",
    "protocol_label",
    "render_metrics",
]

logger = logging.getLogger(__name__)

#: Latency buckets from 0.5 ms to 60 s (model servers answer in well under a millisecond to
#: tens of seconds; prometheus-client's defaults start at 5 ms).
BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
)  # fmt: skip

#: Held while the request path tallies observations and while tallies are added to the values.
_tally_lock = threading.Lock()
#: The tallies holding observations not yet added to prometheus-client's values.
_pending: list[_Buckets | _Count] = []


def flush_tallies() -> None:
    """Add what the tallies hold to prometheus-client's values (before any collection)."""
    with _tally_lock:
        for tally in _pending:
            tally.apply()
        _pending.clear()


class _TalliedCounter(Counter):
    """A counter whose collection first adds the pending tallies (see the module doc)."""

    def collect(self) -> Iterable[Metric]:
        flush_tallies()
        return super().collect()


class _TalliedHistogram(Histogram):
    """A histogram whose collection first adds the pending tallies (see the module doc)."""

    def collect(self) -> Iterable[Metric]:
        flush_tallies()
        return super().collect()


class _Buckets:
    """Observations of histogram children with the same buckets, observed together: a count
    per bucket and a sum, added to each child's values when collected."""

    __slots__ = ("_bounds", "_counts", "_pending", "_sum", "_targets")

    def __init__(self, bounds: list[float], targets: list[tuple[Any, list[Any]]]) -> None:
        self._bounds = bounds
        self._targets = targets
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._pending = False

    def observe(self, amount: float) -> None:
        """With ``_tally_lock`` held."""
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount
        if not self._pending:
            self._pending = True
            _pending.append(self)

    def apply(self) -> None:
        counts = self._counts
        for total, buckets in self._targets:
            total.inc(self._sum)
            for index, count in enumerate(counts):
                if count:
                    buckets[index].inc(count)
        self._counts = [0] * len(counts)
        self._sum = 0.0
        self._pending = False


class _Count:
    """Increments of a counter child, added to its value when collected."""

    __slots__ = ("_count", "_pending", "_value")

    def __init__(self, value: Any) -> None:
        self._value = value
        self._count = 0
        self._pending = False

    def inc(self) -> None:
        """With ``_tally_lock`` held."""
        self._count += 1
        if not self._pending:
            self._pending = True
            _pending.append(self)

    def apply(self) -> None:
        self._value.inc(self._count)
        self._count = 0
        self._pending = False


def _observer(*children: Any) -> Callable[[float], None]:
    """One call, made with ``_tally_lock`` held, that records ``amount`` in each of
    ``children`` (labelled histogram children with the same buckets) as their ``observe``
    would: in a tally (:class:`_Buckets`) when their values are prometheus-client's in-process
    ones, otherwise (multiprocess mode, another prometheus-client) with their own ``observe``.
    """
    try:
        bounds = list(children[0]._upper_bounds)
        targets = [(child._sum, child._buckets) for child in children]
        if any(list(child._upper_bounds) != bounds for child in children):
            raise AttributeError("different buckets")
        if any(
            type(value) is not MutexValue
            for total, buckets in targets
            for value in [total, *buckets]
        ):
            raise AttributeError("values kept elsewhere")
    except AttributeError:
        observes = [child.observe for child in children]

        def observe_each(amount: float) -> None:
            for call in observes:
                call(amount)

        return observe_each
    return _Buckets(bounds, targets).observe


def _incrementer(child: Any) -> Callable[[], None]:
    """``child.inc`` (a labelled counter child), made with ``_tally_lock`` held, through a
    tally (:class:`_Count`) when its value is prometheus-client's in-process one (see
    :func:`_observer`)."""
    value = getattr(child, "_value", None)
    if type(value) is not MutexValue:
        return functools.partial(child.inc, 1)
    return _Count(value).inc


_LABELS = ("model", "protocol")

REQUESTS = _TalliedCounter(
    "moorage_server_requests_total",
    "Inference requests by outcome (HTTP status; gRPC outcomes use the equivalent status).",
    [*_LABELS, "status"],
)
REQUEST_DURATION = _TalliedHistogram(
    "moorage_server_request_duration_seconds",
    "Inference latency: preprocess + predict/explain + postprocess.",
    _LABELS,
    buckets=BUCKETS,
)
STAGE_DURATIONS = {
    stage: _TalliedHistogram(
        f"moorage_server_{stage}_duration_seconds",
        f"Latency of the model's {stage} stage.",
        _LABELS,
        buckets=BUCKETS,
    )
    for stage in ("preprocess", "predict", "postprocess", "explain")
}
#: KServe's histograms (``kserve/metrics.py``), same names and label, for existing dashboards.
KSERVE_STAGE_DURATIONS = {
    stage: _TalliedHistogram(
        f"request_{stage}_seconds",
        f"{stage} request latency (KServe-compatible name)",
        ["model_name"],
        buckets=BUCKETS,
    )
    for stage in ("preprocess", "predict", "postprocess", "explain")
}

HTTP_REQUESTS = _TalliedCounter(
    "moorage_server_http_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = _TalliedHistogram(
    "moorage_server_http_request_duration_seconds",
    "HTTP request latency, from the first byte received to the last byte sent.",
    ["method", "route"],
    buckets=BUCKETS,
)
GRPC_REQUESTS = _TalliedCounter(
    "moorage_server_grpc_requests_total",
    "gRPC calls by method and status code.",
    ["method", "code"],
)
GRPC_DURATION = _TalliedHistogram(
    "moorage_server_grpc_request_duration_seconds",
    "gRPC call latency.",
    ["method"],
    buckets=BUCKETS,
)

LOGGER_EVENTS = Counter(
    "moorage_server_inference_logger_events_total",
    "CloudEvents the inference logger delivered to its sink, by type (request/response).",
    ["type"],
)
LOGGER_DROPPED = Counter(
    "moorage_server_inference_logger_dropped_total",
    "CloudEvents the inference logger gave up on: queue_full, send_failed, encode_failed, "
    "shutdown.",
    ["reason"],
)
LOGGER_RETRIES = Counter(
    "moorage_server_inference_logger_retries_total",
    "Retried deliveries of inference logger CloudEvents.",
)

#: Token latencies: 1 ms to 60 s (a tiny model on CPU answers in milliseconds, a large one in
#: seconds).
TOKEN_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
)  # fmt: skip
TIME_TO_FIRST_TOKEN = Histogram(
    "moorage_server_time_to_first_token_seconds",
    "Generation: seconds from a request's admission to its first token.",
    ["model"],
    buckets=TOKEN_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "moorage_server_inter_token_latency_seconds",
    "Generation: seconds between two tokens of one sequence.",
    ["model"],
    buckets=TOKEN_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "moorage_server_prompt_tokens", "Generation: prompt tokens processed.", ["model"]
)
GENERATION_TOKENS = Counter(
    "moorage_server_generation_tokens", "Generation: tokens generated.", ["model"]
)
RUNNING_REQUESTS = Gauge(
    "moorage_server_generation_requests_running",
    "Generation: sequences in the running batch.",
    ["model"],
    multiprocess_mode="livesum",
)
WAITING_REQUESTS = Gauge(
    "moorage_server_generation_requests_waiting",
    "Generation: sequences waiting to join the batch.",
    ["model"],
    multiprocess_mode="livesum",
)


class GenerationMetrics:
    """The Prometheus observer of generating backends (:data:`moorage.server.llm.observers`)."""

    def first_token(self, model: str, seconds: float) -> None:
        TIME_TO_FIRST_TOKEN.labels(model).observe(seconds)

    def next_token(self, model: str, seconds: float) -> None:
        INTER_TOKEN_LATENCY.labels(model).observe(seconds)

    def finished(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        PROMPT_TOKENS.labels(model).inc(prompt_tokens)
        GENERATION_TOKENS.labels(model).inc(completion_tokens)

    def queue(self, model: str, running: int, waiting: int) -> None:
        RUNNING_REQUESTS.labels(model).set(running)
        WAITING_REQUESTS.labels(model).set(waiting)


def protocol_label(event: InferenceEvent) -> str:
    """``v1``, ``v2`` or ``grpc-v2`` for an inference."""
    return "grpc-v2" if event.transport == "grpc" else event.protocol


class _ModelSeries:
    """The labelled children of one (model, protocol), resolved once: per stage, one observer
    of moorage's histogram and KServe's."""

    __slots__ = ("duration", "stages")

    def __init__(self, model: str, protocol: str) -> None:
        self.duration = _observer(REQUEST_DURATION.labels(model, protocol))
        self.stages = {
            stage: _observer(h.labels(model, protocol), KSERVE_STAGE_DURATIONS[stage].labels(model))
            for stage, h in STAGE_DURATIONS.items()
        }


class MetricsHook:
    """An :class:`~moorage.server.dataplane.InferenceHook` recording the inference metrics."""

    #: The tallies are kept under one lock (see ``DataPlane.infer_blocking``: worker threads).
    thread_safe = True

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _ModelSeries] = {}
        self._counters: dict[tuple[str, str, int], Callable[[], None]] = {}

    def on_request(self, event: InferenceEvent) -> None:
        return None

    def on_response(self, event: InferenceEvent) -> None:
        protocol = "grpc-v2" if event.transport == "grpc" else event.protocol
        key = (event.model_name, protocol)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _ModelSeries(*key)
        error = event.error
        if error is None:
            status = 200
        elif isinstance(error, NotImplementedError):
            status = 501
        else:
            status = int(error.status) if isinstance(error, MoorageError) else 500
        counter_key = (event.model_name, protocol, status)
        counter = self._counters.get(counter_key)
        if counter is None:
            counter = self._counters[counter_key] = _incrementer(REQUESTS.labels(*key, str(status)))
        with _tally_lock:
            counter()
            if error is None:
                stages = series.stages
                duration = 0.0
                for stage, seconds in event.timings.items():
                    duration += seconds
                    observe = stages.get(stage)
                    if observe is not None:
                        observe(seconds)
                series.duration(duration)


# ----------------------------------------------------------------------------- transports
_http_children: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    """Record one HTTP request (called by the access-log middleware)."""
    key = (method, route, status)
    children = _http_children.get(key)
    if children is None:
        children = _http_children[key] = (
            _incrementer(HTTP_REQUESTS.labels(method, route, str(status))),
            _observer(HTTP_DURATION.labels(method, route)),
        )
    with _tally_lock:
        children[0]()
        children[1](seconds)


_grpc_children: dict[
    tuple[str, StatusCode | grpc.StatusCode], tuple[Callable[[], None], Callable[[float], None]]
] = {}


def observe_grpc(method: str, code: StatusCode | grpc.StatusCode, seconds: float) -> None:
    """Record one gRPC call (called by the gRPC observability interceptor)."""
    key = (method, code)
    children = _grpc_children.get(key)
    if children is None:
        children = _grpc_children[key] = (
            _incrementer(GRPC_REQUESTS.labels(method, code.name)),
            _observer(GRPC_DURATION.labels(method)),
        )
    with _tally_lock:
        children[0]()
        children[1](seconds)


# ----------------------------------------------------------------------------- exposition
def render_metrics(multiprocess_dir: str | None = None) -> bytes:
    """The text exposition: this process's registry, or every worker's in multiprocess mode."""
    if multiprocess_dir:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def metrics_router(*, multiprocess_dir: str | None = None) -> Router:
    """``GET /metrics`` (Prometheus text format)."""
    router = Router()

    async def metrics(request: Request) -> Response:
        start = time.perf_counter()
        body = render_metrics(multiprocess_dir)
        logger.debug("rendered metrics in %.1f ms", (time.perf_counter() - start) * 1000)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    router.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return router


_SAMPLE_FILE_PREFIXES = ("counter_", "gauge_", "histogram_", "summary_")


def clear_multiprocess_dir(path: str) -> int:
    """Remove stale prometheus-client sample files (``counter_<pid>.db``, ...) from ``path``.

    Only files named as prometheus-client names them, of other processes, are touched; a missing
    directory is created. Returns how many files went.
    """
    removed = 0
    directory = Path(path)
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        return 0
    for entry in _sample_files(directory.iterdir()):
        try:
            entry.unlink()
            removed += 1
        except OSError as exc:
            logger.warning("cannot remove stale metrics file %s: %s", entry, exc)
    return removed


def _sample_files(entries: Iterable[Path]) -> Iterable[Path]:
    # This process's own files are live (collectors without labels write at import).
    own = f"_{os.getpid()}.db"
    for entry in entries:
        name = entry.name
        if (
            name.endswith(".db")
            and name.startswith(_SAMPLE_FILE_PREFIXES)
            and not name.endswith(own)
        ):
            yield entry
