import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from omnistock.inventory.reserving import ReservationBatcher, ReserveStock, ServiceStopping
from omnistock.platform.clock import ManualClock


async def test_requests_still_queued_at_shutdown_are_refused_not_left_hanging() -> None:
    no_database: Any = None  # no worker runs, so nothing reaches the database
    batcher = ReservationBatcher(
        no_database, ManualClock(datetime(2026, 1, 1, tzinfo=UTC)), workers=0
    )
    batcher.start()
    waiting = asyncio.create_task(
        batcher.submit(ReserveStock("ch", (("A", 1),), "web"), "web", "key-1", "fingerprint")
    )
    await asyncio.sleep(0)  # let the request reach the queue
    await batcher.stop(timeout_s=0.01)
    with pytest.raises(ServiceStopping):
        await asyncio.wait_for(waiting, 1)
