"""File writes for the IMEX config directory and the container's hosts file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from computedomain.daemon.config import HostEntry, render_hosts_file


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def update_hosts_file(path: Path, entries: Sequence[HostEntry]) -> bool:
    """Rewrite the managed block of the hosts file; return whether the file changed.

    The file is rewritten in place, not renamed over: in a container /etc/hosts is a bind mount, which
    cannot be replaced by a rename.
    """
    current = read_text(path) or ""
    updated = render_hosts_file(current, entries)
    if updated == current:
        return False
    with path.open("w", encoding="utf-8") as handle:
        handle.write(updated)
    return True
