"""``release.yaml``: the ReleasePointer an app directory of the GitOps repository holds (DESIGN §8).

Checked by hand, not with pydantic: the warm path of ``forge-cmp generate`` must not pay for
pydantic's import, and every refusal names its field. Unknown fields are refused too: a field we
do not read could be one a writer meant us to honour. ``metadata.labels`` and
``metadata.annotations`` (release number, deployed-by, deployed-at) are allowed and not read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from forge.errors import InvalidInputError

__all__ = ["API_VERSION", "KIND", "ReleasePointer", "parse_pointer"]

API_VERSION = "forge.projectcatalyst.io/v1alpha1"
KIND = "ReleasePointer"

_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_PROJECT = re.compile(r"[a-z][a-z0-9-]*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SPEC = {
    "repository": (_REPOSITORY, "owner/repo"),
    "project": (_PROJECT, "a project name ([a-z][a-z0-9-]*)"),
    "release": (_COMMIT, "a 40-hex commit sha"),
    "digest": (_DIGEST, "sha256:<64 lowercase hex>"),
}


class ReleasePointer(NamedTuple):
    repository: str  # owner/repo
    project: str
    release: str  # the commit the release was built from
    digest: str  # the Release OCI manifest digest

    def describe(self) -> str:
        """``owner/repo/project@<commit 12>`` for messages."""
        return f"{self.repository}/{self.project}@{self.release[:12]}"


def parse_pointer(document: Any, where: str = "release.yaml") -> ReleasePointer:
    """The pointer in ``document`` (one parsed YAML document), or InvalidInputError naming the field."""
    if not isinstance(document, Mapping):
        raise InvalidInputError(f"{where}: must be one mapping (a ReleasePointer), got {_kind(document)}")
    _only(document, {"apiVersion", "kind", "metadata", "spec"}, where, "")
    if document.get("apiVersion") != API_VERSION:
        raise InvalidInputError(f"{where}: apiVersion: expected {API_VERSION}, got {document.get('apiVersion')!r}")
    if document.get("kind") != KIND:
        raise InvalidInputError(f"{where}: kind: expected {KIND}, got {document.get('kind')!r}")
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"{where}: metadata: missing or not a mapping")
    _only(metadata, {"name", "namespace", "labels", "annotations"}, where, "metadata.")
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"{where}: spec: missing or not a mapping")
    _only(spec, set(_SPEC), where, "spec.")
    values: dict[str, str] = {}
    for field, (pattern, expected) in _SPEC.items():
        value = spec.get(field)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            got = "missing" if value is None else f"got {value!r}"
            raise InvalidInputError(f"{where}: spec.{field}: expected {expected}, {got}")
        values[field] = value
    if metadata.get("name") != values["project"]:
        raise InvalidInputError(
            f"{where}: metadata.name: must equal spec.project {values['project']!r}, got {metadata.get('name')!r}"
        )
    return ReleasePointer(**values)


def _only(mapping: Mapping[Any, Any], allowed: set[str], where: str, prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise InvalidInputError(f"{where}: {prefix}{key}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
