"""Which `resource.k8s.io` version the API server serves, asked of its discovery endpoint."""

from __future__ import annotations

import asyncio
import logging

from computedomain.dra.versions import RESOURCE_GROUP, pick_resource_version, served_versions
from computedomain.kube.client import Kube
from computedomain.kube.errors import KubeError
from computedomain.kube.retry import DEFAULT, RetryPolicy, retry

logger = logging.getLogger(__name__)


async def discover_resource_version(
    kube: Kube,
    *,
    policy: RetryPolicy = DEFAULT,
    deadline: float | None = None,
    stop: asyncio.Event | None = None,
    log: logging.Logger = logger,
) -> str | None:
    """The preferred `resource.k8s.io` version the API server serves, or None when it serves none.

    An API server that is away is waited for as `policy` says, until `deadline` (see `kube.retry`):
    a program that starts before it must not crash-loop.
    """

    async def ask() -> str | None:
        try:
            group = await kube.call("GET", f"/apis/{RESOURCE_GROUP}")
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return pick_resource_version(served_versions(group))

    return await retry(
        ask, what="reading the served API versions", policy=policy, deadline=deadline, stop=stop, log=log
    )
