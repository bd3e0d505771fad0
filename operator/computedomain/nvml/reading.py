"""Reading GPUs and their NVLink fabric state through NVML (the `pynvml` bindings of nvidia-ml-py).

Every NVML failure becomes a value in the returned `NodeGpus` (library missing, init failed, one call
failed); nothing here raises for NVML's sake, so the caller decides what a failure means.
"""

from __future__ import annotations

import ctypes
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pynvml

from computedomain.nvml.gpus import FabricInfo, FabricState, GpuInfo, NodeGpus, NvmlCallError, NvmlStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

# The versioned fabric call takes a struct whose first field names its layout; newest first, so an
# older driver that rejects v3 with ARGUMENT_VERSION_MISMATCH still answers for v2.
_VERSIONED_FABRIC_STRUCTS: tuple[tuple[str, str], ...] = (
    ("v3", "c_nvmlGpuFabricInfo_v3_t"),
    ("v2", "c_nvmlGpuFabricInfo_v2_t"),
)


class GpuSource(Protocol):
    """Anything that can report this node's GPUs (the real NVML, or a stand-in in tests)."""

    def read(self) -> NodeGpus:
        """Take one complete reading; never raises for hardware or library trouble."""
        ...


class _CallFailed(Exception):
    """Carries an NVML failure out of a nested call; never leaves this module."""

    def __init__(self, error: NvmlCallError) -> None:
        super().__init__(error.describe())
        self.error = error


def _describe(err: Any) -> str:
    try:
        return str(err)
    except Exception:  # str() of an NVMLError may itself call into a broken library
        return "NVML error"


def _call(name: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        raise _CallFailed(NvmlCallError(name, int(err.value), _describe(err))) from None


def cluster_uuid_string(raw: bytes) -> str:
    """Canonical UUID string of NVML's 16 `clusterUuid` bytes (big-endian, as go-nvlib prints it)."""
    return str(uuid.UUID(bytes=bytes(raw)))


def fabric_info_from_struct(info: Any, call: str) -> FabricInfo:
    """Convert any NVML fabric-info struct (legacy, v2, v3) into a `FabricInfo`."""
    try:
        state = FabricState(int(info.state))
    except ValueError:
        # A state newer than this code knows: it is at least not COMPLETED, so treat it as pending.
        state = FabricState.IN_PROGRESS
    health = int(info.healthMask) if hasattr(info, "healthMask") else None
    return FabricInfo(
        state=state,
        status=int(info.status),
        cluster_uuid=cluster_uuid_string(bytes(info.clusterUuid)),
        clique_id=int(info.cliqueId),
        health_mask=health,
        call=call,
    )


def _versioned_fabric(handle: Any) -> tuple[bool, FabricInfo | None]:
    """Fabric info via `nvmlDeviceGetGpuFabricInfoV` as (answered, info).

    Not answered when the library lacks the call or every struct version we know; info None when NVML
    says fabric info is not supported for this GPU.
    """
    for call, struct_name in _VERSIONED_FABRIC_STRUCTS:
        struct_type = getattr(pynvml, struct_name, None)
        if struct_type is None:
            continue
        info = struct_type()
        try:
            pynvml.nvmlDeviceGetGpuFabricInfoV(handle, ctypes.byref(info))
        except pynvml.NVMLError as err:
            if err.value == pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH:
                continue
            if err.value == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                return False, None
            if err.value == pynvml.NVML_ERROR_NOT_SUPPORTED:
                return True, None
            raise _CallFailed(
                NvmlCallError("nvmlDeviceGetGpuFabricInfoV", int(err.value), _describe(err))
            ) from None
        return True, fabric_info_from_struct(info, call)
    return False, None


def _legacy_fabric(handle: Any) -> FabricInfo | None:
    info = pynvml.c_nvmlGpuFabricInfo_t()
    try:
        pynvml.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(info))
    except pynvml.NVMLError as err:
        if err.value == pynvml.NVML_ERROR_NOT_SUPPORTED:
            return None
        raise _CallFailed(
            NvmlCallError("nvmlDeviceGetGpuFabricInfo", int(err.value), _describe(err))
        ) from None
    return fabric_info_from_struct(info, "legacy")


def read_fabric(handle: Any) -> FabricInfo | None:
    """Fabric info of one GPU: the versioned call where the library has it, else the older call."""
    answered, info = _versioned_fabric(handle)
    return info if answered else _legacy_fabric(handle)


def _read_gpu(index: int) -> GpuInfo:
    try:
        handle = _call("nvmlDeviceGetHandleByIndex", pynvml.nvmlDeviceGetHandleByIndex, index)
        gpu_uuid = _call("nvmlDeviceGetUUID", pynvml.nvmlDeviceGetUUID, handle)
    except _CallFailed as failed:
        return GpuInfo(index=index, error=failed.error)
    try:
        name = _call("nvmlDeviceGetName", pynvml.nvmlDeviceGetName, handle)
        fabric = read_fabric(handle)
    except _CallFailed as failed:
        return GpuInfo(index=index, uuid=gpu_uuid, error=failed.error)
    return GpuInfo(index=index, uuid=gpu_uuid, name=name, fabric=fabric)


def _init_failure(err: Any) -> NodeGpus:
    code = int(err.value)
    status = NvmlStatus.MISSING if code == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND else NvmlStatus.INIT_FAILED
    return NodeGpus(status=status, error=NvmlCallError("nvmlInit", code, _describe(err)))


class PynvmlSource:
    """The real NVML, through pynvml: initialise, read everything, shut down, on every `read()`.

    Initialising per reading keeps no NVML state between checks, so a driver reload or a fabric
    manager restart between two readings is seen as it is.
    """

    def read(self) -> NodeGpus:
        """One full NVML pass over this node's GPUs."""
        try:
            # NO_GPUS: a node whose driver sees no GPU is a fact to report, not an init failure.
            pynvml.nvmlInitWithFlags(pynvml.NVML_INIT_FLAG_NO_GPUS)
        except pynvml.NVMLError as err:
            return _init_failure(err)
        try:
            return self._read_initialised()
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as err:
                log.warning("nvmlShutdown failed: %s", _describe(err))

    def _read_initialised(self) -> NodeGpus:
        driver = ""
        try:
            driver = _call("nvmlSystemGetDriverVersion", pynvml.nvmlSystemGetDriverVersion)
            count = _call("nvmlDeviceGetCount", pynvml.nvmlDeviceGetCount)
        except _CallFailed as failed:
            return NodeGpus(status=NvmlStatus.OK, driver_version=driver, error=failed.error)
        gpus = tuple(_read_gpu(index) for index in range(count))
        return NodeGpus(status=NvmlStatus.OK, driver_version=driver, gpus=gpus)
