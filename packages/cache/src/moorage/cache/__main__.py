"""``moorage-cache controller|agent`` (also ``python -m moorage.cache``)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import signal
import sys
from typing import Any

from moorage.core.config.cache import CacheSettings

__all__ = ["main"]

_STANDARD = set(vars(logging.makeLogRecord({})))


class _JSONFormatter(logging.Formatter):
    """One JSON object a line, with the record's ``extra`` fields (model, node, bytes...)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data and key != "message":
                data[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


def _configure_logging(settings: CacheSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.WARNING)


async def _serve(settings: CacheSettings) -> int:
    from moorage.cache._kube import Kube, KubeConfig
    from moorage.core.config.cache import kubernetes_service

    host, port = kubernetes_service()
    config = KubeConfig.load(settings.kubeconfig, service_host=host, service_port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Kube(config) as kube:
        if settings.command == "controller":
            from moorage.cache.controller import CacheController, run_operator

            controller = CacheController(
                kube, namespace=settings.pod_namespace, resync_seconds=settings.resync_seconds
            )
            await run_operator(controller, settings)
            return 0
        from moorage.cache.agent import Agent

        if not settings.node_name:
            logging.getLogger(__name__).error("the agent needs --node-name or $NODE_NAME")
            return 2
        agent = Agent(
            kube,
            settings,
            node_name=settings.node_name,
            root=settings.root,
            resync_seconds=settings.resync_seconds or 60.0,
        )
        task = asyncio.create_task(agent.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        stopper.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        return 0


def main(argv: list[str] | None = None) -> int:
    settings = CacheSettings.from_cli(argv)
    _configure_logging(settings)
    if settings.command == "controller" and importlib.util.find_spec("kopf") is None:
        sys.stderr.write(
            "moorage-cache: error: the controller needs the operator extra: "
            "pip install 'moorage-cache[operator]'\n"
        )
        return 1
    try:
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # a kubeconfig we cannot use
        logging.getLogger(__name__).error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
