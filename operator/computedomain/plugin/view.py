"""What the plugin's core needs from the cluster, as a Protocol; `kubeio` implements it on the API.

The core reads claims and the ComputeDomains they name on demand (domains by their identity only,
see `domains`), the node's daemon pods from a cache fed by a watch of this node's pods only: what a node
takes in does not grow with the size or the number of domains. Tests give the core an in-memory
implementation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class DomainRef:
    """The identity of a ComputeDomain."""

    uid: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Notifier:
    """A change counter that waiters can block on: cheap, and it wakes every waiter at once."""

    def __init__(self) -> None:
        self._version = 0
        self._event = asyncio.Event()

    @property
    def version(self) -> int:
        """Number of changes so far; pass it to `wait` to wait for the next one."""
        return self._version

    def notify(self) -> None:
        """Something changed: wake everyone waiting."""
        self._version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, after: int, timeout: float) -> bool:
        """Wait until a change after `after` happened (True) or `timeout` seconds passed (False)."""
        if self._version != after:
            return True
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class NodeView(Protocol):
    """The cluster as one node's plugin sees it."""

    @property
    def changes(self) -> Notifier:
        """Notified whenever a daemon pod on this node or the node itself changed."""
        ...

    async def read_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ResourceClaim from the API server, or None when it does not exist."""
        ...

    async def list_domains(self, namespace: str) -> list[DomainRef]:
        """The ComputeDomains of `namespace` (their identity only)."""
        ...

    async def get_domain(self, namespace: str, name: str) -> DomainRef | None:
        """The ComputeDomain of that name (its identity only), or None when there is none."""
        ...

    async def search_domain(self, uid: str) -> DomainRef | None:
        """The ComputeDomain with this UID in any namespace, or None when there is none."""
        ...

    async def clique_id(self) -> str:
        """This node's NVLink clique (its `nvidia.com/gpu.clique` label); '' without one."""
        ...

    def daemon_ready(self, domain_uid: str) -> bool:
        """True when this node's IMEX daemon pod of the domain is Ready."""
        ...

    async def post_event(self, event: dict[str, Any]) -> None:
        """Create a core/v1 Event (best effort: failures are logged, never raised)."""
        ...
