"""Progress: a rich bar on a terminal, periodic structured log lines otherwise.

The engine calls :meth:`Progress.advance` from worker threads; it only adds to a counter under a
lock. A reporter thread renders every ``interval`` seconds, so reporting costs nothing per chunk.
Log lines carry ``extra={"uri", "bytes_done", "bytes_total", "files_done", "files_total",
"rate_bytes_s"}`` for structured handlers.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Literal

__all__ = ["Progress"]

logger = logging.getLogger("moorage.storage.progress")


class Progress:
    def __init__(
        self,
        uri: str,
        *,
        mode: Literal["auto", "bar", "log", "off"] = "auto",
        interval: float = 5.0,
    ) -> None:
        self.uri = uri
        self.interval = interval
        self.bytes_total = 0
        self.bytes_done = 0
        self.files_total = 0
        self.files_done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self._bar: Any = None
        self._task: Any = None

    # -- counters (called from worker threads) --------------------------------------------------
    def add_total(self, nbytes: int, files: int = 0) -> None:
        with self._lock:
            self.bytes_total += nbytes
            self.files_total += files

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_done += nbytes

    def rewind(self, nbytes: int) -> None:
        """Take back bytes that will be fetched again (a retried part)."""
        with self._lock:
            self.bytes_done -= nbytes

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    # -- reporting ------------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.mode == "off":
            return self
        if self.mode == "bar":
            try:
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:
                self.mode = "log"
            else:
                self._bar = RichProgress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    transient=False,
                )
                self._bar.start()
                self._task = self._bar.add_task(self.uri, total=None)
        self._thread = threading.Thread(target=self._run, name="moorage-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._render(final=True)
        if self._bar is not None:
            self._bar.stop()

    def _run(self) -> None:
        period = 0.2 if self.mode == "bar" else self.interval
        while not self._stop.wait(period):
            self._render()

    def _render(self, *, final: bool = False) -> None:
        with self._lock:
            done, total = self.bytes_done, self.bytes_total
            fdone, ftotal = self.files_done, self.files_total
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None)
        elif self.mode == "log" and (total or final):
            pct = 100.0 * done / total if total else 100.0
            logger.info(
                "%s: %d/%d bytes (%.1f%%), %d/%d files, %.1f MB/s",
                self.uri,
                done,
                total,
                pct,
                fdone,
                ftotal,
                rate / 1e6,
                extra={
                    "uri": self.uri,
                    "bytes_done": done,
                    "bytes_total": total,
                    "files_done": fdone,
                    "files_total": ftotal,
                    "rate_bytes_s": rate,
                },
            )
