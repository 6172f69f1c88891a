"""``ModelServer``: REST (uvicorn) and gRPC in one event loop, in one or several processes.

``ModelServer().start([model])`` blocks until SIGTERM/SIGINT, then drains: listeners close, the
in-flight requests finish (up to ``--graceful_shutdown_seconds``), models are stopped. With
``--workers N`` the parent binds the HTTP socket, forks N workers that share it (gRPC binds with
``SO_REUSEPORT`` in each), forwards signals to them and replaces a worker that dies
(:mod:`moorage.server.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from moorage.core.config.server import ServerSettings
from moorage.core.errors import ModelNotReady
from moorage.core.http2.limits import PeerBudget
from moorage.server import _heap
from moorage.server.batcher import Batcher, BatchPolicy
from moorage.server.dataplane import DataPlane, LatencyLogger
from moorage.server.grpc import create_grpc_server
from moorage.server.http1 import DirectApp, RestLimits, TimedHttpProtocol, sweep
from moorage.server.model import Model
from moorage.server.observability import Observability
from moorage.server.repository import ModelRepository
from moorage.server.rest import create_app
from moorage.server.sockets import Acceptor, bind_socket
from moorage.server.transformer import apply_predictor_settings
from moorage.server.workers import BootFailed, Supervisor

__all__ = ["ModelServer"]

logger = logging.getLogger(__name__)

ModelsOrFactory = Sequence[Model] | Callable[[], Sequence[Model]]


#: The acceptor's former name here (it lives in :mod:`moorage.server.sockets`).
_Acceptor = Acceptor


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling (the ModelServer owns the signals), with
    :class:`~moorage.server.sockets.Acceptor` in place of ``loop.create_server`` (bounded by
    ``max_connections``) and :class:`~moorage.server.http1.TimedHttpProtocol` (header and body
    read timeouts, swept on uvicorn's 0.1 s tick)."""

    def __init__(
        self, config: uvicorn.Config, *, limits: RestLimits, max_connections: int | None
    ) -> None:
        super().__init__(config)
        self._limits = limits
        self._max_connections = max_connections

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
        config = self.config

        limits = self._limits
        state = self.server_state

        app = DirectApp(config.loaded_app, config.app)

        def create_protocol() -> asyncio.Protocol:
            return TimedHttpProtocol(
                config=config, server_state=state, app_state=self.lifespan.state,
                limits=limits, app=app,
            )  # fmt: skip

        def count() -> int:
            return len(state.connections)

        loop = asyncio.get_running_loop()
        limit = self._max_connections
        acceptors = [
            Acceptor(loop, sock, create_protocol, max_connections=limit, open_connections=count)
            for sock in sockets or ()
        ]
        self.servers = acceptors  # type: ignore[assignment]
        self.started = True

    async def on_tick(self, counter: int) -> bool:
        if counter % 5 == 0:
            sweep(self.server_state.connections, time.monotonic())
        return await super().on_tick(counter)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class ModelServer:
    """KServe's ``ModelServer``: same constructor keywords, same ``start(models)``.

    ``settings`` defaults to parsing ``sys.argv`` (as KServe parses its flags at import); the
    keywords override single settings.
    """

    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        workers: int | None = None,
        max_threads: int | None = None,
        max_asyncio_workers: int | None = None,
        registered_models: ModelRepository | None = None,
        enable_grpc: bool | None = None,
        enable_docs_url: bool | None = None,
        enable_latency_logging: bool | None = None,
        access_log_format: str | None = None,
        grace_period: float | None = None,
    ) -> None:
        overrides: dict[str, Any] = {
            "http_port": http_port,
            "grpc_port": grpc_port,
            "workers": workers,
            "max_threads": max_threads,
            "max_asyncio_workers": max_asyncio_workers,
            "enable_grpc": enable_grpc,
            "enable_docs_url": enable_docs_url,
            "enable_latency_logging": enable_latency_logging,
            "access_log_format": access_log_format,
            "graceful_shutdown_seconds": grace_period,
        }
        base = settings if settings is not None else ServerSettings.from_cli()
        self.settings = base.model_copy(
            update={k: v for k, v in overrides.items() if v is not None}
        )
        s = self.settings
        self.registered_models = registered_models or ModelRepository(
            s.model_dir, sync_mode=s.sync_mode
        )
        batcher = (
            Batcher(BatchPolicy(s.max_batchsize, s.max_latency / 1000, s.batcher_timeout))
            if s.enable_batcher
            else None
        )
        self.dataplane = DataPlane(
            self.registered_models, max_inflight=s.max_inflight_requests, batcher=batcher
        )
        if s.enable_latency_logging:
            self.dataplane.hooks.append(LatencyLogger())
        self.observability = Observability(s)
        self.observability.install(self.dataplane)
        self._http_socket: socket.socket | None = None
        self._uvicorn: _Uvicorn | None = None
        self._grpc: Any = None
        #: grpcio server interceptors to add (tracing, auth, ...); any here selects the grpcio
        #: server, since the native one takes only moorage's own.
        self.grpc_interceptors: list[Any] = []
        self._stop_requested: asyncio.Event | None = None
        #: Actual ports once serving (useful with port 0).
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        #: The ``--model_config_file`` watcher, once serving with one.
        self.model_config_watcher: Any = None

    # ------------------------------------------------------------------ registration
    def register_model(self, model: Model) -> None:
        if not isinstance(model, Model):
            raise RuntimeError("Model type should be 'moorage.server.Model'")
        if not model.name:
            raise RuntimeError("Failed to register model, model.name must be provided.")
        apply_predictor_settings(model, self.settings)
        self.registered_models.update(model)
        logger.info("registered model %s", model.name, extra={"model": model.name})

    def create_application(self) -> Starlette:
        s = self.settings
        return create_app(
            self.dataplane,
            enable_docs_url=s.enable_docs_url,
            max_body_bytes=s.max_request_body_bytes,
            routers=self.observability.routers(),
            middleware=self.observability.middleware(),
        )

    # ------------------------------------------------------------------ running
    def start(self, models: ModelsOrFactory = ()) -> None:
        """Serve until a signal arrives (blocking). ``models`` may be a factory that loads them,
        called in each worker process."""
        self.observability.before_serving()
        if self.settings.workers <= 1:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self.serve(models))
            return
        self._run_workers(models)

    async def serve(self, models: ModelsOrFactory = ()) -> None:
        """Serve in the running event loop until :meth:`stop` or a signal."""
        s = self.settings
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=s.asyncio_workers, thread_name_prefix="moorage-model")
        )
        if callable(models):
            models = await asyncio.to_thread(models)
        for model in models:
            self.register_model(model)
            model.start()
        registered = self.registered_models.get_models()
        if registered and not any(m.ready for m in registered.values()):
            names = ",".join(registered)
            raise ModelNotReady(
                f"Model with name {names} is not ready."
                if len(registered) == 1
                else f"Models with names {names} are not ready."
            )
        self._stop_requested = asyncio.Event()
        self._install_signal_handlers(loop)

        sock = self._http_socket or bind_socket(s.host, s.http_port)
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.create_application(),
            http="httptools",
            ws="none",  # no websocket routes; skips importing websockets at start-up
            loop="none",
            lifespan="off",
            access_log=False,  # AccessLogMiddleware writes the access lines
            log_config=s.log_config_file if s.configure_logging else None,
            timeout_graceful_shutdown=int(s.graceful_shutdown_seconds),
            server_header=False,
            backlog=2048,
            timeout_keep_alive=s.http_keep_alive_timeout_seconds,  # type: ignore[arg-type]
        )
        self._uvicorn = _Uvicorn(
            config,
            limits=RestLimits(
                header_timeout_s=s.http_header_timeout_seconds,
                body_timeout_s=s.http_body_timeout_seconds,
                max_header_bytes=s.http_max_header_bytes,
            ),
            max_connections=s.http_max_connections,
        )
        if s.enable_grpc:
            self._grpc = create_grpc_server(
                self.dataplane,
                max_threads=s.max_threads,
                max_send_message_length=s.grpc_max_send_message_length,
                max_receive_message_length=s.grpc_max_receive_message_length,
                interceptors=[*self.observability.grpc_interceptors(), *self.grpc_interceptors],
                threaded=self._grpc_threaded(),
                implementation=s.grpc_server,
                max_concurrent_streams=s.grpc_max_concurrent_streams,
                max_header_list_size=s.grpc_max_header_list_size,
                max_connections=s.grpc_max_connections,
                budget=grpc_budget(s),
            )
            self.grpc_port = self._grpc.add_insecure_port(f"{_grpc_host(s.host)}:{s.grpc_port}")
            await self._grpc.start()
        logger.info(
            "moorage-server ready: http=%s grpc=%s models=%s",
            self.http_port,
            self.grpc_port if s.enable_grpc else "off",
            ",".join(registered) or "-",
        )
        _heap.freeze()  # the imports and the models, out of the collector's reach
        try:
            serving = asyncio.ensure_future(self._uvicorn.serve(sockets=[sock]))
            stopper = asyncio.ensure_future(self._stop_requested.wait())
            watching = self._watch_model_config()
            await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if watching is not None:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            await self._shutdown(serving)
            stopper.cancel()
        finally:
            _heap.unfreeze()  # (a process that goes on after serving collects them again)

    def _watch_model_config(self) -> asyncio.Task[None] | None:
        """With ``--model_config_file``: the task that serves what it lists
        (:mod:`moorage.server.modelconfig`)."""
        s = self.settings
        if not s.model_config_file:
            return None
        from moorage.server._loading import build_listed_model
        from moorage.server.modelconfig import ModelConfigWatcher

        def build(name: str, path: Path, framework: str) -> Model:
            return build_listed_model(name, path, framework, s)

        watcher = ModelConfigWatcher(
            s.model_config_file,
            self.registered_models,
            model_dir=s.model_dir,
            build=build,
            register=self.register_model,
            poll_seconds=s.model_config_poll_seconds,
            concurrency=s.model_config_concurrency,
        )
        self.model_config_watcher = watcher

        async def run() -> None:
            try:
                await watcher.run()
            finally:
                await watcher.aclose()

        return asyncio.ensure_future(run())

    def _grpc_threaded(self) -> bool:
        """The threaded gRPC server when every model's stages are sync and every hook is
        thread-safe (the built-in runtimes); grpc.aio when a model is async (a transformer), so
        that waiting calls do not hold the ``--max_threads`` worker threads, or when an
        interceptor in :attr:`grpc_interceptors` is a grpc.aio one. (grpcio servers only: the
        native server needs neither.)"""
        bound = self.registered_models.bound_models()
        aio_interceptor = False
        if self.grpc_interceptors:  # grpcio's (imported only then: the default path has none)
            import grpc

            aio_interceptor = any(
                isinstance(i, grpc.aio.ServerInterceptor) for i in self.grpc_interceptors
            )
        return (
            self.dataplane.batcher is None  # batches form on the loop
            and all(b.sync_only for b in bound)
            and all(getattr(h, "thread_safe", False) for h in self.dataplane.hooks)
            and not aio_interceptor
        )

    def stop(self, sig: int | None = None) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler on the loop)."""
        if sig is not None:
            logger.info("received signal %s, shutting down", signal.Signals(sig).name)
        self.dataplane.stopping = True
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def _shutdown(self, serving: asyncio.Future[None]) -> None:
        grace = self.settings.graceful_shutdown_seconds
        self.dataplane.stopping = True
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        tasks: list[Any] = [serving]
        if self._grpc is not None:
            tasks.append(self._grpc.stop(grace))
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.observability.aclose()
        self.registered_models.stop_all()
        logger.info("moorage-server stopped")

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop, sig)

    # ------------------------------------------------------------------ workers
    def _run_workers(self, models: ModelsOrFactory) -> None:
        """Fork ``--workers`` workers on one HTTP socket; replace the ones that die
        (:class:`~moorage.server.workers.Supervisor`)."""
        s = self.settings
        self._http_socket = bind_socket(s.host, s.http_port)

        def work() -> None:  # in each worker
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(self.serve(models))
            except Exception as exc:
                if self._uvicorn is None or not self._uvicorn.started:
                    raise BootFailed(f"{type(exc).__name__}: {exc}") from exc
                raise

        status = Supervisor(work, s.workers).run()
        self._http_socket.close()
        if status:
            raise SystemExit(status)


def grpc_budget(settings: ServerSettings) -> PeerBudget:
    """The per-connection budgets of the gRPC port, from the ``grpc_*`` settings."""
    s = settings
    return PeerBudget(
        pings_per_second=s.grpc_max_pings_per_second,
        settings_per_second=s.grpc_max_settings_per_second,
        resets_per_second=s.grpc_max_resets_per_second,
        empty_frames_per_second=s.grpc_max_empty_frames_per_second,
        max_queued_output_bytes=s.grpc_max_queued_output_bytes,
        max_buffered_request_bytes=s.grpc_max_buffered_request_bytes,
        handshake_timeout_s=s.grpc_handshake_timeout_seconds,
        header_timeout_s=s.grpc_header_timeout_seconds,
        idle_timeout_s=s.grpc_max_connection_idle_seconds,
    )


def _grpc_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "[::]"
    return f"[{host}]" if ":" in host else host
