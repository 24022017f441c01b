"""The reservation sweeper, running inside the app, driven by a manual clock.

The app is served in this process with its real lifespan (pool, outbox relay, sweeper) against
the real PostgreSQL and Kafka; only time is ours to move.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from omnistock.contracts.inventory import RESERVATIONS  # registers every event type
from omnistock.inventory import domain, fulfilment, service
from omnistock.inventory.api import build_app
from omnistock.platform import db, events
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    end_offsets,
    read_topic_to_end,
    reserved_units,
    served,
    stocked_channel,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

SWEEP_INTERVAL_S = 0.05
SCOPES = [
    "inventory:admin",
    "inventory:read",
    "inventory:write",
    "inventory:reserve",
    "inventory:allocate",
]


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    schema = await create_service_schema(settings, "inventory", "omnistock.inventory")
    yield schema
    await drop_schema(settings, schema)


@pytest.fixture
async def pool(settings: Settings, schema: str) -> AsyncIterator[asyncpg.Pool]:
    """Our own look at the service's tables."""
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    # Read by build_app: the sweeper looks for due reservations every 50 ms.
    monkeypatch.setenv("OMNISTOCK_INVENTORY_SWEEP_INTERVAL_S", str(SWEEP_INTERVAL_S))
    return ManualClock(datetime.now(UTC))


def inventory(
    settings: Settings, clock: ManualClock, schema: str
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The inventory app, served in this process until the block ends."""
    app = build_app(settings, clock, schema=schema)
    return served(app, bearer(settings, "storefront", SCOPES))


async def reserve(client: httpx.AsyncClient, channel: str, sku: str, quantity: int) -> str:
    response = await client.post(
        "/v1/reservations",
        json={
            "channel_id": channel,
            "lines": [{"sku": sku, "quantity": quantity}],
            "ttl_seconds": 60,
        },
        headers={"Idempotency-Key": unique("key")},
    )
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["reservation_id"]
    return reservation_id


async def status_of(client: httpx.AsyncClient, reservation_id: str) -> str:
    response = await client.get(f"/v1/reservations/{reservation_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def available(client: httpx.AsyncClient, channel: str, sku: str) -> int:
    response = await client.get(f"/v1/channels/{channel}/availability", params={"skus": sku})
    figure: int = response.json()["available"][sku]
    return figure


async def published(pool: asyncpg.Pool, channel: str, sku: str) -> int | None:
    """The figure the service last published (its availability table)."""
    figure: int | None = await pool.fetchval(
        "SELECT available FROM availability WHERE channel_id = $1 AND sku = $2", channel, sku
    )
    return figure


async def sweeps_pass() -> None:
    """Long enough for the running sweeper to have looked several times."""
    await asyncio.sleep(SWEEP_INTERVAL_S * 8)


async def wait_expired(client: httpx.AsyncClient, reservation_id: str) -> None:
    async def expired() -> bool:
        return await status_of(client, reservation_id) == "expired"

    await wait_for(expired, 5, what="the sweeper to expire the reservation")


def released_events(settings: Settings, reservation_id: str, start: dict[int, int]) -> list[Any]:
    decoded = [
        events.decode(m.value())
        for m in read_topic_to_end(settings, RESERVATIONS.name, 10, start)
        if m.key() == reservation_id.encode()
    ]
    return [e for e in decoded if e is not None and e.type.endswith("reservation-released.v1")]


async def test_the_running_sweeper_expires_a_reservation_once_its_ttl_has_passed(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    sku = unique("TTL")
    # Only what this test publishes: the shared topic may hold much more.
    start = await asyncio.to_thread(end_offsets, settings, RESERVATIONS.name)
    async with inventory(settings, clock, schema) as client:
        channel = await stocked_channel(client, sku, 5)
        reservation_id = await reserve(client, channel, sku, 3)
        assert await available(client, channel, sku) == 2

        clock.advance(timedelta(seconds=59))
        await sweeps_pass()
        assert await status_of(client, reservation_id) == "active"
        assert await reserved_units(client, sku) == 3

        clock.advance(timedelta(seconds=2))
        await wait_expired(client, reservation_id)
        assert await reserved_units(client, sku) == 0
        assert await available(client, channel, sku) == 5
        assert await published(pool, channel, sku) == 5

        async def released_as_expired() -> list[Any]:
            return await asyncio.to_thread(released_events, settings, reservation_id, start)

        (released,) = await wait_for(released_as_expired, 20, what="ReservationReleased")
        assert released.data.reason == "expired"
        assert [(line.sku, line.quantity) for line in released.data.lines] == [(sku, 3)]


async def test_extending_moves_the_expiry_and_an_expired_reservation_cannot_be_extended(
    settings: Settings, clock: ManualClock, schema: str
) -> None:
    sku = unique("EXT")
    async with inventory(settings, clock, schema) as client:
        channel = await stocked_channel(client, sku, 5)
        reservation_id = await reserve(client, channel, sku, 2)
        clock.advance(timedelta(seconds=30))
        extended = await client.post(
            f"/v1/reservations/{reservation_id}/extend", json={"ttl_seconds": 120}
        )
        assert extended.status_code == 200, extended.text
        new_expiry = clock.now() + timedelta(seconds=120)
        assert datetime.fromisoformat(extended.json()["expires_at"]) == new_expiry
        got = (await client.get(f"/v1/reservations/{reservation_id}")).json()
        assert datetime.fromisoformat(got["expires_at"]) == new_expiry

        clock.advance(timedelta(seconds=60))  # past the first TTL, well before the new one
        await sweeps_pass()
        assert await status_of(client, reservation_id) == "active"
        assert await reserved_units(client, sku) == 2

        clock.advance(timedelta(seconds=61))  # past the new one
        await wait_expired(client, reservation_id)
        refused = await client.post(
            f"/v1/reservations/{reservation_id}/extend", json={"ttl_seconds": 120}
        )
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("invalid-transition")
        assert await status_of(client, reservation_id) == "expired"
        assert await reserved_units(client, sku) == 0


async def test_releasing_a_committed_reservation_is_refused_and_changes_nothing(
    settings: Settings, clock: ManualClock, schema: str
) -> None:
    sku = unique("COMMITTED")
    async with inventory(settings, clock, schema) as client:
        channel = await stocked_channel(client, sku, 5)
        reservation_id = await reserve(client, channel, sku, 2)
        committed = await client.post(
            f"/v1/reservations/{reservation_id}/commit", json={"order_id": unique("order")}
        )
        assert committed.status_code == 200, committed.text

        refused = await client.delete(f"/v1/reservations/{reservation_id}")
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"].endswith("invalid-transition")
        assert problem["status"] == 409
        assert await status_of(client, reservation_id) == "committed"
        (level,) = (await client.get(f"/v1/stock/{sku}")).json()["locations"]
        assert (level["on_hand"], level["reserved"], level["allocated"]) == (5, 0, 2)
        # A committed reservation is past the sweeper's reach: time changes nothing.
        clock.advance(timedelta(hours=3))
        await sweeps_pass()
        assert await status_of(client, reservation_id) == "committed"


async def test_a_restarted_service_expires_what_came_due_while_it_was_down(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    sku = unique("RESTART")
    async with inventory(settings, clock, schema) as client:
        channel = await stocked_channel(client, sku, 4)
        reservation_id = await reserve(client, channel, sku, 4)
        await sweeps_pass()
        assert await status_of(client, reservation_id) == "active"

    clock.advance(timedelta(seconds=61))  # due while no sweeper runs
    await asyncio.sleep(SWEEP_INTERVAL_S * 8)
    status = "SELECT status FROM reservations WHERE reservation_id = $1"
    assert await pool.fetchval(status, uuid.UUID(reservation_id)) == "active"
    async with inventory(settings, clock, schema) as client:
        await wait_expired(client, reservation_id)
        assert await reserved_units(client, sku) == 0
        assert await available(client, channel, sku) == 4
        assert await published(pool, channel, sku) == 4


async def test_a_reservation_past_its_ttl_cannot_be_committed_even_before_the_sweep(
    clock: ManualClock, pool: asyncpg.Pool
) -> None:
    """Commit and extend agree: past its TTL a reservation is gone, swept or not."""
    async with pool.acquire() as conn, conn.transaction():
        await service.put_location(conn, "wh", "warehouse", "PL", ["ship"], "wh")
        await service.put_channel(conn, clock, "late", "b", "PL", [domain.Source("wh", 1)])
        await service.adjust_stock(
            conn, clock, sku="LATE", location_id="wh", quantity=3, reason="receipt"
        )
        view = await service.reserve(
            conn,
            clock,
            channel_id="late",
            lines=[("LATE", 1)],
            client_id="web",
            ttl=timedelta(seconds=60),
        )
    clock.advance(timedelta(seconds=61))  # no sweeper runs here
    async with pool.acquire() as conn:
        with pytest.raises(domain.InvalidTransition, match="expired"):
            async with conn.transaction():
                await fulfilment.commit(conn, clock, view["reservation_id"], "order-late")
    assert await pool.fetchval("SELECT count(*) FROM allocations") == 0
    assert await pool.fetchval("SELECT reserved FROM stock WHERE sku = 'LATE'") == 1
