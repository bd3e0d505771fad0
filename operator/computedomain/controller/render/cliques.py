"""The ComputeDomainClique objects: one per domain and NVLink clique, listing the daemons' slots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from computedomain.api import names
from computedomain.api.models import CliqueDaemon, ComputeDomain
from computedomain.controller.plan.cliques import NON_FABRIC_INDEX
from computedomain.controller.settings import Settings


def clique_object(
    domain: ComputeDomain,
    settings: Settings,
    clique_id: str,
    daemons: Sequence[CliqueDaemon],
) -> dict[str, Any]:
    """The ComputeDomainClique of one domain in one clique, in the controller's namespace.

    It carries no owner reference: the domain lives in another namespace, so the controller removes
    cliques itself.
    """
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CLIQUE_KIND,
        "metadata": {
            "name": names.clique_name(domain.uid, clique_id),
            "namespace": settings.namespace,
            "labels": {names.DOMAIN_LABEL: domain.uid, names.CLIQUE_LABEL: clique_id},
        },
        "daemons": [
            daemon.model_dump(mode="json", exclude_none=True)
            for daemon in sorted(daemons, key=lambda daemon: (_index(daemon), daemon.node_name))
        ],
    }


def _index(daemon: CliqueDaemon) -> int:
    return NON_FABRIC_INDEX if daemon.index is None else daemon.index
