"""The daemon's few API calls: label its own pod, read its node's clique, follow its ComputeDomainClique."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from computedomain.api import names
from computedomain.daemon.config import DaemonEntry, daemons_from_clique
from computedomain.kube import CLIQUES, NODES, PODS, Kube, Object
from computedomain.kube.informer import Informer

log = logging.getLogger(__name__)

# Who wrote the pod's clique label, as the API server records it in managedFields.
FIELD_MANAGER = "compute-domain-daemon"


def pod_clique_label_patch(clique_id: str) -> dict[str, Any]:
    """The JSON merge patch that sets the clique label on the daemon's own pod."""
    return {"metadata": {"labels": {names.CLIQUE_LABEL: clique_id}}}


def clique_field_selector(clique_name: str) -> str:
    """The field selector that narrows a clique list or watch to one object."""
    return f"metadata.name={clique_name}"


async def label_own_pod(kube: Kube, namespace: str, pod_name: str, clique_id: str) -> None:
    """Record the pod's clique in its `CLIQUE_LABEL` label (merge patch on this pod only)."""
    await kube.patch(PODS, pod_name, namespace, pod_clique_label_patch(clique_id))
    log.info("labelled pod %s/%s with %s=%r", namespace, pod_name, names.CLIQUE_LABEL, clique_id)


async def read_node_clique(kube: Kube, node_name: str) -> str:
    """The node's `nvidia.com/gpu.clique` label; "" when the node has none (no NVLink fabric).

    Raises `KubeError` (404 included: a daemon whose node is gone has nothing to serve).
    """
    node = await kube.call("GET", NODES.path(None, node_name))
    labels: dict[str, str] = (node.get("metadata") or {}).get("labels") or {}
    return labels.get(names.GPU_CLIQUE_LABEL, "")


def _daemons_of(clique: Object | None) -> tuple[DaemonEntry, ...]:
    return daemons_from_clique(clique) if clique is not None else ()


async def watch_clique(
    kube: Kube, namespace: str, clique_name: str
) -> AsyncGenerator[tuple[DaemonEntry, ...], None]:
    """Yield the clique's daemon list once it is known and after every change; () while the clique
    does not exist.

    An informer narrowed to the one clique keeps it current: it re-lists after a watch ends, expires
    or fails, with backoff, so a lost API server delays updates and never ends the stream. Changes
    that arrive while the consumer is busy are folded into the next yield (the latest list wins);
    consecutive yields may repeat the same list, so consumers must be idempotent.
    """
    changed = asyncio.Event()

    def on_change(_kind: str, _obj: Object, _old: Object | None) -> None:
        changed.set()

    informer = Informer(
        kube,
        CLIQUES,
        on_change,
        namespace=namespace,
        field_selector=clique_field_selector(clique_name),
        name=f"clique {clique_name}",
    )
    key = f"{namespace}/{clique_name}"
    task = asyncio.create_task(informer.run(), name=f"informer-{clique_name}")
    try:
        await informer.synced.wait()
        while True:
            changed.clear()
            yield _daemons_of(informer.store.get(key))
            await changed.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
