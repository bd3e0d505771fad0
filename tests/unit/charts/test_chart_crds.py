"""The chart ships the generated CRDs (crds/) unchanged, and charts/sync-crds.sh keeps it so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from computedomain.api import names

REPO = Path(__file__).resolve().parents[3]
GENERATED = REPO / "crds"
CHART_CRDS = REPO / "charts" / "computedomain-operator" / "crds"
SYNC = REPO / "charts" / "sync-crds.sh"
FIX = "run charts/sync-crds.sh (after `make crds`)"


def crd_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.yaml"))}


def test_generated_crds_exist() -> None:
    expected = {f"{names.GROUP}_{plural}.yaml" for plural in (names.DOMAIN_PLURAL, names.CLIQUE_PLURAL)}
    assert expected <= set(crd_files(GENERATED)), f"{GENERATED} lacks CRDs: run `make crds`"


def test_chart_crds_equal_the_generated_ones() -> None:
    generated = crd_files(GENERATED)
    shipped = crd_files(CHART_CRDS)
    assert sorted(shipped) == sorted(generated), f"the chart's CRD files differ from crds/: {FIX}"
    stale = [name for name in generated if shipped[name] != generated[name]]
    assert not stale, f"the chart's copies of {stale} differ from crds/: {FIX}"


def test_sync_script_copies_and_prunes(tmp_path: Path) -> None:
    # The script finds its checkout from its own location, so it runs from a copy in a scratch tree.
    script = tmp_path / "charts" / "sync-crds.sh"
    script.parent.mkdir(parents=True)
    shutil.copy2(SYNC, script)
    source = tmp_path / "crds"
    source.mkdir()
    (source / "a.yaml").write_text("kind: A\n")
    (source / "b.yaml").write_text("kind: B\n")
    target = tmp_path / "charts" / "computedomain-operator" / "crds"
    target.mkdir(parents=True)
    (target / "a.yaml").write_text("kind: Old\n")
    (target / "gone.yaml").write_text("kind: Gone\n")

    subprocess.run([str(script)], check=True, capture_output=True, timeout=30)

    assert crd_files(target) == {"a.yaml": b"kind: A\n", "b.yaml": b"kind: B\n"}


def test_sync_script_refuses_an_empty_source(tmp_path: Path) -> None:
    script = tmp_path / "charts" / "sync-crds.sh"
    script.parent.mkdir(parents=True)
    shutil.copy2(SYNC, script)
    (tmp_path / "crds").mkdir()

    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=30, check=False)

    assert result.returncode != 0
    assert "make crds" in result.stderr
