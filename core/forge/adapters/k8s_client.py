"""One Kubernetes API client for the adapters that read Kubernetes objects (``k8s_argocd``, ``k8s_secrets``).

**The choice.** The official ``kubernetes`` package's synchronous client, each call run in a thread
pool of its own (``workers`` threads, which is also the size of its urllib3 connection pool), not
``kubernetes_asyncio`` (one more dependency tracking the same generated code) nor raw httpx (we
would re-implement kubeconfig: exec plugins, client certificates, token refresh). The calls are
single-object GETs every few seconds, so a bounded handful of threads costs nothing and never
blocks the event loop. Answers are read raw (``_preload_content=False``) and parsed as JSON, so
the adapters see exactly the objects the API server sent, not the generated models.

**Configuration**, the first that applies (``KubeClientSettings``): ``server`` with ``token``
(+ ``ca_file``, ``verify_tls``), else the ``kubeconfig`` file (+ ``context``), else the pod's own
service account (in-cluster: its token is re-read as Kubernetes rotates it). ``kubernetes`` is
imported only when a client is made (it costs ~250 ms), so processes that do not use it never pay.

**Errors**, translated at this boundary::

    connection refused / reset / timed out     ServiceUnavailableError
    502, 503, 504                              ServiceUnavailableError  (Retry-After)
    429, other 5xx                             TransientError           (Retry-After)
    401 / 403                                  PermanentError           code unauthorized / forbidden
    404                                        NotFoundError
    anything else, or an answer that is not a JSON object: PermanentError

urllib3 does not retry on its own here (``retries=0``): the callers decide when to ask again.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from forge.errors import (
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)
from forge.settings import KubeClientSettings

__all__ = ["KubeClient", "kube_error"]


class KubeClient:
    """GETs of single Kubernetes objects as JSON mappings, off the event loop, errors in our tree."""

    def __init__(self, api_client: Any, *, request_timeout: float = 10.0, workers: int = 4):
        self._api = api_client
        self._timeout = request_timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-k8s")
        self.server: str = api_client.configuration.host

    @classmethod
    def connect(cls, settings: KubeClientSettings, *, workers: int = 4) -> KubeClient:
        """A client configured from ``settings`` (module docstring); ``InvalidInputError`` naming what is missing."""
        from kubernetes import client

        configuration = _configuration(settings)
        configuration.retries = 0
        configuration.connection_pool_maxsize = workers
        return cls(client.ApiClient(configuration), request_timeout=settings.request_timeout, workers=workers)

    async def custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        from kubernetes import client

        api = client.CustomObjectsApi(self._api)
        what = f"{plural}.{group} {namespace}/{name}"
        return await self._get(what, api.get_namespaced_custom_object, group, version, namespace, plural, name)

    async def secret(self, namespace: str, name: str) -> dict[str, Any]:
        from kubernetes import client

        api = client.CoreV1Api(self._api)
        return await self._get(f"secret {namespace}/{name}", api.read_namespaced_secret, name, namespace)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self._api.close)

    async def _get(self, what: str, method: Callable[..., Any], *args: str) -> dict[str, Any]:
        call = functools.partial(self._read, what, method, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _read(self, what: str, method: Callable[..., Any], *args: str) -> dict[str, Any]:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout)
            body = response.data
        except Exception as exc:
            raise kube_error(exc, what=what, server=self.server) from exc
        try:
            found = json.loads(body)
        except ValueError as exc:
            raise PermanentError(f"kubernetes {self.server}: {what}: the answer is not JSON") from exc
        if not isinstance(found, dict):
            raise PermanentError(f"kubernetes {self.server}: {what}: the answer is not an object")
        return found


def kube_error(exc: BaseException, *, what: str, server: str) -> ForgeError:
    """``exc`` (from the ``kubernetes`` client or urllib3 under it) as an error of our tree (module docstring)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ForgeError):
        return exc
    where = f"kubernetes {server}: {what}"
    if isinstance(exc, ApiException):
        return _api_error(exc, where, what)
    if isinstance(exc, (HTTPError, OSError)):
        return ServiceUnavailableError(f"{where}: unreachable: {exc}", details={"object": what})
    return PermanentError(f"{where}: {type(exc).__name__}: {exc}", details={"object": what})


def _api_error(exc: Any, where: str, what: str) -> ForgeError:
    status = int(exc.status or 0)
    details = {"status": status, "object": what}
    message = f"{where}: {status} {_status_message(exc)}"
    if status == 404:
        return NotFoundError(message, details=details)
    if status in (401, 403):
        return PermanentError(message, code="unauthorized" if status == 401 else "forbidden", details=details)
    retry_after = _retry_after(exc.headers)
    if status in (502, 503, 504):
        return ServiceUnavailableError(message, retry_after=retry_after, details=details)
    if status == 429 or status >= 500:
        return TransientError(message, retry_after=retry_after, details=details)
    return PermanentError(message, details=details)


def _status_message(exc: Any) -> str:
    """The ``message`` of the Kubernetes ``Status`` body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return str(exc.reason or "")


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _configuration(settings: KubeClientSettings) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if settings.server:
            configuration.host = settings.server.rstrip("/")
            if settings.token is not None:
                configuration.api_key = {"BearerToken": settings.token.get_secret_value()}
                configuration.api_key_prefix = {"BearerToken": "Bearer"}
            configuration.verify_ssl = settings.verify_tls
            if settings.ca_file is not None:
                configuration.ssl_ca_cert = str(settings.ca_file)
        elif settings.kubeconfig is not None:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig),
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        source = f"kubeconfig {settings.kubeconfig}" if settings.kubeconfig is not None else "in-cluster config"
        raise InvalidInputError(
            f"kubernetes: cannot load the {source}: {exc} (set a server and token, a kubeconfig, or run in a pod)"
        ) from exc
    return configuration
