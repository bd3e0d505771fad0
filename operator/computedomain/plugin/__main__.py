"""`computedomain-kubelet-plugin`: the DRA kubelet plugin of driver compute-domain.nvidia.com.

Configured through environment variables (see `computedomain.plugin.settings`); in a pod it uses its
service account, elsewhere the KUBECONFIG file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from computedomain.agent.nvml import PynvmlSource
from computedomain.kube.config import ConfigError, load_connection
from computedomain.logs import configure_logging
from computedomain.plugin.driver import driver_problem, read_driver_version
from computedomain.plugin.settings import PluginSettings, SettingsError
from computedomain.shutdown import ignore_further_signals, stop_on_signals

logger = logging.getLogger("computedomain.plugin")

# Same status as an invalid setting: the plugin cannot start on this node as it is.
EXIT_UNFIT = 2


def driver_refusal(settings: PluginSettings) -> str | None:
    """Why this node's NVIDIA driver rules the plugin out (see `computedomain.plugin.driver`), or None."""
    found = read_driver_version(settings.driver_root, PynvmlSource().read)
    if found is not None:
        logger.info("NVIDIA driver %s, read from %s", found.version, found.source)
    return driver_problem(found, settings.node_name, settings.host_root)


async def _main(settings: PluginSettings) -> int:
    # Imported here: the gRPC stubs and the API client cost a second that `--help` need not pay.
    from computedomain.plugin.app import Plugin

    loop = asyncio.get_running_loop()
    try:
        connection = load_connection()
    except ConfigError as error:
        logger.error("no Kubernetes credentials: %s", error)
        return 2
    plugin = Plugin(settings, connection)
    stop_on_signals(loop, plugin.stop)
    try:
        return await plugin.run()
    finally:
        ignore_further_signals(loop)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the kubelet plugin process."""
    parser = argparse.ArgumentParser(
        prog="computedomain-kubelet-plugin",
        description=__doc__,
        epilog="Environment: " + ", ".join(PluginSettings.env_names.values()),
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    try:
        settings = PluginSettings.from_env(os.environ)
    except SettingsError as error:
        print(f"computedomain-kubelet-plugin: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    configure_logging("json" if settings.json_logs else "text", args.log_level)
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
    return asyncio.run(_main(settings))


if __name__ == "__main__":
    sys.exit(main())
