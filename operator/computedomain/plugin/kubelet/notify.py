"""A change counter that waiters block on: cheap, and it wakes every waiter at once."""

from __future__ import annotations

import asyncio


class Notifier:
    """Counts changes; `wait` returns at the next change after the count a waiter saw."""

    def __init__(self) -> None:
        self._version = 0
        self._event = asyncio.Event()

    @property
    def version(self) -> int:
        """Number of changes so far; pass it to `wait` to wait for the next one."""
        return self._version

    def notify(self) -> None:
        """Something changed: wake everyone waiting."""
        self._version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, after: int, timeout: float) -> bool:
        """Wait until a change after `after` happened (True) or `timeout` seconds passed (False)."""
        if self._version != after:
            return True
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True
