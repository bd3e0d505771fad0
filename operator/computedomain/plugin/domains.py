"""Finding the ComputeDomain a claim's config names by its UID, with narrow reads and no watch.

A watch of every ComputeDomain would send each node every change of every domain (a large domain's
status changes with each of its nodes), so that what a node takes in grows with the cluster. Instead
the plugin asks when a claim comes, narrowest read first, for the domains' metadata only:

1. the cache: a domain's UID, namespace and name never change, so a found domain is kept (the most
   recent `capacity` of them); a domain that is not found is not remembered;
2. the namespace and name the claim's annotations give (the controller's templates write them; a
   daemon claim lives in the operator's namespace and nothing else says where its domain is): one
   GET, trusted only when the UID matches;
3. the claim's own namespace, for a workload's channel claim: one list of that namespace's domains;
4. every namespace, only when the narrower reads found nothing (a claim whose domain is elsewhere
   or gone, or a daemon claim of a template from before the annotations).

A domain deleted after it was cached stays known; its claims then wait in vain for its IMEX daemon,
whose DaemonSet went with it, and are refused after the prepare wait.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from computedomain.api import names
from computedomain.plugin import metrics
from computedomain.plugin.view import DomainRef

DEFAULT_CAPACITY = 4096


class DomainSource(Protocol):
    """The reads a `DomainFinder` needs (a `NodeView` has them)."""

    async def list_domains(self, namespace: str) -> list[DomainRef]:
        """The domains of `namespace`."""
        ...

    async def get_domain(self, namespace: str, name: str) -> DomainRef | None:
        """The domain of that name, or None."""
        ...

    async def search_domain(self, uid: str) -> DomainRef | None:
        """The domain with this UID in any namespace, or None."""
        ...


def annotated_domain(claim: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the domain the claim's annotations name, or None without both."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    namespace = annotations.get(names.DOMAIN_NAMESPACE_ANNOTATION)
    name = annotations.get(names.DOMAIN_NAME_ANNOTATION)
    if not namespace or not name:
        return None
    return str(namespace), str(name)


class DomainFinder:
    """Finds domains by UID (see the module docstring); concurrent searches for one UID share a read."""

    def __init__(self, source: DomainSource, capacity: int = DEFAULT_CAPACITY) -> None:
        self.source = source
        self.capacity = capacity
        self._cache: OrderedDict[str, DomainRef] = OrderedDict()
        self._searches: dict[str, asyncio.Future[DomainRef | None]] = {}

    async def find(
        self, uid: str, *, namespace: str | None = None, named: tuple[str, str] | None = None
    ) -> DomainRef | None:
        """The domain with this UID, or None when none exists.

        `named` is where the claim says the domain is; `namespace` where it should be (a channel
        claim's own). Both only choose which reads come first: the answer is the same without them.
        """
        cached = self._cache.get(uid)
        if cached is not None:
            self._cache.move_to_end(uid)
            metrics.DOMAIN_LOOKUPS.labels(read="cache").inc()
            return cached
        search = self._searches.get(uid)
        if search is None:
            search = asyncio.ensure_future(self._search(uid, namespace, named))
            self._searches[uid] = search
            search.add_done_callback(lambda done: self._search_done(uid, done))
        # A caller that gives up (its prepare was cancelled) must not cancel the others' search.
        return await asyncio.shield(search)

    def _search_done(self, uid: str, search: asyncio.Future[DomainRef | None]) -> None:
        self._searches.pop(uid, None)
        if not search.cancelled() and search.exception() is None:
            found = search.result()
            if found is not None:
                self._remember(found)

    def _remember(self, domain: DomainRef) -> None:
        self._cache[domain.uid] = domain
        self._cache.move_to_end(domain.uid)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    async def _search(
        self, uid: str, namespace: str | None, named: tuple[str, str] | None
    ) -> DomainRef | None:
        if named is not None:
            domain = await self.source.get_domain(*named)
            if domain is not None and domain.uid == uid:
                metrics.DOMAIN_LOOKUPS.labels(read="named").inc()
                return domain
        if namespace is not None:
            found = _with_uid(await self.source.list_domains(namespace), uid)
            if found is not None:
                metrics.DOMAIN_LOOKUPS.labels(read="namespace").inc()
                return found
        found = await self.source.search_domain(uid)
        metrics.DOMAIN_LOOKUPS.labels(read="cluster" if found is not None else "none").inc()
        return found


def _with_uid(domains: list[DomainRef], uid: str) -> DomainRef | None:
    return next((domain for domain in domains if domain.uid == uid), None)
