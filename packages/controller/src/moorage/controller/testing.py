"""Test seams for code that runs next to the operator.

:class:`OperatorRunner` runs ``moorage operator`` as a real process (the same command a pod
runs), the way kopf's ``KopfRunner`` runs an operator for a test::

    with OperatorRunner(["--kubeconfig", kubeconfig, "--metrics-port", "0"]) as runner:
        ...  # create objects, wait for what the operator does
    assert runner.exit_code == 0
    assert "Traceback" not in runner.output

Leaving the block stops it with SIGTERM (a graceful shutdown) and waits; :meth:`kill` ends it
with SIGKILL, as a node failure would, and :meth:`restart` starts it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["OperatorRunner"]


class OperatorRunner:
    """``moorage operator ARGS`` in a subprocess of this interpreter (see the module docstring)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stop_timeout: float = 20.0,
    ) -> None:
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.stop_timeout = stop_timeout
        self.exit_code: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="moorage-operator-", suffix=".log")[1])

    @property
    def output(self) -> str:
        """Everything the operator wrote to stdout and stderr so far (all its runs)."""
        return self._log.read_text(errors="replace")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> OperatorRunner:
        command = [sys.executable, "-m", "moorage.controller", "operator", *self.args]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.exit_code = None
        return self

    def stop(self) -> int:
        """SIGTERM, then wait (SIGKILL after ``stop_timeout``); the exit code."""
        process = self._process
        if process is None:
            return self.exit_code or 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.exit_code = process.returncode
        self._process = None
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL: the operator dies wherever it is."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self.exit_code = self._process.returncode
            self._process = None

    def restart(self) -> OperatorRunner:
        self.stop()
        return self.start()

    def __enter__(self) -> OperatorRunner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
