"""The kubelet plugin's core against an in-memory cluster: prepare, gate, CDI specs, unprepare."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from computedomain.plugin.gate import STATE_FILE_NAME, STATE_MAX_AGE
from computedomain.plugin.kubelet.driver import ClaimRef
from support.plugindriver import install_driver, install_imex_tools
from support.pluginview import MemoryView, Node, allocated_claim, channel_config, daemon_config, make_core
from support.waiting import eventually


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_core(tmp_path, MemoryView())


def ref(claim: dict[str, Any]) -> ClaimRef:
    meta = claim["metadata"]
    return ClaimRef(meta["namespace"], meta["name"], meta["uid"])


async def test_channel_claim_gets_channel_zero_once_the_daemon_is_ready(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(allocated_claim("team", "job-0", "channel-0", channel_config(domain.uid)))

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    uid = claim["metadata"]["uid"]
    assert outcome.error == ""
    [device] = outcome.devices
    assert (device.request, device.pool, device.device) == ("channel", "node-a", "channel-0")
    assert device.cdi_device_ids == (f"k8s.compute-domain.nvidia.com/claim={uid}-channel-0",)
    spec = node.spec(claim)
    assert spec["kind"] == "k8s.compute-domain.nvidia.com/claim"
    assert spec["cdiVersion"] in ("0.3.0", "0.5.0")
    assert spec["devices"] == [
        {
            "name": f"{uid}-channel-0",
            "containerEdits": {
                "deviceNodes": [
                    {
                        "path": "/dev/nvidia-caps-imex-channels/channel0",
                        "type": "c",
                        "major": 234,
                        "minor": 0,
                        "fileMode": 0o666,
                    }
                ]
            },
        }
    ]
    assert node.checkpoint.claims[uid].state == "PrepareCompleted"


async def test_allocation_mode_all_gives_every_channel(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid, "All")))

    await node.core.prepare([ref(claim)])

    nodes = node.spec(claim)["devices"][0]["containerEdits"]["deviceNodes"]
    assert len(nodes) == 2048
    assert nodes[2047]["path"] == "/dev/nvidia-caps-imex-channels/channel2047"
    assert [n["minor"] for n in nodes] == list(range(2048))


async def test_node_without_clique_prepares_without_a_channel_device(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(clique=""))
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    assert outcome.error == ""
    assert outcome.devices[0].cdi_device_ids == ()
    assert not node.specs.path(claim["metadata"]["uid"]).exists()


def daemon_claim(node: Node) -> dict[str, Any]:
    domain = node.view.add_domain("team", "cd")
    return node.view.add_claim(
        allocated_claim("computedomain-system", "d", "daemon-0", daemon_config(domain.uid), request="daemon")
    )


async def test_daemon_claim_gets_domain_environment_config_dir_capability_and_driver(node: Node) -> None:
    install_driver(node.root)
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(
        allocated_claim("computedomain-system", "d", "daemon-0", daemon_config(domain.uid), request="daemon")
    )
    # A daemon claim lives in the operator's namespace, its domain in the workload's; it is not gated.

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    assert outcome.error == ""
    edits = node.spec(claim)["devices"][0]["containerEdits"]
    assert set(edits["env"]) == {
        "CLIQUE_ID=cluster-a.1",
        f"COMPUTE_DOMAIN_UUID={domain.uid}",
        "COMPUTE_DOMAIN_NAME=cd",
        "COMPUTE_DOMAIN_NAMESPACE=team",
        "IMEX_CONFIG_DIR=/imexd",
        "NVIDIA_VISIBLE_DEVICES=void",
        "LD_LIBRARY_PATH=/usr/lib64",
    }
    # The capability device with the mode the driver gives it (DeviceFileMode 256: root only).
    assert edits["deviceNodes"] == [
        {"path": "/dev/nvidia-caps/nvidia-cap7", "type": "c", "major": 235, "minor": 7, "fileMode": 0o400}
    ]
    config_dir = node.root / "state" / "domains" / domain.uid
    assert config_dir.is_dir()
    assert edits["mounts"][0] == {
        "hostPath": str(config_dir),
        "containerPath": "/imexd",
        "options": ["rw", "nosuid", "nodev", "bind"],
    }
    # The driver's management set: library (and its .so.1 link), tools, from the host's driver root.
    ro = ["ro", "nosuid", "nodev", "rbind", "rprivate"]
    assert [(m["hostPath"], m["containerPath"], m["options"]) for m in edits["mounts"][1:]] == [
        ("/host/driver/usr/lib64/libnvidia-ml.so.580.82.07", "/usr/lib64/libnvidia-ml.so.580.82.07", ro),
        ("/host/driver/usr/lib64/libnvidia-ml.so.580.82.07", "/usr/lib64/libnvidia-ml.so.1", ro),
        ("/host/driver/usr/bin/nvidia-imex", "/usr/bin/nvidia-imex", ro),
        ("/host/driver/usr/bin/nvidia-imex-ctl", "/usr/bin/nvidia-imex-ctl", ro),
        ("/dev/null", "/var/run/nvidia-container-devices/void", ["ro", "nosuid", "nodev", "bind"]),
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")
async def test_daemon_claim_gets_the_drivers_device_nodes_once_each(node: Node) -> None:
    install_driver(node.root)
    dev = node.root / "driver" / "dev"
    (dev / "nvidia-caps").mkdir(parents=True)
    for path, number, mode in (
        (dev / "nvidiactl", (195, 255), 0o666),
        (dev / "nvidia0", (195, 0), 0o666),
        (dev / "nvidia-caps" / "nvidia-cap7", (235, 7), 0o400),
    ):
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(*number))
        os.chmod(path, mode)
    claim = daemon_claim(node)

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    assert outcome.error == ""
    nodes = node.spec(claim)["devices"][0]["containerEdits"]["deviceNodes"]
    # The capability first (from procfs); the same path under dev/ is not given twice.
    assert nodes == [
        {"path": "/dev/nvidia-caps/nvidia-cap7", "type": "c", "major": 235, "minor": 7, "fileMode": 0o400},
        {
            "path": "/dev/nvidia0",
            "hostPath": "/host/driver/dev/nvidia0",
            "type": "c",
            "major": 195,
            "minor": 0,
            "fileMode": 0o666,
        },
        {
            "path": "/dev/nvidiactl",
            "hostPath": "/host/driver/dev/nvidiactl",
            "type": "c",
            "major": 195,
            "minor": 255,
            "fileMode": 0o666,
        },
    ]


async def test_missing_imex_tools_fail_the_daemon_claim_naming_every_path_searched(node: Node) -> None:
    # make_core's driver root has nvidia-imex (made executable here) but not nvidia-imex-ctl.
    driver = node.root / "driver"
    (driver / "usr" / "bin" / "nvidia-imex").chmod(0o755)
    claim = daemon_claim(node)

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    assert outcome.devices == ()
    assert outcome.error.startswith("ResourceClaim computedomain-system/d: nvidia-imex-ctl not found under")
    searched = [f"{driver}/{d}/nvidia-imex-ctl" for d in ("usr/local/sbin", "usr/local/bin", "usr/sbin")]
    searched += [f"{driver}/{d}/nvidia-imex-ctl" for d in ("usr/bin", "sbin", "bin")]
    assert ", ".join(searched) in outcome.error
    assert "the host's /host/driver" in outcome.error
    assert not node.specs.path(claim["metadata"]["uid"]).exists()

    # Neither tool (nvidia-imex is there but cannot run): both are named, each with its paths.
    (driver / "usr" / "bin" / "nvidia-imex").chmod(0o644)
    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]
    assert "nvidia-imex and nvidia-imex-ctl not found under" in outcome.error
    assert f"nvidia-imex in {driver}/usr/local/sbin/nvidia-imex," in outcome.error
    assert f"{driver}/bin/nvidia-imex-ctl" in outcome.error
    assert f"({driver}/usr/bin/nvidia-imex present but not an executable file)" in outcome.error


async def test_daemon_claim_on_a_node_without_clique_needs_no_driver(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(clique=""))
    (tmp_path / "driver" / "usr" / "bin" / "nvidia-imex").unlink()
    claim = daemon_claim(node)

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    assert outcome.error == ""
    edits = node.spec(claim)["devices"][0]["containerEdits"]
    assert "deviceNodes" not in edits
    assert [m["containerPath"] for m in edits["mounts"]] == ["/imexd"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c, d: c.update(kind="FancyConfig"), "unknown config kind 'FancyConfig'"),
        (lambda c, d: c.update(unexpectedField=1), "unexpectedField: Extra inputs are not permitted"),
        (lambda c, d: c.update(domainID=""), "domainID cannot be empty"),
        (lambda c, d: c.update(domainID="0000-missing"), "no ComputeDomain has that UID"),
        (
            lambda c, d: d.update(namespace="other"),
            "is in namespace other, not in the claim's namespace team",
        ),
    ],
)
async def test_bad_claims_are_refused_with_a_clear_message(node: Node, mutate: Any, expected: str) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    params = channel_config(domain.uid)
    fields = {"namespace": "team"}
    mutate(params, fields)
    node.view.domains[domain.uid] = type(domain)(domain.uid, fields["namespace"], "cd")
    claim = node.view.add_claim(allocated_claim("team", "bad", "channel-0", params))
    good = node.view.add_claim(allocated_claim("team", "good", "channel-0", channel_config(domain.uid)))
    if fields["namespace"] != "team":
        good = node.view.add_claim(allocated_claim("other", "good", "channel-0", channel_config(domain.uid)))

    outcomes = await node.core.prepare([ref(claim), ref(good)])

    assert expected in outcomes[claim["metadata"]["uid"]].error
    assert "bad" in outcomes[claim["metadata"]["uid"]].error
    assert outcomes[good["metadata"]["uid"]].error == ""
    assert not node.specs.path(claim["metadata"]["uid"]).exists()


async def test_claim_without_config_or_gone_or_replaced_is_refused(node: Node) -> None:
    bare = node.view.add_claim(allocated_claim("team", "bare", "channel-0", None))
    replaced = node.view.add_claim(allocated_claim("team", "replaced", "channel-0", None))

    outcomes = await node.core.prepare(
        [ref(bare), ClaimRef("team", "gone", "uid-gone"), ClaimRef("team", "replaced", "old-uid")]
    )

    assert (
        "request 'channel': no compute-domain.nvidia.com config applies"
        in outcomes[bare["metadata"]["uid"]].error
    )
    assert "ResourceClaim team/gone does not exist" in outcomes["uid-gone"].error
    assert f"has UID {replaced['metadata']['uid']}, not old-uid" in outcomes["old-uid"].error


async def test_gate_waits_inside_the_call_and_releases_within_a_second(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(
        allocated_claim(
            "team", "c", "channel-0", channel_config(domain.uid), pods=(("w-0", "u0"), ("w-1", "u1"))
        )
    )
    started = time.monotonic()
    task = asyncio.create_task(node.core.prepare([ref(claim)]))

    async def waited() -> bool:
        return len(node.view.events) >= 4

    await eventually(waited, timeout=2.0, interval=0.05, what="waiting events on both pods")
    assert not task.done()
    ready_at = time.monotonic()
    node.view.set_ready(domain.uid)

    outcome = (await task)[claim["metadata"]["uid"]]

    assert time.monotonic() - ready_at < 1.0
    assert outcome.error == ""
    waiting = [e for e in node.view.events if e["reason"] == "WaitingForIMEXDaemon"]
    assert {e["involvedObject"]["name"] for e in waiting} == {"w-0", "w-1"}
    assert all(
        e["type"] == "Normal" and "ComputeDomain team/cd on node node-a" in e["message"] for e in waiting
    )
    # Rate-limited to one event per pod per 0.2 s, however often the waiter wakes up.
    elapsed = time.monotonic() - started
    assert len(waiting) <= 2 * (elapsed / 0.2 + 1)


async def test_gate_releases_when_the_daemon_writes_ready_before_its_pod_is_ready(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    state_dir = node.core.paths.domain_dir(domain.uid)
    state_dir.mkdir(parents=True)
    state = state_dir / STATE_FILE_NAME
    state.write_text(json.dumps({"ready": False, "since": time.time(), "pid": 9, "checked": time.time()}))
    task = asyncio.create_task(node.core.prepare([ref(claim)]))

    async def waiting() -> bool:
        return bool(node.view.events)

    await eventually(waiting, timeout=2.0, interval=0.02, what="the claim waiting for its daemon")
    assert not task.done()
    written = time.monotonic()
    state.write_text(json.dumps({"ready": True, "since": time.time(), "pid": 9, "checked": time.time()}))

    outcome = (await task)[claim["metadata"]["uid"]]

    # The view's pod never became Ready: the file alone released the claim, within a few polls.
    assert not node.view.daemon_ready(domain.uid)
    assert outcome.error == ""
    assert time.monotonic() - written < 0.5


async def test_gate_ignores_a_stale_ready_state(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(), wait=0.3)
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    state_dir = node.core.paths.domain_dir(domain.uid)
    state_dir.mkdir(parents=True)
    left = time.time() - STATE_MAX_AGE - 5  # written by a daemon killed long ago
    (state_dir / STATE_FILE_NAME).write_text(json.dumps({"ready": True, "since": left, "checked": left}))

    outcome = (await node.core.prepare([ref(claim)], deadline=time.monotonic() + 5))[claim["metadata"]["uid"]]

    assert "is not ready after" in outcome.error


async def test_gate_gives_up_with_a_warning_before_the_kubelet_does(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(), wait=0.3)
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    assert "IMEX daemon of ComputeDomain team/cd on node node-a is not ready after" in outcome.error
    assert [e["type"] for e in node.view.events if e["reason"] == "IMEXDaemonNotReady"] == ["Warning"]
    assert node.checkpoint.claims[claim["metadata"]["uid"]].state == "PrepareStarted"


async def test_claims_of_one_call_run_in_parallel(node: Node) -> None:
    slow = node.view.add_domain("team", "slow")
    fast = node.view.add_domain("team", "fast")
    node.view.set_ready(fast.uid)
    waiting = node.view.add_claim(allocated_claim("team", "w", "channel-0", channel_config(slow.uid)))
    # On another node's pool: one node gives its channel to one claim at a time.
    quick = node.view.add_claim(
        allocated_claim("team", "q", "channel-0", channel_config(fast.uid), node="node-b")
    )
    task = asyncio.create_task(node.core.prepare([ref(waiting), ref(quick)]))

    async def quick_done() -> bool:
        record = node.checkpoint.claims.get(quick["metadata"]["uid"])
        return record is not None and record.state == "PrepareCompleted"

    await eventually(quick_done, timeout=1.0, interval=0.01, what="the quick claim prepared")
    assert not task.done()
    node.view.set_ready(slow.uid)
    outcomes = await task
    assert all(o.error == "" for o in outcomes.values())


async def test_prepare_and_unprepare_are_idempotent(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    uid = claim["metadata"]["uid"]

    first = await node.core.prepare([ref(claim)])
    reads = node.view.claim_reads
    second = await node.core.prepare([ref(claim)])

    assert first == second
    assert node.view.claim_reads == reads  # answered from the checkpoint
    assert await node.core.unprepare([ref(claim)]) == {uid: ""}
    assert not node.specs.path(uid).exists()
    assert uid not in node.checkpoint.claims
    assert await node.core.unprepare([ref(claim)]) == {uid: ""}


async def test_restarted_plugin_answers_completed_claims_from_the_checkpoint(tmp_path: Path) -> None:
    first = make_core(tmp_path, MemoryView())
    domain = first.view.add_domain("team", "cd")
    first.view.set_ready(domain.uid)
    claim = first.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    before = await first.core.prepare([ref(claim)])

    again = make_core(tmp_path, MemoryView())  # same files, an empty cluster view
    after = await again.core.prepare([ref(claim)])

    assert after == before
    assert again.view.claim_reads == 0
    assert await again.core.unprepare([ref(claim)]) == {claim["metadata"]["uid"]: ""}
    assert not first.specs.path(claim["metadata"]["uid"]).exists()


async def test_unprepare_cuts_a_waiting_prepare_short(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    prepare = asyncio.create_task(node.core.prepare([ref(claim)]))

    async def started() -> bool:
        return claim["metadata"]["uid"] in node.checkpoint.claims

    await eventually(started, timeout=1.0, interval=0.01, what="prepare started")
    asked = time.monotonic()
    unprepared = await node.core.unprepare([ref(claim)])

    assert time.monotonic() - asked < 1.5  # not the whole prepare wait of 2 s
    assert unprepared == {claim["metadata"]["uid"]: ""}
    outcome = (await prepare)[claim["metadata"]["uid"]]
    assert "unprepared while it waited for the IMEX daemon" in outcome.error
    assert not node.specs.path(claim["metadata"]["uid"]).exists()
    assert node.checkpoint.claims == {}


async def test_calls_for_one_claim_queue_behind_each_other(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    order: list[str] = []

    async def call(kind: str) -> None:
        if kind == "prepare":
            await node.core.prepare([ref(claim)])
        else:
            await node.core.unprepare([ref(claim)])
        order.append(kind)

    first = asyncio.create_task(call("prepare"))

    async def started() -> bool:
        return claim["metadata"]["uid"] in node.checkpoint.claims

    await eventually(started, timeout=1.0, interval=0.01, what="prepare started")
    rest = [asyncio.create_task(call(kind)) for kind in ("unprepare", "prepare", "unprepare")]
    node.view.set_ready(domain.uid)
    await asyncio.gather(first, *rest)

    assert order == ["prepare", "unprepare", "prepare", "unprepare"]
    assert node.checkpoint.claims == {}
    assert node.core._claim_locks == {}


async def test_a_channel_prepared_for_another_claim_is_refused_until_that_claim_is_unprepared(
    node: Node,
) -> None:
    first = node.view.add_domain("team", "first")
    second = node.view.add_domain("team", "second")
    node.view.set_ready(first.uid)
    node.view.set_ready(second.uid)
    holder = node.view.add_claim(allocated_claim("team", "a", "channel-0", channel_config(first.uid)))
    other = node.view.add_claim(allocated_claim("team", "b", "channel-0", channel_config(second.uid)))
    held, uid = holder["metadata"]["uid"], other["metadata"]["uid"]
    assert (await node.core.prepare([ref(holder)]))[held].error == ""

    refused = (await node.core.prepare([ref(other)]))[uid]

    assert refused.devices == ()
    assert refused.error == (
        "ResourceClaim team/b: device channel-0 of pool node-a is already prepared for ResourceClaim "
        f"team/a (UID {held}); it is free again once that claim is unprepared"
    )
    assert uid not in node.checkpoint.claims
    assert node.specs.claim_uids() == {held}
    # The holder's own retry is answered as before; the other stays refused while the holder is there.
    assert (await node.core.prepare([ref(holder)]))[held].error == ""
    assert "already prepared for ResourceClaim team/a" in (await node.core.prepare([ref(other)]))[uid].error

    assert await node.core.unprepare([ref(holder)]) == {held: ""}
    assert (await node.core.prepare([ref(other)]))[uid].error == ""
    assert node.specs.claim_uids() == {uid}


async def test_a_daemon_device_of_another_domain_is_refused_and_nothing_is_made(node: Node) -> None:
    install_imex_tools(node.root)
    first = node.view.add_domain("team", "first")
    second = node.view.add_domain("team", "second")
    claims = [
        node.view.add_claim(
            allocated_claim(
                "computedomain-system", d.name, "daemon-0", daemon_config(d.uid), request="daemon"
            )
        )
        for d in (first, second)
    ]
    held, uid = (c["metadata"]["uid"] for c in claims)
    assert (await node.core.prepare([ref(claims[0])]))[held].error == ""

    error = (await node.core.prepare([ref(claims[1])]))[uid].error

    assert "device daemon-0 of pool node-a is already prepared for ResourceClaim " in error
    assert f"computedomain-system/first (UID {held})" in error
    assert not node.core.paths.domain_dir(second.uid).exists()
    assert set(node.checkpoint.claims) == {held}


async def test_a_device_whose_prepare_began_for_another_claim_is_taken(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(), wait=0.1)
    domain = node.view.add_domain("team", "cd")
    waiting = node.view.add_claim(allocated_claim("team", "w", "channel-0", channel_config(domain.uid)))
    await node.core.prepare([ref(waiting)])  # the gate times out; the kubelet will retry it
    node.view.set_ready(domain.uid)
    late = node.view.add_claim(allocated_claim("team", "late", "channel-0", channel_config(domain.uid)))

    error = (await node.core.prepare([ref(late)]))[late["metadata"]["uid"]].error

    assert "device channel-0 of pool node-a is already being prepared for ResourceClaim team/w" in error
    assert (await node.core.prepare([ref(waiting)]))[waiting["metadata"]["uid"]].error == ""


async def test_of_two_claims_racing_for_one_channel_exactly_one_gets_it(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claims = [
        node.view.add_claim(allocated_claim("team", f"c{i}", "channel-0", channel_config(domain.uid)))
        for i in range(2)
    ]

    outcomes = await node.core.prepare([ref(c) for c in claims])

    errors = sorted(o.error for o in outcomes.values())
    assert errors[0] == ""
    assert "device channel-0 of pool node-a is already" in errors[1]
    assert len(node.checkpoint.claims) == 1
    assert len(node.specs.claim_uids()) == 1
