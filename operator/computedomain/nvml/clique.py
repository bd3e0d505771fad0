"""Which NVLink clique this node is in, derived from what NVML reported (pure).

The clique ID has the form `<clusterUUID>.<cliqueId>`, the value GPU feature discovery also puts in the
`nvidia.com/gpu.clique` node label. A node has a clique only when every fabric-attached GPU finished
fabric registration successfully and all of them agree on one cluster UUID and one clique ID.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from computedomain.nvml.gpus import FabricState, GpuInfo, NodeGpus, NvmlStatus


class Reason(enum.StrEnum):
    """Why the node has, or has no, clique. Short CamelCase, stable: logs and Events carry them."""

    CLIQUE_FOUND = "CliqueFound"
    NO_GPUS = "NoGpus"
    NO_FABRIC = "NoFabric"
    REGISTRATION_IN_PROGRESS = "RegistrationInProgress"
    REGISTRATION_FAILED = "RegistrationFailed"
    CLIQUES_DISAGREE = "CliquesDisagree"
    NVML_CALL_FAILED = "NvmlCallFailed"
    NVML_UNAVAILABLE = "NvmlUnavailable"


# Something is wrong with the hardware or its software and a person should look.
PROBLEM_REASONS = frozenset({Reason.REGISTRATION_FAILED, Reason.CLIQUES_DISAGREE, Reason.NVML_CALL_FAILED})
# The answer may change by itself within seconds, so it is worth asking again soon.
# NVML_UNAVAILABLE is not among them: on a node without a driver that is the steady state.
TRANSIENT_REASONS = frozenset({Reason.REGISTRATION_IN_PROGRESS, Reason.NVML_CALL_FAILED})


@dataclass(frozen=True)
class CliqueResult:
    """The derived clique (None when there is none), why, and one line per problem found."""

    clique_id: str | None
    reason: Reason
    message: str
    problems: list[str] = field(default_factory=list)
    fabric_gpus: int = 0

    @property
    def is_problem(self) -> bool:
        """True when the result points at a fault rather than at a node without NVLink fabric."""
        return self.reason in PROBLEM_REASONS

    @property
    def is_transient(self) -> bool:
        """True when a recheck soon may give another answer."""
        return self.reason in TRANSIENT_REASONS


def clique_of(cluster_uuid: str, clique_id: int) -> str:
    """The clique string `<clusterUUID>.<cliqueId>`."""
    return f"{cluster_uuid}.{clique_id}"


def _gpu_ref(gpu: GpuInfo) -> str:
    return f"GPU {gpu.index} ({gpu.uuid})" if gpu.uuid else f"GPU {gpu.index}"


def _index_list(indexes: Iterable[int]) -> str:
    items = sorted(indexes)
    noun = "GPU" if len(items) == 1 else "GPUs"
    return f"{noun} {', '.join(str(i) for i in items)}"


@dataclass
class _Survey:
    """Per-GPU findings, sorted into the buckets that decide the reason."""

    failed: list[str] = field(default_factory=list)
    call_failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    members: dict[str, list[int]] = field(default_factory=dict)

    def add(self, gpu: GpuInfo) -> None:
        if gpu.error is not None:
            self.call_failed.append(f"{_gpu_ref(gpu)}: {gpu.error.describe()}")
            return
        fabric = gpu.fabric
        if fabric is None or fabric.state is FabricState.NOT_SUPPORTED:
            return
        if fabric.state is not FabricState.COMPLETED:
            self.pending.append(
                f"{_gpu_ref(gpu)}: fabric registration {fabric.state.label.replace('_', ' ')}"
            )
            return
        if fabric.status != 0:
            self.failed.append(f"{_gpu_ref(gpu)}: fabric registration failed with status {fabric.status}")
            return
        if fabric.cluster_uuid_is_zero:
            # NVLink present but not part of a multi-node fabric: not fabric-attached.
            return
        self.members.setdefault(clique_of(fabric.cluster_uuid, fabric.clique_id), []).append(gpu.index)

    def disagreement(self) -> list[str]:
        if len(self.members) < 2:
            return []
        parts = [f"{clique} ({_index_list(idx)})" for clique, idx in sorted(self.members.items())]
        return ["GPUs disagree on the NVLink clique: " + "; ".join(parts)]


def derive_clique(gpus: NodeGpus) -> CliqueResult:
    """Decide this node's clique from one NVML pass; never raises."""
    if gpus.status is not NvmlStatus.OK:
        why = gpus.error.describe() if gpus.error else gpus.status.value
        return CliqueResult(None, Reason.NVML_UNAVAILABLE, f"NVML is not usable: {why}", [why])
    if gpus.error is not None:
        why = gpus.error.describe()
        return CliqueResult(None, Reason.NVML_CALL_FAILED, f"NVML call failed: {why}", [why])
    if not gpus.gpus:
        return CliqueResult(None, Reason.NO_GPUS, "NVML reports no GPUs on this node")

    survey = _Survey()
    for gpu in gpus.gpus:
        survey.add(gpu)
    disagreement = survey.disagreement()
    problems = survey.failed + survey.call_failed + disagreement + survey.pending
    attached = sum(len(idx) for idx in survey.members.values())

    def no_clique(reason: Reason, message: str) -> CliqueResult:
        return CliqueResult(None, reason, message, problems, attached)

    if survey.failed:
        return no_clique(Reason.REGISTRATION_FAILED, "; ".join(survey.failed))
    if survey.call_failed:
        return no_clique(Reason.NVML_CALL_FAILED, "; ".join(survey.call_failed))
    if disagreement:
        return no_clique(Reason.CLIQUES_DISAGREE, disagreement[0])
    if survey.pending:
        return no_clique(Reason.REGISTRATION_IN_PROGRESS, "; ".join(survey.pending))
    if not survey.members:
        return no_clique(
            Reason.NO_FABRIC, f"none of the {len(gpus.gpus)} GPUs is in a multi-node NVLink fabric"
        )
    (clique_id,) = survey.members
    return CliqueResult(
        clique_id,
        Reason.CLIQUE_FOUND,
        f"{_index_list(survey.members[clique_id])} in NVLink clique {clique_id}",
        problems,
        attached,
    )
