"""Act as a ServiceAccount from outside the cluster, and account for what it did.

A token from the TokenRequest API in a kubeconfig: a process started with it is authenticated and
authorized exactly as a pod running under that account would be (minus the pod and node binding of a
projected token), so the RBAC a chart grants can be tried with the real process instead of an admin
certificate. The API server's audit log then tells which permissions its requests needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from cdtestbed.serviceaccount import request_token, token_kubeconfig

Object = dict[str, Any]
# One permission as (apiGroup, resource[/subresource], verb).
Permission = tuple[str, str, str]


def username(namespace: str, name: str) -> str:
    """The user name the API server gives requests made with a token of ServiceAccount `namespace/name`."""
    return f"system:serviceaccount:{namespace}:{name}"


async def service_account_kubeconfig(
    api: client.ApiClient, base: Path, namespace: str, name: str, path: Path
) -> Path:
    """A kubeconfig (written to `path`) that acts as ServiceAccount `namespace/name` on `base`'s cluster.

    `api` must be allowed to create tokens for the account (an admin client).
    """
    token = await request_token(api, namespace, name)
    return token_kubeconfig(base, token, path, username(namespace, name))


def permissions(role: Object) -> set[Permission]:
    """Every (apiGroup, resource, verb) a Role or ClusterRole grants (resourceNames aside)."""
    return {
        (group, resource, verb)
        for rule in role.get("rules") or []
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def audit_events(log: Path, user: str) -> list[Object]:
    """The audit events of requests `user` made on API objects (discovery requests have no objectRef)."""
    events = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") == user and event.get("objectRef"):
            events.append(event)
    return events


def permission_of(event: Object) -> Permission:
    """The permission the request of an audit event was authorized by."""
    ref = event["objectRef"]
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup", ""), resource, event["verb"]


def permissions_used(events: list[Object]) -> set[Permission]:
    """Every permission the requests of `events` needed.

    A server-side apply that creates its object (201) is authorized for `create` as well as `patch`,
    though the audit event says only `patch`.
    """
    used = set()
    for event in events:
        group, resource, verb = permission_of(event)
        used.add((group, resource, verb))
        if verb == "patch" and event.get("responseStatus", {}).get("code") == 201:
            used.add((group, resource, "create"))
    return used


def unneeded(granted: set[Permission], used: set[Permission]) -> list[Permission]:
    """Granted permissions no request needed. `get` beside a used `list` counts as needed: it reveals
    nothing the list does not, and a process may read single objects on paths that a test's flow rarely
    takes (the controller does on a name conflict)."""
    return sorted(
        (group, resource, verb)
        for group, resource, verb in granted - used
        if not (verb == "get" and (group, resource, "list") in used)
    )
