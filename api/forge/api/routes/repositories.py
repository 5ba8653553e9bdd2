"""``/v1/repositories``: repositories are registered before runs are accepted for them.

A clone URL is where workers fetch from, so it is checked before it is stored (400 naming
``clone_url``; the message never repeats the URL, which may hold credentials):

- ``https://``, ``http://``, ``ssh://``, ``git://`` or scp-style ``user@host:path``; nothing else;
- no credentials (``https://user:token@...``): they belong in secrets, not in a URL every reader sees;
- hosts given as loopback, link-local, private or otherwise reserved IP addresses (``localhost``,
  ``127.0.0.1``, ``169.254.169.254``, ``[::1]``, ``2130706433``) would make workers reach the
  platform's own network (SSRF); refused unless ``FORGE_API__ALLOW_LOCAL_CLONE_URLS`` (the embedded
  platform and tests), which also allows local absolute paths, but never one inside the platform's
  own directories (``FORGE_GIT__CACHE_DIR``, ``FORGE_CI__WORK_DIR``, the secrets directory: another
  repository's mirror registered under a new name would expose its files).

``secrets`` is the operator's grant: the names of the secrets the repository's steps may read
(``[A-Z_][A-Z0-9_]*``, at most 100); a step naming any other fails before it starts. A registration
never changes it; ``PATCH /v1/repositories/{owner}/{name}`` replaces it. Platform credentials are
never grantable (400 naming ``secrets``): a ``FORGE_*`` name, or a name that is the webhook secret
of a registered repository; nor can a webhook secret be a name granted to a repository.

``pool`` is the worker pool (one per trust boundary, docs/security.md) whose workers run the
repository's jobs: ``default`` unless an operator registers it in another or moves it with ``PATCH``.
A pool name is a NATS subject token and a Kubernetes name part (``forge.domain.messages.check_pool``);
anything else is a 400 naming ``pool`` with the reason. A pool nobody serves leaves the jobs queued.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path, PurePosixPath
from typing import Annotated
from urllib.parse import urlsplit

from litestar import Controller, Response, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from forge.api.errors import problem_spec as _problem
from forge.api.schemas import MAX_OFFSET, CreateRepository, PageOut, RepositoryOut, UpdateRepository
from forge.api.services import ClonePolicy, Services
from forge.errors import InvalidInputError
from forge.ports import NewRepository, RepositoryStore

__all__ = ["RepositoriesController", "check_clone_url"]

_SCHEMES = frozenset({"https", "http", "ssh", "git"})
_SCP_LIKE = re.compile(r"^(?P<user>[^/:@]+)@(?P<host>[^/:]+):(?!//)")  # git@github.com:owner/repo.git
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)  # 2130706433, 0x7f.1, 017700000001


def _refuse(reason: str) -> InvalidInputError:
    return InvalidInputError(f"clone_url {reason}", details={"field": "clone_url"})


def _local_address(host: str) -> bool:
    """Whether ``host`` names this machine or a non-public network (as an IP literal or ``localhost``)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        if not _NUMERIC_HOST.fullmatch(host):
            return False
        try:  # the legacy forms resolvers accept: 2130706433, 0x7f.0.0.1, 0177.1 ...
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def _inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


def check_clone_url(url: str, policy: ClonePolicy) -> None:
    """``InvalidInputError`` (field ``clone_url``) unless workers may fetch from ``url``."""
    allow_local = policy.allow_local
    if url.startswith("/"):
        if not allow_local:
            raise _refuse("must be a remote URL (https://, ssh://, git:// or user@host:path), not a local path")
        if ".." in PurePosixPath(url).parts:
            raise _refuse("must be a normalised absolute path (no '..')")
        if any(_inside(Path(url), directory) for directory in policy.own_dirs):
            raise _refuse("must not point inside the platform's own directories (git cache, work or secrets)")
        return
    scp = _SCP_LIKE.match(url)
    if scp is not None:
        host = scp.group("host")
    else:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            password, user = parts.password, parts.username
        except ValueError:
            raise _refuse("is not a valid URL") from None
        if parts.scheme not in _SCHEMES:
            raise _refuse(
                "must be an https://, http://, ssh:// or git:// URL or user@host:path"
                + (" (or an absolute path)" if allow_local else "")
            )
        if password is not None or (user is not None and parts.scheme in {"http", "https", "git"}):
            raise _refuse("must not contain credentials: give the repository's credentials as a secret, not in the URL")
        if not host:
            raise _refuse("has no host")
    if not allow_local and _local_address(host):
        raise _refuse("must not name a loopback, link-local or private address")


#: Names of the platform's own settings: never a step's secret.
_PLATFORM_PREFIX = "FORGE_"
_SCAN_PAGE = 500


async def _check_grant(repositories: RepositoryStore, secrets: list[str], webhook_secret_ref: str | None) -> None:
    """``InvalidInputError`` naming ``secrets`` (or ``webhook_secret_ref``) when a granted name is a platform
    credential: a ``FORGE_*`` name, or the webhook secret of any registered repository (or the one given)."""
    reserved = sorted(name for name in secrets if name.startswith(_PLATFORM_PREFIX))
    if reserved:
        raise InvalidInputError(
            f"secrets must not name platform settings ({_PLATFORM_PREFIX}*): {', '.join(reserved)}",
            details={"field": "secrets", "names": reserved},
        )
    granted, webhooks = set(secrets), {webhook_secret_ref} - {None}
    offset = 0
    while True:
        page = await repositories.list_repositories(limit=_SCAN_PAGE, offset=offset)
        for repo in page.items:
            if repo.webhook_secret_ref is not None:
                webhooks.add(repo.webhook_secret_ref)
            if webhook_secret_ref is not None and webhook_secret_ref in repo.secrets:
                raise InvalidInputError(
                    "webhook_secret_ref names a secret granted to a repository's steps; a webhook secret must be "
                    "a platform credential no step can read",
                    details={"field": "webhook_secret_ref"},
                )
        offset += len(page.items)
        if not page.items or offset >= page.total:
            break
    clash = sorted(granted & webhooks)
    if clash:
        raise InvalidInputError(
            f"secrets must not name a repository's webhook secret: {', '.join(clash)}",
            details={"field": "secrets", "names": clash},
        )


class RepositoriesController(Controller):
    path = "/v1/repositories"
    tags = ["repositories"]

    @post(
        "/",
        summary="Register a repository (idempotent on name)",
        description="201 with the new repository; 200 with the registered one when the name exists with the same "
        "`clone_url`, `default_branch`, `webhook_secret_ref`, `secrets` and `pool` (an omitted `webhook_secret_ref`, "
        "`secrets` or `pool` is no change); 409 naming the fields when any differs: a registration never changes an "
        "existing repository (`PATCH` changes its secret grant and pool).\n\n"
        "`pool`: the worker pool (trust boundary) that runs its jobs, `default` when omitted; only workers started "
        "with `FORGE_WORKER__POOL=<pool>` take them. Lower-case letters, digits and inner hyphens, at most 32 "
        "characters, `deploy` reserved (400 naming `pool`).\n\n"
        "`secrets`: names of the secrets its steps may read (`[A-Z_][A-Z0-9_]*`, at most 100); `FORGE_*` names "
        "and repositories' webhook secrets are refused (400 naming `secrets`).\n\n"
        "`clone_url`: `https://`, `http://`, `ssh://`, `git://` or `user@host:path`, without credentials; "
        "loopback, link-local and private addresses and local absolute paths only when the platform allows "
        "local clone URLs (`FORGE_API__ALLOW_LOCAL_CLONE_URLS`, the embedded platform), and never a path inside "
        "the platform's own directories. Otherwise 400 naming `clone_url`.",
        responses={
            400: _problem("Invalid body or clone_url (the problem names the field)"),
            409: _problem("The name is registered with other values (the problem names the fields)"),
        },
    )
    async def register(self, data: JSONBody[CreateRepository], services: Services) -> Response[RepositoryOut]:
        check_clone_url(data.clone_url, services.clones)
        if data.secrets or data.webhook_secret_ref is not None:
            await _check_grant(services.repositories, data.secrets or [], data.webhook_secret_ref)
        secrets = None if data.secrets is None else tuple(data.secrets)
        new = NewRepository(**data.model_dump(exclude={"secrets"}), secrets=secrets)  # pool: None when omitted
        repo, created = await services.repositories.register_repository(new)
        return Response(RepositoryOut.of(repo), status_code=201 if created else 200)

    @patch(
        "/{owner:str}/{name:str}",
        summary="Change a repository's secret grant and worker pool (operators)",
        description="Replaces `secrets`, the names of the secrets the repository's steps may read (a step naming "
        "any other secret fails before it starts), and/or `pool`, the worker pool (trust boundary) that runs its "
        "jobs; an omitted field is unchanged (`{}` changes nothing), both are written at once or neither. "
        "Names are `[A-Z_][A-Z0-9_]*`, at most 100; `FORGE_*` names and "
        "repositories' webhook secrets are platform credentials and are refused (400 naming `secrets`). "
        "A pool is lower-case letters, digits and inner hyphens, at most 32 characters, `deploy` reserved "
        "(400 naming `pool`). Runs whose workflow is built after the change use the new grant and pool.",
        responses={
            400: _problem("Invalid body, a refused secret name or pool (the problem names the field)"),
            404: _problem("The repository is not registered"),
        },
    )
    async def update_repository(
        self, owner: FromPath[str], name: FromPath[str], data: JSONBody[UpdateRepository], services: Services
    ) -> RepositoryOut:
        repositories = services.repositories
        current = await repositories.get_repository(f"{owner}/{name}")  # 404 before any scan
        if data.secrets is not None:
            await _check_grant(repositories, data.secrets, None)
        if data.secrets is None and data.pool is None:
            return RepositoryOut.of(current)
        updated = await repositories.update_repository(current.name, secrets=data.secrets, pool=data.pool)
        return RepositoryOut.of(updated)

    @get(
        "/",
        summary="List repositories",
        responses={400: _problem("limit or offset out of range (the problem names the parameter)")},
    )
    async def list_repositories(
        self,
        services: Services,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Repositories per page")] = 50,
        offset: Annotated[
            int, QueryParameter(ge=0, le=MAX_OFFSET, description=f"Repositories to skip (at most {MAX_OFFSET:,})")
        ] = 0,
    ) -> PageOut[RepositoryOut]:
        page = await services.repositories.list_repositories(limit=limit, offset=offset)
        return PageOut(items=[RepositoryOut.of(r) for r in page.items], total=page.total, limit=limit, offset=offset)

    @get(
        "/{owner:str}/{name:str}",
        summary="One repository",
        responses={404: _problem("The repository is not registered")},
    )
    async def get_repository(self, owner: FromPath[str], name: FromPath[str], services: Services) -> RepositoryOut:
        return RepositoryOut.of(await services.repositories.get_repository(f"{owner}/{name}"))
