"""A thin layer over the Kubernetes REST API, shared by every program.

Objects travel as plain dicts: the programs render complete manifests and compare them with what the
API server returns, so a typed client model would only add conversion cost. Each write is reported to
an optional hook (the controller counts them in a metric) so that this layer depends on no program;
so is every body and watch event received (benchmarks and metrics count the bytes a program takes in).
Reads can ask for metadata only (`PartialObjectMetadata`): a program that needs an object's identity
does not pay for its spec and status. Every request names its program in `User-Agent`
(`identify`), so that the API server's audit log and its priority and fairness rules can tell the
programs apart. Bodies are decoded by the `kube.codec` the client is given (by default pydantic-core's
where the process has loaded it, as the controller has, else the json module's).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

import computedomain
from computedomain.api import names
from computedomain.kube.codec import Codec, default_codec
from computedomain.kube.config import Connection
from computedomain.kube.errors import KubeError, UndecodableResponse, WatchExpired, retry_after_seconds
from computedomain.kube.kinds import Kind
from computedomain.objects import Object

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Called with the verb ("post", "patch", "delete", ...) of every write.
WriteHook = Callable[[str], None]
# Called with the request path, the size in bytes of what arrived, and True for one watch event
# (a line of the stream) or False for a whole response body (a GET, one page of a list, an error).
ReceiveHook = Callable[[str, int, bool], None]
# Ask the API server for an object's metadata only, or for a list of objects' metadata only.
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# Statuses whose `Retry-After` header says when to ask again (throttling, an overloaded server).
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def user_agent(program: str) -> str:
    """The `User-Agent` of `program` (e.g. `computedomain-controller/0.1.0 (computedomain)`)."""
    return f"{program}/{computedomain.__version__} (computedomain)"


# What a client without its own `user_agent` sends; each program's entry point names itself.
_default_user_agent = user_agent("computedomain")


def identify(program: str) -> None:
    """Name the running program in the `User-Agent` of every client created without one."""
    global _default_user_agent
    _default_user_agent = user_agent(program)


class Kube:
    """Reads and writes through one `Connection`, with one server-side-apply field manager."""

    def __init__(
        self,
        connection: Connection,
        field_manager: str = names.FIELD_MANAGER,
        on_write: WriteHook | None = None,
        connections: int = 16,
        on_receive: ReceiveHook | None = None,
        user_agent: str | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.connection = connection
        self.codec = codec or default_codec()
        # Read when the client is made: `identify` runs first thing in each program.
        self.user_agent = user_agent or _default_user_agent
        self.field_manager = field_manager
        self.on_write = on_write
        self.on_receive = on_receive
        # Requests beyond this wait for a free connection: each TLS connection holds a 256 KiB read
        # buffer, and a burst of reconciles would otherwise open one per request in flight.
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        # Watches hold their connection for minutes: they get their own pool, so that they never
        # take a place among the `connections` the requests share.
        self._watch_session: aiohttp.ClientSession | None = None

    def _client_session(self, watch: bool = False) -> aiohttp.ClientSession:
        # Sessions that do not trust the environment: that would cost a proxy and netrc lookup
        # (file system calls in a thread) on every request.
        if watch:
            if self._watch_session is None:
                self._watch_session = self._new_session(limit=0)
            return self._watch_session
        if self._session is None:
            self._session = self._new_session(limit=self.connections)
        return self._session

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=limit, ssl=self.connection.ssl_context)
        # Watch events of large objects can exceed aiohttp's default line buffer.
        return aiohttp.ClientSession(
            connector=connector, read_bufsize=2**21, headers={"User-Agent": self.user_agent}
        )

    async def close(self) -> None:
        """Close the HTTP sessions."""
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()
        self._session = self._watch_session = None

    def _decode(self, raw: bytes) -> Object:
        # Told apart from the ValueErrors of our own code: a body cut short is worth asking for again.
        try:
            data: Object = self.codec.decode(raw)
        except ValueError as error:
            raise UndecodableResponse(f"undecodable response from the API server: {error}") from error
        return data

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float | aiohttp.ClientTimeout | None = 30.0,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send one request and return the open response (raises `KubeError` on non-2xx); `stream`
        sends it over the watch pool (long-lived responses)."""
        headers = {"Content-Type": content_type, "Accept": accept}
        # A bearer token, when we have one (fresh: tokens rotate); client certificates are in the session.
        headers.update(await self.connection.auth_headers())
        # As late as possible before sending: the hook may refuse the write (a leader whose lease
        # is no longer certain must not write), and nothing may be awaited between its check and
        # the request.
        if method != "GET" and self.on_write is not None:
            self.on_write(method.lower())
        if not isinstance(timeout, aiohttp.ClientTimeout):
            timeout = aiohttp.ClientTimeout(total=timeout)
        response = await self._client_session(watch=stream).request(
            method,
            f"{self.connection.host}{path}",
            params=dict(query or {}),
            data=None if body is None else json.dumps(body, separators=(",", ":")),
            headers=headers,
            timeout=timeout,
            proxy=self.connection.proxy,
            server_hostname=self.connection.server_hostname,
        )
        if response.status >= 400:
            async with response:
                body = await response.read()
            if self.on_receive is not None:
                self.on_receive(path, len(body), False)
            retry_after = None
            if response.status in _RETRY_AFTER_STATUSES:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise KubeError.from_response(response.status, str(response.reason or ""), body, retry_after)
        return response

    async def call(self, method: str, path: str, **kwargs: Any) -> Object:
        """Send one request and return the decoded JSON body."""
        response = await self.request(method, path, **kwargs)
        async with response:
            body = await response.read()
        if self.on_receive is not None:
            self.on_receive(path, len(body), False)
        return self._decode(body)

    async def get(
        self, kind: Kind, name: str, namespace: str | None = None, *, metadata_only: bool = False
    ) -> Object | None:
        """One object, or None when it does not exist.

        With `metadata_only`, a `PartialObjectMetadata`: the object's metadata and no spec or status.
        """
        accept = METADATA if metadata_only else "application/json"
        try:
            return await self.call("GET", kind.path(namespace, name), accept=accept)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        metadata_only: bool = False,
    ) -> tuple[list[Object], str]:
        """All objects of a kind (optionally label- or field-selected) and the list's resourceVersion.

        With `metadata_only`, each item is a `PartialObjectMetadata`: metadata, no spec or status.
        """
        accept = METADATA_LIST if metadata_only else "application/json"
        query: dict[str, str] = {"limit": "500"}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        items: list[Object] = []
        while True:
            page = await self.call("GET", kind.path(namespace), query=query, accept=accept)
            # Items of a list carry no apiVersion/kind; add them so cached objects look like watched ones.
            item_kind = str(page.get("kind", "")).removesuffix("List")
            # An empty list of metadata comes as `"items": null`.
            for item in page.get("items") or []:
                item.setdefault("apiVersion", page.get("apiVersion", kind.api_version))
                item.setdefault("kind", item_kind)
                items.append(item)
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items, str(page.get("metadata", {}).get("resourceVersion", ""))
            query["continue"] = token

    async def apply(
        self, kind: Kind, obj: Object, *, subresource: str | None = None, force: bool = True
    ) -> Object:
        """Server-side apply `obj` (a complete apply configuration) under our field manager.

        With `force`, fields other managers set are taken over (our children are ours alone);
        without it, such a conflict raises `KubeError` 409 instead.
        """
        meta = obj["metadata"]
        return await self.call(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"], subresource),
            query={"fieldManager": self.field_manager, "force": "true" if force else "false"},
            body=obj,
            content_type=APPLY,
        )

    async def create(self, kind: Kind, obj: Object) -> Object:
        """Create `obj`; raises `KubeError` with status 409 when the name is taken."""
        return await self.call(
            "POST",
            kind.path(obj["metadata"].get("namespace")),
            query={"fieldManager": self.field_manager},
            body=obj,
        )

    async def patch(
        self,
        kind: Kind,
        name: str,
        namespace: str | None,
        patch: Any,
        *,
        content_type: str = MERGE,
        subresource: str | None = None,
    ) -> Object:
        """Merge-patch (default) or JSON-patch one object."""
        return await self.call(
            "PATCH",
            kind.path(namespace, name, subresource),
            query={"fieldManager": self.field_manager},
            body=patch,
            content_type=content_type,
        )

    async def delete(
        self,
        kind: Kind,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> bool:
        """Delete one object (dependents in the background); False when it was already gone.

        `preconditions` (`uid`, `resourceVersion`) delete only the object as it was read: when it was
        replaced or written since, the API server refuses with `KubeError` 409 and deletes nothing.
        """
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if preconditions:
            body["preconditions"] = dict(preconditions)
        try:
            await self.call("DELETE", kind.path(namespace, name), body=body)
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def watch(
        self,
        kind: Kind,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        field_selector: str | None = None,
    ) -> AsyncIterator[Object]:
        """Stream watch events ({type, object}) from `resource_version`, bookmarks included.

        A `resource_version` the server no longer holds (410 Gone, as the answer or as an ERROR
        event in the stream) raises `WatchExpired`: the caller must list again. The stream ends
        normally when the server closes it at its timeout; a cut connection raises an aiohttp or
        OS error, after which the caller may resume from the last resourceVersion it saw.
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_seconds + 30)
        path = kind.path(namespace)
        try:
            response = await self.request("GET", path, query=query, timeout=timeout, stream=True)
        except KubeError as error:
            if error.status == 410:
                raise WatchExpired(str(error)) from error
            raise
        async with response:
            async for line in response.content:
                if not line.strip():
                    continue
                if self.on_receive is not None:
                    self.on_receive(path, len(line), True)
                event = self._decode(line)
                if event.get("type") == "ERROR" and _status_code(event.get("object")) == 410:
                    raise WatchExpired(str((event.get("object") or {}).get("message", "expired")))
                yield event


def _status_code(status: Any) -> int:
    try:
        return int((status or {}).get("code") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0
