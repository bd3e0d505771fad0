"""A keyed work queue: each ComputeDomain is reconciled by one worker at a time, bursts of events
for one domain collapse into one reconcile, and failures retry with capped, jittered backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from computedomain.controller import metrics
from computedomain.controller.runtime.leader import NotLeading
from computedomain.kube import is_transient

logger = logging.getLogger(__name__)

Worker = Callable[[str], Awaitable[float | None]]


class WorkQueue:
    """Run `work(key)` for keys added with `add`, at most `concurrency` at once.

    `work` returns None when done, or a delay after which the key is to be looked at again
    (e.g. to re-check a condition without any event). An exception retries with backoff.
    """

    def __init__(
        self,
        work: Worker,
        *,
        concurrency: int = 64,
        batch_window: float = 0.2,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
    ) -> None:
        self._work = work
        self._concurrency = concurrency
        self._batch_window = batch_window
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failures: dict[str, int] = {}
        self._last_start: dict[str, float] = {}
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, key: str, delay: float | None = None) -> None:
        """Ask for `key` to be reconciled after `delay`.

        By default a key that has not run within the batch window runs at once (a new domain is not
        kept waiting), and one that has runs when the window since its last start ends: a storm of
        events (many nodes joining) costs one reconcile per window, not one per event.
        """
        if delay is None:
            now = asyncio.get_running_loop().time()
            delay = max(0.0, self._last_start.get(key, -self._batch_window) + self._batch_window - now)
        if key in self._active:
            self._dirty.add(key)  # run again once the current pass ends
            return
        if key in self._queued:
            return
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= asyncio.get_running_loop().time() + delay:
                return
            timer.cancel()
        self.idle.clear()
        if delay <= 0:
            self._enqueue(key)
        else:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._enqueue, key)

    def forget(self, key: str) -> None:
        """Drop any pending retry of `key` (its object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        self._last_start.pop(key, None)
        self._check_idle()

    def _enqueue(self, key: str) -> None:
        self._timers.pop(key, None)
        if key in self._queued:
            return
        self._queued.add(key)
        self._ready.put_nowait(key)
        metrics.QUEUE_DEPTH.set(len(self._queued))

    async def run(self) -> None:
        """Process keys forever with `concurrency` workers."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))
            self._active.add(key)
            self._last_start[key] = asyncio.get_running_loop().time()
            again: float | None = None
            try:
                again = await self._work(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                again = min(self._base_backoff * 2 ** (failures - 1), self._max_backoff)
                again *= 0.75 + random.random() / 2  # jitter keeps retries of many domains apart
                # A lost connection or lease is routine: one line; anything else: the traceback.
                routine = is_transient(error) or isinstance(error, NotLeading)
                logger.log(
                    logging.WARNING if routine else logging.ERROR,
                    "reconcile of %s failed (attempt %d: %s); retrying in %.1fs",
                    key,
                    failures,
                    str(error) or type(error).__name__,
                    again,
                    exc_info=not routine,
                )
            finally:
                self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key, None if again is None else min(again, self._batch_window))
            elif again is not None:
                self.add(key, again)
            self._check_idle()

    def _check_idle(self) -> None:
        if not (self._queued or self._active or self._timers):
            self.idle.set()
