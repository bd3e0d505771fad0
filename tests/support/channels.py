"""Clique mode's channel pool seen from outside: claims allocated as kube-scheduler writes them, and a
watch of the ComputeDomainClique objects that checks, at every event, that no channel of a clique is
held by two objects (so by two domains) at once.

Used by the chaos test of the pool and by `bench/channels.py`; it imports nothing of the test
fixtures, so that the benchmark can use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.api import names

Object = dict[str, Any]
RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_VERSION = "v1"
# Answers worth another try: throttling, an overloaded or restarting server.
_RETRY = {429, 500, 502, 503, 504}


def stamp(moment: datetime.datetime) -> str:
    """A time as the API server stores it (whole seconds)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def channel_opaque(domain_uid: str) -> Object:
    """The opaque config of the domain's channel request, as its claim template gives it."""
    parameters = {"apiVersion": names.API_VERSION, "kind": names.CHANNEL_CONFIG_KIND, "domainID": domain_uid}
    return {"driver": names.DRIVER, "parameters": parameters}


def claim_manifest(name: str, namespace: str, domain_uid: str, *, config: bool = False) -> Object:
    """A workload claim of the domain (its label), asking for the channel device; with `config`, the
    domain's channel config too (a kubelet plugin needs it to prepare the claim)."""
    devices: Object = {
        "requests": [{"name": "channel", "exactly": {"deviceClassName": names.CHANNEL_DEVICE_CLASS}}]
    }
    if config:
        devices["config"] = [{"requests": ["channel"], "opaque": channel_opaque(domain_uid)}]
    return {
        "apiVersion": f"{RESOURCE_GROUP}/{RESOURCE_VERSION}",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": {names.DOMAIN_LABEL: domain_uid}},
        "spec": {"devices": devices},
    }


def allocation_on(node: str, allocated_at: datetime.datetime, domain_uid: str | None = None) -> Object:
    """The allocation kube-scheduler writes for the shared `channel` device of `node` (with
    `domain_uid`: and the claim's channel config, as the scheduler copies it)."""
    devices: Object = {
        "results": [{"request": "channel", "driver": names.DRIVER, "pool": node, "device": "channel"}]
    }
    if domain_uid is not None:
        devices["config"] = [
            {"source": "FromClaim", "requests": ["channel"], "opaque": channel_opaque(domain_uid)}
        ]
    return {
        "devices": devices,
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        },
        "allocationTimestamp": stamp(allocated_at),
    }


async def _retried(call: Callable[[], Any]) -> Any:
    """Await `call()`, again after a throttled or failed answer (a loaded 2-core machine gives some)."""
    for attempt in range(20):
        try:
            return await call()
        except ApiException as error:
            if error.status not in _RETRY or attempt == 19:
                raise
        await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def allocate_claim(
    api: client.ApiClient,
    namespace: str,
    domain_uid: str,
    node: str,
    allocated_at: datetime.datetime,
    *,
    config: bool = False,
) -> Object:
    """Create a workload claim of the domain and allocate it on `node` at `allocated_at`, as the
    scheduler would; returns the claim as stored (with its UID and creation time). With `config`, the
    claim carries the domain's channel config, which a kubelet plugin needs to prepare it."""
    custom = client.CustomObjectsApi(api)
    name = f"claim-{uuid.uuid4().hex[:10]}"
    created: Object = await _retried(
        lambda: custom.create_namespaced_custom_object(
            RESOURCE_GROUP,
            RESOURCE_VERSION,
            namespace,
            "resourceclaims",
            claim_manifest(name, namespace, domain_uid, config=config),
        )
    )
    created["status"] = {"allocation": allocation_on(node, allocated_at, domain_uid if config else None)}
    written: Object = await _retried(
        lambda: custom.replace_namespaced_custom_object_status(
            RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims", name, created
        )
    )
    return written


async def delete_claims(api: client.ApiClient, namespace: str, claims: list[str]) -> None:
    """Delete claims: with no scheduler or claim controller here, that is their deallocation."""
    custom = client.CustomObjectsApi(api)

    async def delete(name: str) -> None:
        await custom.delete_namespaced_custom_object(
            RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims", name
        )

    for name in claims:
        try:
            await _retried(functools.partial(delete, name))
        except ApiException as error:
            if error.status != 404:
                raise


async def delete_domain(api: client.ApiClient, namespace: str, name: str) -> None:
    """Ask for a domain's deletion (its finalizer may hold it while its channels are in use)."""
    custom = client.CustomObjectsApi(api)
    try:
        await _retried(
            lambda: custom.delete_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
            )
        )
    except ApiException as error:
        if error.status != 404:
            raise


@dataclass(frozen=True)
class Held:
    """What one `<domain UID>.<clique ID>` object says: its domain, its clique, its channel if any."""

    domain: str
    clique: str
    channel: int | None


@dataclass
class ChannelWatch:
    """A watch of every ComputeDomainClique of domains in the operator's namespace.

    At every event it checks the event's clique: a channel named by two objects at once is one
    "moment" of double holding (there must be none). It also keeps, per clique, the most channels held
    at once, which domains ever waited and when each was first given a channel.
    """

    api: client.ApiClient
    namespace: str
    # Clique -> channel count of the pool (channels 1 .. pool-1 may be given).
    pool: int
    objects: dict[str, Held] = field(default_factory=dict)
    events: int = 0
    double_moments: int = 0
    doubles: list[str] = field(default_factory=list)
    out_of_range: list[str] = field(default_factory=list)
    high_water: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (domain, clique) -> monotonic time it was first seen holding a channel.
    served: dict[tuple[str, str], float] = field(default_factory=dict)
    # (domain, clique) of every object ever seen without a channel.
    waited: set[tuple[str, str]] = field(default_factory=set)
    # Called after each event that gives a domain a channel: (domain, clique, channel, the domains
    # whose objects in that clique wait at that moment).
    on_grant: Callable[[str, str, int, list[str]], None] | None = None
    _task: asyncio.Task[None] | None = None
    _version: str = ""

    async def start(self) -> None:
        """List what exists, then watch from there (in a task) until `stop`."""
        await self._list()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """End the watch."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def holders(self, clique: str) -> dict[int, list[str]]:
        """Channel -> the domains whose objects in `clique` name it now."""
        found: dict[int, list[str]] = defaultdict(list)
        for held in self.objects.values():
            if held.clique == clique and held.channel is not None:
                found[held.channel].append(held.domain)
        return found

    def channel_of(self, domain: str, clique: str) -> int | None:
        """The channel the domain's object in `clique` holds now (None: none, or no object)."""
        held = self.objects.get(names.clique_name(domain, clique))
        return None if held is None else held.channel

    def by_clique(self) -> dict[str, dict[str, int | None]]:
        """Clique -> domain -> its channel (None while it waits), as the objects say now."""
        found: dict[str, dict[str, int | None]] = defaultdict(dict)
        for held in self.objects.values():
            found[held.clique][held.domain] = held.channel
        return found

    async def _list(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        listing: Object = await _retried(
            lambda: custom.list_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                self.namespace,
                names.CLIQUE_PLURAL,
                label_selector=names.DOMAIN_LABEL,
            )
        )
        self.objects.clear()
        for item in listing["items"]:
            self._apply("ADDED", item)
        self._version = str(listing["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while True:
            try:
                response = await custom.list_namespaced_custom_object(
                    names.GROUP,
                    names.VERSION,
                    self.namespace,
                    names.CLIQUE_PLURAL,
                    label_selector=names.DOMAIN_LABEL,
                    watch=True,
                    resource_version=self._version,
                    timeout_seconds=300,
                    _preload_content=False,
                )
                async with response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj: Object = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            # The version is gone (410): a fresh list is the only way on.
                            await self._list()
                            break
                        self._version = str(obj["metadata"]["resourceVersion"])
                        if event.get("type") != "BOOKMARK":
                            self._apply(str(event["type"]), obj)
            except asyncio.CancelledError:
                raise
            except Exception:  # a cut connection: resume from the last version
                await asyncio.sleep(0.2)

    def _apply(self, kind: str, obj: Object) -> None:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        domain, clique = labels.get(names.DOMAIN_LABEL), labels.get(names.CLIQUE_LABEL)
        if not domain or not clique:
            return
        channel = obj.get("channel")
        held = Held(str(domain), str(clique), channel if isinstance(channel, int) else None)
        key = str(meta["name"])
        before = self.objects.get(key)
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = held
        self.events += 1
        self._check(held.clique)
        if kind != "DELETED":
            pair = (held.domain, held.clique)
            if held.channel is None:
                self.waited.add(pair)
            elif pair not in self.served:
                self.served[pair] = time.monotonic()
            granted = held.channel is not None and (before is None or before.channel != held.channel)
            if granted and self.on_grant is not None:
                assert held.channel is not None
                waiting = [
                    h.domain for h in self.objects.values() if h.clique == held.clique and h.channel is None
                ]
                self.on_grant(held.domain, held.clique, held.channel, waiting)

    def _check(self, clique: str) -> None:
        holders = self.holders(clique)
        self.high_water[clique] = max(self.high_water[clique], len(holders))
        shared = {channel: uids for channel, uids in holders.items() if len(uids) > 1}
        if shared:
            self.double_moments += 1
            self.doubles.append(f"event {self.events}, clique {clique}: {shared}")
        for channel in holders:
            if not 1 <= channel < self.pool:
                self.out_of_range.append(f"clique {clique}: channel {channel} (pool {self.pool})")
