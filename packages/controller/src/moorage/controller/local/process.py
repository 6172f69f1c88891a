"""A server process we started: its output echoed with a prefix and kept for a crash report,
readiness polling, and a stop that escalates from SIGTERM to SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import TextIO

from moorage.controller.local.errors import ServerCrashed, ServerStartTimeout
from moorage.controller.local.spec import ProcessSpec

__all__ = ["ManagedProcess"]

_TAIL_LINES = 200
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this child if moorage itself dies (even by SIGKILL), so no server lingers."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ManagedProcess:
    """One child process for a :class:`ProcessSpec`.

    The child gets its own session, so a Ctrl-C in the terminal reaches only ``moorage``, which
    then stops the children in order. Output (stdout and stderr together) is echoed to ``echo``
    line by line as ``[component] line`` and the last lines are kept for :meth:`tail`.
    """

    def __init__(self, spec: ProcessSpec, *, echo: TextIO | None = None) -> None:
        self.spec = spec
        self._echo = echo
        self._lines: deque[str] = deque(maxlen=_TAIL_LINES)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
        self._proc = subprocess.Popen(
            self.spec.argv,
            cwd=self.spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self._reader = threading.Thread(
            target=self._read, name=f"moorage-{self.spec.component}-log", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        prefix = f"[{self.spec.component}] "
        for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                self._lines.append(line)
            if self._echo is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._echo.write(prefix + line + "\n")
                    self._echo.flush()

    def poll(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self._proc.poll() if self._proc is not None else None

    def tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines the process wrote."""
        if self._reader is not None and self.poll() is not None:
            self._reader.join(timeout=1.0)
        with self._lock:
            return list(self._lines)[-lines:]

    def crashed(self) -> ServerCrashed:
        """The error describing this process's unexpected exit."""
        code = self.poll()
        tail = self.tail()
        how = (
            f"exited with code {code}"
            if code is not None and code >= 0
            else (f"was killed by signal {-(code or 0)}")
        )
        text = "\n".join(f"    {line}" for line in tail) or "    (no output)"
        return ServerCrashed(
            f"the {self.spec.component} ({' '.join(self.spec.argv[:3])} ...) {how}; "
            f"its last log lines:\n{text}",
            component=self.spec.component,
            exit_code=code,
            log_tail=tail,
        )

    def wait_ready(
        self, *, timeout: float, should_stop: Callable[[], bool] = lambda: False
    ) -> bool:
        """Poll the readiness route until it answers 200.

        Returns False when ``should_stop()`` turned true first; raises :class:`ServerCrashed` if
        the process exits and :class:`ServerStartTimeout` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if should_stop():
                return False
            if self.poll() is not None:
                raise self.crashed()
            try:
                with urllib.request.urlopen(self.spec.ready_url, timeout=2.0) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                tail = "\n".join(f"    {line}" for line in self.tail()) or "    (no output)"
                raise ServerStartTimeout(
                    f"the {self.spec.component} was not ready at {self.spec.ready_url} after "
                    f"{timeout:.0f} s (raise --timeout if the model is large); last log lines:\n"
                    f"{tail}",
                    component=self.spec.component,
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, *, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5.0)
        # Anything the server left behind in its session (reloaders, workers) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode
