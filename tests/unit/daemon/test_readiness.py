"""The daemon's readiness state file: what it says when, and that the probe and the plugin read it alike."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from computedomain.controller.render.daemonset import STATE_PROBE
from computedomain.daemon import readiness
from computedomain.daemon.check import CheckResult
from computedomain.daemon.readiness import ReadinessFile, render_state, report_readiness
from computedomain.plugin import gate
from fakes.imex.harness import wait_until

READY = CheckResult(True, "IMEX daemon is ready")
NOT_READY = CheckResult(False, "IMEX daemon is not ready: NOT_READY")


class FakeSupervisor:
    """An IMEX supervisor whose process comes and goes by hand."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self._changed = asyncio.Event()

    def start(self, pid: int) -> None:
        self.pid = pid
        self._signal()

    def end(self) -> None:
        self.pid = None
        self._signal()

    def _signal(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_change(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True


def probe(config_dir: Path) -> tuple[int, str]:
    """The DaemonSet's startup/readiness probe, run by /bin/sh as the container's runtime would."""
    result = subprocess.run(
        STATE_PROBE, env={"IMEX_CONFIG_DIR": str(config_dir)}, capture_output=True, text=True, timeout=10
    )
    return result.returncode, result.stdout


def state(config_dir: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((config_dir / readiness.STATE_FILE_NAME).read_text())
    return loaded


def test_file_names_agree() -> None:
    assert gate.STATE_FILE_NAME == readiness.STATE_FILE_NAME
    assert readiness.STATE_FILE_NAME in STATE_PROBE[-1]


@pytest.mark.parametrize("ready", [True, False])
def test_probe_and_plugin_read_what_the_daemon_writes(tmp_path: Path, ready: bool) -> None:
    ReadinessFile(tmp_path / readiness.STATE_FILE_NAME).put(ready, 4242)
    code, output = probe(tmp_path)
    assert (code == 0) is ready
    assert output.startswith("IMEX daemon is ready" if ready else "IMEX daemon is not ready")
    assert gate.state_says_ready(tmp_path) is ready


def test_without_state_neither_probe_nor_plugin_sees_ready(tmp_path: Path) -> None:
    assert probe(tmp_path) == (1, f"IMEX daemon is not ready: no state in {tmp_path}/imex-state.json\n")
    assert gate.state_says_ready(tmp_path) is False
    (tmp_path / readiness.STATE_FILE_NAME).write_text("{not json")
    assert gate.state_says_ready(tmp_path) is False


def test_plugin_ignores_a_ready_state_nobody_confirmed_lately(tmp_path: Path) -> None:
    confirmed = 1000.0
    (tmp_path / readiness.STATE_FILE_NAME).write_text(render_state(True, confirmed, 7, confirmed))
    assert gate.state_says_ready(tmp_path, now=lambda: confirmed + gate.STATE_MAX_AGE - 1)
    assert not gate.state_says_ready(tmp_path, now=lambda: confirmed + gate.STATE_MAX_AGE + 1)


def test_since_moves_only_when_readiness_or_process_changes(tmp_path: Path) -> None:
    now = [100.0]
    file = ReadinessFile(tmp_path / readiness.STATE_FILE_NAME, clock=lambda: now[0])
    file.put(True, 1)
    now[0] = 105.0
    file.put(True, 1)
    assert state(tmp_path) == {"ready": True, "since": 100.0, "pid": 1, "checked": 105.0}
    now[0] = 106.0
    file.put(True, 2)
    assert state(tmp_path)["since"] == 106.0
    file.clear()
    assert not (tmp_path / readiness.STATE_FILE_NAME).exists()


async def test_reports_ready_once_imex_answers_and_not_ready_the_moment_it_ends(tmp_path: Path) -> None:
    supervisor = FakeSupervisor()
    answers = [NOT_READY, NOT_READY]
    asked: list[int | None] = []

    async def query() -> CheckResult:
        asked.append(supervisor.pid)
        return answers.pop(0) if answers else READY

    file = ReadinessFile(tmp_path / readiness.STATE_FILE_NAME)
    task = asyncio.create_task(
        report_readiness(
            supervisor,
            file,
            query,
            not_ready_interval=0.01,
            ready_interval=60.0,
        )
    )
    try:
        await asyncio.sleep(0.05)
        assert asked == []  # no IMEX process, nothing to ask
        assert state(tmp_path)["ready"] is False
        supervisor.pid = 31
        await wait_until(lambda: file.ready is True, "IMEX reported ready", limit=5.0)
        assert state(tmp_path)["pid"] == 31
        assert asked == [31, 31, 31]
        supervisor.end()
        # Woken by the exit, not by the 60 s interval.
        await wait_until(lambda: file.ready is False, "IMEX reported not ready", limit=2.0)
        assert state(tmp_path)["ready"] is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_new_process_is_asked_soon_after_its_start_then_at_the_steady_interval(
    tmp_path: Path,
) -> None:
    supervisor = FakeSupervisor()
    answers = [NOT_READY, NOT_READY]
    asked: list[float] = []
    loop = asyncio.get_running_loop()

    async def query() -> CheckResult:
        asked.append(loop.time())
        return answers.pop(0) if answers else READY

    file = ReadinessFile(tmp_path / readiness.STATE_FILE_NAME)
    # Neither the steady interval nor the ready one could bring an answer within the test's limit.
    task = asyncio.create_task(
        report_readiness(
            supervisor,
            file,
            query,
            not_ready_interval=60.0,
            ready_interval=60.0,
            start_intervals=(0.05, 0.05),
        )
    )
    try:
        await wait_until(lambda: file.ready is False, "a first report", limit=2.0)
        started = loop.time()
        supervisor.start(31)
        # Asked 0.05 s after the start and 0.05 s after that; the third answer waits for the steady 60 s.
        await wait_until(lambda: len(asked) == 2, "two queries after the start", limit=5.0)
        assert asked[0] - started >= 0.05
        assert asked[1] - asked[0] >= 0.05
        assert file.ready is False
        supervisor.end()
        supervisor.start(32)
        # A restarted process starts the short intervals over; its first answer is READY.
        await wait_until(lambda: file.ready is True, "the new process reported ready", limit=5.0)
        assert state(tmp_path)["pid"] == 32
        assert len(asked) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_answer_from_a_process_that_ended_meanwhile_is_not_ready(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(pid=5)

    async def query() -> CheckResult:
        supervisor.pid = 6  # restarted while the query ran
        return READY

    file = ReadinessFile(tmp_path / readiness.STATE_FILE_NAME)
    task = asyncio.create_task(report_readiness(supervisor, file, query, not_ready_interval=10.0))
    try:
        await wait_until(lambda: file.ready is not None, "a first report", limit=2.0)
        assert file.ready is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
