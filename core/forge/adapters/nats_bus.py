"""MessageBus on NATS JetStream with nats-py (DESIGN §6).

nats-py exceptions never leave this module: timeouts the port promises become the builtin
``TimeoutError``, everything that means "NATS is not there" becomes ``ServiceUnavailableError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as CoreSubscription
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from forge.domain.messages import StreamSpec
from forge.errors import ConflictError, ForgeError, InvalidInputError, NotFoundError, ServiceUnavailableError
from forge.ports.bus import BusMessage, StoredMessage
from forge.settings import NatsSettings

__all__ = ["NatsBus", "NatsMessage", "NatsSubscription"]

_log = logging.getLogger(__name__)
_DAY = 24 * 3600.0
_RESULTS_MAX_AGE = _DAY
_DLQ_MAX_AGE = 7 * _DAY
_DUPLICATE_WINDOW = 120.0
#: Jobs are deduplicated by key for longer than any job may run (CI: 30 min by default), so a
#: dispatcher or controller that restarts and publishes a job again never starts a second copy
#: of one that is still queued or running.
_JOB_DUPLICATE_WINDOW = 2 * 3600.0

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)
_INVALID: tuple[type[BaseException], ...] = (
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
    nats.errors.MaxPayloadError,
    nats.js.errors.APIError,
)


@contextlib.contextmanager
def _translate(what: str, *, timeout_raises: bool = False) -> Iterator[None]:
    """Map nats-py errors to the forge tree; ``timeout_raises`` keeps timeouts as ``TimeoutError``."""
    try:
        yield
    except ForgeError:
        raise
    except TimeoutError as exc:  # nats.errors.TimeoutError subclasses it; checked before OSError
        if timeout_raises:
            raise TimeoutError(f"NATS {what} timed out") from exc
        raise ServiceUnavailableError(f"NATS did not answer {what} in time") from exc
    except _UNAVAILABLE as exc:
        raise ServiceUnavailableError(f"NATS is unavailable ({what}): {exc}") from exc
    except nats.js.errors.NotFoundError as exc:
        raise NotFoundError(f"NATS {what}: {exc}") from exc
    except _INVALID as exc:
        code = getattr(exc, "err_code", None)
        raise InvalidInputError(f"NATS {what}: {exc}", details={"err_code": code}) from exc
    except nats.errors.Error as exc:
        raise ServiceUnavailableError(f"NATS {what} failed: {exc}") from exc


_NO_HEADERS: Mapping[str, str] = {}
#: JetStream's "wrong last sequence" (10164: the constant form of the same refusal).
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
#: The stream settings ``ensure_streams`` decides besides its subjects; the server's defaults for the others stay.
_ENSURED = ("retention", "storage", "num_replicas", "max_age", "duplicate_window")


def _differs(held: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether the stream the server holds differs from ``wanted`` in a setting ``ensure_streams`` decides."""
    if sorted(held.subjects or ()) != sorted(wanted.subjects or ()):
        return True
    return any(getattr(held, name) != getattr(wanted, name) for name in _ENSURED)


class NatsMessage:
    """One JetStream delivery, satisfying ``BusMessage`` (headers and delivery count read once: nats-py
    parses the metadata from the reply subject on every access)."""

    __slots__ = ("_delivered", "_msg")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self._delivered: int | None = None

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self._msg.headers or _NO_HEADERS

    @property
    def num_delivered(self) -> int:
        if self._delivered is None:
            self._delivered = int(self._msg.metadata.num_delivered)
        return self._delivered

    async def ack(self) -> None:
        with _translate("ack"):
            await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        with _translate("nak"):
            await self._msg.nak(delay=delay)

    async def in_progress(self) -> None:
        with _translate("in_progress"):
            await self._msg.in_progress()

    async def term(self) -> None:
        with _translate("term"):
            await self._msg.term()


class NatsSubscription:
    """A core NATS subscription, satisfying ``Subscription``."""

    def __init__(self, sub: CoreSubscription) -> None:
        self._sub = sub

    def __aiter__(self) -> NatsSubscription:
        return self

    async def __anext__(self) -> bytes:
        with _translate(f"receive on {self._sub.subject}"):
            msg: Msg = await self._sub.messages.__anext__()
        return msg.data

    async def next(self, timeout: float) -> bytes:
        with _translate(f"receive on {self._sub.subject}", timeout_raises=True):
            msg = await self._sub.next_msg(timeout=timeout)
        return msg.data


class NatsBus:
    """``MessageBus`` on one nats-py connection; create it with ``await NatsBus.connect(url)``."""

    def __init__(self, nc: Client, *, replicas: int = 1) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._replicas = replicas
        self._pulls: dict[tuple[str, str], JetStreamContext.PullSubscription] = {}
        self._pull_locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    async def from_settings(cls, settings: NatsSettings, *, inbox_prefix: str = "_INBOX") -> Self:
        """:meth:`connect` with ``FORGE_NATS__*``: the URL, replicas, connect timeout, user and password."""
        password = settings.password.get_secret_value() if settings.password is not None else None
        return await cls.connect(
            settings.url,
            replicas=settings.replicas,
            connect_timeout=settings.connect_timeout,
            inbox_prefix=inbox_prefix,
            user=settings.user,
            password=password,
        )

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        replicas: int = 1,
        connect_timeout: float = 5.0,
        inbox_prefix: str = "_INBOX",
        user: str | None = None,
        password: str | None = None,
    ) -> Self:
        """Connect, or raise ``ServiceUnavailableError`` once ``connect_timeout`` has passed. Replies (JetStream
        answers, pulled messages, core replies) arrive on ``<inbox_prefix>.…`` subjects: a NATS user allowed
        to subscribe to its own prefix only (``forge.jobs.nats_permissions``) connects with that prefix.
        ``user`` and ``password`` log in to a server with authorization on (a server without ignores them);
        a refused login is a ``ServiceUnavailableError`` naming the user, never the password."""
        nc = Client()
        try:
            # nats-py retries the initial connect ``max_reconnect_attempts`` times, sleeping
            # ``reconnect_time_wait`` between tries (minutes by default): bound it from outside.
            async with asyncio.timeout(connect_timeout):
                await nc.connect(
                    url,
                    connect_timeout=max(1, round(connect_timeout)),
                    error_cb=_log_error,
                    name="forge",
                    # after a NATS restart, try again every second (nats-py waits 2 s): a worker whose job ended
                    # during the restart stores its outcome sooner; the same ~2 min in all before it gives up
                    reconnect_time_wait=1,
                    max_reconnect_attempts=120,
                    inbox_prefix=inbox_prefix,
                    user=user,
                    password=password,
                )
        except (OSError, nats.errors.Error) as exc:  # OSError covers TimeoutError
            with contextlib.suppress(Exception):
                await nc.close()
            who = f" as {user}" if user else ""
            raise ServiceUnavailableError(f"cannot connect to NATS at {url}{who}: {exc!r}") from exc
        return cls(nc, replicas=replicas)

    async def ensure_streams(self, streams: Sequence[StreamSpec]) -> None:
        for spec in streams:
            config = self._stream_config(spec)
            with _translate(f"ensure stream {spec.name}"):
                try:
                    info = await self._js.stream_info(spec.name)
                except nats.js.errors.NotFoundError:
                    await self._js.add_stream(config)
                else:
                    if _differs(info.config, config):  # never a write when nothing changes (nor its permission)
                        await self._update_stream(config)

    async def _update_stream(self, config: StreamConfig) -> None:
        try:
            await self._js.update_stream(config)
        except nats.js.errors.ServiceUnavailableError:
            raise
        except nats.js.errors.APIError as exc:  # NATS answers 500 to an update it refuses
            raise ConflictError(
                f"stream {config.name} exists with an incompatible configuration: {exc.description}",
                details={"err_code": exc.err_code},
            ) from exc

    def _stream_config(self, spec: StreamSpec) -> StreamConfig:
        if spec.work_queue:
            retention, max_age, window = RetentionPolicy.WORK_QUEUE, 0.0, _JOB_DUPLICATE_WINDOW
        else:
            retention, window = RetentionPolicy.LIMITS, _DUPLICATE_WINDOW
            max_age = _DLQ_MAX_AGE if spec.name.endswith("dlq") else _RESULTS_MAX_AGE
        return StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=retention,
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            max_age=max_age,
            duplicate_window=window,
        )

    async def ensure_consumer(
        self, stream: str, durable: str, *, filter_subject: str | None, ack_wait: float, max_deliver: int
    ) -> None:
        config = ConsumerConfig(
            name=durable,
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            filter_subject=filter_subject,
        )
        with _translate(f"ensure consumer {stream}/{durable}"):
            # CONSUMER.CREATE without an action creates, or updates the mutable fields.
            await self._js.add_consumer(stream, config)

    async def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None, headers: Mapping[str, str] | None = None
    ) -> bool:
        hdrs: dict[str, str] = dict(headers or {})
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        with _translate(f"publish on {subject}"):
            ack = await self._js.publish(subject, data, headers=hdrs or None)
        return not ack.duplicate

    async def publish_if_last(self, subject: str, data: bytes, *, last_sequence: int) -> int:
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last_sequence)}
        with _translate(f"publish on {subject}"):
            try:
                ack = await self._js.publish(subject, data, headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    raise ConflictError(
                        f"{subject} holds a newer message than sequence {last_sequence}",
                        details={"err_code": exc.err_code},
                    ) from exc
                raise
        return ack.seq

    async def fetch(self, stream: str, durable: str, *, batch: int, timeout: float) -> list[BusMessage]:
        key = (stream, durable)
        lock = self._pull_locks.setdefault(key, asyncio.Lock())
        async with lock:  # one pull subscription serves one fetch at a time
            with _translate(f"fetch {stream}/{durable}"):
                sub = self._pulls.get(key)
                if sub is None:
                    # A fetch on a missing consumer gets a bare 503; ask once so it reads NotFoundError.
                    await self._js.consumer_info(stream, durable)
                    sub = await self._js.pull_subscribe_bind(durable=durable, stream=stream)
                    self._pulls[key] = sub
                try:
                    msgs = await sub.fetch(batch=batch, timeout=timeout)
                except TimeoutError:  # nats' (Fetch)TimeoutError: nothing arrived in time
                    return []
        return [NatsMessage(m) for m in msgs]

    async def stream_bounds(self, stream: str) -> tuple[int, int]:
        with _translate(f"stream info {stream}"):
            info = await self._js.stream_info(stream)
        state = info.state
        if not state.messages:
            return state.last_seq + 1, state.last_seq
        return state.first_seq, state.last_seq

    async def consumer_lag(self, stream: str) -> dict[str, int]:
        with _translate(f"consumers of {stream}"):
            infos = await self._js.consumers_info(stream)
        return {info.name: (info.num_pending or 0) + (info.num_ack_pending or 0) for info in infos}

    async def last_payload(self, stream: str, subject: str) -> bytes | None:
        stored = await self.last_message(stream, subject)
        return None if stored is None else stored.data

    async def last_message(self, stream: str, subject: str) -> StoredMessage | None:
        with _translate(f"last message of {stream}/{subject}"):
            try:
                raw = await self._js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == 10059:  # the stream itself is missing
                    raise NotFoundError(f"stream {stream} does not exist") from exc
                return None
        return StoredMessage(raw.data or b"", raw.seq or 0)

    @contextlib.asynccontextmanager
    async def subscribe(self, subject: str) -> AsyncIterator[NatsSubscription]:
        with _translate(f"subscribe to {subject}"):
            sub = await self._nc.subscribe(subject)
            await _barrier(self._nc)  # the server knows the interest before we hand it out
        try:
            yield NatsSubscription(sub)
        finally:
            if not self._nc.is_closed:
                with _translate(f"unsubscribe from {subject}"):
                    await sub.unsubscribe()

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        with _translate(f"request on {subject}", timeout_raises=True):
            reply = await self._nc.request(subject, data, timeout=timeout)
        return reply.data

    async def respond(self, subject: str, data: bytes) -> None:
        with _translate(f"publish on {subject}"):
            await self._nc.publish(subject, data)

    async def ping(self) -> None:
        if not self._nc.is_connected:
            raise ServiceUnavailableError("NATS connection is not established")
        with _translate("ping"):
            await self._nc.flush(timeout=5)

    async def close(self) -> None:
        if self._nc.is_closed:
            return
        """Drain when the server is reachable; never raise: closing is best effort."""
        try:
            # Drop pull inboxes first: drain() waits for every queued message to be consumed, and a
            # pull inbox may hold a late 408 status or a delivery nobody will fetch (redelivered).
            for sub in self._pulls.values():
                await sub.unsubscribe()
            self._pulls.clear()
            await self._nc.drain()
        except (OSError, nats.errors.Error) as exc:
            _log.info("NATS connection closed without draining: %s", exc)
            await self._nc.close()


async def _barrier(nc: Client) -> None:
    """Return once the server has processed everything sent so far.

    nats-py's ``flush()`` writes its PING straight to the socket while SUB/PUB commands wait in a
    buffer for the flusher task, so one PONG can come back before a just-sent SUB was read. The
    first flush pushes the buffer out; the second PING is behind it on the wire.
    """
    await nc.flush(timeout=5)
    await nc.flush(timeout=5)


async def _log_error(exc: Exception) -> None:
    _log.warning("nats: %s", exc)
