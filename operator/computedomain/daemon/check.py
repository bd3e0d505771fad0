"""The `check` subcommand behind the startup, readiness and liveness probes: is local IMEX ready?"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from computedomain.daemon.files import read_text
from computedomain.daemon.settings import DaemonSettings

READY = "READY"
# Below the probes' 10 s timeout, so that a hung query is reported by us rather than killed by the kubelet.
CTL_TIMEOUT = 8.0


@dataclass(frozen=True)
class CheckResult:
    """The probe's verdict and the line printed to explain it."""

    ok: bool
    message: str


def ctl_argv(ctl_binary: str, config_file: str) -> list[str]:
    """The IMEX control query that reports the local daemon's state."""
    return [ctl_binary, "-c", config_file, "-q"]


def resolved_clique(settings: DaemonSettings) -> str | None:
    """The clique ID from the environment, else the one `run` recorded; None when neither is known yet."""
    if settings.clique_id is not None:
        return settings.clique_id
    recorded = read_text(settings.clique_file)
    return None if recorded is None else recorded.strip()


async def query_imex(settings: DaemonSettings, limit: float = CTL_TIMEOUT) -> CheckResult:
    """Run `nvidia-imex-ctl -q`; ready only when it prints exactly READY."""
    argv = ctl_argv(settings.imex_ctl_binary, str(settings.config_file))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as err:
        return CheckResult(False, f"cannot run {argv[0]}: {err}")
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return CheckResult(False, f"{argv[0]} did not answer within {limit:.0f}s")
    answer = stdout.decode("utf-8", errors="replace")
    if answer.rstrip("\n") == READY:
        return CheckResult(True, "IMEX daemon is ready")
    details = " ".join(
        part for part in (answer.strip(), stderr.decode("utf-8", errors="replace").strip()) if part
    )
    return CheckResult(
        False, f"IMEX daemon is not ready: {details or 'no output'} (exit code {proc.returncode})"
    )


async def check(settings: DaemonSettings) -> CheckResult:
    """The probe: success on a node without NVLink fabric, else the local IMEX daemon's readiness."""
    clique = resolved_clique(settings)
    if clique is None:
        return CheckResult(False, "clique ID not known yet: the run command has not resolved it")
    if not clique:
        return CheckResult(True, "node has no NVLink fabric: nothing to check")
    return await query_imex(settings)


async def check_command(settings: DaemonSettings) -> int:
    """The `check` subcommand; prints the verdict and returns the exit code."""
    result = await check(settings)
    print(result.message, flush=True)
    return 0 if result.ok else 1
