"""One typed error hierarchy for every moorage package.

Each error knows its HTTP status and a stable machine-readable ``code``; the gRPC status is
derived from the HTTP status through :data:`HTTP_TO_GRPC`, a plain table kept here as data so
that the server's REST handler, its gRPC interceptor and the clients all read the same mapping.

::

    MoorageError                      500  internal
    ├── InvalidInput                  400  invalid_input
    │   ├── InvalidTensor             400  invalid_tensor       (shape/datatype/data mismatch)
    │   ├── UnsupportedDatatype       400  unsupported_datatype
    │   └── PayloadTooLarge           413  payload_too_large
    ├── ValidationError               422  validation_error     (a resource failed KServe's rules)
    ├── InvalidStorageURI             400  invalid_storage_uri
    ├── ModelNotFound                 404  model_not_found
    ├── NotFound                      404  not_found
    ├── ModelNotReady                 503  model_not_ready
    ├── ServerNotReady                503  server_not_ready
    ├── Overloaded                    503  overloaded
    ├── Unauthenticated               401  unauthenticated
    ├── PermissionDenied              403  permission_denied
    ├── Timeout                       504  timeout
    ├── UnsupportedProtocol           400  unsupported_protocol
    ├── InferenceError                500  inference_error      (the model's own code raised)
    ├── ServerError                   500  server_error
    ├── ConnectionFailed              503  connection_failed    (client could not reach the server)
    └── StorageError                  500  storage_error
        ├── StorageNotFound           404  storage_not_found    ("no model found")
        ├── StorageAuthError          403  storage_auth_error
        ├── UnsupportedScheme         400  unsupported_scheme
        ├── IntegrityError            500  integrity_error      (size/hash mismatch)
        └── UnsafeArchive             400  unsafe_archive
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar

__all__ = [
    "ERROR_CODE_METADATA",
    "GRPC_STATUS_NAMES",
    "HTTP_TO_GRPC",
    "ConnectionFailed",
    "InferenceError",
    "IntegrityError",
    "InvalidInput",
    "InvalidStorageURI",
    "InvalidTensor",
    "ModelNotFound",
    "ModelNotReady",
    "MoorageError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PermissionDenied",
    "ServerError",
    "ServerNotReady",
    "StorageAuthError",
    "StorageError",
    "StorageNotFound",
    "Timeout",
    "Unauthenticated",
    "UnsafeArchive",
    "UnsupportedDatatype",
    "UnsupportedProtocol",
    "UnsupportedScheme",
    "ValidationError",
    "error_for_code",
    "error_for_status",
    "grpc_status_for",
]

#: gRPC trailing-metadata key in which servers send an error's stable ``code`` (the REST body's
#: ``"code"``), so that a client raises the same typed error over either transport.
ERROR_CODE_METADATA = "moorage-error-code"

#: HTTP status -> gRPC status code name (``grpc.StatusCode`` member names, so that core needs no
#: grpc import). Statuses missing here map to ``UNKNOWN`` for 5xx and ``INVALID_ARGUMENT`` for 4xx.
HTTP_TO_GRPC: dict[HTTPStatus, str] = {
    HTTPStatus.BAD_REQUEST: "INVALID_ARGUMENT",
    HTTPStatus.UNAUTHORIZED: "UNAUTHENTICATED",
    HTTPStatus.FORBIDDEN: "PERMISSION_DENIED",
    HTTPStatus.NOT_FOUND: "NOT_FOUND",
    HTTPStatus.CONFLICT: "ALREADY_EXISTS",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "RESOURCE_EXHAUSTED",
    HTTPStatus.UNPROCESSABLE_ENTITY: "INVALID_ARGUMENT",
    HTTPStatus.TOO_MANY_REQUESTS: "RESOURCE_EXHAUSTED",
    HTTPStatus.INTERNAL_SERVER_ERROR: "INTERNAL",
    HTTPStatus.NOT_IMPLEMENTED: "UNIMPLEMENTED",
    HTTPStatus.SERVICE_UNAVAILABLE: "UNAVAILABLE",
    HTTPStatus.GATEWAY_TIMEOUT: "DEADLINE_EXCEEDED",
}

#: gRPC status code name -> HTTP status, for turning a gRPC failure back into a typed error.
GRPC_STATUS_NAMES: dict[str, HTTPStatus] = {
    "INVALID_ARGUMENT": HTTPStatus.BAD_REQUEST,
    "UNAUTHENTICATED": HTTPStatus.UNAUTHORIZED,
    "PERMISSION_DENIED": HTTPStatus.FORBIDDEN,
    "NOT_FOUND": HTTPStatus.NOT_FOUND,
    "ALREADY_EXISTS": HTTPStatus.CONFLICT,
    "RESOURCE_EXHAUSTED": HTTPStatus.TOO_MANY_REQUESTS,
    "INTERNAL": HTTPStatus.INTERNAL_SERVER_ERROR,
    "UNKNOWN": HTTPStatus.INTERNAL_SERVER_ERROR,
    "UNIMPLEMENTED": HTTPStatus.NOT_IMPLEMENTED,
    "UNAVAILABLE": HTTPStatus.SERVICE_UNAVAILABLE,
    "DEADLINE_EXCEEDED": HTTPStatus.GATEWAY_TIMEOUT,
    "FAILED_PRECONDITION": HTTPStatus.BAD_REQUEST,
    "OUT_OF_RANGE": HTTPStatus.BAD_REQUEST,
    "CANCELLED": HTTPStatus.SERVICE_UNAVAILABLE,
}


def grpc_status_for(status: HTTPStatus | int) -> str:
    """The gRPC status code name for an HTTP status."""
    status = HTTPStatus(status)
    if status in HTTP_TO_GRPC:
        return HTTP_TO_GRPC[status]
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "UNKNOWN"


class MoorageError(Exception):
    """Base of every error moorage raises on purpose.

    ``message`` is meant for the person reading it: it says what was wrong and, where it
    helps, what to do. ``details`` carries structured context (a field path, a model name).
    """

    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def grpc_status(self) -> str:
        """The gRPC status code name (``grpc.StatusCode`` member) for this error."""
        return grpc_status_for(self.status)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidInput(MoorageError):
    """The request or argument is malformed."""

    status = HTTPStatus.BAD_REQUEST
    code = "invalid_input"


class InvalidTensor(InvalidInput):
    """A tensor's shape, datatype and data do not agree."""

    code = "invalid_tensor"


class UnsupportedDatatype(InvalidInput):
    """A datatype name that the Open Inference Protocol does not define or that is unsupported."""

    code = "unsupported_datatype"


class PayloadTooLarge(InvalidInput):
    """The request body exceeds the configured limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class ValidationError(MoorageError):
    """A resource (InferenceService, ServingRuntime, ...) breaks a validation rule.

    ``field`` is the dotted path of the offending field, e.g. ``spec.predictor.minReplicas``;
    ``str(error)`` reads ``"<field>: <message>"`` like the API server's admission errors.
    """

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_error"

    def __init__(self, message: str, /, *, field: str = "", **details: Any) -> None:
        super().__init__(f"{field}: {message}" if field else message, field=field, **details)
        self.field = field
        self.reason = message


class InvalidStorageURI(MoorageError):
    """A storage URI that does not parse or uses an unsupported form."""

    status = HTTPStatus.BAD_REQUEST
    code = "invalid_storage_uri"


class ModelNotFound(MoorageError):
    """No model (or model version) of that name is known to the server."""

    status = HTTPStatus.NOT_FOUND
    code = "model_not_found"


class NotFound(MoorageError):
    """A resource other than a model does not exist."""

    status = HTTPStatus.NOT_FOUND
    code = "not_found"


class ModelNotReady(MoorageError):
    """The model exists but is not loaded/ready."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "model_not_ready"


class ServerNotReady(MoorageError):
    """The server is starting or stopping."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "server_not_ready"


class Overloaded(MoorageError):
    """The server refuses work because its queue is full."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "overloaded"


class Unauthenticated(MoorageError):
    """Credentials are missing or not accepted."""

    status = HTTPStatus.UNAUTHORIZED
    code = "unauthenticated"


class PermissionDenied(MoorageError):
    """Credentials are valid but do not allow the operation."""

    status = HTTPStatus.FORBIDDEN
    code = "permission_denied"


class Timeout(MoorageError):
    """An operation ran past its deadline."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "timeout"


class UnsupportedProtocol(MoorageError):
    """The operation does not exist in the protocol version in use (e.g. ``explain`` on v2)."""

    status = HTTPStatus.BAD_REQUEST
    code = "unsupported_protocol"


class InferenceError(MoorageError):
    """The model's own code failed while handling a request."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "inference_error"


class ServerError(MoorageError):
    """The server failed for a reason that is not the caller's."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "server_error"


class ConnectionFailed(MoorageError):
    """The client could not reach the server (refused, reset, DNS, TLS)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "connection_failed"


class StorageError(MoorageError):
    """Moving model bytes failed."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "storage_error"


class StorageNotFound(StorageError):
    """The source holds nothing at that URI."""

    status = HTTPStatus.NOT_FOUND
    code = "storage_not_found"


class StorageAuthError(StorageError):
    """The source refused the credentials (or their absence)."""

    status = HTTPStatus.FORBIDDEN
    code = "storage_auth_error"


class UnsupportedScheme(StorageError):
    """The URI scheme is not one the storage initializer handles."""

    status = HTTPStatus.BAD_REQUEST
    code = "unsupported_scheme"


class IntegrityError(StorageError):
    """Downloaded bytes do not match the size or hash the source declares."""

    code = "integrity_error"


class UnsafeArchive(StorageError):
    """An archive member would escape the destination or is otherwise unsafe."""

    status = HTTPStatus.BAD_REQUEST
    code = "unsafe_archive"


def _all_subclasses(cls: type[MoorageError]) -> list[type[MoorageError]]:
    found: list[type[MoorageError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


_ERROR_CLASSES: list[type[MoorageError]] = [MoorageError, *_all_subclasses(MoorageError)]
_BY_CODE: dict[str, type[MoorageError]] = {c.code: c for c in _ERROR_CLASSES}

#: The class a client raises for a bare HTTP status when the body carries no ``code``.
_BY_STATUS: dict[HTTPStatus, type[MoorageError]] = {
    HTTPStatus.BAD_REQUEST: InvalidInput,
    HTTPStatus.UNAUTHORIZED: Unauthenticated,
    HTTPStatus.FORBIDDEN: PermissionDenied,
    HTTPStatus.NOT_FOUND: ModelNotFound,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: PayloadTooLarge,
    HTTPStatus.UNPROCESSABLE_ENTITY: InvalidInput,
    HTTPStatus.TOO_MANY_REQUESTS: Overloaded,
    HTTPStatus.SERVICE_UNAVAILABLE: ModelNotReady,
    HTTPStatus.GATEWAY_TIMEOUT: Timeout,
}


def error_for_code(code: str) -> type[MoorageError] | None:
    """The error class with that stable ``code``, if any."""
    return _BY_CODE.get(code)


def error_for_status(status: HTTPStatus | int) -> type[MoorageError]:
    """The most fitting error class for an HTTP status (used by clients)."""
    try:
        status = HTTPStatus(status)
    except ValueError:
        return ServerError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return InvalidInput if 400 <= status < 500 else ServerError
