"""CustomResourceDefinitions generated from the API models, and a CLI that writes or checks them.

python -m computedomain.api.crd write [DIR]   # (re)generate the YAML files (default: crds/)
python -m computedomain.api.crd check [DIR]   # exit 1 if the files differ from the models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from computedomain.api import names
from computedomain.api.models import ComputeDomain, ComputeDomainClique

CRD_API_VERSION = "apiextensions.k8s.io/v1"
HEADER = (
    "# Generated from computedomain/api/models.py by `python -m computedomain.api.crd write`. Do not edit.\n"
)

# JSON-schema keywords whose value is a map from property names to schemas (names are not keywords).
_NAMED_SCHEMAS = ("properties",)
# Keywords whose value is one schema.
_SUB_SCHEMAS = ("items", "additionalProperties")
# Root-level fields whose schema the API server owns.
_ROOT_OWNED = ("apiVersion", "kind", "metadata")


def structural(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite a pydantic JSON schema into a Kubernetes structural schema.

    Inlines `$ref`s, collapses `anyOf [X, null]` (and single-entry `allOf`) into X, and drops what the
    API server rejects or what only pydantic needs: `title`, `default: null`, `additionalProperties:
    false`, `$defs`. Everything else (descriptions, defaults, enums, bounds, `x-kubernetes-*`) is kept.
    """
    definitions: Mapping[str, Any] = schema.get("$defs", {})
    return _rewrite(schema, definitions)


def _rewrite(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    merged = _collapse(node, definitions)
    out: dict[str, Any] = {}
    # Keywords sorted so that the YAML reads the same way at every level; property order is kept.
    for key, value in sorted(merged.items()):
        if key in ("title", "$defs") or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key in _NAMED_SCHEMAS:
            out[key] = {name: _rewrite(sub, definitions) for name, sub in value.items()}
        elif key in _SUB_SCHEMAS and isinstance(value, Mapping):
            out[key] = _rewrite(value, definitions)
        elif key == "description":
            out[key] = _reflow(value)
        else:
            out[key] = value
    return out


def _reflow(text: str) -> str:
    """Join docstring lines into one line per paragraph; `kubectl explain` wraps text itself."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


def _collapse(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """Replace a reference or a nullable union by its target, the node's own keywords winning."""
    siblings = dict(node)
    target: Mapping[str, Any] | None = None
    if "$ref" in siblings:
        target = _resolve(siblings.pop("$ref"), definitions)
    elif "anyOf" in siblings:
        choices = [c for c in siblings["anyOf"] if c != {"type": "null"}]
        if len(choices) != 1:
            raise ValueError(f"cannot express a union of {len(choices)} types in a structural schema")
        del siblings["anyOf"]
        target = choices[0]
    elif "allOf" in siblings and len(siblings["allOf"]) == 1:
        target = siblings.pop("allOf")[0]
    if target is None:
        return siblings
    return {**_collapse(target, definitions), **siblings}


def _resolve(ref: str, definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"unsupported schema reference {ref!r}")
    resolved: Mapping[str, Any] = definitions[ref.removeprefix(prefix)]
    return resolved


def _root_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The openAPIV3Schema of a kind: the model's schema with the root fields the API server owns."""
    schema = structural(model.model_json_schema())
    properties = schema["properties"]
    # The API server owns these; it accepts nothing but a type for metadata at the root.
    properties["metadata"] = {"type": "object"}
    for field in ("apiVersion", "kind"):
        properties[field] = {"description": properties[field]["description"], "type": "string"}
    required = [name for name in schema.get("required", []) if name not in _ROOT_OWNED]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


def _definition(
    model: type[BaseModel],
    kind: str,
    plural: str,
    version_extras: Mapping[str, Any],
) -> dict[str, Any]:
    version: dict[str, Any] = {"name": names.VERSION, "served": True, "storage": True}
    version.update(version_extras)
    version["schema"] = {"openAPIV3Schema": _root_schema(model)}
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{names.GROUP}"},
        "spec": {
            "group": names.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


_DOMAIN_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": ".status.status",
        "description": "Whether every joined node's IMEX daemon is ready.",
    },
    {
        "name": "Nodes",
        "type": "string",
        "jsonPath": ".status.nodeSummary",
        "description": "Ready nodes over expected nodes.",
    },
    {
        "name": "Cliques",
        "type": "integer",
        "jsonPath": ".status.cliqueCount",
        "description": "Number of NVLink cliques the domain spans.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def definitions() -> list[dict[str, Any]]:
    """The CRDs of ComputeDomain and ComputeDomainClique, as apiextensions.k8s.io/v1 objects."""
    return [
        _definition(
            ComputeDomain,
            names.DOMAIN_KIND,
            names.DOMAIN_PLURAL,
            {"additionalPrinterColumns": _DOMAIN_COLUMNS, "subresources": {"status": {}}},
        ),
        _definition(ComputeDomainClique, names.CLIQUE_KIND, names.CLIQUE_PLURAL, {}),
    ]


def file_name(definition: Mapping[str, Any]) -> str:
    """The file a CRD is kept in, named like controller-gen names it (`<group>_<plural>.yaml`)."""
    spec = definition["spec"]
    return f"{spec['group']}_{spec['names']['plural']}.yaml"


def render_yaml() -> dict[str, str]:
    """Every CRD as YAML text, keyed by file name."""
    return {
        file_name(definition): HEADER + yaml.safe_dump(definition, sort_keys=False, width=110)
        for definition in definitions()
    }


def write(directory: Path) -> list[Path]:
    """Write the CRD files into `directory` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_yaml().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drift(directory: Path) -> list[str]:
    """Names of the CRD files in `directory` that are missing or differ from the models."""
    stale = []
    for name, text in render_yaml().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def default_directory() -> Path:
    """`crds/` at the repository root when run from a checkout, else `crds/` in the working directory."""
    root = Path(__file__).resolve().parents[3]
    return root / "crds" if (root / "pyproject.toml").is_file() else Path.cwd() / "crds"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m computedomain.api.crd", description=__doc__)
    parser.add_argument("command", choices=("write", "check"))
    parser.add_argument("directory", nargs="?", type=Path, default=None)
    args = parser.parse_args(argv)
    directory: Path = args.directory or default_directory()
    if args.command == "write":
        for path in write(directory):
            print(f"wrote {path}")
        return 0
    stale = drift(directory)
    if stale:
        print(
            f"CRDs in {directory} do not match the API models: {', '.join(stale)}.\n"
            "Run `python -m computedomain.api.crd write` and commit the result.",
            file=sys.stderr,
        )
        return 1
    print(f"CRDs in {directory} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
