"""One node's watch fan-out during the join, from the `fanout` module where it is there.

Two shapes of that module are understood: `NodeWatchers(kube, node=, namespace=, resource_version=,
clique=)` with `bytes() -> {watch: bytes}`, and `NodeFanout(connection, node=, operator_namespace=,
resource_version=, clique_name=)` with `received() -> {watch: figures with .bytes}`. Anything else, or
a failure of the watchers, costs the figure only (with a printed note), never the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client


class FanoutProbe:
    """Runs one node's watchers in the background from `start()` until `stop()`."""

    def __init__(self, watchers: Any, shape: str) -> None:
        self.watchers = watchers
        self.shape = shape
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def make(
        cls, api: client.ApiClient, kubeconfig: Path, node: str, namespace: str, clique: str
    ) -> FanoutProbe | None:
        """The probe for `node`, or None (with a note) where the fan-out module cannot give one."""
        try:
            module = importlib.import_module("fanout")
            if hasattr(module, "NodeWatchers"):
                watchers = module.NodeWatchers(
                    api, node=node, namespace=namespace, resource_version="v1", clique=clique
                )
                return cls(watchers, "NodeWatchers")
            config = importlib.import_module("computedomain.kube.config")
            watchers = module.NodeFanout(
                config.from_kubeconfig(kubeconfig),
                node=node,
                operator_namespace=namespace,
                resource_version="v1",
                clique_name=clique,
            )
            return cls(watchers, "NodeFanout")
        except (ImportError, AttributeError, TypeError, ValueError) as error:
            print(f"    fan-out: skipped ({type(error).__name__}: {error})", flush=True)
            return None

    def start(self, timeout: float) -> None:
        """Open the watches in the background: the clique they follow appears only once nodes join."""

        async def opening() -> None:
            if self.shape == "NodeFanout":
                await self.watchers.start(timeout=timeout)
            else:
                await self.watchers.start()

        self._task = asyncio.create_task(opening())

    def bytes(self) -> dict[str, int]:
        """Bytes received so far, by watch; empty (with a note) when the watchers failed."""
        task = self._task
        error = task.exception() if task is not None and task.done() and not task.cancelled() else None
        if error is not None:
            print(f"    fan-out: the watchers failed ({type(error).__name__}: {error})", flush=True)
            return {}
        if self.shape == "NodeFanout":
            return {name: int(figures.bytes) for name, figures in self.watchers.received().items()}
        return {name: int(size) for name, size in self.watchers.bytes().items()}

    async def stop(self) -> None:
        """Close the watches."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.watchers.stop()
