"""The pre-fork supervisor of ``--workers N``: forks the workers, replaces the ones that die.

The parent binds the HTTP socket, then :class:`Supervisor` forks ``N`` workers that serve on it
(each runs the whole server: event loop, models, gRPC with ``SO_REUSEPORT``). The parent
forwards SIGTERM, SIGINT and SIGQUIT to every worker and waits for them; that is the graceful
shutdown, and the parent exits with the first failing worker's status.

A worker that exits while no shutdown was asked for (killed by the OOM killer or ``kill -9``,
a crash in native code, any exit) is logged and replaced by a new worker with the same index.
A worker that could not start (its models failed to load, a port was taken: exit status
:data:`BOOT_FAILED`) is not replaced, since its replacement would fail the same way; the parent
exits with status 1 once no worker is left. Crash-loop brake: a worker that dies within
:data:`MIN_UPTIME_S` of its start counts as a fast death, and each consecutive fast death waits
longer before the replacement (:data:`RESTART_BACKOFF`); one worker that lived longer resets
the count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from moorage.core.retry import Backoff

__all__ = ["BOOT_FAILED", "MIN_UPTIME_S", "RESTART_BACKOFF", "BootFailed", "Supervisor"]

logger = logging.getLogger(__name__)

#: A worker's exit status when it failed before serving (gunicorn's ``WORKER_BOOT_ERROR``).
BOOT_FAILED = 3
#: A worker that dies sooner than this after its fork counts toward the crash-loop brake.
MIN_UPTIME_S = 10.0
#: The wait before replacing the n-th consecutive fast death (the first is replaced at once).
RESTART_BACKOFF = Backoff(initial=0.5, maximum=30.0, jitter=False, immediate_first=True)
#: How often the parent looks for exited workers while a replacement waits for its turn.
_POLL_S = 0.1
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class BootFailed(Exception):
    """Raised by a worker's target when it failed before serving (exit :data:`BOOT_FAILED`)."""


class Supervisor:
    """Runs ``target`` in ``count`` forked workers until a signal asks them all to stop."""

    def __init__(
        self,
        target: Callable[[], None],
        count: int,
        *,
        min_uptime: float = MIN_UPTIME_S,
        backoff: Backoff = RESTART_BACKOFF,
    ) -> None:
        self.target = target
        self.count = count
        self.min_uptime = min_uptime
        self.backoff = backoff
        #: pid -> (worker index, monotonic time of its fork)
        self.children: dict[int, tuple[int, float]] = {}
        #: (monotonic time due, worker index) of the replacements waiting for the brake
        self.pending: list[tuple[float, int]] = []
        self.stopping: int | None = None  # the signal that asked for the shutdown
        self.status = 0
        self.fast_deaths = 0

    # ------------------------------------------------------------------ parent
    def run(self) -> int:
        """Fork the workers and supervise them until they all exited; the exit status."""
        previous = {sig: signal.signal(sig, self._forward) for sig in _SIGNALS}
        try:
            for index in range(self.count):
                self._spawn(index)
            logger.info("started %d workers: %s", self.count, list(self.children))
            while self.children or (self.pending and self.stopping is None):
                self._step()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.status

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: remember the shutdown and pass the signal to every worker."""
        self.stopping = sig
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _step(self) -> None:
        if self.pending and self.stopping is None:
            due, index = min(self.pending)
            wait = due - time.monotonic()
            if wait <= 0:
                self.pending.remove((due, index))
                self._spawn(index, replacement=True)
                return
            pid, status = os.waitpid(-1, os.WNOHANG) if self.children else (0, 0)
            if pid == 0:
                time.sleep(min(wait, _POLL_S))
                return
        else:
            self.pending.clear()
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:  # nothing left to wait for
                self.children.clear()
                return
        self._reaped(pid, os.waitstatus_to_exitcode(status))

    def _reaped(self, pid: int, code: int) -> None:
        entry = self.children.pop(pid, None)
        if entry is None:
            return  # not one of ours
        index, started = entry
        if self.stopping is not None:
            if code == -self.stopping:
                code = 0  # still starting, it ended by the signal's default action: as asked
            self.status = self.status or (1 if code == BOOT_FAILED else code)
            return
        if code == BOOT_FAILED:
            logger.error("worker %d (pid %d) failed to start; not replacing it", index, pid)
            self.status = self.status or 1
            return
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        lived = time.monotonic() - started
        if lived < self.min_uptime:
            self.fast_deaths += 1
        else:
            self.fast_deaths = 0
        delay = self.backoff.delay(self.fast_deaths) if self.fast_deaths else 0.0
        logger.error(
            "worker %d (pid %d) %s after %.1f s; replacing it%s",
            index,
            pid,
            how,
            lived,
            f" in {delay:.1f} s ({self.fast_deaths} quick deaths in a row)" if delay else "",
        )
        self.pending.append((time.monotonic() + delay, index))

    def _spawn(self, index: int, *, replacement: bool = False) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            self._child(index)
        self.children[pid] = (index, time.monotonic())
        if self.stopping is not None:  # a signal came between the check and the fork
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, self.stopping)
        elif replacement:
            logger.info("started worker %d (pid %d) in place of the one that died", index, pid)

    # ------------------------------------------------------------------ child
    def _child(self, index: int) -> None:  # pragma: no cover - runs in the child
        code = 0
        try:
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            self.target()
        except BootFailed:
            logger.exception("worker %d failed to start", index)
            code = BOOT_FAILED
        except BaseException:
            logger.exception("worker %d failed", index)
            code = 1
        finally:
            logging.shutdown()  # the log lines handlers still hold
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
