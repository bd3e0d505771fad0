"""An in-memory NodeView for the kubelet plugin's core: claims, domains, daemon readiness, Events."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computedomain.api import names
from computedomain.plugin.cdi import SpecStore
from computedomain.plugin.checkpoint import Checkpoint
from computedomain.plugin.core import Core
from computedomain.plugin.edits import HostPaths
from computedomain.plugin.kubelet.notify import Notifier
from computedomain.plugin.view import DomainRef


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
        # Every domain read: ("list", namespace), ("get", namespace, name) or ("search", uid).
        self.domain_reads: list[tuple[str, ...]] = []

    @property
    def changes(self) -> Notifier:
        return self._changes

    async def read_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.claim_reads += 1
        return self.claims.get((namespace, name))

    async def list_domains(self, namespace: str) -> list[DomainRef]:
        self.domain_reads.append(("list", namespace))
        return [d for d in self.domains.values() if d.namespace == namespace]

    async def get_domain(self, namespace: str, name: str) -> DomainRef | None:
        self.domain_reads.append(("get", namespace, name))
        return next((d for d in self.domains.values() if (d.namespace, d.name) == (namespace, name)), None)

    async def search_domain(self, uid: str) -> DomainRef | None:
        self.domain_reads.append(("search", uid))
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


class MemoryChannels:
    """Clique mode's reads as dictionaries: ComputeDomainCliques by name, the clique daemon's readiness."""

    def __init__(self, daemon_ready: bool = True) -> None:
        self._changes = Notifier()
        self.cliques: dict[str, dict[str, Any]] = {}
        self.daemon_ready = daemon_ready
        self.reads: list[str] = []

    @property
    def changes(self) -> Notifier:
        return self._changes

    async def read_clique(self, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        return self.cliques.get(name)

    def clique_daemon_ready(self) -> bool:
        return self.daemon_ready

    # --- test controls ---

    def assign(self, domain_uid: str, clique: str, channel: int | None) -> None:
        """The controller's record of the domain in the clique (`channel` None: none assigned yet)."""
        name = names.clique_name(domain_uid, clique)
        body: dict[str, Any] = {"metadata": {"name": name}, "daemons": []}
        if channel is not None:
            body["channel"] = channel
        self.cliques[name] = body

    def set_daemon_ready(self, ready: bool) -> None:
        self.daemon_ready = ready
        self._changes.notify()


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
    domain: DomainRef | None = None,
) -> dict[str, Any]:
    """A ResourceClaim as the API server returns it once the scheduler allocated `device`.

    With `domain`, the claim carries the annotations the controller's templates give it.
    """
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
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": uid or str(uuid.uuid4()),
            **({"annotations": domain_annotations(domain)} if domain is not None else {}),
        },
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


def domain_annotations(domain: DomainRef) -> dict[str, str]:
    """What the controller's claim templates annotate their claims with."""
    return {names.DOMAIN_NAMESPACE_ANNOTATION: domain.namespace, names.DOMAIN_NAME_ANNOTATION: domain.name}


PROC_DEVICES = """Character devices:
  1 mem
195 nvidia
234 nvidia-caps-imex-channels
235 nvidia-caps

Block devices:
  7 loop
"""


@dataclass
class Node:
    root: Path
    view: MemoryView
    core: Core
    specs: SpecStore
    checkpoint: Checkpoint

    def spec(self, claim: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = json.loads(self.specs.path(claim["metadata"]["uid"]).read_text())
        return spec


def make_core(
    root: Path,
    view: MemoryView,
    *,
    wait: float = 2.0,
    boot: str = "boot-1",
    channels: MemoryChannels | None = None,
) -> Node:
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "devices").write_text(PROC_DEVICES)
    caps = root / "driver" / "proc" / "driver" / "nvidia" / "capabilities"
    caps.mkdir(parents=True, exist_ok=True)
    (caps / "fabric-imex-mgmt").write_text("DeviceFileMinor: 7\nDeviceFileMode: 256\n")
    (root / "driver" / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    (root / "driver" / "usr" / "bin" / "nvidia-imex").write_text("#!/bin/sh\n")
    checkpoint = Checkpoint(root / "state" / "checkpoint.json", boot)
    checkpoint.load()
    specs = SpecStore(root / "cdi")
    paths = HostPaths(
        root / "proc" / "devices", root / "driver", Path("/host/driver"), root / "state" / "domains"
    )
    core = Core(
        view, checkpoint, specs, paths, "node-a", prepare_wait=wait, event_interval=0.2, channels=channels
    )
    return Node(root, view, core, specs, checkpoint)
