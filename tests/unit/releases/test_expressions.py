from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.errors import InvalidInputError
from forge.releases import (
    ARTIFACT_FIELDS,
    Reference,
    artifact_fields,
    artifact_references,
    check_references,
    is_env_expression,
    resolve_artifacts,
    resolve_env,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
API = artifact_fields("registry.local/acme/shop/api/server", DIGEST, SHA)
VALUES = {"server": API}


def deployment(image: str = "${{ artifacts.server.ref }}") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "annotations": {"forge.io/commit": "${{ artifacts.server.tag }}"}},
        "spec": {
            "replicas": "${{ env.replicas }}",
            "template": {"spec": {"containers": [{"name": "api", "image": image}]}},
        },
    }


def test_artifact_fields_are_the_documented_ones() -> None:
    assert set(API) == set(ARTIFACT_FIELDS)
    assert {
        "ref": f"registry.local/acme/shop/api/server@{DIGEST}",
        "digest": DIGEST,
        "url": f"registry.local/acme/shop/api/server@{DIGEST}",
        "repository": "registry.local/acme/shop/api/server",
        "tag": f"sha-{SHA}",
    } == API
    assert artifact_fields("r/x", DIGEST, SHA, url="https://s3.local/b/k")["url"] == "https://s3.local/b/k"


def test_references_name_readable_locations_and_paths() -> None:
    refs = artifact_references([{"kind": "ConfigMap"}, deployment()])
    assert refs == [
        Reference(
            "server",
            "tag",
            'deploy.resources[1].metadata.annotations["forge.io/commit"]',
            ("deploy", "resources", 1, "metadata", "annotations", "forge.io/commit"),
        ),
        Reference(
            "server",
            "ref",
            "deploy.resources[1].spec.template.spec.containers[0].image",
            ("deploy", "resources", 1, "spec", "template", "spec", "containers", 0, "image"),
        ),
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (
            "${{ artifacts.web.ref }}",
            "unknown artifact 'web' in ${{ artifacts.web.ref }}; the project declares: server",
        ),
        (
            "${{ artifacts.server.sha }}",
            "unknown field 'sha' in ${{ artifacts.server.sha }}; artifact fields: ref, digest, url, repository, tag",
        ),
        ("${{ artifacts.x }}", "malformed expression ${{ artifacts.x }}: expected ${{ artifacts.<name>.<field> }}"),
        (
            "${{ foo }}",
            "malformed expression ${{ foo }}: expected ${{ artifacts.<name>.<field> }} or ${{ env.<path> }}",
        ),
        ("${{ env }}", "malformed expression ${{ env }}: expected ${{ env.<path> }}"),
        ("${{ }}", "empty expression ${{ }}"),
        ("x-${{ env.a", "unclosed expression: '${{' without a closing '}}'"),
        (
            "${{ artifacts.server.ref.extra }}",
            "malformed expression ${{ artifacts.server.ref.extra }}: expected ${{ artifacts.<name>.<field> }}",
        ),
    ],
)
def test_check_references_reports_each_problem_at_its_location(value: str, reason: str) -> None:
    # only the declared names matter, so any mapping of names stands in for the ArtifactConfigs
    artifacts = {"server": "container"}
    problems = check_references([deployment(image=value)], artifacts)
    assert problems == [("deploy.resources[0].spec.template.spec.containers[0].image", reason)]


def test_check_references_accepts_valid_expressions_and_escapes() -> None:
    resource = deployment()
    resource["data"] = {"a": "$${{ not.an.expression }}", "b": "${{env.db.host}}:${{ env.db.port }}"}
    assert check_references([resource], {"server": "container"}) == []


def test_check_references_refuses_expressions_in_keys() -> None:
    problems = check_references([{"data": {"${{ env.key }}": "v"}}], {})
    assert problems == [("deploy.resources[0].data", "expressions are not allowed in mapping keys: '${{ env.key }}'")]


def test_resolve_artifacts_substitutes_everywhere_and_keeps_env() -> None:
    original = [deployment(image="${{ artifacts.server.repository }}:${{artifacts.server.tag}}")]
    snapshot = copy.deepcopy(original)
    resolved = resolve_artifacts(original, VALUES)
    assert original == snapshot
    assert resolved[0]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"registry.local/acme/shop/api/server:sha-{SHA}"
    )
    assert resolved[0]["metadata"]["annotations"]["forge.io/commit"] == f"sha-{SHA}"
    assert resolved[0]["spec"]["replicas"] == "${{ env.replicas }}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "${{ artifacts.web.ref }}",
            (
                "deploy.resources[0].spec.template.spec.containers[0].image: unknown artifact in "
                "${{ artifacts.web.ref }} (artifacts with values: server)"
            ),
        ),
        (
            "${{ artifacts.server.sha }}",
            (
                "deploy.resources[0].spec.template.spec.containers[0].image: unknown field of artifact in "
                "${{ artifacts.server.sha }} (artifacts with values: server)"
            ),
        ),
        (
            "${{ artifacts.server }}",
            (
                "deploy.resources[0].spec.template.spec.containers[0].image: malformed expression "
                "${{ artifacts.server }}: expected ${{ artifacts.<name>.<field> }}"
            ),
        ),
    ],
)
def test_resolve_artifacts_refuses_unknown_references(value: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        resolve_artifacts([deployment(image=value)], VALUES)
    assert str(caught.value) == message


def test_resolve_artifacts_refuses_a_value_that_looks_like_an_expression() -> None:
    with pytest.raises(InvalidInputError, match=r"the value of \$\{\{ artifacts.server.ref \}\} contains"):
        resolve_artifacts([deployment()], {"server": {**API, "ref": "${{ env.x }}"}})


def test_resolve_env_keeps_types_of_whole_expressions_and_stringifies_embedded_ones() -> None:
    resources = [
        {
            "replicas": "${{ env.replicas }}",
            "enabled": "${{ env.flags.enabled }}",
            "limits": "${{ env.limits }}",
            "hosts": "${{ env.hosts }}",
            "url": "https://${{ env.host }}:${{ env.port }}/?debug=${{ env.flags.enabled }}",
            "literal": "$${{ env.host }}",
            "spaced": " ${{ env.replicas }}",
        }
    ]
    values = {
        "replicas": 3,
        "flags": {"enabled": True},
        "limits": {"cpu": "1", "memory": "1Gi"},
        "hosts": ["a", "b"],
        "host": "example.org",
        "port": 8443,
    }
    resolved = resolve_env(resources, values)
    assert resolved == [
        {
            "replicas": 3,
            "enabled": True,
            "limits": {"cpu": "1", "memory": "1Gi"},
            "hosts": ["a", "b"],
            "url": "https://example.org:8443/?debug=true",
            "literal": "${{ env.host }}",
            "spaced": " 3",
        }
    ]
    resolved[0]["limits"]["cpu"] = "2"
    assert values["limits"] == {"cpu": "1", "memory": "1Gi"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {},
            (
                "deploy.resources[0].spec.replicas: ${{ env.app.replicas }}: no value for env.app.replicas "
                "(missing env.app)"
            ),
        ),
        (
            {"app": {}},
            (
                "deploy.resources[0].spec.replicas: ${{ env.app.replicas }}: no value for env.app.replicas "
                "(missing env.app.replicas)"
            ),
        ),
        (
            {"app": "x"},
            (
                "deploy.resources[0].spec.replicas: ${{ env.app.replicas }}: no value for env.app.replicas "
                "(missing env.app.replicas)"
            ),
        ),
    ],
)
def test_resolve_env_names_location_and_path_of_a_missing_value(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        resolve_env([{"spec": {"replicas": "${{ env.app.replicas }}"}}], values)
    assert str(caught.value) == message


def test_resolve_env_refuses_an_unresolved_artifact_expression() -> None:
    with pytest.raises(InvalidInputError) as caught:
        resolve_env([{"image": "${{ artifacts.server.ref }}"}], {})
    assert str(caught.value) == "deploy.resources[0].image: unresolved artifact reference ${{ artifacts.server.ref }}"


def test_is_env_expression() -> None:
    assert is_env_expression("${{ env.replicas }}")
    assert is_env_expression("${{env.a.b-c}}")
    assert not is_env_expression("x${{ env.replicas }}")
    assert not is_env_expression("${{ env.a }}${{ env.b }}")
    assert not is_env_expression("${{ artifacts.server.ref }}")
    assert not is_env_expression(3)


# Property: whatever the mix of text, env and artifact expressions and escapes, resolving the
# artifacts keeps every env expression and escape byte for byte, and a second pass changes nothing.
_literal = st.text(alphabet=st.characters(blacklist_characters="${}"), max_size=8)
_env = st.builds(
    lambda path, left, right: f"${{{{{left}env.{'.'.join(path)}{right}}}}}",
    st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True), min_size=1, max_size=3),
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["", " "]),
)
_artifact = st.builds(
    lambda field, space: f"${{{{{space}artifacts.server.{field}{space}}}}}",
    st.sampled_from(ARTIFACT_FIELDS),
    st.sampled_from(["", " "]),
)
_escape = st.just("$${{")
_chunks = st.lists(st.one_of(_literal, _env, _artifact, _escape), max_size=8)
_KEPT = re.compile(r"\$\$\{\{|\$\{\{\s*env\.[^}]*\}\}")


@given(st.lists(_chunks, min_size=1, max_size=4))
def test_resolve_artifacts_keeps_env_expressions_and_is_idempotent(strings: list[list[str]]) -> None:
    data = {f"k{i}": "".join(chunks) for i, chunks in enumerate(strings)}
    resources = [{"data": data, "list": ["".join(strings[0])]}]
    once = resolve_artifacts(resources, VALUES)
    assert resolve_artifacts(once, VALUES) == once
    for key, text in data.items():
        assert _KEPT.findall(once[0]["data"][key]) == _KEPT.findall(text)
        assert "artifacts." not in once[0]["data"][key]
