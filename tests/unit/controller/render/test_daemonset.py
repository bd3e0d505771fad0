"""The per-domain IMEX daemon DaemonSet, checked path by path."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.api.models import ComputeDomain
from computedomain.controller.render.daemonset import STATE_PROBE, daemonset
from computedomain.controller.settings import Settings

UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
DOMAIN = ComputeDomain.model_validate(
    {
        "metadata": {"name": "train-cd", "namespace": "team-a", "uid": UID},
        "spec": {"channel": {"resourceClaimTemplate": {"name": "train-cd-channel"}}},
    }
)
SETTINGS = Settings(image="registry.example/cd:1.0", pod_name="controller-0", namespace="cd-system")
SELECTOR = {"resource.nvidia.com/computeDomain": UID}
CHECK = ["compute-domain-daemon", "-v", "$(LOG_VERBOSITY)", "check"]


def rendered(**overrides: Any) -> dict[str, Any]:
    return daemonset(DOMAIN, SETTINGS.model_copy(update=overrides))


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = rendered()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod()["containers"]
    assert isinstance(only, dict)
    return only


def env() -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container()["env"]}


def test_identity_and_selection() -> None:
    ds = rendered()

    assert (ds["apiVersion"], ds["kind"]) == ("apps/v1", "DaemonSet")
    assert ds["metadata"] == {
        "name": f"computedomain-daemon-{UID}",
        "namespace": "cd-system",
        "labels": SELECTOR,
    }
    assert ds["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert ds["spec"]["template"]["metadata"] == {"labels": SELECTOR}
    assert pod()["nodeSelector"] == SELECTOR
    assert "finalizers" not in ds["metadata"]


def test_pod_spec() -> None:
    spec = pod()

    assert spec["serviceAccountName"] == "compute-domain-daemon-service-account"
    assert spec["tolerations"] == [
        {"operator": "Exists", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute"},
        {"operator": "Exists", "effect": "PreferNoSchedule"},
    ]
    assert spec["resourceClaims"] == [
        {"name": "compute-domain-daemon", "resourceClaimTemplateName": f"computedomain-daemon-{UID}"}
    ]
    assert "imagePullSecrets" not in spec
    assert "priorityClassName" not in spec
    assert "securityContext" not in spec


def test_container() -> None:
    c = container()

    assert c["name"] == "compute-domain-daemon"
    assert c["image"] == "registry.example/cd:1.0"
    assert c["command"] == ["compute-domain-daemon", "-v", "$(LOG_VERBOSITY)", "run"]
    assert c["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
        "claims": [{"name": "compute-domain-daemon"}],
    }


def test_daemon_runs_as_root_without_privilege_escalation() -> None:
    # The image's user 65532 cannot open the 0400 capability device nor write /etc/hosts and /imexd.
    assert container()["securityContext"] == {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
    }
    # Nothing is privileged or added, and the pod keeps no security context of its own.
    assert "privileged" not in container()["securityContext"]
    assert "capabilities" not in container()["securityContext"]
    assert "securityContext" not in pod()


def test_daemons_log_as_json_when_the_operator_does() -> None:
    (daemon,) = rendered(json_logs=True)["spec"]["template"]["spec"]["containers"]
    assert {"name": "LOG_FORMAT", "value": "json"} in daemon["env"]


def test_env() -> None:
    assert env() == {
        "LOG_VERBOSITY": "4",
        "LOG_FORMAT": "text",
        "MAX_NODES_PER_IMEX_DOMAIN": "18",
        "NODE_NAME": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
        "POD_IP": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}},
        "POD_UID": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}},
        "POD_NAME": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        "NVIDIA_VISIBLE_DEVICES": "void",
        "FEATURE_GATES": "ComputeDomainCliques=true,IMEXDaemonsWithDNSNames=true",
        "COMPUTE_DOMAIN_UUID": UID,
        "COMPUTE_DOMAIN_NAME": "train-cd",
        "COMPUTE_DOMAIN_NAMESPACE": "team-a",
    }


@pytest.mark.parametrize(
    ("probe", "command", "expected"),
    [
        ("startupProbe", STATE_PROBE, {"periodSeconds": 1, "timeoutSeconds": 10, "failureThreshold": 1200}),
        ("livenessProbe", CHECK, {"periodSeconds": 60, "timeoutSeconds": 10, "failureThreshold": 20}),
        ("readinessProbe", STATE_PROBE, {"periodSeconds": 10, "timeoutSeconds": 10, "failureThreshold": 1}),
    ],
)
def test_probes(probe: str, command: list[str], expected: dict[str, int]) -> None:
    assert container()[probe] == {"exec": {"command": command}, **expected}


def test_settings_flow_into_the_pod() -> None:
    ds = rendered(
        image_pull_secrets=("regcred",),
        daemon_priority_class="system-node-critical",
        daemon_cpu_request="100m",
        daemon_memory_limit="1Gi",
        daemon_log_verbosity=6,
        max_nodes_per_clique=4,
    )
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    values = {item["name"]: item.get("value") for item in c["env"]}

    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert c["resources"]["requests"]["cpu"] == "100m"
    assert c["resources"]["limits"] == {"memory": "1Gi"}
    assert (values["LOG_VERBOSITY"], values["MAX_NODES_PER_IMEX_DOMAIN"]) == ("6", "4")


def test_rendering_is_deterministic_and_unshared() -> None:
    first = rendered()
    first["metadata"]["labels"]["extra"] = "x"
    first["spec"]["template"]["spec"]["tolerations"].clear()
    first["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 65532

    assert rendered() != first
    assert "extra" not in first["spec"]["selector"]["matchLabels"]
    assert rendered() == rendered()
