"""Peer slots per clique: stable for members, lowest free for newcomers, bounded per clique."""

from __future__ import annotations

import random

from computedomain.api.models import CliqueDaemon, ComputeDomain, ComputeDomainClique
from computedomain.controller.plan.cliques import CliquePlan, Member, plan_cliques
from computedomain.controller.render.cliques import clique_object
from computedomain.controller.settings import Settings

UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
RACK_A = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
RACK_B = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32767"
SETTINGS = Settings(image="img", pod_name="controller-0", namespace="cd-system")
DOMAIN = ComputeDomain.model_validate(
    {
        "metadata": {"name": "train-cd", "namespace": "team-a", "uid": UID},
        "spec": {"channel": {"resourceClaimTemplate": {"name": "ch"}}},
    }
)


def member(node: str, clique: str = RACK_A, ready: bool = True, ip: str = "") -> Member:
    return Member(node=node, ip=ip or f"10.0.0.{int(node[-2:])}", clique_id=clique, ready=ready)


def nodes(count: int, first: int = 0) -> list[str]:
    return [f"gb200-n{i:02d}" for i in range(first, first + count)]


def clique_objects(plan: CliquePlan) -> list[ComputeDomainClique]:
    """What the controller would find on its next pass after applying `plan`."""
    return [
        ComputeDomainClique.model_validate(clique_object(DOMAIN, SETTINGS, clique_id, daemons))
        for clique_id, daemons in plan.cliques.items()
    ]


def indices(plan: CliquePlan, clique: str = RACK_A) -> dict[str, int | None]:
    return {d.node_name: d.index for d in plan.cliques[clique]}


def test_newcomers_take_slots_in_node_name_order() -> None:
    plan = plan_cliques([], [member(n) for n in reversed(nodes(4))], max_nodes=18)

    assert indices(plan) == {"gb200-n00": 0, "gb200-n01": 1, "gb200-n02": 2, "gb200-n03": 3}
    assert plan.overflow == {}
    assert plan.non_fabric == ()


def test_a_node_leaving_does_not_move_the_others() -> None:
    first = plan_cliques([], [member(n) for n in nodes(4)], max_nodes=18)
    remaining = [member(n) for n in nodes(4) if n != "gb200-n01"]

    second = plan_cliques(clique_objects(first), remaining, max_nodes=18)

    assert indices(second) == {"gb200-n00": 0, "gb200-n02": 2, "gb200-n03": 3}


def test_the_lowest_free_slot_is_reused() -> None:
    first = plan_cliques([], [member(n) for n in nodes(4)], max_nodes=18)
    without_one = plan_cliques(clique_objects(first), [member(n) for n in nodes(4) if n != "gb200-n01"], 18)
    newcomers = [member(n) for n in [*nodes(4), "gb200-n10", "gb200-n11"] if n != "gb200-n01"]

    third = plan_cliques(clique_objects(without_one), newcomers, max_nodes=18)

    assert indices(third) == {"gb200-n00": 0, "gb200-n10": 1, "gb200-n02": 2, "gb200-n03": 3, "gb200-n11": 4}


def test_a_newcomer_sorting_first_does_not_take_a_held_slot() -> None:
    first = plan_cliques([], [member(n) for n in nodes(3, first=5)], max_nodes=18)

    second = plan_cliques(clique_objects(first), [member(n) for n in nodes(4, first=4)], max_nodes=18)

    assert indices(second) == {"gb200-n05": 0, "gb200-n06": 1, "gb200-n07": 2, "gb200-n04": 3}


def test_overflow_beyond_eighteen() -> None:
    plan = plan_cliques([], [member(n) for n in nodes(20)], max_nodes=18)

    assert sorted(i for i in indices(plan).values() if i is not None) == list(range(18))
    assert plan.overflow == {RACK_A: ("gb200-n18", "gb200-n19")}


def test_an_overflowed_node_gets_a_slot_once_one_frees() -> None:
    first = plan_cliques([], [member(n) for n in nodes(20)], max_nodes=18)
    members = [member(n) for n in nodes(20) if n != "gb200-n03"]

    second = plan_cliques(clique_objects(first), members, max_nodes=18)

    assert indices(second)["gb200-n18"] == 3
    assert second.overflow == {RACK_A: ("gb200-n19",)}


def test_cliques_are_independent() -> None:
    members = [member(n, RACK_A) for n in nodes(2)] + [member(n, RACK_B) for n in nodes(2, first=18)]

    plan = plan_cliques([], members, max_nodes=1)

    assert indices(plan, RACK_A) == {"gb200-n00": 0}
    assert indices(plan, RACK_B) == {"gb200-n18": 0}
    assert plan.overflow == {RACK_A: ("gb200-n01",), RACK_B: ("gb200-n19",)}


def test_non_fabric_nodes_get_index_minus_one_and_no_clique() -> None:
    plan = plan_cliques([], [member("h100-n07", clique="", ready=False), member("gb200-n01")], max_nodes=18)

    assert list(plan.cliques) == [RACK_A]
    assert plan.non_fabric == (
        CliqueDaemon(node_name="h100-n07", ip_address="10.0.0.7", clique_id="", index=-1, status="NotReady"),
    )


def test_a_node_that_changes_clique_starts_over() -> None:
    first = plan_cliques([], [member(n) for n in nodes(3)], max_nodes=18)

    second = plan_cliques(clique_objects(first), [member("gb200-n02", RACK_B)], max_nodes=18)

    assert list(second.cliques) == [RACK_B]
    assert indices(second, RACK_B) == {"gb200-n02": 0}


def test_invalid_and_duplicate_slots_are_reassigned() -> None:
    # As a daemon of NVIDIA's might have left them: a clash, an index beyond the clique, none at all.
    found = ComputeDomainClique.model_validate(
        {
            "metadata": {"labels": {"resource.nvidia.com/computeDomain.cliqueID": RACK_A}},
            "daemons": [
                {"nodeName": "gb200-n00", "ipAddress": "a", "cliqueID": RACK_A, "index": 1},
                {"nodeName": "gb200-n01", "ipAddress": "b", "cliqueID": RACK_A, "index": 1},
                {"nodeName": "gb200-n02", "ipAddress": "c", "cliqueID": RACK_A, "index": 40},
                {"nodeName": "gb200-n03", "ipAddress": "d", "cliqueID": RACK_A},
            ],
        }
    )

    plan = plan_cliques([found], [member(n) for n in nodes(4)], max_nodes=18)

    assert indices(plan) == {"gb200-n00": 1, "gb200-n01": 0, "gb200-n02": 2, "gb200-n03": 3}


def test_one_entry_per_node_preferring_the_ready_pod() -> None:
    old = member("gb200-n01", ready=False, ip="10.0.9.1")
    new = member("gb200-n01", ready=True, ip="10.0.9.2")

    for order in ([old, new], [new, old]):
        plan = plan_cliques([], order, max_nodes=18)
        assert [(d.ip_address, d.status) for d in plan.cliques[RACK_A]] == [("10.0.9.2", "Ready")]


def test_plan_does_not_depend_on_input_order() -> None:
    members = [member(n, RACK_A if i % 3 else RACK_B, ready=i % 2 == 0) for i, n in enumerate(nodes(30))]
    members.append(member("h100-n99", clique=""))
    expected = plan_cliques([], members, max_nodes=8)
    shuffler = random.Random(7)

    for _ in range(5):
        shuffled = members[:]
        shuffler.shuffle(shuffled)
        assert plan_cliques([], shuffled, max_nodes=8) == expected


def test_daemons_lists_non_fabric_then_cliques_by_index() -> None:
    members = [member("gb200-n05", RACK_B), member("gb200-n01"), member("gb200-n02"), member("h100-n07", "")]

    plan = plan_cliques([], members, max_nodes=18)

    assert [(d.node_name, d.index) for d in plan.daemons()] == [
        ("h100-n07", -1),
        ("gb200-n01", 0),
        ("gb200-n02", 1),
        ("gb200-n05", 0),
    ]


def test_clique_object() -> None:
    daemons = [
        CliqueDaemon(
            node_name="gb200-n02", ip_address="10.0.0.2", clique_id=RACK_A, index=1, status="NotReady"
        ),
        CliqueDaemon(node_name="gb200-n01", ip_address="10.0.0.1", clique_id=RACK_A, index=0, status="Ready"),
    ]

    assert clique_object(DOMAIN, SETTINGS, RACK_A, daemons) == {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomainClique",
        "metadata": {
            "name": f"{UID}.{RACK_A}",
            "namespace": "cd-system",
            "labels": {
                "resource.nvidia.com/computeDomain": UID,
                "resource.nvidia.com/computeDomain.cliqueID": RACK_A,
            },
        },
        "daemons": [
            {
                "nodeName": "gb200-n01",
                "ipAddress": "10.0.0.1",
                "cliqueID": RACK_A,
                "index": 0,
                "status": "Ready",
            },
            {
                "nodeName": "gb200-n02",
                "ipAddress": "10.0.0.2",
                "cliqueID": RACK_A,
                "index": 1,
                "status": "NotReady",
            },
        ],
    }
