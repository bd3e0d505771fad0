"""What a real-container node of the test bed is told (pure rendering): containerd's configuration,
the node's CNI network, its mounts, and the bed's network namespace and chart values."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

from cdtestbed.containerbed import fake_gpus, helm_values
from cdtestbed.netns import SERVICE_IP, holder_script
from cdtestbed.runtime_config import (
    PAUSE_IMAGE,
    ContainerdPaths,
    NodeNetwork,
    cni_conflist,
    containerd_config,
    node_script,
)
from cdtestbed.topology import nvl72_racks, plain_gpu_nodes

PATHS = ContainerdPaths(Path("/tmp/cdk-x/node/containerd"))


def _config() -> dict[str, object]:
    text = containerd_config(
        PATHS, Path("/tools/bin/runc"), Path("/tools/cni/bin"), [Path("/tmp/cdk-x/node/cdi")]
    )
    return tomllib.loads(text)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_containerd_keeps_every_path_under_the_node() -> None:
    config = _config()
    assert config["version"] == 3
    paths = [s for s in _strings(config) if s.startswith("/")]
    assert paths
    outside = [p for p in paths if not p.startswith(("/tmp/cdk-x/node/", "/tools/"))]
    assert outside == []


def test_containerd_runs_pods_where_root_lacks_privileges() -> None:
    plugins = _config()["plugins"]
    assert isinstance(plugins, dict)
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["cdi_spec_dirs"] == ["/tmp/cdk-x/node/cdi"]
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"]["BinaryName"] == "/tools/bin/runc"
    assert runc["options"]["SystemdCgroup"] is False
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == PAUSE_IMAGE
    assert plugins["io.containerd.nri.v1.nri"]["disable"] is True


def test_each_node_has_its_own_bridge_and_subnet() -> None:
    networks = [NodeNetwork(i) for i in range(3)]
    assert len({n.bridge for n in networks}) == 3
    subnets = [ipaddress.ip_network(n.subnet) for n in networks]
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    for network, subnet in zip(networks, subnets, strict=True):
        assert ipaddress.ip_address(network.gateway) in subnet
        conf = json.loads(cni_conflist(network, Path("/tmp/cdk-x/node/containerd/ipam")))
        bridge = conf["plugins"][0]
        assert bridge["bridge"] == network.bridge
        assert bridge["ipMasq"] is False
        assert bridge["ipam"]["ranges"] == [[{"subnet": network.subnet, "gateway": network.gateway}]]


def test_node_script_binds_overlays_and_shares_mounts() -> None:
    script = node_script([(Path("/real/a"), Path("/seen/a"))], Path("/scratch"))
    lines = script.splitlines()
    assert "mount --bind /real/a /seen/a" in lines
    overlay = next(line for line in lines if line.startswith("mount -t overlay"))
    assert (
        "lowerdir=/var/lib,upperdir=/scratch/var.lib.upper,workdir=/scratch/var.lib.work /var/lib" in overlay
    )
    # HostToContainer propagation needs shared mounts; made last, after every mount of the node.
    assert lines[-1] == "mount --make-rshared /"


def test_network_namespace_carries_the_service_address() -> None:
    script = holder_script(Path("/tmp/ready"))
    assert f"ip addr add {SERVICE_IP}/32 dev lo" in script
    assert "ip link set lo up" in script
    assert script.splitlines()[-1] == "exec sleep infinity"


def test_chart_values_point_every_node_path_at_the_shared_folder() -> None:
    args = helm_values(Path("/tmp/cdk-x/node"), "0.1.0")
    values = dict(arg.removeprefix("--set=").split("=", 1) for arg in args)
    assert values["image.repository"] == "localhost/computedomain-operator"
    assert values["image.tag"] == "0.1.0"
    for key in ("kubeletPlugin.kubeletRootDir", "kubeletPlugin.cdiRoot", "kubeletPlugin.driverRoot"):
        assert values[key].startswith("/tmp/cdk-x/node/")
    assert values["nodeAgent.driverRoot"] == values["kubeletPlugin.driverRoot"]
    assert values["kubeletPlugin.env[1].name"] == "PROC_DEVICES"


def test_extra_chart_values_are_passed_as_given() -> None:
    args = helm_values(Path("/tmp/cdk-x/node"), "0.1.0", {"imex.mode": "clique", "imex.channelPoolSize": "4"})
    values = dict(arg.removeprefix("--set=").split("=", 1) for arg in args)
    assert values["imex.mode"] == "clique"
    assert values["imex.channelPoolSize"] == "4"
    assert "imex.mode" not in dict(
        arg.removeprefix("--set=").split("=", 1) for arg in helm_values(Path("/x"), "t")
    )


def test_fake_gpus_follow_the_node_clique() -> None:
    tray = nvl72_racks(1, 1)[0]
    assert fake_gpus(tray).clique == tray.clique_id
    plain = plain_gpu_nodes(1)[0]
    assert fake_gpus(plain).fabric is False
