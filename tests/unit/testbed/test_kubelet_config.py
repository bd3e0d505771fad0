"""The real kubelet nodes' configuration, labels and namespace script (pure rendering)."""

from __future__ import annotations

from pathlib import Path

from cdtestbed.kubelet_config import (
    KUBELET_SYSCTLS,
    kubelet_configuration,
    labels_flag,
    namespace_script,
    node_labels,
)
from cdtestbed.topology import nvl72_racks, plain_gpu_nodes, rack_clique_id
from computedomain.api import names


def test_configuration_keeps_the_kubelet_off_the_host() -> None:
    config = kubelet_configuration(
        port=10250,
        healthz_port=10248,
        runtime_socket=Path("/tmp/n0/cri.sock"),
        pod_logs_dir=Path("/w/pod-logs"),
        volume_plugin_dir=Path("/tmp/n0/root/volume-plugins"),
        client_ca=Path("/w/ca.crt"),
    )
    assert config["address"] == config["healthzBindAddress"] == "127.0.0.1"
    assert config["containerRuntimeEndpoint"] == config["imageServiceEndpoint"] == "unix:///tmp/n0/cri.sock"
    assert config["readOnlyPort"] == 0
    assert (config["failCgroupV1"], config["failSwapOn"], config["cgroupsPerQOS"]) == (False, False, False)
    assert config["enforceNodeAllocatable"] == []
    assert config["podLogsDir"] == "/w/pod-logs"
    assert config["volumePluginDir"] == "/tmp/n0/root/volume-plugins"
    assert config["resolvConf"] == ""


def test_labels_are_a_gb200_tray_of_one_clique() -> None:
    tray = nvl72_racks(1, 1)[0]
    labels = node_labels(tray)
    assert labels[names.GPU_CLIQUE_LABEL] == rack_clique_id(0)
    assert labels[names.GPU_PRODUCT_LABEL] == "NVIDIA-GB200"
    assert not any(key.startswith("kubernetes.io/") for key in labels)
    assert names.GPU_CLIQUE_LABEL not in node_labels(plain_gpu_nodes(1)[0])
    assert labels_flag({"b": "2", "a": "1"}) == "a=1,b=2"


def test_namespace_script_covers_every_sysctl_and_log_dir() -> None:
    script = namespace_script(Path("/s"), Path("/s/ready"))
    for sysctl in KUBELET_SYSCTLS:
        assert f"mount --bind /s/{sysctl.replace('/', '.')} /proc/sys/{sysctl}" in script
    assert "mount --bind /s/var.log /var/log" in script
    assert script.splitlines()[-2:] == ["touch /s/ready", "exec sleep infinity"]
