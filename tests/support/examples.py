"""The committed examples, created through the API exactly as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.tools import repo_root
from computedomain.api import names
from support.domains import Object
from support.waiting import eventually


def example(folder: str) -> list[Object]:
    """Every document of every manifest in `examples/<folder>`, namespace first, as committed."""
    documents: list[Object] = []
    for path in sorted(Path(repo_root() / "examples" / folder).glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return sorted(documents, key=lambda d: d["kind"] != "Namespace")


async def create_manifest(api: client.ApiClient, manifest: Object) -> None:
    """Create one object of the kinds the examples hold, exactly as written."""
    kind, namespace = manifest["kind"], manifest["metadata"].get("namespace", "")
    core = client.CoreV1Api(api)
    # The generated client accepts plain dicts where its signatures name models.
    body = cast(Any, manifest)
    if kind == "Namespace":
        await core.create_namespace(body)
    elif kind == "Service":
        await core.create_namespaced_service(namespace, body)
    elif kind == "Job":
        await client.BatchV1Api(api).create_namespaced_job(namespace, body)
    elif kind == names.DOMAIN_KIND:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, manifest
        )
    else:
        raise ValueError(f"no way to create a {kind} here")


async def delete_namespace(api: client.ApiClient, name: str, timeout: float = 120.0) -> None:
    """Delete a namespace (if it exists) and wait until it is gone."""
    core = client.CoreV1Api(api)
    try:
        await core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise

    async def gone() -> bool:
        try:
            await core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    await eventually(gone, timeout=timeout, what=f"namespace {name} deleted")
