"""The lifecycle kit: retry delays, bounded stops, and serving until told to stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.lifecycle import Backoff, bounded, serve_until_signalled, stop_tasks

log = logging.getLogger("tests.lifecycle")


def test_backoff_doubles_up_to_the_cap_with_equal_jitter_and_never_zero() -> None:
    backoff = Backoff(cap=5.0, base=0.05)
    for failures in range(60):  # far past the cap: no overflow, no zero delay
        nominal = min(5.0, 0.05 * 2 ** min(failures, 30))
        delay = backoff.next()
        assert nominal / 2 <= delay <= nominal, failures


def test_backoff_starts_over_after_a_success() -> None:
    backoff = Backoff(cap=5.0, base=0.05)
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.05


async def test_stop_tasks_cancels_and_gives_up_on_a_task_that_will_not_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(10)  # ignores the first cancellation (a stuck library call)

    polite = asyncio.create_task(asyncio.sleep(10))
    rude = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stop_tasks([polite, rude], within=0.2, log=log)
    assert polite.cancelled()
    assert not rude.done()
    assert loop.time() - started < 2
    assert "did not stop in time" in caplog.text
    rude.cancel()
    await bounded(asyncio.gather(rude, return_exceptions=True), within=2)
    assert rude.done()


async def test_serve_until_signalled_enters_and_leaves_the_service_when_stopped() -> None:
    events: list[str] = []

    class Service:
        async def __aenter__(self) -> str:
            events.append("enter")
            return "here"

        async def __aexit__(self, *exc: object) -> None:
            events.append("exit")

    stop = asyncio.Event()
    task = asyncio.create_task(serve_until_signalled(Service(), log, stop))
    await asyncio.sleep(0.01)
    assert events == ["enter"]
    stop.set()
    await asyncio.wait_for(task, 2)
    assert events == ["enter", "exit"]
