"""A coroutine stepped once by hand and driven on by ``resume``: its value, its exception and a
cancellation reach it as they would in a task of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from moorage.server._stepping import resume


async def _first_step(coro: Any) -> Any:
    """The future the coroutine waits for after its first step (it must wait)."""
    return coro.send(None)


async def test_the_value_of_a_coroutine_that_waited() -> None:
    async def answer() -> str:
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        return "done"

    coro = answer()
    blocked = await _first_step(coro)
    assert await resume(coro, blocked) == "done"


async def test_its_exception_propagates() -> None:
    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("bad rows")

    coro = fails()
    blocked = await _first_step(coro)
    with pytest.raises(ValueError, match="bad rows"):
        await resume(coro, blocked)


async def test_a_cancellation_reaches_it_where_it_waits() -> None:
    seen: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coro = waits()
    blocked = await _first_step(coro)
    task = asyncio.get_running_loop().create_task(resume(coro, blocked))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_it_may_catch_a_cancellation_and_answer() -> None:
    async def catches() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "partial"
        return "whole"

    coro = catches()
    blocked = await _first_step(coro)
    task = asyncio.get_running_loop().create_task(resume(coro, blocked))
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "partial"
