"""Writes the fake NVML library's per-node config file (`key=value` lines, see fakenvml.c)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CLUSTER_UUID = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22"
DEFAULT_CLIQUE_ID = 32766
ZERO_UUID = "zero"

# NVML return codes the tests use (nvml.h values).
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999


@dataclass(frozen=True)
class FakeGpu:
    """Overrides for one GPU; a field left None takes the node-wide value."""

    name: str | None = None
    uuid: str | None = None
    fabric: bool | None = None
    cluster_uuid: str | None = None
    clique_id: int | None = None
    state: str | None = None
    status: int | None = None
    health_mask: int | None = None
    handle_error: int | None = None
    uuid_error: int | None = None
    name_error: int | None = None
    fabric_error: int | None = None


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "supported" if value else "none"
    return str(value)


def _pairs(record: FakeGpu | FakeGpuNode) -> Iterator[tuple[str, str]]:
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if value is not None and not isinstance(value, Mapping):
            yield item.name, _value(value)


@dataclass(frozen=True)
class FakeGpuNode:
    """One node's GPUs as the fake library will report them. Defaults: a healthy GB200 tray."""

    gpus: int = 4
    driver: str = "580.82.07"
    name: str = "NVIDIA GB200"
    fabric: bool = True
    cluster_uuid: str = DEFAULT_CLUSTER_UUID
    clique_id: int = DEFAULT_CLIQUE_ID
    state: str = "completed"
    status: int = 0
    health_mask: int = 0
    init_error: int = 0
    count_error: int = 0
    fabric_error: int = 0
    # fabric_v=False makes the versioned fabric call answer FUNCTION_NOT_FOUND.
    fabric_v: bool = True
    fabric_v_max: int = 3
    overrides: Mapping[int, FakeGpu] = field(default_factory=dict)

    @property
    def clique(self) -> str:
        """The clique ID the agent should derive when every GPU keeps the node-wide values."""
        return f"{self.cluster_uuid}.{self.clique_id}"

    def render(self) -> str:
        """The config file's text."""
        lines = ["# fake NVML node"]
        for key, value in _pairs(self):
            if key == "fabric_v":
                value = "present" if self.fabric_v else "none"
            lines.append(f"{key}={value}")
        for index, gpu in sorted(self.overrides.items()):
            lines.extend(f"gpu.{index}.{key}={value}" for key, value in _pairs(gpu))
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> Path:
        """Write the file atomically (a reader never sees half of it) and return its path."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render())
        os.replace(tmp, path)
        return path


def default_gpu_uuid(index: int) -> str:
    """The UUID the fake library gives GPU `index` unless overridden."""
    return f"GPU-00000000-0000-4000-8000-{index:012d}"
