"""A Kubernetes API client for every entry point: in-cluster credentials in a pod, else KUBECONFIG."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


async def load_api_client() -> client.ApiClient:
    """An ApiClient from the pod's service account, or from KUBECONFIG / ~/.kube/config outside one."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration=configuration)
