"""Fixtures of the unit tier: the chart rendered offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.chartrender import CLUSTER_V1, Manifest, helm_or_skip, render


@pytest.fixture(scope="module")
def helm() -> Path:
    """The helm binary of the tool cache (tests that need it skip without it)."""
    return helm_or_skip()


@pytest.fixture(scope="module")
def default_render(helm: Path) -> list[Manifest]:
    """The chart with its default values, for a Kubernetes 1.34+ cluster (resource.k8s.io/v1)."""
    return render(helm, *CLUSTER_V1)
