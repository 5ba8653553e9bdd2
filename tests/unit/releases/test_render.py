from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from forge.errors import InvalidInputError, LimitExceededError
from forge.releases import artifact_fields, canonical_size, has_schema, render_resources, unvalidated_resources

SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "cd" * 32
VALUES = {"server": artifact_fields("registry.local/acme/shop/api/server", DIGEST, SHA)}


def deployment(name: str = "api", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "${{ artifacts.server.ref }}"}]},
            },
            **spec,
        },
    }


def service(name: str = "api", namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {"ports": [{"port": 80}]}}


def test_renders_artifacts_keeps_env_and_never_mutates_its_input() -> None:
    resources = [deployment(replicas="${{ env.replicas }}"), service()]
    snapshot = copy.deepcopy(resources)
    objects = render_resources(resources, VALUES)
    assert resources == snapshot
    container = objects[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"registry.local/acme/shop/api/server@{DIGEST}"
    assert objects[0]["spec"]["replicas"] == "${{ env.replicas }}"
    assert objects[1] == service()


def test_env_placeholders_pass_validation_for_any_type() -> None:
    resource = deployment(
        replicas="${{ env.api.replicas }}",
        paused="${{ env.api.paused }}",
        strategy="${{ env.api.strategy }}",
    )
    resource["spec"]["template"]["spec"]["containers"][0]["resources"] = "${{ env.api.resources }}"
    resource["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "${{ env.pull }}"
    assert render_resources([resource], VALUES)[0]["spec"]["paused"] == "${{ env.api.paused }}"


def test_an_embedded_env_expression_is_still_a_string_of_the_wrong_type() -> None:
    with pytest.raises(InvalidInputError) as caught:
        render_resources([deployment(replicas="${{ env.replicas }}0")], VALUES)
    assert str(caught.value) == (
        "deploy.resources[0] (Deployment api): spec.replicas: '${{ env.replicas }}0' is not of type "
        "'integer', 'null' (Kubernetes 1.30 schema)"
    )


def test_strict_validation_rejects_an_unknown_field_of_a_deployment() -> None:
    resource = deployment()
    resource["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(InvalidInputError) as caught:
        render_resources([service(), resource], VALUES)
    assert str(caught.value) == (
        "deploy.resources[1] (Deployment api): spec.template.spec.containers[0].imagePullPolicyy: "
        "unknown field (Kubernetes 1.30 schema)"
    )
    assert caught.value.details["problems"] == [
        {"field": "spec.template.spec.containers[0].imagePullPolicyy", "reason": "unknown field"}
    ]


def test_every_schema_problem_is_counted() -> None:
    resource = deployment(replicas="two", minReadySeconds="ten")
    with pytest.raises(InvalidInputError) as caught:
        render_resources([resource], VALUES)
    assert str(caught.value) == (
        "deploy.resources[0] (Deployment api): spec.minReadySeconds: 'ten' is not of type 'integer', 'null' "
        "(and 1 more) (Kubernetes 1.30 schema)"
    )


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({"apiVersion": "v1", "metadata": {"name": "x"}}, "deploy.resources[1]: missing kind"),
        ({"kind": "ConfigMap", "metadata": {"name": "x"}}, "deploy.resources[1]: missing apiVersion"),
        (
            {"apiVersion": "v1", "kind": 3, "metadata": {"name": "x"}},
            "deploy.resources[1]: kind: must be a non-empty string",
        ),
        (
            {"apiVersion": "v1", "kind": "${{ env.kind }}", "metadata": {"name": "x"}},
            "deploy.resources[1]: kind: expressions are not allowed here",
        ),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "deploy.resources[1] (ConfigMap): missing metadata.name"),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ""}},
            "deploy.resources[1] (ConfigMap): metadata.name: must be a non-empty string",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": 7}},
            "deploy.resources[1] (ConfigMap x): metadata.namespace: must be a string",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}},
            "deploy.resources[1] (ConfigMap x): data.a: 1 is not of type 'string', 'null' (Kubernetes 1.30 schema)",
        ),
        (
            service(),
            (
                "deploy.resources[1] (Service api): metadata.name: duplicate of deploy.resources[0] "
                "(same group, kind and name)"
            ),
        ),
    ],
)
def test_each_invalid_object_gets_its_one_line_error(resource: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        render_resources([service(), resource], VALUES)
    assert str(caught.value) == message


def test_a_non_mapping_resource_is_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        render_resources([["not", "an", "object"]], VALUES)  # type: ignore[list-item]
    assert str(caught.value) == "deploy.resources[0]: must be a mapping (a Kubernetes object), got list"


def test_duplicates_are_per_group_kind_namespace_and_name() -> None:
    same_name_elsewhere = [service(), service(namespace="other"), service(name="web")]
    assert len(render_resources(same_name_elsewhere, VALUES)) == 3
    with pytest.raises(InvalidInputError) as caught:
        render_resources([service(namespace="shop"), service(namespace="shop")], VALUES)
    assert str(caught.value) == (
        "deploy.resources[1] (Service api): metadata.name: duplicate of deploy.resources[0] "
        "(same group, kind in namespace shop and name)"
    )


def test_custom_resources_are_accepted_unvalidated_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "api"}, "spec": {"x": 1}}
    # a group that merely starts like a core one is not validated against the core schema
    lookalike = {"apiVersion": "apps.example.com/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": 1}
    with caplog.at_level(logging.INFO, logger="forge.releases.render"):
        objects = render_resources([rollout, lookalike, service()], VALUES)
    assert unvalidated_resources(objects) == [
        "argoproj.io/v1alpha1 Rollout api",
        "apps.example.com/v1 Deployment api",
    ]
    assert "deploy.resources[0] (Rollout api): no bundled schema for argoproj.io/v1alpha1 Rollout" in caplog.text
    assert has_schema("apps/v1", "Deployment")
    assert not has_schema("apps/v1", "DeploymentSpec")


def test_the_rendered_size_is_capped() -> None:
    resource = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"blob": "x" * 2000}}
    size = canonical_size([resource])
    assert render_resources([resource], VALUES, max_bytes=size) == [resource]
    with pytest.raises(LimitExceededError) as caught:
        render_resources([resource], VALUES, max_bytes=size - 1)
    assert str(caught.value) == (
        f"deploy.resources: the rendered resources are {size} bytes, over the limit of {size - 1} bytes"
    )
    assert caught.value.details == {"size": size, "limit": size - 1}


def test_canonical_size_does_not_depend_on_key_order() -> None:
    forward = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "é"}}
    backward = dict(reversed(list(forward.items())))
    assert (
        canonical_size([forward])
        == canonical_size([backward])
        == len('[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"é"}}]'.encode())
    )
