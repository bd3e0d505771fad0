"""The chart's values, rendered offline: NVIDIA's chart's names mapped onto ours, `global` for use as a
subchart, the controller's PodDisruptionBudget, priority classes, per-component scheduling values and
NOTES.txt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chartrender import (
    CHART,
    CLUSTER_V1,
    NAMESPACE,
    RELEASE,
    Manifest,
    env_of,
    only,
    render,
    run_template,
)

PLUGIN = "kubelet-plugin"
AGENT = "node-agent"
CONTROLLER_NAME = f"{RELEASE}-computedomain-operator-controller"
# The chart's own affinity of the GPU-node DaemonSets.
GPU_NODES = {
    "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]}
        ]
    }
}


def render_values(helm: Path, tmp_path: Path, values: dict[str, Any], *args: str) -> list[Manifest]:
    """The chart rendered with `values` given as a values file (as a user of NVIDIA's chart brings one)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(helm, *CLUSTER_V1, "-f", str(path), *args)


def refusal(helm: Path, tmp_path: Path, values: dict[str, Any]) -> str:
    """What `helm template` says when it refuses `values`; fails the test if it renders."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run_template(helm, *CLUSTER_V1, "-f", str(path))
    assert result.returncode != 0, f"{values} was accepted"
    return result.stderr


def pod_of(manifests: list[Manifest], kind: str, name_part: str = "") -> Manifest:
    spec: Manifest = only(manifests, kind, name_part)["spec"]["template"]["spec"]
    return spec


def controller_env(manifests: list[Manifest]) -> dict[str, str]:
    return {
        n: e.get("value", "") for n, e in env_of(pod_of(manifests, "Deployment")["containers"][0]).items()
    }


def plugin_env(manifests: list[Manifest]) -> dict[str, str]:
    return {
        n: e.get("value", "")
        for n, e in env_of(pod_of(manifests, "DaemonSet", PLUGIN)["containers"][0]).items()
    }


def volumes_of(pod: Manifest) -> dict[str, str]:
    return {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}


# --- NVIDIA's names ------------------------------------------------------------------------------------

Check = Callable[[list[Manifest]], None]


def driver_root_moved(manifests: list[Manifest]) -> None:
    assert volumes_of(pod_of(manifests, "DaemonSet", AGENT))["driver-root"] == "/run/nvidia/driver"
    assert volumes_of(pod_of(manifests, "DaemonSet", PLUGIN))["driver-root"] == "/run/nvidia/driver"
    assert plugin_env(manifests)["HOST_DRIVER_ROOT"] == "/run/nvidia/driver"


def daemon_verbosity_6(manifests: list[Manifest]) -> None:
    assert controller_env(manifests)["LOG_VERBOSITY_CD_DAEMON"] == "6"


def gates_merged(manifests: list[Manifest]) -> None:
    assert controller_env(manifests)["FEATURE_GATES"] == (
        "ComputeDomainCliques=true,IMEXDaemonsWithDNSNames=true,NVMLDeviceHealthCheck=true"
    )


def lease_timings(manifests: list[Manifest]) -> None:
    env = controller_env(manifests)
    assert (env["LEASE_DURATION_SECONDS"], env["RENEW_DEADLINE_SECONDS"], env["RETRY_PERIOD_SECONDS"]) == (
        "90",
        "30",
        "1.5",
    )


def controller_env_mapped(manifests: list[Manifest]) -> None:
    env = controller_env(manifests)
    assert env["MAX_NODES_PER_IMEX_DOMAIN"] == "9"
    assert env["LOG_LEVEL"] == "DEBUG"
    container = pod_of(manifests, "Deployment")["containers"][0]
    names_in_order = [entry["name"] for entry in container["env"]]
    # Moved onto its value, not repeated; an empty ADDITIONAL_NAMESPACES asks for nothing and is dropped.
    assert names_in_order.count("MAX_NODES_PER_IMEX_DOMAIN") == 1
    assert "ADDITIONAL_NAMESPACES" not in names_in_order
    assert names_in_order[-1] == "LOG_LEVEL"


def controller_resources(manifests: list[Manifest]) -> None:
    assert pod_of(manifests, "Deployment")["containers"][0]["resources"] == {"requests": {"cpu": "200m"}}


def plugin_container_mapped(manifests: list[Manifest]) -> None:
    container = pod_of(manifests, "DaemonSet", PLUGIN)["containers"][0]
    assert container["env"][-1] == {"name": "FOO", "value": "bar"}
    assert container["resources"] == {"limits": {"memory": "1Gi"}}


def kubelet_root_moved(manifests: list[Manifest]) -> None:
    volumes = volumes_of(pod_of(manifests, "DaemonSet", PLUGIN))
    assert volumes["plugins-registry"] == "/var/lib/k0s/kubelet/plugins_registry"
    assert volumes["plugin-dir"] == "/var/lib/k0s/kubelet/plugins/compute-domain.nvidia.com"
    assert plugin_env(manifests)["KUBELET_ROOT_DIR"] == "/var/lib/k0s/kubelet"


def proc_devices_mounted(manifests: list[Manifest]) -> None:
    pod = pod_of(manifests, "DaemonSet", PLUGIN)
    assert volumes_of(pod)["proc-devices"] == "/var/lib/nvml-mock/proc-devices"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["proc-devices"] == {
        "name": "proc-devices",
        "mountPath": "/host-proc-devices",
        "readOnly": True,
    }
    assert plugin_env(manifests)["PROC_DEVICES"] == "/host-proc-devices"


def pull_secret_objects(manifests: list[Manifest]) -> None:
    assert controller_env(manifests)["CD_DAEMON_IMAGE_PULL_SECRET_NAMES"] == "regcred,mirror"
    for pod in (pod_of(manifests, "Deployment"), pod_of(manifests, "DaemonSet", PLUGIN)):
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]


def full_api_version(manifests: list[Manifest]) -> None:
    classes = [m for m in manifests if m["kind"] == "DeviceClass"]
    assert {c["apiVersion"] for c in classes} == {"resource.k8s.io/v1beta2"}


NVIDIA_NAMES: list[tuple[str, dict[str, Any], Check]] = [
    ("nvidiaDriverRoot", {"nvidiaDriverRoot": "/run/nvidia/driver"}, driver_root_moved),
    ("logVerbosity", {"logVerbosity": "6"}, daemon_verbosity_6),
    ("featureGates", {"featureGates": {"NVMLDeviceHealthCheck": True}}, gates_merged),
    (
        "leaderElection-durations",
        {
            "controller": {
                "leaderElection": {"leaseDuration": "1m30s", "renewDeadline": "30s", "retryPeriod": "1500ms"}
            }
        },
        lease_timings,
    ),
    (
        "controller-env",
        {
            "controller": {
                "containers": {
                    "computeDomain": {
                        "env": [
                            {"name": "MAX_NODES_PER_IMEX_DOMAIN", "value": "9"},
                            {"name": "ADDITIONAL_NAMESPACES", "value": ""},
                            {"name": "LOG_LEVEL", "value": "DEBUG"},
                        ]
                    }
                }
            }
        },
        controller_env_mapped,
    ),
    (
        "controller-resources",
        {"controller": {"containers": {"computeDomain": {"resources": {"requests": {"cpu": "200m"}}}}}},
        controller_resources,
    ),
    (
        "plugin-container",
        {
            "kubeletPlugin": {
                "containers": {
                    "computeDomains": {
                        "env": [{"name": "FOO", "value": "bar"}],
                        "resources": {"limits": {"memory": "1Gi"}},
                    }
                }
            }
        },
        plugin_container_mapped,
    ),
    (
        "kubelet-directories",
        {
            "kubeletPlugin": {
                "kubeletRegistrarDirectoryPath": "/var/lib/k0s/kubelet/plugins_registry",
                "kubeletPluginsDirectoryPath": "/var/lib/k0s/kubelet/plugins/",
            }
        },
        kubelet_root_moved,
    ),
    ("altProcDevices", {"altProcDevices": "/var/lib/nvml-mock/proc-devices"}, proc_devices_mounted),
    (
        "imagePullSecrets-objects",
        {"imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}]},
        pull_secret_objects,
    ),
    ("resourceApiVersion-full", {"resourceApiVersion": "resource.k8s.io/v1beta2"}, full_api_version),
]


@pytest.mark.parametrize(
    ("values", "check"), [(v, c) for _, v, c in NVIDIA_NAMES], ids=[i for i, _, _ in NVIDIA_NAMES]
)
def test_nvidia_name_alone_reaches_ours(
    helm: Path, tmp_path: Path, values: dict[str, Any], check: Check
) -> None:
    """Each of NVIDIA's names, given alone, does what our own value does."""
    check(render_values(helm, tmp_path, values))


def test_ours_wins_where_set_beside_nvidia_names(helm: Path, tmp_path: Path) -> None:
    """Where ours is set to anything but its default, NVIDIA's spelling of it is ignored."""
    rendered = render_values(
        helm,
        tmp_path,
        {
            "nvidiaDriverRoot": "/run/nvidia/driver",
            "nodeAgent": {"driverRoot": "/opt/driver"},
            "logVerbosity": "6",
            "daemon": {"logVerbosity": 2, "maxNodesPerIMEXDomain": 4, "featureGates": {"Extra": False}},
            "featureGates": {"Extra": True, "Other": True},
            "controller": {
                "leaderElection": {"leaseDurationSeconds": 20, "leaseDuration": "1m", "retryPeriod": "1s"},
                "env": [{"name": "OURS", "value": "1"}],
                "containers": {
                    "computeDomain": {
                        "env": [
                            {"name": "MAX_NODES_PER_IMEX_DOMAIN", "value": "9"},
                            {"name": "THEIRS", "value": "1"},
                        ]
                    }
                },
            },
            "kubeletPlugin": {
                "kubeletRootDir": "/data/kubelet",
                "kubeletRegistrarDirectoryPath": "/var/lib/k0s/kubelet/plugins_registry",
            },
        },
    )
    # Ours where set; NVIDIA's only where ours was left at its default.
    assert volumes_of(pod_of(rendered, "DaemonSet", AGENT))["driver-root"] == "/opt/driver"
    assert volumes_of(pod_of(rendered, "DaemonSet", PLUGIN))["driver-root"] == "/run/nvidia/driver"
    assert plugin_env(rendered)["KUBELET_ROOT_DIR"] == "/data/kubelet"
    env = controller_env(rendered)
    assert env["LOG_VERBOSITY_CD_DAEMON"] == "2"
    assert env["MAX_NODES_PER_IMEX_DOMAIN"] == "4"
    assert env["FEATURE_GATES"] == (
        "ComputeDomainCliques=true,Extra=false,IMEXDaemonsWithDNSNames=true,Other=true"
    )
    assert (env["LEASE_DURATION_SECONDS"], env["RETRY_PERIOD_SECONDS"]) == ("20", "1")
    # Lists are joined, NVIDIA's first: ours comes later and wins where a name repeats.
    container = pod_of(rendered, "Deployment")["containers"][0]
    assert [e["name"] for e in container["env"]][-2:] == ["THEIRS", "OURS"]


def test_values_file_for_nvidia_chart_renders(helm: Path, tmp_path: Path) -> None:
    """A ComputeDomain-only values file for NVIDIA's chart, with the values that mean nothing here,
    renders: those are accepted and ignored, the others land where ours would."""
    nvidia = {
        "nvidiaDriverRoot": "/run/nvidia/driver",
        "nvidiaCDIHookPath": "/usr/local/bin/nvidia-cdi-hook",
        "nameOverride": "",
        "fullnameOverride": "",
        "namespaceOverride": NAMESPACE,
        "selectorLabelsOverride": {},
        "gpuResourcesEnabledOverride": False,
        "consumableShares": "",
        "allowDefaultNamespace": False,
        "resourceApiVersion": "",
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {
            "repository": "registry.example/computedomain-operator",
            "pullPolicy": "Always",
            "tag": "1.2.3",
        },
        "serviceAccount": {"create": True, "annotations": {}, "name": ""},
        "resources": {
            "gpus": {"enabled": False},
            "computeDomains": {
                "enabled": True,
                "imex": {
                    "mode": "driverManaged",
                    "isolation": "domain",
                    "hostSocketPath": "/etc/nvidia-imex/x",
                },
            },
        },
        "featureGates": {},
        "logVerbosity": "4",
        "webhook": {"enabled": False, "replicas": 1, "tls": {"mode": "cert-manager"}},
        "controller": {
            "replicas": 3,
            "leaderElection": {
                "enabled": True,
                "leaseDuration": "15s",
                "renewDeadline": "10s",
                "retryPeriod": "2s",
            },
            "metrics": {
                "enabled": True,
                "httpEndpoint": ":8080",
                "metricsPath": "/metrics",
                "profilePath": "",
            },
            "priorityClassName": "system-node-critical",
            "podAnnotations": {"team": "gpu"},
            "podSecurityContext": {},
            "nodeSelector": {},
            "tolerations": [
                {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": {"computeDomain": {"securityContext": {}, "env": [], "resources": {}}},
            "affinity": {},
            "networkPolicy": {"enabled": False},
        },
        "kubeletPlugin": {
            "metrics": {
                "enabled": True,
                "gpuHttpEndpoint": ":8080",
                "computeDomainHttpEndpoint": ":8081",
                "metricsPath": "/metrics",
            },
            "priorityClassName": "system-node-critical",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "podAnnotations": {},
            "podSecurityContext": {},
            "nodeSelector": {},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "kubeletRegistrarDirectoryPath": "/var/lib/kubelet/plugins_registry",
            "kubeletPluginsDirectoryPath": "/var/lib/kubelet/plugins",
            "containers": {
                "init": {"securityContext": {}, "resources": {}},
                "computeDomains": {
                    "env": [],
                    "securityContext": {"privileged": True},
                    "resources": {},
                    "healthcheckPort": 51515,
                    "gpuCliqueLabelEnabled": False,
                },
                "gpus": {
                    "env": [],
                    "securityContext": {"privileged": True},
                    "resources": {},
                    "healthcheckPort": 51516,
                },
            },
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "feature.node.kubernetes.io/pci-10de.present",
                                        "operator": "In",
                                        "values": ["true"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            "networkPolicy": {"enabled": False},
        },
    }
    rendered = render_values(helm, tmp_path, nvidia)
    assert only(rendered, "Deployment")["spec"]["replicas"] == 3
    controller = pod_of(rendered, "Deployment")
    assert controller["priorityClassName"] == "system-node-critical"
    assert controller["imagePullSecrets"] == [{"name": "regcred"}]
    assert only(rendered, "Deployment")["spec"]["template"]["metadata"]["annotations"] == {"team": "gpu"}
    env = controller_env(rendered)
    assert (env["LEASE_DURATION_SECONDS"], env["RENEW_DEADLINE_SECONDS"], env["RETRY_PERIOD_SECONDS"]) == (
        "15",
        "10",
        "2",
    )
    assert env["IMAGE_NAME"] == "registry.example/computedomain-operator:1.2.3"
    plugin = only(rendered, "DaemonSet", PLUGIN)
    assert plugin["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "100%"}
    terms = plugin["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert (
        terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][
            0
        ]["key"]
        == "feature.node.kubernetes.io/pci-10de.present"
    )
    # Ignored, not carried over: the plugin stays unprivileged and has no NVIDIA health port.
    container = plugin["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["privileged"] is False
    assert 51515 not in [p["containerPort"] for p in container.get("ports", [])]
    assert volumes_of(pod_of(rendered, "DaemonSet", AGENT))["driver-root"] == "/run/nvidia/driver"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"resources": {"gpus": {"enabled": True}}}, "installs ComputeDomains only"),
        ({"resources": {"computeDomains": {"enabled": False}}}, "ComputeDomains are all this chart installs"),
        (
            {"resources": {"computeDomains": {"imex": {"mode": "hostManaged"}}}},
            "runs the IMEX daemons itself",
        ),
        ({"resources": {"computeDomains": {"imex": {"isolation": "channel"}}}}, "imex.mode=clique"),
        ({"namespaceOverride": "elsewhere"}, "--namespace elsewhere"),
        ({"serviceAccount": {"create": False}}, "a ServiceAccount each"),
        ({"serviceAccount": {"name": "mine"}}, "a ServiceAccount each"),
        ({"controller": {"networkPolicy": {"enabled": True}}}, "renders no NetworkPolicy"),
        ({"kubeletPlugin": {"networkPolicy": {"enabled": True}}}, "renders no NetworkPolicy"),
        (
            {"image": {"repository": "registry.k8s.io/dra-driver-nvidia/dra-driver-nvidia-gpu"}},
            "NVIDIA's driver image",
        ),
        ({"image": {"repository": "nvcr.io/nvidia/k8s-dra-driver-gpu"}}, "NVIDIA's driver image"),
        (
            {
                "controller": {
                    "containers": {
                        "computeDomain": {"env": [{"name": "ADDITIONAL_NAMESPACES", "value": "old"}]}
                    }
                }
            },
            "does not take: it keeps every IMEX DaemonSet in its own namespace",
        ),
        ({"featureGates": {"ComputeDomainCliques": False}}, "ComputeDomainCliques=false is refused"),
        (
            {"kubeletPlugin": {"kubeletPluginsDirectoryPath": "/var/lib/kubelet/dra"}},
            "does not end in /plugins",
        ),
        (
            {
                "kubeletPlugin": {
                    "kubeletRegistrarDirectoryPath": "/a/plugins_registry",
                    "kubeletPluginsDirectoryPath": "/b/plugins",
                }
            },
            "in different kubelet roots",
        ),
        (
            {"controller": {"leaderElection": {"leaseDuration": "5s"}}},
            "leaseDuration > renewDeadline > retryPeriod",
        ),
        (
            {
                "controller": {
                    "containers": {
                        "computeDomain": {"env": [{"name": "MAX_NODES_PER_IMEX_DOMAIN", "value": "0"}]}
                    }
                }
            },
            "from 1 to 9999",
        ),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else "",
)
def test_nvidia_values_that_would_surprise_are_refused(
    helm: Path, tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    """Values of NVIDIA's chart that have no meaning here, or are wrong here, fail with an explanation."""
    assert complaint in refusal(helm, tmp_path, values)


# --- the values schema ---------------------------------------------------------------------------------


def test_global_is_accepted(helm: Path) -> None:
    """`global`, whatever it holds, passes the schema."""
    render(
        helm, *CLUSTER_V1, "--set", "global.imageRegistry=registry.example", "--set", "global.labels.team=gpu"
    )


def test_works_as_a_subchart(helm: Path, tmp_path: Path) -> None:
    """A parent chart with globals of its own installs this one: Helm hands the subchart `global`."""
    parent = tmp_path / "parent"
    shutil.copytree(CHART, parent / "charts" / CHART.name)
    (parent / "Chart.yaml").write_text("apiVersion: v2\nname: parent\nversion: 0.1.0\n")
    (parent / "values.yaml").write_text(
        yaml.safe_dump(
            {"global": {"imageRegistry": "registry.example"}, CHART.name: {"controller": {"replicas": 3}}}
        )
    )
    command = [str(helm), "template", RELEASE, str(parent), "--namespace", NAMESPACE, *CLUSTER_V1]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert only(manifests, "Deployment")["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("global=1", "global"),
        ("nvidiaDriverroot=/x", "nvidiaDriverroot"),
        ("controller.leaderElection.leaseDurationSecs=20", "leaseDurationSecs"),
        ("controller.leaderElection.leaseDuration=15", "leaseDuration"),
        ("controller.containers.computeDomain.evn[0].name=X", "evn"),
        ("controller.containers.webhook.env[0].name=X", "webhook"),
        ("kubeletPlugin.containers.computeDomains.healthCheckPort=1", "healthCheckPort"),
        ("kubeletPlugin.updateStrategy.type=Recreate", "type"),
        ("nodeAgent.affinity.nodeAfinity.x=1", "nodeAfinity"),
        ("controller.podDisruptionBudget.maxUnavailable=1", "maxUnavailable"),
        ("resources.gpu.enabled=false", "gpu"),
        ("resources.computeDomains.imex.mode=host", "mode"),
        ("logVerbosity=11", "logVerbosity"),
        ("serviceAccount.automount=true", "automount"),
    ],
)
def test_schema_still_rejects_typos(helm: Path, setting: str, complaint: str) -> None:
    """Beside NVIDIA's names, a misspelt or mistyped value still fails the schema, naming the value."""
    result = run_template(helm, *CLUSTER_V1, "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "schema" in result.stderr
    assert complaint in result.stderr


def test_name_overrides(helm: Path) -> None:
    """nameOverride and fullnameOverride rename the release's objects (and the Lease); the names the
    ComputeDomain API fixes stay."""
    renamed = render(helm, *CLUSTER_V1, "--set", "nameOverride=imex-operator")
    assert only(renamed, "Deployment")["metadata"]["name"] == f"{RELEASE}-imex-operator-controller"
    selector = only(renamed, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/name"] == "imex-operator"
    full = render(helm, *CLUSTER_V1, "--set", "fullnameOverride=imex")
    assert only(full, "Deployment")["metadata"]["name"] == "imex-controller"
    assert controller_env(full)["LEASE_NAME"] == "imex-controller"
    assert {"compute-domain-daemon.nvidia.com", "compute-domain-default-channel.nvidia.com"} == {
        m["metadata"]["name"] for m in full if m["kind"] == "DeviceClass"
    }


# --- PodDisruptionBudget and priority classes ----------------------------------------------------------


def test_controller_budget_keeps_one_replica(default_render: list[Manifest]) -> None:
    """With two replicas, a budget keeps one through voluntary disruptions and selects exactly the
    controller's pods."""
    budget = only(default_render, "PodDisruptionBudget")
    assert budget["metadata"]["name"] == CONTROLLER_NAME
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in budget["spec"]
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    deployment = only(default_render, "Deployment")
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    others = [m for m in default_render if m["kind"] == "DaemonSet"]
    for daemonset in others:
        labels = daemonset["spec"]["template"]["metadata"]["labels"]
        assert not budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize(
    "settings",
    [
        ("controller.replicas=1",),
        ("controller.replicas=0",),
        ("controller.replicas=1", "controller.leaderElection.enabled=false"),
        ("controller.podDisruptionBudget.enabled=false",),
    ],
)
def test_no_budget_where_it_would_block_drains(helm: Path, settings: tuple[str, ...]) -> None:
    """One replica (or none, or the budget turned off): no budget, which would block its node's drains."""
    args = [arg for setting in settings for arg in ("--set", setting)]
    assert not [m for m in render(helm, *CLUSTER_V1, *args) if m["kind"] == "PodDisruptionBudget"]


def test_budget_never_holds_every_replica(helm: Path) -> None:
    """A budget that would keep every replica (no eviction ever allowed) is refused; below that it is
    rendered as given."""
    refused = run_template(helm, *CLUSTER_V1, "--set", "controller.podDisruptionBudget.minAvailable=2")
    assert refused.returncode != 0
    assert "minAvailable must be below controller.replicas" in refused.stderr
    three = render(
        helm,
        *CLUSTER_V1,
        "--set",
        "controller.replicas=3",
        "--set",
        "controller.podDisruptionBudget.minAvailable=2",
    )
    assert only(three, "PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_priority_classes(default_render: list[Manifest], helm: Path) -> None:
    """Node-critical for the pods tied to their node, cluster-critical for the controller; the IMEX daemons'
    class reaches the controller, which renders them."""
    assert pod_of(default_render, "Deployment")["priorityClassName"] == "system-cluster-critical"
    assert pod_of(default_render, "DaemonSet", PLUGIN)["priorityClassName"] == "system-node-critical"
    assert pod_of(default_render, "DaemonSet", AGENT)["priorityClassName"] == "system-node-critical"
    assert controller_env(default_render)["DAEMON_PRIORITY_CLASS"] == ""
    none = render(
        helm,
        *CLUSTER_V1,
        "--set",
        "controller.priorityClassName=",
        "--set",
        "kubeletPlugin.priorityClassName=",
        "--set",
        "nodeAgent.priorityClassName=",
        "--set",
        "daemon.priorityClassName=imex-critical",
    )
    for pod in (
        pod_of(none, "Deployment"),
        pod_of(none, "DaemonSet", PLUGIN),
        pod_of(none, "DaemonSet", AGENT),
    ):
        assert "priorityClassName" not in pod
    assert controller_env(none)["DAEMON_PRIORITY_CLASS"] == "imex-critical"


def test_the_imex_daemons_pod_annotations_reach_the_controller(
    default_render: list[Manifest], helm: Path
) -> None:
    """The controller renders the IMEX daemons: their pod annotations travel to it as one JSON
    setting, and none is set by default."""
    assert "DAEMON_POD_ANNOTATIONS" not in controller_env(default_render)
    annotated = render(
        helm, *CLUSTER_V1, "--set-string", "daemon.podAnnotations.sidecar\\.istio\\.io/inject=false"
    )
    assert json.loads(controller_env(annotated)["DAEMON_POD_ANNOTATIONS"]) == {
        "sidecar.istio.io/inject": "false"
    }
    refused = run_template(helm, *CLUSTER_V1, "--set", "daemon.podAnnotations.team=7")
    assert refused.returncode != 0


# --- per-component scheduling values -------------------------------------------------------------------

COMPONENTS = [
    ("controller", "Deployment", ""),
    ("kubeletPlugin", "DaemonSet", PLUGIN),
    ("nodeAgent", "DaemonSet", AGENT),
]


@pytest.mark.parametrize(("key", "kind", "name_part"), COMPONENTS, ids=[c[0] for c in COMPONENTS])
def test_scheduling_values_per_component(
    helm: Path, tmp_path: Path, key: str, kind: str, name_part: str
) -> None:
    """nodeSelector, tolerations, affinity (each kind given replaces the chart's own, the others stay),
    podAnnotations, resources and priorityClassName reach the component's pods."""
    affinity = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {"matchLabels": {"a": "b"}}},
                }
            ]
        }
    }
    values = {
        key: {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "imex", "effect": "NoExecute"}
            ],
            "affinity": affinity,
            "podAnnotations": {"example.com/owner": "team-a"},
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "priorityClassName": "imex-critical",
        }
    }
    rendered = render_values(helm, tmp_path, values)
    workload = only(rendered, kind, name_part)
    pod = workload["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == values[key]["tolerations"]
    assert pod["affinity"]["podAffinity"] == affinity["podAffinity"]
    if key == "controller":
        # The chart's own spreading of the replicas stays beside the given kind.
        assert "podAntiAffinity" in pod["affinity"]
    else:
        assert pod["affinity"]["nodeAffinity"] == GPU_NODES
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/owner"] == "team-a"
    assert pod["containers"][0]["resources"] == values[key]["resources"]
    assert pod["priorityClassName"] == "imex-critical"

    # A nodeAffinity given replaces the chart's own.
    mine = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "Exists"}]}]
        }
    }
    replaced = render_values(helm, tmp_path, {key: {"affinity": {"nodeAffinity": mine}}})
    assert pod_of(replaced, kind, name_part)["affinity"]["nodeAffinity"] == mine


def test_update_strategies(default_render: list[Manifest], helm: Path, tmp_path: Path) -> None:
    """Each component's update strategy is the chart's own by default and the given one otherwise; a
    type other than RollingUpdate drops the default rollingUpdate, which the API would refuse."""
    assert only(default_render, "DaemonSet", PLUGIN)["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    assert only(default_render, "DaemonSet", AGENT)["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "100%"},
    }
    assert "strategy" not in only(default_render, "Deployment")["spec"]
    rendered = render_values(
        helm,
        tmp_path,
        {
            "controller": {"strategy": {"type": "Recreate"}},
            "kubeletPlugin": {"updateStrategy": {"type": "OnDelete"}},
            "nodeAgent": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}
            },
        },
    )
    assert only(rendered, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert only(rendered, "DaemonSet", PLUGIN)["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert only(rendered, "DaemonSet", AGENT)["spec"]["updateStrategy"]["rollingUpdate"] == {
        "maxUnavailable": "10%"
    }


def test_pod_annotations_keep_the_metrics_ones(helm: Path) -> None:
    """podAnnotations add to the plugin's pod annotations; the chart's prometheus.io ones stay as they are."""
    rendered = render(
        helm,
        *CLUSTER_V1,
        "--set",
        "kubeletPlugin.podAnnotations.team=gpu",
        "--set-string",
        "kubeletPlugin.podAnnotations.prometheus\\.io/port=9",
    )
    annotations = only(rendered, "DaemonSet", PLUGIN)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["team"] == "gpu"
    assert annotations["prometheus.io/port"] == "8080"


def test_daemon_values_reach_the_controller(helm: Path) -> None:
    """The IMEX daemon pods are the controller's to render: their priority class and resources reach it."""
    env = controller_env(
        render(
            helm,
            *CLUSTER_V1,
            "--set",
            "daemon.resources.requests.cpu=50m",
            "--set",
            "daemon.resources.requests.memory=100Mi",
            "--set",
            "daemon.resources.limits.memory=1Gi",
        )
    )
    assert (env["DAEMON_CPU_REQUEST"], env["DAEMON_MEMORY_REQUEST"], env["DAEMON_MEMORY_LIMIT"]) == (
        "50m",
        "100Mi",
        "1Gi",
    )


# --- NOTES.txt -----------------------------------------------------------------------------------------


def notes(helm: Path, tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it, from a client-side dry run (no cluster)."""
    command = [
        str(helm),
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "-o",
        "json",
        *args,
    ]
    env = {
        **os.environ,
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
    }
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, result.stderr
    text: str = json.loads(result.stdout)["info"]["notes"]
    return text


def test_notes_cover_every_component(helm: Path, tmp_path: Path) -> None:
    """NOTES.txt names what was installed, how to check each part, the kubectl plugin and the metrics."""
    text = notes(helm, tmp_path)
    prefix = f"{RELEASE}-computedomain-operator"
    for line in (
        f"kubectl -n {NAMESPACE} rollout status deployment/{prefix}-controller",
        f"kubectl -n {NAMESPACE} get lease {prefix}-controller",
        f"PodDisruptionBudget {prefix}-controller",
        f"kubectl -n {NAMESPACE} rollout status daemonset/{prefix}-kubelet-plugin",
        "kubectl get resourceslices --field-selector spec.driver=compute-domain.nvidia.com",
        f"kubectl -n {NAMESPACE} rollout status daemonset/{prefix}-node-agent",
        "-L nvidia.com/gpu.clique",
        "DaemonSet computedomain-daemon-<domain UID>",
        f"kubectl -n {NAMESPACE} get daemonsets,pods -l resource.nvidia.com/computeDomain",
        "kubectl computedomain status NAME",
        "kubectl computedomain why NAME",
        f"--operator-namespace {NAMESPACE}",
        f"Service {prefix}-controller-metrics",
        "/metrics",
        "compute-domain-default-channel.nvidia.com",
        "kubectl apply --server-side -f",
    ):
        assert line in text, f"NOTES.txt lacks {line!r}:\n{text}"

    other = notes(
        helm,
        tmp_path,
        "--set",
        "imex.mode=clique",
        "--set",
        "nodeAgent.enabled=false",
        "--set",
        "kubeletPlugin.enabled=false",
        "--set",
        "controller.replicas=1",
    )
    assert "DaemonSet computedomain-clique-daemons" in other
    assert "-l resource.nvidia.com/imexDaemons=clique" in other
    assert "No kubelet plugin (kubeletPlugin.enabled=false)" in other
    assert "No node agent (nodeAgent.enabled=false)" in other
    assert "rollout status daemonset" not in other
    assert "PodDisruptionBudget" not in other
