"""``POST /v1/webhooks/github``: GitHub ``push`` deliveries become pipeline runs.

A delivery is checked in this order; the body is untrusted until step 5 passes:

1. the body is at most ``MAX_WEBHOOK_BODY`` bytes (413), read raw because it is what was signed;
2. ``X-GitHub-Event`` is present and at most 100 of ``[a-z_]`` (400), and ``X-Hub-Signature-256``
   is ``sha256=<64 hex>`` (401);
3. a minimal parse reads ``repository.full_name`` only (400);
4. that repository is registered with a webhook secret ref whose secret resolves through the
   ``SecretProvider`` (503 when it does not);
5. the HMAC-SHA256 of the raw body with that secret equals the signature, compared in constant
   time (401; the expected value is never revealed). An unknown repository, or one without a
   webhook secret ref, gets the very same 401 after an HMAC with a throwaway key: which names are
   registered is not revealed (the reason is logged);
6. the repository is enabled (409); the event is parsed fully (400 naming the field) and handled.

Runs are idempotent on (repository, commit): a redelivery (same ``X-GitHub-Delivery``) or another
push of the same commit answers 200 with the existing run.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import Annotated, Any, TypeVar

from litestar import Controller, Request, Response, post
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter
from pydantic import BaseModel, ValidationError

from forge.api.auth.limits import rate_limits_of
from forge.api.errors import problem, problem_spec
from forge.api.schemas import RunOut
from forge.api.schemas.github import NULL_SHA, PingEvent, PushEvent, WebhookIgnored, WebhookPong, WebhookTarget
from forge.api.services import Services
from forge.domain.entities import Repository, Trigger
from forge.errors import (
    ConflictError,
    ForgeError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    ServiceUnavailableError,
)
from forge.ports import NewRun

__all__ = ["MAX_WEBHOOK_BODY", "WebhooksController"]

MAX_WEBHOOK_BODY = 5 * 1024 * 1024
"""Bytes; larger deliveries are refused before they are parsed."""

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_EVENT = re.compile(r"[a-z_]{1,100}")
_NO_SECRET = secrets.token_bytes(32)
"""The key an unverifiable delivery is checked with, so that it costs what a real check does."""
_MESSAGE_CHARS = 10_000
_BRANCH_PREFIX = "refs/heads/"
_TAG_PREFIX = "refs/tags/"

log = logging.getLogger("forge.api.webhooks")
M = TypeVar("M", bound=BaseModel)


class _RefusedError(Exception):
    """A delivery refused with a status the error tree has no class for (401)."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def _refused(request: Request[Any, Any, Any], exc: _RefusedError) -> Response[Any]:
    return problem(exc.status, exc.title, exc.detail, instance=request.url.path, **exc.extra)


def _spec(model: Any, description: str) -> ResponseSpec:
    return ResponseSpec(model, description=description, generate_examples=False)


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    exception_handlers = {_RefusedError: _refused}

    @post(
        "/github",
        status_code=200,
        request_max_body_size=MAX_WEBHOOK_BODY,
        summary="Receive a GitHub webhook delivery",
        description=(
            "Body: the raw JSON payload GitHub sends (content type `application/json`), signed with the "
            "repository's webhook secret in `X-Hub-Signature-256`. The repository is the payload's "
            "`repository.full_name`; it must be registered with a `webhook_secret_ref`.\n\n"
            "`push` to `refs/heads/<branch>` creates a run (trigger `push`, base = `before` unless the branch "
            "was created); `push` to `refs/tags/<tag>` creates a run (trigger `tag`, `tag` set, no branch) of the "
            "tagged commit, also when that commit already ran for a branch (a run is keyed by repository, commit "
            "and ref). 201 with the new run, 200 with the existing run of the same commit and ref (redeliveries). "
            "A deleted branch or tag, another ref or another event: 202 with the reason it was ignored. "
            "`ping`: 200.\n\n"
            "Errors (`application/problem+json`): 400 missing or malformed `X-GitHub-Event` (at most 100 of "
            "`a-z` and `_`), malformed JSON or a missing field (named); 401 missing, malformed or wrong "
            "signature, and the same 401 for an unknown repository or one without a webhook secret (which "
            "names are registered is not revealed); 409 disabled repository (after a valid signature); 413 "
            "body over 5 MiB; 503 the repository's secret cannot be resolved."
        ),
        responses={
            200: _spec(RunOut | WebhookPong, "The existing run of this commit, or the ping reply"),
            201: _spec(RunOut, "The run the push created"),
            202: _spec(WebhookIgnored, "Verified, but nothing to run"),
            400: problem_spec("Missing or malformed X-GitHub-Event, malformed JSON or a missing field (named)"),
            401: problem_spec(
                "Missing, malformed or wrong signature; also an unknown repository or one without a webhook secret "
                "(the same answer: names are not revealed)"
            ),
            409: problem_spec("The repository is disabled (after a valid signature)"),
            413: problem_spec("Body over 5 MiB"),
            503: problem_spec("The repository's webhook secret cannot be resolved"),
        },
    )
    async def github(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        event: Annotated[
            str | None, HeaderParameter(name="X-GitHub-Event", description="push, ping, ... (required)")
        ] = None,
        signature: Annotated[
            str | None,
            HeaderParameter(name="X-Hub-Signature-256", description="sha256=<hex HMAC-SHA256 of the body> (required)"),
        ] = None,
        delivery: Annotated[
            str | None, HeaderParameter(name="X-GitHub-Delivery", description="GUID of the delivery")
        ] = None,
    ) -> Response[Any]:
        try:
            body = await request.body()
        except RequestEntityTooLarge:
            raise LimitExceededError(
                f"webhook body exceeds {MAX_WEBHOOK_BODY} bytes (5 MiB)", details={"limit": MAX_WEBHOOK_BODY}
            ) from None
        if not event:
            raise InvalidInputError("missing X-GitHub-Event header", details={"header": "X-GitHub-Event"})
        if not _EVENT.fullmatch(event):
            raise InvalidInputError(
                "X-GitHub-Event must be an event name: 1 to 100 of a-z and _", details={"header": "X-GitHub-Event"}
            )
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise InvalidInputError(
                "the webhook's content type must be application/json, not application/x-www-form-urlencoded",
                details={"header": "Content-Type"},
            )
        digest = _signature_digest(signature)
        name = _parse(WebhookTarget, body, "webhook").repository.full_name
        repo = await _repository(services, name)
        if repo is not None and repo.webhook_secret_ref is not None:
            key = (await _secret(services, repo, repo.webhook_secret_ref)).encode()
        else:
            log.warning(
                "webhook delivery for %s refused: %s",
                name,
                "no such repository" if repo is None else "the repository has no webhook_secret_ref",
            )
            key = _NO_SECRET
        expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, digest) or key is _NO_SECRET:
            raise _unauthorized(f"X-Hub-Signature-256 does not match the body signed with the webhook secret of {name}")
        assert repo is not None
        if not repo.enabled:
            raise ConflictError(f"repository {name} is disabled", details={"repository": name})
        if (limits := rate_limits_of(request.app)) is not None:
            await limits.webhook(name)  # after the signature: forged deliveries spend no budget (429)

        if event == "ping":
            ping = _parse(PingEvent, body, "ping")
            return Response(WebhookPong(zen=ping.zen, hook_id=ping.hook_id), status_code=200)
        if event != "push":
            return _ignored(f"{event[:100]} events are not handled")
        return await _push(services, _parse(PushEvent, body, "push"), delivery and delivery[:255])


async def _push(services: Services, push: PushEvent, delivery: str | None) -> Response[Any]:
    if push.ref.startswith(_BRANCH_PREFIX):
        kind, branch, tag, trigger = "branch", push.ref.removeprefix(_BRANCH_PREFIX), None, Trigger.PUSH
    elif push.ref.startswith(_TAG_PREFIX):
        kind, branch, tag, trigger = "tag", None, push.ref.removeprefix(_TAG_PREFIX), Trigger.TAG
    else:
        return _ignored(f"pushes to {push.ref} are not handled")
    if push.deleted or push.after == NULL_SHA:
        return _ignored(f"{kind} deleted")
    # An annotated tag's ``after`` is the tag object; ``head_commit`` is the commit it points to.
    commit = push.head_commit.id if trigger is Trigger.TAG and push.head_commit is not None else push.after
    base = None if push.created or push.before == NULL_SHA else push.before
    triggered_by = push.pusher.name or (push.sender.login if push.sender is not None else "") or "github"
    message = push.head_commit.message[:_MESSAGE_CHARS] if push.head_commit is not None else None
    run, created = await services.runs.create_run(
        NewRun(
            repository=push.repository.full_name,
            commit_sha=commit,
            branch=branch,
            tag=tag,
            base_sha=base,
            trigger=trigger,
            triggered_by=triggered_by,
            github_context={
                "delivery": delivery,
                "ref": push.ref,
                "compare": push.compare,
                "head_commit_message": message,
            },
        )
    )
    return Response(RunOut.of(run), status_code=201 if created else 200, headers={"Location": f"/v1/runs/{run.id}"})


def _signature_digest(header: str | None) -> str:
    """The lower-case hex digest of a well-formed header; a 401 saying what is wrong with it."""
    if header is None:
        raise _unauthorized("missing X-Hub-Signature-256 header (is a secret set on the GitHub webhook?)")
    if not header.startswith("sha256="):
        raise _unauthorized("X-Hub-Signature-256 must start with 'sha256=' (an HMAC-SHA256 signature)")
    match = _SIGNATURE.fullmatch(header)
    if match is None:
        raise _unauthorized("X-Hub-Signature-256 must be 'sha256=' followed by 64 hexadecimal digits")
    return match.group(1).lower()


async def _repository(services: Services, name: str) -> Repository | None:
    try:
        return await services.repositories.get_repository(name)
    except NotFoundError:
        return None


async def _secret(services: Services, repo: Repository, ref: str) -> str:
    try:
        secret = await services.secrets.get(ref)
    except ForgeError as exc:
        log.error("webhook secret %r of %s cannot be resolved: %s", ref, repo.name, exc)
    else:
        if secret:
            return secret
        log.error("webhook secret %r of %s is empty", ref, repo.name)
    # The secret's name and where it was looked for stay in the log, not in the reply.
    raise ServiceUnavailableError(
        f"the webhook secret of {repo.name} cannot be resolved; an operator must provide it",
        details={"repository": repo.name},
    )


def _parse(model: type[M], body: bytes, what: str) -> M:
    """``model`` from the JSON ``body``; ``InvalidInputError`` naming the first bad field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            raise InvalidInputError(f"the {what} body is not valid JSON: {first['msg']}") from None
        field = ".".join(str(part) for part in first["loc"]) or "(body)"
        fields = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "reason": e["msg"]} for e in errors[:20]]
        raise InvalidInputError(
            f"invalid {what} payload: {field}: {first['msg']}", details={"field": field, "errors": fields}
        ) from None


def _unauthorized(reason: str) -> _RefusedError:
    return _RefusedError(401, "invalid_signature", reason)


def _ignored(reason: str) -> Response[Any]:
    return Response(WebhookIgnored(ignored=reason), status_code=202)
