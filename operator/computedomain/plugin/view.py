"""What the ComputeDomain driver needs from the cluster, as a Protocol; `kubeio` implements it on the API.

The core reads claims and the ComputeDomains they name on demand (domains by their identity only,
see `domains`), the node's daemon pods from a cache fed by a watch of this node's pods only: what a node
takes in does not grow with the size or the number of domains. Tests give the core an in-memory
implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from computedomain.plugin.kubelet.notify import Notifier


@dataclass(frozen=True)
class DomainRef:
    """The identity of a ComputeDomain."""

    uid: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


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
