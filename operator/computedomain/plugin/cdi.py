"""CDI specs of prepared claims: rendering (pure) and the spec files (one per claim, written atomically).

The container runtime resolves the CDI device IDs the plugin returns against these files and applies
their container edits; the plugin itself never creates device nodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computedomain.api import names
from computedomain.files import remove, write_atomic
from computedomain.plugin.devices import CharDevice

VENDOR = f"k8s.{names.DRIVER}"
CLAIM_CLASS = "claim"
KIND = f"{VENDOR}/{CLAIM_CLASS}"
# Where the IMEX daemon container finds its config directory (the daemon's IMEX_CONFIG_DIR).
DAEMON_CONFIG_DIR = "/imexd"

Spec = dict[str, Any]


@dataclass(frozen=True)
class Mount:
    """A bind mount from the host into the container."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = ("ro", "nosuid", "nodev", "bind")


@dataclass(frozen=True)
class Edits:
    """The container edits of one CDI device."""

    env: Mapping[str, str] = field(default_factory=dict)
    device_nodes: Sequence[CharDevice] = ()
    mounts: Sequence[Mount] = ()

    @property
    def empty(self) -> bool:
        """True when the edits change nothing in a container."""
        return not (self.env or self.device_nodes or self.mounts)


def device_name(claim_uid: str, device: str) -> str:
    """The CDI device of one prepared device of a claim: `<claimUID>-<device>`."""
    return f"{claim_uid}-{device}"


def qualified_name(claim_uid: str, device: str) -> str:
    """The CDI device ID the kubelet hands to the runtime: `k8s.compute-domain.nvidia.com/claim=...`."""
    return f"{KIND}={device_name(claim_uid, device)}"


def spec_file_name(claim_uid: str) -> str:
    """The spec file of a claim, as CDI's transient spec names go: `<vendor>-<class>_<claimUID>.json`."""
    return f"{VENDOR}-{CLAIM_CLASS}_{claim_uid}.json"


def render_edits(edits: Edits) -> dict[str, Any]:
    """CDI `containerEdits` of `edits` (empty sections left out)."""
    rendered: dict[str, Any] = {}
    if edits.env:
        rendered["env"] = [f"{key}={value}" for key, value in edits.env.items()]
    if edits.device_nodes:
        rendered["deviceNodes"] = [_device_node(d) for d in edits.device_nodes]
    if edits.mounts:
        rendered["mounts"] = [
            {"hostPath": m.host_path, "containerPath": m.container_path, "options": list(m.options)}
            for m in edits.mounts
        ]
    return rendered


def _device_node(device: CharDevice) -> dict[str, Any]:
    # Type and numbers are given even with a host path, so that the spec means the same wherever the
    # runtime resolves it, whether or not it can see the host's node.
    node: dict[str, Any] = {"path": device.path}
    if device.host_path:
        node["hostPath"] = device.host_path
    node.update(type="c", major=device.major, minor=device.minor, fileMode=device.file_mode)
    return node


def minimum_version(spec: Spec) -> str:
    """The lowest CDI spec version that can express `spec`, as CDI's MinimumRequiredVersion decides.

    Device names that start with a digit (claim UIDs often do) and device nodes with a host path
    need 0.5.0; typed mounts need 0.4.0; everything else here is 0.3.0.
    """
    devices = spec.get("devices", [])
    edits = [d.get("containerEdits", {}) for d in devices]
    if any(d["name"][:1].isdigit() for d in devices) or any(
        n.get("hostPath") for e in edits for n in e.get("deviceNodes", [])
    ):
        return "0.5.0"
    if any(m.get("type") for e in edits for m in e.get("mounts", [])):
        return "0.4.0"
    return "0.3.0"


def render_spec(claim_uid: str, devices: Iterable[tuple[str, Edits]]) -> Spec | None:
    """The claim's spec: one CDI device per (device name, edits) with edits; None when none has any."""
    entries = [
        {"name": device_name(claim_uid, name), "containerEdits": render_edits(edits)}
        for name, edits in devices
        if not edits.empty
    ]
    if not entries:
        return None
    spec: Spec = {"cdiVersion": "", "kind": KIND, "devices": entries}
    spec["cdiVersion"] = minimum_version(spec)
    return spec


class SpecStore:
    """The claim spec files in one CDI directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, claim_uid: str) -> Path:
        """The spec file of `claim_uid`."""
        return self.root / spec_file_name(claim_uid)

    def write(self, claim_uid: str, spec: Spec) -> Path:
        """Write (or replace) the claim's spec atomically."""
        path = self.path(claim_uid)
        write_atomic(path, json.dumps(spec, indent=2).encode() + b"\n")
        return path

    def remove(self, claim_uid: str) -> bool:
        """Remove the claim's spec; False when there was none."""
        return remove(self.path(claim_uid))

    def claim_uids(self) -> set[str]:
        """UIDs of the claims that have a spec file here."""
        prefix, suffix = f"{VENDOR}-{CLAIM_CLASS}_", ".json"
        if not self.root.is_dir():
            return set()
        return {
            p.name[len(prefix) : -len(suffix)]
            for p in self.root.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(suffix)
        }
