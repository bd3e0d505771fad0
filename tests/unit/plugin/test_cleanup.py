"""The stale-claim sweep: claims gone or replaced lose their CDI spec and record, others keep them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from computedomain.plugin.cleanup import Sweeper
from computedomain.plugin.kubelet.driver import ClaimRef
from support.plugindriver import install_imex_tools
from support.pluginview import MemoryView, allocated_claim, channel_config, daemon_config, make_core
from support.waiting import eventually


async def test_sweep_releases_claims_gone_or_replaced_and_keeps_the_rest(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(), wait=0.1)
    domain = node.view.add_domain("team", "cd")
    refs = {}
    for name in ("kept", "deleted", "replaced", "abandoned", "waiting"):
        # Each on a pool of its own, so that no two of them ask for the same device.
        claim = node.view.add_claim(
            allocated_claim("team", name, "channel-0", channel_config(domain.uid), node=f"pool-{name}")
        )
        refs[name] = ClaimRef("team", name, claim["metadata"]["uid"])
    await node.core.prepare([refs["abandoned"], refs["waiting"]])  # time out: stay PrepareStarted
    node.view.set_ready(domain.uid)
    await node.core.prepare([refs["kept"], refs["deleted"], refs["replaced"]])
    del node.view.claims[("team", "deleted")]
    del node.view.claims[("team", "abandoned")]
    node.view.add_claim(allocated_claim("team", "replaced", "channel-0", channel_config(domain.uid)))
    clock = time.time() + 1000
    sweeper = Sweeper(node.core, node.view, interval=60, stale_after=300, clock=lambda: clock)

    released = await sweeper.sweep_once()

    assert set(released) == {refs["deleted"].uid, refs["replaced"].uid, refs["abandoned"].uid}
    # An unfinished prepare long past the limit stays while its claim exists: the kubelet retries it.
    assert set(node.checkpoint.claims) == {refs["kept"].uid, refs["waiting"].uid}
    assert node.specs.claim_uids() == {refs["kept"].uid}


async def test_a_prepare_that_completes_while_the_sweep_waits_keeps_its_spec(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(), wait=5.0)
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    uid = claim["metadata"]["uid"]
    prepare = asyncio.create_task(node.core.prepare([ClaimRef("team", "c", uid)]))

    async def waiting() -> bool:
        return uid in node.checkpoint.claims

    await eventually(waiting, timeout=1.0, interval=0.01, what="prepare waiting in the gate")
    clock = time.time() + 1000  # the retried prepare began long ago
    sweeper = Sweeper(node.core, node.view, interval=60, stale_after=300, clock=lambda: clock)
    sweep = asyncio.create_task(sweeper.sweep_once())

    async def sweep_waits() -> bool:
        return node.core.lock_users(uid) == 2  # the prepare holds the claim's lock, the sweep awaits it

    await eventually(sweep_waits, timeout=1.0, interval=0.01, what="the sweep waiting behind the prepare")
    node.view.set_ready(domain.uid)

    assert (await prepare)[uid].error == ""
    assert await sweep == []
    assert node.checkpoint.claims[uid].state == "PrepareCompleted"
    assert node.specs.claim_uids() == {uid}


async def test_sweep_removes_config_folders_no_prepared_claim_uses(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView())
    install_imex_tools(tmp_path)
    live = node.view.add_domain("computedomain-system", "live")
    used = node.view.add_domain("computedomain-system", "used-but-deleted")
    unused = node.view.add_domain("computedomain-system", "unused")
    claims = {}
    for domain in (live, used, unused):
        claim = node.view.add_claim(
            allocated_claim(
                "computedomain-system",
                domain.name,
                "daemon-0",
                daemon_config(domain.uid),
                request="daemon",
                node=f"pool-{domain.name}",  # no two daemons on one device
            )
        )
        claims[domain.name] = ClaimRef("computedomain-system", domain.name, claim["metadata"]["uid"])
        assert (await node.core.prepare([claims[domain.name]]))[claims[domain.name].uid].error == ""
    gone = node.core.paths.domain_dir("gone-domain")
    gone.mkdir(parents=True)
    del node.view.domains[used.uid]
    # The daemon of a domain that still exists left this node: its folder is no longer used.
    await node.core.unprepare([claims["unused"]])
    reads = list(node.view.domain_reads)

    await Sweeper(node.core, node.view, interval=60, stale_after=300).sweep_once()

    assert node.core.paths.domain_dir(live.uid).is_dir()
    assert node.core.paths.domain_dir(used.uid).is_dir()  # a prepared claim still uses it
    assert not node.core.paths.domain_dir(unused.uid).exists()
    assert not gone.exists()
    assert node.view.domain_reads == reads  # nothing asked whether a domain exists


async def test_specs_of_a_previous_boot_are_removed(tmp_path: Path) -> None:
    before = make_core(tmp_path, MemoryView(), boot="boot-1")
    domain = before.view.add_domain("team", "cd")
    before.view.set_ready(domain.uid)
    claim = before.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    await before.core.prepare([ClaimRef("team", "c", claim["metadata"]["uid"])])

    after = make_core(tmp_path, MemoryView(), boot="boot-2")
    assert after.checkpoint.claims == {}
    await Sweeper(after.core, after.view, interval=60, stale_after=300).sweep_once()

    assert after.specs.claim_uids() == set()
