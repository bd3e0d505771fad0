"""The domain status: NVIDIA's global rule, a summary, and conditions that explain a stuck domain."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.api.models import ComputeDomain
from computedomain.controller.plan.cliques import CliquePlan, Member, plan_cliques
from computedomain.controller.plan.problems import Problem
from computedomain.controller.render.status import render_status, some

UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
RACK_A = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
RACK_B = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32767"
EARLIER = "2026-05-15T10:00:00Z"
NOW = "2026-05-15T10:05:00Z"


def domain(num_nodes: int = 0, conditions: list[dict[str, Any]] | None = None) -> ComputeDomain:
    body: dict[str, Any] = {
        "metadata": {"name": "train-cd", "namespace": "team-a", "uid": UID, "generation": 3},
        "spec": {"numNodes": num_nodes, "channel": {"resourceClaimTemplate": {"name": "ch"}}},
    }
    if conditions is not None:
        body["status"] = {"status": "NotReady", "conditions": conditions}
    return ComputeDomain.model_validate(body)


def plan(*members: tuple[str, str, bool], max_nodes: int = 18) -> CliquePlan:
    return plan_cliques(
        [],
        [Member(node=n, ip=f"10.0.0.{i}", clique_id=c, ready=r) for i, (n, c, r) in enumerate(members)],
        max_nodes=max_nodes,
    )


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = (c for c in status["conditions"] if c["type"] == kind)
    assert isinstance(found, dict)
    return found


def test_whole_status_of_a_small_domain() -> None:
    status = render_status(
        domain(num_nodes=2),
        plan(("gb200-n02", RACK_A, False), ("gb200-n01", RACK_A, True), ("h100-n07", "", True)),
        [],
        generation=3,
        now=NOW,
    )

    assert status == {
        "status": "NotReady",
        "nodes": [
            {"name": "h100-n07", "ipAddress": "10.0.0.2", "cliqueID": "", "index": -1, "status": "Ready"},
            {"name": "gb200-n01", "ipAddress": "10.0.0.1", "cliqueID": RACK_A, "index": 0, "status": "Ready"},
            {
                "name": "gb200-n02",
                "ipAddress": "10.0.0.0",
                "cliqueID": RACK_A,
                "index": 1,
                "status": "NotReady",
            },
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "DaemonsNotReady",
                "message": "2 of 3 nodes ready; waiting for IMEX daemons on gb200-n02",
                "lastTransitionTime": NOW,
                "observedGeneration": 3,
            },
            {
                "type": "ChildrenReady",
                "status": "True",
                "reason": "ChildrenApplied",
                "message": "DaemonSet and ResourceClaimTemplates are in place",
                "lastTransitionTime": NOW,
                "observedGeneration": 3,
            },
        ],
        "observedGeneration": 3,
        "readyNodes": 2,
        "joinedNodes": 3,
        "cliqueCount": 1,
        "nodeSummary": "2/3",
    }


@pytest.mark.parametrize(
    ("num_nodes", "members", "expected"),
    [
        (0, [], "Ready"),  # NVIDIA's rule: an empty domain without numNodes is Ready
        (2, [("a", RACK_A, True)], "NotReady"),
        (2, [("a", RACK_A, True), ("b", RACK_A, True)], "Ready"),
        (1, [("a", RACK_A, True), ("b", "", False)], "NotReady"),
        (0, [("a", RACK_A, True), ("b", RACK_B, True), ("c", "", True)], "Ready"),
    ],
)
def test_global_status_follows_the_reference(
    num_nodes: int, members: list[tuple[str, str, bool]], expected: str
) -> None:
    assert render_status(domain(num_nodes), plan(*members), [], 1, NOW)["status"] == expected


def test_ready_domain() -> None:
    status = render_status(domain(2), plan(("a", RACK_A, True), ("b", RACK_B, True)), [], 3, NOW)
    ready = condition(status, "Ready")

    assert (ready["status"], ready["reason"]) == ("True", "DomainReady")
    assert ready["message"] == "2 of 2 nodes ready in 2 NVLink cliques"
    assert (status["cliqueCount"], status["nodeSummary"]) == (2, "2/2")


def test_waiting_for_nodes() -> None:
    status = render_status(domain(4), plan(("a", RACK_A, True), ("b", RACK_A, False)), [], 3, NOW)
    ready = condition(status, "Ready")

    assert (ready["status"], ready["reason"]) == ("False", "WaitingForNodes")
    assert ready["message"] == "2 of 4 nodes joined; waiting for 2 more; IMEX daemons not ready on b"
    assert status["nodeSummary"] == "1/4"


def test_clique_full_names_the_nodes_left_out() -> None:
    members = [(f"n{i:02d}", RACK_A, True) for i in range(4)]
    status = render_status(domain(), plan(*members, max_nodes=2), [], 3, NOW)
    ready = condition(status, "Ready")

    assert (ready["status"], ready["reason"]) == ("False", "CliqueFull")
    assert ready["message"] == (
        "2 nodes got no IMEX slot because their NVLink clique already has 2 daemons of this domain: n02, n03"
    )
    assert status["joinedNodes"] == 2


@pytest.mark.parametrize(
    ("problems", "ready_reason", "children_reason"),
    [
        ([Problem("NameConflict", "taken")], "NameConflict", "NameConflict"),
        ([Problem("LabelConflict", "node held")], "LabelConflict", "ChildrenApplied"),
        (
            [Problem("ReconcileError", "boom"), Problem("ResourceAPIUnavailable", "no DRA")],
            "ResourceAPIUnavailable",
            "ResourceAPIUnavailable",
        ),
        ([Problem("LabelConflict", "x"), Problem("InvalidSpec", "bad")], "InvalidSpec", "InvalidSpec"),
    ],
)
def test_problems_set_the_reason(problems: list[Problem], ready_reason: str, children_reason: str) -> None:
    status = render_status(domain(), plan(("a", RACK_A, True)), problems, 3, NOW)

    assert (condition(status, "Ready")["status"], condition(status, "Ready")["reason"]) == (
        "False",
        ready_reason,
    )
    assert condition(status, "ChildrenReady")["reason"] == children_reason


def test_problem_messages_are_bounded() -> None:
    problems = [Problem("ReconcileError", f"error {i} " + "x" * 1000) for i in range(6)]

    message = condition(render_status(domain(), plan(), problems, 3, NOW), "Ready")["message"]

    assert message.startswith("error 0 ")
    assert message.endswith("; and 3 more problems")
    assert len(message) < 1400


def test_many_waiting_nodes_are_summarised() -> None:
    members = [(f"n{i:02d}", RACK_A, False) for i in range(9)]

    message = condition(render_status(domain(), plan(*members), [], 3, NOW), "Ready")["message"]

    assert message == "0 of 9 nodes ready; waiting for IMEX daemons on n00, n01, n02, n03, n04 and 4 more"


def test_unchanged_conditions_keep_their_transition_time() -> None:
    previous = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "WaitingForNodes",
            "message": "m",
            "lastTransitionTime": EARLIER,
        },
        {
            "type": "ChildrenReady",
            "status": "True",
            "reason": "ChildrenApplied",
            "message": "m",
            "lastTransitionTime": EARLIER,
        },
    ]

    status = render_status(domain(conditions=previous), plan(("a", RACK_A, True)), [], 4, NOW)

    assert condition(status, "Ready")["lastTransitionTime"] == NOW  # False -> True
    assert condition(status, "ChildrenReady")["lastTransitionTime"] == EARLIER
    assert condition(status, "ChildrenReady")["observedGeneration"] == 4


def test_rendering_twice_is_stable() -> None:
    members = plan(("a", RACK_A, True), ("b", RACK_A, False))
    first = render_status(domain(), members, [], 3, EARLIER)
    settled = domain(conditions=first["conditions"])

    assert render_status(settled, members, [], 3, NOW) == first


@pytest.mark.parametrize(
    ("items", "text"),
    [([], ""), (["a"], "a"), (list("abcde"), "a, b, c, d, e"), (list("abcdefg"), "a, b, c, d, e and 2 more")],
)
def test_some(items: list[str], text: str) -> None:
    assert some(items) == text
