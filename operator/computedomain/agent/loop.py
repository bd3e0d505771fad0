"""The agent's check cycle: read NVML, derive the clique, keep the Node label true, wait, repeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from pydantic import Field

from computedomain.agent import metrics
from computedomain.envsettings import EnvBool, EnvSettings, LogFormat, LogLevel
from computedomain.logs import TEXT
from computedomain.nvml.clique import CliqueResult, Reason, derive_clique
from computedomain.nvml.gpus import NodeGpus
from computedomain.nvml.reading import GpuSource

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_NVML_REQUIRED = 2


class AgentSettings(EnvSettings):
    """Which node, how often to check, whether a node without usable NVML is an error, and how to log.

    Read from the environment (`AgentSettings.from_env`); command-line options override it.
    """

    title: ClassVar[str] = "agent settings"

    node_name: str = Field(
        default="", validation_alias="NODE_NAME", description="This node, whose clique label the agent keeps."
    )
    namespace: str = Field(
        default="",
        validation_alias="POD_NAMESPACE",
        description="The agent's own namespace (its pod's), where its Events about the Node go.",
    )
    interval: float = Field(
        default=60.0, gt=0, validation_alias="CHECK_INTERVAL_SECONDS", description="Seconds between checks."
    )
    retry_interval: float = Field(
        default=5.0,
        ge=0,
        validation_alias="RETRY_INTERVAL_SECONDS",
        description="Seconds to the next check after an NVML error or a failed write, or while "
        "registration is in progress.",
    )
    require_nvml: EnvBool = Field(
        default=True, validation_alias="REQUIRE_NVML", description="Exit 2 when NVML cannot be used."
    )
    log_format: LogFormat = Field(default=TEXT, validation_alias="LOG_FORMAT", description="text or json.")
    log_level: LogLevel = Field(
        default="INFO", validation_alias="LOG_LEVEL", description="A level name of the logging module."
    )
    http_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        validation_alias="HTTP_PORT",
        description="Port of the metrics and health endpoints while the agent keeps checking; 0 for none.",
    )
    # No variable: only `--no-kube` turns it off.
    kube: bool = Field(default=True, description="Label the Node; without, only print reports.")

    @classmethod
    def missing(cls, raw: Mapping[str, Any]) -> list[str]:
        """Labelling the Node needs to know the node, and posting Events the agent's namespace."""
        if not raw.get("kube", True):
            return []
        absent = [
            variable
            for field, variable in (("node_name", "NODE_NAME"), ("namespace", "POD_NAMESPACE"))
            if not raw.get(field)
        ]
        if not absent:
            return []
        verb = "is" if len(absent) == 1 else "are"
        return [
            f"{' and '.join(absent)} {verb} required to label the node "
            "(the chart's DaemonSet sets them; or use --no-kube)"
        ]


class CliqueSink(Protocol):
    """Where a derived clique goes (the Node label, in production)."""

    async def sync(self, result: CliqueResult) -> bool:
        """Make the outside world reflect `result`; False when that failed and is worth retrying soon."""
        ...


Reporter = Callable[[NodeGpus, CliqueResult], None]


class NvmlRequiredError(Exception):
    """NVML is required on this node but could not be loaded or initialised."""


def next_delay(result: CliqueResult, synced: bool, settings: AgentSettings) -> float:
    """Seconds until the next check: sooner while the answer may change by itself or a write failed."""
    if result.is_transient or not synced:
        return min(settings.retry_interval, settings.interval)
    return settings.interval


def nvml_required_message(result: CliqueResult) -> str:
    """The one line printed before exiting when NVML is required but not usable."""
    why = "; ".join(result.problems) or result.message
    return (
        f"computedomain-agent: NVML is required but not usable: {why}; "
        "set REQUIRE_NVML=false (or --no-require-nvml) on nodes without NVIDIA GPUs"
    )


def must_exit(result: CliqueResult, settings: AgentSettings) -> bool:
    """True when NVML is required and could not be used."""
    return settings.require_nvml and result.reason is Reason.NVML_UNAVAILABLE


async def observe(source: GpuSource, settings: AgentSettings) -> tuple[NodeGpus, CliqueResult]:
    """Read NVML (in a worker thread: it blocks) and derive the clique.

    Raises NvmlRequiredError when NVML is required and not usable.
    """
    gpus = await asyncio.to_thread(source.read)
    result = derive_clique(gpus)
    metrics.LAST_CHECK.record(gpus, result)
    if must_exit(result, settings):
        raise NvmlRequiredError(nvml_required_message(result))
    return gpus, result


def _log_result(result: CliqueResult) -> None:
    if result.reason is Reason.NVML_UNAVAILABLE:
        log.info("no usable NVML, running without GPUs: %s", result.message)
    elif result.is_problem:
        log.warning("no NVLink clique: %s: %s", result.reason, "; ".join(result.problems) or result.message)
    else:
        log.info("NVLink clique %s: %s: %s", result.clique_id or "(none)", result.reason, result.message)


async def run_loop(
    settings: AgentSettings,
    source: GpuSource,
    sink: CliqueSink | None,
    stop: asyncio.Event,
    reporter: Reporter | None = None,
) -> None:
    """Check until `stop` is set. Logs a result only when it differs from the last one.

    Raises NvmlRequiredError when NVML is required and not usable.
    """
    last: tuple[str | None, Reason] | None = None
    while not stop.is_set():
        gpus, result = await observe(source, settings)
        if (result.clique_id, result.reason) != last:
            _log_result(result)
            last = (result.clique_id, result.reason)
        if reporter is not None:
            reporter(gpus, result)
        synced = True if sink is None else await sink.sync(result)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), next_delay(result, synced, settings))
