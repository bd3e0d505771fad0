"""Kopf wiring: the ComputeDomain watch feeds the world cache and the work queue.

Only an event handler is registered, so Kopf itself writes nothing to the objects (no finalizer, no
annotations, no status): the reconcile owns every write, under one field manager.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kopf

from computedomain.api import names
from computedomain.controller.world import World
from computedomain.kube.backoff import Backoff
from computedomain.kube.config import SERVICE_ACCOUNT_DIR, TokenFile, service_address

logger = logging.getLogger(__name__)


def build_registry(world: World, enqueue: Callable[[str], None], forget: Callable[[str], None]) -> Any:
    """A Kopf registry holding our login and ComputeDomain event handlers."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> Any:
        # In a pod the service account, at the address our own client uses; elsewhere KUBECONFIG.
        return await service_account_login(os.environ) or kopf.login_with_kubeconfig(**kwargs)

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
        # The echo of our own write is known already: nothing new to reconcile. No copy is needed:
        # the world stores its own encoded copy.
        if world.set_domain(dict(body)):
            enqueue(uid)

    return registry


async def service_account_login(
    env: Mapping[str, str], account: Path = SERVICE_ACCOUNT_DIR
) -> kopf.ConnectionInfo | None:
    """Kopf's credentials in a pod: the API server at KUBERNETES_SERVICE_HOST/PORT, as our own client
    reaches it, with the service account's CA and current token; None outside a pod.

    Kopf's own service-account login dials `kubernetes.default.svc`, a name only cluster DNS resolves:
    where the pod has none (a cluster without a DNS add-on, a DNS outage) Kopf would never connect
    while everything else of the controller does. Kopf calls this again after a 401, so a rotated
    token is read afresh.
    """
    if not env.get("KUBERNETES_SERVICE_HOST") or not (account / "token").exists():
        return None
    token = await TokenFile(account / "token").token()
    ca = account / "ca.crt"
    namespace = account / "namespace"
    return kopf.ConnectionInfo(
        server=service_address(env),
        ca_path=str(ca) if ca.exists() else None,
        token=token or None,
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
        priority=1,
    )


class EndlessBackoffs:
    """Kopf's request retry delays: capped, jittered and never exhausted.

    Kopf gives a request up after its last backoff and, for a watch, then ends the operator; an API
    server being restarted or upgraded must never do that. Each iteration starts afresh, since Kopf
    iterates the same settings object for every request.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 15.0) -> None:
        self.initial = initial
        self.maximum = maximum

    def __iter__(self) -> Iterator[float]:
        backoff = Backoff(initial=self.initial, maximum=self.maximum)
        while True:
            yield backoff.next()


def kopf_settings() -> Any:
    """Kopf settings: no Events or log posting from the framework, no peering, quiet on success, and
    a watch that outlives any outage of the API server."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.watching.connect_timeout = 30
    # A stream that went silent (a half-open connection after a restart) is reconnected.
    settings.watching.inactivity_timeout = 70
    settings.watching.reconnect_backoff = 0.5
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = EndlessBackoffs()
    # Kopf keeps a worker task per object until it has been idle this long (5 s by default). Our
    # handler only hands the body to the work queue, so a worker is cheap to start again, while a
    # burst of thousands of new domains kept thousands of them, each holding its last event.
    settings.queueing.idle_timeout = 0.5
    # Kopf would SIGKILL the whole process some minutes after it stopped without our stop flag;
    # the controller restarts Kopf instead (see `kopfrun`).
    settings.process.ultimate_exiting_timeout = None
    return settings
