#!/usr/bin/env bash
# Shows what the node agent sees on this machine through the real NVML: GPUs, their NVLink fabric
# state, and the clique (or why there is none). Touches no cluster. Extra arguments go to the agent
# (e.g. --json). Exit status: 0 fine, 1 a fault was found, 2 NVML not usable.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi

export PYTHONPATH="$repo/operator${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m computedomain.agent --once --no-kube --require-nvml "$@"
