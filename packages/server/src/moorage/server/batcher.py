"""Adaptive batching of predict requests inside moorage-server (KServe's ``batcher`` spec).

KServe batches in its ``agent`` sidecar, an extra HTTP hop in front of the model server that
understands v1 ``instances`` only. Here the :class:`~moorage.server.dataplane.DataPlane` hands
every ``predict`` to :meth:`Batcher.predict`, after ``preprocess`` and before ``postprocess``,
for REST and gRPC alike; requests that can share a predict call are joined into one request,
predicted once where predict always runs (inline on the event loop or in a worker thread, as the
model's ``--sync_mode`` decides), and the result is cut back into one result per caller.

**What joins a batch.** A request joins when the data plane's value is

* a v1 body whose only key is ``instances``: a list of rows of one shape and element kind
  (numbers, booleans or strings), or of JSON objects with the same keys;
* a v2 :class:`~moorage.core.protocol.InferRequest` whose inputs all have the same number of
  rows (dimension 0, at least one).

Requests join the same batch only when they match: v1 rows of the same trailing shape and element
kind; v2 inputs with the same names, order, datatypes, trailing shapes and parameters, the same
request parameters and requested outputs (the binary-extension flags, which only change how a
response is written, may differ). Requests that do not match form batches of their own. Anything
else (v1 ``inputs``, other keys, other payloads a custom ``preprocess`` returns, ``explain``)
and a request of ``max_batch_size`` rows or more is predicted alone, exactly as without the
batcher.

**When a batch starts.** A batch is cut when it holds ``max_batch_size`` rows (a request that
would overflow it starts a new one), when its first request has waited ``max_latency``, or when
no batch of the model is running: a request that finds the model idle waits only for the
requests already read in the same turn of the event loop. While a batch runs, the next one
fills, so batches grow with the load and a lone request is not held back.

**Each caller gets its own rows.** A v2 result must be an ``InferResponse`` whose every output
has one row per input row; a v1 result ``{"predictions": [...]}`` (or a bare list) with one entry
per row. Each caller gets its slice, its own request id, and the response headers the joint
predict set. The joint predict is called with empty request headers (a batch has many callers;
KServe's agent does not forward them either). When the joint predict fails, every caller of the
batch is predicted alone, so each gets its own result or its own error; when a model's result
cannot be cut into rows, the batcher logs it once, stops batching that model and predicts each
caller alone.

**Bounds.** Queued requests are admitted requests: ``--max_inflight_requests`` per model bounds
them (more are refused with 503 / UNAVAILABLE), and a batch holds at most ``max_batch_size``
rows. With ``timeout``, a caller that has waited that long for its batch's result gets
:class:`~moorage.core.errors.Timeout` (504 / DEADLINE_EXCEEDED); a caller that goes away
(cancelled) leaves the batch without disturbing it.

**Not batched.** Models that batch themselves (the Hugging Face text generators and embedders,
which decode or embed concurrent requests together), and any model whose class sets
``batchable = False``.

Metrics: ``moorage_server_batch_rows`` and ``moorage_server_batch_requests`` (histograms, label
``model``): rows and requests per joint predict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Histogram

from moorage.core.errors import Timeout
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.server.llm import TextEmbedder, TextGenerator
from moorage.server.model import BoundModel, Headers

__all__ = ["BatchPolicy", "Batcher", "join", "prepare", "split"]

logger = logging.getLogger(__name__)

#: Parameters that only say how a tensor travels or how a response is written.
_TRANSPORT_PARAMETERS = frozenset({"binary_data", "binary_data_output", "binary_data_size"})
#: numpy element kinds of v1 rows that may be joined (bool, int, uint, float, str, bytes).
_ROW_KINDS = frozenset("biufUS")

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_ROWS = Histogram(
    "moorage_server_batch_rows",
    "Rows in one batched predict call.",
    ["model"],
    buckets=_SIZE_BUCKETS,
)
BATCH_REQUESTS = Histogram(
    "moorage_server_batch_requests",
    "Requests in one batched predict call.",
    ["model"],
    buckets=_SIZE_BUCKETS,
)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How the batcher cuts batches (``--max_batchsize``, ``--max_latency``,
    ``--batcher_timeout``). ``max_latency`` and ``timeout`` are in seconds."""

    max_batch_size: int = 32
    max_latency: float = 5.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_latency < 0:
            raise ValueError("max_latency must be >= 0")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be > 0")


@dataclass(slots=True)
class Entry:
    """One caller's request, ready to join a batch: its ``rows`` and the ``key`` that requests
    sharing a batch have in common."""

    value: Any
    rows: int
    key: Hashable
    headers: Headers = field(default_factory=dict)
    response_headers: Headers = field(default_factory=dict)
    future: asyncio.Future[Any] | None = None


# ---------------------------------------------------------------------- join and split
def prepare(value: Any) -> Entry | None:
    """The :class:`Entry` for a predict payload, or ``None`` when it cannot join a batch."""
    if isinstance(value, InferRequest):
        return _prepare_v2(value)
    if type(value) is dict and len(value) == 1 and "instances" in value:
        return _prepare_v1(value["instances"])
    return None


def _prepare_v1(instances: Any) -> Entry | None:
    if not isinstance(instances, list) or not instances:
        return None
    first = instances[0]
    if isinstance(first, dict):
        keys = tuple(first)
        if all(isinstance(row, dict) and tuple(row) == keys for row in instances):
            return Entry(None, len(instances), ("v1-records", keys))
        return None
    try:
        array = np.asarray(instances)
    except (ValueError, TypeError):  # ragged rows, mixed nesting
        return None
    if array.ndim < 1 or array.dtype.kind not in _ROW_KINDS:
        return None
    kind = "U" if array.dtype.kind in "US" else array.dtype.kind
    return Entry(None, len(instances), ("v1", array.shape[1:], kind))


def _parameters_key(parameters: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = tuple(sorted((k, v) for k, v in parameters.items() if k not in _TRANSPORT_PARAMETERS))
    hash(items)  # TypeError for a value that cannot be compared cheaply (lists, dicts)
    return items


def _prepare_v2(request: InferRequest) -> Entry | None:
    if not request.inputs:
        return None
    rows = request.inputs[0].shape[0] if request.inputs[0].shape else 0
    if rows < 1:
        return None
    try:
        inputs = []
        for tensor in request.inputs:
            if not tensor.shape or tensor.shape[0] != rows:
                return None
            inputs.append(
                (tensor.name, tensor.datatype, tensor.shape[1:], _parameters_key(tensor.parameters))
            )
        outputs = (
            None
            if request.outputs is None
            else tuple((o.name, _parameters_key(o.parameters)) for o in request.outputs)
        )
        key = ("v2", tuple(inputs), _parameters_key(request.parameters), outputs)
    except TypeError:
        return None
    return Entry(None, rows, key)


def join(values: list[Any]) -> Any:
    """One payload holding the rows of ``values`` (all prepared with the same key), in order."""
    first = values[0]
    if isinstance(first, InferRequest):
        inputs = []
        for i, tensor in enumerate(first.inputs):
            parts = [v.inputs[i].data for v in values]
            data = np.concatenate(parts, axis=0)
            inputs.append(
                InferTensor(tensor.name, tensor.datatype, data.shape, data, dict(tensor.parameters))
            )
        return InferRequest(
            first.model_name,
            inputs,
            parameters=dict(first.parameters),
            outputs=first.outputs,
            model_version=first.model_version,
        )
    return {"instances": [row for v in values for row in v["instances"]]}


def split(result: Any, values: list[Any], rows: list[int]) -> list[Any] | None:
    """``result`` of the joined ``values`` cut into one result per value (``rows`` each), or
    ``None`` when it does not have one row per input row."""
    total = sum(rows)
    bounds = np.cumsum([0, *rows]).tolist()
    if isinstance(result, InferResponse):
        if not result.outputs:
            return None
        for tensor in result.outputs:
            if not tensor.shape or tensor.shape[0] != total:
                return None
        out = []
        for i, value in enumerate(values):
            a, b = bounds[i], bounds[i + 1]
            outputs = [
                InferTensor(
                    t.name, t.datatype, (b - a, *t.shape[1:]), t.data[a:b], dict(t.parameters)
                )
                for t in result.outputs
            ]
            out.append(
                InferResponse(
                    result.model_name,
                    outputs,
                    id=value.id if isinstance(value, InferRequest) else None,
                    parameters=dict(result.parameters),
                    model_version=result.model_version,
                )
            )
        return out
    wrapped = False
    if isinstance(result, dict):
        if len(result) != 1 or "predictions" not in result:
            return None
        result, wrapped = result["predictions"], True
    if not isinstance(result, list | np.ndarray) or len(result) != total:
        return None
    pieces = [result[bounds[i] : bounds[i + 1]] for i in range(len(values))]
    return [{"predictions": p} for p in pieces] if wrapped else pieces


# ---------------------------------------------------------------------- the batcher
@dataclass(slots=True, eq=False)
class _Batch:
    key: Hashable
    entries: list[Entry] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    cut: bool = False


class _ModelQueue:
    """The batches of one model: those filling (one per key) and how many run."""

    def __init__(self, bound: BoundModel, policy: BatchPolicy) -> None:
        self.bound = bound
        self.policy = policy
        self.filling: dict[Hashable, _Batch] = {}
        self.running = 0
        self.enabled = True
        self.tasks: set[asyncio.Task[None]] = set()
        self._rows = BATCH_ROWS.labels(bound.name)
        self._requests = BATCH_REQUESTS.labels(bound.name)

    def add(self, entry: Entry) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        entry.future = future
        batch = self.filling.get(entry.key)
        if batch is not None and batch.rows + entry.rows > self.policy.max_batch_size:
            self._cut(batch)
            batch = None
        if batch is None:
            batch = _Batch(entry.key)
            self.filling[entry.key] = batch
            batch.timer = loop.call_later(self.policy.max_latency, self._cut, batch)
            if self.running == 0:
                # Idle: only the requests read in this turn of the loop join.
                loop.call_soon(self._cut_if_idle, batch)
        batch.entries.append(entry)
        batch.rows += entry.rows
        if batch.rows >= self.policy.max_batch_size:
            self._cut(batch)
        return future

    def _cut_if_idle(self, batch: _Batch) -> None:
        if self.running == 0:
            self._cut(batch)

    def _cut(self, batch: _Batch) -> None:
        if batch.cut:
            return
        batch.cut = True
        if batch.timer is not None:
            batch.timer.cancel()
        if self.filling.get(batch.key) is batch:
            del self.filling[batch.key]
        entries = [e for e in batch.entries if e.future is not None and not e.future.done()]
        if not entries:
            return
        self.running += 1
        task = asyncio.get_running_loop().create_task(self._run(entries))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, entries: list[Entry]) -> None:
        try:
            if len(entries) == 1:
                await self._alone(entries[0])
            else:
                await self._joint(entries)
        except asyncio.CancelledError:
            for entry in entries:
                if entry.future is not None and not entry.future.done():
                    entry.future.cancel()
            raise
        except Exception as exc:  # a bug here must not leave callers waiting forever
            logger.exception("batch of model %s failed", self.bound.name)
            for entry in entries:
                if entry.future is not None and not entry.future.done():
                    entry.future.set_exception(exc)
        finally:
            self.running -= 1
            if self.running == 0 and self.filling:
                # The model is idle again: start the batch that has waited longest.
                self._cut(next(iter(self.filling.values())))

    async def _joint(self, entries: list[Entry]) -> None:
        values = [e.value for e in entries]
        rows = [e.rows for e in entries]
        response_headers: Headers = {}
        try:
            result = await self.bound.predict(join(values), {}, response_headers)
        except Exception as exc:
            logger.info(
                "batched predict of %d requests for model %s failed (%s: %s); predicting each "
                "alone", len(entries), self.bound.name, type(exc).__name__, exc,
                extra={"model": self.bound.name},
            )  # fmt: skip
            await asyncio.gather(*(self._alone(e) for e in entries))
            return
        parts = split(result, values, rows)
        if parts is None:
            self.enabled = False
            logger.warning(
                "model %s returned %s, which does not have one row per input row: its "
                "requests are no longer batched",
                self.bound.name, type(result).__name__, extra={"model": self.bound.name},
            )  # fmt: skip
            await asyncio.gather(*(self._alone(e) for e in entries))
            return
        self._rows.observe(sum(rows))
        self._requests.observe(len(entries))
        for entry, part in zip(entries, parts, strict=True):
            entry.response_headers.update(response_headers)
            if entry.future is not None and not entry.future.done():
                entry.future.set_result(part)

    async def _alone(self, entry: Entry) -> None:
        """Predict ``entry`` by itself, with its own headers; its future gets the outcome."""
        future = entry.future
        if future is None or future.done():
            return
        try:
            result = await self.bound.predict(entry.value, entry.headers, entry.response_headers)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        self._rows.observe(entry.rows)
        self._requests.observe(1)
        if not future.done():
            future.set_result(result)


class Batcher:
    """Joins concurrent predict requests of each model (see the module docstring)."""

    def __init__(self, policy: BatchPolicy | None = None) -> None:
        self.policy = policy or BatchPolicy()
        #: model name -> (the bound model, its queue or None when it is not batched)
        self._queues: dict[str, tuple[BoundModel, _ModelQueue | None]] = {}

    def _queue(self, bound: BoundModel) -> _ModelQueue | None:
        known = self._queues.get(bound.name)
        if known is None or known[0] is not bound:  # new, or reloaded since
            queue = None if self._skips(bound) else _ModelQueue(bound, self.policy)
            known = self._queues[bound.name] = (bound, queue)
        queue = known[1]
        return queue if queue is not None and queue.enabled else None

    @staticmethod
    def _skips(bound: BoundModel) -> bool:
        model = bound.model
        if getattr(model, "batchable", True) is False:
            return True
        return isinstance(model, TextGenerator | TextEmbedder)

    async def predict(
        self, bound: BoundModel, value: Any, headers: Headers, response_headers: Headers
    ) -> Any:
        """``bound``'s predict on ``value``, batched with other callers' when it can be."""
        queue = self._queue(bound)
        entry = prepare(value) if queue is not None else None
        if queue is None or entry is None or entry.rows >= self.policy.max_batch_size:
            return await bound.predict(value, headers, response_headers)
        entry.value, entry.headers, entry.response_headers = value, headers, response_headers
        future = queue.add(entry)
        timeout = self.policy.timeout
        if timeout is None:
            return await future
        started = time.monotonic()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            waited = time.monotonic() - started
            raise Timeout(
                f"model '{bound.name}': its batch did not answer within the batcher timeout "
                f"({timeout:g} s; waited {waited:.3g} s)",
                model=bound.name,
            ) from None
