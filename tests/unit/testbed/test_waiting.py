"""`eventually` waits on coroutine probes and on plain predicates alike, and fails at its deadline."""

from __future__ import annotations

import pytest

from support.waiting import eventually


async def test_a_plain_predicate_is_polled_until_it_holds() -> None:
    calls: list[int] = []

    def probe() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    assert await eventually(probe, timeout=5, interval=0.01) == 3


async def test_a_coroutine_probe_is_awaited() -> None:
    async def probe() -> str:
        return "ready"

    assert await eventually(probe, timeout=1) == "ready"


async def test_a_predicate_that_never_holds_fails_at_the_deadline() -> None:
    with pytest.raises(AssertionError, match="waiting for the impossible"):
        await eventually(lambda: False, timeout=0.05, interval=0.01, what="the impossible")
