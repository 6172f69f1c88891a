"""``moorage run``: serve a workload on this machine until Ctrl-C.

Order of events: check the public ports (before anything else, so a taken port costs nothing),
fetch the model, start the predictor and wait for its readiness, start the transformer (if any)
and wait for it, print the banner, then watch. SIGINT or SIGTERM stops the processes in reverse
order (SIGTERM, then SIGKILL after a grace period) and returns 0; a process that exits on its own
is reported with its last log lines, the others are stopped, and the return code is 1.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from moorage.controller.local.banner import Banner, fetch_metadata
from moorage.controller.local.models import fetch_model
from moorage.controller.local.plan import LOOPBACK, ProcessSpec, plan_processes
from moorage.controller.local.ports import check_ports_free, free_port
from moorage.controller.local.process import ManagedProcess
from moorage.controller.runtime_selection import predictor_model
from moorage.controller.workload import Workload

__all__ = ["RunOptions", "run_local"]


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one ``moorage run``; a port of 0 means "pick a free one"."""

    http_port: int = 8080
    grpc_port: int = 8081
    cache_root: Path = field(default_factory=lambda: Path.home() / ".cache" / "moorage")
    ready_timeout: float = 120.0
    refresh: bool = False
    stop_grace: float = 10.0
    python: str = sys.executable


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while inside; restore the old handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def run_local(
    workload: Workload,
    options: RunOptions,
    *,
    out: TextIO = sys.stdout,
    log: TextIO | None = sys.stderr,
    stop: threading.Event | None = None,
    on_ready: Callable[[list[ProcessSpec]], None] | None = None,
) -> int:
    """Serve ``workload`` until stopped; the exit code for the CLI (0 stopped, 1 failed).

    Errors before anything runs (port taken, model not found, a command missing) are raised as
    :class:`~moorage.core.errors.MoorageError`; a server crash after start is reported on
    ``out`` and gives 1. ``stop`` lets a caller (a test) end the run; signals also set it.
    """
    started = time.monotonic()
    stop = stop or threading.Event()
    http_port = options.http_port or free_port()
    grpc_port = options.grpc_port or free_port()
    while not options.grpc_port and grpc_port == http_port:
        grpc_port = free_port()
    check_ports_free({"--port": http_port, "--grpc-port": grpc_port})

    model = predictor_model(workload.isvc)
    storage_uri = model.spec.storage_uri if model is not None else None
    model_dir: Path | None = None
    if storage_uri:
        _say(out, f"moorage: fetching {storage_uri}")
        fetched = fetch_model(
            storage_uri,
            base_dir=workload.base_dir,
            cache_root=options.cache_root,
            refresh=options.refresh,
        )
        model_dir = fetched.path
        how = (
            "served in place"
            if fetched.in_place
            else ("cached copy reused" if fetched.reused else f"fetched in {fetched.seconds:.1f} s")
        )
        _say(out, f"moorage: model at {model_dir} ({how})")

    specs = plan_processes(
        workload,
        model_dir=model_dir,
        http_port=http_port,
        grpc_port=grpc_port,
        python=options.python,
    )
    for spec in specs:
        for warning in spec.warnings:
            _say(out, f"moorage: warning: {warning}")

    processes: list[ManagedProcess] = []
    with _stop_on_signals(stop):
        try:
            for spec in specs:
                _say(out, f"moorage: starting {spec.component}: {' '.join(spec.argv)}")
                proc = ManagedProcess(spec, echo=log)
                processes.append(proc)
                proc.start()
                if not proc.wait_ready(timeout=options.ready_timeout, should_stop=stop.is_set):
                    _say(out, "moorage: stopping")
                    return 0
            public = specs[-1]
            runtime = workload.runtime.name if workload.runtime else "custom"
            banner = Banner(
                name=workload.isvc.name,
                model_name=public.model_name,
                rest_url=public.rest_url,
                grpc_address=f"{LOOPBACK}:{public.grpc_port}" if public.grpc_port else None,
                runtime=runtime,
                model_dir=str(model_dir) if model_dir else "-",
                metadata=fetch_metadata(public.rest_url, public.model_name),
                seconds=time.monotonic() - started,
                transformer=len(specs) > 1,
            )
            _say(out, banner.render())
            if on_ready is not None:
                on_ready(specs)
            while not stop.wait(0.2):
                for proc in processes:
                    if proc.poll() is not None:
                        _say(out, f"moorage: error: {proc.crashed().message}")
                        return 1
            _say(out, "moorage: stopping")
            return 0
        finally:
            for proc in reversed(processes):
                proc.stop(grace=options.stop_grace)
