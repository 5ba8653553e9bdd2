"""EnvironmentConfig data: environment < project; maps merge, lists and scalars replace, null deletes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.cmp.support import environment_config

from forge.cmp.values import config_data, merge_values
from forge.errors import InvalidInputError


def test_maps_merge_deeply_lists_and_scalars_replace_null_deletes() -> None:
    env = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "list": [1, 2, 3], "s": "env", "gone": 1, "kept": True}
    project = {"a": {"y": {"q": 20, "r": 30}, "z": 3}, "list": [9], "s": "project", "gone": None, "new": None}
    assert merge_values(env, project) == {
        "a": {"x": 1, "y": {"p": 1, "q": 20, "r": 30}, "z": 3},
        "list": [9],
        "s": "project",
        "kept": True,
    }


def test_a_null_nested_deep_deletes_only_that_key() -> None:
    assert merge_values({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": None}}}) == {"a": {"b": {"d": 2}}}


def test_a_scalar_replaces_a_map_and_a_map_replaces_a_scalar() -> None:
    assert merge_values({"a": {"b": 1}, "c": 1}, {"a": 5, "c": {"d": None, "e": 1}}) == {"a": 5, "c": {"e": 1}}


def test_nulls_in_the_environment_mean_no_value() -> None:
    assert merge_values({"a": None, "b": {"c": None}}, {}) == {"b": {}}


def test_inputs_are_not_mutated_or_shared() -> None:
    env: dict[str, Any] = {"a": {"b": [1]}}
    project: dict[str, Any] = {"c": {"d": [2]}}
    before = copy.deepcopy((env, project))
    merged = merge_values(env, project)
    merged["a"]["b"].append(3)
    merged["c"]["d"].append(3)
    assert (env, project) == before


_json = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=10,
)
_maps = st.dictionaries(st.sampled_from("abcd"), _json, max_size=4)


@given(_maps, _maps)
def test_every_override_key_wins_or_deletes(env: dict[str, Any], project: dict[str, Any]) -> None:
    merged = merge_values(env, project)
    for key, value in project.items():
        if value is None:
            assert key not in merged
        elif not isinstance(value, dict):
            assert merged[key] == value
    assert merge_values(merged, {}) == merged


def test_config_data_reads_the_data_of_one_environment_config() -> None:
    assert config_data([environment_config("dev", {"a": 1})], "env.yaml", named=True) == {"a": 1}
    assert config_data([environment_config("dev", None)], "env.yaml", named=True) == {}


@pytest.mark.parametrize(
    ("documents", "reason"),
    [
        ([], "exactly one"),
        ([environment_config("a", {}), environment_config("b", {})], "exactly one"),
        (["text"], "must be a mapping"),
        ([{**environment_config("a", {}), "apiVersion": "v1"}], "apiVersion"),
        ([{**environment_config("a", {}), "kind": "ConfigMap"}], "kind"),
        ([{**environment_config("a", {}), "data": [1]}], "data: must be a mapping"),
        ([{**environment_config("a", {}), "metadata": {}}], "metadata.name"),
    ],
)
def test_anything_but_an_environment_config_is_refused(documents: list[Any], reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        config_data(documents, "env.yaml", named=True)
