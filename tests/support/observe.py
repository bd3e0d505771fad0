"""Watching the controller from outside: how often a domain's status changes, when the controller has
settled, and what `kubectl` shows."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from cdtestbed.controller_process import ControllerProcess
from cdtestbed.tools import Tools
from computedomain.api import names
from support.domains import Cluster
from support.waiting import eventually

RECONCILES = "computedomain_reconcile_total"
WRITES = "computedomain_api_writes_total"


class StatusChanges:
    """Counts how often a domain's status changes, from a watch started before the change begins.

    The controller writes a status only when it differs from the live one, so each change seen here
    is one status write.
    """

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.count = 0
        # "ready/expected" of each status seen, for a failure message.
        self.history: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching from the domain's current version."""
        body = await self.cluster.domain(self.namespace, self.name)
        assert body is not None, f"{self.name} does not exist"
        response = await self.cluster.custom.list_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            self.namespace,
            names.DOMAIN_PLURAL,
            field_selector=f"metadata.name={self.name}",
            watch=True,
            resource_version=body["metadata"]["resourceVersion"],
            timeout_seconds=600,
            _preload_content=False,
        )
        self._task = asyncio.create_task(self._count(response, body.get("status")))

    async def _count(self, response: Any, status: Any) -> None:
        async with response:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                new = (event.get("object") or {}).get("status")
                if event.get("type") == "MODIFIED" and new != status:
                    self.count += 1
                    self.history.append(f"{(new or {}).get('nodeSummary')}@{time.monotonic():.2f}")
                    status = new

    async def stop(self) -> int:
        """Stop watching; returns the number of status changes seen."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return self.count


async def quiet(controller: ControllerProcess, seconds: float = 1.0, timeout: float = 60.0) -> None:
    """Wait until the controller neither reconciles nor writes for `seconds` (it has settled)."""
    last: list[float] = []

    async def probe() -> bool:
        now = [controller.metric(RECONCILES), controller.metric(WRITES)]
        settled = now == last
        last[:] = now
        return settled

    await eventually(probe, timeout=timeout, interval=seconds, what="the controller to settle")


async def kubectl(kubeconfig: Path, *args: str) -> str:
    """Run the test bed's kubectl; returns stdout (raises with stderr on failure)."""
    process = await asyncio.create_subprocess_exec(
        str(Tools.default().bin("kubectl")),
        f"--kubeconfig={kubeconfig}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {err.decode()}")
    return out.decode()
