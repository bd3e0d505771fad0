"""Count objects that reach a state, from a watch of plain JSON (no model objects: thousands of pods
would cost the benchmark more CPU to decode than the components it measures)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

ListCall = Callable[..., Any]


@dataclass
class Tracker:
    """Watches the objects a list call returns and records when `count` of them first met `test`."""

    what: str
    list_call: ListCall
    args: tuple[Any, ...]
    test: Callable[[dict[str, Any]], bool]
    count: int
    label_selector: str = ""
    met: set[str] = field(default_factory=set)
    reached: float | None = None
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin watching."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop watching."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait(self, timeout: float) -> float:
        """Wait until `count` objects met the test at once; returns when that was first seen."""
        deadline = time.monotonic() + timeout
        while self.reached is None:
            if self._task is not None and self._task.done():
                self._task.result()  # the watch failed: say why
                raise RuntimeError(f"the watch of {self.what} ended")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.met)}/{self.count} {self.what} after {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return self.reached

    async def _run(self) -> None:
        await follow(self.list_call, self.args, self.met.clear, self._observe, self.what, self.label_selector)

    def _observe(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind != "DELETED" and self.test(obj):
            self.met.add(name)
        else:
            self.met.discard(name)
        if self.reached is None and len(self.met) >= self.count:
            self.reached = time.monotonic()


async def follow(
    list_call: ListCall,
    args: tuple[Any, ...],
    listed: Callable[[], None],
    observe: Callable[[str, dict[str, Any]], None],
    what: str,
    label_selector: str = "",
    field_selector: str = "",
) -> None:
    """List then watch, forever: `listed()` before each list's items, then `observe(type, object)` for
    each item (as ADDED) and each event. An overloaded API server answers 429, 504 or a cut stream now
    and then: it lists again."""
    selectors = {"label_selector": label_selector, "field_selector": field_selector}
    while True:
        try:
            response = await list_call(*args, **selectors, _preload_content=False)
            listing = json.loads(await response.read())
            if "items" not in listing:
                raise RuntimeError(f"list answered {listing.get('code')}: {listing.get('message')}")
            listed()
            for obj in listing["items"] or []:
                observe("ADDED", obj)
            await _watch(list_call, args, selectors, listing["metadata"]["resourceVersion"], observe)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            print(f"    ({what}: watch failed: {str(error)[:120]}; listing again)", flush=True)
            await asyncio.sleep(1.0)


async def _watch(
    list_call: ListCall,
    args: tuple[Any, ...],
    selectors: dict[str, str],
    version: str,
    observe: Callable[[str, dict[str, Any]], None],
) -> None:
    """Watch from `version` until the server ends the watch with an error or the version expires."""
    try:
        while True:
            stream = watch.Watch(return_type="object").stream(
                list_call, *args, **selectors, resource_version=version, timeout_seconds=300
            )
            async with stream:
                async for event in stream:
                    if event.get("type") == "ERROR":
                        return  # list again
                    version = event["object"]["metadata"]["resourceVersion"]
                    observe(event["type"], event["object"])
    except ApiException as error:
        if error.status != 410:
            raise  # else the version expired: list again


def pod_scheduled(pod: dict[str, Any]) -> bool:
    """The pod is bound to a node."""
    return bool((pod.get("spec") or {}).get("nodeName"))


def claim_allocated(claim: dict[str, Any]) -> bool:
    """The ResourceClaim has an allocation."""
    return bool((claim.get("status") or {}).get("allocation"))
