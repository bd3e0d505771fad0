"""The controller's lifecycle under Kopf: a standby waits for the lease inside Kopf's startup, Kopf's
SIGTERM ends the process with 0, a lost lease ends the Kopf run and the next term campaigns again in
the same process, a failed run is followed by another after a delay, and Kopf never gives a request
up nor kills the process.

The lease lives in an in-memory store with resourceVersions; the API server address answers nothing,
so a term that leads stays in its discovery until it ends."""

from __future__ import annotations

import asyncio
import copy
import datetime
import os
import pwd
import signal
import ssl
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio

from cdtestbed.cluster import free_port
from computedomain.controller import metrics
from computedomain.controller.runtime.app import Controller
from computedomain.controller.runtime.handlers import EndlessBackoffs, kopf_settings
from computedomain.controller.runtime.leader import LeaderElector, LeaseTiming, NotLeading
from computedomain.controller.runtime.term import Term
from computedomain.controller.settings import Settings
from computedomain.kube import Kube, KubeError, Object
from computedomain.kube.config import Connection, StaticToken
from support.waiting import eventually

NOWHERE = Connection("https://127.0.0.1:9", ssl.create_default_context(), StaticToken("t"))


class Leases:
    """One namespace's Leases with optimistic concurrency: the calls `LeaderElector` makes."""

    def __init__(self) -> None:
        self.leases: dict[str, Object] = {}
        self.version = 0

    def _store(self, body: Object) -> Object:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> Object | None:
        lease = self.leases.get(name)
        return copy.deepcopy(lease) if lease else None

    async def create(self, kind: Any, body: Object) -> Object:
        if body["metadata"]["name"] in self.leases:
            raise KubeError(409, "exists")
        return self._store(body)

    async def call(self, method: str, path: str, **kwargs: Any) -> Object:
        body: Object = kwargs["body"]
        live = self.leases.get(body["metadata"]["name"])
        if live is None or live["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise KubeError(409, "conflict")
        return self._store(body)

    async def close(self) -> None:
        pass

    def holder(self) -> str | None:
        lease = next(iter(self.leases.values()), None)
        return lease["spec"].get("holderIdentity") if lease else None

    def take(self, holder: str, name: str = "computedomain-controller") -> None:
        """Another process writes the lease, renewed now for a minute."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": holder, "renewTime": now, "leaseDurationSeconds": 60}
        self._store({"metadata": {"name": name, "namespace": "computedomain-system"}, "spec": spec})


class WithLeases(Controller):
    def __init__(self, settings: Settings, leases: Leases) -> None:
        super().__init__(settings, NOWHERE)
        self.leases = leases

    def lease_client(self) -> Kube:
        return cast(Kube, self.leases)


def settings(**env: str) -> Settings:
    return Settings.from_env(
        {
            "IMAGE_NAME": "registry.example/cd:1",
            "POD_NAME": "me",
            "HTTP_PORT": str(free_port()),
            "LEASE_DURATION_SECONDS": "1.5",
            "RENEW_DEADLINE_SECONDS": "1",
            "RETRY_PERIOD_SECONDS": "0.1",
            **env,
        }
    )


@pytest_asyncio.fixture
async def signals() -> AsyncIterator[None]:
    """Kopf installs its SIGTERM/SIGINT handlers on the shared event loop: take them away after."""
    yield
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)


async def readyz(controller: Controller) -> tuple[int, str] | None:
    """/readyz's status and text; None while nothing answers yet."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{controller.settings.http_port}/readyz") as response,
        ):
            return response.status, (await response.text()).strip()
    except aiohttp.ClientConnectionError:
        return None


async def sigterm(run: asyncio.Task[int]) -> int:
    """What the kubelet sends; only once Kopf (not the default action) handles it."""
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    os.kill(os.getpid(), signal.SIGTERM)
    # Promptly: Kopf is not left to wait for a task of its own.
    return await asyncio.wait_for(run, 4)


def term_of(controller: Controller) -> Term:
    assert controller.term is not None
    return controller.term


@pytest.mark.usefixtures("signals")
async def test_a_standby_waits_in_kopfs_startup_and_sigterm_ends_it_with_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Also as the image's user 65532, which has no password entry (Kopf's own guess of an identity
    asks that database and raises KeyError)."""

    def no_entry(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    leases = Leases()
    leases.take("other")
    controller = WithLeases(settings(), leases)
    run = asyncio.create_task(controller.run())
    try:
        assert await eventually(lambda: readyz(controller), timeout=10, what="HTTP") == (200, "standby")
        await asyncio.sleep(0.5)  # several attempts to take the lease
        term = term_of(controller)
        # Still in Kopf's startup: no client of a term, and so no watch of Kopf's either.
        assert not term.leading
        assert term.kube is None
        assert not run.done()
    finally:
        code = await sigterm(run)
    assert code == 0
    assert leases.holder() == "other"
    assert controller.term is None


@pytest.mark.usefixtures("signals")
async def test_a_lost_lease_ends_the_kopf_run_and_the_same_process_campaigns_again() -> None:
    leases = Leases()
    controller = WithLeases(settings(), leases)
    run = asyncio.create_task(controller.run())
    try:
        first = await eventually(
            lambda: controller.term if controller.term and controller.term.leading else None,
            timeout=10,
            what="the first term to lead",
        )
        assert metrics.LEADER._value.get() == 1
        # Leading, with caches that cannot load (no API server).
        assert await readyz(controller) == (503, "leading, caches loading")
        leases.take("usurper")

        def second_term() -> Term | None:
            term = controller.term
            return term if term is not None and term is not first else None

        second = await eventually(second_term, timeout=10, what="a second term")
        assert first.lost
        assert not first.failed
        assert first.kube is not None
        assert first.world is None
        assert not first.leading
        assert await readyz(controller) == (200, "standby")
        assert not second.leading
        assert metrics.LEADER._value.get() == 0
        assert not run.done()
        # The second term campaigns: it leads once the lease is free again.
        leases.leases.clear()
        await eventually(lambda: second.leading, timeout=10, what="the second term to lead")
    finally:
        code = await sigterm(run)
    assert code == 0
    # A clean stop handed the lease over.
    assert leases.holder() == ""


class Scripted(Controller):
    """Kopf runs replaced by a script: each entry raises, ends the term, or returns."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(settings(LEADER_ELECTION="false"), NOWHERE)
        self.script = script
        self.delays: list[float] = []

    async def operate(self, term: Term) -> None:
        self.delays.append(term._delay)
        step = self.script.pop(0)
        if step == "fail":
            raise RuntimeError("Error in the watch-stream: {'code': 500}")
        if step == "lose":
            term.lost = True
        if step == "break":
            term.failed = True


async def test_a_failed_kopf_run_is_followed_by_a_new_term_after_a_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("computedomain.controller.runtime.app.Backoff.next", lambda self: 0.25)
    controller = Scripted(["fail", "lose", "signal"])
    assert await asyncio.wait_for(controller.run(), 10) == 0
    assert controller.delays == [0.0, 0.25, 0.0]


async def test_a_task_of_a_term_that_ends_ends_the_process_with_1() -> None:
    controller = Scripted(["break", "signal"])
    assert await asyncio.wait_for(controller.run(), 10) == 1
    assert controller.script == ["signal"]


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
    # No watch of every CRD in the cluster for the whole run.
    assert settings.scanning.disabled
    assert settings.peering.standalone


async def test_writes_are_refused_without_a_valid_lease() -> None:
    controller = Controller(settings(), NOWHERE)
    leases = Leases()
    timing = LeaseTiming(duration=1.5, renew_deadline=1, retry_period=0.1)
    first_term = LeaderElector(cast(Kube, leases), "computedomain-system", "lease", "me", timing)
    kube = controller.client(first_term.fence)
    assert kube.on_write is not None
    with pytest.raises(NotLeading):
        kube.on_write("patch")
    await first_term.acquire()
    kube.on_write("patch")
    first_term.fence.revoke()
    with pytest.raises(NotLeading):
        kube.on_write("patch")
    # A later term holding the lease again does not revive the clients of an ended one.
    second_term = LeaderElector(cast(Kube, leases), "computedomain-system", "lease", "me", timing)
    await second_term.acquire()
    with pytest.raises(NotLeading):
        kube.on_write("patch")
    later = controller.client(second_term.fence)
    assert later.on_write is not None
    later.on_write("patch")
    await kube.close()
    await later.close()
