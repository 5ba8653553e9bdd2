"""The platform's NATS authorization is the one ``forge.jobs.nats_permissions`` generates (and the integration
tests run under): the NATS release's users and password variables, the server's ExternalSecret, and every
client's login (``FORGE_NATS__USER``, ``FORGE_NATS__PASSWORD`` from its own ExternalSecret, reading the store
entry the server reads) in every forge build, step pods included."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from forge.jobs.nats_permissions import API_USER, CONTROLLER_USER, STEP_USER, pool_user_name, users
from forge.workflows.templates.spec import NATS_PASSWORD_KEY, NATS_URL_KEY, NATS_USER_KEY, TemplateSpec

from .checks import POOL_LABEL, Obj, build, containers, load
from .nats_users import NATS_APPLICATION, SERVER_SECRET, pools, server_secret_data, store_key, values

FORGE_BUILDS = ["forge/overlays/dev", "forge/overlays/prod", "forge/overlays/prod-pool-example"]
REGENERATE = "rewrite them with .venv/bin/python tests/unit/platform/nats_users.py"
_USER_OF_CONTAINER = {"controller": CONTROLLER_USER, "api": API_USER}


def _one(objects: Sequence[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env") or ()}


def _store_entry(objects: Sequence[Obj], secret: str, key: str) -> dict[str, Any]:
    """The store entry the ExternalSecret making ``secret`` reads ``key`` from."""
    external = _one(objects, "ExternalSecret", secret)
    (entry,) = [d["remoteRef"] for d in external["spec"]["data"] if d["secretKey"] == key]
    return dict(entry)


def test_the_nats_release_carries_exactly_the_generated_users_and_their_password_variables() -> None:
    (app,) = load(NATS_APPLICATION.read_text(encoding="utf-8"))
    chart = app["spec"]["source"]["helm"]["valuesObject"]
    wanted = values()
    assert chart["config"]["merge"]["authorization"] == wanted["authorization"], REGENERATE
    assert chart["container"]["env"] == wanted["env"], REGENERATE
    names = [u["user"] for u in wanted["authorization"]["users"]]
    assert names == [CONTROLLER_USER, API_USER, STEP_USER, *[pool_user_name(p) for p in sorted({"default", *pools()})]]
    assert pools() == ["example"]  # forge/pools holds the example pool; default is in the base


def test_the_server_reads_each_password_from_its_users_store_entry() -> None:
    objects = build("components/platform-secrets")
    secret = _one(objects, "ExternalSecret", SERVER_SECRET)
    assert secret["metadata"]["namespace"] == "nats"
    assert secret["spec"]["target"]["name"] == SERVER_SECRET
    assert secret["spec"]["data"] == server_secret_data(), REGENERATE
    assert "nats" in {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}


def _expected_user(container: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    if container["name"] == "worker":
        return pool_user_name(labels[POOL_LABEL])
    return _USER_OF_CONTAINER[container["name"]]


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_every_nats_client_logs_in_as_its_own_user_with_its_own_password(directory: str) -> None:
    objects = build(directory)
    generated = {u["user"] for u in users(pools())}
    logins: dict[str, str] = {}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        for _, container in containers(obj):
            if {"configMapRef": {"name": "forge-config"}} not in (container.get("envFrom") or ()):
                continue  # not a forge process: no FORGE_NATS__URL
            env = _env(container)
            user = env["FORGE_NATS__USER"]["value"]
            assert user == _expected_user(container, labels), f"{obj['metadata']['name']}: {user}"
            ref = env["FORGE_NATS__PASSWORD"]["valueFrom"]["secretKeyRef"]
            entry = _store_entry(objects, ref["name"], ref["key"])
            assert entry == {"key": store_key(user), "property": "password"}, obj["metadata"]["name"]
            logins[obj["metadata"]["name"]] = user
    assert set(logins.values()) <= generated  # every login is a user of the NATS release
    assert {CONTROLLER_USER, API_USER, pool_user_name("default")} <= set(logins.values())
    deployed = {o["spec"]["template"]["metadata"]["labels"][POOL_LABEL] for o in objects if o["kind"] == "StatefulSet"}
    assert {pool_user_name(p) for p in deployed} <= set(logins.values())


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_step_pods_log_in_as_the_step_user(directory: str) -> None:
    """A WorkflowTemplate's step container reads the ConfigMap and Secret ``TemplateSpec`` names by default."""
    objects = build(directory)
    spec = TemplateSpec.__dataclass_fields__
    config_map, secret = str(spec["nats_config_map"].default), str(spec["nats_secret"].default)
    config = _one(objects, "ConfigMap", config_map)["data"]
    assert config[NATS_USER_KEY] == STEP_USER
    assert config[NATS_URL_KEY] == _one(objects, "ConfigMap", "forge-config")["data"]["FORGE_NATS__URL"]
    entry = _store_entry(objects, secret, NATS_PASSWORD_KEY)
    assert entry == {"key": store_key(STEP_USER), "property": "password"}
