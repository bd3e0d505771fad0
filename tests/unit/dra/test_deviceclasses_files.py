"""The DeviceClasses of `computedomain.dra.deviceclasses` are the chart's.

Tests that install the DeviceClasses without Helm use that copy; if it drifted from the chart, they
would pass against classes no real installation has.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdtestbed.tools import Tools, repo_root
from computedomain.dra.deviceclasses import device_classes

CHART = repo_root() / "charts" / "computedomain-operator"
# `helm template` arguments that stand in for a cluster serving each resource.k8s.io version.
CLUSTERS = {
    "v1": ("--kube-version", "1.34.0", "--api-versions", "resource.k8s.io/v1"),
    "v1beta2": ("--kube-version", "1.33.0", "--api-versions", "resource.k8s.io/v1beta2"),
    "v1beta1": ("--kube-version", "1.32.0", "--api-versions", "resource.k8s.io/v1beta1"),
}


@pytest.fixture(scope="module")
def helm() -> Path:
    cached = Tools.default().directory / "bin" / "helm"
    found = cached if cached.exists() else Path(shutil.which("helm") or "")
    if not found.name:
        pytest.skip("helm binary not found (neither in the tool cache nor on PATH): run `make tools`")
    return found


def chart_device_classes(helm: Path, version: str) -> list[dict[str, Any]]:
    """The chart's DeviceClasses for a cluster serving `version`, without Helm's bookkeeping labels."""
    command = [str(helm), "template", "cd", str(CHART), "--namespace", "cd-system", *CLUSTERS[version]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    classes = [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "DeviceClass"]
    for device_class in classes:
        device_class["metadata"].pop("labels", None)
    return sorted(classes, key=lambda c: str(c["metadata"]["name"]))


@pytest.mark.parametrize("version", sorted(CLUSTERS))
def test_device_classes_are_the_charts(helm: Path, version: str) -> None:
    ours = sorted(device_classes(version), key=lambda c: str(c["metadata"]["name"]))
    chart = chart_device_classes(helm, version)
    assert len(chart) == 2
    assert ours == chart
