"""The expiry job running inside the app, driven by a manual clock: a parcel not collected
within its point's days (or the service's default) expires, its slot is freed, and
``parcel-expired`` reaches Kafka for the order to take the parcel back. Only time is ours to
move; nothing sleeps for days."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import pytest

from omnistock.collection_points.settings import CollectionPointsSettings
from omnistock.contracts.collection_points import PARCELS, SLOTS
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import bearer, unique, wait_for
from tests.integration.test_collection_points_api import (
    T0,
    arrive,
    booked,
    fresh_schema,
    key,
    look_at,
    offsets,
    published,
    put_point,
    service,
)

pytestmark = pytest.mark.integration

EXPIRY_INTERVAL_S = 0.05
QUICK = CollectionPointsSettings(expiry_interval_s=EXPIRY_INTERVAL_S, pickup_days=5)


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    async with fresh_schema(settings) as schema:
        yield schema


@pytest.fixture
async def pool(settings: Settings, schema: str) -> AsyncIterator[asyncpg.Pool]:
    async with look_at(settings, schema) as pool:
        yield pool


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


async def status_of(client: httpx.AsyncClient, booking_id: str) -> str:
    response = await client.get(f"/v1/bookings/{booking_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def free_slots(client: httpx.AsyncClient, point_id: str) -> int:
    free: int = (await client.get(f"/v1/points/{point_id}")).json()["free"]
    return free


async def jobs_pass() -> None:
    """Long enough for the running job to have looked several times."""
    await asyncio.sleep(EXPIRY_INTERVAL_S * 8)


async def test_an_uncollected_parcel_expires_after_its_points_days_and_goes_back(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    start = await offsets(settings)
    point_id = unique("locker")
    async with service(settings, clock, schema, own=QUICK) as client:
        await put_point(client, point_id, capacity=2, pickup_days=2)
        booking = await booked(client, point_id, customer="alice")
        booking_id = booking["booking_id"]
        arrival = clock.now()
        code = (await arrive(client, booking_id))["pickup_code"]
        assert await free_slots(client, point_id) == 1

        clock.advance(timedelta(days=2) - timedelta(seconds=1))
        await jobs_pass()
        assert await status_of(client, booking_id) == "arrived"
        assert await free_slots(client, point_id) == 1

        clock.advance(timedelta(seconds=1))

        async def expired() -> bool:
            return await status_of(client, booking_id) == "expired"

        await wait_for(expired, 5, what="the job to expire the parcel")
        assert await free_slots(client, point_id) == 2
        late = await client.post(
            f"/v1/bookings/{booking_id}/collect", json={"pickup_code": code}, headers=key()
        )
        assert late.status_code == 409
        assert late.json()["errors"][0]["field"] == "status"
        alice = bearer(settings, "alice", ["customer"])
        mine = (await client.get(f"/v1/bookings/{booking_id}", headers=alice)).json()
        assert mine["pickup_code"] is None, "an expired parcel's code is forgotten"
        parcels = await published(settings, pool, PARCELS.name, start[PARCELS.name])
        slots = await published(settings, pool, SLOTS.name, start[SLOTS.name])

    order = booking["order_id"]
    ours = [e for k, e in parcels if k == order.encode()]
    assert [e.type for e in ours] == [
        "omnistock.collection-points.parcel-arrived.v1",
        "omnistock.collection-points.parcel-expired.v1",
    ]
    gone = ours[1]
    assert gone.subject == booking_id
    assert gone.aggregate_version == 3
    assert gone.correlation_id == order
    assert gone.data.disposition == "return_to_sender"
    assert gone.data.customer_id == "alice"
    assert gone.data.arrived_at == arrival.isoformat()
    assert gone.data.collect_by == (arrival + timedelta(days=2)).isoformat()
    assert gone.data.expired_at >= gone.data.collect_by
    assert code not in str(gone.data)
    freed = [e for k, e in slots if k == point_id.encode()][-1]
    assert (freed.data.reason, freed.data.free, freed.aggregate_version) == ("expired", 2, 2)


async def test_the_default_days_apply_where_a_point_sets_none_and_collected_parcels_never_expire(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    point_id = unique("store")
    async with service(settings, clock, schema, own=QUICK) as client:
        await put_point(client, point_id, kind="store", capacity=None)
        waiting = await booked(client, point_id)
        collected = await booked(client, point_id)
        await arrive(client, waiting["booking_id"])
        code = (await arrive(client, collected["booking_id"]))["pickup_code"]
        response = await client.post(
            f"/v1/bookings/{collected['booking_id']}/collect",
            json={"pickup_code": code},
            headers=key(),
        )
        assert response.status_code == 200, response.text

        clock.advance(timedelta(days=5) - timedelta(minutes=1))
        await jobs_pass()
        assert await status_of(client, waiting["booking_id"]) == "arrived"

        clock.advance(timedelta(days=30))

        async def expired() -> bool:
            return await status_of(client, waiting["booking_id"]) == "expired"

        await wait_for(expired, 5, what="the job to expire the parcel")
        assert await status_of(client, collected["booking_id"]) == "collected"
        point = (await client.get(f"/v1/points/{point_id}")).json()
        assert (point["occupied"], point["free"]) == (0, None)
    assert await pool.fetchval("SELECT count(*) FROM bookings WHERE status = 'expired'") == 1
