"""``moorage operator``: its command line, and the process around kopf.

::

    moorage operator [--kubeconfig FILE] [--namespace NS] [--workers 8] [--metrics-port 8080]
                     [--no-leader-election] [--log-format json|text]

Credentials: ``--kubeconfig`` (or ``$KUBECONFIG``), else the pod's service account (in-cluster).
The ``inferenceservice-config`` ConfigMap, the leader Lease and KServe's other settings live in
``$POD_NAMESPACE`` (default ``kserve``), as KServe's controller has them. SIGTERM/SIGINT stop it
gracefully: kopf stops watching, the workers finish, the Lease is released.

This module imports no kopf at import time (``moorage`` works without the ``operator`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from typing import Any

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``operator`` subcommand to ``moorage``'s subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "operator",
        help="reconcile InferenceServices on a cluster (needs the [operator] extra)",
        description="Watch InferenceServices and their runtimes, ConfigMap, ServiceAccounts, "
        "Secrets and LocalModelCaches; apply what KServe's RawDeployment controller creates "
        "(server-side apply, owner references, pruning) and write KServe's status.",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else in-cluster)"
    )
    parser.add_argument(
        "--namespace", help="serve InferenceServices of this namespace only (default: all)"
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="InferenceServices reconciled at once (8)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="port of the Prometheus /metrics endpoint (8080; 0 disables it)",
    )
    parser.add_argument(
        "--api-qps",
        type=float,
        default=500.0,
        help="calls a second to the API server at most, on average, watches aside "
        "(500; 0: no limit)",
    )
    parser.add_argument("--api-burst", type=int, default=1000, help="calls in a burst (1000)")
    parser.add_argument(
        "--no-leader-election",
        action="store_true",
        help="do not wait for the Lease (only with a single replica)",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="serve the admission webhooks (defaulting, validation) of KServe's kinds and keep "
        "their configurations (moorage.serving.kserve.io) pointing here",
    )
    parser.add_argument("--webhook-port", type=int, default=9443, help="HTTPS port (9443)")
    parser.add_argument(
        "--webhook-host",
        help="the name the API server reaches the webhooks at (default: "
        "moorage-operator.$POD_NAMESPACE.svc)",
    )
    parser.add_argument("--log-format", choices=("json", "text"), default="text")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    return parser


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the InferenceService's ``isvc``/``namespace`` when known."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("isvc", "namespace"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    """Run the operator until stopped; the exit code."""
    _configure_logging(args.log_format, args.verbose)
    try:
        import kopf  # noqa: F401
    except ImportError:
        sys.stderr.write(
            "moorage: error: the operator needs the operator extra: "
            "pip install 'moorage-controller[operator]'\n"
        )
        return 1
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    import kopf

    from moorage.controller.operator import metrics
    from moorage.controller.operator.client import KubeClient
    from moorage.controller.operator.controller import Controller
    from moorage.controller.operator.handlers import build_registry
    from moorage.controller.operator.lease import LeaderElector

    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) if not args.kubeconfig else None
    info = info or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        sys.stderr.write(
            "moorage: error: no credentials: pass --kubeconfig, set $KUBECONFIG, or run in a pod\n"
        )
        return 1
    config_namespace = os.environ.get("POD_NAMESPACE") or "kserve"
    client = KubeClient(info, qps=args.api_qps, burst=args.api_burst)
    controller = Controller(client, config_namespace=config_namespace, workers=args.workers)
    registry = build_registry(
        controller, config_namespace=config_namespace, namespace=args.namespace
    )

    certificates = None
    if args.webhooks:
        import tempfile
        from pathlib import Path

        from moorage.controller.operator.webhooks import (
            CONFIGURATION_NAME,
            register_webhooks,
            webhook_server,
        )

        register_webhooks(registry, controller)
        certificates = tempfile.TemporaryDirectory(prefix="moorage-webhook-")
        host = args.webhook_host or f"moorage-operator.{config_namespace}.svc"
        settings.admission.server = webhook_server(
            host=host, port=args.webhook_port, directory=Path(certificates.name)
        )
        settings.admission.managed = CONFIGURATION_NAME

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return info

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 330
        controller.start()

    stop = asyncio.Event()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.stop()
        stop.set()  # kopf waits for its stop-flag waiter to end before it exits

    if args.metrics_port:
        metrics.serve(args.metrics_port)
    elector: LeaderElector | None = None
    if not args.no_leader_election:
        identity = f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaderElector(client, identity=identity, namespace=config_namespace)
        await elector.acquire()
    keeper = asyncio.create_task(elector.keep()) if elector else None
    if keeper is not None:
        keeper.add_done_callback(lambda _: stop.set())
    namespaces = [args.namespace, config_namespace] if args.namespace else []
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=stop,
        )
    finally:
        if keeper is not None:
            keeper.cancel()
        if elector is not None and not elector.lost.is_set():
            await elector.release()
        await client.close()
        if certificates is not None:
            certificates.cleanup()
    return 1 if elector is not None and elector.lost.is_set() else 0
