"""Helpers for tests that drive the IMEX test doubles (`nvidia-imex`, `nvidia-imex-ctl`) in this folder."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

FAKE_IMEX = Path(__file__).with_name("nvidia-imex")
FAKE_IMEX_CTL = Path(__file__).with_name("nvidia-imex-ctl")


def read_events(state_dir: Path) -> list[dict[str, Any]]:
    """Everything the fake nvidia-imex instances recorded in `state_dir`, oldest first."""
    path = state_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events_of(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The recorded events of one kind ("start", "reload", "stop", "ignored-stop")."""
    return [event for event in read_events(state_dir) if event["event"] == kind]


async def wait_until(condition: Callable[[], T | None], what: str, limit: float = 10.0) -> T:
    """Poll `condition` until it returns something truthy and return that; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)
