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
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from moorage.controller.local.banner import Banner, fetch_metadata
from moorage.controller.local.errors import LocalRunError
from moorage.controller.local.models import fetch_model
from moorage.controller.local.ports import check_ports_free, free_port, listening_addresses
from moorage.controller.local.process import ManagedProcess
from moorage.controller.local.spec import LOOPBACK, ProcessSpec

if TYPE_CHECKING:
    from moorage.controller.workload import Workload

__all__ = ["Prepared", "RunOptions", "prepare", "replay", "run_local", "serve"]


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one ``moorage run``; a port of 0 means "pick a free one"; ``host`` is the address
    the public server binds (loopback: local mode is local)."""

    host: str = LOOPBACK
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


@dataclass(frozen=True)
class Prepared:
    """Everything needed to start serving, decided before any process starts.

    It is plain data (:meth:`to_json`), so that the plan cache can replay it.
    """

    name: str
    runtime: str
    storage_uri: str | None
    base_dir: Path
    model_dir: Path | None
    in_place: bool
    specs: list[ProcessSpec]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runtime": self.runtime,
            "storage_uri": self.storage_uri,
            "base_dir": str(self.base_dir),
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "in_place": self.in_place,
            "specs": [s.to_json() for s in self.specs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prepared:
        return cls(
            name=data["name"],
            runtime=data["runtime"],
            storage_uri=data["storage_uri"],
            base_dir=Path(data["base_dir"]),
            model_dir=Path(data["model_dir"]) if data["model_dir"] else None,
            in_place=data["in_place"],
            specs=[ProcessSpec.from_json(s) for s in data["specs"]],
        )


def _ports(options: RunOptions) -> tuple[int, int]:
    http_port = options.http_port or free_port()
    grpc_port = options.grpc_port or free_port()
    while not options.grpc_port and grpc_port == http_port:
        grpc_port = free_port()
    check_ports_free({"--port": http_port, "--grpc-port": grpc_port}, host=options.host)
    return http_port, grpc_port


def _fetch(storage_uri: str, base_dir: Path, options: RunOptions, out: TextIO) -> tuple[Path, bool]:
    _say(out, f"moorage: fetching {storage_uri}")
    fetched = fetch_model(
        storage_uri, base_dir=base_dir, cache_root=options.cache_root, refresh=options.refresh
    )
    if fetched.in_place:
        how = "served in place"
    elif fetched.reused:
        how = "cached copy reused"
    else:
        how = f"fetched in {fetched.seconds:.1f} s"
    _say(out, f"moorage: model at {fetched.path} ({how})")
    return fetched.path, fetched.in_place


def prepare(workload: Workload, options: RunOptions, *, out: TextIO = sys.stdout) -> Prepared:
    """Check the ports, fetch the model and plan the processes (nothing is started)."""
    from moorage.controller.local.plan import plan_processes
    from moorage.controller.runtime_selection import predictor_model

    http_port, grpc_port = _ports(options)
    # A dry plan first: what cannot run here (an image-only runtime) is refused before a download.
    plan_processes(
        workload,
        model_dir=None,
        http_port=http_port,
        grpc_port=grpc_port,
        host=options.host,
        python=options.python,
        pick_port=lambda: 0,
    )
    model = predictor_model(workload.isvc)
    storage_uri = model.spec.storage_uri if model is not None else None
    model_dir: Path | None = None
    in_place = False
    if storage_uri:
        model_dir, in_place = _fetch(storage_uri, workload.base_dir, options, out)
    specs = plan_processes(
        workload,
        model_dir=model_dir,
        http_port=http_port,
        grpc_port=grpc_port,
        host=options.host,
        python=options.python,
    )
    return Prepared(
        name=workload.isvc.name,
        runtime=workload.runtime.name if workload.runtime else "custom",
        storage_uri=storage_uri,
        base_dir=workload.base_dir,
        model_dir=model_dir,
        in_place=in_place,
        specs=specs,
    )


def _listening(spec: ProcessSpec) -> tuple[str, ...]:
    """``host:port`` of each socket the public server listens on, as the OS reports them (the
    ``--host`` it was given where the OS does not say)."""
    found: list[str] = []
    for port in (spec.http_port, spec.grpc_port):
        if not port:
            continue
        addresses = listening_addresses(port) or [spec.host]
        found += [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
    return tuple(found)


def replay(prepared: Prepared, options: RunOptions, *, out: TextIO = sys.stdout) -> Prepared:
    """A saved plan made current: ports checked, a fetched model verified (or fetched again)."""
    public = prepared.specs[-1]
    _ports(
        replace(
            options, host=public.host, http_port=public.http_port, grpc_port=public.grpc_port or 0
        )
    )
    if prepared.storage_uri:
        model_dir, _ = _fetch(prepared.storage_uri, prepared.base_dir, options, out)
        if model_dir != prepared.model_dir:
            raise LocalRunError("the saved plan is stale", model_dir=str(model_dir))
    return prepared


def serve(
    prepared: Prepared,
    options: RunOptions,
    *,
    out: TextIO = sys.stdout,
    log: TextIO | None = sys.stderr,
    stop: threading.Event | None = None,
    on_ready: Callable[[list[ProcessSpec]], None] | None = None,
    started: float | None = None,
) -> int:
    """Start the planned processes and watch them until stopped (see the module docstring)."""
    started = started if started is not None else time.monotonic()
    stop = stop or threading.Event()
    specs = prepared.specs
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
            banner = Banner(
                name=prepared.name,
                model_name=public.model_name,
                rest_url=public.rest_url,
                grpc_address=public.grpc_address,
                runtime=prepared.runtime,
                model_dir=str(prepared.model_dir) if prepared.model_dir else "-",
                metadata=fetch_metadata(public.rest_url, public.model_name),
                seconds=time.monotonic() - started,
                transformer=len(specs) > 1,
                listening=_listening(public),
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
    prepared = prepare(workload, options, out=out)
    return serve(prepared, options, out=out, log=log, stop=stop, on_ready=on_ready, started=started)
