"""The strict schema: unknown fields and wrong types are named by their path."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from forge.domain.discovery import DiscoveryResult
from forge.errors import InvalidInputError
from forge.workflows.templates import (
    TemplateSpec,
    build_template,
    strict_schema,
    validate_workflow_template,
    violations,
)

MakeDiscovery = Callable[..., DiscoveryResult]
MakeSpec = Callable[..., TemplateSpec]


@pytest.fixture
def doc(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> dict[str, Any]:
    result = make_discovery({"app": ([], {"test": [("unit", 60, 2)]}), "lib": ([], {"check": [("lint", 60, 0)]})})
    return build_template(make_spec(result))


def _container_index(doc: dict[str, Any]) -> int:
    return next(i for i, t in enumerate(doc["spec"]["templates"]) if "container" in t)


def _objects(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        if "properties" in schema:
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _objects(value)


def test_the_strict_schema_is_a_valid_schema_closed_everywhere() -> None:
    schema = strict_schema()
    Draft202012Validator.check_schema(schema)
    objects = list(_objects(schema["$defs"]))
    assert len(objects) > 150
    assert all(o["additionalProperties"] is False for o in objects if isinstance(o.get("properties"), dict))
    labels = schema["$defs"]["ObjectMeta"]["properties"]["labels"]
    assert "additionalProperties: false" not in str(labels)  # maps keep their value schema


def test_generated_template_is_valid(doc: dict[str, Any]) -> None:
    assert violations(doc) == []
    validate_workflow_template(doc)


def test_unknown_fields_are_rejected_with_their_path(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    index = _container_index(bad)
    bad["spec"]["bogusField"] = True
    bad["spec"]["templates"][index]["container"]["imagee"] = "typo"
    bad["spec"]["templates"][0]["dag"]["tasks"][0]["dependz"] = "x"
    with pytest.raises(InvalidInputError) as caught:
        validate_workflow_template(bad)
    assert caught.value.details["errors"] == [
        "spec.bogusField: unknown field",
        "spec.templates[0].dag.tasks[0].dependz: unknown field",
        f"spec.templates[{index}].container.imagee: unknown field",
    ]
    assert "spec.bogusField: unknown field" in str(caught.value)
    assert f"spec.templates[{index}].container.imagee" in str(caught.value)


def test_wrong_types_are_rejected(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    index = _container_index(bad)
    bad["spec"]["templates"][index]["activeDeadlineSeconds"] = {"x": 1}
    bad["spec"]["parallelism"] = "many"
    bad["metadata"]["labels"]["n"] = 3
    assert violations(bad) == [
        "metadata.labels.n: 3 is not of type 'string'",
        "spec.parallelism: 'many' is not of type integer or null",
        f"spec.templates[{index}].activeDeadlineSeconds: {{'x': 1}} is not of type string or integer",
    ]


def test_a_missing_required_field_is_reported(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    del bad["spec"]["templates"][0]["dag"]["tasks"][0]["name"]
    assert violations(bad) == ["spec.templates[0].dag.tasks[0]: 'name' is a required property"]
