"""``create_grpc_server``: a grpc.aio server for a :class:`DataPlane`."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from moorage.core.config.server import DEFAULT_MAX_GRPC_MESSAGE_LENGTH
from moorage.server.dataplane import DataPlane
from moorage.server.grpc.servicer import InferenceServicer

__all__ = ["create_grpc_server"]


def create_grpc_server(
    dataplane: DataPlane,
    *,
    max_threads: int = 4,
    max_send_message_length: int = DEFAULT_MAX_GRPC_MESSAGE_LENGTH,
    max_receive_message_length: int = DEFAULT_MAX_GRPC_MESSAGE_LENGTH,
    max_concurrent_rpcs: int | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Server:
    """An unstarted server with the inference service; add ports, then ``await start()``.

    ``interceptors`` is the hook point for gRPC-level concerns (metrics, tracing, access logs).
    Calls beyond ``max_concurrent_rpcs`` are refused with RESOURCE_EXHAUSTED by grpc itself.
    """
    server = grpc.aio.server(
        migration_thread_pool=ThreadPoolExecutor(max_workers=max_threads),
        interceptors=list(interceptors),
        options=[
            ("grpc.max_send_message_length", max_send_message_length),
            ("grpc.max_receive_message_length", max_receive_message_length),
            ("grpc.so_reuseport", 1),
            *options,
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    server.add_generic_rpc_handlers((InferenceServicer(dataplane).handler(),))
    return server
