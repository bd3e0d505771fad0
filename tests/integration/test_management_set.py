"""The kubelet plugin's management-mode set against NVIDIA's own generator, run live: `nvidia-ctk cdi
generate --mode=management` (built by `make tools` from its pinned Go module) on the test bed's fake
driver root must name the same device nodes, with the same numbers and modes, and the same mounts.

NVIDIA's OCI hooks (ldcache, symlinks, CUDA compat) and the variable they read are left out of the
comparison: the plugin replaces them by mounting the links beside the libraries (see
`computedomain.plugin.management`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdtestbed.pluginprocess import NodeHost
from cdtestbed.tools import Tools
from computedomain.plugin.management import management_set, read_listing
from support.realnodes import require

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed makes device nodes only as root")


def nvidia_ctk(root: Path, out: Path) -> dict[str, Any]:
    """NVIDIA's management-mode spec for the driver root `root`."""
    tools = Tools.default()
    binary = tools.directory / "bin" / "nvidia-ctk"
    require(None if binary.exists() else f"{binary} not built: run `make tools`", "nvidia-ctk")
    result = subprocess.run(
        [
            str(binary),
            "cdi",
            "generate",
            "--mode=management",
            f"--driver-root={root}",
            f"--dev-root={root}",
            "--format=json",
            f"--output={out}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spec: dict[str, Any] = json.loads(out.read_text())
    return spec


def all_edits(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's container edits: its own and every device's."""
    return [spec.get("containerEdits") or {}, *(d.get("containerEdits") or {} for d in spec["devices"])]


def test_the_plugin_gives_what_nvidia_ctk_gives(tmp_path: Path) -> None:
    host = NodeHost(tmp_path / "host")
    host.create()
    root = host.driver_root
    spec = nvidia_ctk(root, tmp_path / "nvidia-ctk.json")
    theirs_nodes = {
        (n["path"], n.get("hostPath", n["path"]), n.get("major", 0), n.get("minor", 0), n.get("fileMode"))
        for edits in all_edits(spec)
        for n in edits.get("deviceNodes") or []
    }
    theirs_mounts = {
        (m["hostPath"], m["containerPath"]) for edits in all_edits(spec) for m in edits.get("mounts") or []
    }
    assert theirs_nodes, "nvidia-ctk named no device node"

    ours = management_set(read_listing(root), root)
    ours_nodes = {(n.path, n.host_path, n.major, n.minor, n.file_mode) for n in ours.device_nodes}
    ours_mounts = {(m.host_path, m.container_path) for m in ours.mounts}

    assert ours_nodes == theirs_nodes
    # Ours adds the links a program opens (libnvidia-ml.so.1), which NVIDIA's symlink hook makes.
    links = {
        (host_path, container_path)
        for host_path, container_path in ours_mounts - theirs_mounts
        if Path(container_path).name.endswith(".so.1")
    }
    assert ours_mounts - links == theirs_mounts
    assert links, "no library link mounted"
