"""`computedomain-kubelet-plugin`: the DRA kubelet plugin of driver compute-domain.nvidia.com.

Configured through environment variables (see `computedomain.plugin.settings`); in a pod it uses its
service account, elsewhere the KUBECONFIG file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from computedomain.kube.config import ConfigError, load_connection
from computedomain.nvml.gpus import NodeGpus
from computedomain.plugin.nvidiadriver import driver_problem, read_driver_version
from computedomain.plugin.settings import PluginSettings
from computedomain.program import EXIT_USAGE, Program
from computedomain.shutdown import ignore_further_signals, stop_on_signals

logger = logging.getLogger("computedomain.plugin")

# Same status as an invalid setting: the plugin cannot start on this node as it is.
EXIT_UNFIT = EXIT_USAGE


def _read_nvml() -> NodeGpus:
    # Imported only when the driver root does not tell the version: NVML's bindings and library
    # would stay in the process for good.
    from computedomain.nvml.reading import PynvmlSource

    return PynvmlSource().read()


def driver_refusal(settings: PluginSettings) -> str | None:
    """Why this node's NVIDIA driver rules the plugin out (see `computedomain.plugin.nvidiadriver`),
    or None."""
    found = read_driver_version(settings.driver_root, _read_nvml)
    if found is not None:
        logger.info("NVIDIA driver %s, read from %s", found.version, found.source)
    return driver_problem(found, settings.node_name, settings.host_root)


async def _main(args: argparse.Namespace, settings: PluginSettings) -> int:
    logger.info(
        "starting: node=%s kubelet root=%s CDI root=%s driver root=%s state=%s",
        settings.node_name,
        settings.kubelet_root,
        settings.cdi_root,
        settings.driver_root,
        settings.state,
    )
    refusal = driver_refusal(settings)
    if refusal is not None:
        logger.error("refusing to start: %s", refusal)
        return EXIT_UNFIT
    # Imported here: the gRPC stubs and the API client cost a second that `--help` need not pay.
    from computedomain.plugin.app import Plugin

    loop = asyncio.get_running_loop()
    # The plugin's blocking work (file writes, NVML readings, name lookups) is short and rare. Unbounded,
    # the default pool grows to one thread per core plus four, up to 32, each with its own malloc arena.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2, thread_name_prefix="plugin-io"))
    try:
        connection = load_connection()
    except ConfigError as error:
        logger.error("no Kubernetes credentials: %s", error)
        return EXIT_USAGE
    plugin = Plugin(settings, connection)
    stop_on_signals(loop, plugin.stop)
    try:
        return await plugin.run()
    finally:
        ignore_further_signals(loop)


PROGRAM = Program(
    name="computedomain-kubelet-plugin",
    description=__doc__,
    read=PluginSettings.from_env,
    run=_main,
    epilog="Environment: " + ", ".join(PluginSettings.env_names.values()),
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the kubelet plugin process."""
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
