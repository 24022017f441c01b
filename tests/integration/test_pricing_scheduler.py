"""Scheduled price transitions are published exactly once, across restarts, on a moved clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.platform import db, events
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from omnistock.pricing import service
from omnistock.pricing.domain import PricingError
from tests.integration.conftest import create_service_schema, drop_schema

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    schema = await create_service_schema(settings, "pricing", "omnistock.pricing")
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
        await drop_schema(settings, schema)


async def published(pool: asyncpg.Pool) -> list[events.Event[object]]:
    rows = await pool.fetch("SELECT payload FROM outbox ORDER BY id")
    decoded = [events.decode(r["payload"]) for r in rows]
    return [e for e in decoded if e is not None]


async def scheduler_step(pool: asyncpg.Pool, clock: ManualClock) -> int:
    """One step of a freshly started scheduler: nothing but the tables carries over."""
    async with pool.acquire() as conn, conn.transaction():
        return await service.publish_due(conn, clock)


async def test_a_sale_is_published_once_at_its_start_and_once_at_its_end_across_restarts(
    pool: asyncpg.Pool,
) -> None:
    clock = ManualClock(T0)
    warsaw = timezone(timedelta(hours=1))
    async with pool.acquire() as conn, conn.transaction():
        await service.put_price_list(conn, "brand-pl", "PLN", 2300)
        await service.set_base_price(
            conn,
            clock,
            channel_id="brand-pl",
            sku="A",
            amount=19_999,
            valid_from=T0 - timedelta(days=60),
        )
        await service.schedule_sale(
            conn,
            clock,
            channel_id="brand-pl",
            sku="A",
            amount=14_999,
            starts_at=datetime(2026, 11, 28, 13, tzinfo=warsaw),  # 12:00 UTC, one day on
            ends_at=datetime(2026, 11, 30, 13, tzinfo=warsaw),
        )
    assert [e.data.effective for e in await published(pool)] == [19_999]  # type: ignore[attr-defined]

    clock.advance(timedelta(hours=23, minutes=59))
    assert await scheduler_step(pool, clock) == 0  # not yet
    clock.advance(timedelta(minutes=2))
    assert await scheduler_step(pool, clock) == 1
    assert await scheduler_step(pool, clock) == 0  # a restart mid-window publishes nothing twice
    start = (await published(pool))[-1].data
    assert (start.effective, start.regular, start.reduced, start.lowest_30d) == (  # type: ignore[attr-defined]
        14_999,
        19_999,
        True,
        19_999,
    )
    assert start.version == 2  # type: ignore[attr-defined]

    clock.advance(timedelta(days=3))  # down through the end of the sale: missed it
    assert await scheduler_step(pool, clock) == 1  # published at once on restart
    assert await scheduler_step(pool, clock) == 0
    end = (await published(pool))[-1].data
    assert (end.effective, end.reduced, end.lowest_30d, end.version) == (19_999, False, None, 3)  # type: ignore[attr-defined]
    assert len(await published(pool)) == 3


async def test_bad_input_names_the_field_and_writes_nothing(pool: asyncpg.Pool) -> None:
    clock = ManualClock(T0)
    async with pool.acquire() as conn, conn.transaction():
        await service.put_price_list(conn, "brand-cz", "CZK", 2100)
        await service.set_base_price(conn, clock, channel_id="brand-cz", sku="B", amount=50_000)
        await service.schedule_sale(
            conn,
            clock,
            channel_id="brand-cz",
            sku="B",
            amount=40_000,
            starts_at=T0 + timedelta(days=1),
            ends_at=T0 + timedelta(days=5),
        )
    before = await pool.fetchval("SELECT count(*) FROM outbox")
    async with pool.acquire() as conn:
        with pytest.raises(PricingError) as unknown:
            await service.put_price_list(conn, "brand-xx", "XYZ", 2000)
    assert unknown.value.field == "currency"
    for field, kwargs in (
        (
            "starts_at",
            {"starts_at": T0 + timedelta(days=4), "ends_at": T0 + timedelta(days=6), "amount": 1},
        ),
        (
            "ends_at",
            {"starts_at": T0 + timedelta(days=9), "ends_at": T0 + timedelta(days=8), "amount": 1},
        ),
        (
            "amount",
            {"starts_at": T0 + timedelta(days=9), "ends_at": T0 + timedelta(days=10), "amount": -5},
        ),
    ):
        async with pool.acquire() as conn:
            with pytest.raises(PricingError) as refused:
                async with conn.transaction():
                    await service.schedule_sale(
                        conn, clock, channel_id="brand-cz", sku="B", **kwargs
                    )
            assert refused.value.field == field
    with pytest.raises(PricingError) as negative:
        async with pool.acquire() as conn, conn.transaction():
            await service.set_base_price(conn, clock, channel_id="brand-cz", sku="B", amount=-1)
    assert negative.value.field == "amount"
    assert await pool.fetchval("SELECT count(*) FROM sales") == 1
    assert await pool.fetchval("SELECT count(*) FROM base_prices") == 1
    assert await pool.fetchval("SELECT count(*) FROM price_lists") == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == before


async def test_a_first_price_set_for_later_is_published_when_it_starts(
    pool: asyncpg.Pool,
) -> None:
    clock = ManualClock(T0)
    async with pool.acquire() as conn, conn.transaction():
        await service.put_price_list(conn, "brand-sk", "EUR", 2300)
        quote = await service.set_base_price(
            conn,
            clock,
            channel_id="brand-sk",
            sku="NEW",
            amount=4_999,
            valid_from=T0 + timedelta(days=1),
        )
    assert quote is None  # not on sale yet
    assert await published(pool) == []
    assert await scheduler_step(pool, clock) == 0
    clock.advance(timedelta(days=1))
    assert await scheduler_step(pool, clock) == 1
    assert await scheduler_step(pool, clock) == 0
    first = [e.data for e in await published(pool)]
    assert [(p.effective, p.version) for p in first] == [(4_999, 1)]  # type: ignore[attr-defined]
