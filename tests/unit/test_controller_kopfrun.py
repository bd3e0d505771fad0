"""The Kopf supervisor: Kopf stopping on its own (failed or not) is started again, our stop flag ends
it, and only the tasks Kopf created are Kopf's to cancel."""

from __future__ import annotations

import asyncio
import pwd
from typing import Any

import kopf
import pytest

from computedomain.controller import kopfrun
from computedomain.controller.handlers import EndlessBackoffs, kopf_settings
from computedomain.kube.backoff import Backoff
from support.waiting import eventually


async def test_kopf_starts_as_a_user_without_a_password_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image runs as user 65532, which has no entry in the password database: Kopf must still
    start (its own guess of an identity asks that database and raises KeyError)."""

    def no_entry(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    registry = kopf.OperatorRegistry()
    logins: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        logins.append("login")
        return kopf.ConnectionInfo(server="https://127.0.0.1:9", insecure=True)

    stop = asyncio.Event()
    supervisor = asyncio.create_task(
        kopfrun.run_kopf(
            registry, kopf_settings, stop, stop.set, Backoff(initial=5, maximum=5), identity="pod-a"
        )
    )
    try:
        await eventually(lambda: asyncio.sleep(0, bool(logins)), timeout=10, what="Kopf past its start")
    finally:
        stop.set()
        await asyncio.wait_for(supervisor, 15)


async def test_kopf_is_restarted_until_the_stop_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    stop = asyncio.Event()

    async def fake_run_once(registry: Any, settings: Any, flag: asyncio.Event, *_: Any) -> None:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("Error in the watch-stream: {'code': 500}")
        if len(runs) == 2:
            return  # "finished unexpectedly"
        await flag.wait()

    monkeypatch.setattr(kopfrun, "_run_once", fake_run_once)
    supervisor = asyncio.create_task(
        kopfrun.run_kopf(object(), kopf_settings, stop, stop.set, Backoff(initial=0.01, maximum=0.01))
    )
    await eventually(lambda: asyncio.sleep(0, len(runs) == 3), timeout=5, what="a third start")
    assert not supervisor.done()
    stop.set()
    await asyncio.wait_for(supervisor, 2)
    assert len(runs) == 3
    assert asyncio.get_running_loop().get_task_factory() is None


async def test_only_tasks_created_inside_kopf_are_kopfs() -> None:
    kopfs = kopfrun._KopfTasks()
    loop = asyncio.get_running_loop()
    loop.set_task_factory(kopfs.factory)  # type: ignore[arg-type]
    try:
        ours = asyncio.create_task(asyncio.sleep(10))

        async def inside_kopf() -> asyncio.Task[None]:
            kopfrun._IN_KOPF.set(True)

            async def grandchild() -> asyncio.Task[None]:
                return asyncio.create_task(asyncio.sleep(10))

            return await asyncio.create_task(grandchild())

        theirs = await asyncio.create_task(inside_kopf())
        later_ours = asyncio.create_task(asyncio.sleep(10))
    finally:
        loop.set_task_factory(None)
    not_kopfs = kopfrun._NotKopfs(kopfs)
    assert theirs in kopfs
    assert theirs not in not_kopfs
    assert ours in not_kopfs
    assert later_ours in not_kopfs
    for task in (ours, theirs, later_ours):
        task.cancel()
    await asyncio.gather(ours, theirs, later_ours, return_exceptions=True)


def test_kopf_never_gives_a_request_up_nor_kills_the_process() -> None:
    settings = kopf_settings()
    backoffs = settings.networking.error_backoffs
    assert isinstance(backoffs, EndlessBackoffs)
    # Endless, capped, and fresh for every request.
    first = [delay for _, delay in zip(range(50), backoffs, strict=False)]
    second = [delay for _, delay in zip(range(3), backoffs, strict=False)]
    assert len(first) == 50
    assert max(first) <= backoffs.maximum * 1.25
    assert second[0] <= backoffs.initial * 1.25
    assert settings.process.ultimate_exiting_timeout is None


async def test_real_kopf_failing_is_restarted_and_leaves_other_tasks_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kopf against an address where nothing listens, with its retries cut short: each start fails
    (its resource scan gives up) and the supervisor starts it again, and a task of ours that was created
    while Kopf ran is not among those Kopf cancels on its way out."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server="https://127.0.0.1:9", insecure=True)

    @kopf.on.event("resource.nvidia.com", "v1beta1", "computedomains", registry=registry)
    def event(**_: Any) -> None:
        pass

    def impatient() -> Any:
        settings = kopf_settings()
        settings.networking.error_backoffs = [0.01]
        settings.networking.connect_timeout = 1
        return settings

    stop = asyncio.Event()
    supervisor = asyncio.create_task(
        kopfrun.run_kopf(registry, impatient, stop, stop.set, Backoff(initial=0.05, maximum=0.05))
    )
    await asyncio.sleep(0.1)  # Kopf is running now
    ours = asyncio.create_task(asyncio.Event().wait())

    def restarts() -> int:
        return sum("Kopf stopped on its own" in r.getMessage() for r in caplog.records)

    try:
        await eventually(lambda: asyncio.sleep(0, restarts() >= 1), timeout=30, what="Kopf restarted")
        assert not supervisor.done()
        assert not ours.done(), "Kopf cancelled a task that was not its own"
    finally:
        stop.set()
        await asyncio.wait_for(supervisor, 15)
        ours.cancel()
        await asyncio.gather(ours, return_exceptions=True)
