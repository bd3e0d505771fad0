"""The runtime double's entry point for the operator image's programs: what it takes from the mounts."""

from __future__ import annotations

import json
from pathlib import Path

from cdtestbed import podprocess


def mounts(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"containerPath": c, "hostPath": h} for c, h in pairs])


def test_mounted_imex_binaries_and_hosts_file_become_the_daemons_paths(tmp_path: Path) -> None:
    env = {
        "CRI_DOUBLE_MOUNTS": mounts(
            ("/usr/bin/nvidia-imex", "/driver/usr/bin/nvidia-imex"),
            ("/usr/bin/nvidia-imex-ctl", "/driver/usr/bin/nvidia-imex-ctl"),
            ("/etc/hosts", "/pods/uid/etc-hosts"),
        )
    }
    podprocess.host_env(env, tmp_path)
    assert env["IMEX_BINARY"] == "/driver/usr/bin/nvidia-imex"
    assert env["IMEX_CTL_BINARY"] == "/driver/usr/bin/nvidia-imex-ctl"
    assert env["IMEX_HOSTS_FILE"] == "/pods/uid/etc-hosts"
    assert "KUBECONFIG" not in env


def test_the_pods_token_becomes_a_kubeconfig_instead_of_the_in_cluster_path(tmp_path: Path) -> None:
    account = tmp_path / "projected"
    account.mkdir()
    (account / "token").write_text("pod-token\n")
    (account / "ca.crt").write_text("CA")
    env = {
        "CRI_DOUBLE_MOUNTS": mounts((podprocess.SERVICE_ACCOUNT_DIR, str(account))),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "6443",
        "IMEX_BINARY": "/set/by/the/pod",
    }
    podprocess.host_env(env, tmp_path)
    config = json.loads(Path(env["KUBECONFIG"]).read_text())
    assert config["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(account / "ca.crt"),
    }
    assert config["users"][0]["user"] == {"token": "pod-token"}
    assert not any(key.startswith("KUBERNETES_SERVICE") for key in env)
    assert env["IMEX_BINARY"] == "/set/by/the/pod"
    assert Path(env["KUBECONFIG"]).stat().st_mode & 0o777 == 0o600


def test_an_unknown_image_command_is_refused() -> None:
    assert podprocess.main(["sh", "-c", "true"]) == 127
