"""Figures read from outside a process: its memory in /proc, its Prometheus metrics text, and the
arithmetic the scale benchmark applies to them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def memory_mib(pid: int) -> tuple[float, float]:
    """(current resident set VmRSS, peak VmHWM) of a process in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0]) / 1024
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


@dataclass(frozen=True)
class Memory:
    """A process's memory in MiB: resident (VmRSS), proportional (PSS: shared pages divided among
    their users) and unique (USS: pages no other process maps)."""

    rss: float
    pss: float
    uss: float


def memory_detail(pid: int) -> Memory:
    """RSS from /proc/PID/status, PSS and USS from /proc/PID/smaps_rollup."""
    rss, _ = memory_mib(pid)
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Private_Clean", "Private_Dirty"):
            found[key] = int(rest.split()[0]) / 1024
    unique = found.get("Private_Clean", 0.0) + found.get("Private_Dirty", 0.0)
    return Memory(rss=rss, pss=found.get("Pss", 0.0), uss=unique)


def metric_samples(text: str, name: str) -> dict[str, float]:
    """Every sample of metric `name` in Prometheus text: `label=value,...` (sorted; "" for none) -> value."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        labels = sorted(f"{m['key']}={m['value']}" for m in _LABEL.finditer(match["labels"] or ""))
        samples[",".join(labels)] = float(match["value"])
    return samples


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    if len(set(xs)) < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return covariance / sum((x - mean_x) ** 2 for x in xs)


def stored_size(obj: Any) -> int:
    """Bytes of an object as compact JSON (close to what the API server stores for a custom resource)."""
    return len(json.dumps(obj, separators=(",", ":")).encode())
