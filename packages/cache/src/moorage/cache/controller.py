"""The cache controller: kopf watches, one level-triggered reconcile, writes.

kopf watches LocalModelCaches, LocalModelNodeGroups, LocalModelNodes, Nodes and
InferenceServices (all namespaces); every event only wakes :meth:`CacheController.loop`, which
debounces, reads the cluster, calls the pure :func:`moorage.cache.reconcile.plan` and applies the
result (:meth:`CacheController.apply`). It also runs every ``resync`` seconds (the ConfigMap's
``localModel.reconcilationFrequencyInSecs`` unless ``--resync-seconds`` says otherwise), so a
missed event delays, never loses, a change.

The controller works only while ``localModel.enabled`` is true in ``inferenceservice-config``
(in ``$POD_NAMESPACE``); otherwise it reads that ConfigMap at each pass and writes nothing.

It adds the finalizer ``localmodel.kserve.io/finalizer`` to every cache and removes it once
:func:`~moorage.cache.reconcile.plan` says the cache is clean (unlisted everywhere, its files
removed by the agents of Ready nodes, its volumes deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from moorage.cache._kube import (
    CACHES,
    CONFIGMAPS,
    GROUPS,
    ISVCS,
    LOCAL_MODEL_NODES,
    NODES,
    PVCS,
    PVS,
    Kind,
    Kube,
    KubeError,
)
from moorage.cache._names import CACHE_LABEL, FINALIZER
from moorage.cache.reconcile import ClusterState, Plan, admission_problem, merge_patch, plan
from moorage.core.config.cache import CacheSettings
from moorage.core.config.configmap import CONFIGMAP_NAME, LocalModelConfig
from moorage.core.retry import Backoff

__all__ = ["CacheController", "run_operator"]

logger = logging.getLogger(__name__)

#: Watch events arriving within this many seconds of each other make one reconcile.
DEBOUNCE_S = 0.2


class CacheController:
    """Reads the cluster, plans, writes. :meth:`loop` runs until cancelled."""

    def __init__(
        self, kube: Kube, *, namespace: str = "kserve", resync_seconds: float | None = None
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.resync_override = resync_seconds
        self.wake = asyncio.Event()
        self._enabled: bool | None = None

    def trigger(self) -> None:
        self.wake.set()

    async def config(self) -> LocalModelConfig:
        """The ``localModel`` key of ``inferenceservice-config`` (KServe's defaults if absent)."""
        cm = await self.kube.get(CONFIGMAPS, CONFIGMAP_NAME, namespace=self.namespace)
        raw = ((cm or {}).get("data") or {}).get("localModel")
        if not raw:
            return LocalModelConfig()
        try:
            return LocalModelConfig.model_validate(json.loads(raw))
        except ValueError as exc:
            logger.error("inferenceservice-config localModel is not valid: %s", exc)
            return LocalModelConfig()

    async def observe(self) -> ClusterState:
        async def items(kind: Kind, selector: str | None = None) -> list[dict[str, Any]]:
            try:
                return (await self.kube.list(kind, label_selector=selector))[0]
            except KubeError as exc:
                if exc.status == 404 and kind is ISVCS:
                    return []  # no InferenceService CRD (yet): nothing uses a cache
                raise

        results = await asyncio.gather(
            items(CACHES),
            items(GROUPS),
            items(NODES),
            items(LOCAL_MODEL_NODES),
            items(ISVCS),
            items(PVS, CACHE_LABEL),
            items(PVCS, CACHE_LABEL),
        )
        caches, groups, nodes, lmns, isvcs, pvs, pvcs = results
        for obj, kind in [(o, "PersistentVolume") for o in pvs] + [
            (o, "PersistentVolumeClaim") for o in pvcs
        ]:
            obj.setdefault("kind", kind)
        return ClusterState(
            caches=caches,
            groups=groups,
            nodes=nodes,
            local_model_nodes=lmns,
            inference_services=isvcs,
            volumes=pvs,
            claims=pvcs,
        )

    async def reconcile(self) -> tuple[float, Plan | None]:
        """One pass; returns the resync period and the plan applied (``None``: disabled)."""
        config = await self.config()
        resync = self.resync_override or float(config.reconcilation_frequency_in_secs)
        if not config.enabled:
            if self._enabled is not False:
                logger.info("localModel.enabled is false in %s/%s: idle",
                            self.namespace, CONFIGMAP_NAME)  # fmt: skip
            self._enabled = False
            return resync, None
        self._enabled = True
        state = await self.observe()
        result = plan(state)
        await self.apply(state, result)
        return resync, result

    async def apply(self, state: ClusterState, result: Plan) -> None:
        """Write what ``result`` says differs from ``state``."""
        lmns = {o["metadata"]["name"]: o for o in state.local_model_nodes}
        for node, models in result.node_models.items():
            if node in lmns:
                await self.kube.patch(LOCAL_MODEL_NODES, node, {"spec": {"localModels": models}})
            else:
                await self._create(LOCAL_MODEL_NODES, {
                    "apiVersion": "serving.kserve.io/v1alpha1", "kind": "LocalModelNode",
                    "metadata": {"name": node}, "spec": {"localModels": models},
                })  # fmt: skip
            logger.info("node %s: models %s", node, [m["modelName"] for m in models],
                        extra={"node": node})  # fmt: skip
        for node in result.delete_nodes:
            await self.kube.delete(LOCAL_MODEL_NODES, node)
            logger.info("node %s is gone: LocalModelNode deleted", node, extra={"node": node})
        for obj in result.create:
            kind = PVS if obj["kind"] == "PersistentVolume" else PVCS
            await self._create(kind, obj)
            logger.info("created %s %s", obj["kind"], _ref(obj))
        for kind_name, namespace, name in result.delete:
            kind = PVS if kind_name == "PersistentVolume" else PVCS
            await self.kube.delete(kind, name, namespace=namespace or None)
            logger.info("deleted %s %s", kind_name, f"{namespace}/{name}" if namespace else name)
        for cache in state.caches:
            await self._cache(cache, result)

    async def _cache(self, cache: Mapping[str, Any], result: Plan) -> None:
        meta = cache.get("metadata") or {}
        name = str(meta.get("name"))
        finalizers = list(meta.get("finalizers") or [])
        deleting = bool(meta.get("deletionTimestamp"))
        if name in result.refused and not deleting:
            logger.warning("LocalModelCache %s refused: %s", name, result.refused[name])
        status = result.status.get(name)
        if status is not None:
            patch = merge_patch(cache.get("status") or {}, status)
            if patch:
                await self.kube.patch(CACHES, name, {"status": patch}, status=True)
        if not deleting and FINALIZER not in finalizers:
            await self.kube.patch(
                CACHES, name, {"metadata": {"finalizers": [*finalizers, FINALIZER]}}
            )
        elif deleting and name in result.finalizable and FINALIZER in finalizers:
            left = [f for f in finalizers if f != FINALIZER]
            await self.kube.patch(CACHES, name, {"metadata": {"finalizers": left}})
            logger.info("LocalModelCache %s cleaned up: finalizer removed", name)

    async def _create(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        try:
            await self.kube.create(kind, obj)
        except KubeError as exc:
            if exc.status != 409:
                raise

    async def admission(self, operation: str, cache: Mapping[str, Any]) -> str | None:
        """Why the API server should refuse ``operation`` on ``cache``, or ``None``."""
        config = await self.config()
        caches, _ = await self.kube.list(CACHES)
        isvcs, _ = await self.kube.list(ISVCS)
        return admission_problem(operation, cache, caches, isvcs, enabled=config.enabled)

    async def loop(self) -> None:
        failures = 0
        resync = 60.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(resync):
                    await self.wake.wait()
            await asyncio.sleep(DEBOUNCE_S)
            self.wake.clear()
            try:
                resync, _ = await self.reconcile()
                failures = 0
            except KubeError as exc:
                failures += 1
                wait = Backoff(initial=0.5, maximum=30.0).delay(min(failures, 10))
                logger.warning("reconcile failed (%s); again in %.1fs", exc, wait)
                await asyncio.sleep(wait)
                self.wake.set()


def _ref(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


async def run_operator(controller: CacheController, settings: CacheSettings | None = None) -> None:
    """Run the controller under kopf (watches, login, the admission webhook when
    ``settings.webhook_port`` is set) until SIGTERM/SIGINT or cancelled."""
    import kopf

    config = controller.kube.config
    cache_settings = settings
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=config.server,
            token=config.token,
            scheme="Bearer" if config.token else None,
            ca_path=config.ca_file if not config.ca_data else None,
            ca_data=config.ca_data,
            insecure=config.insecure or None,
            certificate_path=config.cert_file if not config.cert_data else None,
            certificate_data=config.cert_data,
            private_key_path=config.key_file if not config.key_data else None,
            private_key_data=config.key_data,
            default_namespace=controller.namespace,
        )

    def wake(**_: Any) -> None:
        controller.trigger()

    for group, version, plural in [
        ("serving.kserve.io", "v1alpha1", "localmodelcaches"),
        ("serving.kserve.io", "v1alpha1", "localmodelnodegroups"),
        ("serving.kserve.io", "v1alpha1", "localmodelnodes"),
        ("serving.kserve.io", "v1beta1", "inferenceservices"),
        ("", "v1", "nodes"),
    ]:
        kopf.on.event(group, version, plural, registry=registry)(wake)

    webhook = settings is not None and settings.webhook_port is not None
    if webhook:

        @kopf.on.validate(
            "serving.kserve.io", "v1alpha1", "localmodelcaches",
            operations=["CREATE", "UPDATE", "DELETE"], id="localmodelcache", registry=registry,
        )  # fmt: skip
        async def _validate(**kwargs: Any) -> None:
            body, operation = kwargs["body"], kwargs.get("operation")
            problem = await controller.admission(str(operation), dict(body))
            if problem is not None:
                logger.info("refused %s of LocalModelCache %s: %s", operation,
                            body.get("metadata", {}).get("name"), problem)  # fmt: skip
                raise kopf.AdmissionError(problem, code=403)

    @kopf.on.startup(registry=registry)
    def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False
        settings.batching.exit_timeout = 0.1  # the handlers only wake the reconcile loop
        settings.watching.server_timeout = 300
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="moorage")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="moorage")
        if webhook:
            assert cache_settings is not None and cache_settings.webhook_port is not None
            settings.admission.server = kopf.WebhookServer(
                addr="0.0.0.0",
                port=cache_settings.webhook_port,
                host=cache_settings.webhook_host,
                certfile=str(cache_settings.webhook_cert) if cache_settings.webhook_cert else None,
                pkeyfile=str(cache_settings.webhook_key) if cache_settings.webhook_key else None,
                insecure=cache_settings.webhook_insecure,
            )
            settings.admission.managed = cache_settings.webhook_configuration

    loop_task = asyncio.create_task(controller.loop(), name="cache-reconcile")
    controller.trigger()
    try:
        # kopf stops on SIGTERM/SIGINT by itself (a stop_flag would leave a waiter task behind
        # that kopf 1.45 then waits 5 s for).
        await kopf.operator(registry=registry, clusterwide=True, standalone=True)
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
