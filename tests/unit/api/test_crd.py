"""The committed CRDs are generated from the models and are structural schemas the API server accepts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from computedomain.api import crd, names

CRDS = Path(__file__).resolve().parents[3] / "crds"


def by_kind() -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d for d in crd.definitions()}


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = by_kind()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def schemas(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node` with its path (property names are not walked as keywords)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schemas(sub, f"{path}.{name}")
    if "items" in node:
        yield from schemas(node["items"], f"{path}[]")


def test_committed_crds_are_current() -> None:
    generated = crd.render_yaml()

    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(generated)
    for name, text in generated.items():
        committed = (CRDS / name).read_text(encoding="utf-8")
        assert yaml.safe_load(committed) == yaml.safe_load(text), f"{name} is stale"
        assert committed == text, f"{name} is stale"


def test_check_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["write", str(tmp_path)]) == 0
    assert crd.main(["check", str(tmp_path)]) == 0

    (tmp_path / "resource.nvidia.com_computedomains.yaml").write_text("stale\n", encoding="utf-8")

    assert crd.main(["check", str(tmp_path)]) == 1
    assert "resource.nvidia.com_computedomains.yaml" in capsys.readouterr().err


def test_definitions_identify_both_kinds() -> None:
    domain, clique = crd.definitions()

    assert domain["metadata"]["name"] == "computedomains.resource.nvidia.com"
    assert domain["spec"]["group"] == "resource.nvidia.com"
    assert domain["spec"]["scope"] == "Namespaced"
    assert domain["spec"]["names"] == {
        "kind": "ComputeDomain",
        "listKind": "ComputeDomainList",
        "plural": "computedomains",
        "singular": "computedomain",
    }
    (version,) = domain["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1beta1", True, True)
    assert version["subresources"] == {"status": {}}
    assert clique["metadata"]["name"] == "computedomaincliques.resource.nvidia.com"
    assert "subresources" not in clique["spec"]["versions"][0]


def test_printer_columns() -> None:
    columns = by_kind()[names.DOMAIN_KIND]["spec"]["versions"][0]["additionalPrinterColumns"]

    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == [
        ("Ready", "string", ".status.status"),
        ("Nodes", "string", ".status.nodeSummary"),
        ("Cliques", "integer", ".status.cliqueCount"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


@pytest.mark.parametrize("kind", [names.DOMAIN_KIND, names.CLIQUE_KIND])
def test_schemas_are_structural(kind: str) -> None:
    for path, node in schemas(root_schema(kind)):
        forbidden = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "additionalProperties", "const"}
        assert not forbidden & node.keys(), path
        assert "type" in node, path
        assert node.get("default", "set") is not None, path
    assert root_schema(kind)["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("kind", [names.DOMAIN_KIND, names.CLIQUE_KIND])
def test_every_field_is_described(kind: str) -> None:
    for path, node in schemas(root_schema(kind)):
        if path != ".metadata":
            assert len(node.get("description", "")) > 10, path


def test_domain_schema_keeps_defaults_enums_and_validation() -> None:
    schema = root_schema(names.DOMAIN_KIND)
    spec = schema["properties"]["spec"]
    status = schema["properties"]["status"]

    assert schema["required"] == ["spec"]
    assert spec["required"] == ["channel"]
    assert spec["x-kubernetes-validations"] == [
        {"message": "A computeDomain.spec is immutable", "rule": "self == oldSelf"}
    ]
    assert spec["properties"]["numNodes"] == {
        "default": 0,
        "description": spec["properties"]["numNodes"]["description"],
        "minimum": 0,
        "type": "integer",
    }
    channel = spec["properties"]["channel"]
    assert channel["required"] == ["resourceClaimTemplate"]
    assert channel["properties"]["allocationMode"]["enum"] == ["Single", "All"]
    assert channel["properties"]["allocationMode"]["default"] == "Single"
    assert channel["properties"]["resourceClaimTemplate"]["properties"]["name"]["minLength"] == 1
    assert status["required"] == ["status"]
    assert status["properties"]["status"]["default"] == "NotReady"


@pytest.mark.parametrize(
    ("kind", "path", "keys", "required"),
    [
        (
            names.DOMAIN_KIND,
            ("status", "conditions"),
            ["type"],
            ["type", "status", "reason", "message", "lastTransitionTime"],
        ),
        (names.CLIQUE_KIND, ("daemons",), ["nodeName"], ["nodeName", "ipAddress", "cliqueID"]),
    ],
)
def test_lists_merge_by_key(kind: str, path: tuple[str, ...], keys: list[str], required: list[str]) -> None:
    node = root_schema(kind)
    for name in path:
        node = node["properties"][name]

    assert node["type"] == "array"
    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == keys
    assert node["items"]["required"] == required


def test_the_status_node_list_is_atomic_so_a_big_domain_stays_small() -> None:
    """A map-typed list would make the API server keep one managedFields owner entry per node."""
    nodes = root_schema(names.DOMAIN_KIND)["properties"]["status"]["properties"]["nodes"]
    assert nodes["x-kubernetes-list-type"] == "atomic"
    assert "x-kubernetes-list-map-keys" not in nodes
    assert nodes["items"]["required"] == ["name", "ipAddress", "cliqueID"]


def test_node_entries_match_the_reference() -> None:
    entry = root_schema(names.DOMAIN_KIND)["properties"]["status"]["properties"]["nodes"]["items"][
        "properties"
    ]

    assert list(entry) == ["name", "ipAddress", "cliqueID", "index", "status"]
    assert entry["index"]["type"] == "integer"
    assert entry["status"]["enum"] == ["Ready", "NotReady"]
    assert entry["status"]["default"] == "NotReady"


def test_clique_has_no_spec_and_no_status() -> None:
    properties = root_schema(names.CLIQUE_KIND)["properties"]

    assert list(properties) == ["apiVersion", "kind", "metadata", "daemons", "channel", "queuedAt", "nodes"]


def test_structural_rewrites_pydantic_idioms() -> None:
    raw = {
        "$defs": {"Inner": {"title": "Inner", "type": "object", "properties": {"a": {"type": "string"}}}},
        "title": "Outer",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "title": {"title": "Title", "type": "string"},
            "inner": {"$ref": "#/$defs/Inner", "description": "wins"},
            "maybe": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
            "labels": {"type": "object", "additionalProperties": {"type": "string", "title": "L"}},
        },
    }

    assert crd.structural(raw) == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "inner": {"description": "wins", "properties": {"a": {"type": "string"}}, "type": "object"},
            "maybe": {"minimum": 1, "type": "integer"},
            "labels": {"additionalProperties": {"type": "string"}, "type": "object"},
        },
    }


def test_structural_refuses_real_unions() -> None:
    with pytest.raises(ValueError, match="union"):
        crd.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]})
