"""Workers publish step lifecycle events on JetStream; the controller records them (DESIGN §6).

An event is published with ``Nats-Msg-Id = event.key`` and acknowledged by JetStream before this
returns, so once a worker moves on (publishes the job's result, acks the job) its events are
stored. A NATS outage is retried here for a while (the same event twice is one event), then
surfaces as ``TransientError`` so the job is retried rather than its outcome lost.
"""

from __future__ import annotations

import stamina

from forge.domain.events import StepEvent, event_subject
from forge.errors import TransientError
from forge.ports import MessageBus
from forge.retrying import transient

__all__ = ["StepEventPublisher"]


class StepEventPublisher:
    def __init__(self, bus: MessageBus, *, retry_for: float = 30.0) -> None:
        self._bus = bus
        self._retry_for = retry_for

    async def publish(self, event: StepEvent) -> None:
        data = event.model_dump_json().encode()
        subject = event_subject(event.run_id)
        try:  # the common case, without building a retry context per event
            await self._bus.publish(subject, data, msg_id=event.key)
        except TransientError:
            pass
        else:
            return
        async for attempt in stamina.retry_context(
            on=transient, attempts=None, timeout=self._retry_for, wait_initial=0.1, wait_max=2.0
        ):
            with attempt:
                await self._bus.publish(subject, data, msg_id=event.key)
