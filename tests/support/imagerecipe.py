"""What the Dockerfile and the lock say about the product image, read without a container engine, and
the engine-less build (image/build.py) that must agree with them."""

from __future__ import annotations

import json
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # image/ lives beside the product and the test bed, at the repository root.
    sys.path.append(str(REPO))

from image import build  # noqa: E402

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK = REPO / "image" / "requirements.txt"
INSTALL_SCRIPT = REPO / "image" / "install.sh"

__all__ = ["DOCKERFILE", "DOCKERIGNORE", "INSTALL_SCRIPT", "LOCK", "REPO", "build"]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def logical_lines(text: str) -> list[str]:
    """The logical lines of a Dockerfile or requirements file: continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    return logical


def instructions(text: str | None = None) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    found = []
    for statement in logical_lines(DOCKERFILE.read_text() if text is None else text):
        keyword, _, arguments = statement.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
    return found


def stages(found: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each stage, each list starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in found:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args(found: list[Instruction]) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for instruction in found:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def assignments(arguments: str) -> dict[str, str]:
    """`KEY=value KEY2="some value"` (ENV, LABEL) as a dict."""
    pairs = {}
    for word in shlex.split(arguments):
        key, separator, value = word.partition("=")
        assert separator, f"not KEY=value: {word!r}"
        pairs[key] = value
    return pairs


def apt_packages(stage: list[Instruction]) -> set[str]:
    """The packages every `apt-get install` of a stage names."""
    packages: set[str] = set()
    for instruction in stage:
        if instruction.keyword != "RUN" or "apt-get install" not in instruction.arguments:
            continue
        words = shlex.split(instruction.arguments.split("apt-get install", 1)[1].split("&&", 1)[0])
        packages.update(word for word in words if not word.startswith("-"))
    return packages


@dataclass(frozen=True)
class ImageConfig:
    """The config `docker build` would record from the final stage (the parts this project sets)."""

    labels: dict[str, str]
    env: dict[str, str]
    user: str | None
    workdir: str | None
    cmd: list[str] | None
    entrypoint: list[str] | None


def final_config(found: list[Instruction] | None = None) -> ImageConfig:
    """LABEL, ENV, USER, WORKDIR, CMD and ENTRYPOINT of the Dockerfile's final stage."""
    final = stages(instructions() if found is None else found)[-1]
    labels: dict[str, str] = {}
    env: dict[str, str] = {}
    user = workdir = None
    cmd = entrypoint = None
    for instruction in final:
        if instruction.keyword == "LABEL":
            labels.update(assignments(instruction.arguments))
        elif instruction.keyword == "ENV":
            env.update(assignments(instruction.arguments))
        elif instruction.keyword == "USER":
            user = instruction.arguments
        elif instruction.keyword == "WORKDIR":
            workdir = instruction.arguments
        elif instruction.keyword == "CMD":
            cmd = json.loads(instruction.arguments)
        elif instruction.keyword == "ENTRYPOINT":
            entrypoint = json.loads(instruction.arguments)
    return ImageConfig(labels, env, user, workdir, cmd, entrypoint)


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...]


def lock_pins(text: str | None = None) -> dict[str, Pin]:
    """The lock's pins by canonical name."""
    pins: dict[str, Pin] = {}
    for statement in requirement_lines(LOCK.read_text() if text is None else text):
        words = statement.split()
        name, separator, version = words[0].partition("==")
        assert separator, f"not pinned with ==: {statement!r}"
        hashes = tuple(word.removeprefix("--hash=") for word in words[1:] if word.startswith("--hash="))
        pins[canonicalize_name(name)] = Pin(name, version, hashes)
    return pins


def requirement_lines(text: str) -> list[str]:
    """A requirements file's logical lines: continuations joined, comments dropped."""
    return logical_lines(text)


def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        project: dict[str, Any] = tomllib.load(handle)["project"]
    return project
