"""Release records for tests of the stores, the deployment reconcilers and the API."""

from __future__ import annotations

from typing import Any

from forge.domain.entities import Trigger
from forge.ports.store import NewRelease

__all__ = ["new_release"]


def new_release(repository: str, project: str, n: int, **changes: Any) -> NewRelease:
    """Release ``n`` of ``project`` as the controller records it after a push to main: commit ``n`` (40 hex),
    its Release OCI by digest ``sha256:<n as 64 hex>`` in ``registry.test``; ``changes`` override fields."""
    digest = f"sha256:{n:064x}"
    fields: dict[str, Any] = {
        "repository": repository,
        "project": project,
        "commit_sha": f"{n:040x}",
        "oci_ref": f"registry.test/{repository}/{project}@{digest}",
        "oci_digest": digest,
        "trigger": Trigger.PUSH,
        "created_by": "forge-controller",
        "branch": "main",
        **changes,
    }
    return NewRelease(**fields)
