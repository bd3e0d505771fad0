"""Act as a ServiceAccount from outside the cluster: a kubeconfig holding a token from TokenRequest.

The demo and the tests run the controller, node agent and IMEX daemons this way, so each is
authenticated and authorized exactly as its pod would be (with a token bound to a pod, the API server
also records the pod's node), rather than as a cluster admin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes_asyncio import client

TOKEN_SECONDS = 3600


async def request_token(
    api: client.ApiClient,
    namespace: str,
    name: str,
    seconds: int = TOKEN_SECONDS,
    bound_pod: tuple[str, str] | None = None,
) -> str:
    """A token of ServiceAccount `namespace/name`, optionally bound to a pod given as (name, uid)."""
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if bound_pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": bound_pod[0],
            "uid": bound_pod[1],
        }
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    result = await client.CoreV1Api(api).create_namespaced_service_account_token(
        name, namespace, cast(Any, body)
    )
    token = result.status.token if result.status else None
    if not token:
        raise RuntimeError(f"the API server returned no token for ServiceAccount {namespace}/{name}")
    return str(token)


def token_kubeconfig(base: Path, token: str, path: Path, user: str = "token") -> Path:
    """Write to `path` a kubeconfig for the cluster of `base`'s current context, authenticating with
    `token` (`user` only names the entry; the token says who it is). Returns `path`."""
    source = yaml.safe_load(base.read_text())
    contexts = {c["name"]: c["context"] for c in source["contexts"]}
    cluster_name = contexts[source["current-context"]]["cluster"]
    cluster = next(c for c in source["clusters"] if c["name"] == cluster_name)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file holds a credential: owner only, from the start. JSON is YAML for every kubeconfig reader.
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2))
    return path
