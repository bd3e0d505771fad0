"""The daemon's readiness, kept in a state file of its IMEX config folder for the probes and the plugin.

The folder is the kubelet plugin's per-domain folder on the host (mounted at `/imexd`), so the plugin
reads the state there the moment it changes, without waiting for the kubelet's next probe and the pod
status that follows; the DaemonSet's startup and readiness probes read the same file with the image's
`/bin/sh` instead of starting a Python interpreter. The file is one line of JSON,
`{"ready": true, "since": <epoch seconds>, "pid": <nvidia-imex pid>, "checked": <epoch seconds>}`,
replaced atomically; its spelling `"ready": true` is what the probe and the plugin look for, and
`checked` (rewritten on every confirmation) lets a reader tell a live daemon's file from one left
behind by a killed daemon.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from computedomain.api import names
from computedomain.daemon import metrics
from computedomain.daemon.check import CheckResult, query_imex
from computedomain.daemon.process import ImexSupervisor
from computedomain.daemon.settings import DaemonSettings
from computedomain.files import write_atomic

log = logging.getLogger(__name__)

STATE_FILE_NAME = names.IMEX_STATE_FILE
# How often IMEX is asked while it is not ready: the gate of a waiting pod sees the answer this late
# at most. A query is one short-lived `nvidia-imex-ctl` process.
NOT_READY_INTERVAL = 0.2
# A new IMEX process is first asked this long after its start, and again after the same while it is
# not ready, before NOT_READY_INTERVAL: every pod of a new domain waits for its first "ready", and
# asking at the very start only spends a query on a process that cannot answer yet.
START_INTERVALS = (0.1, 0.1)
# How often a ready IMEX is confirmed, which also keeps `checked` fresh. A crash is seen at once
# (the supervisor reports the exit); a hang within this interval.
READY_INTERVAL = 5.0


def state_file(settings: DaemonSettings) -> Path:
    """Where the daemon keeps its readiness state."""
    return settings.config_dir / STATE_FILE_NAME


def http_readiness(settings: DaemonSettings) -> tuple[bool, str]:
    """What `/readyz` answers: the state file's word, read as the pod's readiness probe reads it."""
    try:
        state = state_file(settings).read_text()
    except OSError:
        return False, "IMEX daemon is not ready: no state yet"
    if '"ready": true' in state:
        return True, "IMEX daemon is ready"
    return False, "IMEX daemon is not ready"


def render_state(ready: bool, since: float, pid: int | None, checked: float) -> str:
    """The state file's content; `"ready": true` is spelled exactly so, as its readers match it."""
    return json.dumps({"ready": ready, "since": since, "pid": pid, "checked": checked}) + "\n"


@dataclass
class ReadinessFile:
    """The state file of one daemon: written when the readiness changes, refreshed while ready."""

    path: Path
    clock: Callable[[], float] = time.time
    ready: bool | None = None
    pid: int | None = None
    since: float = 0.0

    def put(self, ready: bool, pid: int | None) -> None:
        """Record the readiness of IMEX process `pid` (None: no process) as just confirmed."""
        now = self.clock()
        if ready != self.ready or pid != self.pid:
            self.since = now
            log.info(
                "IMEX is %s%s", "ready" if ready else "not ready", f" (pid {pid})" if pid is not None else ""
            )
        changed = ready != self.ready or pid != self.pid
        self.ready, self.pid = ready, pid
        metrics.IMEX_READY.set(1 if ready else 0)
        # A ready state is rewritten on every confirmation to keep `checked` fresh; a not-ready one
        # only when it changes, as nobody trusts it either way.
        if changed or ready:
            write_atomic(self.path, render_state(ready, self.since, pid, now))

    def clear(self) -> None:
        """Remove a state file of an earlier run, so that nobody reads it as this run's."""
        self.path.unlink(missing_ok=True)
        self.ready, self.pid = None, None
        metrics.IMEX_READY.set(0)


Query = Callable[[], Awaitable[CheckResult]]


class Supervised(Protocol):
    """What the report needs of the IMEX supervisor."""

    @property
    def pid(self) -> int | None:
        """The running IMEX process, or None."""
        ...

    async def wait_change(self, timeout: float) -> bool:
        """True once a process starts or exits within `timeout` seconds."""
        ...


async def report_readiness(
    supervisor: Supervised,
    state: ReadinessFile,
    query: Query,
    *,
    not_ready_interval: float = NOT_READY_INTERVAL,
    ready_interval: float = READY_INTERVAL,
    start_intervals: Sequence[float] = START_INTERVALS,
) -> None:
    """Keep `state` current with IMEX's answers to `query` (the `check` query); never returns.

    A new process is asked `start_intervals[0]` seconds after its start (the wait begins the moment
    it starts), then after each further one of `start_intervals` while it is not ready, then every
    `not_ready_interval` seconds; a ready one every `ready_interval` seconds, or as soon as its
    process ends.
    """
    asked_pid: int | None = None
    misses = 0
    while True:
        pid = supervisor.pid
        ready = False
        if pid is not None and pid != asked_pid:
            asked_pid, misses = pid, 1
            if start_intervals and await supervisor.wait_change(start_intervals[0]):
                continue
        if pid is not None:
            result = await query()
            # An answer from a process that ended meanwhile says nothing about its successor.
            ready = result.ok and supervisor.pid == pid
            if not result.ok:
                log.debug("%s", result.message)
        state.put(ready, pid if ready else supervisor.pid)
        if ready:
            wait = ready_interval
        elif pid is not None and misses < len(start_intervals):
            wait = start_intervals[misses]
            misses += 1
        else:
            wait = not_ready_interval
        await supervisor.wait_change(wait)


async def report_imex_readiness(
    settings: DaemonSettings, supervisor: ImexSupervisor, state: ReadinessFile
) -> None:
    """`report_readiness` with the `check` query of this daemon's IMEX."""
    await report_readiness(supervisor, state, lambda: query_imex(settings))
