"""The demo: a local control plane with a simulated NVL72 rack, the operator installed by its Helm
chart, and examples/01-single-rack applied unchanged, watched until the domain is Ready.

No container runtime exists here, so the chart's pods are KWOK fakes; the controller itself runs as a
local process authenticated as the chart's ServiceAccount (so it has exactly the chart's RBAC), and
a kubelet-plugin double publishes the ComputeDomain DRA devices of each fake node.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config

from cdtestbed.cluster import STATE_FILE
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.dra import publish_slices
from cdtestbed.serviceaccount import request_token, token_kubeconfig
from cdtestbed.tools import Tools, repo_root
from computedomain.api import names

NAMESPACE = "computedomain-system"
RELEASE = "computedomain-operator"
EXAMPLE = "examples/01-single-rack"
IMAGE = "registry.example/computedomain-operator"


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _run(args: list[str], kubeconfig: Path) -> str:
    result = subprocess.run(
        args,
        # HOME: kubectl keeps its discovery cache there, not in the current folder.
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{result.stderr}")
    return result.stdout


def install_chart(tools: Tools, kubeconfig: Path) -> None:
    """`helm install` the chart; the controller replicas are 0 because the controller runs locally."""
    chart = repo_root() / "charts" / "computedomain-operator"
    out = _run(
        [
            str(tools.bin("helm")),
            "install",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            f"image.repository={IMAGE}",
            "--set",
            "controller.replicas=0",
            "--set",
            "nodeAgent.enabled=false",
        ],
        kubeconfig,
    )
    print("\n".join(line for line in out.splitlines() if line.startswith(("NAME", "STATUS", "REVISION"))))


async def apply_example(api: client.ApiClient) -> None:
    """Create every object of the example, unchanged."""
    dynamic: list[dict[str, Any]] = []
    for path in ("namespace.yaml", "computedomain.yaml", "job.yaml"):
        dynamic += [doc for doc in yaml.safe_load_all((repo_root() / EXAMPLE / path).read_text()) if doc]
    for doc in dynamic:
        await _create(api, doc)
        print(
            f"created {doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}".replace(
                " /", " "
            )
        )


async def _create(api: client.ApiClient, doc: dict[str, Any]) -> None:
    group, _, version = doc["apiVersion"].rpartition("/")
    plural = {
        "Namespace": "namespaces",
        "Service": "services",
        "Job": "jobs",
        "ComputeDomain": "computedomains",
    }
    kind = plural[doc["kind"]]
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    namespace = doc["metadata"].get("namespace")
    path = f"{prefix}/namespaces/{namespace}/{kind}" if namespace else f"{prefix}/{kind}"
    await api.call_api(path, "POST", body=doc, auth_settings=["BearerToken"], response_types_map={})


async def watch_domain(api: client.ApiClient, timeout: float = 120) -> dict[str, Any]:
    """Print the domain's summary each time it changes, until it is Ready with nodes."""
    custom = client.CustomObjectsApi(api)
    last, deadline, started = None, time.monotonic() + timeout, time.monotonic()
    print(f"{'t':>6}  {'READY':<9} {'NODES':<6} {'CLIQUES':<8} CONDITION")
    while time.monotonic() < deadline:
        body = await custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, "team-a", names.DOMAIN_PLURAL, "llama-train"
        )
        status = body.get("status") or {}
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        columns = (status.get("status", "-"), status.get("nodeSummary", "-"), status.get("cliqueCount", 0))
        reason, message = ready.get("reason", ""), ready.get("message", "")
        line = f"{columns[0]:<9} {columns[1]:<6} {columns[2]:<8} {reason}: {message}"
        if line != last:
            print(f"{time.monotonic() - started:5.1f}s  {line}", flush=True)
            last = line
        if status.get("status") == "Ready" and status.get("joinedNodes"):
            return dict(body)
        await asyncio.sleep(0.25)
    raise TimeoutError("the domain did not become Ready")


def _remember(workdir: Path, name: str, pid: int) -> None:
    # `testbed down` stops every process recorded in the state file.
    path = workdir / STATE_FILE
    state = json.loads(path.read_text())
    state["pids"][name] = pid
    path.write_text(json.dumps(state, indent=2))


async def run(workdir: Path, tools: Tools) -> None:
    """Everything after the control plane is up (the caller starts it)."""
    kubeconfig = workdir / "kubeconfig"
    kubectl = str(tools.bin("kubectl"))
    async with await config.new_client_from_config(config_file=str(kubeconfig)) as api:
        _step("Install the operator with its Helm chart")
        install_chart(tools, kubeconfig)
        _step("Run the controller as the chart's ServiceAccount (a local process; no container runtime here)")
        token = await request_token(api, NAMESPACE, f"{RELEASE}-controller", seconds=86400)
        identity = token_kubeconfig(kubeconfig, token, workdir / "kubeconfig-controller", "controller")
        env = {
            "NAMESPACE": NAMESPACE,
            "IMAGE_NAME": f"{IMAGE}:0.1.0",
            "POD_NAME": "demo",
            "LEASE_NAME": f"{RELEASE}-controller",
        }
        controller = ControllerProcess(identity, workdir / "logs" / "controller.log", env)
        controller.start()
        assert controller.process is not None
        _remember(workdir, "controller", controller.process.pid)
        print(f"controller ready; metrics at {controller.url('/metrics')}; log {controller.log}")
        _step("Kubelet-plugin double: publish each GPU node's ComputeDomain devices (channel-0, daemon-0)")
        nodes = await client.CoreV1Api(api).list_node(label_selector=names.GPU_PRESENT_LABEL)
        await publish_slices(api, [n.metadata.name for n in nodes.items])
        print(f"{len(nodes.items)} ResourceSlices published")
        _step(f"Apply {EXAMPLE} unchanged (a ComputeDomain and a 4-node training Job)")
        await apply_example(api)
        _step("Watch the domain: the scheduler allocates channels, nodes join, IMEX daemons start")
        await watch_domain(api)
    _step("kubectl get computedomains -n team-a")
    print(_run([kubectl, "get", "computedomains", "-n", "team-a"], kubeconfig))
    _step("Member nodes and their IMEX daemon pods")
    print(_run([kubectl, "get", "pods", "-n", NAMESPACE, "-o", "wide"], kubeconfig))
    _step("Peer bookkeeping: the ComputeDomainClique (indices assigned by the controller)")
    print(_run([kubectl, "get", "computedomaincliques", "-n", NAMESPACE, "-o", "yaml"], kubeconfig))
    print(f"Explore with: export KUBECONFIG={kubeconfig}   (kubectl: {kubectl})")
    print("Stop everything with: make cluster-down")
