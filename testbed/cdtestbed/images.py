"""The OCI archives a real-container bed imports: the product image (`make image`) and a stand-in for
the examples' workload image.

The examples run `nvcr.io/nvidia/pytorch:25.01-py3` with `bash -c "exec torchrun ..."`. That image
cannot be had here, so the bed makes a stand-in under the same name: the product image (Debian with
bash) plus a `torchrun` that prints its arguments and waits until it is stopped. It stands in for the
training program only; the devices, mounts and environment the container receives are the runtime's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cdtestbed.tools import repo_root

WORKLOAD_IMAGE = "nvcr.io/nvidia/pytorch:25.01-py3"
PRODUCT_PREFIX = "localhost/computedomain-operator:"
REF_NAME = "org.opencontainers.image.ref.name"
TORCHRUN = """#!/bin/bash
# Stand-in for torchrun (test bed): says what it was asked to run, then waits until stopped.
echo "torchrun stand-in: $*"
trap 'exit 0' TERM INT
sleep infinity &
wait
"""


def image_build() -> Any:
    """`make image`'s own module (image/build.py), loaded from its file: it lives beside the test bed,
    outside its source root."""
    path = repo_root() / "image" / "build.py"
    spec = importlib.util.spec_from_file_location("cdtestbed_image_build", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load {path}")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def product_image() -> tuple[Path, str]:
    """The product image's OCI archive (built as `make image` does, when missing or stale) and its tag."""
    build = image_build()
    archive = build.ensure_image()
    # The archive records the full name (localhost/computedomain-operator:<tag>); the chart takes the tag.
    return Path(archive), str(build.image_tag()).rpartition(":")[2]


def workload_image(product: Path) -> Path:
    """The workload stand-in's OCI archive, rebuilt only when the product image or the script changes."""
    stat = product.stat()
    digest = hashlib.sha256(f"{product.name}:{stat.st_size}:{stat.st_mtime_ns}\n{TORCHRUN}".encode())
    out = repo_root() / ".work" / "image" / f"workload-{digest.hexdigest()[:16]}.oci.tar"
    if out.exists():
        return out
    umoci = shutil.which("umoci")
    if umoci is None:
        raise FileNotFoundError("umoci is missing: run tools/host-packages.sh")
    with tempfile.TemporaryDirectory(prefix="cdimg-") as scratch:
        layout = Path(scratch) / "layout"
        layout.mkdir()
        subprocess.run(["tar", "-xf", str(product), "-C", str(layout)], check=True)
        index = json.loads((layout / "index.json").read_text())
        tag = "product"
        for manifest in index["manifests"]:
            manifest.setdefault("annotations", {})[REF_NAME] = tag
        (layout / "index.json").write_text(json.dumps(index))
        # Unpack, add, repack: `umoci insert` of some versions writes a layer without the tar's end.
        bundle = Path(scratch) / "bundle"
        subprocess.run(
            [umoci, "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True
        )
        script = bundle / "rootfs" / "usr" / "local" / "bin" / "torchrun"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(TORCHRUN)
        script.chmod(0o755)
        subprocess.run(
            [umoci, "repack", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True
        )
        index = json.loads((layout / "index.json").read_text())
        index["manifests"] = [
            {**m, "annotations": {**m.get("annotations", {}), REF_NAME: WORKLOAD_IMAGE}}
            for m in index["manifests"]
            if m.get("annotations", {}).get(REF_NAME) == tag
        ]
        (layout / "index.json").write_text(json.dumps(index))
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        subprocess.run(["tar", "-cf", str(partial), "-C", str(layout), "."], check=True)
        partial.replace(out)
    return out
