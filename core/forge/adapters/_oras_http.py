"""The OCI distribution requests of :mod:`forge.adapters.oras_registry`, sent with oras's ``do_request``.

Every answer goes through :meth:`RegistryHttp.check` (``forge.adapters._registry_answers``, the one
translation shared with the CMP's reader) into the port's error
contract: 404 → NotFoundError; 401/403 → ``registry_denied``; 429 and 5xx → ServiceUnavailableError
(with ``Retry-After``); other 4xx → PermanentError with the registry's own error code, lowercased
(``manifest_invalid``, ``digest_invalid``, ...). Transport failures (requests' exceptions are
``OSError``\\ s) become ServiceUnavailableError naming the host. Messages carry the host and the
repository, never a credential.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO, Any, NoReturn
from urllib.parse import urljoin

from forge.adapters._registry_answers import denied, failure
from forge.errors import (
    ForgeError,
    LimitExceededError,
    PermanentError,
    ServiceUnavailableError,
)
from forge.ports.registry import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_BYTES,
    Manifest,
    check_digest,
    check_tag,
    digest_mismatch,
    is_digest,
    parse_manifest,
    sha256_digest,
)

__all__ = ["RegistryHttp"]

_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_CHUNK = 1024 * 1024


class RegistryHttp:
    def __init__(self, registry: Any, base_url: str, host: str) -> None:
        self._registry = registry  # an oras.provider.Registry with its retry decorator bypassed
        self._base = base_url
        self.host = host

    def upload(self, repository: str, data: bytes | IO[bytes], *, digest: str, size: int) -> None:
        """Monolithic upload (POST, then PUT ?digest=), skipped when HEAD finds the blob already there.

        The HEAD also meets any auth challenge before a request with a body is sent.
        """
        what = f"blob {digest} of {repository}"
        head = self.send("HEAD", f"/v2/{repository}/blobs/{digest}", what)
        if head.status_code == 200:
            return
        if head.status_code != 404:
            self.check(head, what)
        started = self.send("POST", f"/v2/{repository}/blobs/uploads/", what)
        self.check(started, what)
        location = started.headers.get("Location")
        if not location:
            raise PermanentError(f"registry {self.host} gave no upload Location for {what}", code="registry_rejected")
        target = urljoin(f"{self._base}/", location)
        target += ("&" if "?" in target else "?") + f"digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        self.check(self.send("PUT", target, what, data=data, headers=headers), what)

    def put_manifest(self, repository: str, data: bytes, media_type: str, tags: Sequence[str]) -> str:
        """PUT ``data`` by its digest, then under each tag; the registry's digest must equal ours."""
        digest = sha256_digest(data)
        for reference in [digest, *tags]:
            what = f"manifest {reference} of {repository}"
            answer = self.send("PUT", f"/v2/{repository}/manifests/{reference}", what, data=data, media_type=media_type)
            self.check(answer, what)
            stored = answer.headers.get("Docker-Content-Digest")
            if stored and stored != digest:
                raise digest_mismatch(f"{self.host}/{repository} stored {what}", digest, stored)
        return digest

    def manifest_bytes(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The exact bytes of a manifest and their media type; verified when ``reference`` is a digest."""
        reference = check_digest(reference) if is_digest(reference) else check_tag(reference)
        what = f"manifest {reference} of {repository}"
        answer = self.send("GET", f"/v2/{repository}/manifests/{reference}", what, accept=_ACCEPT, stream=True)
        with answer:
            self.check(answer, what)
            data = self._read(answer, MAX_MANIFEST_BYTES, what)
        actual = sha256_digest(data)
        expected = reference if is_digest(reference) else answer.headers.get("Docker-Content-Digest")
        if expected and expected != actual:
            raise digest_mismatch(f"{self.host}/{repository} {what}", expected, actual)
        return data, str(answer.headers.get("Content-Type") or "").split(";")[0].strip()

    def manifest(self, repository: str, reference: str) -> Manifest:
        data, media_type = self.manifest_bytes(repository, reference)
        digest = sha256_digest(data)
        return parse_manifest(data, digest, where=f"{self.host}/{repository}@{digest}", media_type=media_type)

    def blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        what = f"blob {digest} of {repository}"
        answer = self.send("GET", f"/v2/{repository}/blobs/{digest}", what, stream=True)
        with answer:
            self.check(answer, what)
            data = self._read(answer, max_bytes, what)
        actual = sha256_digest(data)
        if actual != digest:
            raise digest_mismatch(f"{self.host}/{repository} {what}", digest, actual)
        return data

    def tags(self, repository: str) -> Iterator[str]:
        """Every tag, following the ``Link: <...>; rel="next"`` pages."""
        what = f"tags of {repository}"
        url: str | None = f"/v2/{repository}/tags/list"
        while url:
            answer = self.send("GET", url, what)
            self.check(answer, what)
            yield from answer.json().get("tags") or []
            url = answer.links.get("next", {}).get("url")

    def send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        data: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
        accept: str | None = None,
        stream: bool = False,
    ) -> Any:
        headers = dict(headers or {})
        if media_type is not None:
            headers["Content-Type"] = media_type
        if accept is not None:
            headers["Accept"] = accept
        target = url if url.startswith(("http://", "https://")) else f"{self._base}{url}"
        try:
            return self._registry.do_request(target, method, data=data, headers=headers, stream=stream)
        except ForgeError:
            raise
        except OSError as exc:  # requests' ConnectionError, Timeout, ... are OSErrors
            raise ServiceUnavailableError(
                f"registry {self.host} is unreachable ({type(exc).__name__}) for {what}", details={"host": self.host}
            ) from None
        except ValueError:  # oras: "Cannot respond to request for authentication."
            self._denied(what, 401)

    def check(self, answer: Any, what: str) -> None:
        error = failure(self.host, what, int(answer.status_code), answer.content, answer.headers.get("Retry-After"))
        if error is not None:
            raise error

    def _denied(self, what: str, status: int) -> NoReturn:
        raise denied(self.host, what, status)

    def _read(self, answer: Any, limit: int, what: str) -> bytes:
        """The body, refused before reading when its announced length passes ``limit``, and while reading."""
        announced = answer.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            raise LimitExceededError(f"{what} in {self.host} has {announced} bytes (> {limit})")
        chunks: list[bytes] = []
        total = 0
        for chunk in answer.iter_content(chunk_size=_CHUNK):
            total += len(chunk)
            if total > limit:
                raise LimitExceededError(f"{what} in {self.host} has more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
