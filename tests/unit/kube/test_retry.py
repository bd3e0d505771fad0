"""The one retry policy: what it retries, how long it waits (the server's `Retry-After` included), and
how a deadline or a stop ends it."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from computedomain.kube import KubeError
from computedomain.kube.retry import Retrier, RetryPolicy, Stopped, always, deadline_in, retry
from support.waiting import eventually

FAST = RetryPolicy(initial=0.001, maximum=0.001, jitter=0.0)


class Flaky:
    """Fails with `errors` in order, then answers "ok"; counts the calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_transient_failures_are_retried_and_each_is_logged_once_with_its_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = Flaky(KubeError(503, "unavailable"), aiohttp.ClientConnectionError("cut"), TimeoutError())
    caplog.set_level(logging.WARNING)
    assert await retry(call, what="reading node n", policy=FAST) == "ok"
    assert call.calls == 4
    assert warnings_of(caplog) == [
        "reading node n failed (unavailable); retrying in 0.0s",
        "reading node n failed (cut); retrying in 0.0s",
        "reading node n failed (TimeoutError); retrying in 0.0s",
    ]


async def test_a_refusal_is_raised_at_once_unless_the_policy_allows_refusals() -> None:
    call = Flaky(KubeError(403, "forbidden"))
    with pytest.raises(KubeError, match="forbidden"):
        await retry(call, what="x", policy=FAST)
    assert call.calls == 1
    patient = RetryPolicy(initial=0.001, maximum=0.001, refusals=3)
    call = Flaky(*[KubeError(403, "forbidden")] * 3)
    with pytest.raises(KubeError, match="forbidden"):
        await retry(call, what="x", policy=patient)
    assert call.calls == 3
    # Transient failures do not use up the refusals.
    call = Flaky(KubeError(403, "f"), KubeError(503, "u"), KubeError(503, "u"), KubeError(403, "f"))
    assert await retry(call, what="x", policy=patient) == "ok"


async def test_a_bug_is_not_retried_unless_the_policy_retries_everything() -> None:
    call = Flaky(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await retry(call, what="x", policy=FAST)
    call = Flaky(RuntimeError("bug"), KubeError(403, "forbidden"))
    assert await retry(call, what="x", policy=RetryPolicy(initial=0.001, retry_on=always)) == "ok"


async def test_the_servers_retry_after_is_waited_for_when_longer_than_the_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    call = Flaky(
        KubeError(429, "too many requests", retry_after=0.3), KubeError(429, "again", retry_after=0.0)
    )
    started = time.monotonic()
    assert await retry(call, what="x", policy=FAST) == "ok"
    assert time.monotonic() - started >= 0.3
    assert warnings_of(caplog) == [
        "x failed (too many requests); retrying in 0.3s",
        "x failed (again); retrying in 0.0s",
    ]


async def test_no_wait_runs_past_the_deadline() -> None:
    slow = RetryPolicy(initial=5.0, maximum=5.0, jitter=0.0)
    call = Flaky(KubeError(503, "first"), KubeError(503, "second"))
    started = time.monotonic()
    with pytest.raises(KubeError, match="first"):
        await retry(call, what="x", policy=slow, deadline=deadline_in(1.0))
    assert time.monotonic() - started < 1.0
    assert call.calls == 1
    # Nor does a Retry-After that ends after it.
    call = Flaky(KubeError(503, "busy", retry_after=60))
    with pytest.raises(KubeError, match="busy"):
        await retry(call, what="x", policy=FAST, deadline=deadline_in(5.0))
    # Within the deadline, the retries go on.
    call = Flaky(KubeError(503, "first"), KubeError(503, "second"))
    assert await retry(call, what="x", policy=FAST, deadline=deadline_in(5.0)) == "ok"


async def test_stop_ends_the_wait_at_once() -> None:
    stop = asyncio.Event()
    call = Flaky(*[KubeError(503, "unavailable")] * 100)
    task = asyncio.create_task(
        retry(call, what="labelling pod p", policy=RetryPolicy(initial=30.0, maximum=30.0), stop=stop)
    )
    await eventually(lambda: call.calls == 1, timeout=5, interval=0.01, what="the first attempt")
    stop.set()
    with pytest.raises(Stopped, match="labelling pod p"):
        await asyncio.wait_for(task, 5)
    assert call.calls == 1


def test_a_reset_starts_the_delays_from_the_shortest_again() -> None:
    retrier = Retrier("x", RetryPolicy(initial=1.0, maximum=8.0, jitter=0.0))
    error = KubeError(503, "unavailable")
    assert [retrier.delay(error) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    retrier.reset()
    assert retrier.delay(error) == 1.0
    assert retrier.delay(KubeError(503, "busy", retry_after=20.0)) == 20.0
