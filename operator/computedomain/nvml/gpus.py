"""What NVML tells about this node's GPUs: plain immutable records, free of NVML and Kubernetes types."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class NvmlStatus(enum.Enum):
    """Whether NVML could be used at all on this node."""

    OK = "ok"
    MISSING = "missing"
    INIT_FAILED = "initFailed"


class FabricState(enum.IntEnum):
    """NVLink fabric registration state of one GPU; values are NVML's `NVML_GPU_FABRIC_STATE_*`."""

    NOT_SUPPORTED = 0
    NOT_STARTED = 1
    IN_PROGRESS = 2
    COMPLETED = 3

    @property
    def label(self) -> str:
        """Lower-case snake name used in reports (`in_progress`)."""
        return self.name.lower()


@dataclass(frozen=True)
class NvmlCallError:
    """One NVML call that returned something other than success."""

    call: str
    code: int
    message: str

    def describe(self) -> str:
        """One line: `nvmlDeviceGetUUID: GPU is lost (15)`."""
        return f"{self.call}: {self.message} ({self.code})"


@dataclass(frozen=True)
class FabricInfo:
    """Fabric information of one GPU as NVML reported it.

    `status` is the NVML return code of the fabric registration (meaningful once `state` is COMPLETED).
    `cluster_uuid` is the canonical string form of NVML's 16 `clusterUuid` bytes. `call` names which
    NVML entry point produced it (`v3`, `v2` for the versioned call, `legacy` for the older one).
    """

    state: FabricState
    status: int
    cluster_uuid: str
    clique_id: int
    health_mask: int | None = None
    call: str = "v3"

    @property
    def cluster_uuid_is_zero(self) -> bool:
        """True when NVML reports no cluster: the GPU has NVLink but is not in a multi-node fabric."""
        return self.cluster_uuid.replace("-", "").strip("0") == ""


@dataclass(frozen=True)
class GpuInfo:
    """One GPU. `fabric` is None when NVML says fabric info is not supported for it (e.g. PCIe GPUs).

    `error` is set when a call about this GPU failed; the fields it would have filled keep defaults.
    """

    index: int
    uuid: str = ""
    name: str = ""
    fabric: FabricInfo | None = None
    error: NvmlCallError | None = None


@dataclass(frozen=True)
class NodeGpus:
    """Everything one NVML pass found on this node.

    `status` is not OK when NVML could not be loaded or initialised; then `error` says why and there
    are no GPUs. With status OK, `error` is a node-wide call failure (e.g. counting devices).
    """

    status: NvmlStatus
    driver_version: str = ""
    gpus: tuple[GpuInfo, ...] = ()
    error: NvmlCallError | None = None
