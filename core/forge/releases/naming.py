"""Where releases and artifacts live in the registry (DESIGN §8)."""

from __future__ import annotations

__all__ = ["oci_repository"]


def oci_repository(repository: str, project: str, artifact: str | None = None) -> str:
    """``owner/repo/project`` (a project's releases) or ``owner/repo/project/artifact`` (an artifact and its
    tracking image), lower-cased as OCI repository names must be."""
    parts = [repository, project] if artifact is None else [repository, project, artifact]
    return "/".join(parts).lower()
