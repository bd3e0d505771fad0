"""The controller's start-up comparison of the installed CRDs with its own."""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any, cast

import pytest

from computedomain.api import names
from computedomain.api.crd import definitions
from computedomain.controller.runtime.crdcheck import CRD_OUTDATED, CrdCheck, CrdDrift, compare_crd, crd_event
from computedomain.kube import Kube
from support.domains import DOMAINS_CRD, OUR_STATUS_FIELDS

CLIQUES_CRD = f"{names.CLIQUE_PLURAL}.{names.GROUP}"


def ours(name: str = DOMAINS_CRD) -> dict[str, Any]:
    return next(d for d in definitions() if d["metadata"]["name"] == name)


def installed(definition: dict[str, Any]) -> dict[str, Any]:
    """`definition` as the API server returns it: with a uid and served versions as given."""
    crd = copy.deepcopy(definition)
    crd["metadata"]["uid"] = "crd-uid-1"
    return crd


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    [version] = crd["spec"]["versions"]
    return cast(dict[str, Any], version)


def status_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], version_of(crd)["schema"]["openAPIV3Schema"]["properties"]["status"])


def nvidia_like() -> dict[str, Any]:
    """NVIDIA's ComputeDomain CRD as its chart installs it: our schema without our additions."""
    crd = installed(ours())
    for field in OUR_STATUS_FIELDS:
        del status_schema(crd)["properties"][field]
    del version_of(crd)["additionalPrinterColumns"]
    return crd


@pytest.mark.parametrize("name", [DOMAINS_CRD, CLIQUES_CRD])
def test_our_own_crds_lack_nothing(name: str) -> None:
    drift = compare_crd(ours(name), installed(ours(name)))
    assert drift == CrdDrift(name)
    assert not drift.outdated


def test_nvidias_crd_lacks_our_status_fields_and_columns() -> None:
    drift = compare_crd(ours(), nvidia_like())

    assert drift.outdated
    assert drift.fields == tuple(f".status.{field}" for field in OUR_STATUS_FIELDS)
    assert drift.columns == ("Ready", "Nodes", "Cliques")  # AGE is shown whatever the CRD says
    assert (drift.versions, drift.subresources) == ((), ())
    message = drift.message()
    assert message.startswith(f"CustomResourceDefinition {DOMAINS_CRD} is not the one this operator ships")
    assert ".status.conditions, .status.observedGeneration" in message
    assert "printer columns Ready, Nodes, Cliques" in message
    assert "helm show crds <chart> | kubectl apply --server-side --force-conflicts -f -" in message
    assert "kubectl apply --server-side --force-conflicts -f charts/computedomain-operator/crds/" in message
    assert "kubectl replace -f" in message
    assert len(message) <= 1024  # an Event keeps that much


def test_a_missing_nested_field_is_named_by_its_path_and_children_are_not_listed() -> None:
    crd = installed(ours())
    del status_schema(crd)["properties"]["nodes"]["items"]["properties"]["index"]
    del status_schema(crd)["properties"]["conditions"]

    drift = compare_crd(ours(), crd)

    assert drift.fields == (".status.nodes[].index", ".status.conditions")


def test_fields_the_installed_crd_keeps_unknown_are_not_missing() -> None:
    crd = installed(ours())
    version_of(crd)["schema"]["openAPIV3Schema"]["properties"]["status"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert not compare_crd(ours(), crd).outdated


def test_extra_fields_of_the_installed_crd_do_no_harm() -> None:
    crd = installed(ours())
    status_schema(crd)["properties"]["somethingNewer"] = {"type": "string"}
    assert not compare_crd(ours(), crd).outdated


def test_no_status_subresource_and_an_unserved_version_are_reported() -> None:
    crd = installed(ours())
    del version_of(crd)["subresources"]
    assert compare_crd(ours(), crd).subresources == ("status",)
    version_of(crd)["served"] = False
    drift = compare_crd(ours(), crd)
    assert drift.versions == ("v1beta1",)
    assert "it serves no version v1beta1" in drift.message()


def test_a_crd_not_installed_says_how_to_install_it() -> None:
    drift = compare_crd(ours(CLIQUES_CRD), None)
    assert drift.outdated
    assert drift.message().startswith(f"CustomResourceDefinition {CLIQUES_CRD} is not installed: install it")


def test_a_long_list_is_cut() -> None:
    crd = installed(ours())
    version_of(crd)["schema"]["openAPIV3Schema"]["properties"]["status"] = {
        "type": "object",
        "properties": {},
    }
    spec = version_of(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"] = {}
    drift = compare_crd(ours(), crd)
    assert len(drift.fields) == 2 + 8  # spec: numNodes, channel; status: every field
    assert drift.fields[-1] == ".status.nodeSummary"
    assert "and 2 more" in drift.message()
    assert ".status.nodeSummary" not in drift.message()


def test_the_event_is_about_the_crd_and_lives_in_default() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    event = crd_event(nvidia_like(), "it lacks things", now)
    assert event["metadata"]["namespace"] == "default"
    assert event["involvedObject"] == {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "name": DOMAINS_CRD,
        "uid": "crd-uid-1",
    }
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "CRDOutdated", "it lacks things")
    assert event["source"] == {"component": "computedomain-controller"}


class StubKube:
    """Answers CRD reads from a dict and records the Events created."""

    def __init__(self, crds: dict[str, dict[str, Any] | None]) -> None:
        self.crds = crds
        self.created: list[dict[str, Any]] = []

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.crds[name]

    async def create(self, kind: Any, obj: dict[str, Any]) -> dict[str, Any]:
        self.created.append(obj)
        return obj


async def test_check_reports_each_outdated_crd_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    stub = StubKube({DOMAINS_CRD: nvidia_like(), CLIQUES_CRD: installed(ours(CLIQUES_CRD))})
    check = CrdCheck()

    drifts = await check.check(cast(Kube, stub))
    await check.check(cast(Kube, stub))  # a second term of the same process

    assert [d.outdated for d in drifts] == [True, False]
    assert [e["reason"] for e in stub.created] == ["CRDOutdated"]
    assert CRD_OUTDATED.labels(crd=DOMAINS_CRD)._value.get() == 1
    assert CRD_OUTDATED.labels(crd=CLIQUES_CRD)._value.get() == 0
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert all(".status.readyNodes" in r.getMessage() for r in errors)


class BrokenKube(StubKube):
    """Answers every CRD read with what our own code fails on, as a model rejecting the answer does."""

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        raise ValueError("rejected by our model")


async def test_a_bug_ends_the_check_at_once_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    await asyncio.wait_for(CrdCheck().run(cast(Kube, BrokenKube({}))), timeout=5)
    [record] = [r for r in caplog.records if "could not check" in r.getMessage()]
    assert record.exc_info is not None
