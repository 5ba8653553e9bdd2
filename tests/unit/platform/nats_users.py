"""The NATS server's side of the platform's NATS users, generated from ``forge.jobs.nats_permissions``.

Two committed places carry it, and ``test_nats_users.py`` checks both against :func:`values` and
:func:`server_secret_data`, so the manifests and the permissions the integration tests run under cannot drift:

* ``apps/base/nats.yaml``: the chart values ``config.merge.authorization`` (every user and its permissions,
  passwords as ``<< $VAR >>``) and ``container.env`` (each ``VAR`` from the Secret ``nats-users``);
* ``components/platform-secrets/secrets.yaml``: the ExternalSecret ``nats-users`` (namespace ``nats``),
  each ``VAR`` from the secret store entry of its user (:func:`store_key`), the entry the client's own
  ExternalSecret in ``forge`` reads too.

The users are the controller, the API, the step dispatcher and one per worker pool: ``default`` and every
pool directory under ``forge/pools`` (:func:`pools`). After a change to the permissions or a new pool
directory, rewrite both with ``.venv/bin/python tests/unit/platform/nats_users.py`` and review the diff.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from forge.jobs.nats_permissions import API_USER, CONTROLLER_USER, STEP_USER, password_variable, users

__all__ = ["NATS_APPLICATION", "SERVER_SECRET", "SERVER_SECRETS", "pools", "server_secret_data", "store_key", "values"]

PLATFORM = Path(__file__).resolve().parents[3] / "gitops" / "platform"
NATS_APPLICATION = PLATFORM / "apps" / "base" / "nats.yaml"
SERVER_SECRETS = PLATFORM / "components" / "platform-secrets" / "secrets.yaml"
SERVER_SECRET = "nats-users"
_CLIENT_KEYS = {CONTROLLER_USER: "controller", API_USER: "api", STEP_USER: "step"}
_WORKER = "forge-worker-"


def pools() -> list[str]:
    """The pools of ``forge/pools/*``: each directory's ``pool=<name>`` literal."""
    found = []
    for kustomization in sorted((PLATFORM / "forge" / "pools").glob("*/kustomization.yaml")):
        doc = YAML(typ="safe", pure=True).load(kustomization.read_text(encoding="utf-8"))
        literals = [lit for gen in doc.get("configMapGenerator") or () for lit in gen.get("literals") or ()]
        found += [lit.removeprefix("pool=") for lit in literals if lit.startswith("pool=")]
    return found


def store_key(user: str) -> str:
    """The secret store entry (property ``password``) of ``user``: ``forge/nats/<client>`` for the
    controller, the API and the step dispatcher, ``forge/nats/workers/<pool>`` for a pool's workers."""
    if user.startswith(_WORKER):
        return f"forge/nats/workers/{user.removeprefix(_WORKER)}"
    return f"forge/nats/{_CLIENT_KEYS[user]}"


def values() -> dict[str, Any]:
    """The NATS chart values the authorization takes: ``config.merge.authorization`` and ``container.env``."""
    entries = users(pools())
    env = {
        password_variable(u["user"]): {
            "valueFrom": {"secretKeyRef": {"name": SERVER_SECRET, "key": password_variable(u["user"])}}
        }
        for u in entries
    }
    return {"authorization": {"users": entries}, "env": env}


def server_secret_data() -> list[dict[str, Any]]:
    """``spec.data`` of the ExternalSecret ``nats-users``: every user's password variable from its store entry."""
    return [
        {"secretKey": password_variable(u["user"]), "remoteRef": {"key": store_key(u["user"]), "property": "password"}}
        for u in users(pools())
    ]


def _rewrite() -> None:
    yaml = YAML()  # round trip: comments and layout of the rest of the files stay
    yaml.preserve_quotes = True
    yaml.width = 4096
    wanted = values()
    app = yaml.load(NATS_APPLICATION.read_text(encoding="utf-8"))
    chart = app["spec"]["source"]["helm"]["valuesObject"]
    chart["config"].setdefault("merge", {})["authorization"] = wanted["authorization"]
    chart["container"]["env"] = wanted["env"]
    with NATS_APPLICATION.open("w", encoding="utf-8") as out:
        yaml.dump(app, out)
    yaml.indent(mapping=2, sequence=4, offset=2)  # that file's style: list items indented under their key
    docs = list(yaml.load_all(SERVER_SECRETS.read_text(encoding="utf-8")))
    for doc in docs:
        if doc and doc["kind"] == "ExternalSecret" and doc["metadata"]["name"] == SERVER_SECRET:
            doc["spec"]["data"] = server_secret_data()
    with SERVER_SECRETS.open("w", encoding="utf-8") as out:
        yaml.dump_all(docs, out)


if __name__ == "__main__":
    _rewrite()
    sys.stdout.write(f"rewrote {NATS_APPLICATION} and {SERVER_SECRETS}\n")
