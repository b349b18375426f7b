"""Helpers shared by the unit tests of the stage runner and the intake hand-off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from secumail.pipeline.runner import StageRunner


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until `predicate()` holds; fail the test after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def run_all(rs: list[StageRunner], body: Callable[[], Awaitable[None]]) -> None:
    """Run the stage runners while `body` runs, then stop them."""
    tasks = [asyncio.create_task(r.run()) for r in rs]
    try:
        await body()
    finally:
        await asyncio.gather(*(r.stop(grace=1.0) for r in rs))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
