"""``create_grpc_server``: the gRPC server of a :class:`DataPlane`: native, grpc.aio or threads.

Three flavours with one interface (``add_insecure_port``, ``await start()``, ``await stop(grace)``):

- **native** (``ModelServer``'s default, ``--grpc_server native``): moorage's own HTTP/2 server
  (:mod:`moorage.server.grpc.native`) on the event loop that serves REST. No thread per call:
  sync models run through :meth:`DataPlane.infer` exactly as for REST (inline while cheap, in
  a thread otherwise). It takes only interceptors with ``wrap_async`` (moorage's own); given
  others, :func:`create_grpc_server` falls back to grpcio.

- **threaded** (what ``ModelServer`` runs when every model is sync, e.g. the built-in runtimes):
  grpcio's sync server with ``max_threads`` worker threads. ``ModelInfer`` parses, runs the
  model's sync stages and serializes on the worker thread that received the call, so no hop to
  the event loop or to another thread is needed; RPCs that need the loop (health, metadata,
  repository, async models) are handed to it. Measured on one core, grpcio's sync server costs
  about 35% less CPU per call than grpc.aio.
- **aio**: grpc.aio on the event loop, for async models (transformers forwarding to a
  predictor), which would otherwise hold a worker thread for the whole call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from moorage.core.config.server import DEFAULT_MAX_GRPC_MESSAGE_LENGTH
from moorage.core.http2.limits import PeerBudget
from moorage.core.protocol.grpc import SERVICE_NAME
from moorage.server.access_log import register_with_grpcio
from moorage.server.dataplane import DataPlane
from moorage.server.grpc.native import NativeGrpcServer
from moorage.server.grpc.servicer import InferenceServicer

if TYPE_CHECKING:
    import grpc

__all__ = [
    "GRPCIO_MAX_CONCURRENT_STREAMS",
    "GrpcImplementation",
    "ThreadedGrpcServer",
    "create_grpc_server",
]

logger = logging.getLogger(__name__)

GrpcImplementation = Literal["native", "grpcio"]

#: grpcio's streams per connection when none is given: grpcio sends its SETTINGS late, so a
#: client opening more streams than the limit on a new connection sees REFUSED_STREAM (100 is
#: too few for 200 concurrent calls on one channel); without any limit, grpcio runs every call
#: of a rapid reset (CVE-2023-44487) and starves others.
GRPCIO_MAX_CONCURRENT_STREAMS = 1000


class ThreadedGrpcServer:
    """grpcio's sync server behind grpc.aio's ``add_insecure_port`` / ``start`` / ``stop``."""

    def __init__(
        self,
        servicer: InferenceServicer,
        *,
        max_threads: int,
        options: Sequence[tuple[str, Any]],
        max_concurrent_rpcs: int | None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        import grpc

        wrappers = [i for i in interceptors if hasattr(i, "wrap_blocking")]
        native = [i for i in interceptors if not hasattr(i, "wrap_blocking")]
        for interceptor in native:
            if not isinstance(interceptor, grpc.ServerInterceptor):
                raise TypeError(
                    f"{interceptor!r} is not a grpc.ServerInterceptor; the threaded gRPC server "
                    "takes sync interceptors (or pass threaded=False)"
                )

        def wrap(name: str, behavior: Any) -> Any:
            for wrapper in reversed(wrappers):
                behavior = wrapper.wrap_blocking(name, behavior)
            return behavior

        self.servicer = servicer
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="moorage-grpc"),
            interceptors=native,
            options=list(options),
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        self._server.add_registered_method_handlers(SERVICE_NAME, servicer.blocking_handlers(wrap))

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    async def start(self) -> None:
        self.servicer.loop = asyncio.get_running_loop()
        self._server.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls and wait up to ``grace`` seconds for the running ones; the loop
        keeps running meanwhile (in-flight calls may need it)."""
        done = self._server.stop(grace)
        await asyncio.to_thread(done.wait)


def create_grpc_server(
    dataplane: DataPlane,
    *,
    max_threads: int = 4,
    max_send_message_length: int = DEFAULT_MAX_GRPC_MESSAGE_LENGTH,
    max_receive_message_length: int = DEFAULT_MAX_GRPC_MESSAGE_LENGTH,
    max_concurrent_rpcs: int | None = None,
    interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
    threaded: bool = False,
    implementation: GrpcImplementation = "grpcio",
    max_concurrent_streams: int | None = None,
    max_header_list_size: int = 16384,
    max_connections: int | None = None,
    budget: PeerBudget = PeerBudget(),
) -> grpc.aio.Server | ThreadedGrpcServer | NativeGrpcServer:
    """An unstarted server with the inference service; add ports, then ``await start()``.

    ``implementation="native"`` is moorage's HTTP/2 server (``threaded`` and ``max_threads``
    do not apply; ``options`` must be empty; at most ``max_concurrent_streams`` calls per
    connection, 100 when ``None``); ``"grpcio"`` is grpc.aio, or grpcio's sync server with
    ``threaded=True`` (:data:`GRPCIO_MAX_CONCURRENT_STREAMS` streams when ``None``).

    ``interceptors`` is the hook point for gRPC-level concerns (metrics, tracing, access logs):
    grpc.aio interceptors, or for ``threaded=True`` sync ``grpc.ServerInterceptor`` objects or
    objects with ``wrap_blocking(method, behavior) -> behavior`` (applied once per method, not
    per call); the native server takes objects with ``wrap_async(method, behavior) ->
    behavior``, and falls back to grpcio when given any other. Calls beyond
    ``max_concurrent_rpcs`` are refused with RESOURCE_EXHAUSTED.

    ``max_connections`` and ``budget`` bound what one client can make the server hold: the
    native server applies all of them; grpcio gets the ones it has a channel argument for
    (concurrent streams, incoming connections, handshake timeout, idle connections), its
    own ping and reset policies covering the others.
    """
    if implementation == "native":
        foreign = [i for i in interceptors if not hasattr(i, "wrap_async")]
        if foreign or options:
            logger.warning(
                "gRPC: serving with grpcio instead of the native server, which takes neither "
                "grpcio interceptors nor channel options (given %s)",
                ", ".join(type(i).__name__ for i in foreign) or f"options {list(options)}",
            )
        else:
            return NativeGrpcServer(
                InferenceServicer(dataplane),
                max_send_message_length=max_send_message_length,
                max_receive_message_length=max_receive_message_length,
                max_concurrent_rpcs=max_concurrent_rpcs,
                max_concurrent_streams=max_concurrent_streams or 100,
                max_header_list_size=max_header_list_size,
                max_connections=max_connections,
                budget=budget,
                interceptors=interceptors,
            )
    import grpc  # grpcio's servers only: the native one runs without it

    register_with_grpcio()
    all_options = [
        ("grpc.max_send_message_length", max_send_message_length),
        ("grpc.max_receive_message_length", max_receive_message_length),
        ("grpc.so_reuseport", 1),
        ("grpc.max_metadata_size", max_header_list_size),
        ("grpc.server_handshake_timeout_ms", int(budget.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(budget.idle_timeout_s * 1000)),
        ("grpc.max_concurrent_streams", max_concurrent_streams or GRPCIO_MAX_CONCURRENT_STREAMS),
        *(
            [("grpc.max_allowed_incoming_connections", max_connections)]
            if max_connections is not None
            else []
        ),
        *options,
    ]
    servicer = InferenceServicer(dataplane)
    if threaded:
        return ThreadedGrpcServer(
            servicer,
            max_threads=max_threads,
            options=all_options,
            max_concurrent_rpcs=max_concurrent_rpcs,
            interceptors=interceptors,
        )
    server = grpc.aio.server(
        migration_thread_pool=ThreadPoolExecutor(max_workers=max_threads),
        interceptors=list(interceptors),
        options=all_options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    server.add_generic_rpc_handlers((servicer.handler(),))
    return server
