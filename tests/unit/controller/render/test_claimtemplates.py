"""The workload and daemon ResourceClaimTemplates, compared as whole objects."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.api.models import ComputeDomain
from computedomain.controller.render.claimtemplates import daemon_claim_template, workload_claim_template
from computedomain.controller.settings import Settings

UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
SETTINGS = Settings(image="img", pod_name="controller-0", namespace="dra-driver-nvidia-gpu")


def domain(allocation_mode: str = "Single") -> ComputeDomain:
    return ComputeDomain.model_validate(
        {
            "metadata": {"name": "train-cd", "namespace": "default", "uid": UID},
            "spec": {
                "channel": {
                    "resourceClaimTemplate": {"name": "train-cd-channel"},
                    "allocationMode": allocation_mode,
                },
            },
        }
    )


def test_workload_template_v1() -> None:
    assert workload_claim_template(domain("All"), "v1") == {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": "train-cd-channel",
            "namespace": "default",
            "labels": {
                "resource.nvidia.com/computeDomain": UID,
                "resource.nvidia.com/computeDomainTarget": "Workload",
            },
            "ownerReferences": [
                {
                    "apiVersion": "resource.nvidia.com/v1beta1",
                    "kind": "ComputeDomain",
                    "name": "train-cd",
                    "uid": UID,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "metadata": {
                "labels": {"resource.nvidia.com/computeDomain": UID},
                "annotations": {
                    "resource.nvidia.com/computeDomainNamespace": "default",
                    "resource.nvidia.com/computeDomainName": "train-cd",
                },
            },
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "channel",
                            "exactly": {"deviceClassName": "compute-domain-default-channel.nvidia.com"},
                        }
                    ],
                    "config": [
                        {
                            "requests": ["channel"],
                            "opaque": {
                                "driver": "compute-domain.nvidia.com",
                                "parameters": {
                                    "apiVersion": "resource.nvidia.com/v1beta1",
                                    "kind": "ComputeDomainChannelConfig",
                                    "domainID": UID,
                                    "allocationMode": "All",
                                },
                            },
                        }
                    ],
                },
            },
        },
    }


def test_daemon_template_v1() -> None:
    assert daemon_claim_template(domain(), SETTINGS, "v1") == {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": f"computedomain-daemon-{UID}",
            "namespace": "dra-driver-nvidia-gpu",
            "labels": {
                "resource.nvidia.com/computeDomain": UID,
                "resource.nvidia.com/computeDomainTarget": "Daemon",
            },
        },
        "spec": {
            "metadata": {
                "annotations": {
                    "resource.nvidia.com/computeDomainNamespace": "default",
                    "resource.nvidia.com/computeDomainName": "train-cd",
                },
            },
            "spec": {
                "devices": {
                    "requests": [
                        {"name": "daemon", "exactly": {"deviceClassName": "compute-domain-daemon.nvidia.com"}}
                    ],
                    "config": [
                        {
                            "requests": ["daemon"],
                            "opaque": {
                                "driver": "compute-domain.nvidia.com",
                                "parameters": {
                                    "apiVersion": "resource.nvidia.com/v1beta1",
                                    "kind": "ComputeDomainDaemonConfig",
                                    "domainID": UID,
                                },
                            },
                        }
                    ],
                },
            },
        },
    }


def test_v1beta1_uses_the_flat_request() -> None:
    workload = workload_claim_template(domain(), "v1beta1")
    daemon = daemon_claim_template(domain(), SETTINGS, "v1beta1")

    assert workload["apiVersion"] == daemon["apiVersion"] == "resource.k8s.io/v1beta1"
    assert workload["spec"]["spec"]["devices"]["requests"] == [
        {"name": "channel", "deviceClassName": "compute-domain-default-channel.nvidia.com"}
    ]
    assert daemon["spec"]["spec"]["devices"]["requests"] == [
        {"name": "daemon", "deviceClassName": "compute-domain-daemon.nvidia.com"}
    ]


def test_v1beta2_has_the_v1_shape() -> None:
    v1 = workload_claim_template(domain(), "v1")
    v1beta2 = workload_claim_template(domain(), "v1beta2")

    assert v1beta2["apiVersion"] == "resource.k8s.io/v1beta2"
    assert v1beta2["spec"] == v1["spec"]


@pytest.mark.parametrize(
    "template",
    [workload_claim_template(domain(), "v1"), daemon_claim_template(domain(), SETTINGS, "v1")],
)
def test_no_finalizers(template: dict[str, Any]) -> None:
    assert "finalizers" not in template["metadata"]


def test_renders_are_independent_objects() -> None:
    first = workload_claim_template(domain(), "v1")
    first["metadata"]["labels"]["extra"] = "x"

    assert "extra" not in first["spec"]["metadata"]["labels"]
    assert "extra" not in workload_claim_template(domain(), "v1")["metadata"]["labels"]
