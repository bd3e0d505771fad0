"""Supervision of the `nvidia-imex` child process: start, restart on crash, reload, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from typing import Literal

from computedomain.daemon import metrics

log = logging.getLogger(__name__)

DEFAULT_RESTART_DELAY = 1.0
DEFAULT_MIN_UPTIME = 10.0
DEFAULT_MAX_FAST_FAILURES = 5
DEFAULT_STOP_TIMEOUT = 10.0


class ImexFatalError(RuntimeError):
    """IMEX cannot be kept running; the daemon should exit so that the kubelet restarts the pod."""


def imex_argv(binary: str, config_file: str) -> list[str]:
    """The command line that runs IMEX in the foreground on `config_file`."""
    return [binary, "-c", config_file]


class ImexSupervisor:
    """Keeps one `nvidia-imex` process running until `stop()`.

    An unexpected exit is restarted after `restart_delay` seconds. An exit less than `min_uptime` seconds
    after its start counts as a fast failure; `max_fast_failures` in a row make the supervisor give up,
    which `wait_failed()` reports. The child inherits stdout and stderr, so IMEX logs reach the container
    log.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        restart_delay: float = DEFAULT_RESTART_DELAY,
        min_uptime: float = DEFAULT_MIN_UPTIME,
        max_fast_failures: int = DEFAULT_MAX_FAST_FAILURES,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if not argv:
            raise ValueError("argv must name the IMEX binary")
        self._argv = list(argv)
        self._env = None if env is None else dict(env)
        self._restart_delay = restart_delay
        self._min_uptime = min_uptime
        self._max_fast_failures = max_fast_failures
        self._stop_timeout = stop_timeout
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._watchdogs: set[asyncio.Task[None]] = set()
        self._fast_failures = 0
        self._starts = 0
        self._closed = False
        self._failed = asyncio.Event()
        self._failure: ImexFatalError | None = None
        # `_exited` is replaced on every exit, `_changed` on every start and every exit, so that each
        # waiter sees exactly the events after it began to wait.
        self._exited = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The running child's pid, or None."""
        proc = self._proc
        return None if proc is None or proc.returncode is not None else proc.pid

    @property
    def running(self) -> bool:
        """Whether a child is running now."""
        return self.pid is not None

    @property
    def starts(self) -> int:
        """How many times a child was started, restarts included."""
        return self._starts

    async def ensure_started(self) -> bool:
        """Start IMEX unless it runs; return whether this call started it. Raise ImexFatalError on failure."""
        async with self._lock:
            if self._closed:
                raise RuntimeError("the IMEX supervisor was stopped")
            if self.running:
                return False
            await self._start_locked()
            return True

    async def reload(self) -> bool:
        """Ask IMEX to re-read its config and re-resolve peer names (SIGUSR1); False when not running."""
        async with self._lock:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                return False
            log.info("sending SIGUSR1 to nvidia-imex (pid %d) to reload its peers", proc.pid)
            try:
                proc.send_signal(signal.SIGUSR1)
            except ProcessLookupError:
                return False
            metrics.IMEX_RELOADS.inc()
            return True

    async def restart(self) -> None:
        """Stop IMEX (if running) and start it again."""
        async with self._lock:
            if self._closed:
                raise RuntimeError("the IMEX supervisor was stopped")
            await self._terminate_locked("restart")
            await self._start_locked("reconfigured")

    async def stop(self) -> None:
        """Stop IMEX for good: SIGTERM, wait up to the stop timeout, then SIGKILL."""
        async with self._lock:
            self._closed = True
            await self._terminate_locked("shutdown")
        watchdogs = list(self._watchdogs)
        for task in watchdogs:
            task.cancel()
        await asyncio.gather(*watchdogs, return_exceptions=True)

    async def wait_exit(self, timeout: float) -> bool:
        """True once a child exits (crash, restart or stop) within `timeout` seconds, else False."""
        exited = self._exited
        try:
            await asyncio.wait_for(exited.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_change(self, timeout: float) -> bool:
        """True once a child starts or exits within `timeout` seconds, else False."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_failed(self) -> None:
        """Return never while IMEX is kept alive; raise ImexFatalError once the supervisor gave up."""
        await self._failed.wait()
        assert self._failure is not None
        raise self._failure

    async def _start_locked(self, cause: Literal["exited", "reconfigured"] = "exited") -> None:
        # `cause`: why a start after the first one happens (a restart, as metrics count it).
        try:
            proc = await asyncio.create_subprocess_exec(*self._argv, env=self._env)
        except OSError as err:
            raise ImexFatalError(f"cannot start {self._argv[0]}: {err}") from err
        self._proc = proc
        self._starts += 1
        metrics.IMEX_RUNNING.set(1)
        if self._starts > 1:
            metrics.IMEX_RESTARTS.labels(cause=cause).inc()
        started_at = asyncio.get_running_loop().time()
        log.info("started nvidia-imex (pid %d): %s", proc.pid, " ".join(self._argv))
        self._signal_change()
        task = asyncio.create_task(self._watch(proc, started_at), name=f"imex-watchdog-{proc.pid}")
        self._watchdogs.add(task)
        task.add_done_callback(self._watchdogs.discard)

    async def _terminate_locked(self, why: str) -> None:
        proc = self._proc
        self._proc = None
        if proc is None or proc.returncode is not None:
            return
        log.info("stopping nvidia-imex (pid %d) for %s", proc.pid, why)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), self._stop_timeout)
        except TimeoutError:
            log.warning(
                "nvidia-imex (pid %d) ignored SIGTERM for %.0fs; killing it", proc.pid, self._stop_timeout
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._signal_exit()
        log.info("nvidia-imex (pid %d) stopped with exit code %s", proc.pid, proc.returncode)

    def _signal_exit(self) -> None:
        metrics.IMEX_RUNNING.set(0)
        exited, self._exited = self._exited, asyncio.Event()
        exited.set()
        self._signal_change()

    def _signal_change(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _watch(self, proc: asyncio.subprocess.Process, started_at: float) -> None:
        returncode = await proc.wait()
        async with self._lock:
            if self._proc is not proc:
                return  # stopped or replaced on purpose
            self._proc = None
            self._signal_exit()
            uptime = asyncio.get_running_loop().time() - started_at
            log.warning(
                "nvidia-imex (pid %d) exited unexpectedly with code %s after %.1fs",
                proc.pid,
                returncode,
                uptime,
            )
            delay = self._restart_delay
            if returncode == -signal.SIGUSR1:
                # A reload reached the process before it installed its handler: not a failure.
                delay = 0.0
            elif uptime < self._min_uptime:
                self._fast_failures += 1
            else:
                self._fast_failures = 0
            if self._fast_failures >= self._max_fast_failures:
                self._give_up(
                    f"nvidia-imex exited {self._fast_failures} times in a row within {self._min_uptime:.0f}s"
                )
                return
        await asyncio.sleep(delay)
        async with self._lock:
            if self._closed or self._proc is not None:
                return
            try:
                await self._start_locked()
            except ImexFatalError as err:
                self._give_up(str(err))

    def _give_up(self, reason: str) -> None:
        log.error("giving up on nvidia-imex: %s", reason)
        self._failure = ImexFatalError(reason)
        self._failed.set()
