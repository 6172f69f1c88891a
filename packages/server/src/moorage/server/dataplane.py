"""``DataPlane``: the one transport-agnostic implementation of every server operation.

REST (``moorage.server.rest``) and gRPC (``moorage.server.grpc``) only parse bytes into core
types, call a method here and render its result; everything else (model lookup, readiness,
admission control, the model's stages, translating the model's exceptions) happens here once.

Hook point: :attr:`DataPlane.hooks` is a list of :class:`InferenceHook` objects; each sees an
:class:`InferenceEvent` before the model runs and after it returns or fails, with per-stage
timings. Metrics, access/latency logs and the CloudEvents inference logger plug in there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from moorage.core.errors import (
    InferenceError,
    ModelNotFound,
    MoorageError,
    Overloaded,
)
from moorage.core.protocol import InferRequest, InferResponse
from moorage.server._ids import uuid4_text
from moorage.server._version import __version__
from moorage.server.batcher import Batcher
from moorage.server.model import BoundModel, Headers
from moorage.server.repository import ModelRepository

__all__ = [
    "DataPlane",
    "InferenceEvent",
    "InferenceHook",
    "LatencyLogger",
    "Verb",
    "request_id_var",
]

logger = logging.getLogger(__name__)

Verb = Literal["predict", "explain"]
Protocol_ = Literal["v1", "v2"]
Transport = Literal["rest", "grpc"]

#: The current request's ``x-request-id`` (``None`` outside a request or when none was sent).
request_id_var: ContextVar[str | None] = ContextVar("moorage_request_id", default=None)

SERVER_NAME = "moorage"
EXTENSIONS = ["model_repository_extension"]


@dataclass(slots=True)
class InferenceEvent:
    """What a hook sees of one inference. ``timings`` maps stage name -> seconds."""

    model_name: str
    verb: Verb
    protocol: Protocol_
    transport: Transport
    headers: Headers
    request: Any
    request_id: str | None
    started: float
    response: Any = None
    response_headers: Headers = field(default_factory=dict)
    error: BaseException | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds from admission to the end of ``postprocess`` (sum of the stages)."""
        return sum(self.timings.values())


class InferenceHook(Protocol):
    """Observes inferences. Both methods run on the event loop: keep them non-blocking.

    A hook with a true ``thread_safe`` attribute may also be called from the gRPC worker
    threads (:meth:`DataPlane.infer_blocking`); without it, those inferences run on the loop.
    """

    def on_request(self, event: InferenceEvent) -> None: ...

    def on_response(self, event: InferenceEvent) -> None: ...


class LatencyLogger:
    """KServe's ``--enable_latency_logging`` line, logged at DEBUG to keep the hot path cheap."""

    thread_safe = True

    _log = logging.getLogger("moorage.server.latency")

    def on_request(self, event: InferenceEvent) -> None:
        return None

    def on_response(self, event: InferenceEvent) -> None:
        if self._log.isEnabledFor(logging.DEBUG):
            ms = {k: round(v * 1000, 3) for k, v in event.timings.items()}
            self._log.debug(
                "requestId: %s, preprocess_ms: %s, %s_ms: %s, postprocess_ms: %s",
                event.request_id or "N.A.",
                ms.get("preprocess"),
                event.verb,
                ms.get(event.verb),
                ms.get("postprocess"),
                extra={"model": event.model_name, "request_id": event.request_id},
            )


class DataPlane:
    """Every operation of the server, independent of REST and gRPC."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        max_inflight: int = 1024,
        hooks: list[InferenceHook] | None = None,
        batcher: Batcher | None = None,
    ) -> None:
        self.repository = repository
        self.max_inflight = max_inflight
        #: Joins concurrent predicts of a model (``--enable_batcher``); None: no batching.
        self.batcher = batcher
        #: Inference hooks, called in order; append to add one (metrics, loggers, ...).
        self.hooks: list[InferenceHook] = list(hooks or [])
        self.stopping = False

    # ------------------------------------------------------------------ health & metadata
    async def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        """Ready when not shutting down and every registered model is healthy."""
        if self.stopping:
            return False
        for model in self.repository.get_models().values():
            if getattr(model, "load_error", None):
                continue  # a model-config entry that failed: its own ready says so
            if not await model.healthy():
                return False
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_names(self) -> list[str]:
        return list(self.repository.get_models())

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        bound = self.repository.bound(name)
        _check_version(bound, version)
        return bool(await bound.model.healthy())

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        bound = self.repository.bound(name)
        _check_version(bound, version)
        model = bound.model
        meta: dict[str, Any] = {"name": name}
        if model.version is not None:
            meta["versions"] = [model.version]
        meta["platform"] = getattr(model, "platform", "")
        meta["inputs"] = model.get_input_types()
        meta["outputs"] = model.get_output_types()
        error = getattr(model, "load_error", None)
        if error:
            meta["error"] = error
        return meta

    # ------------------------------------------------------------------ repository
    async def load(self, name: str) -> bool:
        return await self.repository.load(name)

    async def unload(self, name: str) -> bool:
        await self.repository.unload(name)
        return True

    # ------------------------------------------------------------------ inference
    async def infer(
        self,
        model_name: str,
        payload: Any,
        *,
        headers: Headers,
        version: str | None = None,
        verb: Verb = "predict",
        protocol: Protocol_ = "v2",
        transport: Transport = "rest",
    ) -> tuple[Any, Headers]:
        """Run ``payload`` through the model's stages; returns ``(result, response_headers)``.

        Raises :class:`ModelNotFound`, :class:`ModelNotReady`, :class:`Overloaded` (more than
        ``max_inflight`` requests admitted for this model), the model's own
        :class:`MoorageError`, ``NotImplementedError`` (a stage the model lacks), or
        :class:`InferenceError` wrapping anything else the model raised.
        """
        bound = self._admit(model_name, version)
        # The transports put one in the context when the caller sent none (gRPC cannot add it
        # to the call's metadata).
        request_id = headers.get("x-request-id") or request_id_var.get()
        token = request_id_var.set(request_id)
        response_headers: Headers = {}
        hooks = self.hooks
        event = _begin(hooks, model_name, verb, protocol, transport, headers, payload, request_id,
                       response_headers)  # fmt: skip
        bound.enter()
        stage = "preprocess"
        try:
            t0 = time.perf_counter()
            if bound.preprocess is not None:
                value = await bound.preprocess(payload, headers, response_headers)
                t1 = time.perf_counter()
            else:
                value, t1 = payload, t0
            stage = verb
            if verb == "explain":
                value = await bound.explain(value, headers, response_headers)
            elif self.batcher is not None:
                value = await self.batcher.predict(bound, value, headers, response_headers)
            else:
                value = await bound.predict(value, headers, response_headers)
            t2 = time.perf_counter()
            stage = "postprocess"
            if bound.postprocess is not None:
                value = await bound.postprocess(value, headers, response_headers)
                t3 = time.perf_counter()
            else:
                t3 = t2
        except (MoorageError, NotImplementedError) as exc:
            if event is not None:
                _finish(hooks, event, error=exc)
            raise
        except Exception as exc:
            raise _failed(hooks, event, model_name, stage, exc) from exc
        finally:
            bound.leave()
            request_id_var.reset(token)
        _succeeded(hooks, event, model_name, payload, value, verb, t0, t1, t2, t3)
        return value, response_headers

    def infer_blocking(
        self,
        model_name: str,
        payload: Any,
        *,
        headers: Headers,
        loop: asyncio.AbstractEventLoop,
        version: str | None = None,
        protocol: Protocol_ = "v2",
        transport: Transport = "grpc",
    ) -> tuple[Any, Headers]:
        """:meth:`infer` (``predict``) for a caller on a worker thread, not on ``loop``.

        When the model's stages are all sync and every hook is thread-safe, the stages run right
        here, in the calling thread (it is already off the event loop, so no hop to another
        thread is needed). Otherwise (or with a batcher, which lives on the loop) the inference
        runs on ``loop`` and this waits for it. Same errors and hooks as :meth:`infer`.
        """
        bound = self.repository.bound(model_name)
        hooks = self.hooks
        if (
            self.batcher is not None
            or not bound.sync_only
            or not all(getattr(h, "thread_safe", False) for h in hooks)
        ):
            coro = self._infer_in_context(
                request_id_var.get(), model_name, payload, headers=headers, version=version,
                protocol=protocol, transport=transport,
            )  # fmt: skip
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
        bound = self._admit(model_name, version)
        request_id = headers.get("x-request-id") or request_id_var.get()
        token = request_id_var.set(request_id)
        response_headers: Headers = {}
        event = _begin(hooks, model_name, "predict", protocol, transport, headers, payload,
                       request_id, response_headers)  # fmt: skip
        bound.enter()
        stage = "preprocess"
        try:
            t0 = time.perf_counter()
            if bound.preprocess is not None:
                value = bound.preprocess.call_blocking(payload, headers, response_headers)
                t1 = time.perf_counter()
            else:
                value, t1 = payload, t0
            stage = "predict"
            value = bound.predict.call_blocking(value, headers, response_headers)
            t2 = time.perf_counter()
            stage = "postprocess"
            if bound.postprocess is not None:
                value = bound.postprocess.call_blocking(value, headers, response_headers)
                t3 = time.perf_counter()
            else:
                t3 = t2
        except (MoorageError, NotImplementedError) as exc:
            if event is not None:
                _finish(hooks, event, error=exc)
            raise
        except Exception as exc:
            raise _failed(hooks, event, model_name, stage, exc) from exc
        finally:
            bound.leave()
            request_id_var.reset(token)
        _succeeded(hooks, event, model_name, payload, value, "predict", t0, t1, t2, t3)
        return value, response_headers

    async def _infer_in_context(
        self, request_id: str | None, model_name: str, payload: Any, **kwargs: Any
    ) -> tuple[Any, Headers]:
        # A task on the loop does not inherit the calling thread's context: carry the id over.
        token = request_id_var.set(request_id)
        try:
            return await self.infer(model_name, payload, **kwargs)
        finally:
            request_id_var.reset(token)

    def _admit(self, model_name: str, version: str | None) -> BoundModel:
        """The ready model, or :class:`ModelNotFound` / :class:`ModelNotReady` /
        :class:`Overloaded`."""
        bound = self.repository.ready_bound(model_name)
        if version is not None:
            _check_version(bound, version)
        if bound.inflight >= self.max_inflight:
            raise Overloaded(
                f"model '{model_name}' has {bound.inflight} requests in flight "
                f"(limit {self.max_inflight}); retry later",
                model=model_name,
            )
        return bound


def _begin(
    hooks: list[InferenceHook],
    model_name: str,
    verb: Verb,
    protocol: Protocol_,
    transport: Transport,
    headers: Headers,
    payload: Any,
    request_id: str | None,
    response_headers: Headers,
) -> InferenceEvent | None:
    if not hooks:
        return None
    event = InferenceEvent(
        model_name, verb, protocol, transport, headers, payload, request_id,
        time.perf_counter(), response_headers=response_headers,
    )  # fmt: skip
    for hook in hooks:
        hook.on_request(event)
    return event


def _failed(
    hooks: list[InferenceHook],
    event: InferenceEvent | None,
    model_name: str,
    stage: str,
    exc: Exception,
) -> InferenceError:
    """The :class:`InferenceError` to raise for what the model raised; hooks are told."""
    logger.exception("model %s failed in %s", model_name, stage, extra={"model": model_name})
    error = InferenceError(
        f"model '{model_name}' failed in {stage}: {type(exc).__name__}: {exc}",
        model=model_name,
        stage=stage,
    )
    if event is not None:
        _finish(hooks, event, error=error)
    return error


def _succeeded(
    hooks: list[InferenceHook],
    event: InferenceEvent | None,
    model_name: str,
    payload: Any,
    value: Any,
    verb: Verb,
    t0: float,
    t1: float,
    t2: float,
    t3: float,
) -> None:
    if isinstance(value, InferResponse) and isinstance(payload, InferRequest):
        if value.id is None:
            value.id = payload.id if payload.id is not None else uuid4_text()
        if not value.model_name:
            value.model_name = model_name
    if event is not None:
        event.timings.update({"preprocess": t1 - t0, verb: t2 - t1, "postprocess": t3 - t2})
        _finish(hooks, event, response=value)


def _finish(
    hooks: list[InferenceHook],
    event: InferenceEvent,
    *,
    response: Any = None,
    error: BaseException | None = None,
) -> None:
    event.response = response
    event.error = error
    for hook in hooks:
        try:
            hook.on_response(event)
        except Exception:
            logger.exception("inference hook %r failed", hook)


def _check_version(bound: BoundModel, version: str | None) -> None:
    if version is None or version == "":
        return
    have = bound.model.version
    if have is None or have != version:
        known = f"; it serves version '{have}'" if have is not None else ""
        raise ModelNotFound(
            f"Model with name {bound.name} has no version '{version}'{known}.",
            model=bound.name,
            version=version,
        )
