"""`computedomain-controller`: reconcile ComputeDomains (one active replica, chosen by a Lease).

Configured through environment variables (see `computedomain.controller.settings`); in a pod it uses
its service account, elsewhere the KUBECONFIG file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

# Kopf 1.45 imports the kubernetes_asyncio client at its own import whenever it is installed
# (kopf/_cogs/helpers/thirdparty.py), only to recognise that library's model objects, which this
# controller never hands it: 35 MiB of generated classes, measured. The image does not ship it; a
# development environment does (the tests use it), so the entry point keeps it out of this process,
# and the process measured and tested is the one that runs in a cluster. Only here: a module would
# hide it from every program that imports the controller's modules.
sys.modules.setdefault("kubernetes_asyncio", None)  # type: ignore[arg-type]

from computedomain.controller.runtime.app import Controller  # noqa: E402
from computedomain.controller.settings import Settings  # noqa: E402
from computedomain.kube.config import ConfigError, load_connection  # noqa: E402
from computedomain.program import EXIT_USAGE, Program  # noqa: E402
from computedomain.shutdown import ignore_further_signals  # noqa: E402

logger = logging.getLogger("computedomain.controller")


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    # Kopf reports every watch event at DEBUG/INFO; the controller's own log says what matters.
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logger.info(
        "starting: namespace=%s leader-election=%s max-nodes-per-clique=%d",
        settings.namespace,
        settings.leader_election,
        settings.max_nodes_per_clique,
    )
    try:
        connection = load_connection()
    except ConfigError as error:
        logger.error("no Kubernetes credentials: %s", error)
        return EXIT_USAGE
    code = await Controller(settings, connection).run()
    # Kopf's handlers of SIGTERM/SIGINT stay installed after its run ended; a further signal while
    # the process exits must neither reach them nor, once the event loop is closed, kill it.
    ignore_further_signals(asyncio.get_running_loop())
    return code


PROGRAM = Program(
    name="computedomain-controller",
    description=__doc__ or "",
    read=Settings.from_env,
    run=_main,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the controller process; returns the exit code."""
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
