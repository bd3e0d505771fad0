"""Pure renderers of the IMEX daemon wrapper: hosts block, node list, IMEX config, index handling."""

from __future__ import annotations

import re

import pytest

from computedomain.api import names
from computedomain.daemon.config import (
    BIND_IP_KEY,
    HOSTS_BEGIN,
    HOSTS_END,
    NODE_CONFIG_KEY,
    DaemonEntry,
    HostEntry,
    PeerConfigError,
    daemons_from_clique,
    hosts_in_file,
    own_index,
    peer_hosts,
    render_hosts_file,
    render_imex_config,
    render_nodes_config,
    validate_index,
)

CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
OTHER_CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.1"
KUBELET_HOSTS = (
    "# Kubernetes-managed hosts file.\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "10.244.3.17\tcomputedomain-daemon-0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10-x7k2p\n"
)


def entry(node: str, ip: str, index: int | None, clique: str = CLIQUE) -> DaemonEntry:
    return DaemonEntry(node_name=node, ip_address=ip, clique_id=clique, index=index)


def settings_of(config_text: str) -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in config_text.splitlines() if "=" in line and not line.startswith("#")
    )
    return {key.strip(): value for key, value in pairs}


# --- clique parsing -------------------------------------------------------------------------------


def test_daemons_from_clique_reads_entries_and_unassigned_index() -> None:
    obj = {
        "daemons": [
            {"nodeName": "n01", "ipAddress": "10.0.0.1", "cliqueID": CLIQUE, "index": 0, "status": "Ready"},
            {"nodeName": "n02", "ipAddress": "10.0.0.2", "cliqueID": CLIQUE},
            {"ipAddress": "10.0.0.3", "cliqueID": CLIQUE, "index": 2},
            {"nodeName": "n04", "ipAddress": "10.0.0.4", "cliqueID": CLIQUE, "index": True},
        ]
    }
    assert daemons_from_clique(obj) == (
        DaemonEntry("n01", "10.0.0.1", CLIQUE, 0, "Ready"),
        DaemonEntry("n02", "10.0.0.2", CLIQUE, None, "NotReady"),
        DaemonEntry("n04", "10.0.0.4", CLIQUE, None, "NotReady"),
    )


@pytest.mark.parametrize("obj", [None, {}, {"daemons": None}, {"metadata": {"name": "x"}}])
def test_daemons_from_clique_without_daemons(obj: dict[str, object] | None) -> None:
    assert daemons_from_clique(obj) == ()


# --- index handling -------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 17])
def test_validate_index_accepts_slots(index: int) -> None:
    validate_index(index, 18)


@pytest.mark.parametrize("index", [-1, 18, 100])
def test_validate_index_rejects_out_of_range(index: int) -> None:
    with pytest.raises(PeerConfigError, match=str(index)):
        validate_index(index, 18)


def test_own_index_none_until_assigned() -> None:
    daemons = [entry("n01", "10.0.0.1", 0), entry("n02", "10.0.0.2", None)]
    assert own_index(daemons, "n01", CLIQUE) == 0
    assert own_index(daemons, "n02", CLIQUE) is None
    assert own_index(daemons, "n03", CLIQUE) is None
    assert own_index(daemons, "n01", OTHER_CLIQUE) is None


# --- peer mapping ---------------------------------------------------------------------------------


def test_peer_hosts_keeps_same_clique_assigned_entries_sorted_by_index() -> None:
    daemons = [
        entry("n03", "10.0.0.3", 2),
        entry("n01", "10.0.0.1", 0),
        entry("x01", "10.9.0.1", 1, clique=OTHER_CLIQUE),
        entry("n02", "10.0.0.2", None),
        entry("n04", "", 3),
    ]
    assert peer_hosts(daemons, CLIQUE, 18) == (HostEntry(0, "10.0.0.1"), HostEntry(2, "10.0.0.3"))


def test_peer_hosts_rejects_out_of_range_index() -> None:
    with pytest.raises(PeerConfigError, match="n02"):
        peer_hosts([entry("n01", "10.0.0.1", 0), entry("n02", "10.0.0.2", 4)], CLIQUE, 4)


def test_peer_hosts_rejects_duplicate_index() -> None:
    with pytest.raises(PeerConfigError, match="index 1"):
        peer_hosts([entry("n01", "10.0.0.1", 1), entry("n02", "10.0.0.2", 1)], CLIQUE, 18)


def test_peer_hosts_rejects_duplicate_ip() -> None:
    with pytest.raises(PeerConfigError, match=re.escape("10.0.0.1")):
        peer_hosts([entry("n01", "10.0.0.1", 0), entry("n02", "10.0.0.1", 1)], CLIQUE, 18)


def test_out_of_range_index_of_another_clique_is_ignored() -> None:
    daemons = [entry("n01", "10.0.0.1", 0), entry("x01", "10.9.0.1", 99, clique=OTHER_CLIQUE)]
    assert peer_hosts(daemons, CLIQUE, 18) == (HostEntry(0, "10.0.0.1"),)


# --- hosts file -----------------------------------------------------------------------------------

TWO = (HostEntry(0, "10.244.3.17"), HostEntry(1, "10.244.5.9"))


def test_hosts_block_appended_after_kubelet_lines() -> None:
    rendered = render_hosts_file(KUBELET_HOSTS, TWO)
    assert rendered == KUBELET_HOSTS + (
        f"{HOSTS_BEGIN}\n10.244.3.17\tcompute-domain-daemon-0000\n10.244.5.9\tcompute-domain-daemon-0001\n{HOSTS_END}\n"
    )


def test_hosts_block_is_idempotent() -> None:
    once = render_hosts_file(KUBELET_HOSTS, TWO)
    assert render_hosts_file(once, TWO) == once


def test_hosts_block_replaced_in_place_with_one_header() -> None:
    first = render_hosts_file(KUBELET_HOSTS, TWO)
    with_tail = first + "192.168.1.1\tadded-later\n"
    updated = render_hosts_file(with_tail, (HostEntry(0, "10.244.3.17"), HostEntry(2, "10.244.7.1")))
    assert updated.count(HOSTS_BEGIN) == 1
    assert updated.count(HOSTS_END) == 1
    assert "compute-domain-daemon-0001" not in updated
    assert updated.endswith(
        "10.244.7.1\tcompute-domain-daemon-0002\n" + HOSTS_END + "\n192.168.1.1\tadded-later\n"
    )
    assert updated.startswith(KUBELET_HOSTS)


def test_hosts_file_keeps_every_other_line_and_drops_stray_peer_lines() -> None:
    legacy = KUBELET_HOSTS + "# Compute Domain Daemon mappings\n10.1.1.1\tcompute-domain-daemon-0000\n"
    updated = render_hosts_file(legacy, TWO)
    assert "10.1.1.1" not in updated
    assert "# Compute Domain Daemon mappings\n" in updated
    assert updated.startswith(KUBELET_HOSTS)
    assert hosts_in_file(updated) == TWO


def test_hosts_block_removed_when_nothing_to_map() -> None:
    assert render_hosts_file(render_hosts_file(KUBELET_HOSTS, TWO), ()) == KUBELET_HOSTS


def test_hosts_file_without_trailing_newline() -> None:
    rendered = render_hosts_file("127.0.0.1\tlocalhost", TWO)
    assert rendered.startswith("127.0.0.1\tlocalhost\n" + HOSTS_BEGIN + "\n")
    assert hosts_in_file(rendered) == TWO


# --- nodes.cfg ------------------------------------------------------------------------------------


def test_nodes_config_lists_every_slot() -> None:
    lines = render_nodes_config(18).splitlines()
    assert lines[0] == "compute-domain-daemon-0000"
    assert lines[-1] == "compute-domain-daemon-0017"
    assert lines == [names.imex_host(i) for i in range(18)]


def test_nodes_config_rejects_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        render_nodes_config(0)


# --- imexd.cfg ------------------------------------------------------------------------------------


def test_builtin_config_has_reference_settings() -> None:
    settings = settings_of(render_imex_config("10.244.3.17", "/imexd/nodes.cfg"))
    assert settings[BIND_IP_KEY] == "10.244.3.17"
    assert settings[NODE_CONFIG_KEY] == "/imexd/nodes.cfg"
    assert settings["DAEMONIZE"] == "0"
    assert settings["LOG_FILE_NAME"] == ""
    assert settings["SERVER_PORT"] == "50000"
    assert settings["IMEX_CMD_ENABLED"] == "1"
    assert settings["IMEX_CMD_PORT"] == "50005"
    assert settings["IMEX_WAIT_FOR_QUORUM"] == "RECOVERY"
    assert settings["IMEX_NODE_DISCONNECTED_GRACE_TIME"] == "-1"


def test_template_values_replaced_and_rest_kept() -> None:
    template = (
        "# from the kubelet plugin\n"
        "LOG_LEVEL=2\n"
        "IMEX_CMD_BIND_INTERFACE_IP={{ .IMEXCmdBindInterfaceIP }}\n"
        "# IMEX_NODE_CONFIG_FILE=/etc/nvidia-imex/nodes_config.cfg\n"
        "  IMEX_NODE_CONFIG_FILE = /placeholder\n"
        "IMEX_CMD_PORT=50005\n"
    )
    rendered = render_imex_config("10.0.0.7", "/imexd/nodes.cfg", template)
    assert rendered.splitlines() == [
        "# from the kubelet plugin",
        "LOG_LEVEL=2",
        "IMEX_CMD_BIND_INTERFACE_IP=10.0.0.7",
        "# IMEX_NODE_CONFIG_FILE=/etc/nvidia-imex/nodes_config.cfg",
        "  IMEX_NODE_CONFIG_FILE=/imexd/nodes.cfg",
        "IMEX_CMD_PORT=50005",
    ]


def test_template_missing_keys_are_appended() -> None:
    rendered = render_imex_config("10.0.0.7", "/imexd/nodes.cfg", "LOG_LEVEL=4\n")
    assert (
        rendered
        == "LOG_LEVEL=4\nIMEX_CMD_BIND_INTERFACE_IP=10.0.0.7\nIMEX_NODE_CONFIG_FILE=/imexd/nodes.cfg\n"
    )


def test_rendering_is_stable() -> None:
    once = render_imex_config("10.0.0.7", "/imexd/nodes.cfg")
    assert render_imex_config("10.0.0.7", "/imexd/nodes.cfg", once) == once


def test_multiline_value_rejected() -> None:
    with pytest.raises(ValueError, match="single line"):
        render_imex_config("10.0.0.7\nDAEMONIZE=1", "/imexd/nodes.cfg")
