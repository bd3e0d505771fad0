"""The sweep: it removes what vanished domains left, forgets a domain whose deletion was never seen,
leaves live (and newer-than-the-list) domains alone, and no failure ends its loop."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from computedomain.api import names
from computedomain.controller import world as w
from computedomain.controller.runtime import sweep
from computedomain.controller.world import World
from computedomain.kube import Kind, Object
from support.waiting import eventually

LIVE, GONE, UNSEEN, NEWER = "uid-live", "uid-gone", "uid-unseen", "uid-newer"


def domain(uid: str, rv: int) -> Object:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "ns", "resourceVersion": str(rv)}}


def child(name: str, uid: str) -> Object:
    return {
        "metadata": {
            "name": name,
            "namespace": "computedomain-system",
            "resourceVersion": "1",
            "labels": {names.DOMAIN_LABEL: uid},
        }
    }


class FakeKube:
    """Lists the domains it is given; records deletions; fails the first `failures` lists."""

    field_manager = names.FIELD_MANAGER

    def __init__(self, domains: list[Object], version: str, failures: int = 0) -> None:
        self.domains = domains
        self.version = version
        self.failures = failures
        self.deleted: list[str] = []

    async def list(self, kind: Kind, *_: Any, **__: Any) -> tuple[list[Object], str]:
        if self.failures:
            self.failures -= 1
            raise aiohttp.ClientPayloadError("Response payload is not completed")
        return self.domains, self.version

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        self.deleted.append(name)
        return True


def world_of(kube: FakeKube) -> World:
    world = World(kube, "computedomain-system", "v1", lambda _: None)  # type: ignore[arg-type]
    # No watch runs here: the caches count as loaded with what the test records.
    for informer in world._informers.values():
        informer.synced.set()
    for uid, rv in ((LIVE, 10), (UNSEEN, 12), (NEWER, 30)):
        world.set_domain(domain(uid, rv))
    for uid in (LIVE, GONE, UNSEEN, NEWER):
        world.record(w.DAEMONSETS, child(f"ds-{uid}", uid))
    return world


async def test_sweep_removes_orphans_and_forgets_domains_whose_deletion_was_missed() -> None:
    # The list (at version 20) holds only LIVE; NEWER was created after it.
    kube = FakeKube([domain(LIVE, 10)], "20")
    world = world_of(kube)
    assert await sweep.sweep_once(kube, world) == {GONE, UNSEEN}  # type: ignore[arg-type]
    assert sorted(kube.deleted) == [f"ds-{GONE}", f"ds-{UNSEEN}"]
    assert sorted(world.domains) == [LIVE, NEWER]


async def test_sweep_loop_survives_a_cut_connection() -> None:
    kube = FakeKube([domain(LIVE, 10)], "20", failures=2)
    world = world_of(kube)
    task = asyncio.create_task(sweep.sweep_forever(kube, world, interval=3600))  # type: ignore[arg-type]
    try:
        await eventually(
            lambda: asyncio.sleep(0, bool(kube.deleted)), timeout=10, what="a sweep after two failures"
        )
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_stray_child_is_swept_soon_not_at_the_next_interval() -> None:
    kube = FakeKube([domain(LIVE, 10), domain(UNSEEN, 12), domain(NEWER, 30)], "40")
    world = world_of(kube)
    world.forget(w.DAEMONSETS, child(f"ds-{GONE}", GONE))
    stray = asyncio.Event()
    world.on_stray = lambda _: stray.set()
    task = asyncio.create_task(sweep.sweep_forever(kube, world, 3600, stray, settle=0.05))  # type: ignore[arg-type]
    try:
        await eventually(lambda: asyncio.sleep(0, not stray.is_set()), timeout=5, what="the first sweep")
        assert kube.deleted == []
        # A late write of a replica that lost its lease creates a child of a domain long gone.
        world.record(w.DAEMONSETS, child("ds-resurrected", GONE))
        assert stray.is_set()
        await eventually(
            lambda: asyncio.sleep(0, kube.deleted == ["ds-resurrected"]), timeout=5, what="a sweep"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
