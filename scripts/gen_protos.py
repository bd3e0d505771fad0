#!/usr/bin/env python3
"""Generate the kubelet plugin's gRPC stubs from the flat proto copies in plugin/kubelet/protos.

The protos are the kubelet's own (k8s.io/kubelet v0.36.3). Their packages contain dots and dashes, so
they are compiled from flat copies mapped onto the import path `computedomain/plugin/kubelet/gen/`: the
generated modules then import each other as `computedomain.plugin.kubelet.gen.<name>_pb2`.

Usage: gen_protos.py [OUTPUT_DIR]   (default: operator/computedomain/plugin/kubelet/gen)
Needs grpcio-tools (the `codegen` extra).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "operator" / "computedomain" / "plugin" / "kubelet"
PROTOS = PACKAGE / "protos"
IMPORT_PATH = "computedomain/plugin/kubelet/gen"
INIT = '"""Generated gRPC stubs of the kubelet plugin protos (`make protos`); do not edit."""\n'


def generate(output: Path) -> list[Path]:
    """Compile every proto into `output` (created if needed); returns the files written."""
    from grpc_tools import protoc  # a code-generation dependency only

    output.mkdir(parents=True, exist_ok=True)
    sources = sorted(PROTOS.glob("*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-I{IMPORT_PATH}={PROTOS}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *(f"{IMPORT_PATH}/{source.name}" for source in sources),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        for produced in sorted((Path(scratch) / IMPORT_PATH).iterdir()):
            target = output / produced.name
            shutil.copyfile(produced, target)
            written.append(target)
    init = output / "__init__.py"
    init.write_text(INIT)
    written.append(init)
    return written


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE / "gen"
    for path in generate(output):
        print(path)


if __name__ == "__main__":
    main()
