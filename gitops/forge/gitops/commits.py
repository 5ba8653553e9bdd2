"""Pointer commit messages: a subject people read, and git trailers tools read (``git interpret-trailers``).

::

    dev: deploy acme/shop api release 7 (1a2b3c4)

    Forge-Environment: dev
    Forge-Repository: acme/shop
    Forge-Project: api
    Forge-Release-Number: 7
    Forge-Release-Commit: 1a2b3c4d...40 hex
    Forge-Release-Digest: sha256:...64 hex
    Forge-Deployed-By: alice
    Forge-Reason: promote after QA sign-off

A commit that only changes the project's values (the pointer already names the release) says
``update values of`` instead of ``deploy``. The first commit to an environment also writes its
app-of-apps and says so in a paragraph before the trailers (``Installs dev/app-of-apps.yaml: the
app-of-apps of dev (Argo CD Application forge-dev over dev/applications).``). Reasons and actors
are single lines (whitespace collapsed) so that a trailer can never forge another one.
"""

from __future__ import annotations

import re

__all__ = ["TRAILERS", "one_line", "pointer_message", "read_trailers"]

TRAILERS = (
    "Forge-Environment",
    "Forge-Repository",
    "Forge-Project",
    "Forge-Release-Number",
    "Forge-Release-Commit",
    "Forge-Release-Digest",
    "Forge-Deployed-By",
    "Forge-Reason",
)
_TRAILER = re.compile(r"^(Forge-[A-Za-z-]+): (.*)$")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, stripped."""
    return " ".join(text.split())


def pointer_message(
    *,
    environment: str,
    repository: str,
    project: str,
    release_number: int,
    commit: str,
    digest: str,
    actor: str,
    reason: str,
    pointer_changed: bool = True,
    installs: str | None = None,
) -> str:
    verb = "deploy" if pointer_changed else "update values of"
    subject = f"{environment}: {verb} {repository} {project} release {release_number} ({commit[:7]})"
    values = (environment, repository, project, str(release_number), commit, digest, one_line(actor), one_line(reason))
    trailers = "\n".join(f"{name}: {value}" for name, value in zip(TRAILERS, values, strict=True))
    note = (
        f"Installs {installs}: the app-of-apps of {environment} (Argo CD Application forge-{environment} over "
        f"{environment}/applications).\n\n"
        if installs
        else ""
    )
    return f"{subject}\n\n{note}{trailers}\n"


def read_trailers(message: str) -> dict[str, str]:
    """The ``Forge-*`` trailers of a pointer commit's message (empty for a commit somebody else made)."""
    trailers: dict[str, str] = {}
    for line in message.splitlines():
        match = _TRAILER.match(line)
        if match:
            trailers[match.group(1)] = match.group(2)
    return trailers
