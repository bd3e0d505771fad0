"""Capped exponential backoff with jitter, so that many retrying clients do not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays that double from `initial` up to `maximum`, each spread by +-`jitter` (a fraction)."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.25
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._next = self.initial

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the one after it."""
        delay = self._next * random.uniform(1 - self.jitter, 1 + self.jitter)
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start from `initial` again (after a success)."""
        self._next = self.initial
