"""release.yaml: a ReleasePointer is accepted; anything else is refused with the field named."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.unit.cmp.support import COMMIT, pointer_document

from forge.cmp.pointer import ReleasePointer, parse_pointer
from forge.errors import InvalidInputError

DIGEST = "sha256:" + "ab" * 32


def test_a_pointer_is_read() -> None:
    assert parse_pointer(pointer_document(DIGEST)) == ReleasePointer("acme/shop", "web", COMMIT, DIGEST)


def _with(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(pointer_document(DIGEST))
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("apiVersion", "forge.projectcatalyst.io/v1", "apiVersion"),
        ("kind", "Release", "kind"),
        ("metadata", _DELETE, "metadata"),
        ("metadata.name", "other", "metadata.name"),
        ("metadata.uid", "x", "metadata.uid"),
        ("spec", _DELETE, "spec"),
        ("spec", ["a"], "spec"),
        ("spec.repository", "acme", "spec.repository"),
        ("spec.repository", "acme/shop/web", "spec.repository"),
        ("spec.project", "Web", "spec.project"),
        ("spec.release", COMMIT[:39], "spec.release"),
        ("spec.release", COMMIT.upper(), "spec.release"),
        ("spec.release", _DELETE, "spec.release"),
        ("spec.release", 1234, "spec.release"),
        ("spec.digest", "sha256:" + "ab" * 31, "spec.digest"),
        ("spec.digest", "sha512:" + "ab" * 32, "spec.digest"),
        ("spec.digest", "ab" * 32, "spec.digest"),
        ("spec.digest", _DELETE, "spec.digest"),
        ("spec.tag", "v1", "spec.tag"),
        ("status", {}, "status"),
    ],
)
def test_anything_else_is_refused_naming_the_field(path: str, value: Any, named: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"release.yaml: {named}\b"):
        parse_pointer(_with(path, value))


@pytest.mark.parametrize("document", [None, [], "text", 3])
def test_not_a_mapping_is_refused(document: Any) -> None:
    with pytest.raises(InvalidInputError, match="must be one mapping"):
        parse_pointer(document)
