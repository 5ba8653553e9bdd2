"""ArtifactReader on the standard library (``http.client``): pulls by digest without oras or requests.

The read half of the registry port (``forge.ports.registry.ArtifactReader``) for a process whose
start time is its cost: ``forge-cmp generate`` runs once per app refresh, and importing oras,
requests, urllib3, jsonschema and asyncio cost it ~150 ms before the first byte was read. This
adapter imports ``http.client`` and nothing else outside the stdlib. Writes stay with
``OrasRegistry``; both pass the same compliance suite (``tests/integration/registry/``).

The OCI distribution requests it sends: ``GET /v2/<repository>/manifests/<reference>`` (the exact
bytes, verified against a digest reference or ``Docker-Content-Digest``), ``GET
/v2/<repository>/blobs/<digest>`` (verified, refused past ``max_bytes`` before it is read whole)
and ``GET /v2/<repository>/tags/list`` (following ``Link: <…>; rel="next"``). Redirects (a blob
served from object storage) are followed up to 5 times; credentials are never sent to another host.

Registry auth, answered on the registry's ``401`` challenge:

- ``Basic realm=…`` (docker-registry's htpasswd): the configured credentials, then sent up front;
- ``Bearer realm=…,service=…,scope=…`` (distribution's token auth, Harbor, GHCR, Docker Hub):
  ``GET <realm>?service=…&scope=…`` (with the credentials as Basic when configured, anonymous
  otherwise), then ``Authorization: Bearer <token>`` for that repository; a token the registry
  refuses later (expired) is fetched once more. Credentials never go to a plain-http realm of an
  https registry.

Errors follow the port's contract, as ``OrasRegistry`` maps them: 404 → ``NotFoundError``; 401/403
(also from the token service) → ``PermanentError`` ``registry_denied``; 429, 5xx, refused
connections and timeouts → ``ServiceUnavailableError`` naming the host; other 4xx →
``PermanentError`` with the registry's own error code. Messages never carry a credential.

Calls are ``async`` as the port's are. Inside a running asyncio loop each exchange runs in a
thread (``asyncio.to_thread``); without one (asyncio not even imported) it runs inline and the
coroutine completes without ever suspending, so a synchronous caller can drive it with
``coroutine.send(None)`` and never import asyncio (forge-cmp does). Idle keep-alive connections to
the registry are reused; :meth:`HttpRegistryReader.close` (or ``with``) closes them.
No circuit breaker: the CMP is a process per render, so there is no later call to protect.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple, NoReturn, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

from forge.adapters._registry_answers import denied, failure, retry_after
from forge.errors import (
    InvalidInputError,
    LimitExceededError,
    PermanentError,
    ServiceUnavailableError,
)
from forge.ports.registry import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_BYTES,
    Manifest,
    check_digest,
    check_repository,
    check_tag,
    digest_mismatch,
    is_digest,
    parse_manifest,
    sha256_digest,
)

if TYPE_CHECKING:
    from http.client import HTTPConnection, HTTPResponse
    from types import TracebackType

    from forge.settings import RegistrySettings

__all__ = ["HttpRegistryReader"]

T = TypeVar("T")
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_CONNECT_TIMEOUT, _READ_TIMEOUT = 5.0, 120.0  # a registry that stops answering is an outage, not a hang
_MAX_REDIRECTS = 5
_MAX_ERROR_BODY = 64 * 1024
_MAX_TOKEN_BODY = 1024 * 1024
_MAX_TAG_PAGE = 4 * 1024 * 1024
_CHUNK = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


class _Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-cased names; the last value of a repeated header
    body: bytes
    url: str  # the URL that answered (after redirects)


class HttpRegistryReader:
    """One OCI registry, read-only; ``repository`` arguments are paths inside it, never hosts."""

    def __init__(
        self, url: str, *, username: str | None = None, password: str | None = None, tags_page: int | None = None
    ) -> None:
        """``tags_page``: tags asked for per page (``?n=``); None leaves the page size to the registry."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.path.strip("/"):
            raise InvalidInputError(
                "FORGE_REGISTRY__URL: expected http(s)://host[:port] without credentials or path"
                f" (got scheme {parts.scheme!r}, host {parts.hostname!r})"
            )
        self.host = parts.netloc
        self._base = f"{parts.scheme}://{self.host}"
        self._credentials = (username, password) if username is not None and password is not None else None
        self._basic = False  # the registry asked for Basic: send the credentials up front
        self._tokens: dict[str, str] = {}  # repository → bearer token
        self._idle: list[HTTPConnection] = []  # keep-alive connections to the registry (list ops are atomic)
        self._tags_page = tags_page

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> HttpRegistryReader:
        password = settings.password.get_secret_value() if settings.password is not None else None
        return cls(settings.url, username=settings.username, password=password)

    def __enter__(self) -> HttpRegistryReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def reference(self, repository: str, digest: str) -> str:
        return f"{self.host}/{check_repository(repository)}@{check_digest(digest)}"

    async def manifest(self, repository: str, reference: str) -> Manifest:
        check_repository(repository)
        reference = check_digest(reference) if is_digest(reference) else check_tag(reference)
        return await _blocking(lambda: self._manifest(repository, reference))

    async def blob(self, repository: str, digest: str, *, max_bytes: int) -> bytes:
        check_repository(repository)
        check_digest(digest)
        return await _blocking(lambda: self._blob(repository, digest, max_bytes))

    async def tags(self, repository: str) -> list[str]:
        check_repository(repository)
        return sorted(await _blocking(lambda: list(self._tags(repository))))

    # The exchanges (blocking).

    def _manifest(self, repository: str, reference: str) -> Manifest:
        what = f"manifest {reference} of {repository}"
        answer = self._get(repository, f"/v2/{repository}/manifests/{reference}", what, MAX_MANIFEST_BYTES, _ACCEPT)
        actual = sha256_digest(answer.body)
        expected = reference if is_digest(reference) else answer.headers.get("docker-content-digest")
        if expected and expected != actual:
            raise digest_mismatch(f"{self.host}/{repository} {what}", expected, actual)
        media_type = answer.headers.get("content-type", "").split(";")[0].strip()
        return parse_manifest(answer.body, actual, where=f"{self.host}/{repository}@{actual}", media_type=media_type)

    def _blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        what = f"blob {digest} of {repository}"
        data = self._get(repository, f"/v2/{repository}/blobs/{digest}", what, max_bytes).body
        actual = sha256_digest(data)
        if actual != digest:
            raise digest_mismatch(f"{self.host}/{repository} {what}", digest, actual)
        return data

    def _tags(self, repository: str) -> Iterator[str]:
        what = f"tags of {repository}"
        url: str | None = f"/v2/{repository}/tags/list" + (f"?n={self._tags_page}" if self._tags_page else "")
        while url:
            answer = self._get(repository, url, what, _MAX_TAG_PAGE)
            try:
                tags = json.loads(answer.body).get("tags") or []
            except (ValueError, AttributeError):
                raise PermanentError(
                    f"registry {self.host} answered {what} with something other than a tag list",
                    code="registry_rejected",
                ) from None
            yield from (str(tag) for tag in tags)
            found = _NEXT.search(answer.headers.get("link", ""))
            url = urljoin(answer.url, found.group(1)) if found else None

    def _get(self, repository: str, path: str, what: str, limit: int, accept: str | None = None) -> _Answer:
        """GET ``path`` with the registry's auth challenge answered once; any status but 2xx raises."""
        url = urljoin(f"{self._base}/", path)
        sent = self._authorization(repository)
        answer = self._exchange(url, what, limit, accept, sent)
        if answer.status == 401 and self._answer_challenge(repository, answer, what, sent):
            answer = self._exchange(url, what, limit, accept, self._authorization(repository))
        self._check(answer, what)
        return answer

    def _authorization(self, repository: str) -> str | None:
        if repository in self._tokens:
            return f"Bearer {self._tokens[repository]}"
        if self._basic and self._credentials is not None:
            return _basic_header(*self._credentials)
        return None

    def _answer_challenge(self, repository: str, answer: _Answer, what: str, sent: str | None) -> bool:
        """True when the 401's ``WWW-Authenticate`` challenge was answered and the request can go again
        (``sent``: the Authorization the refused request carried)."""
        challenge = answer.headers.get("www-authenticate", "")
        scheme, _, params = challenge.strip().partition(" ")
        if scheme.lower() == "basic":
            if self._credentials is None or (sent or "").startswith("Basic "):
                return False  # anonymous, or the credentials were sent and refused
            self._basic = True
            return True
        if scheme.lower() != "bearer":
            return False
        fields = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _PARAM.finditer(params)
        }
        realm = fields.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise PermanentError(
                f"registry {self.host} asked for a bearer token without a usable realm for {what}",
                code="registry_denied",
                details={"host": self.host},
            )
        if self._credentials is not None and self._base.startswith("https:") and realm.startswith("http:"):
            raise PermanentError(
                f"registry {self.host} sends {what}'s token requests to {urlsplit(realm).netloc} over plain http;"
                " refusing to send the credentials there",
                code="registry_denied",
                details={"host": self.host},
            )
        self._tokens[repository] = self._token(realm, fields, repository, what)
        return True

    def _token(self, realm: str, fields: dict[str, str], repository: str, what: str) -> str:
        query = {key: fields[key] for key in ("service", "scope") if fields.get(key)}
        query.setdefault("scope", f"repository:{repository}:pull")
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {} if self._credentials is None else {"Authorization": _basic_header(*self._credentials)}
        token_host = urlsplit(realm).netloc
        answer = self._exchange(url, f"a token for {what}", _MAX_TOKEN_BODY, None, None, headers=headers)
        if answer.status in (401, 403):
            self._denied(what, answer.status)
        if answer.status == 429 or answer.status >= 500:
            raise ServiceUnavailableError(
                f"token service {token_host} of registry {self.host} answered HTTP {answer.status} for {what}",
                retry_after=retry_after(answer.headers.get("retry-after")),
                details={"host": token_host, "status": answer.status},
            )
        try:
            body = json.loads(answer.body) if answer.status == 200 else {}
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PermanentError(
                f"token service {token_host} of registry {self.host} gave no token for {what} (HTTP {answer.status})",
                code="registry_denied",
                details={"host": token_host, "status": answer.status},
            )
        return token

    def _exchange(
        self,
        url: str,
        what: str,
        limit: int,
        accept: str | None,
        authorization: str | None,
        *,
        headers: dict[str, str] | None = None,
    ) -> _Answer:
        """One GET, redirects followed; the body read whole up to ``limit`` (error bodies: up to 64 KiB)."""
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            sent = dict(headers or {})
            if accept is not None:
                sent["Accept"] = accept
            own = f"{parts.scheme}://{parts.netloc}" == self._base
            if authorization is not None and own:  # never to a redirect's storage host
                sent["Authorization"] = authorization
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            status, answer_headers, body = self._send(parts.scheme, parts.netloc, target, sent, what, limit, own)
            if status in _REDIRECTS and answer_headers.get("location"):
                url = urljoin(url, answer_headers["location"])
                continue
            return _Answer(status, answer_headers, body, url)
        raise PermanentError(
            f"registry {self.host} redirected {what} more than {_MAX_REDIRECTS} times", code="registry_rejected"
        )

    def _send(
        self, scheme: str, netloc: str, target: str, headers: dict[str, str], what: str, limit: int, pooled: bool
    ) -> tuple[int, dict[str, str], bytes]:
        """The request on a kept-alive connection (once more on a fresh one if the kept one was closed)."""
        from http.client import HTTPException

        for reused in (True, False) if pooled and self._idle else (False,):
            connection: HTTPConnection | None = None
            keep = False
            try:
                connection = self._take(scheme, netloc) if reused else _connect(scheme, netloc)
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                status = response.status
                answer_headers = {name.lower(): value for name, value in response.getheaders()}
                ok = 200 <= status < 300
                body = self._body(response, answer_headers, limit if ok else _MAX_ERROR_BODY, what, strict=ok)
                keep = pooled and not response.will_close and response.isclosed()
                return status, answer_headers, body
            except (OSError, HTTPException) as exc:
                if reused:
                    continue  # the registry closed the idle connection: a GET is safe to send again
                raise ServiceUnavailableError(
                    f"registry {self.host} is unreachable ({type(exc).__name__}) for {what}"
                    + ("" if netloc == self.host else f" at {netloc}"),
                    details={"host": netloc},
                ) from None
            finally:
                if keep and connection is not None:
                    self._idle.append(connection)
                elif connection is not None:
                    connection.close()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _take(self, scheme: str, netloc: str) -> HTTPConnection:
        """An idle connection to the registry, else a new one."""
        try:
            return self._idle.pop()
        except IndexError:  # another thread took it
            return _connect(scheme, netloc)

    def _body(self, response: HTTPResponse, headers: dict[str, str], limit: int, what: str, *, strict: bool) -> bytes:
        """The body; past ``limit`` a success is ``LimitExceededError`` (checked before reading when announced),
        an error body is cut (its first bytes name the error)."""
        announced = headers.get("content-length", "")
        if strict and announced.isdigit() and int(announced) > limit:
            raise LimitExceededError(f"{what} in {self.host} has {announced} bytes (> {limit})")
        chunks: list[bytes] = []
        total = 0
        while chunk := response.read(min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                if strict:
                    raise LimitExceededError(f"{what} in {self.host} has more than {limit} bytes")
                break
        return b"".join(chunks)

    def _check(self, answer: _Answer, what: str) -> None:
        error = failure(self.host, what, answer.status, answer.body, answer.headers.get("retry-after"))
        if error is not None:
            raise error

    def _denied(self, what: str, status: int) -> NoReturn:
        raise denied(self.host, what, status)


async def _blocking(call: Callable[[], T]) -> T:
    """``call`` in a thread when an asyncio loop is running, else inline (no loop, no asyncio import)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            result: T = await asyncio.to_thread(call)
            return result
    return call()


def _connect(scheme: str, netloc: str) -> HTTPConnection:
    """A connected connection: the connect timeout while connecting, then the read timeout."""
    import http.client

    connection = (http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection)(
        netloc, timeout=_CONNECT_TIMEOUT
    )
    try:
        connection.connect()
        connection.sock.settimeout(_READ_TIMEOUT)
    except BaseException:
        connection.close()
        raise
    return connection


def _basic_header(username: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
