"""Kopf wiring: the ComputeDomain watch feeds the world cache and the work queue.

Only an event handler is registered, so Kopf itself writes nothing to the objects (no finalizer, no
annotations, no status): the reconcile owns every write, under one field manager.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import kopf

from computedomain.api import names
from computedomain.controller.world import World

logger = logging.getLogger(__name__)


def build_registry(world: World, enqueue: Callable[[str], None], forget: Callable[[str], None]) -> Any:
    """A Kopf registry holding our login and ComputeDomain event handlers."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        # In a pod the service account; elsewhere KUBECONFIG. No extra client library needed.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.event(names.GROUP, names.VERSION, names.DOMAIN_PLURAL, registry=registry)
    async def domain_event(*, event: Any, **_: Any) -> None:
        body = event.get("object") or {}
        uid = str(body.get("metadata", {}).get("uid", ""))
        if not uid:
            return
        if event.get("type") == "DELETED":
            world.drop_domain(uid)
            forget(uid)
            return
        # The echo of our own write is known already: nothing new to reconcile.
        if world.set_domain(copy.deepcopy(dict(body))):
            enqueue(uid)

    return registry


def kopf_settings() -> Any:
    """Kopf settings: no Events or log posting from the framework, no peering, quiet on success."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    return settings
