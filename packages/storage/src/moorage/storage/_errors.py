"""The error boundary: foreign exceptions become core's typed storage errors, scrubbed.

Every message names the URI and the cause. :func:`translate` is the one place that maps
HTTP statuses and SDK exceptions to :mod:`moorage.core.errors` classes; providers raise the core
classes directly when they know better.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from moorage.core.errors import (
    MoorageError,
    StorageAuthError,
    StorageError,
    StorageNotFound,
)
from moorage.storage._http import HttpError
from moorage.storage._redact import scrub

__all__ = ["error_boundary", "missing_extra", "translate"]


def missing_extra(module: str, extra: str) -> StorageError:
    """The error raised when an optional dependency of an extra is not installed."""
    return StorageError(
        f"{module} is not installed; install it with: pip install 'moorage-storage[{extra}]'",
        extra=extra,
    )


def _status_class(status: int) -> type[StorageError]:
    if status in (401, 403):
        return StorageAuthError
    if status == 404:
        return StorageNotFound
    return StorageError


def translate(exc: BaseException, uri: str) -> MoorageError:
    """A typed, scrubbed error for ``exc`` raised while fetching ``uri``."""
    if isinstance(exc, MoorageError):
        message = scrub(exc.message)
        if uri not in message:
            message = f"{uri}: {message}"
        clone = type(exc).__new__(type(exc))
        MoorageError.__init__(clone, message, **exc.details)
        for name, value in vars(exc).items():
            if name not in ("message", "details", "args"):
                setattr(clone, name, value)
        return clone
    if isinstance(exc, HttpError):
        cls = _status_class(exc.status)
        return cls(f"{uri}: {scrub(str(exc))}", uri=uri, status=exc.status)
    status = _sdk_status(exc)
    cls = _status_class(status) if status else StorageError
    text = scrub(f"{type(exc).__name__}: {exc}")
    return cls(f"{uri}: {text}", uri=uri)


def _sdk_status(exc: BaseException) -> int:
    """The HTTP status carried by a botocore/google/azure exception, or 0."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        meta = response.get("ResponseMetadata", {})
        code = str(response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
            return 404
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return 403
        return int(meta.get("HTTPStatusCode", 0) or 0)
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    return 0


@contextlib.contextmanager
def error_boundary(uri: str) -> Iterator[None]:
    """Re-raise anything escaping the block as a typed, scrubbed moorage error."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise translate(exc, uri) from None
