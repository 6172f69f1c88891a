"""Errors of the local backend, in core's hierarchy (each carries a status and a stable code)."""

from __future__ import annotations

from http import HTTPStatus

from moorage.core.errors import MoorageError

__all__ = [
    "LocalRunError",
    "PortInUse",
    "ServerCrashed",
    "ServerStartTimeout",
    "UnsupportedLocally",
]


class LocalRunError(MoorageError):
    """``moorage run`` could not start or keep the InferenceService running."""

    code = "local_run_error"


class PortInUse(LocalRunError):
    """A port moorage was asked to listen on is taken; nothing was started."""

    status = HTTPStatus.CONFLICT
    code = "port_in_use"


class UnsupportedLocally(LocalRunError):
    """The InferenceService needs something only a cluster has (an image, a PVC, a secret)."""

    status = HTTPStatus.BAD_REQUEST
    code = "unsupported_locally"


class ServerCrashed(LocalRunError):
    """A server process exited on its own; ``details["log_tail"]`` holds its last lines."""

    code = "server_crashed"


class ServerStartTimeout(LocalRunError):
    """A server process did not become ready in time."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "server_start_timeout"
