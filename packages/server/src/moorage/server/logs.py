"""Log records with request context, and JSON log lines.

:class:`RequestContextFilter` puts the current request id (from
:data:`~moorage.server.dataplane.request_id_var`) on every record that does not carry one, so
``%(request_id)s`` works in any format and JSON lines always have it. :class:`JsonFormatter`
writes one JSON object per record: ``time``, ``level``, ``logger``, ``message``, ``request_id``,
every ``extra={...}`` field (``model``, ``status``, ``duration_ms``, ...), and ``exc_info`` as
text. :func:`configure_logging` is what the entry point calls (``--configure_logging``,
``--log_format json``); libraries never configure logging.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import sys
import time
from typing import Any

import orjson

from moorage.server.dataplane import request_id_var

__all__ = [
    "TEXT_FORMAT",
    "JsonFormatter",
    "RequestContextFilter",
    "TextHandler",
    "install_handler",
    "plain_text_handler",
]

TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s: %(message)s"

#: Seconds :class:`TextHandler` leaves between two writes of access lines on an event loop.
WRITE_INTERVAL_S = 0.05

#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "taskName"}
)


class RequestContextFilter(logging.Filter):
    """Sets ``record.request_id`` from the request context when the record has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (orjson), extras included."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


#: This process's id, kept current across forks (``os.getpid`` is a system call, and a text line
#: carries the pid).
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class TextHandler(logging.StreamHandler):
    """The text-line handler :func:`install_handler` installs; :meth:`write_line` writes a
    message as :meth:`emit` would write a record carrying it, without building the record (for
    the access log, one line per request; see :func:`plain_text_handler`).

    Lines given to :meth:`write_line` on an event loop's thread are written together: once the
    loop has run the callbacks ready with them, and no sooner than :data:`WRITE_INTERVAL_S`
    after the previous write. A busy server so makes about 20 writes a second whatever its
    request rate (each ``write`` to a file costs tens of microseconds), and a lone request's
    line goes out at once. Any other record, :meth:`flush` and :meth:`close` write the waiting
    lines first, so lines keep their order; logging's shutdown at exit flushes."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S"))
        #: ``%H:%M:%S`` of the second ``_second`` (lines in the same second share it)
        self._second = -1
        self._clock = ""
        #: lines :meth:`write_line` was given and has not written yet
        self._waiting: list[str] = []
        #: ``time.monotonic()`` of the last write of waiting lines
        self._written_at = 0.0

    def write_line(self, logger_name: str, levelname: str, message: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._clock = time.strftime("%H:%M:%S", time.localtime(now))
            self._second = second
        line = (
            f"{self._clock}.{int(now * 1000) % 1000:03d}"
            f" {_pid} {levelname} {logger_name}: {message}{self.terminator}"
        )
        waiting = self._waiting
        with self.lock:  # type: ignore[union-attr]
            waiting.append(line)
            if len(waiting) > 1:  # a write of the waiting lines is already due
                return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: write it now
            self._write_waiting()
            return
        wait = self._written_at + WRITE_INTERVAL_S - time.monotonic()
        if wait > 0:
            loop.call_later(min(wait, WRITE_INTERVAL_S), self._write_waiting)
        else:
            loop.call_soon(self._write_waiting)

    def _write_waiting(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._waiting:
                return
            self._written_at = time.monotonic()
            text = "".join(self._waiting)
            self._waiting.clear()
            stream = self.stream
            stream.write(text)
            if hasattr(stream, "flush"):
                stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._waiting:
            self._write_waiting()
        super().emit(record)

    def flush(self) -> None:
        if self._waiting:
            self._write_waiting()
        super().flush()

    def close(self) -> None:
        self.flush()
        super().close()


def plain_text_handler(logger: logging.Logger, level: int) -> TextHandler | None:
    """The one handler a ``level`` record of ``logger`` reaches, when that is a
    :class:`TextHandler` with no filter but :class:`RequestContextFilter` (which changes
    nothing in a text line) and no logger on the way filters: then writing the line to it is
    what logging would do. ``None`` in any other configuration (JSON lines, a logging config
    file, handlers added by tests or libraries, ...)."""
    found: TextHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not TextHandler
                or level < handler.level
                or any(type(f) is not RequestContextFilter for f in handler.filters)
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def install_handler(*, level: str = "INFO", json: bool = False) -> logging.Handler:
    """A stderr handler on the root logger with the request-context filter (entry points only)."""
    handler: logging.Handler
    if json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = TextHandler(sys.stderr)
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
