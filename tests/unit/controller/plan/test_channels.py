"""The channel pool of clique mode: unique per clique, first come first served, channel 0 never given."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

from computedomain.api import names
from computedomain.controller.plan.channels import (
    ChannelClaim,
    Holding,
    holding_of,
    plan_channels,
    plan_clique,
    queues,
    stamp,
)

CLIQUE = "cluster.1"
OTHER = "cluster.2"
NODES = {"n1": CLIQUE, "n2": CLIQUE, "n3": OTHER, "plain": ""}


def claim(domain: str, node: str, at: str, uid: str = "", created: str = "", seen: str = "") -> ChannelClaim:
    return ChannelClaim(
        domain=domain,
        namespace="ns",
        node=node,
        allocated_at=at,
        created=created or at,
        uid=uid or f"{domain}-{node}-{at}",
        seen=seen,
    )


def eligible(*domains: str) -> dict[str, str]:
    return dict.fromkeys(domains, "ns")


def order(claims: list[ChannelClaim], allowed: dict[str, str], holdings: Sequence[Holding] = ()) -> list[str]:
    """The queue of CLIQUE: its domains in order."""
    return [uid for uid, _ in queues(claims, NODES, allowed, holdings)[CLIQUE]]


def settle(
    claims: list[ChannelClaim],
    nodes: dict[str, str],
    holdings: list[Holding],
    allowed: dict[str, str],
    size: int,
) -> list[Holding]:
    """Reconcile every domain once, in a random order, writing each plan as the reconciler does."""
    current = {(h.domain, h.clique): h for h in holdings}
    for domain in random.sample(sorted(allowed), len(allowed)):
        plan = plan_channels(domain, claims, nodes, list(current.values()), allowed, size)
        for clique in plan.release:
            current.pop((domain, clique), None)
        for clique in plan.waiting:
            current[domain, clique] = Holding(domain, clique, None)
        for clique, channel in plan.channels.items():
            current[domain, clique] = Holding(domain, clique, channel)
    return list(current.values())


def assert_unique(holdings: list[Holding]) -> None:
    seen: set[tuple[str, int]] = set()
    for holding in holdings:
        if holding.channel is None:
            continue
        assert holding.channel >= 1, holding
        key = (holding.clique, holding.channel)
        assert key not in seen, f"channel {holding.channel} of {holding.clique} given twice"
        seen.add(key)


def test_two_domains_in_one_clique_get_different_channels_from_1() -> None:
    claims = [claim("a", "n1", "T1"), claim("b", "n1", "T2")]
    a = plan_channels("a", claims, NODES, [], eligible("a", "b"), 2048)
    b = plan_channels(
        "b", claims, NODES, [Holding("a", CLIQUE, a.channels[CLIQUE])], eligible("a", "b"), 2048
    )

    assert a.channels == {CLIQUE: 1}
    assert b.channels == {CLIQUE: 2}


def test_first_come_first_served_when_the_pool_is_short() -> None:
    # Pool of 3: channels 1 and 2 only. c came last and waits, whichever domain plans first.
    claims = [claim("c", "n2", "T3"), claim("a", "n1", "T1"), claim("b", "n2", "T2")]
    allowed = eligible("a", "b", "c")
    c = plan_channels("c", claims, NODES, [], allowed, 3)
    b = plan_channels("b", claims, NODES, [], allowed, 3)

    assert c.waiting == (CLIQUE,)
    assert c.channels == {}
    assert b.channels == {CLIQUE: 2}
    assert order(claims, allowed) == ["a", "b", "c"]


def test_ties_are_broken_by_creation_time_then_uid() -> None:
    claims = [
        claim("z", "n1", "T1", uid="1", created="C1"),
        claim("y", "n1", "T1", uid="2", created="C0"),
        claim("x", "n1", "T1", uid="0", created="C1"),
    ]
    assert order(claims, eligible("x", "y", "z")) == ["y", "x", "z"]


def test_unknown_allocation_time_falls_back_to_creation_time() -> None:
    claims = [claim("late", "n1", "", created="T9"), claim("early", "n1", "", created="T1")]
    assert order(claims, eligible("late", "early")) == ["early", "late"]


def test_holders_keep_their_channel_even_ahead_of_the_queue() -> None:
    claims = [claim("a", "n1", "T1"), claim("b", "n1", "T2")]
    held = [Holding("b", CLIQUE, 1)]
    plan = plan_channels("a", claims, NODES, held, eligible("a", "b"), 3)

    assert plan.channels == {CLIQUE: 2}


def test_channel_0_is_never_given_and_a_full_pool_queues() -> None:
    decided = plan_clique(["a", "b"], [Holding("x", CLIQUE, 0)], 2)

    assert decided.channels == {"a": 1}
    assert decided.waiting == ("b",)


def test_a_doubly_held_channel_stays_with_the_first_in_queue() -> None:
    decided = plan_clique(["a", "b"], [Holding("b", CLIQUE, 1), Holding("a", CLIQUE, 1)], 3)

    assert decided.channels == {"a": 1, "b": 2}


def test_release_only_when_no_claim_is_left_in_the_clique() -> None:
    held = [Holding("a", CLIQUE, 1), Holding("a", OTHER, 1)]
    still = plan_channels("a", [claim("a", "n2", "T1")], NODES, held, eligible("a"), 8)
    gone = plan_channels("a", [], NODES, held, eligible("a"), 8)

    assert still.release == (OTHER,)
    assert still.channels == {CLIQUE: 1}
    assert gone.release == (CLIQUE, OTHER)


def test_a_claim_on_a_node_that_left_the_clique_keeps_the_channel() -> None:
    held = [Holding("a", CLIQUE, 1), Holding("b", CLIQUE, None)]
    claims = [claim("a", "gone", "T1"), claim("b", "n1", "T2")]
    kept = plan_channels("a", claims, NODES, held, eligible("a", "b"), 2, {"gone": CLIQUE})
    waiting = plan_channels("b", claims, NODES, held, eligible("a", "b"), 2, {"gone": CLIQUE})
    forgotten = plan_channels("a", claims, NODES, held, eligible("a", "b"), 2)

    # The node's pods may still hold channel 1: nothing is released, and b waits.
    assert kept.release == ()
    assert kept.nodes == {"gone": ""}
    assert waiting.waiting == (CLIQUE,)
    assert forgotten.release == (CLIQUE,)


def test_the_nodes_an_object_recorded_keep_its_channel_after_a_restart() -> None:
    # n2 left the clique while no controller watched (or before this one started): the object says
    # a's claims were there, so the channel is held until the claim on n2 goes.
    nodes = {**NODES, "n2": ""}
    held = [Holding("a", CLIQUE, 1, nodes=("n1", "n2")), Holding("b", CLIQUE, None)]
    claims = [claim("a", "n2", "T1"), claim("b", "n1", "T2")]
    kept = plan_channels("a", claims, nodes, held, eligible("a", "b"), 2)
    assert kept.release == ()
    assert plan_channels("b", claims, nodes, held, eligible("a", "b"), 2).waiting == (CLIQUE,)
    # Once the claim on n2 goes, so does the channel.
    gone = plan_channels("a", claims[1:], nodes, held, eligible("a", "b"), 2)
    assert gone.release == (CLIQUE,)


def test_a_plan_lists_the_nodes_of_each_clique_to_record() -> None:
    claims = [
        claim("a", "n1", "T1"),
        claim("a", "n2", "T1"),
        claim("a", "n3", "T1"),
        claim("a", "gone", "T1"),
    ]
    plan = plan_channels("a", claims, NODES, [], eligible("a"), 4, {"gone": CLIQUE})
    assert plan.clique_nodes == {CLIQUE: ("gone", "n1", "n2"), OTHER: ("n3",)}


def test_released_channel_goes_to_the_first_waiting_domain() -> None:
    claims = [claim("b", "n1", "T2"), claim("c", "n1", "T3")]
    held = [Holding("b", CLIQUE, 2), Holding("c", CLIQUE, None)]  # a (channel 1) was just deleted
    plan = plan_channels("c", claims, NODES, held, eligible("b", "c"), 3)

    assert plan.channels == {CLIQUE: 1}


def test_restart_plans_the_same_from_the_objects() -> None:
    claims = [claim(d, "n1", f"T{i}") for i, d in enumerate("abcd")]
    allowed = eligible(*"abcd")
    first = settle(claims, NODES, [], allowed, 4)
    again = settle(claims, NODES, first, allowed, 4)

    assert sorted(first, key=repr) == sorted(again, key=repr)
    assert {h.domain: h.channel for h in first} == {"a": 1, "b": 2, "c": 3, "d": None}


def test_claims_outside_the_domain_namespace_or_without_a_clique_take_nothing() -> None:
    foreign = ChannelClaim("a", "elsewhere", "n1", "T1", "T1", "u1")
    plain = claim("a", "plain", "T1")
    plan = plan_channels("a", [foreign, plain], NODES, [], eligible("a"), 8)

    assert plan.channels == {}
    assert plan.waiting == ()
    assert plan.nodes == {"n1": CLIQUE, "plain": ""}


def test_ineligible_domains_do_not_hold_up_the_queue() -> None:
    claims = [claim("all", "n1", "T1"), claim("b", "n1", "T2")]
    plan = plan_channels("b", claims, NODES, [], eligible("b"), 2)

    assert plan.channels == {CLIQUE: 1}


def test_channels_stay_unique_per_clique_under_random_histories() -> None:
    rng = random.Random(20260818)
    nodes = {f"n{i}": f"c{i % 3}" for i in range(9)}
    for _ in range(300):
        size = rng.randint(2, 6)
        domains = [f"d{i}" for i in range(rng.randint(1, 9))]
        holdings: list[Holding] = []
        # Junk the cluster may hold: duplicated channels, channel 0, channels past a shrunk pool.
        for _ in range(rng.randint(0, 3)):
            holdings.append(Holding(rng.choice(domains), f"c{rng.randint(0, 2)}", rng.randint(0, size + 1)))
        deduped = {(h.domain, h.clique): h for h in holdings}
        holdings = list(deduped.values())
        for step in range(6):
            claims = [
                claim(d, rng.choice(sorted(nodes)), f"T{rng.randint(0, 20):02d}")
                for d in domains
                for _ in range(rng.randint(0, 2))
            ]
            random.seed(step)
            holdings = settle(claims, nodes, holdings, eligible(*domains), size)
            valid = [h for h in holdings if h.channel is None or h.channel >= 1]
            assert_unique(valid)


def test_holding_of_reads_labels_and_channel() -> None:
    obj = {
        "metadata": {"labels": {names.DOMAIN_LABEL: "u", names.CLIQUE_LABEL: CLIQUE}},
        "channel": 5,
    }
    assert holding_of(obj) == Holding("u", CLIQUE, 5)
    assert holding_of({"metadata": {"labels": {names.DOMAIN_LABEL: "u"}}}) is None


# Two jobs submitted within one second: the API server's times have whole seconds only.
SECOND = "2026-12-07T10:00:00Z"


def test_domains_of_one_second_are_served_in_the_order_their_claims_were_seen() -> None:
    # "a" has the lower UID and the same allocation second, but the watch saw "b"'s claim first.
    claims = [
        claim("a", "n1", SECOND, uid="0", seen="2026-12-07T10:00:00.700000Z"),
        claim("b", "n1", SECOND, uid="1", seen="2026-12-07T10:00:00.300000Z"),
    ]
    assert order(claims, eligible("a", "b")) == ["b", "a"]
    plan = plan_channels("a", claims, NODES, [], eligible("a", "b"), 2)
    assert plan.waiting == (CLIQUE,)
    assert plan.queued == {CLIQUE: "2026-12-07T10:00:00.700000Z"}
    assert plan_channels("b", claims, NODES, [], eligible("a", "b"), 2).channels == {CLIQUE: 1}


def test_a_claim_seen_late_keeps_its_second() -> None:
    # "slow" was seen after its second ended, "fast" within it: the allocation second comes first,
    # and the watch's order within it.
    claims = [
        claim("slow", "n1", SECOND, seen="2026-12-07T10:00:01.050000Z"),
        claim("fast", "n1", SECOND, seen="2026-12-07T10:00:00.600000Z"),
        claim("next", "n2", "2026-12-07T10:00:01Z", seen="2026-12-07T10:00:01.010000Z"),
    ]
    assert order(claims, eligible("slow", "fast", "next")) == ["fast", "slow", "next"]
    assert dict(queues(claims, NODES, eligible("slow"))[CLIQUE]) == {"slow": "2026-12-07T10:00:01.050000Z"}


def test_the_recorded_queue_time_outranks_what_a_restarted_controller_sees() -> None:
    # After a restart both claims come from the first list (nothing seen): the objects keep the order.
    claims = [claim("a", "n1", SECOND, uid="0"), claim("b", "n1", SECOND, uid="1")]
    held = [
        Holding("a", CLIQUE, None, "2026-12-07T10:00:00.700000Z"),
        Holding("b", CLIQUE, None, "2026-12-07T10:00:00.300000Z"),
    ]
    assert order(claims, eligible("a", "b"), held) == ["b", "a"]
    assert plan_channels("b", claims, NODES, held, eligible("a", "b"), 2).channels == {CLIQUE: 1}


def test_a_domain_queues_at_its_first_claim_in_the_clique() -> None:
    claims = [
        claim("a", "n1", SECOND, seen="2026-12-07T10:00:00.500000Z"),
        claim("a", "n2", SECOND, seen="2026-12-07T10:00:00.100000Z"),
        claim("a", "n3", SECOND, seen="2026-12-07T10:00:00.050000Z"),  # another clique
    ]
    plan = plan_channels("a", claims, NODES, [], eligible("a"), 2)
    assert plan.queued == {CLIQUE: "2026-12-07T10:00:00.100000Z", OTHER: "2026-12-07T10:00:00.050000Z"}


def test_an_object_written_before_queue_times_keeps_its_claims_place() -> None:
    claims = [claim("old", "n1", "2026-12-07T09:59:59Z"), claim("new", "n1", SECOND)]
    held = [Holding("old", CLIQUE, None), Holding("new", CLIQUE, None, "2026-12-07T09:59:59.000001Z")]
    assert order(claims, eligible("old", "new"), held) == ["old", "new"]
    # Nothing known of when it came: nothing to record.
    assert plan_channels("old", claims, NODES, held, eligible("old", "new"), 2).queued == {CLIQUE: ""}


def test_queue_stamps_sort_as_text_in_time_order() -> None:
    moments = [datetime(2026, 12, 7, 10, 0, 0, micro, tzinfo=UTC) for micro in (0, 5, 500000, 999999)]
    stamps = [stamp(moment) for moment in moments]
    assert stamps == sorted(stamps)
    assert stamps[0] == "2026-12-07T10:00:00.000000Z"
