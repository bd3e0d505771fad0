"""The kubelet plugin's resident memory, taken apart: what each import group and each part it starts
adds (prints its figures; not a test).

    python bench/footprint.py                       # import groups, in the order the plugin loads them
    python bench/footprint.py --serve               # then what the plugin starts: TLS, HTTP, gRPC, threads
    python bench/footprint.py --serve --env MALLOC_ARENA_MAX=2   # the same under other settings

A fresh interpreter (`footprintchild.py`) imports the groups one after the other; after each it stops
and this process reads its memory from /proc (RSS from status, PSS and USS from smaps_rollup), so the
measured process loads nothing for the measurement itself. A group's figure is what it adds to the
groups before it (a module shared with an earlier group counts there); "alone" is what the group costs
in an interpreter of its own. The plugin runs on every GPU node, so each MiB here is paid per node.
The running plugin's own figure, on real kubelets, is printed by `bench/kubelets.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstats

# What the plugin loads, in its order: (label, modules). Modules that are missing are reported.
IMPORT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("asyncio (with ssl, concurrent.futures)", ("asyncio",)),
    ("logging, argparse, json", ("logging", "argparse", "json")),
    ("pydantic", ("pydantic", "pydantic.main", "pydantic_core")),
    ("pydantic-settings (computedomain.envsettings)", ("computedomain.envsettings",)),
    ("API models (computedomain.api.models)", ("computedomain.api.models",)),
    ("pynvml", ("pynvml",)),
    ("yaml", ("yaml",)),
    ("aiohttp client", ("aiohttp",)),
    ("aiohttp server (aiohttp.web)", ("aiohttp.web",)),
    ("API client (computedomain.kube)", ("computedomain.kube", "computedomain.kube.config")),
    ("prometheus_client", ("prometheus_client",)),
    (
        "protobuf runtime",
        (
            "google.protobuf.message",
            "google.protobuf.descriptor_pool",
            "google.protobuf.symbol_database",
            "google.protobuf.internal.builder",
        ),
    ),
    ("grpc, grpc.aio", ("grpc", "grpc.aio")),
)
STUBS_LABEL = "generated gRPC stubs"
PLUGIN_LABEL = "every other module of computedomain.plugin"
PLUGIN_PACKAGE = "computedomain.plugin"

# What the running plugin holds besides its modules, in the order it starts them (footprintchild.py).
SERVE_STEPS: tuple[tuple[str, str], ...] = (
    ("tls", "TLS context with the system CA store"),
    ("http", "HTTP endpoints listening (computedomain.endpoints)"),
    ("grpc", "two gRPC servers on unix sockets, every service"),
    ("thread", "one worker thread (asyncio.to_thread)"),
    ("gc", "after gc.collect()"),
    ("trim", "after malloc_trim(0)"),
)

OPERATOR = Path(__file__).resolve().parents[1] / "operator"
CHILD = Path(__file__).resolve().parent / "footprintchild.py"
Row = tuple[str, procstats.Memory]


def plugin_modules() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(generated stub modules, every other module) of the plugin package, found on disk so that
    the figures follow the package as it is laid out."""
    root = OPERATOR / PLUGIN_PACKAGE.replace(".", "/")
    stubs: list[str] = []
    others: list[str] = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(OPERATOR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        (stubs if parts[-1].endswith(("_pb2", "_pb2_grpc")) else others).append(name)
    return tuple(stubs), tuple(others)


def loaded_by_plugin(modules: Sequence[str], env: Mapping[str, str]) -> set[str]:
    """Every module an interpreter holds once it has imported the plugin's `modules`."""
    script = "import sys\nfor m in sys.argv[1:]:\n    __import__(m)\nprint(*sys.modules, sep='\\n')"
    listing = subprocess.run(
        [sys.executable, "-c", script, *modules], env=env, capture_output=True, text=True, check=True
    )
    return set(listing.stdout.split())


def import_steps(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(label, child step) for every import group, the plugin's own last. A group keeps only the
    modules the plugin loads; one left empty is marked and imports nothing."""
    stubs, others = plugin_modules()
    loaded = loaded_by_plugin([*stubs, *others], env)
    steps = []
    for label, modules in IMPORT_GROUPS:
        kept = [module for module in modules if module in loaded]
        steps.append((label, "import:" + ",".join(kept)) if kept else (f"{label}: not loaded", "import:sys"))
    steps += [(STUBS_LABEL, "import:" + ",".join(stubs)), (PLUGIN_LABEL, "import:" + ",".join(others))]
    return steps


def measure(steps: Sequence[str], env: Mapping[str, str]) -> list[Row]:
    """Run one child through `steps`: (outcome, its memory) after each."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), *steps],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    rows: list[Row] = []
    try:
        for _ in steps:
            outcome = child.stdout.readline().strip()
            if not outcome:
                raise RuntimeError(f"the measured interpreter ended early ({child.wait()})")
            rows.append((outcome, procstats.memory_detail(child.pid)))
            child.stdin.write("\n")
            child.stdin.flush()
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    return rows


def baseline(env: Mapping[str, str]) -> procstats.Memory:
    """A bare interpreter's memory: the child after a step that loads nothing (`sys` is loaded)."""
    return measure(["import:sys"], env)[0][1]


def child_env(assignments: Sequence[str]) -> dict[str, str]:
    """This environment, with the checkout's code first on the path and `KEY=VALUE` assignments."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(OPERATOR), env.get("PYTHONPATH", "")) if p)
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise SystemExit(f"--env takes KEY=VALUE, not {assignment!r}")
        env[key] = value
    return env


def _line(label: str, *cells: str) -> None:
    print(f"  {label:<60} " + " ".join(f"{cell:>8}" for cell in cells), flush=True)


def _mib(value: float) -> str:
    return f"{value:.1f}"


def _delta(value: float) -> str:
    return f"{value:+.1f}"


def report(serve: bool, env: Mapping[str, str], alone: bool) -> None:
    """Print the table: per step the total RSS and what it added (RSS, USS, PSS), in MiB."""
    steps = import_steps(env)
    labels = [label for label, _ in steps]
    commands = [step for _, step in steps]
    if serve:
        labels += [label for _, label in SERVE_STEPS]
        commands += [f"serve:{name}" for name, _ in SERVE_STEPS]
    bare = baseline(env)
    rows = measure(commands, env)
    costs_alone = {}
    if alone:
        for label, step in steps:
            costs_alone[label] = measure([step], env)[0][1].rss - bare.rss
    print("MiB; + is what a step adds to the ones above it; alone: in an interpreter of its own")
    _line("", "RSS", "+RSS", "+USS", "+PSS", "alone")
    _line("bare interpreter", _mib(bare.rss), "", _mib(bare.uss), _mib(bare.pss))
    before = bare
    for label, (outcome, memory) in zip(labels, rows, strict=True):
        shown = label if outcome == "ok" else f"{label} ({outcome})"
        single = _delta(costs_alone[label]) if label in costs_alone else ""
        _line(
            shown,
            _mib(memory.rss),
            _delta(memory.rss - before.rss),
            _delta(memory.uss - before.uss),
            _delta(memory.pss - before.pss),
            single,
        )
        before = memory
    _line("total", _mib(before.rss), _delta(before.rss - bare.rss))


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help="also start what the plugin starts")
    parser.add_argument("--no-alone", action="store_true", help="skip the one-group interpreters")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="set for the measured interpreter"
    )
    args = parser.parse_args()
    report(args.serve, child_env(args.env), alone=not args.no_alone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
