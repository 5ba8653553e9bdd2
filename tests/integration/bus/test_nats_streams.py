"""How NatsBus configures the streams of DESIGN §6 (read back from the server with plain nats-py)."""

from __future__ import annotations

import nats
from nats.js.api import RetentionPolicy

from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import STREAMS
from forge.embedded.process import ServiceProcess


async def test_job_streams_deduplicate_for_longer_than_a_job_runs(own_nats: ServiceProcess) -> None:
    bus = await NatsBus.connect(own_nats.url)
    nc = await nats.connect(own_nats.url)
    try:
        await bus.ensure_streams(STREAMS)
        js = nc.jetstream()
        tasks = (await js.stream_info("pipeline-tasks")).config
        results = (await js.stream_info("pipeline-results")).config
        assert tasks.duplicate_window == 7200
        assert tasks.retention == RetentionPolicy.WORK_QUEUE
        assert results.duplicate_window == 120
        assert results.max_age == 24 * 3600
    finally:
        await nc.close()
        await bus.close()
