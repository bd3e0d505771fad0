"""The checkpoint's records in JSON: files written by earlier versions load, and what loads is checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from computedomain.plugin.checkpoint import Checkpoint, ClaimRecord, checksum
from computedomain.plugin.claimdevice import ClaimDevice

DOMAIN = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"

# Written by the plugin when its records were pydantic models (two claims, one prepared, one started).
OLD_FILE = """{
 "checksum": "01376eac16274b27edc9b6c9be104e7ba8373666e055109b7dbb0fdd731c51cd",
 "data": {
  "version": 1,
  "bootID": "boot-1",
  "claims": {
   "u1": {
    "uid": "u1",
    "namespace": "team-a",
    "name": "job-channel",
    "state": "PrepareCompleted",
    "startedAt": 1754000000.25,
    "devices": [
     {
      "request": "channel",
      "pool": "gb200-n01",
      "device": "channel-0",
      "type": "channel",
      "domainID": "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10",
      "cdiDeviceIds": [
       "k8s.compute-domain.nvidia.com/claim=u1-channel"
      ]
     }
    ]
   },
   "u2": {
    "uid": "u2",
    "namespace": "computedomain-system",
    "name": "daemon-claim",
    "state": "PrepareStarted",
    "startedAt": 1754000001.5,
    "devices": [
     {
      "request": "daemon",
      "pool": "gb200-n01",
      "device": "daemon-0",
      "type": "daemon",
      "domainID": "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10",
      "cdiDeviceIds": []
     }
    ]
   }
  }
 }
}
"""

CHANNEL = ClaimDevice(
    request="channel",
    pool="gb200-n01",
    device="channel-0",
    type="channel",
    domain_id=DOMAIN,
    cdi_device_ids=("k8s.compute-domain.nvidia.com/claim=u1-channel",),
)
DAEMON = ClaimDevice(request="daemon", pool="gb200-n01", device="daemon-0", type="daemon", domain_id=DOMAIN)
RECORDS = {
    "u1": ClaimRecord("u1", "team-a", "job-channel", "PrepareCompleted", 1754000000.25, (CHANNEL,)),
    "u2": ClaimRecord(
        "u2", "computedomain-system", "daemon-claim", "PrepareStarted", 1754000001.5, (DAEMON,)
    ),
}


def test_a_file_of_the_earlier_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text(OLD_FILE)
    loaded = Checkpoint(path, "boot-1")
    loaded.load()
    assert loaded.claims == RECORDS


def test_the_same_claims_are_written_as_before(tmp_path: Path) -> None:
    written = Checkpoint(tmp_path / "checkpoint.json", "boot-1")
    for record in RECORDS.values():
        written.put(record)
    # Field for field and checksum for checksum: a downgraded plugin reads the file too.
    assert json.loads((tmp_path / "checkpoint.json").read_text()) == json.loads(OLD_FILE)


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    document = json.loads(OLD_FILE)
    document["data"]["claims"]["u1"]["note"] = "from a later version"
    document["data"]["claims"]["u1"]["devices"][0]["extra"] = 1
    document["checksum"] = checksum(document["data"])
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps(document))
    loaded = Checkpoint(path, "boot-1")
    loaded.load()
    assert loaded.claims == RECORDS


def _claim_u1(document: dict[str, Any]) -> dict[str, Any]:
    claim: dict[str, Any] = document["data"]["claims"]["u1"]
    return claim


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: _claim_u1(d).update(state="Weird"),
        lambda d: _claim_u1(d).update(startedAt="soon"),
        lambda d: _claim_u1(d).update(startedAt=True),
        lambda d: _claim_u1(d).pop("uid"),
        lambda d: _claim_u1(d).update(devices={"request": "channel"}),
        lambda d: _claim_u1(d)["devices"][0].update(type="gpu"),
        lambda d: _claim_u1(d)["devices"][0].update(domainID=None),
        lambda d: _claim_u1(d)["devices"][0].update(cdiDeviceIds="k8s.compute-domain.nvidia.com/claim=u1"),
        lambda d: _claim_u1(d)["devices"].append("channel-0"),
        lambda d: d["data"].update(claims=[]),
        lambda d: d["data"].pop("bootID"),
        lambda d: d["data"].update(version="1"),
        lambda d: d.update(data=[]),
    ],
)
def test_a_malformed_record_makes_the_file_corrupt(tmp_path: Path, damage: Any) -> None:
    document = json.loads(OLD_FILE)
    damage(document)
    if isinstance(document["data"], dict):
        document["checksum"] = checksum(document["data"])
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps(document))
    loaded = Checkpoint(path, "boot-1")
    loaded.load()
    assert loaded.claims == {}
    assert (tmp_path / "checkpoint.json.corrupt").exists()


def test_a_prepared_device_keeps_everything_else() -> None:
    assert DAEMON.prepared(("a", "b")) == ClaimDevice(
        request="daemon",
        pool="gb200-n01",
        device="daemon-0",
        type="daemon",
        domain_id=DOMAIN,
        cdi_device_ids=("a", "b"),
    )


def test_a_clique_mode_channel_is_kept_and_domain_mode_records_stay_as_they_were(tmp_path: Path) -> None:
    channel = ClaimDevice("channel", "gb200-n01", "channel", "channel", DOMAIN, ("k=v",), channel=17)
    record = ClaimRecord("u1", "team", "job", "PrepareCompleted", 1.0, (channel, DAEMON))
    checkpoint = Checkpoint(tmp_path / "checkpoint.json", "boot-a")
    checkpoint.put(record)

    encoded = checkpoint.document()["data"]["claims"]["u1"]["devices"]
    assert encoded[0]["channel"] == 17
    assert "channel" not in encoded[1]
    loaded = Checkpoint(tmp_path / "checkpoint.json", "boot-a")
    loaded.load()
    assert loaded.claims["u1"] == record


@pytest.mark.parametrize("value", ["17", 1.5, True])
def test_a_channel_that_is_not_an_integer_is_refused(value: Any) -> None:
    data = {**DAEMON.to_json(), "channel": value}
    with pytest.raises(ValueError, match="channel must be an integer"):
        ClaimDevice.from_json(data)
