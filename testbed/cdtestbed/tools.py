"""Where the Go-built control-plane binaries live, and how to (re)build them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm")
KWOK_STAGES = ("node-initialize.yaml", "node-heartbeat-with-lease.yaml", "pod-ready.yaml", "pod-delete.yaml")
# Our own stage replaces upstream's pod-complete: Job pods finish only when a test says so.
OWN_STAGES = (Path(__file__).parent / "stages" / "pod-complete-on-request.yaml",)
COMPLETE_ANNOTATION = "testbed.computedomain/complete"


def repo_root() -> Path:
    """The checkout this package runs from (the folder holding `tools/build.sh`)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "tools" / "build.sh").exists():
            return parent
    raise FileNotFoundError("tools/build.sh not found above " + str(here))


@dataclass(frozen=True)
class Tools:
    """The tool cache: `<dir>/bin/<binary>` and `<dir>/kwok-stages/*.yaml`."""

    directory: Path

    @classmethod
    def default(cls) -> Tools:
        """The cache named by CD_TOOLS_DIR, else `.tools/` in the checkout."""
        configured = os.environ.get("CD_TOOLS_DIR")
        return cls(Path(configured) if configured else repo_root() / ".tools")

    def bin(self, name: str) -> Path:
        """Path of one binary; raises with the command that builds it when it is missing."""
        path = self.directory / "bin" / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `make tools` (tools/build.sh) first")
        return path

    def kwok_stages(self) -> list[Path]:
        """The KWOK stage files that make fake nodes Ready and fake pods Running."""
        return [self.directory / "kwok-stages" / name for name in KWOK_STAGES] + list(OWN_STAGES)

    def missing(self) -> list[str]:
        """Binaries not built yet."""
        return [name for name in BINARIES if not (self.directory / "bin" / name).exists()]

    def build(self) -> None:
        """Run tools/build.sh into this cache (a no-op for families already up to date)."""
        env = {**os.environ, "CD_TOOLS_DIR": str(self.directory)}
        subprocess.run([str(repo_root() / "tools" / "build.sh")], check=True, env=env)
