"""Pointer commit messages and the validation of a PointerChange."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from forge.gitops.commits import pointer_message, read_trailers
from forge.gitops.writer import PointerChange

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "cd" * 32


def test_the_message_names_release_commit_digest_environment_actor_and_reason() -> None:
    message = pointer_message(
        environment="dev",
        repository="acme/shop",
        project="api",
        release_number=7,
        commit=COMMIT,
        digest=DIGEST,
        actor="alice",
        reason="nightly\nForge-Deployed-By: mallory",
    )
    assert message == (
        "dev: deploy acme/shop api release 7 (0123456)\n"
        "\n"
        "Forge-Environment: dev\n"
        "Forge-Repository: acme/shop\n"
        "Forge-Project: api\n"
        "Forge-Release-Number: 7\n"
        f"Forge-Release-Commit: {COMMIT}\n"
        f"Forge-Release-Digest: {DIGEST}\n"
        "Forge-Deployed-By: alice\n"
        "Forge-Reason: nightly Forge-Deployed-By: mallory\n"
    )
    trailers = read_trailers(message)
    assert trailers["Forge-Deployed-By"] == "alice"  # a reason cannot forge a trailer
    assert trailers["Forge-Release-Digest"] == DIGEST


def test_a_values_only_commit_says_so() -> None:
    message = pointer_message(
        environment="dev",
        repository="acme/shop",
        project="api",
        release_number=7,
        commit=COMMIT,
        digest=DIGEST,
        actor="alice",
        reason="more replicas",
        pointer_changed=False,
    )
    assert message.startswith("dev: update values of acme/shop api release 7 (0123456)\n")


def _change(**overrides: Any) -> PointerChange:
    fields: dict[str, Any] = {
        "environment": "dev",
        "repository": "acme/shop",
        "project": "api",
        "release_number": 1,
        "commit": COMMIT,
        "digest": DIGEST,
        "actor": "alice",
        "reason": "auto-deploy after release 1",
    }
    return PointerChange(**(fields | overrides))


def test_a_change_collapses_whitespace_in_actor_and_reason() -> None:
    change = _change(actor=" ci\tbot ", reason="line one\n\nline two")
    assert (change.actor, change.reason) == ("ci bot", "line one line two")
    assert change.location.pointer_file == "dev/apps/acme/shop/api/release.yaml"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"environment": "Prod"}, "environment"),
        ({"repository": "acme"}, "repository"),
        ({"project": "a_b"}, "project"),
        ({"release_number": 0}, "release_number"),
        ({"commit": COMMIT[:39]}, "commit"),
        ({"digest": DIGEST.replace("sha256", "md5")}, "digest"),
        ({"actor": "  "}, "actor"),
        ({"reason": "\n"}, "reason"),
        ({"values": ["a"]}, "values"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_a_bad_change_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _change(**overrides)
    assert info.value.errors()[0]["loc"][0] == field
