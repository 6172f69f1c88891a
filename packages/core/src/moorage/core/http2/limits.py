"""Budgets for what an HTTP/2 peer can make us hold or do, and the counter that enforces them.

A hostile peer does not need to break the protocol to hurt: PINGs, SETTINGS, RST_STREAMs and
empty frames are each legal and cheap to send, and each costs the receiver work (and, for PING
and SETTINGS, an answer to queue). :class:`PeerBudget` holds the limits of one side (server or
client) with documented defaults; :class:`RateCounter` is the per-connection, per-second count
checked on each such frame. It costs an increment and a comparison per frame; the clock is read
only when the count passes the limit (to start a new one-second window or to call it a flood).

Past a rate budget the receiver ends the connection with GOAWAY ``ENHANCE_YOUR_CALM`` (RFC 9113
section 5.4.1; grpcio's debug text for PINGs is ``too_many_pings``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PeerBudget", "RateCounter"]


class RateCounter:
    """At most ``limit`` events per second (``limit`` 0: none at all).

    A window starts at the first event past the limit: if a second or more went by since the
    previous window began, the count starts over; otherwise :meth:`spend` says the budget is
    spent. A burst may reach twice ``limit`` once (the events before the first window); a
    sustained rate above ``limit`` per second is always caught.
    """

    __slots__ = ("_clock", "count", "limit", "window_start")

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.count = 0
        self._clock = clock
        self.window_start = float("-inf")

    def spend(self) -> bool:
        """Count one event; ``False`` once more than ``limit`` arrived within a second."""
        self.count += 1
        if self.count <= self.limit:
            return True
        now = self._clock()
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.count = 1
            return self.limit > 0
        return False

    def reset(self) -> None:
        """Forget the events counted so far (e.g. a PING answered while data flows is not a
        strike, as in grpcio's ping policy)."""
        self.count = 0


@dataclass(frozen=True, slots=True)
class PeerBudget:
    """Per-connection limits on what a peer can make us do. Rates are per second."""

    #: PINGs received while we send no response; grpcio answers a ping flood the same way.
    pings_per_second: int = 10
    #: SETTINGS frames (not ACKs) received.
    settings_per_second: int = 10
    #: RST_STREAM frames received (rapid reset, CVE-2023-44487).
    resets_per_second: int = 200
    #: Frames that carry nothing we act on: DATA without payload or END_STREAM, HEADERS and
    #: CONTINUATION fragments that are empty and do not end the block, PRIORITY, unknown types.
    empty_frames_per_second: int = 100
    #: Output queued for a peer that does not read, after which we stop reading from it.
    max_queued_output_bytes: int = 1024 * 1024
    #: Request bytes one connection may make us hold at once (bodies still arriving and those
    #: of calls running); the stream whose DATA passes it is refused.
    max_buffered_request_bytes: int = 256 * 1024 * 1024
    #: Seconds for the client preface and the first SETTINGS to arrive.
    handshake_timeout_s: float = 10.0
    #: Seconds a header block (HEADERS then CONTINUATION frames) may take to complete.
    header_timeout_s: float = 10.0
    #: Seconds without a call in progress after which the connection is closed (GOAWAY).
    idle_timeout_s: float = 300.0

    def counters(
        self, clock: Callable[[], float] = time.monotonic
    ) -> tuple[RateCounter, RateCounter, RateCounter, RateCounter]:
        """Fresh (pings, settings, resets, empty frames) counters for one connection."""
        return (
            RateCounter(self.pings_per_second, clock=clock),
            RateCounter(self.settings_per_second, clock=clock),
            RateCounter(self.resets_per_second, clock=clock),
            RateCounter(self.empty_frames_per_second, clock=clock),
        )
