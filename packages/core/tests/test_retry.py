"""``moorage.core.retry``: how many calls, which waits, what is retried and what is not."""

from __future__ import annotations

import asyncio
import math

import pytest

from moorage.core.retry import Backoff, retry, retry_async


class Flaky:
    """Fails with ``errors`` in turn, then answers ``"ok"``; counts its calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_ceilings_grow_by_the_multiplier_up_to_the_cap() -> None:
    policy = Backoff(attempts=10, initial=0.5, multiplier=2, maximum=8.0)
    assert [policy.ceiling(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert Backoff(initial=0.5).ceiling(5000) == math.inf  # no cap, no overflow
    assert Backoff(initial=0.0).ceiling(5000) == 0.0


def test_immediate_first_retries_at_once_then_backs_off() -> None:
    policy = Backoff(attempts=5, initial=0.5, immediate_first=True)
    assert [policy.ceiling(n) for n in range(1, 5)] == [0, 0.5, 1, 2]


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    policy = Backoff(initial=0.1, maximum=0.3)
    for n, ceiling in ((1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3)):
        waits = [policy.delay(n) for _ in range(300)]
        assert all(0 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 250  # spread, not one value
    assert Backoff(initial=0.1, jitter=False).delay(3) == pytest.approx(0.4)


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Backoff(attempts=0)
    with pytest.raises(ValueError):
        Backoff(multiplier=0.5)


def test_retries_until_success_and_reports_each_retry() -> None:
    fn = Flaky(ConnectionError("a"), TimeoutError("b"))
    waits: list[float] = []
    seen: list[tuple[int, str]] = []
    result = retry(
        fn,
        Backoff(attempts=3, initial=1.0, jitter=False),
        retry_on=(ConnectionError, TimeoutError),
        on_retry=lambda n, exc, wait: seen.append((n, str(exc))),
        sleep=waits.append,
    )
    assert result == "ok" and fn.calls == 3
    assert waits == [1.0, 2.0]
    assert seen == [(1, "a"), (2, "b")]


def test_the_last_failure_is_raised_after_the_last_attempt() -> None:
    fn = Flaky(*(ConnectionError(str(n)) for n in range(5)))
    with pytest.raises(ConnectionError, match="2"):
        retry(fn, Backoff(attempts=3), retry_on=ConnectionError, sleep=lambda _: None)
    assert fn.calls == 3


def test_other_failures_are_not_retried() -> None:
    fn = Flaky(ValueError("bad"))
    with pytest.raises(ValueError):
        retry(fn, Backoff(attempts=5), retry_on=ConnectionError, sleep=lambda _: None)
    assert fn.calls == 1


def test_a_predicate_decides_per_exception() -> None:
    fn = Flaky(OSError(11, "again"), OSError(2, "missing"))
    with pytest.raises(OSError, match="missing"):
        retry(
            fn,
            Backoff(attempts=5),
            retry_on=lambda exc: isinstance(exc, OSError) and exc.errno == 11,
            sleep=lambda _: None,
        )
    assert fn.calls == 2


def test_no_call_starts_past_the_deadline() -> None:
    fn = Flaky(*(ConnectionError() for _ in range(10)))
    with pytest.raises(ConnectionError):
        # The first wait (5 s) alone ends past the 1 s deadline: one call only.
        retry(
            fn,
            Backoff(attempts=10, initial=5.0, jitter=False, deadline=1.0),
            retry_on=ConnectionError,
            sleep=lambda _: None,
        )
    assert fn.calls == 1


async def test_async_retries_and_gives_up_like_the_sync_one() -> None:
    fn = Flaky(ConnectionError(), ConnectionError())

    async def call() -> str:
        return fn()

    retries: list[int] = []
    policy = Backoff(attempts=3, initial=0.001)
    result = await retry_async(
        call, policy, retry_on=ConnectionError, on_retry=lambda n, *_: retries.append(n)
    )
    assert result == "ok" and fn.calls == 3 and retries == [1, 2]

    fn = Flaky(*(ConnectionError() for _ in range(5)))
    with pytest.raises(ConnectionError):
        await retry_async(call, policy, retry_on=ConnectionError)
    assert fn.calls == 3


async def test_async_cancellation_is_never_retried() -> None:
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry_async(cancelled, Backoff(attempts=5), retry_on=lambda _: True)
    assert calls == 1
