"""The image: every command the chart and the controller run in it is a console script that starts."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdtestbed.tools import Tools
from support.imagerecipe import instructions

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "computedomain-operator"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BASE_IMAGE = "debian:bookworm-slim"
# The entry points the image serves: the chart's three workloads and the per-domain IMEX daemons.
IMAGE_ENTRY_POINTS = (
    "computedomain-controller",
    "computedomain-agent",
    "computedomain-kubelet-plugin",
    "compute-domain-daemon",
)
# Commands that come with the base image rather than from the project (the node agent's init container
# links the host's NVML with a POSIX shell).
BASE_IMAGE_COMMANDS = frozenset({"sh"})


def console_scripts() -> dict[str, str]:
    """`[project.scripts]` of pyproject.toml: script name -> `module:function`."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        project: dict[str, Any] = tomllib.load(handle)["project"]
    return dict(project["scripts"])


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def probe_commands(container: dict[str, Any]) -> Iterator[list[str]]:
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container.get(probe, {}).get("exec", {}).get("command")
        if command:
            yield command


def chart_commands() -> list[str]:
    """The first word of every command the chart's pods run (containers and exec probes)."""
    helm = Tools.default().directory / "bin" / "helm"
    helm_path = str(helm) if helm.exists() else shutil.which("helm")
    if helm_path is None:
        pytest.skip("helm binary not found (neither in the tool cache nor on PATH): run `make tools`")
    rendered = subprocess.run(
        [helm_path, "template", "cdop", str(CHART), "--namespace", "cd-system"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    commands: list[str] = []
    for manifest in yaml.safe_load_all(rendered):
        if not manifest or manifest["kind"] not in ("Deployment", "DaemonSet"):
            continue
        for container in containers(manifest["spec"]["template"]["spec"]):
            commands.append(container["command"][0])
            commands.extend(command[0] for command in probe_commands(container))
    return commands


def daemonset_commands() -> list[str]:
    """The first word of every command in the controller's per-domain IMEX DaemonSet."""
    try:
        from computedomain.api.models import ComputeDomain
        from computedomain.controller.render.daemonset import daemonset
        from computedomain.controller.settings import Settings
    except ModuleNotFoundError as missing:
        if missing.name and missing.name.startswith("computedomain.controller"):
            pytest.skip(f"the controller's DaemonSet renderer is not written yet ({missing.name})")
        raise
    domain = ComputeDomain.model_validate(
        {
            "metadata": {"name": "d", "namespace": "team-a", "uid": "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"},
            "spec": {"channel": {"resourceClaimTemplate": {"name": "d-channel"}}},
        }
    )
    settings = Settings.from_env({"IMAGE_NAME": "computedomain-operator:0.1.0", "POD_NAME": "controller-0"})
    pod = daemonset(domain, settings)["spec"]["template"]["spec"]
    commands: list[str] = []
    for container in containers(pod):
        commands.append(container["command"][0])
        commands.extend(command[0] for command in probe_commands(container))
    return commands


def test_image_entry_points_are_console_scripts() -> None:
    missing = set(IMAGE_ENTRY_POINTS) - set(console_scripts())
    assert not missing, f"pyproject.toml [project.scripts] lacks {sorted(missing)}"


def test_chart_commands_are_console_scripts() -> None:
    commands = chart_commands()
    assert {"computedomain-controller", "computedomain-agent"} <= set(commands)
    unknown = set(commands) - set(console_scripts()) - BASE_IMAGE_COMMANDS
    assert not unknown, f"the chart runs commands the image does not provide: {sorted(unknown)}"


def test_daemonset_commands_are_console_scripts() -> None:
    commands = daemonset_commands()
    assert commands, "the DaemonSet runs no command"
    unknown = set(commands) - set(console_scripts()) - BASE_IMAGE_COMMANDS
    assert not unknown, f"the IMEX DaemonSet runs commands the image does not provide: {sorted(unknown)}"


@pytest.mark.parametrize("script", IMAGE_ENTRY_POINTS)
def test_entry_point_starts(script: str) -> None:
    target = console_scripts()[script]
    module = target.partition(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.xfail("entry point not written yet")
    executable = Path(sys.executable).parent / script
    assert executable.exists(), (
        f"{executable} is missing: reinstall the project into the virtualenv (make venv)"
    )
    result = subprocess.run(
        [str(executable), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    return [(i.keyword, i.arguments) for i in instructions()]


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert "ENTRYPOINT" not in keywords
    assert dict(instructions)["ARG"] == f"BASE_IMAGE={BASE_IMAGE}"
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert stages == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]

    final = instructions[keywords.index("FROM", keywords.index("FROM") + 1) :]
    final_runs = [args for keyword, args in final if keyword == "RUN"]
    # The final stage installs only the build stage's wheels, through install.sh (whose --no-index
    # test_image_recipe.py checks): pip anywhere else in it could reach an index or a source tree.
    installs = [run for run in final_runs if "install.sh" in run]
    assert len(installs) == 1, f"the final stage must install through image/install.sh once: {final_runs}"
    (install,) = installs
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in install, (
        "the final stage must install the build stage's wheels"
    )
    assert '["sh", "/image/install.sh", "/wheels",' in install
    assert not [run for run in final_runs if run != install and "pip" in run], final_runs
    assert not [args for keyword, args in final if keyword in ("COPY", "ADD") and "--from" not in args]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users == ["65532:65532"]


def test_dockerignore_keeps_only_the_build_inputs() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!operator/"} <= set(patterns)
