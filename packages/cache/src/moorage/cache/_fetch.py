"""One download, in a child process of the agent: ``python -m moorage.cache._fetch URI DEST``.

The agent runs each download in its own process so that it can stop one at once (a model no
longer wanted, a model bigger than its size or the node's limit) and so that a download's memory
is returned when it ends. The child calls :func:`moorage.storage.download` (atomic, resumable,
verified) and writes one JSON object a line to stdout::

    {"event": "progress", "done": 1048576, "total": 268435456}
    {"event": "done", "fetched": 268435456, "skipped": false}
    {"event": "error", "code": "storage_not_found", "message": "..."}

It exits when the agent does (stdin closes; on Linux also through ``PR_SET_PDEATHSIG``), leaving
the staged parts for the next try to resume. Credentials come from its environment, under
KServe's variable names; messages never carry them.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

__all__ = ["main"]

#: How often the child reports progress (seconds).
PROGRESS_INTERVAL_S = 0.25


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _ProgressHandler(logging.Handler):
    """Turns :mod:`moorage.storage`'s structured progress records into JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        done = getattr(record, "bytes_done", None)
        total = getattr(record, "bytes_total", None)
        if done is not None and total is not None:
            _emit(event="progress", done=int(done), total=int(total))


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch_stdin() -> None:
        try:
            while os.read(0, 1):  # the raw descriptor: no buffer lock held at shutdown
                pass
        finally:
            os._exit(70)

    threading.Thread(target=watch_stdin, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in args
    positional = [a for a in args if a != "--force"]
    if len(positional) != 2:
        print("usage: python -m moorage.cache._fetch [--force] URI DEST", file=sys.stderr)
        return 2
    _die_with_parent()
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    progress = logging.getLogger("moorage.storage.progress")
    progress.setLevel(logging.INFO)
    progress.propagate = False
    progress.addHandler(_ProgressHandler())

    from moorage.core.config.storage import StorageSettings
    from moorage.core.errors import MoorageError
    from moorage.storage import download, last_download_stats

    uri, dest = positional
    try:
        settings = StorageSettings(progress="log", progress_interval_s=PROGRESS_INTERVAL_S)
        download(uri, dest, settings=settings, force=force)
    except MoorageError as exc:
        _emit(event="error", code=exc.code, message=exc.message)
        return 1
    except Exception as exc:  # the agent reports it; the traceback goes to the log
        logging.getLogger(__name__).exception("download failed")
        _emit(event="error", code="internal", message=f"{type(exc).__name__}: {exc}")
        return 1
    stats = last_download_stats()
    _emit(event="done", fetched=stats.fetched_bytes, skipped=stats.skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
