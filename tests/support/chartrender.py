"""Render the Helm chart offline with `helm template` and pick objects and rules out of it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdtestbed.tools import Tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "computedomain-operator"
NAMESPACE = "cd-system"
RELEASE = "cdop"
WILDCARD = "*"
# What `helm template` needs to stand in for a cluster of each resource.k8s.io generation. Offline,
# Helm claims every API version it knows; the Kubernetes version is what tells them apart.
CLUSTER_V1 = ("--kube-version", "1.34.0", "--api-versions", "resource.k8s.io/v1")
CLUSTER_V1BETA2 = ("--kube-version", "1.33.0", "--api-versions", "resource.k8s.io/v1beta2")
CLUSTER_V1BETA1 = ("--kube-version", "1.32.0", "--api-versions", "resource.k8s.io/v1beta1")

Manifest = dict[str, Any]
# One RBAC rule as (apiGroups, resources, resourceNames, verbs).
Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def find_helm() -> Path | None:
    """The helm binary of the tool cache (`make tools`), else one on PATH."""
    cached = Tools.default().directory / "bin" / "helm"
    if cached.exists():
        return cached
    found = shutil.which("helm")
    return Path(found) if found else None


def helm_or_skip() -> Path:
    """The helm binary, or skip the test that needs it."""
    path = find_helm()
    if path is None:
        pytest.skip("helm binary not found (neither in the tool cache nor on PATH): run `make tools`")
    return path


def run_template(helm: Path, *args: str, namespace: str = NAMESPACE) -> subprocess.CompletedProcess[str]:
    """Run `helm template` of the chart; the caller looks at the outcome."""
    command = [str(helm), "template", RELEASE, str(CHART), "--namespace", namespace, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def render(helm: Path, *args: str) -> list[Manifest]:
    """The chart's objects for these `helm template` arguments; fails the test if rendering fails."""
    result = run_template(helm, *args)
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(manifests: list[Manifest], kind: str, name_part: str = "") -> Manifest:
    """The one object of `kind` whose name contains `name_part`."""
    found = [m for m in manifests if m["kind"] == kind and name_part in m["metadata"]["name"]]
    assert len(found) == 1, (
        f"expected one {kind} named *{name_part}*, found {[m['metadata']['name'] for m in found]}"
    )
    return found[0]


def rules_of(role: Manifest) -> list[Rule]:
    """A role's rules as (apiGroups, resources, resourceNames, verbs), sorted, for exact comparison."""
    return sorted(
        (
            tuple(rule.get("apiGroups", [])),
            tuple(rule.get("resources", [])),
            tuple(rule.get("resourceNames", [])),
            tuple(sorted(rule.get("verbs", []))),
        )
        for rule in role["rules"]
    )


def rule(group: str, resource: str, verbs: str, resource_names: tuple[str, ...] = ()) -> Rule:
    return ((group,), (resource,), resource_names, tuple(sorted(verbs.split())))


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def walk(node: Any) -> Iterator[Any]:
    """Every value nested in `node`, `node` included."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)
