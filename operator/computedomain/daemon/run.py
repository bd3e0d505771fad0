"""The `run` subcommand: report this pod's clique, write the IMEX config, follow the clique, run IMEX."""

from __future__ import annotations

import asyncio
import logging

from computedomain import endpoints
from computedomain.daemon import kube, metrics
from computedomain.daemon.config import render_imex_config, render_nodes_config
from computedomain.daemon.files import read_text
from computedomain.daemon.peers import PeerTracker, apply_update
from computedomain.daemon.process import ImexFatalError, ImexSupervisor, imex_argv
from computedomain.daemon.readiness import (
    ReadinessFile,
    http_readiness,
    report_imex_readiness,
    state_file,
)
from computedomain.daemon.settings import DaemonSettings, SettingsError
from computedomain.files import write_atomic
from computedomain.kube import Kube, KubeError
from computedomain.kube.config import ConfigError, load_connection
from computedomain.kube.retry import RetryPolicy, Stopped, retry
from computedomain.shutdown import ignore_further_signals, stop_on_signals

log = logging.getLogger(__name__)

# Attempts at a start-up call the API server refuses (403, 404...): RBAC applied a moment ago may not
# be in effect yet. Transient failures (a restarting API server, throttling) are retried for as long as
# they last. A refusal that lasts ends the daemon, and the kubelet restarts it.
STARTUP_ATTEMPTS = 5
STARTUP_RETRY = RetryPolicy(initial=0.5, maximum=30.0, refusals=STARTUP_ATTEMPTS)


async def resolve_clique(settings: DaemonSettings, kube_client: Kube, stop: asyncio.Event) -> str:
    """The clique ID from the CDI edits, else from the node's `nvidia.com/gpu.clique` label."""
    if settings.clique_id is not None:
        return settings.clique_id
    clique = await retry(
        lambda: kube.read_node_clique(kube_client, settings.node_name),
        what=f"reading node {settings.node_name}",
        policy=STARTUP_RETRY,
        stop=stop,
        log=log,
    )
    log.info("CLIQUE_ID not set by the kubelet plugin; node %s label gives %r", settings.node_name, clique)
    return clique


def write_imex_files(settings: DaemonSettings) -> None:
    """Write `imexd.cfg` (from the kubelet plugin's template when present) and the static `nodes.cfg`."""
    template = read_text(settings.template_file)
    write_atomic(
        settings.config_file, render_imex_config(settings.pod_ip, str(settings.nodes_file), template)
    )
    write_atomic(settings.nodes_file, render_nodes_config(settings.max_nodes))
    log.info(
        "wrote %s (%s template) and %s (%d names)",
        settings.config_file,
        "plugin" if template is not None else "built-in",
        settings.nodes_file,
        settings.max_nodes,
    )


async def follow_clique(
    settings: DaemonSettings, kube_client: Kube, tracker: PeerTracker, supervisor: ImexSupervisor
) -> None:
    """Apply every change of this node's ComputeDomainClique to the hosts file and IMEX; never returns."""
    clique_name = settings.peers_object(tracker.clique_id)
    log.info("following ComputeDomainClique %s/%s", settings.pod_namespace, clique_name)
    async for daemons in kube.watch_clique(kube_client, settings.pod_namespace, clique_name):
        metrics.count_peers(daemons, tracker.clique_id)
        update = tracker.on_clique_change(daemons)
        if update is not None:
            await apply_update(update, supervisor, settings.hosts_file)


async def run_daemon(settings: DaemonSettings, kube_client: Kube, stop: asyncio.Event) -> None:
    """Everything `run` does once the settings are valid, until `stop` is set.

    Raises ImexFatalError when IMEX cannot be kept running, `Stopped` when `stop` is set before
    start-up finished.
    """
    settings.clique_file.unlink(missing_ok=True)
    readiness = ReadinessFile(state_file(settings))
    readiness.clear()
    try:
        await _run_daemon(settings, kube_client, stop, readiness)
    finally:
        # Whatever ended the run, its IMEX no longer serves; a failure to say so must not hide why.
        try:
            readiness.put(False, None)
        except OSError as err:
            log.warning("cannot record that IMEX stopped in %s: %s", readiness.path, err)


async def label_pod(settings: DaemonSettings, kube_client: Kube, clique: str, stop: asyncio.Event) -> None:
    """Put the clique label on this daemon's own pod, retrying as start-up calls do."""
    await retry(
        lambda: kube.label_own_pod(kube_client, settings.pod_namespace, settings.pod_name, clique),
        what=f"labelling pod {settings.pod_name}",
        policy=STARTUP_RETRY,
        stop=stop,
        log=log,
    )


async def _run_daemon(
    settings: DaemonSettings, kube_client: Kube, stop: asyncio.Event, readiness: ReadinessFile
) -> None:
    clique = await resolve_clique(settings, kube_client, stop)
    write_atomic(settings.clique_file, clique)
    if not clique:
        await label_pod(settings, kube_client, clique, stop)
        log.info("node %s has no NVLink fabric: no IMEX to run; idling until terminated", settings.node_name)
        readiness.put(True, None)
        await stop.wait()
        return

    write_imex_files(settings)
    supervisor = ImexSupervisor(imex_argv(settings.imex_binary, str(settings.config_file)))
    tracker = PeerTracker(settings.node_name, settings.pod_ip, clique, settings.max_nodes)
    # The label goes out beside the clique's first list, not before it: until it arrives the
    # controller places this daemon by its node's clique label, and every pod of a new domain waits
    # for this IMEX to be ready.
    labelling = asyncio.create_task(label_pod(settings, kube_client, clique, stop), name="label-pod")
    tasks = {
        labelling,
        asyncio.create_task(follow_clique(settings, kube_client, tracker, supervisor), name="follow-clique"),
        asyncio.create_task(supervisor.wait_failed(), name="imex-failed"),
        asyncio.create_task(report_imex_readiness(settings, supervisor, readiness), name="readiness"),
        asyncio.create_task(stop.wait(), name="stop"),
    }
    pending = set(tasks)
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            # The label's task is the only one whose end is not the end of the run.
            if done != {labelling}:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await supervisor.stop()


def log_start(settings: DaemonSettings) -> None:
    """Say whom this daemon serves: one domain, or every domain of its node's clique."""
    if settings.clique_mode:
        log.info(
            "compute-domain-daemon for the NVLink clique of node %s (clique mode), pod IP %s",
            settings.node_name,
            settings.pod_ip,
        )
        return
    log.info(
        "compute-domain-daemon for ComputeDomain %s/%s (uid %s) on node %s, pod IP %s",
        settings.domain_namespace,
        settings.domain_name,
        settings.domain_uid,
        settings.node_name,
        settings.pod_ip,
    )


async def run_command(settings: DaemonSettings) -> int:
    """The `run` subcommand; returns the process exit code (0 after SIGTERM)."""
    try:
        settings.require_domain()
        settings.require_pod_identity()
    except SettingsError as err:
        log.error("%s", err)
        return 1
    log_start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop)
    app = endpoints.make_app(lambda: http_readiness(settings))
    runner = await endpoints.serve_optional(app, settings.http_port, "compute-domain-daemon")
    try:
        kube_client = Kube(load_connection(), field_manager=kube.FIELD_MANAGER)
        try:
            await run_daemon(settings, kube_client, stop)
        finally:
            await kube_client.close()
    except Stopped as stopped:
        log.info("terminated while %s; exiting", stopped)
        return 0
    except ImexFatalError as err:
        log.error("exiting: %s", err)
        return 1
    except ConfigError as err:
        log.error("exiting: no Kubernetes credentials: %s", err)
        return 1
    except KubeError as err:
        log.error("exiting: API server answered %d: %s", err.status, err)
        return 1
    finally:
        ignore_further_signals(loop)
        if runner is not None:
            await runner.cleanup()
    log.info("terminated; exiting")
    return 0
