"""The node-local record of prepared claims: one JSON file with a checksum, replaced atomically.

Unprepare must work from local state alone (the claim may be gone from the API server), and a restarted
plugin answers completed claims from here. The record belongs to one boot of the node: after a reboot
the devices and CDI specs it describes are gone, so it is dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from computedomain.api.models import WireModel
from computedomain.files import write_atomic

log = logging.getLogger(__name__)

ClaimState = Literal["PrepareStarted", "PrepareCompleted"]
FORMAT_VERSION = 1


class PreparedDevice(WireModel):
    """One device result as the kubelet receives it, with the domain it belongs to."""

    model_config = ConfigDict(frozen=True)

    request: str
    pool: str
    device: str
    type: str
    domain_id: str
    cdi_device_ids: tuple[str, ...] = ()


class ClaimRecord(WireModel):
    """What the plugin knows about one claim it prepared or began to prepare."""

    model_config = ConfigDict(frozen=True)

    uid: str
    namespace: str
    name: str
    state: ClaimState
    started_at: float = Field(description="Wall-clock time the prepare began.")
    devices: tuple[PreparedDevice, ...] = ()


class _Data(WireModel):
    version: int = FORMAT_VERSION
    boot_id: str
    claims: dict[str, ClaimRecord] = Field(default_factory=dict)


def checksum(data: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `data`."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_boot_id(path: Path) -> str:
    """The node's boot ID ('' when the file cannot be read: then every boot looks alike)."""
    try:
        return path.read_text().strip()
    except OSError as error:
        log.warning("cannot read the boot ID from %s: %s", path, error)
        return ""


class Checkpoint:
    """The checkpoint file of this node's plugin, and the claims it holds."""

    def __init__(self, path: Path, boot_id: str) -> None:
        self.path = path
        self.boot_id = boot_id
        self.claims: dict[str, ClaimRecord] = {}
        # Claims of a checkpoint dropped at load (another boot): their CDI specs may still linger.
        self.dropped: dict[str, ClaimRecord] = {}

    def load(self) -> None:
        """Read the file: keep its claims if it is intact and of this boot, else start empty.

        A corrupt file is moved aside (`.corrupt`) so that a person can look at it; prepare is
        idempotent, so the kubelet's next calls rebuild what it described.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            document = json.loads(raw)
            data = document["data"]
            if document.get("checksum") != checksum(data):
                raise ValueError("checksum mismatch")
            parsed = _Data.model_validate(data)
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            aside = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, aside)
            log.error(
                "checkpoint %s is corrupt (%s); moved to %s and starting empty", self.path, error, aside
            )
            return
        if parsed.boot_id != self.boot_id:
            log.info(
                "checkpoint %s is of boot %s, this is boot %s: dropping its %d claims",
                self.path,
                parsed.boot_id or "?",
                self.boot_id or "?",
                len(parsed.claims),
            )
            self.dropped = parsed.claims
            self.save()
            return
        self.claims = dict(parsed.claims)

    def document(self) -> dict[str, Any]:
        """The file's content: the data and its checksum."""
        data = _Data(boot_id=self.boot_id, claims=self.claims).model_dump(mode="json", by_alias=True)
        return {"checksum": checksum(data), "data": data}

    def save(self) -> None:
        """Write the file atomically (temporary file, fsync, rename, fsync of the directory)."""
        write_atomic(self.path, json.dumps(self.document(), indent=1).encode(), mode=0o600)

    def put(self, record: ClaimRecord) -> None:
        """Record (or replace) one claim and save."""
        self.claims[record.uid] = record
        self.save()

    def discard(self, uid: str) -> ClaimRecord | None:
        """Forget one claim and save; the record it had, if any."""
        record = self.claims.pop(uid, None)
        if record is not None:
            self.save()
        return record
