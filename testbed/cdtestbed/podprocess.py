"""What a real kubelet node's runtime double runs for a container of the operator's image.

The runtime double (`cri-double`) runs a mapped container command as a host process, with the
container's environment after its CDI edits and, in `CRI_DOUBLE_MOUNTS`, every mount the container
would receive (pod volumes and CDI mounts, container path -> host path). Environment values that name
a mounted path already name the host path. What remains is what a process cannot take from its
environment alone, so this entry point takes it from the mounts and then runs the image's program:

- the pod's service account token (the kubelet's projected volume at the in-cluster path) becomes a
  kubeconfig, so the program authenticates exactly as its pod would;
- the `nvidia-imex` / `nvidia-imex-ctl` binaries the kubelet plugin's CDI edits mount become
  `IMEX_BINARY` / `IMEX_CTL_BINARY`, and the pod's `/etc/hosts` becomes `IMEX_HOSTS_FILE`.

usage: python -m cdtestbed.podprocess <image command> [arguments...]

Kept to the standard library: it runs once per container start and per exec probe.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

# The image's console scripts and the module each runs.
PROGRAMS: dict[str, str] = {
    "compute-domain-daemon": "computedomain.daemon",
    "computedomain-kubelet-plugin": "computedomain.plugin",
    "computedomain-agent": "computedomain.agent",
}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Container path -> variable that tells the daemon the host path instead.
MOUNTED_FILES = {
    "/usr/bin/nvidia-imex": "IMEX_BINARY",
    "/usr/bin/nvidia-imex-ctl": "IMEX_CTL_BINARY",
    "/etc/hosts": "IMEX_HOSTS_FILE",
}
KUBECONFIG_NAME = "pod-kubeconfig"


def mounts_of(env: Mapping[str, str]) -> dict[str, str]:
    """Container path -> host path of every mount the runtime double reported."""
    entries = json.loads(env.get("CRI_DOUBLE_MOUNTS") or "[]")
    return {m["containerPath"].rstrip("/") or "/": m["hostPath"] for m in entries if m.get("hostPath")}


def pod_kubeconfig(service_account: Path, server: str) -> str:
    """A kubeconfig (JSON) for `server` with the pod's token and the cluster CA of its projected volume."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "pod",
                "cluster": {"server": server, "certificate-authority": str(service_account / "ca.crt")},
            }
        ],
        "users": [{"name": "pod", "user": {"token": (service_account / "token").read_text().strip()}}],
        "contexts": [{"name": "pod", "context": {"cluster": "pod", "user": "pod"}}],
        "current-context": "pod",
    }
    return json.dumps(config, indent=2)


def host_env(env: MutableMapping[str, str], workdir: Path) -> None:
    """Rewrite `env` (the container's, as the runtime double gives it) for the host process."""
    mounts = mounts_of(env)
    for container_path, variable in MOUNTED_FILES.items():
        if container_path in mounts and variable not in env:
            env[variable] = mounts[container_path]
    account = mounts.get(SERVICE_ACCOUNT_DIR)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if account is not None and host and port:
        path = workdir / KUBECONFIG_NAME
        # Probes run beside the program: write a new file and rename it, so no reader sees half of one.
        scratch = workdir / f".{KUBECONFIG_NAME}.{os.getpid()}"
        scratch.write_text(pod_kubeconfig(Path(account), f"https://{host}:{port}"))
        scratch.chmod(0o600)
        scratch.replace(path)
        env["KUBECONFIG"] = str(path)
        # Without the service variables the program's client takes KUBECONFIG instead of the
        # in-cluster path, which holds nothing on this host.
        for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT_HTTPS"):
            env.pop(key, None)
    # The IMEX doubles are scripts of `#!/usr/bin/env python3`: found first, the interpreter itself
    # starts them, where a version manager's shim (a shell script) would cost more than they do.
    interpreter = Path(os.path.realpath(sys.executable)).parent
    if (interpreter / "python3").exists():
        env["PATH"] = f"{interpreter}{os.pathsep}{env.get('PATH') or os.defpath}"


def main(argv: Sequence[str]) -> int:
    """Run the image program named by `argv[0]` with the rest of `argv`, in this process."""
    if not argv or argv[0] not in PROGRAMS:
        print(
            f"podprocess: unknown image command {list(argv)[:1]}; known: {sorted(PROGRAMS)}", file=sys.stderr
        )
        return 127
    env = dict(os.environ)
    host_env(env, Path.cwd())
    os.environ.clear()
    os.environ.update(env)
    # In this interpreter rather than an exec'd one: a second interpreter start per container (and
    # per probe) cost as much as the program's own start on a busy machine.
    sys.argv = [PROGRAMS[argv[0]], *argv[1:]]
    runpy.run_module(PROGRAMS[argv[0]], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
