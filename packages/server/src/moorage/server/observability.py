"""Wiring of metrics, request ids, access logs and the inference logger into a server.

:class:`Observability` turns :class:`~moorage.core.config.server.ServerSettings` into the
pieces ``ModelServer`` plugs in: data-plane hooks, the ``/metrics`` router, the ASGI
middleware, the gRPC interceptor, and what has to happen before serving and at shutdown.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.routing import Router

from moorage.core.config.server import ServerSettings
from moorage.server import llm
from moorage.server.access_log import AccessLogMiddleware, GrpcAccessInterceptor
from moorage.server.dataplane import DataPlane
from moorage.server.metrics import (
    GenerationMetrics,
    MetricsHook,
    clear_multiprocess_dir,
    metrics_router,
)

if TYPE_CHECKING:
    from moorage.server.inference_logger import InferenceLogger

__all__ = ["Observability"]

logger = logging.getLogger(__name__)


class Observability:
    """What ``settings`` ask for, built once per server (the logger's tasks start lazily)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.access_log = settings.enable_access_log or bool(settings.access_log_format)
        self.inference_logger: InferenceLogger | None = None
        if settings.logger_url:
            # Imported only when configured: httpx costs ~0.1 s of start-up.
            from moorage.server.inference_logger import InferenceLogger

            self.inference_logger = InferenceLogger.from_settings(settings)

    def install(self, dataplane: DataPlane) -> None:
        """Add the metrics and inference-logger hooks to ``dataplane``."""
        if self.settings.enable_metrics:
            dataplane.hooks.append(MetricsHook())
            if not any(isinstance(o, GenerationMetrics) for o in llm.observers):
                llm.observers.append(GenerationMetrics())
        if self.inference_logger is not None:
            dataplane.hooks.append(self.inference_logger)

    def routers(self) -> list[Router]:
        if not self.settings.enable_metrics:
            return []
        return [metrics_router(multiprocess_dir=self.settings.prometheus_multiproc_dir)]

    def middleware(self) -> list[Middleware]:
        return [
            Middleware(
                AccessLogMiddleware,
                access_log=self.access_log,
                access_log_format=self.settings.access_log_format,
                record_metrics=self.settings.enable_metrics,
            )
        ]

    def grpc_interceptors(self) -> list[GrpcAccessInterceptor]:
        return [
            GrpcAccessInterceptor(
                access_log=self.access_log, record_metrics=self.settings.enable_metrics
            )
        ]

    def before_serving(self) -> None:
        """Once, in the parent process, before any worker starts."""
        s = self.settings
        if not s.enable_metrics:
            return
        if s.prometheus_multiproc_dir:
            removed = clear_multiprocess_dir(s.prometheus_multiproc_dir)
            logger.info(
                "metrics: multiprocess mode in %s (%d stale files removed)",
                s.prometheus_multiproc_dir,
                removed,
            )
        elif s.workers > 1:
            logger.warning(
                "metrics: %d workers without PROMETHEUS_MULTIPROC_DIR; each /metrics scrape "
                "reports the one worker that answers it",
                s.workers,
            )

    async def aclose(self) -> None:
        """At shutdown, after the listeners stopped: deliver queued inference-log events."""
        if self.inference_logger is not None:
            await self.inference_logger.aclose()
        from moorage.server.predictor import close_predictor_clients

        await close_predictor_clients()
