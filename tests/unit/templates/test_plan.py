"""Ordering in the generated DAGs: group sequencing, step order, depends_on, affected only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from forge.domain.discovery import DiscoveryResult
from forge.errors import InvalidInputError
from forge.workflows.templates import TemplateSpec, build_template, has_work, plan_tasks, validate_workflow_template

MakeDiscovery = Callable[..., DiscoveryResult]
MakeSpec = Callable[..., TemplateSpec]


def _templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def _depends(doc: dict[str, Any], dag: str) -> dict[str, str | None]:
    return {t["name"]: t.get("depends") for t in _templates(doc)[dag]["dag"]["tasks"]}


def test_groups_run_in_sequence_as_nested_dags(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    result = make_discovery(
        {
            "app": ([], {"check": [("lint", 60, 0)], "test": [("unit", 60, 0)], "package": [("image", 60, 0)]}),
            "lib": ([], {"build": [("compile", 60, 0)], "test": [("unit", 60, 0)]}),
        }
    )
    doc = build_template(make_spec(result))
    validate_workflow_template(doc)
    assert doc["spec"]["entrypoint"] == "main"
    main = _templates(doc)["main"]["dag"]
    assert main["failFast"] is True
    assert [(t["name"], t["template"], t.get("depends")) for t in main["tasks"]] == [
        ("group-1", "group-1", None),
        ("group-2", "group-2", "group-1"),
        ("group-3", "group-3", "group-2"),
    ]
    # phases of one group and different projects run in parallel: no edges at all here
    assert _depends(doc, "group-1") == {"build-lib-compile": None, "check-app-lint": None}
    assert _depends(doc, "group-2") == {"test-app-unit": None, "test-lib-unit": None}
    assert _depends(doc, "group-3") == {"package-app-image": None}
    for name in ("group-1", "group-2", "group-3"):
        assert _templates(doc)[name]["dag"]["failFast"] is True


def test_steps_of_a_phase_run_in_listed_order(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    steps = [("zeta", 60, 0), ("alpha", 60, 0), ("mid", 60, 0)]
    doc = build_template(make_spec(make_discovery({"app": ([], {"test": steps})})))
    assert _depends(doc, "group-2") == {
        "test-app-zeta": None,
        "test-app-alpha": "test-app-zeta",
        "test-app-mid": "test-app-alpha",
    }


def test_depends_on_waits_for_the_last_step_of_each_dependency(
    make_discovery: MakeDiscovery, make_spec: MakeSpec
) -> None:
    result = make_discovery(
        {
            "a": ([], {"test": [("one", 60, 0), ("two", 60, 0)]}),
            "b": ([], {"test": [("unit", 60, 0)]}),
            "c": (["a", "b"], {"test": [("first", 60, 0), ("second", 60, 0)], "check": [("lint", 60, 0)]}),
        }
    )
    doc = build_template(make_spec(result))
    assert _depends(doc, "group-2") == {
        "test-a-one": None,
        "test-a-two": "test-a-one",
        "test-b-unit": None,
        "test-c-first": "test-a-two && test-b-unit",
        "test-c-second": "test-c-first",
    }
    # c's check phase has no dependency with steps in it: it starts with the group
    assert _depends(doc, "group-1") == {"check-c-lint": None}


def test_depends_on_is_transitive_through_a_project_without_the_phase(
    make_discovery: MakeDiscovery, make_spec: MakeSpec
) -> None:
    result = make_discovery(
        {
            "base": ([], {"test": [("unit", 60, 0)]}),
            "middle": (["base"], {"check": [("lint", 60, 0)]}),
            "top": (["middle"], {"test": [("unit", 60, 0)]}),
        }
    )
    doc = build_template(make_spec(result))
    assert _depends(doc, "group-2") == {"test-base-unit": None, "test-top-unit": "test-base-unit"}


def test_only_affected_projects_run(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    result = make_discovery(
        {
            "lib": ([], {"test": [("unit", 60, 0)]}),
            "app": (["lib"], {"test": [("unit", 60, 0)]}),
            "other": ([], {"check": [("lint", 60, 0)]}),
        },
        affected=["app"],
    )
    doc = build_template(make_spec(result))
    assert [t["name"] for t in _templates(doc)["main"]["dag"]["tasks"]] == ["group-2"]
    assert _depends(doc, "group-2") == {"test-app-unit": None}


def test_no_work_means_no_template(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    result = make_discovery({"lib": ([], {"test": [("unit", 60, 0)]}), "docs": ([], {})}, affected=["docs"])
    assert not has_work(result)
    assert plan_tasks(result) == []
    with pytest.raises(InvalidInputError, match="no steps to run"):
        build_template(make_spec(result))
    assert not has_work(make_discovery({"lib": ([], {"test": [("unit", 60, 0)]})}, affected=[]))


def test_every_step_needs_an_id(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    result = make_discovery({"lib": ([], {"test": [("unit", 60, 0), ("e2e", 60, 0)]})})
    with pytest.raises(InvalidInputError, match="1 step\\(s\\): test/lib/e2e"):
        build_template(make_spec(result, step_ids={("test", "lib", "unit"): make_spec(result).run_id}))


def test_a_dependency_cycle_is_refused(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    result = make_discovery({"a": (["b"], {"test": [("u", 60, 0)]}), "b": (["a"], {"test": [("u", 60, 0)]})})
    with pytest.raises(InvalidInputError, match="cycle among projects: a, b"):
        build_template(make_spec(result))
