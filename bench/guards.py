"""Waits that end with a clear message instead of hanging: a resource the API server does not serve
yet, a watcher that never opens, a controller that died while the benchmark waited for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

import scenarios as sc
from cdtestbed.controller_process import ControllerProcess
from computedomain.api import names

T = TypeVar("T")


async def domains_served(api: client.ApiClient, namespace: str, timeout: float = 60.0) -> None:
    """Wait until ComputeDomains can be listed in `namespace` (a new CRD's storage answers 429 while it
    initializes, and a watcher whose first list fails would never open)."""
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await custom.list_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, limit=1
            )
            return
        except ApiException as error:
            if error.status not in (429, 503) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def open_domain_watcher(
    api: client.ApiClient, namespace: str, timeout: float = 60.0
) -> sc.DomainWatcher:
    """A started DomainWatcher of `namespace`, or TimeoutError."""
    await domains_served(api, namespace, timeout)
    watcher = sc.DomainWatcher(api, namespace)
    try:
        await asyncio.wait_for(watcher.start(), timeout)
    except TimeoutError:
        await watcher.stop()
        raise TimeoutError(
            f"the watch of ComputeDomains in {namespace} did not open in {timeout:.0f}s"
        ) from None
    return watcher


async def while_alive(controller: ControllerProcess, waiting: Awaitable[T]) -> T:
    """Await `waiting`, but fail at once if the controller process exits meanwhile."""
    task = asyncio.ensure_future(waiting)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                return task.result()
            process = controller.process
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the controller exited with {process.returncode}; see {controller.log}")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
