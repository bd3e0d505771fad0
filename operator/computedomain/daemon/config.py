"""Pure renderers for what IMEX reads: its config file, the static node list and the hosts mapping.

IMEX peers know each other by stable names (`compute-domain-daemon-NNNN`, listed once in `nodes.cfg`);
which pod IP answers to which name is the only thing that changes, and it lives in a marked block of the
container's hosts file. The controller assigns the indices; these functions only validate and render them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from computedomain.api import names

HOSTS_BEGIN = "# BEGIN compute-domain-daemon mappings (managed, do not edit)"
HOSTS_END = "# END compute-domain-daemon mappings"

# Keys the daemon owns in the IMEX config; every other key comes from the template unchanged.
BIND_IP_KEY = "IMEX_CMD_BIND_INTERFACE_IP"
NODE_CONFIG_KEY = "IMEX_NODE_CONFIG_FILE"

# The settings of the reference's template: no daemonizing, logs on stderr, peers on 50000, the
# command service (queried by the probes) on the pod IP, and never give up on a disconnected peer.
BUILTIN_SETTINGS: tuple[tuple[str, str], ...] = (
    ("LOG_LEVEL", "4"),
    ("LOG_FILE_NAME", ""),
    ("STATS_FILE_NAME", "/var/log/nvidia-imex-stats.log"),
    ("DAEMONIZE", "0"),
    ("BIND_INTERFACE_IP", ""),
    ("SERVER_PORT", "50000"),
    (NODE_CONFIG_KEY, ""),
    ("IMEX_WAIT_FOR_QUORUM", "RECOVERY"),
    ("IMEX_ENABLE_AUTH_ENCRYPTION", "0"),
    ("IMEX_CMD_ENABLED", "1"),
    (BIND_IP_KEY, ""),
    ("IMEX_CMD_PORT", "50005"),
    ("IMEX_NODE_DISCONNECTED_GRACE_TIME", "-1"),
)

_SETTING_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=")
_IMEX_HOST = re.compile(rf"^{re.escape(names.IMEX_HOST_PREFIX)}\d{{4,}}$")


class PeerConfigError(ValueError):
    """The clique's daemon list cannot be turned into a hosts mapping (a broken controller contract)."""


@dataclass(frozen=True)
class DaemonEntry:
    """One `daemons[]` item of a ComputeDomainClique, as the controller wrote it."""

    node_name: str
    ip_address: str
    clique_id: str
    index: int | None
    status: str = "NotReady"


@dataclass(frozen=True, order=True)
class HostEntry:
    """One line of the hosts block: the peer with `index` answers at `ip_address`."""

    index: int
    ip_address: str

    @property
    def name(self) -> str:
        """The IMEX peer name this entry maps."""
        return names.imex_host(self.index)


def _optional_index(raw: object) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None
    return raw


def daemons_from_clique(obj: Mapping[str, Any] | None) -> tuple[DaemonEntry, ...]:
    """Read the `daemons[]` list of a ComputeDomainClique object (a plain dict from the API).

    Entries without a node name are dropped; an absent or non-integer `index` means "not assigned yet".
    """
    if not obj:
        return ()
    raw_daemons = obj.get("daemons") or []
    entries: list[DaemonEntry] = []
    for raw in raw_daemons:
        if not isinstance(raw, Mapping) or not raw.get("nodeName"):
            continue
        entries.append(
            DaemonEntry(
                node_name=str(raw["nodeName"]),
                ip_address=str(raw.get("ipAddress") or ""),
                clique_id=str(raw.get("cliqueID") or ""),
                index=_optional_index(raw.get("index")),
                status=str(raw.get("status") or "NotReady"),
            )
        )
    return tuple(entries)


def validate_index(index: int, max_nodes: int) -> None:
    """Raise PeerConfigError unless `index` is a valid slot in a clique of at most `max_nodes` daemons."""
    if not 0 <= index < max_nodes:
        raise PeerConfigError(f"index {index} is outside 0..{max_nodes - 1}")


def own_entry(daemons: Iterable[DaemonEntry], node_name: str, clique_id: str) -> DaemonEntry | None:
    """This node's entry in its clique, or None when the controller has not listed it."""
    for entry in daemons:
        if entry.node_name == node_name and entry.clique_id == clique_id:
            return entry
    return None


def own_index(daemons: Iterable[DaemonEntry], node_name: str, clique_id: str) -> int | None:
    """This node's index in its clique, or None until the controller assigned one."""
    entry = own_entry(daemons, node_name, clique_id)
    return None if entry is None else entry.index


def peer_hosts(daemons: Iterable[DaemonEntry], clique_id: str, max_nodes: int) -> tuple[HostEntry, ...]:
    """The hosts mapping of one clique: entries with an index and an IP, sorted by index.

    Entries of other cliques are ignored (an IMEX domain never spans cliques). An index out of range or
    held twice, or an IP listed twice, raises PeerConfigError: the mapping would be ambiguous.
    """
    by_index: dict[int, str] = {}
    by_ip: dict[str, int] = {}
    for entry in daemons:
        if entry.clique_id != clique_id or entry.index is None or not entry.ip_address:
            continue
        try:
            validate_index(entry.index, max_nodes)
        except PeerConfigError as err:
            raise PeerConfigError(f"node {entry.node_name}: {err}") from None
        if entry.index in by_index:
            raise PeerConfigError(f"index {entry.index} is held by more than one daemon")
        if entry.ip_address in by_ip:
            raise PeerConfigError(f"IP {entry.ip_address} is listed for more than one index")
        by_index[entry.index] = entry.ip_address
        by_ip[entry.ip_address] = entry.index
    return tuple(HostEntry(index, ip) for index, ip in sorted(by_index.items()))


def render_hosts_block(entries: Sequence[HostEntry]) -> list[str]:
    """The marked block for the hosts file (no trailing newlines), empty when there is nothing to map."""
    if not entries:
        return []
    return [HOSTS_BEGIN, *(f"{entry.ip_address}\t{entry.name}" for entry in entries), HOSTS_END]


def _maps_imex_host(line: str) -> bool:
    fields = line.split("#", 1)[0].split()
    return len(fields) >= 2 and any(_IMEX_HOST.match(field) for field in fields[1:])


def render_hosts_file(current: str, entries: Sequence[HostEntry]) -> str:
    """Return `current` (a hosts file) with its managed block replaced by one listing `entries`.

    The block keeps its position; without one it goes at the end. Every other line is kept, except
    stray lines that map an IMEX peer name outside the block (left by an older writer), since two
    mappings of one name would make resolution depend on line order. Idempotent.
    """
    lines = current.splitlines()
    block = render_hosts_block(entries)
    kept: list[str] = []
    insert_at: int | None = None
    inside = False
    for line in lines:
        stripped = line.strip()
        if stripped == HOSTS_BEGIN:
            inside = True
            if insert_at is None:
                insert_at = len(kept)
            continue
        if inside:
            if stripped == HOSTS_END:
                inside = False
            continue
        if _maps_imex_host(line):
            continue
        kept.append(line)
    if insert_at is None:
        insert_at = len(kept)
    result = kept[:insert_at] + block + kept[insert_at:]
    return "".join(f"{line}\n" for line in result)


def hosts_in_file(text: str) -> tuple[HostEntry, ...]:
    """The entries of the managed block in a hosts file, in file order (for logs and tests)."""
    found: list[HostEntry] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == HOSTS_BEGIN:
            inside = True
        elif stripped == HOSTS_END:
            inside = False
        elif inside:
            fields = stripped.split()
            if len(fields) >= 2 and _IMEX_HOST.match(fields[1]):
                found.append(HostEntry(int(fields[1][len(names.IMEX_HOST_PREFIX) :]), fields[0]))
    return tuple(found)


def render_nodes_config(max_nodes: int) -> str:
    """The static IMEX node list: every peer name a clique can hold, one per line."""
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")
    return "".join(f"{names.imex_host(index)}\n" for index in range(max_nodes))


def render_builtin_template() -> str:
    """The IMEX config template used when the kubelet plugin left none in the config directory."""
    header = "# IMEX daemon configuration rendered by compute-domain-daemon.\n"
    return header + "".join(f"{key}={value}\n" for key, value in BUILTIN_SETTINGS)


def render_imex_config(bind_ip: str, node_config_file: str, template: str | None = None) -> str:
    """Render `imexd.cfg` from `template` (or the built-in one) with the daemon-owned keys set.

    Each uncommented `KEY=...` line for a daemon-owned key gets its value replaced, whatever the template
    held there (empty, a placeholder); a key the template lacks is appended.
    """
    overrides = {BIND_IP_KEY: bind_ip, NODE_CONFIG_KEY: node_config_file}
    for key, value in overrides.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{key} value must be a single line")
    source = render_builtin_template() if template is None else template
    seen: set[str] = set()
    out: list[str] = []
    for line in source.splitlines():
        match = _SETTING_LINE.match(line)
        if match and match.group("key") in overrides:
            key = match.group("key")
            seen.add(key)
            out.append(f"{match.group('indent')}{key}={overrides[key]}")
        else:
            out.append(line)
    out.extend(f"{key}={value}" for key, value in overrides.items() if key not in seen)
    return "".join(f"{line}\n" for line in out)
