"""Act as a ServiceAccount from outside the cluster, and account for what it did.

A token from the TokenRequest API in a kubeconfig: a process started with it is authenticated and
authorized exactly as a pod running under that account would be (minus the pod and node binding of a
projected token), so the RBAC a chart grants can be tried with the real process instead of an admin
certificate. The API server's audit log then tells which permissions its requests needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes_asyncio import client

Object = dict[str, Any]
# One permission as (apiGroup, resource[/subresource], verb).
Permission = tuple[str, str, str]
# Long enough for any test; the API server's default maximum is far larger.
TOKEN_SECONDS = 3600


def username(namespace: str, name: str) -> str:
    """The user name the API server gives requests made with a token of ServiceAccount `namespace/name`."""
    return f"system:serviceaccount:{namespace}:{name}"


async def request_token(
    api: client.ApiClient, namespace: str, name: str, expiration_seconds: int = TOKEN_SECONDS
) -> str:
    """A fresh token for ServiceAccount `namespace/name`, for the API server's own audience."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": expiration_seconds},
    }
    result = await client.CoreV1Api(api).create_namespaced_service_account_token(
        name, namespace, cast(Any, body)
    )
    token = result.status.token if result.status else None
    if not token:
        raise RuntimeError(f"the API server returned no token for ServiceAccount {namespace}/{name}")
    return str(token)


def token_kubeconfig(base: Path, token: str, user: str, path: Path) -> Path:
    """Write to `path` a kubeconfig for the cluster of `base`'s current context that authenticates with
    `token` as `user` (a label only; the token says who it is). Returns `path`."""
    config = yaml.safe_load(base.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON is YAML; every kubeconfig reader accepts it. The file holds a credential: owner only.
    path.touch(mode=0o600)
    path.write_text(json.dumps(kubeconfig, indent=2))
    return path


async def service_account_kubeconfig(
    api: client.ApiClient, base: Path, namespace: str, name: str, path: Path
) -> Path:
    """A kubeconfig (written to `path`) that acts as ServiceAccount `namespace/name` on `base`'s cluster.

    `api` must be allowed to create tokens for the account (an admin client).
    """
    token = await request_token(api, namespace, name)
    return token_kubeconfig(base, token, username(namespace, name), path)


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
