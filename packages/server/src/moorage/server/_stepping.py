"""Running a coroutine's first step by hand, and the rest as an ordinary await.

The transports call a handler's coroutine with ``coro.send(None)``: most answers (a cheap sync
model) complete in that first step, without a task or a pass through the event loop. A
coroutine that does wait yields the future it waits for; :func:`resume` drives it from there
inside the current task (or a new one), as a task would have: a cancellation reaches the
coroutine where it waits.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["resume"]

T = TypeVar("T")


class _Blocked:
    """Awaiting it yields what the coroutine stepped by hand yielded (a future it waits for),
    so that the task running :func:`resume` waits for that future in its stead."""

    __slots__ = ("waiting",)

    def __init__(self, waiting: Any) -> None:
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, None]:
        yield self.waiting


async def resume(coro: Coroutine[Any, Any, T], blocked: Any) -> T:
    """Drive ``coro`` (already stepped, now waiting on ``blocked``) to its end; its value."""
    while True:
        try:
            await _Blocked(blocked)
        except BaseException as exc:  # handed to the coroutine, as a task does
            try:
                blocked = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            blocked = coro.send(None)
        except StopIteration as done:
            return done.value
