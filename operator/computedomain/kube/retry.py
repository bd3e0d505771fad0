"""The one way every program retries a call to the API server.

A failure the policy deems worth retrying (by default `is_transient`: a cut connection, a restarting
or throttling API server, a conflict) is logged once, at WARNING, with the delay before the next
attempt, and the call is made again after that delay: a capped exponential backoff with jitter
(`kube.backoff`), but never less than the server's own `Retry-After` when it sent one (API priority
and fairness and an overloaded server say when to come back). Any other error is raised at once, or,
when the policy allows refusals a few attempts (RBAC granted a moment ago may not be in effect yet),
after that many. The wait never runs past a deadline: when the next attempt would start after it, the
last error is raised instead. A `stop` event set while waiting ends the retries with `Stopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from computedomain.kube.backoff import Backoff
from computedomain.kube.errors import KubeError, is_transient

logger = logging.getLogger(__name__)

T = TypeVar("T")


def always(_error: BaseException) -> bool:
    """Retry every error (a loop that no failure may end: watches, the sweep)."""
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """Which errors are retried, and how long to wait between attempts.

    `refusals` is how many attempts an error that `retry_on` rejects gets in all (1: raised at once).
    """

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.25
    retry_on: Callable[[BaseException], bool] = is_transient
    refusals: int = 1

    def backoff(self) -> Backoff:
        """A fresh backoff with this policy's delays."""
        return Backoff(initial=self.initial, maximum=self.maximum, jitter=self.jitter)


DEFAULT = RetryPolicy()


class Stopped(Exception):
    """The caller's `stop` was set while a call waited to be retried; the message says which call."""


def deadline_in(seconds: float) -> float:
    """The deadline `seconds` from now, as `retry` takes it (the `time.monotonic` clock)."""
    return time.monotonic() + seconds


class Retrier:
    """The retries of one call, for loops that also decide when their call has recovered (a watch
    that delivers events again calls `reset`); `retry` covers the common case."""

    def __init__(
        self,
        what: str,
        policy: RetryPolicy = DEFAULT,
        *,
        deadline: float | None = None,
        stop: asyncio.Event | None = None,
        log: logging.Logger = logger,
    ) -> None:
        self.what = what
        self.policy = policy
        self.deadline = deadline
        self.stop = stop
        self.log = log
        self._backoff = policy.backoff()
        self._refusals = 0

    def reset(self) -> None:
        """The call works again: the next failure waits the shortest delay."""
        self._backoff.reset()
        self._refusals = 0

    def delay(self, error: BaseException) -> float:
        """How long to wait after `error`: the backoff's next delay, or the server's `Retry-After`
        when that is longer."""
        delay = self._backoff.next()
        retry_after = error.retry_after if isinstance(error, KubeError) else None
        return max(delay, retry_after) if retry_after is not None else delay

    async def failed(self, error: Exception, what: str | None = None) -> None:
        """Wait before the next attempt after `error`, or raise: `error` itself when the policy does
        not retry it or the deadline would pass, `Stopped` when `stop` is set meanwhile.

        `what` names the call in the log line, when it changed since the retrier was made.
        """
        what = what or self.what
        if not self.policy.retry_on(error):
            self._refusals += 1
            if self._refusals >= self.policy.refusals:
                raise error
        delay = self.delay(error)
        if self.deadline is not None and time.monotonic() + delay > self.deadline:
            raise error
        self.log.warning("%s failed (%s); retrying in %.1fs", what, str(error) or type(error).__name__, delay)
        if self.stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), delay)
        if self.stop.is_set():
            raise Stopped(what) from error


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT,
    deadline: float | None = None,
    stop: asyncio.Event | None = None,
    log: logging.Logger = logger,
) -> T:
    """`await call()` until it succeeds, retrying as the module docstring says.

    `deadline` is a `time.monotonic()` time (`deadline_in`); `what` names the call in log lines and in
    `Stopped`; `log` is the caller's logger, so that the warning names the program's module.
    """
    retrier = Retrier(what, policy, deadline=deadline, stop=stop, log=log)
    while True:
        try:
            return await call()
        except Exception as error:  # each is judged by the policy; CancelledError is not an Exception
            await retrier.failed(error)
