"""Writers of one SKU wait for each other, even when a change reaches a SKU indirectly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from omnistock.inventory import domain, repository, service
from omnistock.platform import db
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import create_service_schema, drop_schema, wait_for

pytestmark = pytest.mark.integration
clock = ManualClock(datetime(2026, 11, 29, 12, tzinfo=UTC))


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    schema = await create_service_schema(settings, "inventory", "omnistock.inventory")
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=4)
    try:
        yield schema, pool
    finally:
        await pool.close()
        await drop_schema(settings, schema)


async def in_tx(pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    async with pool.acquire() as conn, conn.transaction():
        return await work(conn)


async def test_a_count_that_releases_a_reservation_locks_its_other_skus(
    pool: tuple[str, asyncpg.Pool],
) -> None:
    """Counting A to zero releases a reservation of A and B. A concurrent change of B must wait
    for it; otherwise B's published availability is computed without the released units."""
    schema, pool_ = pool
    for location in ("wh", "st"):
        await in_tx(
            pool_,
            lambda c, loc=location: service.put_location(c, loc, "warehouse", "PL", ["ship"], loc),
        )
    await in_tx(
        pool_,
        lambda c: service.put_channel(
            c, clock, "ch", "b", "PL", [domain.Source("wh", 1), domain.Source("st", 2)]
        ),
    )
    for sku, location in (("A", "wh"), ("B", "wh"), ("B", "st")):
        await in_tx(
            pool_,
            lambda c, s=sku, loc=location: service.adjust_stock(
                c, clock, sku=s, location_id=loc, quantity=5, reason="receipt"
            ),
        )
    await in_tx(
        pool_,
        lambda c: service.reserve(
            c, clock, channel_id="ch", lines=[("A", 2), ("B", 2)], client_id="x"
        ),
    )

    async with pool_.acquire() as counting, pool_.acquire() as adjusting:
        async with counting.transaction():
            await service.count_stock(
                counting, clock, source="wms", sequence=1, sku="A", location_id="wh", on_hand=0
            )

            async def adjust_b() -> None:
                async with adjusting.transaction():
                    await service.adjust_stock(
                        adjusting, clock, sku="B", location_id="st", quantity=-3, reason="damage"
                    )

            other = asyncio.create_task(adjust_b())

            async def waiting_on_the_sku_lock() -> bool:
                waiting = await pool_.fetchval(
                    """SELECT count(*) FROM pg_stat_activity WHERE application_name = $1
                       AND wait_event_type = 'Lock' AND wait_event = 'advisory'""",
                    f"omnistock-{schema}",
                )
                return bool(waiting)

            await wait_for(waiting_on_the_sku_lock, 10, what="B's writer to wait for B's lock")
        await other

    channel = await in_tx(pool_, lambda c: repository.channel(c, "ch"))
    levels = await in_tx(pool_, lambda c: repository.levels(c, ["B"]))
    published = await pool_.fetchval(
        "SELECT available FROM availability WHERE channel_id = 'ch' AND sku = 'B'"
    )
    assert published == domain.channel_available("B", channel.sources, levels, None) == 7
