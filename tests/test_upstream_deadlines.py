"""The upstream request time limits: one ticking timer for all requests under way."""

from __future__ import annotations

import asyncio
import time

import pytest

from hubbub.upstream import _Deadlines


async def limited(deadlines: _Deadlines, seconds: float, work: float) -> str:
    task = asyncio.current_task()
    assert task is not None
    deadlines.add(task, seconds)
    try:
        await asyncio.sleep(work)
        return "done"
    except asyncio.CancelledError:
        if deadlines.timed_out(task):
            raise TimeoutError from None
        raise
    finally:
        deadlines.remove(task)


async def test_a_limit_fires_within_a_tenth_of_it() -> None:
    deadlines = _Deadlines()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await limited(deadlines, 0.3, 5)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.45, elapsed
    # the task is not left cancelled: it goes on awaiting
    await asyncio.sleep(0)


async def test_requests_within_their_limit_end_normally() -> None:
    deadlines = _Deadlines()
    results = await asyncio.gather(*(limited(deadlines, 0.5, 0.01) for _ in range(50)))
    assert results == ["done"] * 50


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = _Deadlines()
    task = asyncio.create_task(limited(deadlines, 5, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
