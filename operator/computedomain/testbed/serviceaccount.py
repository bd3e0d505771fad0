"""Act as a ServiceAccount from outside the cluster: a kubeconfig holding a token from TokenRequest.

This is how the demo and the chart's end-to-end tests run the controller with exactly the RBAC the
chart grants it, rather than as a cluster admin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes_asyncio import client


async def request_token(
    api: client.ApiClient,
    namespace: str,
    name: str,
    seconds: int = 3600,
    bound_pod: tuple[str, str] | None = None,
) -> str:
    """A token for ServiceAccount `namespace/name`, optionally bound to a pod (name, uid)."""
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
    return str(result.status.token)


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path, user: str) -> Path:
    """A kubeconfig for the same server and CA as `admin_kubeconfig`, authenticating with `token`."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path
