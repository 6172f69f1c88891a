"""uvicorn's httptools protocol with the read timeouts uvicorn lacks.

uvicorn bounds only the keep-alive pause between requests (``timeout_keep_alive``); a client
that connects and says nothing, trickles its request headers (slowloris) or its body holds
the connection for ever. :class:`TimedHttpProtocol` gives each connection a deadline:

- headers: from the connection's start, or a request's first byte, until its headers are in
  (``header_timeout_s``);
- body: from the headers until the request's last byte (``body_timeout_s``), whatever the
  pace at which it arrives;
- none while the application answers; between requests uvicorn's keep-alive timer applies.

Deadlines are plain numbers set at those points (no timer per request); :func:`sweep`, called
a few times a second by the server, answers the connections past theirs with ``408 Request
Timeout`` (when no response was started) and closes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["RestTimeouts", "TimedHttpProtocol", "sweep"]

logger = logging.getLogger(__name__)

_TIMEOUT_BODY = b'{"error":"request not received in time","code":"timeout"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


@dataclass(frozen=True, slots=True)
class RestTimeouts:
    """Seconds a REST client may take to send a request's headers, and then its body."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0


class TimedHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a read deadline (see the module docstring)."""

    def __init__(self, *args: Any, timeouts: RestTimeouts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_s = timeouts.header_timeout_s
        self._body_s = timeouts.body_timeout_s
        #: ``time.monotonic()`` past which the request being read is late; 0 when none is.
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.deadline = time.monotonic() + self._header_s

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.deadline = time.monotonic() + self._header_s

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.deadline = time.monotonic() + self._body_s

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.deadline = 0.0

    def read_timed_out(self) -> None:
        """The request did not arrive in time: 408 (unless a response started), then close."""
        self.deadline = 0.0
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        logger.debug("REST request from %s not received in time: closing", self.client)
        if cycle is None or not cycle.response_started:
            transport.write(_TIMEOUT_RESPONSE)
        if cycle is not None and not cycle.response_complete:
            # The application sees the client gone: receive() says http.disconnect, what it
            # sends is dropped.
            cycle.disconnected = True
            cycle.keep_alive = False
            cycle.message_event.set()
        transport.close()


def sweep(connections: Iterable[Any], now: float) -> None:
    """Time out the connections whose request is late at ``now`` (``time.monotonic``)."""
    for connection in list(connections):
        deadline = getattr(connection, "deadline", 0.0)
        if deadline and deadline < now:
            connection.read_timed_out()
