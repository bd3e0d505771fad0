"""Install what the operator needs without Helm (the chart's end-to-end tests install it with Helm):
the CRDs, the operator's namespace and the IMEX daemons' service account."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, cast

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.dra import install_device_classes, publish_slices
from cdtestbed.tools import repo_root
from computedomain.api import names


def crd_manifests() -> list[dict[str, Any]]:
    """The committed CRDs (the same files the chart ships)."""
    return [yaml.safe_load(path.read_text()) for path in sorted((repo_root() / "crds").glob("*.yaml"))]


async def apply_crds(api: client.ApiClient, manifests: list[dict[str, Any]] | None = None) -> None:
    """Create or replace the CRDs and wait until the API server serves them."""
    extensions = client.ApiextensionsV1Api(api)
    for manifest in manifests if manifests is not None else crd_manifests():
        name = manifest["metadata"]["name"]
        try:
            await extensions.create_custom_resource_definition(cast(Any, manifest))
        except ApiException as error:
            if error.status != 409:
                raise
            live = await extensions.read_custom_resource_definition(name)
            manifest = {
                **manifest,
                "metadata": {**manifest["metadata"], "resourceVersion": live.metadata.resource_version},
            }
            await extensions.replace_custom_resource_definition(name, cast(Any, manifest))
        await _wait_established(extensions, name)


async def _wait_established(extensions: client.ApiextensionsV1Api, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = await extensions.read_custom_resource_definition(name)
        conditions = live.status.conditions or [] if live.status else []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"CRD {name} not established after {timeout:.0f}s")


async def ensure_namespace(api: client.ApiClient, namespace: str) -> None:
    """Create the operator's namespace and the daemon service account in it (if missing)."""
    core = client.CoreV1Api(api)
    try:
        await core.create_namespace(cast(Any, {"metadata": {"name": namespace}}))
    except ApiException as error:
        if error.status != 409:
            raise
    try:
        await core.create_namespaced_service_account(
            namespace, cast(Any, {"metadata": {"name": names.DAEMON_SERVICE_ACCOUNT}})
        )
    except ApiException as error:
        if error.status != 409:
            raise


async def prepare_operator(api: client.ApiClient, namespace: str, nodes: Iterable[str]) -> None:
    """Everything the controller needs besides itself, as the chart and the kubelet plugin provide
    it: CRDs, its namespace with the daemon service account, the DeviceClasses, and the plugin's
    ResourceSlices for `nodes` (published by the kubelet-plugin double)."""
    await apply_crds(api)
    await ensure_namespace(api, namespace)
    await install_device_classes(api)
    await publish_slices(api, list(nodes))
