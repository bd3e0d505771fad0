"""A full clique is a problem in its own right: it names the nodes left without a slot."""

from __future__ import annotations

from computedomain.api.models import CliqueDaemon
from computedomain.controller.plan.cliques import CliquePlan
from computedomain.controller.render.status import clique_full

RACK = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"


def daemon(node: str, index: int) -> CliqueDaemon:
    return CliqueDaemon(node_name=node, ip_address="10.0.0.1", clique_id=RACK, index=index, status="Ready")


def test_no_overflow_is_no_problem() -> None:
    assert clique_full(CliquePlan(cliques={RACK: (daemon("n0", 0),)}, max_nodes=2)) is None


def test_overflow_names_the_nodes_and_the_limit() -> None:
    plan = CliquePlan(
        cliques={RACK: (daemon("n0", 0), daemon("n1", 1))}, overflow={RACK: ("n2", "n3")}, max_nodes=2
    )
    problem = clique_full(plan)
    assert problem is not None
    assert problem.reason == "CliqueFull"
    assert problem.message == (
        "2 nodes got no IMEX slot because their NVLink clique already has 2 daemons of this domain: n2, n3"
    )
