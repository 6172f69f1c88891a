"""Retrying a failed call: exponential backoff with full jitter, one implementation for all.

A :class:`Backoff` says how often and how long: ``attempts`` calls at most (the first one
included), waits whose ceiling starts at ``initial`` and grows by ``multiplier`` up to
``maximum``, each wait drawn uniformly from ``[0, ceiling]`` ("full jitter": clients that failed
together do not come back together), and an optional ``deadline`` in seconds from the first
call after which no further call starts. :func:`retry` runs a sync call under it (worker
threads), :func:`retry_async` an async one; both take ``retry_on``, the exception classes (or a
predicate) that are worth another try, and re-raise everything else, and the last failure, as
they came::

    policy = Backoff(attempts=3, initial=0.5, maximum=8.0)
    body = retry(lambda: fetch(url), policy, retry_on=(ConnectionError, TimeoutError))

``immediate_first`` makes the first retry go at once, the way httpx retries a connection: a
refused or reset connect is often fixed by simply connecting again.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Backoff", "OnRetry", "RetryOn", "retry", "retry_async"]

T = TypeVar("T")

#: Which failures are worth another try: exception classes, or a predicate over the exception.
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
#: Called before each wait with the number of the retry (1 for the second call), the failure
#: and the wait in seconds: for logs and retry counters.
OnRetry = Callable[[int, BaseException, float], object]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How many calls, and how long to wait between them (see the module's docstring)."""

    attempts: int = 3
    initial: float = 0.1
    multiplier: float = 2.0
    maximum: float = math.inf
    jitter: bool = True
    deadline: float | None = None
    immediate_first: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1:
            raise ValueError("initial and maximum must be >= 0 and multiplier >= 1")

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 for the second call)."""
        if self.immediate_first:
            if retry == 1:
                return 0.0
            retry -= 1
        if self.initial == 0:
            return 0.0
        try:
            return min(self.initial * self.multiplier ** (retry - 1), self.maximum)
        except OverflowError:  # thousands of retries: long past any cap
            return self.maximum

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry``: up to :meth:`ceiling`, at random with jitter."""
        ceiling = self.ceiling(retry)
        return random.uniform(0, ceiling) if self.jitter else ceiling


def _matcher(retry_on: RetryOn) -> Callable[[BaseException], bool]:
    if isinstance(retry_on, type | tuple):
        classes = retry_on
        return lambda exc: isinstance(exc, classes)
    return retry_on


def _next_wait(policy: Backoff, retry: int, started: float) -> float | None:
    """The wait before retry ``retry``, or ``None`` when the policy allows no further call."""
    if retry >= policy.attempts:
        return None
    wait = policy.delay(retry)
    if policy.deadline is not None and time.monotonic() + wait - started > policy.deadline:
        return None
    return wait


def retry(
    fn: Callable[[], T],
    policy: Backoff,
    *,
    retry_on: RetryOn,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """``fn()``, called again after a wait while it fails with what ``retry_on`` names.

    ``sleep`` waits between calls (``threading.Event.wait`` makes the wait interruptible: the
    next call can then check why it was woken).
    """
    matches = _matcher(retry_on)
    started = time.monotonic()
    failures = 0
    while True:
        try:
            return fn()
        except BaseException as exc:
            failures += 1
            wait = _next_wait(policy, failures, started) if matches(exc) else None
            if wait is None:
                raise
            if on_retry is not None:
                on_retry(failures, exc, wait)
        sleep(wait)


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    policy: Backoff,
    *,
    retry_on: RetryOn,
    on_retry: OnRetry | None = None,
) -> T:
    """``await fn()``, awaited again after a wait while it fails with what ``retry_on`` names.

    Cancellation is never retried: it ends the wait or the call at once.
    """
    import asyncio  # here: the synchronous users (the storage initializer) never load it

    matches = _matcher(retry_on)
    started = time.monotonic()
    failures = 0
    while True:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            failures += 1
            wait = _next_wait(policy, failures, started) if matches(exc) else None
            if wait is None:
                raise
            if on_retry is not None:
                on_retry(failures, exc, wait)
        await asyncio.sleep(wait)
