"""The agent's check loop and command line, with a scripted GPU source and a recording sink."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from computedomain.agent.__main__ import parse_options
from computedomain.agent.loop import AgentSettings, NvmlRequiredError, next_delay, run_loop
from computedomain.nvml.clique import CliqueResult, Reason
from computedomain.nvml.gpus import FabricInfo, FabricState, GpuInfo, NodeGpus, NvmlCallError, NvmlStatus

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


BASE = AgentSettings(node_name="gb200-r1-n03", interval=LONG, retry_interval=0.0, require_nvml=True)


def settings(**overrides: Any) -> AgentSettings:
    return BASE.model_copy(update=overrides)


async def run(source: ScriptedSource, sink: RecordingSink, agent: AgentSettings) -> None:
    await asyncio.wait_for(run_loop(agent, source, sink, sink.stop), timeout=10)


class TestNextDelay:
    def test_stable_answer_waits_the_interval(self) -> None:
        result = CliqueResult("c.1", Reason.CLIQUE_FOUND, "m")
        assert next_delay(result, True, AgentSettings(node_name="n", interval=60, retry_interval=5)) == 60

    @pytest.mark.parametrize("reason", [Reason.REGISTRATION_IN_PROGRESS, Reason.NVML_CALL_FAILED])
    def test_transient_answer_rechecks_sooner(self, reason: Reason) -> None:
        assert (
            next_delay(
                CliqueResult(None, reason, "m"),
                True,
                AgentSettings(node_name="n", interval=60, retry_interval=5),
            )
            == 5
        )

    def test_failed_write_rechecks_sooner(self) -> None:
        result = CliqueResult(None, Reason.NO_FABRIC, "m")
        assert next_delay(result, False, AgentSettings(node_name="n", interval=60, retry_interval=5)) == 5

    def test_retry_never_exceeds_interval(self) -> None:
        assert (
            next_delay(
                CliqueResult(None, Reason.NVML_CALL_FAILED, "m"),
                True,
                AgentSettings(node_name="n", interval=2, retry_interval=5),
            )
            == 2
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


AGENT_ENV = {"NODE_NAME": "gb200-r1-n03", "POD_NAMESPACE": "gpu-operator"}


class TestOptions:
    def test_defaults(self) -> None:
        options = parse_options([], AGENT_ENV)
        assert options.settings == AgentSettings(
            node_name="gb200-r1-n03",
            namespace="gpu-operator",
            interval=60.0,
            retry_interval=5.0,
            require_nvml=True,
            log_format="text",
            log_level="INFO",
            kube=True,
        )
        assert (options.once, options.kube, options.json) == (False, True, False)

    def test_every_setting_comes_from_the_environment(self) -> None:
        env = {
            **AGENT_ENV,
            "CHECK_INTERVAL_SECONDS": "30",
            "RETRY_INTERVAL_SECONDS": "0.5",
            "REQUIRE_NVML": "false",
            "LOG_FORMAT": "JSON",
            "LOG_LEVEL": "debug",
        }
        settings = parse_options([], env).settings
        assert (settings.interval, settings.retry_interval, settings.require_nvml) == (30.0, 0.5, False)
        assert (settings.log_format, settings.log_level) == ("json", "DEBUG")

    def test_options_override_the_environment(self) -> None:
        env = {**AGENT_ENV, "REQUIRE_NVML": "false", "LOG_FORMAT": "json", "CHECK_INTERVAL_SECONDS": "30"}
        argv = ["--require-nvml", "--interval", "1", "--retry-interval", "0.5", "--node-name", "other"]
        settings = parse_options([*argv, "--log-format", "text", "--log-level", "WARNING"], env).settings
        assert settings.require_nvml
        assert (settings.interval, settings.retry_interval, settings.node_name) == (1.0, 0.5, "other")
        assert (settings.log_format, settings.log_level) == ("text", "WARNING")
        assert not parse_options(["--no-require-nvml"], {**AGENT_ENV}).settings.require_nvml

    @pytest.mark.parametrize(("given", "expected"), [("plain", "text"), ("text", "text"), ("json", "json")])
    def test_log_formats_of_the_chart_and_the_old_plain(self, given: str, expected: str) -> None:
        assert parse_options([], {**AGENT_ENV, "LOG_FORMAT": given}).settings.log_format == expected
        assert parse_options(["--log-format", given], AGENT_ENV).settings.log_format == expected

    def test_once_without_kube_needs_no_node_name_nor_namespace(self) -> None:
        options = parse_options(["--once", "--no-kube", "--json", "--no-require-nvml"], {})
        assert (options.once, options.kube, options.json, options.settings.require_nvml) == (
            True,
            False,
            True,
            False,
        )

    @pytest.mark.parametrize(
        ("argv", "env", "named"),
        [
            ([], {"POD_NAMESPACE": "ns"}, "NODE_NAME is required"),
            ([], {"NODE_NAME": "n"}, "POD_NAMESPACE is required"),
            ([], {**AGENT_ENV, "REQUIRE_NVML": "maybe"}, "REQUIRE_NVML='maybe': must be true or false"),
            (["--interval", "0"], AGENT_ENV, "--interval=0.0: Input should be greater than 0"),
            ([], {**AGENT_ENV, "CHECK_INTERVAL_SECONDS": "soon"}, "CHECK_INTERVAL_SECONDS='soon'"),
            (["--log-format", "xml"], AGENT_ENV, "--log-format='xml': must be json or text"),
            ([], {**AGENT_ENV, "LOG_LEVEL": "loud"}, "LOG_LEVEL='loud'"),
        ],
    )
    def test_invalid_input_exits_2(
        self, argv: list[str], env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            parse_options(argv, env)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "computedomain-agent: error: invalid agent settings:" in err
        assert named in err

    def test_every_bad_variable_is_named_in_one_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        env = {
            "CHECK_INTERVAL_SECONDS": "0",
            "RETRY_INTERVAL_SECONDS": "-1",
            "REQUIRE_NVML": "maybe",
            "LOG_FORMAT": "xml",
            "LOG_LEVEL": "loud",
        }
        with pytest.raises(SystemExit):
            parse_options([], env)
        err = capsys.readouterr().err
        for variable in (*env, "NODE_NAME", "POD_NAMESPACE"):
            assert variable in err, variable
