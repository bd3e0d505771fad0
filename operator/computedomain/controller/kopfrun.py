"""Run Kopf for as long as the controller leads, restarting it whenever it stops on its own.

Kopf ends its whole operator when one of its watch streams fails in a way it does not retry (an
ERROR event other than 410 in a stream, a request that fails past its retries). For the controller
a failing watch is routine, so Kopf runs under a supervisor: stopped by anything but our stop flag,
it is started again after a jittered delay.

Two of Kopf's habits would hurt the rest of the process on such a restart, and both are disarmed:

- When it stops, Kopf cancels every task created while it ran, its own or not (a reconcile's
  helpers among them). Tasks are therefore marked at creation with whether Kopf created them (a
  context variable set in Kopf's task is inherited by every task it creates), and only Kopf's are
  left to it.
- Kopf replaces the process's SIGTERM/SIGINT handlers with its own; ours are put back at once, so a
  signal stops the controller, not only Kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import weakref
from collections.abc import Callable, Collection, Coroutine, Iterator
from typing import Any, cast

import kopf

from computedomain.kube.backoff import Backoff

logger = logging.getLogger(__name__)

_IN_KOPF: contextvars.ContextVar[bool] = contextvars.ContextVar("computedomain_in_kopf", default=False)
# Kopf has run long enough to count as working again: the next failure starts from a short delay.
_HEALTHY_RUN = 60.0


class _KopfTasks(Collection["asyncio.Task[Any]"]):
    """Tasks created from inside Kopf, tracked by a task factory while Kopf runs."""

    def __init__(self) -> None:
        self._tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def factory(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        """A task factory (`loop.set_task_factory`) that remembers tasks Kopf creates."""
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        if _IN_KOPF.get():
            self._tasks.add(task)
        return task

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)


class _NotKopfs(Collection["asyncio.Task[Any]"]):
    """Every task but Kopf's: what Kopf is told to leave alone when it stops."""

    def __init__(self, kopfs: _KopfTasks) -> None:
        self._kopfs = kopfs

    def __contains__(self, task: object) -> bool:
        return task not in self._kopfs

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(t for t in asyncio.all_tasks() if t not in self._kopfs)

    def __len__(self) -> int:
        return sum(1 for _ in self)


async def run_kopf(
    registry: Any,
    settings: Callable[[], Any],
    stop: asyncio.Event,
    on_signal: Callable[[], None],
    restart_backoff: Backoff | None = None,
    identity: str = "computedomain-controller",
) -> None:
    """Run Kopf (cluster-wide, standalone) until `stop` is set; restart it whenever it ends first.

    `settings` makes fresh Kopf settings for each start; `on_signal` is what SIGTERM/SIGINT do;
    `identity` names this process to Kopf (the pod's name).
    """
    loop = asyncio.get_running_loop()
    kopfs = _KopfTasks()
    previous_factory = loop.get_task_factory()
    # typeshed's factory protocol is generic over the result; ours passes any result through.
    loop.set_task_factory(cast(Any, kopfs.factory))
    backoff = restart_backoff or Backoff(initial=1.0, maximum=30.0)
    try:
        while not stop.is_set():
            started = loop.time()
            try:
                await _run_once(registry, settings(), stop, on_signal, kopfs, identity)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.error("Kopf failed: %s", str(error) or type(error).__name__, exc_info=error)
            if stop.is_set():
                return
            if loop.time() - started > _HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next()
            logger.warning("Kopf stopped on its own; starting it again in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    finally:
        loop.set_task_factory(previous_factory)


async def _run_once(
    registry: Any,
    settings: Any,
    stop: asyncio.Event,
    on_signal: Callable[[], None],
    kopfs: _KopfTasks,
    identity: str,
) -> None:
    # Set in this task's own context: every task Kopf creates from here on inherits it.
    token = _IN_KOPF.set(True)
    try:
        # Given, not detected: Kopf's own guess asks the password database for the user's name, and
        # the image's user 65532 has no entry there (KeyError: getpwuid(): uid not found).
        tasks = await kopf.spawn_tasks(
            registry=registry,
            settings=settings,
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
            identity=cast(Any, identity),
        )
        _take_back_signals(on_signal)
        await kopf.run_tasks(tasks, ignored=_NotKopfs(kopfs))
    finally:
        _IN_KOPF.reset(token)


def _take_back_signals(on_signal: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
