"""Kopf wiring: one Kopf operator run per leadership term (`controller.term`).

The startup handler starts the term (a standby waits there for the lease), the cleanup handler ends
it, the login hands Kopf our own connection, and the ComputeDomain watch feeds the term's caches and
work queue. Only an event handler watches objects, so Kopf itself writes nothing to them (no
finalizer, no annotations, no status): the reconcile owns every write, under one field manager.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import kopf

from computedomain.api import names
from computedomain.controller.runtime.term import Term
from computedomain.kube.backoff import Backoff
from computedomain.kube.config import Connection


def build_registry(term: Term, connection: Connection) -> kopf.OperatorRegistry:
    """The handlers of one Kopf run: the term's startup and cleanup, our login, the domain watch."""
    registry = kopf.OperatorRegistry()

    # A failed start is not retried by Kopf: the run ends and the process starts the next term.
    @kopf.on.startup(registry=registry, errors=kopf.ErrorsMode.PERMANENT)
    async def start_term(**_: Any) -> None:
        await term.start()

    @kopf.on.cleanup(registry=registry, errors=kopf.ErrorsMode.PERMANENT)
    async def end_term(**_: Any) -> None:
        await term.stop()

    @kopf.on.login(registry=registry, errors=kopf.ErrorsMode.PERMANENT)
    async def login(**_: Any) -> kopf.AiohttpSession:
        return api_session(connection)

    @kopf.on.event(names.GROUP, names.VERSION, names.DOMAIN_PLURAL, registry=registry)
    async def domain_event(*, event: Any, **_: Any) -> None:
        term.domain_event(event)

    return registry


def api_session(connection: Connection) -> kopf.AiohttpSession:
    """Kopf's HTTP session, authenticated exactly as our own client is: the same server address and
    TLS context (CA, client certificate, `insecure-skip-tls-verify`) and, on every request, the token
    our token source holds then (a service account's rotating token, a kubeconfig's token file or
    exec credential plugin).

    A session rather than a `kopf.ConnectionInfo`: a `Connection` holds a ready TLS context, not the
    files it was made from, and a ConnectionInfo's token is fixed until a 401 makes Kopf log in again.
    """

    async def authorize(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        request.headers.update(await connection.auth_headers())
        return await handler(request)

    # No proxy or netrc lookup from the environment, as for our own client (`Kube`).
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=connection.ssl_context),
        middlewares=(authorize,),
        trust_env=False,
    )
    return kopf.AiohttpSession(server=connection.host, aiohttp_session=session)


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


def kopf_settings() -> kopf.OperatorSettings:
    """Kopf settings: no Events or log posting from the framework, no peering, no CRD watch, quiet on
    success, and requests that outlive any outage of the API server."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.peering.standalone = True
    # Kopf would otherwise watch every CRD of the cluster for the whole run, to notice ours appearing
    # later: the only request an idle controller made besides its own watches and lease renewals
    # (re-opening that watch). The term waits for our CRD before Kopf resolves what it watches.
    settings.scanning.disabled = True
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
    # Kopf arms a SIGKILL for some minutes after a run that ended without its stop flag (a signal,
    # or a failure); after a failure the process goes on with its next term, which that would kill.
    settings.process.ultimate_exiting_timeout = None
    return settings
