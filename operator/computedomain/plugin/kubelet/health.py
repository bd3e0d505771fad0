"""Health of the node's devices for the kubelet's DRAResourceHealth stream, from a driver's source."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from computedomain.plugin.kubelet.notify import Notifier

log = logging.getLogger(__name__)

HealthStatus = Literal["HEALTHY", "UNHEALTHY", "UNKNOWN"]


@dataclass(frozen=True)
class Health:
    """One reading: the status of every device of this node, and why."""

    status: HealthStatus
    message: str = ""
    checked_at: float = 0.0


class HealthSource(Protocol):
    """Anything that can judge the node's devices (blocking; it runs in a thread)."""

    def check(self) -> Health:
        """Take one reading; never raises for the hardware's sake."""
        ...


class StaticHealth:
    """Always the same answer (healthy by default): for nodes or tests without NVML."""

    def __init__(self, status: HealthStatus = "HEALTHY", message: str = "") -> None:
        self.status = status
        self.message = message

    def check(self) -> Health:
        """The fixed reading."""
        return Health(self.status, self.message, time.time())


class HealthMonitor:
    """Checks the source periodically and tells streams when the reading changes."""

    def __init__(self, source: HealthSource, interval: float) -> None:
        self.source = source
        self.interval = interval
        self.current = Health("UNKNOWN", "not checked yet")
        self.changes = Notifier()

    async def check_once(self) -> Health:
        """Take a reading now and publish it if it differs from the last one."""
        try:
            reading = await asyncio.to_thread(self.source.check)
        except Exception as error:  # a broken source means we do not know, not that we stop
            log.exception("health check failed")
            reading = Health("UNKNOWN", f"health check failed: {error}", time.time())
        changed = (reading.status, reading.message) != (self.current.status, self.current.message)
        if changed and reading.status != "HEALTHY":
            log.warning("devices are %s: %s", reading.status, reading.message)
        elif changed:
            log.info("devices are HEALTHY%s", f": {reading.message}" if reading.message else "")
        self.current = reading
        if changed:
            self.changes.notify()
        return reading

    async def run(self) -> None:
        """Check forever, every `interval` seconds."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)
