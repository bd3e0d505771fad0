"""The daemon's few API calls: label its own pod, read its node's clique, watch its ComputeDomainClique."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.api import names
from computedomain.daemon.config import DaemonEntry, daemons_from_clique

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# The server ends each watch after this long; the daemon then re-lists, which doubles as a resync.
WATCH_TIMEOUT_SECONDS = 240
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


class WatchStreamError(RuntimeError):
    """The watch answered with something other than events (a non-JSON error page, for instance)."""


def pod_clique_label_patch(clique_id: str) -> dict[str, Any]:
    """The JSON merge patch that sets the clique label on the daemon's own pod."""
    return {"metadata": {"labels": {names.CLIQUE_LABEL: clique_id}}}


def clique_field_selector(clique_name: str) -> str:
    """The field selector that narrows a clique list or watch to one object."""
    return f"metadata.name={clique_name}"


def next_backoff(current: float) -> float:
    """The next reconnect delay: doubling up to BACKOFF_MAX, with +-25 % jitter."""
    doubled = min(max(current, BACKOFF_INITIAL) * 2, BACKOFF_MAX)
    return doubled * random.uniform(0.75, 1.25)


async def label_own_pod(api: client.ApiClient, namespace: str, pod_name: str, clique_id: str) -> None:
    """Record the pod's clique in its `CLIQUE_LABEL` label (merge patch on this pod only)."""
    core = client.CoreV1Api(api)
    # The client's stubs omit `_content_type`; without it the client would send a strategic merge patch.
    content_type: dict[str, Any] = {"_content_type": MERGE_PATCH}
    await core.patch_namespaced_pod(pod_name, namespace, pod_clique_label_patch(clique_id), **content_type)
    log.info("labelled pod %s/%s with %s=%r", namespace, pod_name, names.CLIQUE_LABEL, clique_id)


async def read_node_clique(api: client.ApiClient, node_name: str) -> str:
    """The node's `nvidia.com/gpu.clique` label; "" when the node has none (no NVLink fabric)."""
    core = client.CoreV1Api(api)
    node = await core.read_node(node_name)
    labels: dict[str, str] = node.metadata.labels or {}
    return labels.get(names.GPU_CLIQUE_LABEL, "")


async def _list_clique(
    custom: client.CustomObjectsApi, namespace: str, clique_name: str
) -> tuple[tuple[DaemonEntry, ...], str]:
    listed = await custom.list_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        namespace,
        names.CLIQUE_PLURAL,
        field_selector=clique_field_selector(clique_name),
    )
    items = listed.get("items") or []
    resource_version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
    return (daemons_from_clique(items[0]) if items else ()), resource_version


async def watch_clique(
    api: client.ApiClient, namespace: str, clique_name: str
) -> AsyncGenerator[tuple[DaemonEntry, ...], None]:
    """Yield the clique's daemon list now and after every change; () while the clique does not exist.

    Lists, then watches from the list's resourceVersion; after a watch ends (server timeout), expires
    (410 Gone) or fails, lists again. Errors are retried with jittered exponential backoff. Consecutive
    yields may repeat the same list; consumers must be idempotent.
    """
    custom = client.CustomObjectsApi(api)
    delay = 0.0
    while True:
        if delay:
            await asyncio.sleep(delay)
        try:
            daemons, resource_version = await _list_clique(custom, namespace, clique_name)
            yield daemons
            async with watch.Watch().stream(
                custom.list_namespaced_custom_object,
                names.GROUP,
                names.VERSION,
                namespace,
                names.CLIQUE_PLURAL,
                field_selector=clique_field_selector(clique_name),
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
            ) as stream:
                async for event in stream:
                    # The client does not check a watch response's status; an error page arrives as text.
                    if not isinstance(event, dict):
                        raise WatchStreamError(f"unexpected watch response: {str(event).strip()[:200]!r}")
                    kind = event.get("type")
                    if kind in ("ADDED", "MODIFIED"):
                        yield daemons_from_clique(event.get("raw_object"))
                    elif kind == "DELETED":
                        yield ()
            delay = 0.0
        except ApiException as err:
            if err.status == 410:
                log.info("watch of clique %s expired; listing again", clique_name)
                delay = 0.0
                continue
            delay = next_backoff(delay)
            log.warning(
                "clique %s: API error %s %s; retrying in %.1fs", clique_name, err.status, err.reason, delay
            )
        except (OSError, aiohttp.ClientError, TimeoutError, WatchStreamError) as err:
            delay = next_backoff(delay)
            log.warning("clique %s: connection error %s; retrying in %.1fs", clique_name, err, delay)
