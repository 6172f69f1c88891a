"""The reconcile loop: a work queue of InferenceServices, workers that render, apply and report.

kopf's watches fill :class:`Snapshot` (the operator's indexes) and call :meth:`Controller.enqueue`
for every InferenceService an event concerns (:mod:`~moorage.controller.operator.dependencies`).
A key is queued once however many events arrive while it waits, and never reconciled by two
workers at once. One reconcile:

1. renders the InferenceService from the snapshot (:func:`.rendering.render`);
2. on success, applies every object (server-side apply, the InferenceService as controller owner)
   unless this very rendering was applied already and every object is still there unchanged,
   then deletes the owned objects the rendering no longer contains;
   on failure applies nothing, records a Warning Event once per distinct failure;
3. computes the status from the observed Deployments and Pods and patches it only when it
   differs from the InferenceService's current status;
4. patches the status of the TrainedModels that name it where it differs (their model config,
   the ``modelconfig-<isvc>-0`` ConfigMap, is one of the rendered objects).

A :class:`kopf.TemporaryError` (the API server was unavailable, a conflict, throttling) puts the
key back after its delay, growing exponentially with jitter per key (:mod:`moorage.core.retry`'s
:class:`~moorage.core.retry.Backoff`) up to a minute; a :class:`kopf.PermanentError` is logged
and counted and the key waits for the next change.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from moorage.controller.operator import metrics
from moorage.controller.operator.apply import (
    ObjectRef,
    digest,
    is_owned_by,
    merge_patch,
    owned,
    prune,
    ref,
)
from moorage.controller.operator.client import KubeClient, api_errors
from moorage.controller.operator.dependencies import DependencyIndex, IsvcKey, dependencies_of
from moorage.controller.operator.rendering import (
    ClusterState,
    Rendering,
    parse_config,
    render,
    trained_models,
)
from moorage.controller.operator.status import compute_status
from moorage.controller.trainedmodel import ALLOCATED_LABEL, plan_model_config
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import InferenceService
from moorage.core.retry import Backoff

__all__ = ["Controller", "Snapshot"]

logger = logging.getLogger(__name__)

ISVC_LABEL = "serving.kserve.io/inferenceservice"
COMPONENT_LABEL = "component"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"


@dataclass
class Snapshot:
    """The watched cluster state, as plain dicts, keyed for the reconcile's lookups.

    Filled by kopf's event handlers (:mod:`~moorage.controller.operator.handlers`); the
    InferenceServices by (namespace, name); runtimes, ServiceAccounts and Secrets by namespace
    then name; the objects each InferenceService owns and its Pods by (namespace, isvc name).
    """

    isvcs: dict[IsvcKey, Mapping[str, Any]] = field(default_factory=dict)
    runtimes: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    cluster_runtimes: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    config: Mapping[str, Any] | None = None
    service_accounts: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    local_model_caches: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    owned: dict[IsvcKey, dict[ObjectRef, Mapping[str, Any]]] = field(default_factory=dict)
    pods: dict[IsvcKey, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    trained_models: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)

    def state_for(self, namespace: str) -> ClusterState:
        return ClusterState(
            trained_models=list(self.trained_models.get(namespace, {}).values()),
            runtimes=list(self.runtimes.get(namespace, {}).values()),
            cluster_runtimes=list(self.cluster_runtimes.values()),
            config=self.config,
            service_accounts=list(self.service_accounts.get(namespace, {}).values()),
            secrets=list(self.secrets.get(namespace, {}).values()),
            local_model_caches=list(self.local_model_caches.values()),
        )

    def service_account_map(self, namespace: str) -> dict[IsvcKey, Mapping[str, Any]]:
        return {(namespace, n): sa for n, sa in self.service_accounts.get(namespace, {}).items()}


def slim(body: Mapping[str, Any], *, status: bool) -> dict[str, Any]:
    """The parts of a watched object the reconcile reads (less memory for thousands)."""
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {
        "kind": body.get("kind"),
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "labels", "ownerReferences", "generation", "uid")
            if k in meta
        },
    }
    if status:
        out["status"] = body.get("status") or {}
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Applied:
    uid: str
    digest: str
    generations: dict[ObjectRef, int]


class Controller:
    """The work queue and its workers (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        config_namespace: str,
        workers: int = 8,
        now: Callable[[], str] = _now,
        backoff: Backoff = Backoff(attempts=1_000_000, initial=0.5, maximum=60.0),
    ) -> None:
        self.client = client
        self.snapshot = Snapshot()
        self.deps = DependencyIndex()
        self.config_namespace = config_namespace
        self._workers = workers
        self._now = now
        self._backoff = backoff
        self._queue: asyncio.Queue[IsvcKey] = asyncio.Queue()
        self._queued: set[IsvcKey] = set()
        self._active: set[IsvcKey] = set()
        self._again: set[IsvcKey] = set()
        self._failures: dict[IsvcKey, int] = {}
        self._applied: dict[IsvcKey, _Applied] = {}
        self._events: dict[IsvcKey, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: dict[object, asyncio.TimerHandle] = {}
        self.idle = asyncio.Event()

    # -- the queue ---------------------------------------------------------------------------

    def enqueue(self, key: IsvcKey, *, delay: float = 0.0) -> None:
        """Reconcile ``key`` (after ``delay`` seconds); a no-op while it is queued already."""
        if delay > 0:
            token = object()
            handle = asyncio.get_running_loop().call_later(delay, self._fire, key, token)
            self._timers[token] = handle
            return
        if key in self._active:
            self._again.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self.idle.clear()
        self._queue.put_nowait(key)
        metrics.QUEUE_DEPTH.set(len(self._queued))

    def _fire(self, key: IsvcKey, token: object) -> None:
        self._timers.pop(token, None)
        self.enqueue(key)

    def enqueue_dependents(self, kind: str, namespace: str | None, name: str) -> None:
        for key in self.deps.dependents(kind, namespace, name):
            self.enqueue(key)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(i)) for i in range(self._workers)]

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _worker(self, number: int) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))
            try:
                await self._reconcile_counted(key)
            finally:
                self._active.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.enqueue(key)
                if not self._queued and not self._active:
                    self.idle.set()

    async def _reconcile_counted(self, key: IsvcKey) -> None:
        namespace, name = key
        started = time.perf_counter()
        result = "success"
        try:
            await self.reconcile(key)
            self._failures.pop(key, None)
        except kopf.TemporaryError as exc:
            result = "retry"
            attempt = self._failures.get(key, 0) + 1
            self._failures[key] = attempt
            delay = max(exc.delay or 0.0, self._backoff.delay(attempt))
            logger.warning(
                "reconcile of %s/%s failed, retrying in %.1fs: %s", namespace, name, delay, exc,
                extra={"isvc": name, "namespace": namespace},
            )  # fmt: skip
            self.enqueue(key, delay=delay)
        except kopf.PermanentError as exc:
            result = "error"
            logger.error(
                "reconcile of %s/%s failed: %s", namespace, name, exc,
                extra={"isvc": name, "namespace": namespace},
            )  # fmt: skip
        except Exception:
            result = "error"
            attempt = self._failures.get(key, 0) + 1
            self._failures[key] = attempt
            logger.exception(
                "reconcile of %s/%s crashed", namespace, name,
                extra={"isvc": name, "namespace": namespace},
            )  # fmt: skip
            self.enqueue(key, delay=self._backoff.delay(attempt))
        finally:
            metrics.RECONCILES.labels(result=result).inc()
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    # -- one reconcile -----------------------------------------------------------------------

    def config(self) -> InferenceServiceConfig:
        try:
            return parse_config(self.snapshot.config)
        except ValidationError:
            return InferenceServiceConfig.default()

    async def reconcile(self, key: IsvcKey) -> None:
        """Render, apply, prune and report one InferenceService (see the module docstring)."""
        namespace = key[0]
        body = self.snapshot.isvcs.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            # Its objects go with it: the API server's garbage collector follows the owner
            # references.
            self.deps.remove(key)
            self._failures.pop(key, None)
            self._applied.pop(key, None)
            self._events.pop(key, None)
            await self._write_trained_models(key, None, None)
            return
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if annotations.get(DEPLOYMENT_MODE_ANNOTATION) == "ModelMesh":
            # ModelMesh's controller serves these (KServe's controller skips them too).
            self.deps.remove(key)
            return
        self.deps.update(
            key,
            dependencies_of(
                body,
                config_namespace=self.config_namespace,
                service_accounts=self.snapshot.service_account_map(namespace),
            ),
        )
        rendering = render(body, self.snapshot.state_for(namespace))
        if rendering.ok:
            self._events.pop(key, None)
            await self._apply(key, body, rendering)
        else:
            await self._record_failure(key, body, rendering)
        await self._write_status(key, body, rendering)
        isvc = rendering.isvc if isinstance(rendering.isvc, InferenceService) else None
        await self._write_trained_models(key, self.snapshot.isvcs.get(key, body), isvc)

    async def _apply(self, key: IsvcKey, body: Mapping[str, Any], rendering: Rendering) -> None:
        uid = body["metadata"]["uid"]
        objects = [owned(obj, body) for obj in rendering.objects]
        fingerprint = digest(objects)
        existing = {
            r: obj for r, obj in self.snapshot.owned.get(key, {}).items() if is_owned_by(obj, uid)
        }
        before = self._applied.get(key)
        if not self._still_applied(before, uid, fingerprint, objects, existing):
            generations: dict[ObjectRef, int] = {}
            for obj in objects:
                target = ref(obj)
                async with api_errors(f"apply {target.kind} {target.namespace}/{target.name}"):
                    answer = await self.client.apply(obj)
                metrics.APPLIED.labels(kind=target.kind).inc()
                generations[target] = int(
                    ((answer or {}).get("metadata") or {}).get("generation") or 0
                )
                if answer:  # seen before its watch event arrives: the status can say so
                    owned_now = self.snapshot.owned.setdefault(key, {})
                    owned_now[target] = slim(answer, status=target.kind == "Deployment")
            self._applied[key] = _Applied(uid, fingerprint, generations)
            logger.info(
                "applied %d objects for %s/%s", len(objects), key[0], key[1],
                extra={"isvc": key[1], "namespace": key[0]},
            )  # fmt: skip
        for target in prune(objects, existing):
            async with api_errors(f"delete {target.kind} {target.namespace}/{target.name}"):
                await self.client.delete(target)
            metrics.PRUNED.labels(kind=target.kind).inc()
            logger.info(
                "deleted %s %s/%s: no longer rendered", target.kind, target.namespace, target.name,
                extra={"isvc": key[1], "namespace": key[0]},
            )  # fmt: skip

    @staticmethod
    def _still_applied(
        before: _Applied | None,
        uid: str,
        fingerprint: str,
        objects: Iterable[Mapping[str, Any]],
        existing: Mapping[ObjectRef, Mapping[str, Any]],
    ) -> bool:
        """Whether this rendering was applied and every object is there as it was applied
        (its ``generation`` unchanged: nobody edited its spec since)."""
        if before is None or before.uid != uid or before.digest != fingerprint:
            return False
        for obj in objects:
            target = ref(obj)
            seen = existing.get(target)
            if seen is None:
                return False
            applied = before.generations.get(target, 0)
            generation = int((seen.get("metadata") or {}).get("generation") or 0)
            if applied and generation and generation != applied:
                return False
        return True

    async def _record_failure(
        self, key: IsvcKey, body: Mapping[str, Any], rendering: Rendering
    ) -> None:
        failure = rendering.failure
        assert failure is not None
        text = f"{failure.reason}: {failure.describe()}"
        metrics.RENDER_FAILURES.labels(reason=failure.reason).inc()
        if self._events.get(key) == text:
            return
        logger.warning(
            "%s/%s cannot be rendered: %s", key[0], key[1], text,
            extra={"isvc": key[1], "namespace": key[0]},
        )  # fmt: skip
        async with api_errors(f"record an Event for {key[0]}/{key[1]}"):
            await self.client.create(event(body, failure.reason, failure.describe(), self._now()))
        self._events[key] = text

    async def _write_status(
        self, key: IsvcKey, body: Mapping[str, Any], rendering: Rendering
    ) -> None:
        owned_objects = self.snapshot.owned.get(key, {})
        uid = body["metadata"]["uid"]
        deployments = {
            (obj.get("metadata") or {}).get("labels", {}).get(COMPONENT_LABEL, ""): obj
            for r, obj in owned_objects.items()
            if r.kind == "Deployment" and is_owned_by(obj, uid)
        }
        pods = [
            pod
            for pod in self.snapshot.pods.get(key, {}).values()
            if ((pod.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL) == "predictor"
        ]
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("name", ""))
        status = compute_status(
            body,
            rendering,
            deployments=deployments,
            pods=pods,
            config=self.config(),
            now=self._now(),
        )
        current = body.get("status") or {}
        patch = merge_patch(current, status)
        if not patch:
            return
        async with api_errors(f"write the status of {key[0]}/{key[1]}"):
            await self.client.patch_status(body, patch)
        metrics.STATUS_WRITES.inc()
        if self.snapshot.isvcs.get(key) is body:  # until the watch brings the written one
            self.snapshot.isvcs[key] = {**body, "status": status}

    async def _write_trained_models(
        self, key: IsvcKey, body: Mapping[str, Any] | None, isvc: InferenceService | None
    ) -> None:
        """The status of every TrainedModel naming the InferenceService ``key``
        (:func:`moorage.controller.trainedmodel.plan_model_config`), patched where it differs."""
        namespace, name = key
        raw = {
            (tm.get("metadata") or {}).get("name"): tm
            for tm in self.snapshot.trained_models.get(namespace, {}).values()
            if (tm.get("spec") or {}).get("inferenceService") == name
        }
        if not raw:
            return
        models = trained_models(ClusterState(trained_models=list(raw.values())), namespace)
        plan = plan_model_config(
            isvc,
            models,
            isvc_name=name,
            namespace=namespace,
            isvc_status=(body or {}).get("status"),
            config=self.config(),
            now=self._now(),
        )
        for state in plan.models:
            tm = raw.get(state.name)
            if tm is None:
                continue
            await self._label_trained_model(tm, name, allocated=state.allocated)
            patch = merge_patch(tm.get("status") or {}, state.status)
            if not patch:
                continue
            async with api_errors(f"write the status of TrainedModel {namespace}/{state.name}"):
                await self.client.patch_status(tm, patch)
            metrics.STATUS_WRITES.inc()
            stored = self.snapshot.trained_models.get(namespace, {})
            if stored.get(state.name) is tm:  # until the watch brings the written one
                stored[state.name] = {**tm, "status": state.status}

    async def _label_trained_model(
        self, tm: Mapping[str, Any], isvc_name: str, *, allocated: bool
    ) -> None:
        """KServe's labels on a TrainedModel: its InferenceService, and once it is listed in the
        model config ``serving.kserve.io/trainedmodel-allocated`` (which keeps its place)."""
        meta = tm.get("metadata") or {}
        labels = meta.get("labels") or {}
        wanted = {ISVC_LABEL: isvc_name}
        if allocated:
            wanted[ALLOCATED_LABEL] = isvc_name
        missing = {k: v for k, v in wanted.items() if labels.get(k) != v}
        if not missing:
            return
        patch = {
            "apiVersion": tm.get("apiVersion", "serving.kserve.io/v1alpha1"),
            "kind": "TrainedModel",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "labels": missing,
            },
        }
        async with api_errors(f"label TrainedModel {meta.get('namespace')}/{meta['name']}"):
            await self.client.merge(patch)


def event(body: Mapping[str, Any], reason: str, message: str, now: str) -> dict[str, Any]:
    """A Warning Event about the InferenceService ``body`` (core/v1, as kubectl shows them)."""
    meta = body["metadata"]
    namespace = meta.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": body.get("apiVersion", "serving.kserve.io/v1beta1"),
            "kind": "InferenceService",
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning",
        "source": {"component": "moorage-operator"},
        "reportingComponent": "moorage-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
