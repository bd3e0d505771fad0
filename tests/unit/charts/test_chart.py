"""The Helm chart, rendered offline with `helm template`: RBAC, DeviceClasses, guard rails, pod security."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from computedomain.api import names
from support.chartrender import (
    CHART,
    CLUSTER_V1,
    CLUSTER_V1BETA1,
    CLUSTER_V1BETA2,
    NAMESPACE,
    RELEASE,
    WILDCARD,
    Manifest,
    env_of,
    only,
    render,
    rule,
    rules_of,
    run_template,
    walk,
)

# --- chart hygiene ----------------------------------------------------------------------------------


def test_lint_is_clean(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_namespaced_objects_live_in_the_release_namespace(default_render: list[Manifest]) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "DeviceClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for manifest in default_render:
        where = manifest["metadata"].get("namespace")
        expected = None if manifest["kind"] in cluster_scoped else NAMESPACE
        assert where == expected, f"{manifest['kind']} {manifest['metadata']['name']} is in {where!r}"


def test_default_namespace_is_refused_unless_allowed(helm: Path) -> None:
    refused = run_template(helm, *CLUSTER_V1, namespace="default")
    assert refused.returncode != 0
    assert "refusing to install into the 'default' namespace" in refused.stderr
    assert "allowDefaultNamespace=true" in refused.stderr

    allowed = run_template(helm, *CLUSTER_V1, "--set", "allowDefaultNamespace=true", namespace="default")
    assert allowed.returncode == 0, allowed.stderr


def test_several_replicas_need_leader_election(helm: Path) -> None:
    result = run_template(helm, *CLUSTER_V1, "--set", "controller.leaderElection.enabled=false")
    assert result.returncode != 0
    assert "needs controller.leaderElection.enabled=true" in result.stderr
    single = render(
        helm,
        *CLUSTER_V1,
        "--set",
        "controller.leaderElection.enabled=false",
        "--set",
        "controller.replicas=1",
    )
    controller = only(single, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(controller)["LEADER_ELECTION"]["value"] == "false"
    role = only(single, "Role", "controller")
    assert not any("leases" in rule.get("resources", []) for rule in role["rules"])


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("controller.bogus=1", "bogus"),
        ("bogus=1", "bogus"),
        ("daemon.resources.limits.cpu=1", "cpu"),
        ("logFormat=yaml", "logFormat"),
        ("resourceApiVersion=v2", "resourceApiVersion"),
        ("imex.mode=rack", "mode"),
        ("imex.channelPoolSize=1", "channelPoolSize"),
        ("imex.channelPoolSize=4096", "channelPoolSize"),
    ],
)
def test_values_schema_rejects_what_it_does_not_know(helm: Path, setting: str, complaint: str) -> None:
    result = run_template(helm, *CLUSTER_V1, "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "schema" in result.stderr
    assert complaint in result.stderr


# --- RBAC ---------------------------------------------------------------------------------------------


def test_no_wildcard_in_any_rbac_rule(default_render: list[Manifest]) -> None:
    roles = [m for m in default_render if m["kind"] in ("ClusterRole", "Role")]
    assert len(roles) >= 4
    for role in roles:
        for entry in role["rules"]:
            assert "nonResourceURLs" not in entry
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                values = entry.get(key, [])
                assert all(WILDCARD not in value for value in values), (role["metadata"]["name"], entry)


def test_controller_rbac_is_exactly_what_it_needs(default_render: list[Manifest]) -> None:
    cluster_role = only(default_render, "ClusterRole", "controller")
    assert rules_of(cluster_role) == sorted(
        [
            rule(names.GROUP, names.DOMAIN_PLURAL, "get list watch patch"),
            rule(names.GROUP, f"{names.DOMAIN_PLURAL}/status", "patch"),
            rule("resource.k8s.io", "resourceclaimtemplates", "get list watch create patch delete"),
            rule("resource.k8s.io", "resourceclaims", "get list watch"),
            rule("", "nodes", "get list watch patch"),
            rule("", "events", "create patch"),
            rule(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "get",
                (f"{names.DOMAIN_PLURAL}.{names.GROUP}", f"{names.CLIQUE_PLURAL}.{names.GROUP}"),
            ),
        ]
    )
    role = only(default_render, "Role", "controller")
    lease = f"{RELEASE}-computedomain-operator-controller"
    assert rules_of(role) == sorted(
        [
            rule("apps", "daemonsets", "get list watch create patch delete"),
            rule(names.GROUP, names.CLIQUE_PLURAL, "get list watch create patch delete"),
            rule("", "pods", "get list watch"),
            rule("coordination.k8s.io", "leases", "create"),
            rule("coordination.k8s.io", "leases", "get update", (lease,)),
        ]
    )
    controller = only(default_render, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(controller)["LEASE_NAME"]["value"] == lease


def test_node_agent_and_daemon_rbac(default_render: list[Manifest]) -> None:
    agent = only(default_render, "ClusterRole", "node-agent")
    assert rules_of(agent) == [rule("", "nodes", "get list watch patch")]
    # Events only in the agent's own namespace, where the DaemonSet tells it to post them.
    agent_role = only(default_render, "Role", "node-agent")
    assert agent_role["metadata"]["namespace"] == NAMESPACE
    assert rules_of(agent_role) == [rule("", "events", "create patch")]
    agent_pod = only(default_render, "DaemonSet", "node-agent")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(agent_pod)["POD_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    daemon_role = only(default_render, "Role", "imex-daemon")
    assert rules_of(daemon_role) == sorted(
        [rule(names.GROUP, names.CLIQUE_PLURAL, "get list watch"), rule("", "pods", "get patch")]
    )
    daemon_cluster_role = only(default_render, "ClusterRole", "imex-daemon")
    assert rules_of(daemon_cluster_role) == [rule("", "nodes", "get")]


def test_every_binding_grants_to_a_service_account_of_the_chart(default_render: list[Manifest]) -> None:
    accounts = {m["metadata"]["name"] for m in default_render if m["kind"] == "ServiceAccount"}
    assert names.DAEMON_SERVICE_ACCOUNT in accounts
    roles = {
        (m["kind"], m["metadata"]["name"]) for m in default_render if m["kind"] in ("Role", "ClusterRole")
    }
    bindings = [m for m in default_render if m["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    # Controller: ClusterRole + Role; IMEX daemon: Role + ClusterRole; node agent: ClusterRole.
    assert sorted((b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings) == sorted(roles)
    for binding in bindings:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        for subject in binding["subjects"]:
            assert subject == {"kind": "ServiceAccount", "name": subject["name"], "namespace": NAMESPACE}
            assert subject["name"] in accounts
    daemon_bindings = [
        b for b in bindings if any(s["name"] == names.DAEMON_SERVICE_ACCOUNT for s in b["subjects"])
    ]
    assert {b["kind"] for b in daemon_bindings} == {"RoleBinding", "ClusterRoleBinding"}


# --- DeviceClasses ------------------------------------------------------------------------------------


def expected_selectors() -> dict[str, str]:
    attributes = f"device.attributes['{names.DRIVER}']"
    driver = f"device.driver == '{names.DRIVER}'"
    return {
        names.DAEMON_DEVICE_CLASS: f"{driver} && {attributes}.type == 'daemon'",
        names.CHANNEL_DEVICE_CLASS: f"{driver} && {attributes}.type == 'channel' && {attributes}.id == 0",
    }


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (CLUSTER_V1, "resource.k8s.io/v1"),
        (CLUSTER_V1BETA2, "resource.k8s.io/v1beta2"),
        (CLUSTER_V1BETA1, "resource.k8s.io/v1beta1"),
        ((*CLUSTER_V1, "--set", "resourceApiVersion=v1beta1"), "resource.k8s.io/v1beta1"),
        ((*CLUSTER_V1BETA1, "--set", "resourceApiVersion=v1beta2"), "resource.k8s.io/v1beta2"),
    ],
    ids=["v1", "v1beta2", "v1beta1-only", "override-v1beta1", "override-v1beta2"],
)
def test_device_classes_use_the_highest_served_version(
    helm: Path, cluster: tuple[str, ...], expected: str
) -> None:
    classes = [m for m in render(helm, *cluster) if m["kind"] == "DeviceClass"]
    selectors = {c["metadata"]["name"]: c["spec"]["selectors"] for c in classes}
    assert {c["apiVersion"] for c in classes} == {expected}
    assert selectors == {name: [{"cel": {"expression": cel}}] for name, cel in expected_selectors().items()}


# --- controller -------------------------------------------------------------------------------------


def test_controller_pods_run_restricted(default_render: list[Manifest]) -> None:
    pod = only(default_render, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork")
    assert not pod.get("hostPID")
    assert all("hostPath" not in volume for volume in pod.get("volumes", []))
    for container in pod["containers"] + pod.get("initContainers", []):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not security.get("privileged", False)
        assert security.get("runAsNonRoot", True) is True


def test_controller_deployment(default_render: list[Manifest]) -> None:
    deployment = only(default_render, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["computedomain-controller"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert set(container["resources"]) == {"requests", "limits"}

    env = env_of(container)
    assert env["NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["IMAGE_NAME"]["value"] == container["image"] == "computedomain-operator:0.1.0"
    assert env["FEATURE_GATES"]["value"] == "ComputeDomainCliques=true,IMEXDaemonsWithDNSNames=true"
    assert env["MAX_NODES_PER_IMEX_DOMAIN"]["value"] == str(names.DEFAULT_MAX_NODES_PER_CLIQUE)
    for variable in ("LOG_VERBOSITY_CD_DAEMON", "CD_DAEMON_IMAGE_PULL_SECRET_NAMES", "LOG_FORMAT"):
        assert variable in env

    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"] == {
        "matchLabels": deployment["spec"]["selector"]["matchLabels"]
    }
    assert any(t.get("key") == "node-role.kubernetes.io/control-plane" for t in pod["tolerations"])


def test_metrics_service_selects_the_controller(default_render: list[Manifest]) -> None:
    service = only(default_render, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    labels = only(default_render, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_values_reach_the_controller(helm: Path) -> None:
    manifests = render(
        helm,
        *CLUSTER_V1,
        "--set",
        "image.repository=registry.example/cd",
        "--set",
        "image.tag=1.2.3",
        "--set",
        "imagePullSecrets={regcred,mirror}",
        "--set",
        "daemon.featureGates.ExtraGate=false",
        "--set",
        "daemon.maxNodesPerIMEXDomain=9",
        "--set",
        "logFormat=json",
    )
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["IMAGE_NAME"]["value"] == "registry.example/cd:1.2.3"
    assert env["CD_DAEMON_IMAGE_PULL_SECRET_NAMES"]["value"] == "regcred,mirror"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert env["FEATURE_GATES"]["value"] == (
        "ComputeDomainCliques=true,ExtraGate=false,IMEXDaemonsWithDNSNames=true"
    )
    assert env["MAX_NODES_PER_IMEX_DOMAIN"]["value"] == "9"
    assert env["LOG_FORMAT"]["value"] == "json"


# --- node agent ---------------------------------------------------------------------------------------


def test_node_agent_daemonset(default_render: list[Manifest]) -> None:
    pod = only(default_render, "DaemonSet", "node-agent")["spec"]["template"]["spec"]
    agent = pod["containers"][0]
    assert agent["command"] == ["computedomain-agent"]
    env = env_of(agent)
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["REQUIRE_NVML"]["value"] == "true"
    assert env["LD_LIBRARY_PATH"]["value"]

    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": names.GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]}]}
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]

    for container in pod["containers"] + pod["initContainers"]:
        security = container["securityContext"]
        assert security["privileged"] is False
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["driver-root"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["driver-root"]["hostPath"]["path"] == "/"


def test_node_agent_driver_root_and_switch(helm: Path) -> None:
    moved = render(helm, *CLUSTER_V1, "--set", "nodeAgent.driverRoot=/run/nvidia/driver")
    volumes = {
        v["name"]: v for v in only(moved, "DaemonSet", "node-agent")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["driver-root"]["hostPath"]["path"] == "/run/nvidia/driver"

    disabled = render(helm, *CLUSTER_V1, "--set", "nodeAgent.enabled=false")
    kinds = [(m["kind"], m["metadata"]["name"]) for m in disabled]
    assert not [k for k in kinds if "node-agent" in k[1]], kinds
    assert [name for kind, name in kinds if kind == "DaemonSet"] == [
        f"{RELEASE}-computedomain-operator-kubelet-plugin"
    ]


def test_node_agent_admission_policy(default_render: list[Manifest]) -> None:
    policy = only(default_render, "ValidatingAdmissionPolicy", "node-agent")
    binding = only(default_render, "ValidatingAdmissionPolicyBinding", "node-agent")
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}

    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}
    ]
    agent_account = only(default_render, "ServiceAccount", "node-agent")["metadata"]["name"]
    assert spec["matchConditions"][0]["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:{agent_account}"'
    )
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert variables["cliqueLabel"] == f"'{names.GPU_CLIQUE_LABEL}'"
    assert "authentication.kubernetes.io/node-name" in variables["agentNode"]
    expressions = [v["expression"] for v in spec["validations"]]
    assert "variables.agentNode == object.metadata.name" in expressions
    assert "size(variables.changedLabels) == 0" in expressions
    assert any("annotations" in e for e in expressions)
    assert any("object.spec == oldObject.spec" in e for e in expressions)
    for validation in spec["validations"]:
        assert validation.get("message") or validation.get("messageExpression")


def test_names_shared_with_the_operator_are_spelled_alike(default_render: list[Manifest]) -> None:
    text = "\n".join(str(value) for manifest in default_render for value in walk(manifest))
    assert names.DAEMON_SERVICE_ACCOUNT in text
    assert names.GPU_CLIQUE_LABEL in text
    assert names.GPU_PRESENT_LABEL in text
    assert names.GROUP in text


def test_imex_mode_reaches_the_controller_and_the_plugin(helm: Path) -> None:
    default = render(helm, *CLUSTER_V1)
    clique = render(helm, *CLUSTER_V1, "--set", "imex.mode=clique", "--set", "imex.channelPoolSize=3")

    for manifests, mode, pool in ((default, "domain", "2048"), (clique, "clique", "3")):
        controller = env_of(only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0])
        plugin_pod = only(manifests, "DaemonSet", "kubelet-plugin")["spec"]["template"]["spec"]
        plugin = env_of(plugin_pod["containers"][0])
        assert controller["IMEX_MODE"]["value"] == mode
        assert controller["IMEX_CHANNELS"]["value"] == pool
        assert plugin["IMEX_MODE"]["value"] == mode
