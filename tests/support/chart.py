"""The Helm chart from the tests' side: run `helm` and `kubectl` against one cluster, and turn what the
chart installed into what a local process needs (the controller Deployment's environment)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cdtestbed.tools import Tools, repo_root

CHART = repo_root() / "charts" / "computedomain-operator"
Object = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """Exit status and output of one command."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> str:
        """The standard output; raises with everything the command said when it failed."""
        if self.returncode != 0:
            raise AssertionError(
                f"{' '.join(self.command)} exited with {self.returncode}:\n{self.stderr}\n{self.stdout}"
            )
        return self.stdout


@dataclass(frozen=True)
class Tooling:
    """`helm` and `kubectl` of the tool cache, pointed at one cluster; both keep their state in `home`."""

    kubeconfig: Path
    home: Path

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECACHEDIR": str(self.home / "kube-cache"),
        }

    async def run(self, tool: str, *args: str, stdin: str | None = None, timeout: float = 120.0) -> Outcome:
        """Run `tool` (helm or kubectl) with `args`; the caller judges the outcome."""
        command = (str(Tools.default().bin(tool)), *args)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env(),
        )
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        return Outcome(command, process.returncode or 0, out.decode(), err.decode())

    async def helm(self, *args: str) -> Outcome:
        """Run `helm`."""
        return await self.run("helm", *args)

    async def kubectl(self, *args: str, stdin: str | None = None) -> Outcome:
        """Run `kubectl`."""
        return await self.run("kubectl", *args, stdin=stdin)

    async def install(self, release: str, namespace: str, *values: str) -> Outcome:
        """`helm install` of the chart into `namespace` (created if missing), with `--set` `values`.

        No `--wait`: the controller and node agent pods are fakes here, and what a test needs it waits for.
        """
        settings = [arg for value in values for arg in ("--set", value)]
        return await self.helm(
            "install", release, str(CHART), "--namespace", namespace, "--create-namespace", *settings
        )

    async def manifest(self, release: str, namespace: str) -> list[Object]:
        """The objects of the release's current revision, as Helm rendered them."""
        text = (await self.helm("get", "manifest", release, "--namespace", namespace)).check()
        return [doc for doc in yaml.safe_load_all(text) if doc]


def deployment_env(deployment: Object, pod_name: str, container: str = "controller") -> dict[str, str]:
    """The environment a pod of `deployment` gives `container`, with the pod's name `pod_name`.

    Literal values are copied; the downward-API fields the chart uses are resolved as the kubelet would.
    Anything else (a Secret or ConfigMap reference) is refused rather than silently dropped.
    """
    pod = deployment["spec"]["template"]["spec"]
    spec = next(c for c in pod["containers"] if c["name"] == container)
    fields: Mapping[str, str] = {
        "metadata.namespace": deployment["metadata"]["namespace"],
        "metadata.name": pod_name,
    }
    env: dict[str, str] = {}
    for entry in spec.get("env") or []:
        if "value" in entry or "valueFrom" not in entry:
            env[entry["name"]] = str(entry.get("value", ""))
            continue
        path = str((entry["valueFrom"].get("fieldRef") or {}).get("fieldPath"))
        if path not in fields:
            raise ValueError(f"cannot resolve {entry['name']} from {entry['valueFrom']} outside a pod")
        env[entry["name"]] = fields[path]
    return env
