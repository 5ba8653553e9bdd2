"""The job key and JSON payload a CI task hands to ``forge-step dispatch``.

Argo substitutes ``{{retries}}`` (the 0-based attempt) only in templates that have a
``retryStrategy``, in a second pass over the template after its inputs were substituted, so a
``{{retries}}`` that reaches the container through an input parameter is replaced too. A step
without retries gets a template without ``retryStrategy``, hence a literal ``0``.

The attempt is spliced into the payload as a raw number (``"attempt":{{retries}}``), so the text is
valid JSON once Argo has substituted it. Every ``{`` and ``}`` inside a JSON string is written as
``\\u007b``/``\\u007d``: user text (a shell command, an env value) can then never form a ``{{...}}``
that Argo would try to resolve, and the JSON still decodes to the same strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Set as AbstractSet
from uuid import UUID

from forge.domain.discovery import DiscoveredProject, DiscoveredStep, ReleaseIntent
from forge.domain.messages import ArtifactPayload, CiPayload, ReleasePayload
from forge.errors import InvalidInputError

__all__ = [
    "RETRIES",
    "artifact_key",
    "artifact_payload",
    "attempt_token",
    "ci_key",
    "ci_payload",
    "release_key",
    "release_payload",
]

RETRIES = "{{retries}}"
MAX_KEY_LENGTH = 200  # forge.domain.messages.JobKey
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def attempt_token(retries: int) -> str:
    """What Argo turns into the attempt number: ``{{retries}}``, or ``0`` when there is no retry."""
    return RETRIES if retries > 0 else "0"


def ci_key(run_id: UUID, step: DiscoveredStep, project: str) -> str:
    """``ci.<run id>.<phase>.<project>.<step>.a<attempt>`` (a ``forge.domain.messages.JobKey``).

    Raises ``InvalidInputError`` when the key of the last attempt would exceed the 200 characters
    a job key may have (names near their 63-character limit), so the run fails before it starts.
    """
    prefix = f"ci.{run_id}.{step.phase}.{project}.{step.name}.a"
    if len(prefix) + len(str(step.retries)) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            f"job key of step {step.phase}/{project}/{step.name} exceeds {MAX_KEY_LENGTH} characters; "
            "shorten the phase, project or step name"
        )
    return prefix + attempt_token(step.retries)


def _escape_braces(match: re.Match[str]) -> str:
    return match.group(0).replace("{", "\\u007b").replace("}", "\\u007d")


def ci_payload(
    project: DiscoveredProject,
    step: DiscoveredStep,
    clone_url: str,
    step_execution_id: UUID,
    granted: AbstractSet[str] = frozenset(),
) -> str:
    """The ``CiPayload`` JSON (without ``type``, which the dispatcher adds from ``--job-type``).

    ``granted_secrets`` holds the step's secrets the repository was ``granted`` (never the others: the
    worker refuses a step naming one); it is left out when empty, so a template of a repository
    without grants is the same text as before grants existed."""
    model = CiPayload.model_validate(
        {
            "clone_url": clone_url,
            "phase": step.phase,
            "project": project.name,
            "project_path": project.path,
            "step": step.name,
            "action": step.action,
            "target": step.target,
            "args": step.args,
            "env": step.env,
            "secrets": step.secrets,
            "granted_secrets": sorted(set(step.secrets) & granted),
            "timeout_seconds": step.timeout_seconds,
            "retries": step.retries,
            "step_execution_id": step_execution_id,
        }
    )
    return _with_attempt(model, step.retries)


def _with_attempt(model: CiPayload | ArtifactPayload | ReleasePayload, retries: int) -> str:
    omit = {"type", "attempt"} | (
        {"granted_secrets"} if isinstance(model, CiPayload | ArtifactPayload) and not model.granted_secrets else set()
    )
    body = model.model_dump(mode="json", exclude=omit)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    text = _JSON_STRING.sub(_escape_braces, text)
    return f'{text[:-1]},"attempt":{attempt_token(retries)}}}'


# The release phase's jobs are not retried by Argo (their workers retry transient failures themselves),
# so their keys end in ``a0`` and the release job finds its artifacts' results under known keys.


def artifact_key(run_id: UUID, project: str, artifact: str) -> str:
    """``artifact.<run id>.<project>.<artifact>.a0`` (names are at most 63 characters: always < 200)."""
    return f"artifact.{run_id}.{project}.{artifact}.a0"


def release_key(run_id: UUID, project: str) -> str:
    return f"release.{run_id}.{project}.a0"


def artifact_payload(
    project: DiscoveredProject,
    step: DiscoveredStep,
    clone_url: str,
    step_execution_id: UUID,
    granted: AbstractSet[str] = frozenset(),
) -> str:
    """The ``ArtifactPayload`` JSON of the release phase's ``artifact-<name>`` step; ``granted_secrets`` as
    for a CI step (the producer's secrets the repository was granted)."""
    model = ArtifactPayload(
        clone_url=clone_url,
        project=project.name,
        project_path=project.path,
        config_blob=project.config_blob,
        artifact=step.target,
        timeout_seconds=step.timeout_seconds,
        step_execution_id=step_execution_id,
        granted_secrets=sorted(set(step.secrets) & granted),
    )
    return _with_attempt(model, 0)


def release_payload(
    run_id: UUID,
    project: DiscoveredProject,
    step: DiscoveredStep,
    intent: ReleaseIntent,
    *,
    clone_url: str,
    requested_by: str,
    step_execution_id: UUID,
) -> str:
    """The ``ReleasePayload`` JSON of a project's ``release`` step; its artifacts by their jobs' keys."""
    model = ReleasePayload(
        clone_url=clone_url,
        project=project.name,
        project_path=project.path,
        config_blob=project.config_blob,
        trigger=intent.trigger,
        branch=intent.branch,
        tag=intent.tag,
        requested_by=requested_by,
        artifacts={a.name: artifact_key(run_id, project.name, a.name) for a in project.artifacts},
        timeout_seconds=step.timeout_seconds,
        step_execution_id=step_execution_id,
    )
    return _with_attempt(model, 0)
