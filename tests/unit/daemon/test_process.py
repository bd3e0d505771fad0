"""The IMEX supervisor against the fake `nvidia-imex`: start, crash and restart, reload, stop."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from computedomain.daemon.config import HostEntry, render_hosts_file, render_imex_config, render_nodes_config
from computedomain.daemon.process import ImexFatalError, ImexSupervisor, imex_argv
from fakes.imex.harness import FAKE_IMEX, events_of, wait_until

MakeSupervisor = Callable[..., ImexSupervisor]


@pytest.fixture
def imex_dir(tmp_path: Path) -> Path:
    config_dir = tmp_path / "imexd"
    config_dir.mkdir()
    (config_dir / "nodes.cfg").write_text(render_nodes_config(4))
    (config_dir / "imexd.cfg").write_text(render_imex_config("10.0.0.1", str(config_dir / "nodes.cfg")))
    (tmp_path / "hosts").write_text(render_hosts_file("127.0.0.1\tlocalhost\n", (HostEntry(0, "10.0.0.1"),)))
    return config_dir


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def make_supervisor(imex_dir: Path, state_dir: Path) -> AsyncIterator[MakeSupervisor]:
    made: list[ImexSupervisor] = []

    def make(extra_env: dict[str, str] | None = None, **options: Any) -> ImexSupervisor:
        env = dict(os.environ)
        env.update(FAKE_IMEX_STATE=str(state_dir), IMEX_HOSTS_FILE=str(imex_dir.parent / "hosts"))
        env.update(extra_env or {})
        options.setdefault("restart_delay", 0.05)
        supervisor = ImexSupervisor(
            imex_argv(str(FAKE_IMEX), str(imex_dir / "imexd.cfg")), env=env, **options
        )
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        await supervisor.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_start_runs_imex_once_with_config(
    make_supervisor: MakeSupervisor, imex_dir: Path, state_dir: Path
) -> None:
    supervisor = make_supervisor()
    assert await supervisor.ensure_started() is True
    assert await supervisor.ensure_started() is False
    starts = await wait_until(lambda: events_of(state_dir, "start"), "the fake IMEX to start")
    assert len(starts) == 1
    assert starts[0]["pid"] == supervisor.pid
    assert starts[0]["argv"][1:] == ["-c", str(imex_dir / "imexd.cfg")]
    assert starts[0]["config"]["IMEX_CMD_BIND_INTERFACE_IP"] == "10.0.0.1"
    assert starts[0]["nodes"][-1] == "compute-domain-daemon-0003"
    assert starts[0]["hosts"] == {"compute-domain-daemon-0000": "10.0.0.1"}


async def test_crash_is_restarted(make_supervisor: MakeSupervisor, state_dir: Path) -> None:
    supervisor = make_supervisor()
    await supervisor.ensure_started()
    first = supervisor.pid
    assert first is not None
    await wait_until(lambda: events_of(state_dir, "start"), "the first start")
    os.kill(first, signal.SIGKILL)
    second = await wait_until(lambda: supervisor.pid not in (None, first) and supervisor.pid, "a restart")
    assert supervisor.starts == 2
    await wait_until(
        lambda: [e for e in events_of(state_dir, "start") if e["pid"] == second], "the restart record"
    )


async def test_reload_delivers_sigusr1_and_imex_rereads_hosts(
    make_supervisor: MakeSupervisor, imex_dir: Path, state_dir: Path
) -> None:
    supervisor = make_supervisor()
    await supervisor.ensure_started()
    await wait_until(lambda: events_of(state_dir, "start"), "the fake IMEX to start")
    hosts = imex_dir.parent / "hosts"
    hosts.write_text(
        render_hosts_file(hosts.read_text(), (HostEntry(0, "10.0.0.1"), HostEntry(1, "10.0.0.2")))
    )
    assert await supervisor.reload() is True
    reloads = await wait_until(lambda: events_of(state_dir, "reload"), "the reload record")
    assert reloads[0]["pid"] == supervisor.pid
    assert reloads[0]["hosts"] == {
        "compute-domain-daemon-0000": "10.0.0.1",
        "compute-domain-daemon-0001": "10.0.0.2",
    }
    assert supervisor.starts == 1


async def test_reload_when_not_running_reports_false(make_supervisor: MakeSupervisor) -> None:
    assert await make_supervisor().reload() is False


async def test_stop_terminates_cleanly(make_supervisor: MakeSupervisor, state_dir: Path) -> None:
    supervisor = make_supervisor()
    await supervisor.ensure_started()
    pid = supervisor.pid
    assert pid is not None
    await wait_until(lambda: events_of(state_dir, "start"), "the fake IMEX to start")
    await supervisor.stop()
    assert not supervisor.running
    assert not pid_alive(pid)
    assert [event["pid"] for event in events_of(state_dir, "stop")] == [pid]
    assert not (state_dir / "imex.pid").exists()
    with pytest.raises(RuntimeError, match="stopped"):
        await supervisor.ensure_started()
    assert supervisor.starts == 1


async def test_stop_kills_imex_that_ignores_sigterm(make_supervisor: MakeSupervisor, state_dir: Path) -> None:
    supervisor = make_supervisor({"FAKE_IMEX_IGNORE_SIGTERM": "1"}, stop_timeout=0.5)
    await supervisor.ensure_started()
    pid = supervisor.pid
    assert pid is not None
    await wait_until(lambda: events_of(state_dir, "start"), "the fake IMEX to start")
    await asyncio.wait_for(supervisor.stop(), 5)
    assert not pid_alive(pid)
    assert events_of(state_dir, "ignored-stop")
    assert not events_of(state_dir, "stop")


async def test_restart_replaces_the_process(make_supervisor: MakeSupervisor, state_dir: Path) -> None:
    supervisor = make_supervisor()
    await supervisor.ensure_started()
    first = supervisor.pid
    await wait_until(lambda: events_of(state_dir, "start"), "the first start")
    await supervisor.restart()
    assert supervisor.pid not in (None, first)
    assert [event["pid"] for event in events_of(state_dir, "stop")] == [first]
    await wait_until(lambda: len(events_of(state_dir, "start")) == 2, "the second start")
    assert supervisor.starts == 2


async def test_gives_up_after_repeated_fast_failures(
    make_supervisor: MakeSupervisor, state_dir: Path
) -> None:
    supervisor = make_supervisor({"FAKE_IMEX_EXIT_CODE": "3"}, restart_delay=0.01, max_fast_failures=3)
    await supervisor.ensure_started()
    with pytest.raises(ImexFatalError, match="3 times"):
        await asyncio.wait_for(supervisor.wait_failed(), 15)
    assert supervisor.starts == 3
    assert not supervisor.running
    assert len(events_of(state_dir, "start")) == 3


async def test_slow_failures_do_not_add_up(make_supervisor: MakeSupervisor) -> None:
    supervisor = make_supervisor(
        {"FAKE_IMEX_EXIT_CODE": "3"}, restart_delay=0.01, max_fast_failures=2, min_uptime=0.0
    )
    failed = asyncio.create_task(supervisor.wait_failed())
    await supervisor.ensure_started()
    await wait_until(lambda: supervisor.starts >= 4, "four starts", limit=15)
    assert not failed.done()
    failed.cancel()


async def test_missing_binary_is_fatal(tmp_path: Path) -> None:
    supervisor = ImexSupervisor([str(tmp_path / "no-such-imex"), "-c", "x"])
    with pytest.raises(ImexFatalError, match="cannot start"):
        await supervisor.ensure_started()
    assert not supervisor.running


async def test_wait_exit_reports_a_crash_and_a_stop_but_not_a_quiet_run(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor(restart_delay=30.0)
    await supervisor.ensure_started()
    assert await supervisor.wait_exit(0.05) is False
    pid = supervisor.pid
    assert pid is not None
    waiter = asyncio.create_task(supervisor.wait_exit(10.0))
    os.kill(pid, signal.SIGKILL)
    assert await waiter is True
    assert supervisor.pid is None
    await supervisor.restart()
    waiter = asyncio.create_task(supervisor.wait_exit(10.0))
    await asyncio.sleep(0)
    await supervisor.stop()
    assert await waiter is True


async def test_wait_change_reports_a_start_and_an_exit(make_supervisor: MakeSupervisor) -> None:
    supervisor = make_supervisor(restart_delay=30.0)
    waiter = asyncio.create_task(supervisor.wait_change(10.0))
    await asyncio.sleep(0)
    await supervisor.ensure_started()
    assert await waiter is True
    assert await supervisor.wait_change(0.05) is False
    waiter = asyncio.create_task(supervisor.wait_change(10.0))
    await asyncio.sleep(0)
    await supervisor.stop()
    assert await waiter is True
