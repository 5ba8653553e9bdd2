"""The GitOps repository: layout, ReleasePointers, EnvironmentConfigs, Applications and pointer commits.

:class:`GitOpsWriter` (``deploy``, ``read_pointer``, ``history``) is what a deploy job or the
controller calls; it speaks to the repository through the ``forge.ports.gitops`` port
(``forge.adapters.pygit2_gitops.Pygit2GitOps``). See docs/gitops.md.
"""

from forge.gitops.application import (
    CMP_PLUGIN,
    ApplicationDefaults,
    environment_root_application,
    render_application,
)
from forge.gitops.commits import pointer_message, read_trailers
from forge.gitops.layout import AppLocation, environment_file, environment_root_file
from forge.gitops.models import EnvironmentValues, ReleasePointer, parse_document, to_yaml
from forge.gitops.writer import GitOpsWriter, PointerChange, PointerRevision

__all__ = [
    "CMP_PLUGIN",
    "AppLocation",
    "ApplicationDefaults",
    "EnvironmentValues",
    "GitOpsWriter",
    "PointerChange",
    "PointerRevision",
    "ReleasePointer",
    "environment_file",
    "environment_root_application",
    "environment_root_file",
    "parse_document",
    "pointer_message",
    "read_trailers",
    "render_application",
    "to_yaml",
]
