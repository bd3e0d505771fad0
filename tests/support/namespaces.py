"""Namespaces that pods can be admitted into at once."""

from __future__ import annotations

from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from support.waiting import eventually


async def create_namespace(api: client.ApiClient, name: str) -> None:
    """Create namespace `name` and wait until its default ServiceAccount exists (so pods are admitted)."""
    core = client.CoreV1Api(api)
    await core.create_namespace(cast(Any, {"metadata": {"name": name}}))

    async def default_account() -> bool:
        try:
            await core.read_namespaced_service_account("default", name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    await eventually(default_account, timeout=60, what=f"default ServiceAccount in {name}")
