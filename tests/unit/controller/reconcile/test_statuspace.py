"""A big domain's status is rewritten for progress at a pace bounded by its size; news goes out at once."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.controller.reconcile.statuspace import MAX_INTERVAL, StatusPacer, progress_interval


def status(ready: str = "NotReady", reason: str = "DaemonsNotReady", nodes: int = 0) -> dict[str, Any]:
    return {
        "status": ready,
        "observedGeneration": 1,
        "nodes": [{"name": f"n{i}"} for i in range(nodes)],
        "conditions": [
            {"type": "Ready", "status": "False" if ready == "NotReady" else "True", "reason": reason}
        ],
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_interval_grows_with_the_list_and_is_capped() -> None:
    assert progress_interval(0) == 0
    assert progress_interval(144) < 0.3
    assert progress_interval(5000) == MAX_INTERVAL
    assert progress_interval(50_000) == MAX_INTERVAL


def test_progress_of_a_big_domain_waits_for_its_interval() -> None:
    clock = Clock()
    pacer = StatusPacer(clock)
    first = status(nodes=4000)
    assert pacer.wait("d", {}, first) == 0  # never written: at once
    pacer.written("d")
    more = status(nodes=4100)
    assert pacer.wait("d", first, more) == pytest.approx(progress_interval(4100))
    clock.now += 5
    assert pacer.wait("d", first, more) == pytest.approx(progress_interval(4100) - 5)
    clock.now += progress_interval(4100)
    assert pacer.wait("d", first, more) == 0


def test_news_is_never_paced() -> None:
    clock = Clock()
    pacer = StatusPacer(clock)
    pacer.written("d")
    before = status(nodes=5000)
    assert pacer.wait("d", before, status("Ready", "DomainReady", nodes=5000)) == 0
    assert pacer.wait("d", before, status(reason="WaitingForNodes", nodes=5000)) == 0
    generation = status(nodes=5000) | {"observedGeneration": 2}
    assert pacer.wait("d", before, generation) == 0


def test_a_small_domain_is_not_held_back_and_a_forgotten_one_starts_afresh() -> None:
    clock = Clock()
    pacer = StatusPacer(clock)
    pacer.written("small")
    clock.now += 0.05
    assert pacer.wait("small", status(nodes=4), status(nodes=5)) == 0
    pacer.written("big")
    pacer.forget("big")
    assert pacer.wait("big", status(nodes=5000), status(nodes=5001)) == 0
