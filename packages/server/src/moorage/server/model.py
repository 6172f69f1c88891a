"""The ``Model`` base class: KServe's custom-model lifecycle, sync or async.

A KServe custom model ports by changing its imports::

    from moorage.server import Model, ModelServer

    class MyModel(Model):
        def load(self) -> bool:
            self.model = ...
            self.ready = True
            return self.ready

        def predict(self, payload, headers=None, response_headers=None):
            ...

Every stage (``preprocess``, ``predict``, ``postprocess``, ``explain``) may be ``def`` or
``async def``; which one is decided once, when the model is registered (:class:`BoundModel`),
never by sniffing awaitables per call. ``payload`` is an
:class:`~moorage.core.protocol.InferRequest` for v2 (REST and gRPC) and the decoded JSON ``dict``
for v1. ``headers`` are the HTTP headers (lower-cased) or the gRPC metadata. A stage that names a
``response_headers`` parameter receives a dict it may fill; those headers go back to the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BoundModel", "Model", "PredictorConfig", "Stage", "SyncMode"]

logger = logging.getLogger(__name__)

SyncMode = Literal["auto", "thread", "inline"]
Headers = dict[str, str]

#: In ``auto`` mode a sync stage runs inline on the event loop while its smoothed CPU time stays
#: below this (and its wall time below ``4 x`` this); otherwise it moves to a worker thread.
#: Dispatching to a thread costs ~50-100 µs, so calls cheaper than this are faster inline and
#: block the loop too briefly to matter. CPU time, not wall time, keeps the choice stable on a
#: busy machine; the wall-time bound still sends code that waits (I/O, sleeps) to a thread.
INLINE_BUDGET_S = 0.001
_INLINE_WALL_S = 4 * INLINE_BUDGET_S
#: ``auto`` mode runs the first calls in a thread to measure them before trusting them inline.
_WARMUP_CALLS = 4
_SAMPLE_EVERY = 8
_EWMA_WEIGHT = 0.2


@dataclass(slots=True)
class PredictorConfig:
    """Where a transformer forwards ``predict`` (KServe's ``PredictorConfig``)."""

    predictor_host: str | None = None
    predictor_protocol: str = "v1"
    predictor_use_ssl: bool = False
    predictor_request_timeout_seconds: int = 600


class Model:
    """A servable model. Override ``load`` and ``predict``; the other stages are optional.

    Attributes match KServe's ``kserve.Model``: ``name``, ``ready``, ``protocol``,
    ``predictor_host``, ``timeout``, ``use_ssl``, ``explainer_host``, ``enable_latency_logging``.
    ``version`` (moorage) names the one version this model answers to; ``None`` accepts any.
    ``sync_mode`` (moorage) overrides the server's ``--sync_mode`` for this model.
    """

    version: str | None = None
    sync_mode: SyncMode | None = None

    def __init__(
        self,
        name: str,
        predictor_config: PredictorConfig | None = None,
        return_response_headers: bool = False,
    ) -> None:
        self.name = name
        self.ready = False
        self.return_response_headers = return_response_headers
        config = predictor_config or PredictorConfig()
        self.predictor_config = config
        self.protocol = config.predictor_protocol
        self.predictor_host = config.predictor_host
        self.timeout = config.predictor_request_timeout_seconds
        self.use_ssl = config.predictor_use_ssl
        self.explainer_host: str | None = None
        self.enable_latency_logging = False

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> bool:
        """Load the model's weights; set and return ``self.ready``."""
        self.ready = True
        return self.ready

    def start(self) -> None:
        """Called when the server starts serving this model (after ``load``)."""

    def stop(self) -> None:
        """Called when the model is unloaded or the server stops."""
        self.ready = False

    async def healthy(self) -> bool:
        """Whether the model can serve now (``GET .../ready``)."""
        return self.ready

    # ------------------------------------------------------------------ stages
    def preprocess(self, payload: Any, headers: Headers | None = None) -> Any:
        """Turn the request into what ``predict`` takes (identity by default)."""
        return payload

    async def predict(
        self,
        payload: Any,
        headers: Headers | None = None,
        response_headers: Headers | None = None,
    ) -> Any:
        """Run the model. The default forwards to ``predictor_host`` (transformer mode, see
        :mod:`moorage.server.predictor`)."""
        if not self.predictor_host:
            raise NotImplementedError("Could not find predictor_host.")
        # Imported here: httpx and the gRPC client stubs cost start-up time most servers skip.
        from moorage.server.predictor import pooled_client

        client = pooled_client(
            self.predictor_host,
            protocol=self.protocol,
            use_ssl=bool(self.use_ssl),
            timeout=float(self.timeout),
        )
        return await client.infer(self.name, payload, headers)

    def postprocess(
        self,
        result: Any,
        headers: Headers | None = None,
        response_headers: Headers | None = None,
    ) -> Any:
        """Turn ``predict``'s result into the response (identity by default)."""
        return result

    async def explain(self, payload: Any, headers: Headers | None = None) -> Any:
        """Explain a prediction (v1 ``:explain``). The default forwards to ``explainer_host``
        (``http(s)://<explainer_host>/v1/models/<name>:explain``), as KServe's does."""
        if not self.explainer_host:
            raise NotImplementedError("Could not find explainer_host.")
        from moorage.server.predictor import pooled_client

        client = pooled_client(
            self.explainer_host,
            protocol="v1",
            use_ssl=bool(self.use_ssl),
            timeout=float(self.timeout),
            role="explainer",
        )
        return await client.explain(self.name, payload, headers)

    # ------------------------------------------------------------------ metadata
    def get_input_types(self) -> list[dict[str, Any]]:
        """v2 metadata inputs: ``[{"name", "datatype", "shape"}]``."""
        return []

    def get_output_types(self) -> list[dict[str, Any]]:
        """v2 metadata outputs: ``[{"name", "datatype", "shape"}]``."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, ready={self.ready})"


class Stage:
    """One lifecycle method of one model, inspected once: async or sync, which arguments."""

    __slots__ = (
        "_arity", "_calls", "_cpu", "_inline", "_mode", "_seen", "_wall", "fn", "is_async", "name",
    )  # fmt: skip

    def __init__(self, fn: Callable[..., Any], name: str, mode: SyncMode) -> None:
        self.fn = fn
        self.name = name
        self.is_async = inspect.iscoroutinefunction(fn)
        # 1: fn(value); 2: fn(value, headers); 3: fn(value, headers, response_headers=...)
        self._arity = 3 if _accepts(fn, "response_headers") else _positional_count(fn)
        self._mode = mode
        self._inline = mode == "inline"
        self._cpu = 0.0
        self._wall = 0.0
        self._seen = 0
        self._calls = 0

    async def __call__(self, value: Any, headers: Headers, response_headers: Headers) -> Any:
        fn = self.fn
        if self.is_async:
            if self._arity == 3:
                return await fn(value, headers, response_headers=response_headers)
            return await (fn(value, headers) if self._arity == 2 else fn(value))
        if self._inline:
            if self._mode == "inline":
                return self._call(value, headers, response_headers)
            # Inline calls keep being measured, one in _SAMPLE_EVERY, to notice a slowdown.
            self._calls += 1
            if self._calls % _SAMPLE_EVERY:
                return self._call(value, headers, response_headers)
            return self._timed(value, headers, response_headers)
        call = self._call if self._mode == "thread" else self._timed
        return await asyncio.to_thread(call, value, headers, response_headers)

    def call_blocking(self, value: Any, headers: Headers, response_headers: Headers) -> Any:
        """Call a sync stage in the calling thread (a worker thread, never the event loop)."""
        return self._call(value, headers, response_headers)

    def _call(self, value: Any, headers: Headers, response_headers: Headers) -> Any:
        if self._arity == 3:
            return self.fn(value, headers, response_headers=response_headers)
        return self.fn(value, headers) if self._arity == 2 else self.fn(value)

    def _timed(self, value: Any, headers: Headers, response_headers: Headers) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return self._call(value, headers, response_headers)
        finally:
            self._measure(time.perf_counter() - wall, time.thread_time() - cpu)

    def _measure(self, wall: float, cpu: float) -> None:
        # Races between threads only blur the averages; they cannot break anything.
        self._seen += 1
        if self._seen == 1:
            self._wall, self._cpu = wall, cpu
        else:
            self._wall += _EWMA_WEIGHT * (wall - self._wall)
            self._cpu += _EWMA_WEIGHT * (cpu - self._cpu)
        self._inline = (
            self._seen >= _WARMUP_CALLS
            and self._cpu < INLINE_BUDGET_S
            and self._wall < _INLINE_WALL_S
        )

    @property
    def runs_inline(self) -> bool:
        """Whether the next call runs on the event loop (async, or sync measured cheap)."""
        return self._inline or self.is_async


class BoundModel:
    """A registered model with its stages inspected, plus its admission counter."""

    __slots__ = (
        "_lock", "explain", "inflight", "model", "postprocess", "predict", "preprocess",
        "sync_only",
    )  # fmt: skip

    #: ``preprocess`` / ``postprocess`` are ``None`` when the model keeps the identity default,
    #: so the data plane skips them instead of calling a no-op per request.
    preprocess: Stage | None
    postprocess: Stage | None

    def __init__(self, model: Model, *, sync_mode: SyncMode = "auto") -> None:
        if not isinstance(model, Model):
            raise TypeError(
                f"{model!r} is not a moorage.server.Model; subclass it to serve a custom model"
            )
        if not getattr(model, "name", None):
            raise ValueError("Failed to register model, model.name must be provided.")
        mode: SyncMode = model.sync_mode or sync_mode
        self.model = model
        cls = type(model)
        self.preprocess = (
            None
            if cls.preprocess is Model.preprocess and "preprocess" not in vars(model)
            else Stage(model.preprocess, "preprocess", mode)
        )
        self.predict = Stage(model.predict, "predict", mode)
        self.postprocess = (
            None
            if cls.postprocess is Model.postprocess and "postprocess" not in vars(model)
            else Stage(model.postprocess, "postprocess", mode)
        )
        self.explain = Stage(model.explain, "explain", mode)
        #: Whether ``predict`` and the non-identity pre/postprocess are all sync functions (so a
        #: worker thread can run an inference without the event loop).
        self.sync_only = not any(
            s.is_async for s in (self.preprocess, self.predict, self.postprocess) if s is not None
        )
        self.inflight = 0
        # The gRPC worker threads and the event loop both admit requests.
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.inflight += 1

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    @property
    def name(self) -> str:
        return self.model.name


def _accepts(fn: Callable[..., Any], parameter: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if parameter in params:
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 2
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return 2 if sum(p.kind in kinds for p in params) >= 2 else 1
