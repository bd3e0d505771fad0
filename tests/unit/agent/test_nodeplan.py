"""The agent's pure decisions about its Node: label writes and Events."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.agent.nodeplan import (
    EventSpec,
    LabelAction,
    LabelPlan,
    label_changes,
    owns_label,
    plan_event,
    plan_label,
    render_label_apply,
    state_key,
)
from computedomain.api import names
from computedomain.nvml.clique import CliqueResult, Reason

CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
OTHER = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.7"

FOUND = CliqueResult(CLIQUE, Reason.CLIQUE_FOUND, f"GPUs 0, 1, 2, 3 in NVLink clique {CLIQUE}", [], 4)
MOVED = CliqueResult(OTHER, Reason.CLIQUE_FOUND, f"GPUs 0, 1, 2, 3 in NVLink clique {OTHER}", [], 4)
DISAGREE = CliqueResult(
    None, Reason.CLIQUES_DISAGREE, "GPUs disagree", ["GPUs disagree", "GPU 1: in progress"]
)
FAILED = CliqueResult(None, Reason.REGISTRATION_FAILED, "GPU 3: failed with status 999", ["GPU 3: failed"])
PENDING = CliqueResult(None, Reason.REGISTRATION_IN_PROGRESS, "GPU 1: fabric registration in progress")
NO_FABRIC = CliqueResult(None, Reason.NO_FABRIC, "none of the 2 GPUs is in a multi-node NVLink fabric")
NO_NVML = CliqueResult(None, Reason.NVML_UNAVAILABLE, "NVML is not usable", ["nvmlInit: missing (12)"])


def managed(manager: str, operation: str, labels: list[str]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "fieldsV1": {"f:metadata": {"f:labels": {f"f:{key}": {} for key in labels}}},
    }


AGENT = names.AGENT_FIELD_MANAGER


class TestOwnsLabel:
    def test_applied_by_the_agent(self) -> None:
        fields = [
            managed("kubelet", "Update", ["kubernetes.io/hostname"]),
            managed(AGENT, "Apply", [names.GPU_CLIQUE_LABEL]),
        ]
        assert owns_label(fields, AGENT, names.GPU_CLIQUE_LABEL)

    def test_other_manager_or_update_does_not_count(self) -> None:
        fields = [
            managed("gpu-feature-discovery", "Apply", [names.GPU_CLIQUE_LABEL]),
            managed(AGENT, "Update", [names.GPU_CLIQUE_LABEL]),
        ]
        assert not owns_label(fields, AGENT, names.GPU_CLIQUE_LABEL)

    def test_agent_entry_without_that_label(self) -> None:
        assert not owns_label([managed(AGENT, "Apply", ["other"])], AGENT, names.GPU_CLIQUE_LABEL)
        assert not owns_label([{"manager": AGENT, "operation": "Apply"}], AGENT, names.GPU_CLIQUE_LABEL)
        assert not owns_label([], AGENT, names.GPU_CLIQUE_LABEL)


class TestPlanLabel:
    def test_nothing_changes_means_no_write(self) -> None:
        assert plan_label(CLIQUE, True, CLIQUE) == LabelPlan(LabelAction.KEEP, CLIQUE)
        assert not plan_label(CLIQUE, True, CLIQUE).write
        assert not plan_label(None, False, None).write

    def test_new_clique_is_set(self) -> None:
        plan = plan_label(None, False, CLIQUE)
        assert plan == LabelPlan(LabelAction.SET, CLIQUE)
        assert plan.write
        assert label_changes(None, plan)

    def test_changed_clique_is_set(self) -> None:
        plan = plan_label(OTHER, True, CLIQUE)
        assert plan.action is LabelAction.SET
        assert label_changes(OTHER, plan)

    def test_right_value_set_by_someone_else_is_adopted_without_changing_it(self) -> None:
        plan = plan_label(CLIQUE, False, CLIQUE)
        assert plan.action is LabelAction.SET
        assert not label_changes(CLIQUE, plan)

    def test_own_label_is_removed_when_the_clique_is_gone(self) -> None:
        plan = plan_label(CLIQUE, True, None)
        assert plan == LabelPlan(LabelAction.REMOVE, None)
        assert plan.write
        assert label_changes(CLIQUE, plan)

    def test_foreign_label_is_left_alone(self) -> None:
        plan = plan_label(CLIQUE, False, None)
        assert plan.action is LabelAction.LEAVE_FOREIGN
        assert not plan.write
        assert not label_changes(CLIQUE, plan)


def test_label_apply_holds_only_the_clique_label() -> None:
    assert render_label_apply("gb200-r1-n03", CLIQUE) == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gb200-r1-n03", "labels": {names.GPU_CLIQUE_LABEL: CLIQUE}},
    }


def test_label_release_applies_no_labels_at_all() -> None:
    assert render_label_apply("gb200-r1-n03", None) == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gb200-r1-n03"},
    }


class TestPlanEvent:
    def test_same_state_as_last_reported_gives_no_event(self) -> None:
        first = plan_event(state_key(DISAGREE), DISAGREE, changed_label=False)
        assert first is None
        assert plan_event(state_key(FOUND), FOUND, changed_label=False) is None

    def test_clique_detected(self) -> None:
        spec = plan_event(state_key(PENDING), FOUND, changed_label=True)
        assert spec == EventSpec("Normal", "NVLinkCliqueDetected", FOUND.message)

    def test_clique_changed(self) -> None:
        spec = plan_event(state_key(FOUND), MOVED, changed_label=True)
        assert spec is not None
        assert spec.reason == "NVLinkCliqueDetected"
        assert OTHER in spec.message

    @pytest.mark.parametrize("result", [DISAGREE, FAILED])
    def test_problem_is_a_warning_with_reason_and_details(self, result: CliqueResult) -> None:
        spec = plan_event(state_key(FOUND), result, changed_label=True)
        assert spec is not None
        assert (spec.type, spec.reason) == ("Warning", "NVLinkCliqueInvalid")
        assert spec.message.startswith(f"{result.reason}: {result.message}")
        for problem in result.problems:
            assert problem in spec.message

    def test_problem_is_reported_on_first_check_after_start(self) -> None:
        spec = plan_event(None, FAILED, changed_label=False)
        assert spec is not None
        assert spec.type == "Warning"

    def test_quiet_restart_on_a_healthy_node(self) -> None:
        assert plan_event(None, FOUND, changed_label=False) is None
        assert plan_event(None, NO_FABRIC, changed_label=False) is None

    def test_first_check_that_sets_the_label_is_reported(self) -> None:
        spec = plan_event(None, FOUND, changed_label=True)
        assert spec is not None
        assert spec.reason == "NVLinkCliqueDetected"

    def test_registration_in_progress_is_normal(self) -> None:
        spec = plan_event(state_key(FOUND), PENDING, changed_label=True)
        assert spec == EventSpec("Normal", "NVLinkRegistrationInProgress", PENDING.message)

    @pytest.mark.parametrize("result", [NO_FABRIC, NO_NVML])
    def test_label_removal_is_reported_only_when_the_label_goes(self, result: CliqueResult) -> None:
        spec = plan_event(state_key(FOUND), result, changed_label=True)
        assert spec is not None
        assert (spec.type, spec.reason) == ("Normal", "NVLinkCliqueRemoved")
        assert str(result.reason) in spec.message
        assert plan_event(state_key(PENDING), result, changed_label=False) is None
