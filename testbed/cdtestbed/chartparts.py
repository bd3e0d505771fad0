"""The operator's chart in a test-bed cluster without its workloads: every object `helm template`
renders except the controller's Deployment and the DaemonSets, whose programs the test bed runs as
processes with the identities of the chart's ServiceAccounts instead (`cdtestbed.pluginprocess`,
`cdtestbed.controller_process`)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from cdtestbed.install import apply_crds, ensure_namespace
from cdtestbed.tools import Tools, repo_root

CHART = repo_root() / "charts" / "computedomain-operator"
KUBE_VERSION = "1.36.0"
WORKLOAD_KINDS = ("Deployment", "DaemonSet")
COMPONENT_LABEL = "app.kubernetes.io/component"
PLUGIN_COMPONENT = "kubelet-plugin"

Manifest = dict[str, Any]


def render_chart(
    tools: Tools, namespace: str, release: str, *values: str, show_only: Sequence[str] = ()
) -> list[Manifest]:
    """The chart's objects for a Kubernetes 1.36 cluster, rendered offline (`values`: `--set` items;
    `show_only`: only these templates)."""
    command = [str(tools.bin("helm")), "template", release, str(CHART), "--namespace", namespace]
    command += ["--kube-version", KUBE_VERSION, "--api-versions", "resource.k8s.io/v1"]
    for value in values:
        command += ["--set", value]
    for template in show_only:
        command += ["--show-only", template]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def kubectl_apply(tools: Tools, kubeconfig: Path, manifests: Sequence[Manifest]) -> None:
    """`kubectl apply` the manifests (server-side validation and ordering as a user gets them)."""
    command = [str(tools.bin("kubectl")), "--kubeconfig", str(kubeconfig), "apply", "-f", "-"]
    done = subprocess.run(
        command,
        input=yaml.safe_dump_all(list(manifests)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl apply failed:\n{done.stderr}")


def component(manifests: Sequence[Manifest], kind: str, name: str) -> Manifest:
    """The one object of `kind` whose component label is `name`."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind and m["metadata"].get("labels", {}).get(COMPONENT_LABEL) == name
    ]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} of component {name}, found {len(found)}")
    return found[0]


def account_of(manifests: Sequence[Manifest], name: str) -> str:
    """The ServiceAccount name the chart gives component `name`."""
    return str(component(manifests, "ServiceAccount", name)["metadata"]["name"])


async def install_chart_objects(
    api: client.ApiClient, tools: Tools, kubeconfig: Path, namespace: str, release: str
) -> list[Manifest]:
    """CRDs, the namespace, and the chart's objects but its workloads; the rendered manifests."""
    manifests = render_chart(tools, namespace, release, "nodeAgent.enabled=false")
    await apply_crds(api)
    await ensure_namespace(api, namespace)
    objects = [m for m in manifests if m["kind"] not in WORKLOAD_KINDS]
    await asyncio.to_thread(kubectl_apply, tools, kubeconfig, objects)
    return manifests


def identity_pod(daemonset: Manifest, node: str) -> Manifest:
    """A pod of `daemonset` bound to `node` that holds the identity of a process run outside it.

    The DaemonSet's pod template with its host-path volumes and probes removed: the kubelet runs it as
    an inert container of the runtime double (it would otherwise create the chart's host folders on
    this machine), while the test bed runs the program itself with a token bound to this pod, so the
    API server authenticates it as running on `node`.
    """
    template = daemonset["spec"]["template"]
    containers = []
    for container in template["spec"]["containers"]:
        kept = {
            k: v
            for k, v in container.items()
            if k not in ("volumeMounts", "livenessProbe", "readinessProbe", "startupProbe")
        }
        containers.append(kept)
    spec = {k: v for k, v in template["spec"].items() if k not in ("volumes", "containers", "initContainers")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{daemonset['metadata']['name']}-{uuid.uuid4().hex[:5]}",
            "namespace": daemonset["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": {**spec, "nodeName": node, "containers": containers},
    }
