"""The kubelet plugin's local files: /proc parsing, CDI naming and versions, the checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from computedomain.files import write_atomic
from computedomain.plugin import cdi, devices
from computedomain.plugin.checkpoint import Checkpoint, ClaimRecord, checksum, read_boot_id
from computedomain.plugin.claimdevice import ClaimDevice

PROC = """Character devices:
  1 mem
 10 misc
509 nvidia-caps-imex-channels
510 nvidia-caps

Block devices:
  8 sd
259 blkext
510 nvidia-caps-imex-channels
"""


def test_majors_come_from_the_character_section_only() -> None:
    majors = devices.parse_majors(PROC)
    assert majors["nvidia-caps-imex-channels"] == 509
    assert majors["nvidia-caps"] == 510
    assert "sd" not in majors


def test_missing_major_names_the_file_and_device(tmp_path: Path) -> None:
    path = tmp_path / "devices"
    path.write_text("Character devices:\n  1 mem\n")
    with pytest.raises(devices.DeviceError, match=r"lists no character device 'nvidia-caps-imex-channels'"):
        devices.read_major(path, devices.IMEX_CHANNELS_DEVICE)
    with pytest.raises(devices.DeviceError, match="cannot read"):
        devices.read_major(tmp_path / "absent", devices.IMEX_CHANNELS_DEVICE)


def test_capability_minor() -> None:
    assert devices.parse_capability_minor("DeviceFileMinor: 12\nDeviceFileMode: 256\n") == 12
    assert devices.parse_capability_minor("DeviceFileMode: 256\n") is None


def test_capability_device_has_the_mode_the_driver_gives_it(tmp_path: Path) -> None:
    assert devices.parse_capability_mode("DeviceFileMinor: 7\nDeviceFileMode: 256\n") == 0o400
    assert devices.parse_capability_mode("DeviceFileMinor: 7\nDeviceFileMode: 438\n") == 0o666
    assert devices.parse_capability_mode("DeviceFileMinor: 7\n") == 0o400  # the driver's default
    (tmp_path / "proc").write_text(PROC)
    caps = tmp_path / "driver" / "proc" / "driver" / "nvidia" / "capabilities"
    caps.mkdir(parents=True)
    (caps / "fabric-imex-mgmt").write_text("DeviceFileMinor: 3\nDeviceFileMode: 256\n")
    device = devices.fabric_imex_mgmt_device(tmp_path / "proc", tmp_path / "driver")
    assert device == devices.CharDevice("/dev/nvidia-caps/nvidia-cap3", 510, 3, 0o400)


def test_device_nodes_with_a_host_path_need_cdi_0_5() -> None:
    node = devices.CharDevice("/dev/nvidiactl", 195, 255, 0o666, host_path="/run/nvidia/driver/dev/nvidiactl")
    spec = cdi.render_spec("abc", [("daemon-0", cdi.Edits(device_nodes=[node]))])
    assert spec is not None
    assert spec["cdiVersion"] == "0.5.0"
    assert spec["devices"][0]["containerEdits"]["deviceNodes"] == [
        {
            "path": "/dev/nvidiactl",
            "hostPath": "/run/nvidia/driver/dev/nvidiactl",
            "type": "c",
            "major": 195,
            "minor": 255,
            "fileMode": 0o666,
        }
    ]


def test_cdi_names_follow_the_reference() -> None:
    assert cdi.qualified_name("abc", "channel-0") == "k8s.compute-domain.nvidia.com/claim=abc-channel-0"
    assert cdi.spec_file_name("abc") == "k8s.compute-domain.nvidia.com-claim_abc.json"


def test_cdi_version_is_the_minimum_the_spec_needs() -> None:
    node = cdi.Edits(device_nodes=devices.channel_devices(509, False))
    assert cdi.render_spec("abc", [("channel-0", node)])["cdiVersion"] == "0.3.0"  # type: ignore[index]
    assert cdi.render_spec("0bc", [("channel-0", node)])["cdiVersion"] == "0.5.0"  # type: ignore[index]
    assert cdi.render_spec("abc", [("channel-0", cdi.Edits())]) is None


def test_spec_store_writes_atomically_and_lists_claims(tmp_path: Path) -> None:
    store = cdi.SpecStore(tmp_path)
    store.write("u1", {"x": 1})
    store.write("u1", {"x": 2})
    assert json.loads(store.path("u1").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == [cdi.spec_file_name("u1")]  # no temporary left over
    assert store.claim_uids() == {"u1"}
    assert store.remove("u1")
    assert not store.remove("u1")


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def _record(uid: str = "u1") -> ClaimRecord:
    device = ClaimDevice(request="r", pool="n", device="channel-0", type="channel", domain_id="d")
    return ClaimRecord(
        uid=uid, namespace="ns", name="c", state="PrepareCompleted", started_at=1.0, devices=(device,)
    )


def test_checkpoint_round_trip_with_checksum(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    written = Checkpoint(path, "boot-1")
    written.put(_record())
    document = json.loads(path.read_text())
    assert document["checksum"] == checksum(document["data"])
    assert document["data"]["bootID"] == "boot-1"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    loaded = Checkpoint(path, "boot-1")
    loaded.load()
    assert loaded.claims == {"u1": _record()}


def test_checkpoint_of_another_boot_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    Checkpoint(path, "boot-1").put(_record())

    after_reboot = Checkpoint(path, "boot-2")
    after_reboot.load()

    assert after_reboot.claims == {}
    assert set(after_reboot.dropped) == {"u1"}
    assert json.loads(path.read_text())["data"] == {"version": 1, "bootID": "boot-2", "claims": {}}


@pytest.mark.parametrize("damage", ["checksum", "truncate", "shape"])
def test_corrupt_checkpoint_is_moved_aside(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "checkpoint.json"
    Checkpoint(path, "b").put(_record())
    document = json.loads(path.read_text())
    if damage == "checksum":
        document["data"]["claims"]["u1"]["name"] = "tampered"
        path.write_text(json.dumps(document))
    elif damage == "truncate":
        path.write_text(path.read_text()[:40])
    else:
        document["data"]["claims"]["u1"]["state"] = "Weird"
        document["checksum"] = checksum(document["data"])
        path.write_text(json.dumps(document))

    loaded = Checkpoint(path, "b")
    loaded.load()

    assert loaded.claims == {}
    assert (tmp_path / "checkpoint.json.corrupt").exists()
    assert not path.exists()


def test_boot_id(tmp_path: Path) -> None:
    (tmp_path / "boot_id").write_text("0a1b\n")
    assert read_boot_id(tmp_path / "boot_id") == "0a1b"
    assert read_boot_id(tmp_path / "absent") == ""
