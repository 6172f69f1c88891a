"""Transformer mode: a model's default ``predict`` forwards to a remote predictor.

KServe's pre/post-processing pattern: a transformer overrides ``preprocess`` and
``postprocess`` and leaves ``predict`` alone; with ``--predictor_host`` (and
``--predictor_protocol v1|v2|grpc-v2``, ``--predictor_use_ssl``,
``--predictor_request_timeout_seconds``) that ``predict`` sends the preprocessed payload to the
predictor's model of the same name and returns its answer. The forwarding itself (protocols,
headers, typed errors, pooled connections) is :mod:`moorage.server.predictor`; this module gives
registered models the server's predictor settings.
"""

from __future__ import annotations

from moorage.core.config.server import ServerSettings
from moorage.server.model import Model, PredictorConfig

__all__ = ["apply_predictor_settings", "predictor_config"]


def predictor_config(settings: ServerSettings) -> PredictorConfig:
    """The :class:`PredictorConfig` of ``--predictor_host`` and friends."""
    return PredictorConfig(
        predictor_host=settings.predictor_host,
        predictor_protocol=settings.effective_predictor_protocol,
        predictor_use_ssl=settings.predictor_use_ssl,
        predictor_request_timeout_seconds=settings.predictor_request_timeout_seconds,
    )


def apply_predictor_settings(model: Model, settings: ServerSettings) -> None:
    """Give ``model`` the server's ``--predictor_host`` when it has no predictor of its own."""
    if not settings.predictor_host or model.predictor_host:
        return
    config = predictor_config(settings)
    model.predictor_config = config
    model.predictor_host = config.predictor_host
    model.protocol = config.predictor_protocol
    model.use_ssl = config.predictor_use_ssl
    model.timeout = config.predictor_request_timeout_seconds
