"""`computedomain-controller`: reconcile ComputeDomains (one active replica, chosen by a Lease).

Configured through environment variables (see `computedomain.controller.settings`); in a pod it uses
its service account, elsewhere the KUBECONFIG file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

# Kopf imports the kubernetes_asyncio client whenever it is installed, only to recognise that
# library's model objects, which this controller never hands it: about 38 MiB of generated classes.
# Our image does not ship it; where it is installed anyway (a development environment) it is kept
# out here, so the process measured and tested is the one that runs in a cluster.
sys.modules.setdefault("kubernetes_asyncio", None)  # type: ignore[arg-type]

from computedomain.controller.app import Controller  # noqa: E402
from computedomain.controller.settings import Settings, SettingsError  # noqa: E402
from computedomain.kube.config import ConfigError, load_connection  # noqa: E402
from computedomain.logs import configure_logging  # noqa: E402

logger = logging.getLogger("computedomain.controller")


async def _main(settings: Settings) -> int:
    try:
        connection = load_connection()
    except ConfigError as error:
        logger.error("no Kubernetes credentials: %s", error)
        return 2
    return await Controller(settings, connection).run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the controller process."""
    parser = argparse.ArgumentParser(prog="computedomain-controller", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        print(f"computedomain-controller: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    configure_logging("json" if settings.json_logs else "text", args.log_level)
    # Kopf reports every watch event at DEBUG/INFO; the controller's own log says what matters.
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logger.info(
        "starting: namespace=%s leader-election=%s max-nodes-per-clique=%d",
        settings.namespace,
        settings.leader_election,
        settings.max_nodes_per_clique,
    )
    return asyncio.run(_main(settings))


if __name__ == "__main__":
    sys.exit(main())
