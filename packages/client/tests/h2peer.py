"""A scriptable gRPC-over-HTTP/2 server on loopback, built on the ``h2`` library (a real,
independent HTTP/2 implementation that validates what the client sends), in its own thread.

Each test sets ``peer.handler`` (an ``async`` function of a :class:`Call`) to answer as it
needs: a normal reply, trailers-only, an HTTP error, a reset, GOAWAY, a closed connection, a
compressed or oversized message. The peer records what it saw: requests, RST_STREAM codes,
connections, PING acks.
"""

from __future__ import annotations

import asyncio
import gzip
import struct
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from moorage.core.protocol import InferResponse, InferTensor
from moorage.core.protocol.grpc import pb, request_from_proto, response_to_bytes

Handler = Callable[["Call"], Awaitable[None]]


def grpc_frame(message: bytes, *, compressed: bool = False) -> bytes:
    return struct.pack(">BL", 1 if compressed else 0, len(message)) + message


class Call:
    """One request the peer received (complete), and the ways to answer it."""

    def __init__(self, proto: _Protocol, stream_id: int, headers: dict[str, str]) -> None:
        self.proto = proto
        self.stream_id = stream_id
        self.headers = headers
        self.body = b""

    @property
    def method(self) -> str:
        return self.headers[":path"].rsplit("/", 1)[-1]

    @property
    def message(self) -> bytes:
        flag, length = struct.unpack_from(">BL", self.body)
        assert flag == 0 and len(self.body) == length + 5
        return self.body[5:]

    async def reply(
        self,
        message: bytes,
        *,
        status: int = 0,
        details: str = "",
        trailers: tuple[tuple[str, str], ...] = (),
        encoding: str | None = None,
        compressed: bool = False,
        pause: float = 0,
    ) -> None:
        """Answer ``message`` (gzip-compressed for ``encoding="gzip"``, unless ``compressed``
        says it already is)."""
        headers = [(":status", "200"), ("content-type", "application/grpc")]
        if encoding:
            headers.append(("grpc-encoding", encoding))
            if encoding == "gzip" and not compressed:
                message = gzip.compress(message)
        self.proto.conn.send_headers(self.stream_id, headers)
        await self.proto.send_data(self.stream_id, grpc_frame(message, compressed=bool(encoding)))
        if pause:
            await asyncio.sleep(pause)  # the stream stays open: the client may reset it
        tail = [("grpc-status", str(status)), *trailers]
        if details:
            tail.append(("grpc-message", details))
        self.proto.conn.send_headers(self.stream_id, tail, end_stream=True)
        self.proto.flush()

    def trailers_only(
        self, status: int, details: str = "", *, http_status: int = 200, extra: Any = ()
    ) -> None:
        headers = [(":status", str(http_status)), ("content-type", "application/grpc")]
        headers += [("grpc-status", str(status)), *extra]
        if details:
            headers.append(("grpc-message", details))
        self.proto.conn.send_headers(self.stream_id, headers, end_stream=True)
        self.proto.flush()

    def http_error(self, status: int) -> None:
        self.proto.conn.send_headers(
            self.stream_id, [(":status", str(status)), ("content-type", "text/plain")]
        )
        self.proto.conn.send_data(self.stream_id, b"nope", end_stream=True)
        self.proto.flush()

    def reset(self, code: int) -> None:
        self.proto.conn.reset_stream(self.stream_id, code)
        self.proto.flush()

    def goaway(self, last_stream_id: int, code: int = 0) -> None:
        self.proto.conn.close_connection(code, last_stream_id=last_stream_id)
        self.proto.flush()

    def abort(self) -> None:
        self.proto.transport.abort()


async def echo(call: Call) -> None:
    """The default answer: ServerLive says live, ModelInfer echoes its inputs."""
    if call.method == "ServerLive":
        await call.reply(pb.ServerLiveResponse(live=True).SerializeToString())
        return
    request = request_from_proto(pb.ModelInferRequest.FromString(call.message))
    outputs = [InferTensor(t.name, t.datatype, t.shape, t.data) for t in request.inputs]
    response = InferResponse(model_name=request.model_name, outputs=outputs, id=request.id)
    await call.reply(response_to_bytes(response))


class _Protocol(asyncio.Protocol):
    def __init__(self, peer: H2Peer) -> None:
        self.peer = peer
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.calls: dict[int, Call] = {}
        self.window = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.peer.connections += 1
        self.conn.initiate_connection()
        if self.peer.settings:
            self.conn.update_settings(self.peer.settings)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except Exception as exc:  # a protocol violation by the client: fail the test
            self.peer.errors.append(repr(exc))
            self.transport.close()
            return
        for event in events:
            self.event(event)
        self.flush()

    def event(self, event: Any) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = dict(event.headers)
            self.calls[event.stream_id] = Call(self, event.stream_id, headers)
        elif isinstance(event, h2.events.DataReceived):
            self.calls[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.pop(event.stream_id)
            self.peer.requests.append(call)
            task = asyncio.ensure_future(self.run(call))
            self.peer.tasks.add(task)
            task.add_done_callback(self.peer.tasks.discard)
        elif isinstance(event, h2.events.StreamReset):
            self.peer.resets.append((event.stream_id, int(event.error_code)))
            self.calls.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            self.window.set()
        elif isinstance(event, h2.events.PingAckReceived):
            self.peer.ping_acks += 1

    async def run(self, call: Call) -> None:
        try:
            await self.peer.handler(call)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset the stream meanwhile
        except Exception as exc:
            self.peer.errors.append(repr(exc))

    async def send_data(self, stream_id: int, data: bytes) -> None:
        """Send ``data`` on the stream as flow control allows."""
        view = memoryview(data)
        while view:
            size = min(
                self.conn.local_flow_control_window(stream_id),
                self.conn.max_outbound_frame_size,
                len(view),
            )
            if size <= 0:
                self.window.clear()
                await self.window.wait()
                continue
            self.conn.send_data(stream_id, bytes(view[:size]))
            self.flush()
            view = view[size:]

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.window.set()


class H2Peer:
    """The server: ``url``, ``handler``, and what it saw."""

    def __init__(self, settings: dict[int, int] | None = None) -> None:
        self.settings = settings or {}
        self.handler: Handler = echo
        self.requests: list[Call] = []
        self.resets: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.connections = 0
        self.ping_acks = 0
        self.protocols: list[_Protocol] = []
        self.tasks: set[asyncio.Future[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="h2peer")
        self._thread.start()
        self._started.wait(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        def factory() -> _Protocol:
            proto = _Protocol(self)
            self.protocols.append(proto)
            return proto

        self._server = self._loop.run_until_complete(
            self._loop.create_server(factory, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset_state(self) -> None:
        self.handler = echo
        self.requests.clear()
        self.resets.clear()
        self.errors.clear()
        self.ping_acks = 0

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self._loop.call_soon_threadsafe(fn)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def stop(self) -> None:
        def shutdown() -> None:
            self._server.close()
            for proto in self.protocols:
                proto.transport.abort()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)


__all__ = ["Call", "H2Peer", "echo", "grpc_frame"]
SETTINGS = h2.settings.SettingCodes
