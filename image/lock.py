#!/usr/bin/env python3
"""Write image/requirements.txt: the image's runtime dependencies, transitive ones included, pinned.

The lock is resolved from pyproject.toml's `[project] dependencies` (never the test or lint extras) for
the image's interpreter, Debian bookworm's CPython 3.11 on glibc 2.36, from wheels only: the image has
no compiler. Each pin carries the sha256 of its wheel for every architecture the image is built for,
so that `pip install --require-hashes` accepts exactly these files on amd64 and arm64 alike.

usage: .venv/bin/python image/lock.py   (needs pip 22.2+, packaging and the package index)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import NamedTuple

import build  # image/build.py: the interpreter the image has, and pip's options for it
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "image" / "requirements.txt"
# Every architecture the Dockerfile's comment builds for, as wheel platform tags spell them.
ARCHITECTURES = tuple(arch for _, arch in build.ARCHITECTURES.values())


def runtime_dependencies() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Pin(NamedTuple):
    name: str
    version: str
    sha256: str
    requires: frozenset[str]


def resolve(requirements: list[str], arch: str) -> dict[str, Pin]:
    """Normalized name -> its pin: the wheel a dry-run install chooses for the image on `arch`."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        command += ["--report", str(report), *build.target_options(arch), *requirements]
        subprocess.run(command, check=True)
        installs = json.loads(report.read_text())["install"]
    resolved: dict[str, Pin] = {}
    for item in installs:
        metadata = item["metadata"]
        requires = frozenset(
            normalize(requirement.name)
            for requirement in map(Requirement, metadata.get("requires_dist", []))
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""})
        )
        resolved[normalize(metadata["name"])] = Pin(
            metadata["name"],
            metadata["version"],
            item["download_info"]["archive_info"]["hashes"]["sha256"],
            requires,
        )
    return resolved


def render(per_arch: dict[str, dict[str, Pin]], direct: list[str]) -> str:
    first = per_arch[ARCHITECTURES[0]]
    lines = [
        "# The image's runtime dependencies, transitive ones included, each pinned with the sha256 of its",
        f"# wheel for Debian bookworm's CPython {build.PYTHON_VERSION} ({', '.join(ARCHITECTURES)}).",
        "# The Dockerfile and image/build.py install exactly this file (pip --no-deps --require-hashes).",
        "#",
        "# Generated from pyproject.toml's [project] dependencies; regenerate after changing them with",
        "#   .venv/bin/python image/lock.py",
        "",
    ]
    direct_names = {normalize(Requirement(requirement).name) for requirement in direct}
    for key in sorted(first):
        pin = first[key]
        digests = sorted({per_arch[arch][key].sha256 for arch in ARCHITECTURES})
        via = ["pyproject.toml"] if key in direct_names else []
        via += sorted(other.name for other in first.values() if key in other.requires)
        lines.append(f"{pin.name}=={pin.version} \\")
        lines.extend(f"    --hash=sha256:{digest} \\" for digest in digests[:-1])
        lines.append(f"    --hash=sha256:{digests[-1]}")
        lines.append(f"    # via {', '.join(via)}")
    return "\n".join(lines) + "\n"


def main() -> int:
    direct = runtime_dependencies()
    per_arch = {arch: resolve(direct, arch) for arch in ARCHITECTURES}
    versions = {
        arch: {key: pin.version for key, pin in resolved.items()} for arch, resolved in per_arch.items()
    }
    if len({json.dumps(pins, sort_keys=True) for pins in versions.values()}) != 1:
        print(f"lock: the architectures resolve differently: {versions}", file=sys.stderr)
        return 1
    LOCK.write_text(render(per_arch, direct))
    print(f"lock: wrote {LOCK.relative_to(ROOT)} ({len(per_arch[ARCHITECTURES[0]])} distributions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
