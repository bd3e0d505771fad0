"""The check, whenever a replica starts leading, that the installed CRDs are the ones it writes to.

Helm installs a chart's CRDs only where none exist and never updates them, so a cluster that moves
from NVIDIA's chart keeps NVIDIA's ComputeDomain CRD. Domains still work with it, but the API server
prunes every field its schema lacks: `conditions`, `readyNodes`, `nodeSummary` and the rest of what
this controller writes into the status vanish without an error, and the READY/NODES/CLIQUES columns
are not shown. The controller therefore reads both CRDs, compares their schemas with the ones it was
built with (`computedomain.api.crd`), and when something is missing logs an error, posts one Warning
Event about the CRD and sets `computedomain_crd_outdated`; it goes on running, since nothing but those
fields is lost. A condition on each domain would say it better, but conditions are among the fields
pruned.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from computedomain.api.crd import definitions
from computedomain.controller.events import COMPONENT
from computedomain.kube import Kind, Kube, KubeError
from computedomain.kube.events import Involved, Recorder, render_event
from computedomain.kube.retry import RetryPolicy, retry

log = logging.getLogger(__name__)

CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", False)
REASON = "CRDOutdated"
# Kubernetes keeps Events about cluster-scoped objects in `default`; `kubectl describe crd` finds them
# there (it looks for Events whose reference has no namespace, which the API server allows only in
# `default` and `kube-system`).
EVENT_NAMESPACE = "default"
# How to put our CRDs in place, whichever of them exist (`helm show crds` prints a chart's CRDs).
APPLY_CRDS = (
    "`helm show crds <chart> | kubectl apply --server-side --force-conflicts -f -` (from a checkout: "
    "`kubectl apply --server-side --force-conflicts -f charts/computedomain-operator/crds/`, or "
    "`kubectl replace -f` on the same files)"
)
# Names listed in one message at most; an Event's message is cut at 1024 characters.
_LISTED = 8

CRD_OUTDATED = Gauge(
    "computedomain_crd_outdated",
    "1 while the installed CRD lacks fields, columns or subresources this controller writes, by CRD.",
    ["crd"],
)


@dataclass(frozen=True)
class CrdDrift:
    """How an installed CRD falls short of ours: each list holds what it lacks."""

    name: str
    installed: bool = True
    versions: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def outdated(self) -> bool:
        """True when the installed CRD lacks anything of ours (or is not installed at all)."""
        return not self.installed or bool(self.versions or self.fields or self.columns or self.subresources)

    def message(self) -> str:
        """What is missing and how to fix it, in one paragraph."""
        if not self.installed:
            return f"CustomResourceDefinition {self.name} is not installed: install it with {APPLY_CRDS}"
        lacks = []
        if self.versions:
            lacks.append(f"it serves no version {_listed(self.versions)}")
        if self.fields:
            lacks.append(
                f"it lacks the fields {_listed(self.fields)}, which the API server therefore drops "
                "from what the controller writes"
            )
        if self.columns:
            lacks.append(f"it lacks the printer columns {_listed(self.columns)}")
        if self.subresources:
            lacks.append(f"it lacks the subresources {_listed(self.subresources)}")
        return (
            f"CustomResourceDefinition {self.name} is not the one this operator ships (Helm does not "
            f"update a CRD that exists, e.g. one installed by NVIDIA's chart): {'; '.join(lacks)}. "
            f"The controller keeps running; update the CRD with {APPLY_CRDS}"
        )


def _listed(items: tuple[str, ...]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown} and {len(items) - _LISTED} more"


def missing_fields(ours: Mapping[str, Any], installed: Mapping[str, Any], path: str = "") -> list[str]:
    """Paths (`.status.conditions`, `.status.nodes[].index`) that our schema has and `installed`
    lacks; under a missing field its children are not listed, and nothing is missing below a node
    that keeps unknown fields."""
    if installed.get("x-kubernetes-preserve-unknown-fields") is True:
        return []
    missing: list[str] = []
    theirs = installed.get("properties") or {}
    for name, schema in (ours.get("properties") or {}).items():
        child = f"{path}.{name}"
        if name not in theirs:
            missing.append(child)
        else:
            missing.extend(missing_fields(schema, theirs[name], child))
    for keyword, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        mine, other = ours.get(keyword), installed.get(keyword)
        if isinstance(mine, Mapping) and isinstance(other, Mapping):
            missing.extend(missing_fields(mine, other, path + suffix))
    return missing


def _by_name(versions: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(v.get("name")): v for v in versions}


def compare_crd(ours: Mapping[str, Any], installed: Mapping[str, Any] | None) -> CrdDrift:
    """What the installed CRD (None: not installed) lacks of `ours`, version by version."""
    name = str(ours["metadata"]["name"])
    if installed is None:
        return CrdDrift(name, installed=False)
    served = _by_name(v for v in installed.get("spec", {}).get("versions") or [] if v.get("served"))
    versions: list[str] = []
    fields: list[str] = []
    columns: list[str] = []
    subresources: list[str] = []
    for mine in ours["spec"]["versions"]:
        theirs = served.get(mine["name"])
        if theirs is None:
            versions.append(mine["name"])
            continue
        schema = (theirs.get("schema") or {}).get("openAPIV3Schema") or {}
        fields += missing_fields(mine["schema"]["openAPIV3Schema"], schema)
        # A column on metadata (AGE) is shown by kubectl whatever the CRD says.
        their_paths = {c.get("jsonPath") for c in theirs.get("additionalPrinterColumns") or []}
        columns += [
            c["name"]
            for c in mine.get("additionalPrinterColumns") or []
            if c["jsonPath"] not in their_paths and not c["jsonPath"].startswith(".metadata.")
        ]
        their_subresources = theirs.get("subresources") or {}
        subresources += [s for s in mine.get("subresources") or {} if s not in their_subresources]
    return CrdDrift(name, True, tuple(versions), tuple(fields), tuple(columns), tuple(subresources))


def crd_event(installed: Mapping[str, Any], message: str, now: datetime.datetime) -> dict[str, Any]:
    """A Warning Event about the installed CRD, where `kubectl describe crd` shows it."""
    event = render_event(
        Involved.of({"apiVersion": CRDS.api_version, "kind": "CustomResourceDefinition", **installed}),
        event_type="Warning",
        reason=REASON,
        message=message,
        component=COMPONENT,
        now=now,
    )
    event["metadata"]["namespace"] = EVENT_NAMESPACE
    return event


class CrdCheck:
    """Reads and compares both CRDs; posts each outdated CRD's Event once per process (through
    `events`, the process's recorder; a fresh one when None)."""

    def __init__(self, events: Recorder | None = None) -> None:
        self.events = events or Recorder()
        self._told: set[tuple[str, str]] = set()

    async def check(self, kube: Kube) -> list[CrdDrift]:
        """Compare every CRD of ours with the installed one; log, count and report what falls short."""
        drifts = []
        for ours in definitions():
            name = str(ours["metadata"]["name"])
            installed = await kube.get(CRDS, name)
            drift = compare_crd(ours, installed)
            drifts.append(drift)
            CRD_OUTDATED.labels(crd=name).set(1 if drift.outdated else 0)
            if not drift.outdated:
                log.info("CustomResourceDefinition %s has every field this controller writes", name)
                continue
            message = drift.message()
            log.error("%s", message)
            uid = str(((installed or {}).get("metadata") or {}).get("uid", ""))
            if installed is not None and (uid, message) not in self._told:
                now = datetime.datetime.now(datetime.UTC)
                if await self.events.record(kube, crd_event(installed, message, now)):
                    self._told.add((uid, message))
        return drifts

    async def run(self, kube: Kube) -> None:
        """`check`, retried while the API server is away; a refusal (no right to read CRDs) ends it."""
        try:
            await retry(
                lambda: self.check(kube),
                what="reading the installed CRDs",
                policy=RetryPolicy(initial=1.0, maximum=30.0),
                log=log,
            )
        except Exception as error:
            # A refusal is the cluster's doing; anything else is a bug that needs its traceback.
            bug = not isinstance(error, KubeError)
            log.warning("could not check the installed CRDs: %s", error, exc_info=bug)
