"""An in-memory NodeView for the kubelet plugin's core: claims, domains, daemon readiness, Events."""

from __future__ import annotations

import uuid
from typing import Any

from computedomain.api import names
from computedomain.plugin.view import DomainRef, Notifier


class MemoryView:
    """The cluster as dictionaries; every change notifies waiters like a watch event would."""

    def __init__(self, clique: str = "cluster-a.1") -> None:
        self._changes = Notifier()
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.domains: dict[str, DomainRef] = {}
        self.ready: set[str] = set()
        self.clique = clique
        self.events: list[dict[str, Any]] = []
        self.claim_reads = 0

    @property
    def changes(self) -> Notifier:
        return self._changes

    async def read_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.claim_reads += 1
        return self.claims.get((namespace, name))

    def domain(self, uid: str) -> DomainRef | None:
        return self.domains.get(uid)

    async def clique_id(self) -> str:
        return self.clique

    def daemon_ready(self, domain_uid: str) -> bool:
        return domain_uid in self.ready

    async def post_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    # --- test controls ---

    def add_domain(self, namespace: str, name: str, uid: str | None = None) -> DomainRef:
        domain = DomainRef(uid or str(uuid.uuid4()), namespace, name)
        self.domains[domain.uid] = domain
        self._changes.notify()
        return domain

    def set_ready(self, domain_uid: str, ready: bool = True) -> None:
        (self.ready.add if ready else self.ready.discard)(domain_uid)
        self._changes.notify()

    def add_claim(self, claim: dict[str, Any]) -> dict[str, Any]:
        meta = claim["metadata"]
        self.claims[(meta["namespace"], meta["name"])] = claim
        return claim


def channel_config(domain_uid: str, mode: str | None = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "apiVersion": names.API_VERSION,
        "kind": names.CHANNEL_CONFIG_KIND,
        "domainID": domain_uid,
        **extra,
    }
    if mode:
        params["allocationMode"] = mode
    return params


def daemon_config(domain_uid: str) -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": names.DAEMON_CONFIG_KIND, "domainID": domain_uid}


def allocated_claim(
    namespace: str,
    name: str,
    device: str,
    parameters: dict[str, Any] | None,
    *,
    node: str = "node-a",
    request: str = "channel",
    pods: tuple[tuple[str, str], ...] = (("pod-a", "pod-uid-a"),),
    uid: str | None = None,
) -> dict[str, Any]:
    """A ResourceClaim as the API server returns it once the scheduler allocated `device`."""
    config = (
        []
        if parameters is None
        else [
            {
                "source": "FromClaim",
                "requests": [request],
                "opaque": {"driver": names.DRIVER, "parameters": parameters},
            }
        ]
    )
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"namespace": namespace, "name": name, "uid": uid or str(uuid.uuid4())},
        "spec": {"devices": {"requests": [{"name": request}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": request, "driver": names.DRIVER, "pool": node, "device": device}],
                    "config": config,
                }
            },
            "reservedFor": [{"resource": "pods", "name": n, "uid": u} for n, u in pods],
        },
    }
