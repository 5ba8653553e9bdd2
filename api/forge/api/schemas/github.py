"""GitHub webhook payloads (the subset Catalyst Forge reads) and the webhook endpoint's replies.

Payloads are untrusted input: every model ignores the many fields GitHub sends that are not read
here (``commits[]`` among them: ``head_commit`` is the commit that runs), bounds the strings that
end up in the database, and pins commit SHAs to 40 hex digits.
Field names follow GitHub's ``push`` and ``ping`` event payloads
(docs.github.com/webhooks/webhook-events-and-payloads).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.entities import CommitSha, RepoName

__all__ = [
    "NULL_SHA",
    "GitHubCommit",
    "GitHubCommitAuthor",
    "GitHubPusher",
    "GitHubRepository",
    "GitHubUser",
    "PingEvent",
    "PushEvent",
    "WebhookIgnored",
    "WebhookPong",
    "WebhookTarget",
]

NULL_SHA = "0" * 40
"""``before`` of a created ref and ``after`` of a deleted one."""


class _Payload(BaseModel):
    """GitHub sends many more fields than are read; they are accepted and dropped."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _RepositoryName(_Payload):
    full_name: RepoName = Field(description="owner/repo, as registered with Catalyst Forge")


class WebhookTarget(_Payload):
    """The first, minimal parse: which repository's secret verifies the signature."""

    repository: _RepositoryName


class GitHubRepository(_Payload):
    id: int | None = None
    name: str | None = Field(None, max_length=255)
    full_name: RepoName
    clone_url: str | None = Field(None, max_length=2000)
    default_branch: str | None = Field(None, max_length=255)


class GitHubCommitAuthor(_Payload):
    name: str = Field(max_length=255)
    email: str | None = Field(None, max_length=255)
    username: str | None = Field(None, max_length=255)


class GitHubCommit(_Payload):
    id: CommitSha
    message: str = ""
    timestamp: str | None = Field(None, max_length=64)
    author: GitHubCommitAuthor | None = None


class GitHubPusher(_Payload):
    name: str = Field(max_length=255)
    email: str | None = Field(None, max_length=255)


class GitHubUser(_Payload):
    login: str = Field(min_length=1, max_length=255)
    id: int | None = None


class PushEvent(_Payload):
    """``X-GitHub-Event: push``: one ref moved, was created or was deleted."""

    ref: str = Field(min_length=1, max_length=1024, description="refs/heads/<branch> or refs/tags/<tag>")
    before: CommitSha = Field(description="The ref's SHA before the push; all zeros when it was created")
    after: CommitSha = Field(
        description="The ref's SHA after the push; all zeros when it was deleted (an annotated tag's object SHA)"
    )
    created: bool = False
    deleted: bool = False
    forced: bool = False
    compare: str | None = Field(None, max_length=2000)
    head_commit: GitHubCommit | None = None
    repository: GitHubRepository
    pusher: GitHubPusher
    sender: GitHubUser | None = None


class PingEvent(_Payload):
    """``X-GitHub-Event: ping``: sent when the webhook is created."""

    zen: str | None = Field(None, max_length=1000)
    hook_id: int | None = None
    repository: GitHubRepository


class WebhookPong(BaseModel):
    ok: bool = True
    zen: str | None = Field(None, description="GitHub's zen line from the ping")
    hook_id: int | None = None


class WebhookIgnored(BaseModel):
    ignored: str = Field(description="Why the verified delivery started nothing")
