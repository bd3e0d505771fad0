"""The chart's kubelet plugin and the IMEX daemons' admission policy, rendered offline."""

from __future__ import annotations

from pathlib import Path

from computedomain.api import names
from support.chartrender import (
    CLUSTER_V1,
    NAMESPACE,
    Manifest,
    env_of,
    only,
    render,
    rule,
    rules_of,
    run_template,
)

PLUGIN = "kubelet-plugin"


def test_kubelet_plugin_rbac_is_exactly_what_it_needs(default_render: list[Manifest]) -> None:
    cluster_role = only(default_render, "ClusterRole", PLUGIN)
    assert rules_of(cluster_role) == sorted(
        [
            rule("resource.k8s.io", "resourceslices", "get list watch create update patch delete"),
            rule("resource.k8s.io", "resourceclaims", "get"),
            rule(names.GROUP, names.DOMAIN_PLURAL, "get list"),
            rule("", "nodes", "get"),
            rule("", "events", "create patch"),
        ]
    )
    assert rules_of(only(default_render, "Role", PLUGIN)) == [rule("", "pods", "list watch")]


def test_kubelet_plugin_reads_clique_objects_only_in_clique_mode(helm: Path) -> None:
    clique = render(helm, *CLUSTER_V1, "--set", "imex.mode=clique")
    assert rules_of(only(clique, "Role", PLUGIN)) == sorted(
        [rule("", "pods", "list watch"), rule(names.GROUP, names.CLIQUE_PLURAL, "get patch")]
    )


def test_kubelet_plugin_daemonset(default_render: list[Manifest]) -> None:
    daemonset = only(default_render, "DaemonSet", PLUGIN)
    assert daemonset["metadata"]["namespace"] == NAMESPACE
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == only(default_render, "ServiceAccount", PLUGIN)["metadata"]["name"]
    container = pod["containers"][0]
    assert container["command"] == ["computedomain-kubelet-plugin"]
    env = env_of(container)
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["KUBELET_ROOT_DIR"]["value"] == "/var/lib/kubelet"
    # Fewer malloc arenas: the plugin runs on every GPU node, where each resident MiB counts.
    assert env["MALLOC_ARENA_MAX"]["value"] == "2"
    # The kubelet dials the socket path the plugin reports, so host paths keep their names inside.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    for name in ("plugins-registry", "plugin-dir", "cdi", "state"):
        assert mounts[name] == volumes[name]
    assert volumes["plugins-registry"] == "/var/lib/kubelet/plugins_registry"
    assert volumes["plugin-dir"] == "/var/lib/kubelet/plugins/compute-domain.nvidia.com"
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_kubelet_plugin_paths_and_switch(helm: Path) -> None:
    moved = render(
        helm,
        *CLUSTER_V1,
        "--set",
        "kubeletPlugin.kubeletRootDir=/data/kubelet",
        "--set",
        "kubeletPlugin.cdiRoot=/etc/cdi",
    )
    pod = only(moved, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert volumes["plugins-registry"] == "/data/kubelet/plugins_registry"
    assert volumes["cdi"] == "/etc/cdi"
    off = render(helm, *CLUSTER_V1, "--set", "kubeletPlugin.enabled=false")
    assert not [m for m in off if PLUGIN in m["metadata"]["name"]]


def test_kubelet_plugin_admission_policy(default_render: list[Manifest]) -> None:
    policy = only(default_render, "ValidatingAdmissionPolicy", PLUGIN)
    binding = only(default_render, "ValidatingAdmissionPolicyBinding", PLUGIN)
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"][0]["resources"] == ["resourceslices"]
    account = only(default_render, "ServiceAccount", PLUGIN)["metadata"]["name"]
    assert f"system:serviceaccount:{NAMESPACE}:{account}" in spec["matchConditions"][0]["expression"]
    expressions = " ".join(v["expression"] for v in spec["validations"])
    assert "variables.sliceNode == variables.pluginNode" in expressions
    assert names.DRIVER in expressions


def test_imex_daemon_admission_policy(default_render: list[Manifest]) -> None:
    policy = only(default_render, "ValidatingAdmissionPolicy", "imex-daemon")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert (
        f"system:serviceaccount:{NAMESPACE}:{names.DAEMON_SERVICE_ACCOUNT}"
        in spec["matchConditions"][0]["expression"]
    )
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert variables["cliqueLabel"] == f"'{names.CLIQUE_LABEL}'"
    assert "authentication.kubernetes.io/pod-name" in variables["ownPod"]
    for validation in spec["validations"]:
        assert validation.get("message") or validation.get("messageExpression")


def test_extra_env_follows_the_chart_own(helm: Path) -> None:
    rendered = render(
        helm,
        *CLUSTER_V1,
        "--set",
        "kubeletPlugin.env[0].name=PROC_DEVICES",
        "--set",
        "kubeletPlugin.env[0].value=/driver-root/proc/devices",
        "--set",
        "nodeAgent.env[0].name=EXTRA",
        "--set",
        "nodeAgent.env[0].value=1",
    )
    plugin = only(rendered, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]["containers"][0]
    assert env_of(plugin)["PROC_DEVICES"]["value"] == "/driver-root/proc/devices"
    # After the chart's own variables: where a name repeats, the later one wins in Kubernetes.
    assert plugin["env"][-1]["name"] == "PROC_DEVICES"
    agent = only(rendered, "DaemonSet", "node-agent")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(agent)["EXTRA"]["value"] == "1"
    refused = run_template(helm, *CLUSTER_V1, "--set", "kubeletPlugin.env[0].value=x")
    assert refused.returncode != 0
    assert "name" in refused.stderr
