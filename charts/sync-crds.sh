#!/usr/bin/env bash
# Copy the generated CRDs (crds/, written by `make crds`) into the chart, which needs real files in its
# own crds/ folder. tests/unit/test_chart_crds.py fails while the two differ.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
source_dir="$repo/crds"
chart_dir="$repo/charts/computedomain-operator/crds"

shopt -s nullglob
files=("$source_dir"/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
  echo "sync-crds: no CRDs in $source_dir; run 'make crds' first" >&2
  exit 1
fi

mkdir -p "$chart_dir"
# Copies of CRDs that no longer exist must not linger in the chart.
rm -f "$chart_dir"/*.yaml
cp "${files[@]}" "$chart_dir/"
echo "sync-crds: copied ${#files[@]} CRD(s) into $chart_dir"
