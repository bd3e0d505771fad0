"""The agent's check loop and command line, with a scripted GPU source and a recording sink."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from computedomain.agent.__main__ import parse_bool, parse_options
from computedomain.agent.clique import CliqueResult, Reason
from computedomain.agent.gpus import FabricInfo, FabricState, GpuInfo, NodeGpus, NvmlCallError, NvmlStatus
from computedomain.agent.loop import AgentSettings, NvmlRequiredError, next_delay, run_loop

CLUSTER = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22"
# Long enough that a test would time out if the loop waited a full interval where it should not.
LONG = 3600.0


def tray(state: FabricState = FabricState.COMPLETED) -> NodeGpus:
    info = FabricInfo(state=state, status=0, cluster_uuid=CLUSTER, clique_id=32766)
    return NodeGpus(
        NvmlStatus.OK, "580.82.07", tuple(GpuInfo(i, f"GPU-{i}", "NVIDIA GB200", info) for i in range(4))
    )


MISSING = NodeGpus(NvmlStatus.MISSING, error=NvmlCallError("nvmlInit", 12, "NVML Shared Library Not Found"))


class ScriptedSource:
    """Returns the readings in order, then repeats the last one."""

    def __init__(self, readings: Sequence[NodeGpus]) -> None:
        self.readings = list(readings)
        self.reads = 0

    def read(self) -> NodeGpus:
        reading = self.readings[min(self.reads, len(self.readings) - 1)]
        self.reads += 1
        return reading


class RecordingSink:
    """Records results; answers with `answers` in order (then True); sets `stop` after `stop_after`."""

    def __init__(self, stop: asyncio.Event, stop_after: int, answers: Sequence[bool] = ()) -> None:
        self.stop = stop
        self.stop_after = stop_after
        self.answers = list(answers)
        self.results: list[CliqueResult] = []

    async def sync(self, result: CliqueResult) -> bool:
        self.results.append(result)
        if len(self.results) >= self.stop_after:
            self.stop.set()
        return self.answers.pop(0) if self.answers else True


BASE = AgentSettings("gb200-r1-n03", interval=LONG, retry_interval=0.0, require_nvml=True)


def settings(**overrides: Any) -> AgentSettings:
    return dataclasses.replace(BASE, **overrides)


async def run(source: ScriptedSource, sink: RecordingSink, agent: AgentSettings) -> None:
    await asyncio.wait_for(run_loop(agent, source, sink, sink.stop), timeout=10)


class TestNextDelay:
    def test_stable_answer_waits_the_interval(self) -> None:
        result = CliqueResult("c.1", Reason.CLIQUE_FOUND, "m")
        assert next_delay(result, True, AgentSettings("n", 60, 5)) == 60

    @pytest.mark.parametrize("reason", [Reason.REGISTRATION_IN_PROGRESS, Reason.NVML_CALL_FAILED])
    def test_transient_answer_rechecks_sooner(self, reason: Reason) -> None:
        assert next_delay(CliqueResult(None, reason, "m"), True, AgentSettings("n", 60, 5)) == 5

    def test_failed_write_rechecks_sooner(self) -> None:
        result = CliqueResult(None, Reason.NO_FABRIC, "m")
        assert next_delay(result, False, AgentSettings("n", 60, 5)) == 5

    def test_retry_never_exceeds_interval(self) -> None:
        assert (
            next_delay(CliqueResult(None, Reason.NVML_CALL_FAILED, "m"), True, AgentSettings("n", 2, 5)) == 2
        )


async def test_registration_in_progress_is_rechecked_soon_until_the_clique_appears() -> None:
    stop = asyncio.Event()
    source = ScriptedSource([tray(FabricState.IN_PROGRESS), tray(FabricState.IN_PROGRESS), tray()])
    sink = RecordingSink(stop, stop_after=3)
    await run(source, sink, settings())
    assert [r.reason for r in sink.results] == [
        Reason.REGISTRATION_IN_PROGRESS,
        Reason.REGISTRATION_IN_PROGRESS,
        Reason.CLIQUE_FOUND,
    ]
    assert sink.results[-1].clique_id == f"{CLUSTER}.32766"


async def test_failed_write_is_retried_soon() -> None:
    stop = asyncio.Event()
    sink = RecordingSink(stop, stop_after=2, answers=[False])
    await run(ScriptedSource([tray()]), sink, settings())
    assert len(sink.results) == 2


async def test_required_nvml_missing_raises_without_touching_the_node() -> None:
    stop = asyncio.Event()
    sink = RecordingSink(stop, stop_after=1)
    with pytest.raises(
        NvmlRequiredError, match="NVML is required but not usable: nvmlInit: NVML Shared Library"
    ):
        await run(ScriptedSource([MISSING]), sink, settings(require_nvml=True))
    assert sink.results == []


async def test_no_gpu_mode_keeps_running_clears_the_label_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    sink = RecordingSink(stop, stop_after=3)
    caplog.set_level(logging.INFO, logger="computedomain.agent.loop")
    await run(ScriptedSource([MISSING]), sink, settings(require_nvml=False, interval=0.0))
    assert [r.reason for r in sink.results] == [Reason.NVML_UNAVAILABLE] * 3
    assert all(r.clique_id is None for r in sink.results)
    assert [m for m in caplog.messages if "no usable NVML" in m] == [caplog.messages[0]]


async def test_reporter_sees_every_check_without_a_sink() -> None:
    stop = asyncio.Event()
    seen: list[Reason] = []

    def report(gpus: NodeGpus, result: CliqueResult) -> None:
        seen.append(result.reason)
        if len(seen) == 2:
            stop.set()

    source = ScriptedSource([tray(FabricState.NOT_STARTED), tray()])
    await asyncio.wait_for(run_loop(settings(), source, None, stop, report), timeout=10)
    assert seen == [Reason.REGISTRATION_IN_PROGRESS, Reason.CLIQUE_FOUND]


class TestOptions:
    def test_defaults(self) -> None:
        options = parse_options([], {"NODE_NAME": "gb200-r1-n03"})
        assert options.settings == AgentSettings("gb200-r1-n03", 60.0, 5.0, True)
        assert (options.once, options.kube, options.json, options.log_format) == (False, True, False, "plain")

    def test_env_turns_off_the_nvml_requirement_and_the_flag_wins(self) -> None:
        env = {"NODE_NAME": "n", "REQUIRE_NVML": "false", "LOG_FORMAT": "json"}
        options = parse_options([], env)
        assert not options.settings.require_nvml
        assert options.log_format == "json"
        assert parse_options(["--require-nvml"], env).settings.require_nvml

    def test_once_without_kube_needs_no_node_name(self) -> None:
        options = parse_options(["--once", "--no-kube", "--json", "--no-require-nvml"], {})
        assert (options.once, options.kube, options.json, options.settings.require_nvml) == (
            True,
            False,
            True,
            False,
        )

    @pytest.mark.parametrize(
        ("argv", "env"),
        [
            ([], {}),
            ([], {"NODE_NAME": "n", "REQUIRE_NVML": "maybe"}),
            (["--interval", "0"], {"NODE_NAME": "n"}),
        ],
    )
    def test_invalid_input_exits_2(
        self, argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            parse_options(argv, env)
        assert exited.value.code == 2
        assert "computedomain-agent: error:" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("text", "value"), [("1", True), ("TRUE", True), (" yes ", True), ("0", False), ("off", False)]
    )
    def test_parse_bool(self, text: str, value: bool) -> None:
        assert parse_bool(text) is value
