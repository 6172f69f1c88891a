"""The REST protocol's read deadlines and header budget, on a real uvicorn protocol object."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from moorage.server.http1 import DirectApp, HeldWrites, RestLimits, TimedHttpProtocol, sweep


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _protocol(**limits: Any) -> tuple[TimedHttpProtocol, _Transport]:
    config = uvicorn.Config(_app, http="httptools", lifespan="off", log_config=None)
    config.load()
    protocol = TimedHttpProtocol(
        config=config, server_state=ServerState(), app_state={}, limits=RestLimits(**limits)
    )
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_silent_connection_gets_408_after_the_header_timeout() -> None:
    protocol, transport = _protocol(header_timeout_s=0.05)
    sweep([protocol], time.monotonic())
    assert not transport.closed
    sweep([protocol], time.monotonic() + 0.1)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 408 ")


async def test_headers_over_the_budget_get_431_and_a_large_body_does_not() -> None:
    protocol, transport = _protocol(max_header_bytes=1024)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 100000\r\n\r\n")
    protocol.data_received(b"x" * 100_000)  # body, not headers
    assert not transport.closed
    protocol, transport = _protocol(max_header_bytes=1024)
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    protocol.data_received(b"X-A: " + b"a" * 2000)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 431 ")


async def test_a_response_the_client_does_not_read_ends_after_the_body_timeout() -> None:
    protocol, transport = _protocol(body_timeout_s=0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert protocol.deadline == 0.0  # the application answers: no read deadline
    protocol.pause_writing()
    protocol.resume_writing()
    assert protocol.deadline == 0.0  # the client read again
    protocol.pause_writing()
    sweep([protocol], time.monotonic() + 0.1)
    assert transport.closed
    await asyncio.sleep(0)  # let the application task see the disconnect


async def _answered(protocol: TimedHttpProtocol, transport: _Transport) -> None:
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.written.endswith(b"0\r\n\r\n")  # the whole (chunked) response


async def test_an_idle_keep_alive_connection_closes_after_the_keep_alive_timeout() -> None:
    """Between requests the keep-alive timeout is a deadline like the others (no timer per
    response): past it the connection closes, with no response written."""
    protocol, transport = _protocol()
    protocol.timeout_keep_alive = 0.05
    await _answered(protocol, transport)
    written = transport.written
    assert protocol.deadline > 0  # waiting for the next request
    sweep([protocol], time.monotonic())
    assert not transport.closed
    sweep([protocol], time.monotonic() + 0.1)
    assert transport.closed and transport.written == written

    protocol, transport = _protocol(header_timeout_s=10.0)
    protocol.timeout_keep_alive = 0.05
    await _answered(protocol, transport)
    protocol.data_received(b"GET / HT")  # the next request began: its header deadline applies
    sweep([protocol], time.monotonic() + 0.1)
    assert not transport.closed
    sweep([protocol], time.monotonic() + 11)
    assert transport.closed and b"408 Request Timeout" in transport.written


async def test_a_stalled_last_response_still_ends_at_the_keep_alive_timeout() -> None:
    """The response's last write fills the transport (it pauses writing): the connection is
    closed at the keep-alive timeout whether or not the client reads it later."""
    protocol, transport = _protocol()
    protocol.timeout_keep_alive = 0.05
    write = transport.write

    def filling(data: Any) -> None:
        write(data)
        if data.endswith(b"0\r\n\r\n"):
            protocol.pause_writing()

    transport.write = filling  # type: ignore[method-assign]
    await _answered(protocol, transport)
    protocol.resume_writing()  # the client reads it after all
    sweep([protocol], time.monotonic() + 0.1)
    assert transport.closed


def _cycle(keep_alive: bool) -> tuple[Any, _Transport, list[int]]:
    import logging

    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    transport = _Transport()
    answered: list[int] = []
    cycle = RequestResponseCycle(
        scope={"type": "http", "method": "POST", "path": "/", "headers": []},  # type: ignore[typeddict-item]
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"),
        access_log=False,
        default_headers=[(b"date", b"Mon, 07 Dec 2026 00:00:00 GMT")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: answered.append(1),
    )
    return cycle, transport, answered


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"2"), (b"content-type", b"application/json")],
        [(b"content-length", b"2"), (b"connection", b"close")],
        [(b"content-length", b"2"), (b"connection", b"keep-alive")],
    ],
)
async def test_the_direct_write_is_what_uvicorns_send_writes(
    keep_alive: bool, headers: list[tuple[bytes, bytes]]
) -> None:
    from moorage.server.http1 import _respond

    theirs, their_transport, their_calls = _cycle(keep_alive)
    await theirs.send({"type": "http.response.start", "status": 200, "headers": headers})
    await theirs.send({"type": "http.response.body", "body": b"ok"})
    ours, our_transport, our_calls = _cycle(keep_alive)
    held = HeldWrites()
    await _respond(ours, 200, headers, b"ok", held, hold=True)
    held.send()
    assert our_transport.written == their_transport.written
    assert our_transport.closed == their_transport.closed
    assert our_calls == their_calls == [1]
    assert ours.response_complete and ours.keep_alive == theirs.keep_alive


async def test_the_direct_write_refuses_a_bad_header_before_writing() -> None:
    from moorage.server.http1 import _respond

    cycle, transport, answered = _cycle(True)
    held = HeldWrites()
    with pytest.raises(RuntimeError, match="invalid HTTP response header"):
        await _respond(cycle, 200, [(b"x-model", b"line\r\nbreak")], b"ok", held, hold=True)
    held.send()
    assert transport.written == b"" and not cycle.response_started and answered == []


async def test_direct_responses_wait_while_others_are_unanswered() -> None:
    from moorage.server.http1 import _respond

    held = HeldWrites()
    cycles = [_cycle(True) for _ in range(3)]
    held.unanswered = 3
    for cycle, _, _ in cycles[:2]:
        await _respond(cycle, 200, [], b"ok", held, hold=True)
        held.unanswered -= 1  # (the protocol's on_response_complete)
    assert all(transport.written == b"" for _, transport, _ in cycles)
    assert all(answered == [1] for _, _, answered in cycles[:2])  # the cycles are complete
    await _respond(cycles[2][0], 200, [], b"ok", held, hold=True)  # the last: everything goes out
    assert all(transport.written.endswith(b"\r\n\r\nok") for _, transport, _ in cycles)
    # Held while another waits, which does not answer in this pass: written once it is over.
    cycle, transport, _ = _cycle(True)
    held.unanswered = 2
    await _respond(cycle, 200, [], b"ok", held, hold=True)
    assert transport.written == b""
    await asyncio.sleep(0)
    assert transport.written.endswith(b"\r\n\r\nok")
    # An answer that waited (a thread, the batcher) is written at once.
    cycle, transport, _ = _cycle(True)
    held.unanswered = 2
    await _respond(cycle, 200, [], b"ok", held, hold=False)
    assert transport.written.endswith(b"\r\n\r\nok")
    # A response that closes its connection is written at once, after what is held.
    cycle, transport, _ = _cycle(False)
    held.write(transport, b"earlier ")
    await _respond(cycle, 200, [], b"ok", held, hold=True)
    assert transport.written.startswith(b"earlier HTTP/1.1 200 ") and transport.closed
    await asyncio.sleep(0)
    assert transport.written.count(b"earlier") == 1


def _direct_protocol(**limits: Any) -> tuple[TimedHttpProtocol, _Transport, HeldWrites]:
    app = DirectApp(_app, source=None)
    config = uvicorn.Config(_app, http="httptools", lifespan="off", log_config=None)
    config.load()
    protocol = TimedHttpProtocol(
        config=config, server_state=ServerState(), app_state={}, limits=RestLimits(**limits),
        app=app,
    )  # fmt: skip
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport, app.held


async def test_requests_awaiting_their_answer_are_counted() -> None:
    protocol, transport, held = _direct_protocol()
    other, other_transport, _ = _direct_protocol()
    other._held = held  # two connections of one loop
    await _answered(protocol, transport)
    assert held.unanswered == 0
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    other.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert held.unanswered == 2
    protocol.connection_lost(None)  # before its answer
    assert held.unanswered == 1
    for _ in range(5):
        await asyncio.sleep(0)
    assert held.unanswered == 0 and other_transport.written.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize(
    "cause", ["parse error", "headers too large", "read timeout"], ids=lambda c: c.replace(" ", "-")
)
async def test_a_connection_sends_what_it_holds_before_anything_else(cause: str) -> None:
    protocol, transport, held = _direct_protocol(header_timeout_s=0.05, max_header_bytes=1024)
    held.write(transport, b"HELD ")
    if cause == "parse error":
        protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
        expected = b"HELD HTTP/1.1 400 "
    elif cause == "headers too large":
        protocol.data_received(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 2000)
        expected = b"HELD HTTP/1.1 431 "
    else:
        sweep([protocol], time.monotonic() + 1)
        expected = b"HELD HTTP/1.1 408 "
    assert transport.written.startswith(expected) and transport.closed
    await asyncio.sleep(0)  # the pass ends: nothing is written twice
    assert transport.written.count(b"HELD") == 1
