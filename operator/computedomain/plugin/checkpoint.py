"""The node-local record of prepared claims: one JSON file with a checksum, replaced atomically.

Unprepare must work from local state alone (the claim may be gone from the API server), and a restarted
plugin answers completed claims from here. The record belongs to one boot of the node: after a reboot
the devices and CDI specs it describes are gone, so it is dropped. The records are dataclasses encoded
by hand, in the JSON field names earlier versions wrote (`bootID`, `startedAt`), so that a file written
before an upgrade, or after a downgrade, still loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from computedomain.files import write_atomic
from computedomain.plugin.claimdevice import ClaimDevice, json_object, text

log = logging.getLogger(__name__)

ClaimState = Literal["PrepareStarted", "PrepareCompleted"]
CLAIM_STATES: tuple[ClaimState, ...] = ("PrepareStarted", "PrepareCompleted")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClaimRecord:
    """What the plugin knows about one claim it prepared or began to prepare."""

    uid: str
    namespace: str
    name: str
    state: ClaimState
    # Wall-clock time the prepare began.
    started_at: float
    devices: tuple[ClaimDevice, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The record as the checkpoint file holds it."""
        return {
            "uid": self.uid,
            "namespace": self.namespace,
            "name": self.name,
            "state": self.state,
            "startedAt": self.started_at,
            "devices": [device.to_json() for device in self.devices],
        }

    @classmethod
    def from_json(cls, data: Any) -> ClaimRecord:
        """The record of `to_json`'s object (unknown fields ignored); ValueError when it is not one."""
        fields = json_object(data, "claim")
        state = text(fields, "state")
        if state not in CLAIM_STATES:
            raise ValueError(f"state must be one of {', '.join(CLAIM_STATES)}, not {state!r}")
        started_at = fields.get("startedAt")
        if isinstance(started_at, bool) or not isinstance(started_at, int | float):
            raise ValueError("startedAt must be a number")
        devices = fields.get("devices", [])
        if not isinstance(devices, list):
            raise ValueError("devices must be a list")
        return cls(
            uid=text(fields, "uid"),
            namespace=text(fields, "namespace"),
            name=text(fields, "name"),
            state=state,
            started_at=float(started_at),
            devices=tuple(ClaimDevice.from_json(device) for device in devices),
        )


def _encode(boot_id: str, claims: Mapping[str, ClaimRecord]) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "bootID": boot_id,
        "claims": {uid: record.to_json() for uid, record in claims.items()},
    }


def _decode(data: Any) -> tuple[str, dict[str, ClaimRecord]]:
    """(boot ID, claims by UID) of a file's data; ValueError when it is not a checkpoint's."""
    fields = json_object(data, "data")
    version = fields.get("version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("version must be an integer")
    claims = json_object(fields.get("claims", {}), "claims")
    return text(fields, "bootID"), {uid: ClaimRecord.from_json(record) for uid, record in claims.items()}


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
            boot_id, claims = _decode(data)
        except (ValueError, KeyError, TypeError) as error:
            aside = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, aside)
            log.error(
                "checkpoint %s is corrupt (%s); moved to %s and starting empty", self.path, error, aside
            )
            return
        if boot_id != self.boot_id:
            log.info(
                "checkpoint %s is of boot %s, this is boot %s: dropping its %d claims",
                self.path,
                boot_id or "?",
                self.boot_id or "?",
                len(claims),
            )
            self.dropped = claims
            self.save()
            return
        self.claims = claims

    def document(self) -> dict[str, Any]:
        """The file's content: the data and its checksum."""
        data = _encode(self.boot_id, self.claims)
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
