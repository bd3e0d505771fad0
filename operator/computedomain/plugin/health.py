"""The health of a ComputeDomain node's devices: the NVLink fabric state that NVML reports.

A fabric that is down or failed makes the devices UNHEALTHY with NVML's explanation. NVML's bindings
are loaded only where HEALTH_SOURCE=nvml: they cost a process that never reads them about 2 MiB.
"""

from __future__ import annotations

import time

from computedomain.nvml.clique import Reason, derive_clique
from computedomain.plugin.kubelet.health import Health, HealthSource, StaticHealth


class NvmlHealth:
    """The NVLink fabric state of this node's GPUs, read through NVML."""

    def check(self) -> Health:
        """HEALTHY with a clique or without fabric; UNHEALTHY when the fabric is down; else UNKNOWN."""
        from computedomain.nvml.reading import PynvmlSource

        result = derive_clique(PynvmlSource().read())
        now = time.time()
        if result.reason in (Reason.CLIQUE_FOUND, Reason.NO_FABRIC, Reason.NO_GPUS):
            return Health("HEALTHY", result.message, now)
        if result.reason is Reason.NVML_UNAVAILABLE:
            return Health("UNKNOWN", result.message, now)
        return Health("UNHEALTHY", result.message, now)


def default_source(kind: str) -> HealthSource:
    """The source named by the HEALTH_SOURCE setting."""
    return NvmlHealth() if kind == "nvml" else StaticHealth()
