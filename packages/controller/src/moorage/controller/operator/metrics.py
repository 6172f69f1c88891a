"""The operator's Prometheus metrics (module-level collectors, ``moorage_controller_*``).

Served on ``--metrics-port`` (8080 by default, 0 to disable) at ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "APPLIED",
    "PRUNED",
    "QUEUE_DEPTH",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "RENDER_FAILURES",
    "STATUS_WRITES",
    "serve",
]

RECONCILES = Counter(
    "moorage_controller_reconciles_total",
    "InferenceService reconciles, by result (success, retry, error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "moorage_controller_reconcile_duration_seconds",
    "Time to reconcile one InferenceService (render, apply, prune, status).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RENDER_FAILURES = Counter(
    "moorage_controller_render_failures_total",
    "Renderings that failed, by KServe's reason (NoSupportingRuntime, ...).",
    ["reason"],
)
APPLIED = Counter(
    "moorage_controller_applied_objects_total", "Objects server-side applied, by kind.", ["kind"]
)
PRUNED = Counter(
    "moorage_controller_pruned_objects_total",
    "Owned objects deleted because a rendering no longer contains them, by kind.",
    ["kind"],
)
STATUS_WRITES = Counter(
    "moorage_controller_status_writes_total", "InferenceService status patches sent."
)
QUEUE_DEPTH = Gauge("moorage_controller_queue_depth", "InferenceServices waiting to be reconciled.")


def serve(port: int, *, host: str = "0.0.0.0") -> None:
    """Expose the default registry on ``host:port`` (a daemon thread)."""
    start_http_server(port, addr=host)
