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

if ! "$python" -c 'import pynvml' 2>/dev/null; then
  echo "gpu-check: $python cannot import pynvml (package nvidia-ml-py); run \`make venv\` first" >&2
  exit 2
fi
# Said up front and in plain words: on a machine without NVIDIA's driver the agent's own message is
# written for a Kubernetes node, not for a person at a terminal.
if ! "$python" -c 'import ctypes; ctypes.CDLL("libnvidia-ml.so.1")' 2>/dev/null; then
  echo "gpu-check: no NVIDIA GPU driver on this machine: libnvidia-ml.so.1 (NVML) cannot be loaded," \
    "so there are no GPUs to check. Run it on a node with NVIDIA GPUs and their driver installed." >&2
  exit 2
fi
exec "$python" -m computedomain.agent --once --no-kube --require-nvml "$@"
