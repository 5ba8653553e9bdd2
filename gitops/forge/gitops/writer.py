"""Deploy a release by committing its pointer to the GitOps repository (issue 9, item 2; docs/gitops.md).

:meth:`GitOpsWriter.deploy` is the one call a deploy job or reconciler makes. It plans, on the
fetched head of the branch, one commit holding:

- the app's ``release.yaml`` (unless it already names that digest),
- the app's Argo CD Application (only when the file is missing; an existing one pointing at
  another app's path is a name collision, ``ConflictError``),
- the project's ``env.yaml`` when values are given and differ from the file's,
- the environment's app-of-apps ``<env>/app-of-apps.yaml`` (``environment_root_application``) when
  the file is missing and the commit changes something else: it rides with the first change to
  the environment and is never rewritten (an operator may edit it).

Nothing to write is a no-op (``changed=False``, the head's sha). The adapter pushes without force
and re-plans on a moved head, so a concurrent deploy of another app lands in its own commit
before ours and a concurrent deploy of the same digest turns ours into a no-op. The environment
must exist (its ``<env>/env.yaml``): deploying to a misspelt environment is refused
(``NotFoundError``) instead of creating a directory Argo CD never looks at.

Each ``deploy`` is one ``gitops.commit`` span (a child of the caller's current span: the
controller's ``deployment.deploy``) with the environment, repository, project, release number
and digest, and once pushed the resulting commit, whether one was made and the non-fast-forward
re-plans it took (``forge.gitops.retries`` = attempts - 1).

Across machines, one writer per (environment, repository, project) is the caller's job (the
controller's PostgreSQL advisory lock); push-race re-planning keeps other apps' writers safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from forge.errors import ConflictError, ForgeError, InvalidInputError, NotFoundError
from forge.gitops.application import (
    ApplicationDefaults,
    application_source_path,
    environment_root_application,
    render_application,
)
from forge.gitops.commits import one_line, pointer_message, read_trailers
from forge.gitops.layout import AppLocation, check_environment, check_project, check_repository, value_error
from forge.gitops.models import EnvironmentValues, ReleasePointer, parse_document
from forge.observability.controller import GITOPS_PUSH_RETRIES
from forge.observability.tracing import tracer
from forge.ports.gitops import GitOpsCommit, GitOpsEdit, GitOpsRepository, GitOpsTree
from forge.settings import GitOpsSettings

__all__ = ["GitOpsWriter", "PointerChange", "PointerRevision"]

_log = logging.getLogger(__name__)


class PointerChange(BaseModel):
    """Deploy ``release_number`` of ``repository``/``project`` (commit + Release OCI digest) to ``environment``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: Annotated[str, AfterValidator(value_error(check_environment))]
    repository: Annotated[str, AfterValidator(value_error(check_repository))]
    project: Annotated[str, AfterValidator(value_error(check_project))]
    release_number: int = Field(ge=1)
    commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
    digest: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
    actor: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    values: dict[str, Any] | None = Field(
        None, description="The project's EnvironmentConfig data for this environment; None leaves env.yaml as it is"
    )

    @field_validator("actor", "reason")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = one_line(value)
        if not value:
            raise ValueError("must not be blank")
        return value

    @property
    def location(self) -> AppLocation:
        return AppLocation(self.environment, self.repository, self.project)


@dataclass(frozen=True, slots=True)
class PointerRevision:
    """One version of a pointer in the branch's history: the GitOps commit that wrote it, and what it said."""

    gitops_commit: str
    committed_at: datetime
    pointer: ReleasePointer
    reason: str | None

    @property
    def digest(self) -> str:
        return self.pointer.spec.digest

    @property
    def release(self) -> str:
        return self.pointer.spec.release

    @property
    def release_number(self) -> int:
        return self.pointer.release_number


class GitOpsWriter:
    """Pointer writes and reads on one GitOps branch; the repository adapter does the git."""

    def __init__(
        self,
        repository: GitOpsRepository,
        defaults: ApplicationDefaults,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._repository = repository
        self._defaults = defaults
        self._clock = clock

    @classmethod
    def for_settings(
        cls,
        repository: GitOpsRepository,
        settings: GitOpsSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> GitOpsWriter:
        """A writer whose Applications follow ``settings`` (``argocd_repo_url`` or the repository's URL)."""
        defaults = ApplicationDefaults(
            repo_url=settings.argocd_repo_url or repository.url,
            branch=repository.branch,
            namespace=settings.argocd_namespace,
            destination_server=settings.destination_server,
        )
        return cls(repository, defaults, clock=clock)

    async def deploy(self, change: PointerChange) -> GitOpsCommit:
        """Write ``change`` as one commit, or nothing when the pointer already names its digest.

        Raises ``NotFoundError`` (no such environment), ``ConflictError`` (Application name taken
        by another app), ``TransientError`` (remote down, or the branch kept moving).
        """
        attributes: dict[str, str | int] = {
            "forge.environment": change.environment,
            "forge.repository": change.repository,
            "forge.project": change.project,
            "forge.release.number": change.release_number,
            "forge.release.commit": change.commit,
            "forge.release.digest": change.digest,
        }
        with tracer().start_as_current_span("gitops.commit", attributes=attributes) as span:
            result = await self._repository.update(lambda tree: self._plan(tree, change))
            span.set_attribute("forge.gitops.changed", result.changed)
            span.set_attribute("forge.gitops.retries", result.attempts - 1)
            if result.attempts > 1:
                GITOPS_PUSH_RETRIES.labels(change.environment).inc(result.attempts - 1)
            if result.sha is not None:
                span.set_attribute("forge.gitops.commit", result.sha)
        _log.info(
            "gitops %s %s/%s release %s: %s",
            change.environment,
            change.repository,
            change.project,
            change.release_number,
            f"commit {result.sha}" if result.changed else "already deployed",
        )
        return result

    async def read_pointer(self, environment: str, repository: str, project: str) -> ReleasePointer | None:
        """The pointer at the branch head, ``None`` when the app was never deployed to ``environment``."""
        location = AppLocation(environment, repository, project)
        files = await self._repository.read([location.pointer_file])
        data = files.files.get(location.pointer_file)
        return parse_document(data, ReleasePointer, location.pointer_file) if data is not None else None

    async def history(
        self, environment: str, repository: str, project: str, *, limit: int = 50
    ) -> list[PointerRevision]:
        """The pointer's versions, newest first (rollback picks a digest from here); removals are skipped."""
        location = AppLocation(environment, repository, project)
        revisions = await self._repository.history(location.pointer_file, limit=limit)
        found: list[PointerRevision] = []
        for revision in revisions:
            if revision.content is None:
                continue
            try:
                pointer = parse_document(revision.content, ReleasePointer, location.pointer_file)
            except ForgeError as exc:
                _log.warning("gitops history: skipping %s at %s: %s", location.pointer_file, revision.commit, exc)
                continue
            reason = read_trailers(revision.message).get("Forge-Reason")
            found.append(PointerRevision(revision.commit, revision.committed_at, pointer, reason))
        return found

    def _plan(self, tree: GitOpsTree, change: PointerChange) -> GitOpsEdit | None:
        location = change.location
        if tree.read(location.environment_file) is None:
            raise NotFoundError(
                f"environment {change.environment!r} does not exist in the GitOps repository "
                f"(no {location.environment_file} on {self._repository.branch})",
                details={"environment": change.environment},
            )
        files: dict[str, bytes | None] = {}
        current = _current_pointer(tree, location)
        pointer_changed = current is None or current.spec.digest != change.digest
        if pointer_changed:
            files[location.pointer_file] = ReleasePointer.build(
                repository=change.repository,
                project=change.project,
                release_number=change.release_number,
                commit=change.commit,
                digest=change.digest,
                deployed_by=change.actor,
                deployed_at=self._clock(),
            ).to_yaml()
        application = tree.read(location.application_file)
        if application is None:
            files[location.application_file] = render_application(location, self._defaults)
        else:
            _check_same_app(application, location)
        if change.values is not None:
            rendered = EnvironmentValues.for_project(location, change.values).to_yaml()
            if tree.read(location.project_env_file) != rendered:
                files[location.project_env_file] = rendered
        if not files:
            return None
        root = tree.read(location.environment_root_file) is None
        if root:
            files[location.environment_root_file] = environment_root_application(change.environment, self._defaults)
        message = pointer_message(
            environment=change.environment,
            repository=change.repository,
            project=change.project,
            release_number=change.release_number,
            commit=change.commit,
            digest=change.digest,
            actor=change.actor,
            reason=change.reason,
            pointer_changed=pointer_changed,
            installs=location.environment_root_file if root else None,
        )
        return GitOpsEdit(files, message)


def _current_pointer(tree: GitOpsTree, location: AppLocation) -> ReleasePointer | None:
    data = tree.read(location.pointer_file)
    if data is None:
        return None
    try:
        return parse_document(data, ReleasePointer, location.pointer_file)
    except ForgeError as exc:  # a pointer somebody broke by hand: the deploy rewrites it whole
        _log.warning("gitops: replacing the invalid %s: %s", location.pointer_file, exc)
        return None


def _check_same_app(application: bytes, location: AppLocation) -> None:
    try:
        path = application_source_path(application, location.application_file)
    except InvalidInputError as exc:
        raise ConflictError(f"{location.application_file} exists but is not an Application: {exc}") from exc
    if path != location.app_dir:
        raise ConflictError(
            f"{location.application_file} already deploys {path!r}, not {location.app_dir!r}: the Application name "
            f"{location.application_name!r} of {location.repository} {location.project} collides with another app",
            details={"application": location.application_name, "path": path},
        )
