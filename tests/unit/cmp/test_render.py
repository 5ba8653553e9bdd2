"""Values resolved into the objects (types kept), objects sorted by (kind, name), one JSON stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from forge.cmp.documents import load_documents
from forge.cmp.release import METADATA_MEDIA_TYPE, RELEASE_ARTIFACT_TYPE, RESOURCES_MEDIA_TYPE
from forge.cmp.render import emit, render_objects
from forge.errors import InvalidInputError
from forge.releases import media_types


def _cm(name: str, kind: str = "ConfigMap", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, **extra}


def test_a_whole_expression_keeps_its_type_an_embedded_one_is_interpolated() -> None:
    obj = _cm(
        "a", data={"n": "${{ env.n }}", "m": "${{env.m}}", "l": "${{ env.l }}", "s": "n=${{ env.n }} m=${{ env.m }}"}
    )
    [out] = render_objects([obj], {"n": 3, "m": {"k": "v"}, "l": [1, "x"]})
    assert out["data"] == {"n": 3, "m": {"k": "v"}, "l": [1, "x"], "s": 'n=3 m={"k":"v"}'}


def test_a_nested_path_resolves_and_an_escape_is_unescaped() -> None:
    [out] = render_objects([_cm("a", data={"h": "${{ env.db.host }}", "t": "$${{ x }}"})], {"db": {"host": "pg"}})
    assert out["data"] == {"h": "pg", "t": "${{ x }}"}


@pytest.mark.parametrize("expression", ["${{ env.missing }}", "${{ env.db.port }}", "${{ env.db.host.x }}"])
def test_an_unknown_path_is_an_error(expression: str) -> None:
    with pytest.raises(InvalidInputError, match="no value for env"):
        render_objects([_cm("a", data={"x": expression})], {"db": {"host": "pg"}})


def test_a_leftover_artifact_expression_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="unresolved artifact"):
        render_objects([_cm("a", data={"x": "${{ artifacts.api.ref }}"})], {})


def test_objects_are_sorted_by_kind_then_name() -> None:
    objects = [_cm("b"), _cm("z", "Deployment"), _cm("a"), _cm("a", "Service"), _cm("c", "Deployment")]
    out = render_objects(objects, {})
    assert [(o["kind"], o["metadata"]["name"]) for o in out] == [
        ("ConfigMap", "a"),
        ("ConfigMap", "b"),
        ("Deployment", "c"),
        ("Deployment", "z"),
        ("Service", "a"),
    ]


def test_same_name_in_two_namespaces_is_fine_twice_in_one_is_refused() -> None:
    one = {**_cm("a"), "metadata": {"name": "a", "namespace": "x"}}
    two = {**_cm("a"), "metadata": {"name": "a", "namespace": "y"}}
    assert len(render_objects([one, two], {})) == 2
    with pytest.raises(InvalidInputError, match="two objects are ConfigMap a in namespace x"):
        render_objects([one, dict(one)], {})


def test_a_name_that_stops_being_a_string_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"metadata\.name"):
        render_objects([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "${{ env.n }}"}}], {"n": 1})


def test_the_stream_reads_back_as_the_same_documents() -> None:
    documents = [_cm("a", data={"yes": "yes", "v": "1.10", "u": "ünï"}), _cm("b")]
    stream = emit(documents)
    assert stream.startswith(b"---\n{\n")
    parts = stream.decode().split("---\n")[1:]
    assert [json.loads(p) for p in parts] == documents
    assert load_documents(stream, "stream") == documents


def test_the_cmp_media_types_are_the_release_workers() -> None:
    assert (RELEASE_ARTIFACT_TYPE, METADATA_MEDIA_TYPE, RESOURCES_MEDIA_TYPE) == (
        media_types.RELEASE_ARTIFACT_TYPE,
        media_types.RELEASE_METADATA,
        media_types.RESOURCES,
    )
