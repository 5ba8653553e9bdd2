"""ObjectStore on MinIO or any S3-compatible server, through the official (synchronous) ``minio`` client.

Every client call runs on a dedicated thread pool of ``max_workers`` threads, and the urllib3
connection pool has the same size, so a thread never waits for a connection. Timeouts are short
and retries few, so a server that is down fails in seconds, not minutes.

Errors are translated at the boundary (``_translate``): a missing key or bucket becomes
``NotFoundError``, an unreachable endpoint ``ServiceUnavailableError``, a 5xx or throttling answer
``TransientError``, anything else (bad credentials, refused request) ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import io
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import ObjectWriteResult
from urllib3.exceptions import HTTPError as Urllib3Error

from forge.errors import (
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)
from forge.ports.objects import ObjectInfo
from forge.settings import ObjectStoreSettings

__all__ = ["MinioObjectStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_RETRYABLE_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MAX_KEY_BYTES = 1024
#: A streamed upload's part (S3's minimum is 5 MiB): what one ``put_file`` holds in memory at most.
_PART_SIZE = 5 * 2**20
#: What a streamed download reads at a time.
_STREAM_CHUNK = 256 * 1024


class MinioObjectStore:
    """One bucket of an S3-compatible server; see ``forge.ports.objects.ObjectStore``."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        max_workers: int = 8,
        connect_timeout: float = 2.0,
        read_timeout: float = 60.0,
    ):
        self.endpoint = endpoint
        self.bucket = bucket
        self._http = urllib3.PoolManager(
            maxsize=max_workers,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(
                total=2, connect=1, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504), raise_on_status=False
            ),
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        try:
            self._client = Minio(endpoint, access_key, secret_key, secure=secure, region=region, http_client=self._http)
        except ValueError as exc:
            self._http.clear()
            raise InvalidInputError(f"invalid S3 endpoint {endpoint!r}: {exc}") from exc
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="forge-s3")

    @classmethod
    def from_settings(cls, settings: ObjectStoreSettings) -> Self:
        s = settings
        return cls(
            s.endpoint, s.access_key, s.secret_key.get_secret_value(), s.bucket, secure=s.secure, region=s.region
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the threads and close pooled connections; calls in flight finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.clear()

    async def ensure_bucket(self) -> None:
        await self._run(None, self._ensure_bucket)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        _check_key(key)
        put = self._client.put_object
        result = await self._run(key, put, self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        etag, modified = _etag(result.etag), result.last_modified
        return ObjectInfo(key=key, size=len(data), etag=etag, last_modified=modified, content_type=content_type)

    async def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        _check_key(key)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise NotFoundError(f"no file {path} to upload to {key!r}", details={"path": str(path)}) from None
        result = await self._run(key, self._put_file, key, path, size, content_type)
        etag, modified = _etag(result.etag), result.last_modified
        return ObjectInfo(key=key, size=size, etag=etag, last_modified=modified, content_type=content_type)

    async def get(self, key: str) -> bytes:
        _check_key(key)
        return await self._run(key, self._get, key)

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        _check_key(key)
        return await self._run(key, self._get_file, key, path)

    async def stat(self, key: str) -> ObjectInfo:
        _check_key(key)
        st = await self._run(key, self._client.stat_object, self.bucket, key)
        return ObjectInfo(key, int(st.size or 0), _etag(st.etag), st.last_modified, st.content_type)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        head = prefix.rpartition("/")[0]
        if prefix.startswith("/") or head:
            _check_key(f"{head}/_", what="prefix", shown=prefix)
        return await self._run(prefix or None, self._list, prefix)

    async def delete(self, key: str) -> None:
        _check_key(key)
        try:
            await self._run(key, self._client.remove_object, self.bucket, key)
        except NotFoundError as exc:
            if exc.details.get("s3_code") != "NoSuchKey":
                raise

    async def presign_get(self, key: str, expires: timedelta) -> str:
        _check_key(key)
        return str(await self._run(key, self._client.presigned_get_object, self.bucket, key, expires=expires))

    async def ping(self) -> None:
        """Reachable and the credentials are accepted; whether the bucket exists does not matter."""
        await self._run(None, self._client.bucket_exists, self.bucket)

    # -- runs on the pool ------------------------------------------------------------------------

    def _ensure_bucket(self) -> None:
        if self._client.bucket_exists(self.bucket):
            return
        try:
            self._client.make_bucket(self.bucket)
        except MinioException:
            if not self._client.bucket_exists(self.bucket):  # else another creator won the race: fine
                raise

    def _get(self, key: str) -> bytes:
        response = self._client.get_object(self.bucket, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def _put_file(self, key: str, path: Path, size: int, content_type: str) -> ObjectWriteResult:
        """One PUT up to a part's size, else a multipart upload of ``_PART_SIZE`` parts, one at a time (minio
        reads each part into memory before it sends it: parallel parts would multiply that)."""
        with path.open("rb") as stream:
            return self._client.put_object(
                self.bucket,
                key,
                stream,
                size,
                content_type=content_type,
                part_size=_PART_SIZE,
                num_parallel_uploads=1,
            )

    def _get_file(self, key: str, path: Path) -> ObjectInfo:
        response = self._client.get_object(self.bucket, key)
        try:
            size = 0
            with path.open("wb") as out:
                for chunk in response.stream(_STREAM_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
            headers = response.headers
            return ObjectInfo(key, size, _etag(headers.get("ETag")), None, headers.get("Content-Type") or None)
        finally:
            response.close()
            response.release_conn()

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        found = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
        infos = [
            ObjectInfo(o.object_name, int(o.size or 0), _etag(o.etag), o.last_modified, o.content_type)
            for o in found
            if not o.is_dir
        ]
        return sorted(infos, key=lambda info: info.key)

    async def _run(self, key: str | None, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except (MinioException, Urllib3Error, OSError, ValueError) as exc:
            raise self._translate(exc, key) from exc

    def _translate(self, exc: Exception, key: str | None) -> ForgeError:
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        details: dict[str, Any] = {"endpoint": self.endpoint, "bucket": self.bucket, "key": key}
        if isinstance(exc, ValueError):
            return InvalidInputError(f"invalid request for {where}: {exc}", details=details)
        if isinstance(exc, Urllib3Error | OSError):
            reason = getattr(exc, "reason", None) or exc
            return ServiceUnavailableError(f"S3 endpoint {self.endpoint} is unreachable: {reason}", details=details)
        status, code = _status_and_code(exc)
        details.update(status=status, s3_code=code)
        if code == "NoSuchBucket":
            return NotFoundError(f"bucket {self.bucket!r} does not exist at {self.endpoint}", details=details)
        if code == "NoSuchKey" or status == 404:
            return NotFoundError(f"object {key!r} not found in bucket {self.bucket!r}", details=details)
        message = f"S3 refused {where}: {code or 'error'} (HTTP {status})"
        if status >= 500 or status == 429 or code in _RETRYABLE_CODES:
            return TransientError(message, details=details)
        return PermanentError(message, details=details)


def _status_and_code(exc: Exception) -> tuple[int, str | None]:
    if isinstance(exc, S3Error):
        return int(exc.response.status), exc.code
    if isinstance(exc, ServerError):
        return int(exc.status_code), None
    if isinstance(exc, InvalidResponseError):
        # rclone answers errors as text/xml; minio only parses application/xml and gives up here.
        body = getattr(exc, "_body", None) or ""
        found = _XML_CODE.search(body)
        return int(getattr(exc, "_code", 0) or 0), found.group(1) if found else None
    return 0, None


def _check_key(key: str, *, what: str = "object key", shown: str | None = None) -> None:
    """Reject keys that are empty, absolute, escape with ``..`` or would not map to a file."""
    shown = key if shown is None else shown
    reason = None
    if not key:
        reason = "is empty"
    elif key.startswith("/"):
        reason = "starts with '/'"
    elif any(seg in {"", ".", ".."} for seg in key.split("/")):
        reason = "has an empty, '.' or '..' segment"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        reason = "contains a control character"
    elif len(key.encode()) > _MAX_KEY_BYTES:
        reason = f"is longer than {_MAX_KEY_BYTES} bytes"
    if reason:
        raise InvalidInputError(f"{what} {shown!r} {reason}", details={what.replace(" ", "_"): shown})


def _etag(etag: str | None) -> str:
    return (etag or "").strip('"')
