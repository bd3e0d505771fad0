"""Series of a real run, kept under tests/fixtures/metrics for the tests of the chart's alerts and
dashboard (tests/unit/charts/test_chart_monitoring.py), which take their series from these files.

The integration tests that scrape the real programs after real work hand each scrape here; it is
written only when CD_RECORD_METRICS=1, so an ordinary run changes nothing:

    CD_RECORD_METRICS=1 .venv/bin/pytest tests/integration/test_program_metrics.py \
        tests/integration/test_channel_pool.py -k "reports or exhausted"

Only the operator's own families are kept (the client library's process_* and python_* series say
nothing about ComputeDomains and differ from machine to machine).
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
ENV = "CD_RECORD_METRICS"
PREFIX = "computedomain_"


def own_lines(text: str) -> list[str]:
    """The lines of a /metrics answer that belong to the operator's families (HELP, TYPE, samples)."""
    kept = []
    for line in text.splitlines():
        name = line.split(" ", 3)[2] if line.startswith(("# HELP ", "# TYPE ")) else line
        if name.startswith(PREFIX):
            kept.append(line)
    return kept


def record(program: str, text: str, how: str) -> None:
    """Keep `text`, one scrape of `program` (`how`: the work before it), as `<program>.prom`."""
    if os.environ.get(ENV) != "1":
        return
    FIXTURES.mkdir(parents=True, exist_ok=True)
    header = [
        f"# {program}: scraped from the real program by tests/integration ({how}).",
        f"# Rewritten by a run with {ENV}=1 (tests/support/metricsfixture.py).",
    ]
    (FIXTURES / f"{program}.prom").write_text("\n".join([*header, *own_lines(text)]) + "\n")
