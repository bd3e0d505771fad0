"""The keyed work queue: one worker per key, bursts collapse, failures retry, delays re-check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from computedomain.controller.runtime.workqueue import WorkQueue
from support.waiting import eventually

WINDOW = 0.02
StartQueue = Callable[..., Awaitable[WorkQueue]]


class FakeWorker:
    """Records every call; `gate` holds a key's work until the test opens it; `plan` scripts results."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.overlaps: list[str] = []
        self.peak = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.plan: dict[str, list[float | Exception | None]] = {}

    async def __call__(self, key: str) -> float | None:
        if key in self.running:
            self.overlaps.append(key)
        self.running.add(key)
        self.peak = max(self.peak, len(self.running))
        self.calls.append(key)
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            steps = self.plan.get(key)
            outcome = steps.pop(0) if steps else None
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.running.discard(key)

    def count(self, key: str) -> int:
        return self.calls.count(key)


@pytest.fixture
async def worker() -> FakeWorker:
    return FakeWorker()


@pytest.fixture
async def running(worker: FakeWorker) -> AsyncIterator[StartQueue]:
    tasks: list[asyncio.Task[None]] = []

    async def start(concurrency: int = 16) -> WorkQueue:
        queue = WorkQueue(
            worker, concurrency=concurrency, batch_window=WINDOW, base_backoff=0.01, max_backoff=0.05
        )
        tasks.append(asyncio.create_task(queue.run()))
        return queue

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def idle(queue: WorkQueue) -> None:
    await asyncio.wait_for(queue.idle.wait(), timeout=5)


async def until(condition: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout=5, interval=0.005, what=what)


async def test_an_added_key_is_worked_once(running: StartQueue, worker: FakeWorker) -> None:
    queue = await running()
    queue.add("a")
    assert not queue.idle.is_set()
    await idle(queue)
    assert worker.calls == ["a"]


async def test_a_burst_of_adds_collapses_into_one_pass(running: StartQueue, worker: FakeWorker) -> None:
    queue = await running()
    for _ in range(50):
        queue.add("a")
    queue.add("b")
    await idle(queue)
    assert sorted(worker.calls) == ["a", "b"]


async def test_an_add_during_a_pass_runs_the_key_once_more_afterwards_never_in_parallel(
    running: StartQueue, worker: FakeWorker
) -> None:
    queue = await running()
    worker.gates["a"] = asyncio.Event()
    queue.add("a")
    await until(lambda: "a" in worker.running, "first pass of a started")
    for _ in range(10):
        queue.add("a")
    worker.gates["a"].set()
    await idle(queue)
    assert worker.count("a") == 2
    assert worker.overlaps == []


async def test_different_keys_are_worked_concurrently_up_to_the_limit(
    running: StartQueue, worker: FakeWorker
) -> None:
    queue = await running(concurrency=2)
    for key in "abc":
        worker.gates[key] = asyncio.Event()
        queue.add(key, 0)
    await until(lambda: len(worker.running) == 2, "two keys running")
    for gate in worker.gates.values():
        gate.set()
    await idle(queue)
    assert sorted(worker.calls) == ["a", "b", "c"]
    assert worker.peak == 2


async def test_a_failure_is_retried_until_the_work_succeeds(running: StartQueue, worker: FakeWorker) -> None:
    queue = await running()
    worker.plan["a"] = [RuntimeError("API down"), RuntimeError("still down"), None]
    queue.add("a")
    await until(lambda: worker.count("a") == 3, "two retries")
    await idle(queue)
    assert worker.count("a") == 3


async def test_a_returned_delay_looks_at_the_key_again(running: StartQueue, worker: FakeWorker) -> None:
    queue = await running()
    worker.plan["a"] = [0.01, None]
    queue.add("a")
    await until(lambda: worker.count("a") == 2, "the re-check")
    await idle(queue)
    assert worker.count("a") == 2


async def test_forget_drops_a_pending_retry(running: StartQueue, worker: FakeWorker) -> None:
    queue = await running()
    worker.plan["a"] = [60.0]  # look again in a minute
    queue.add("a")
    await until(lambda: worker.count("a") == 1 and not worker.running, "first pass done")
    assert not queue.idle.is_set()  # the re-check is pending
    queue.forget("a")
    await idle(queue)
    assert worker.count("a") == 1


async def test_an_earlier_add_replaces_a_later_pending_one(running: StartQueue, worker: FakeWorker) -> None:
    queue = await running()
    queue.add("a", 60.0)
    queue.add("a", 0)
    await until(lambda: worker.count("a") == 1, "the key worked without waiting a minute")
    await idle(queue)
    assert worker.count("a") == 1
