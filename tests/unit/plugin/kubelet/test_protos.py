"""The committed gRPC stubs are exactly what `make protos` generates from the vendored protos."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
GEN = ROOT / "operator" / "computedomain" / "plugin" / "kubelet" / "gen"


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the codegen extra) is not installed")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)], check=True)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in GEN.iterdir() if p.is_file())
    assert fresh == committed, "run `make protos`: the set of generated files changed"
    drifted = [name for name in fresh if not filecmp.cmp(tmp_path / name, GEN / name, shallow=False)]
    assert not drifted, f"run `make protos`: {drifted} differ from what the protos generate"


def test_stubs_import_and_name_the_kubelet_services() -> None:
    from computedomain.plugin.kubelet.gen import (
        dra_health_v1alpha1_pb2,
        dra_v1_pb2,
        dra_v1beta1_pb2,
        pluginregistration_v1_pb2,
    )

    services = {
        module.DESCRIPTOR.services_by_name[name].full_name
        for module, name in (
            (dra_v1_pb2, "DRAPlugin"),
            (dra_v1beta1_pb2, "DRAPlugin"),
            (pluginregistration_v1_pb2, "Registration"),
            (dra_health_v1alpha1_pb2, "DRAResourceHealth"),
        )
    }
    assert services == {
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin",
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin",
        "pluginregistration.Registration",
        "v1alpha1.DRAResourceHealth",
    }
