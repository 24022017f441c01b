"""Slot booking under real concurrency: a server process of its own (``omnistock serve
collection-points``), PostgreSQL and Kafka, and a hundred HTTP requests at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from omnistock.contracts.collection_points import SLOTS, TOPICS
from omnistock.platform import db, events, kafka
from omnistock.platform.auth import mint_token
from omnistock.platform.outbox import OutboxRelay
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    create_service_schema,
    drop_schema,
    end_offsets,
    free_port,
    read_topic_to_end,
    serve,
    unique,
    wait_for,
    wait_ready,
)
from tests.integration.test_collection_points_api import point_body

pytestmark = pytest.mark.integration

STAFF = ["collection-points:admin", "collection-points:read", "collection-points:parcels"]
BOOK = "collection-points:book"


@dataclass
class Server:
    settings: Settings
    schema: str
    base_url: str

    def client(self, *scopes: str, subject: str = "staff") -> httpx.AsyncClient:
        token = mint_token(self.settings, subject, list(scopes))
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[Server]:
    kafka.ensure_topics(settings, TOPICS)
    schema = asyncio.run(
        create_service_schema(settings, "collection-points", "omnistock.collection_points")
    )
    port = free_port()
    process = serve("collection-points", schema, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(base_url))
        yield Server(settings, schema, base_url)
    finally:
        process.terminate()
        process.wait(30)
        asyncio.run(drop_schema(settings, schema))


@pytest.fixture
async def staff(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client(*STAFF) as client:
        yield client


@pytest.fixture
async def pool(server: Server) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(server.settings.database_url, server.schema, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def put_point(client: httpx.AsyncClient, point_id: str, **changes: Any) -> None:
    response = await client.put(
        f"/v1/points/{point_id}",
        json=point_body(**changes),
        headers={"Idempotency-Key": unique("key")},
    )
    assert response.status_code == 201, response.text


async def rush(
    server: Server, point_id: str, orders: list[str], clients: int = 4
) -> list[httpx.Response]:
    """Book a slot of ``point_id`` for every order at once, over several connections pools
    (as several replicas of the order system would)."""
    pools = [server.client(BOOK, subject="orders") for _ in range(clients)]
    try:
        return list(
            await asyncio.gather(
                *(
                    pools[n % clients].post(
                        f"/v1/points/{point_id}/bookings",
                        json={"order_id": order, "customer_id": f"customer-{n}"},
                        headers={"Idempotency-Key": str(uuid.uuid4())},
                    )
                    for n, order in enumerate(orders)
                )
            )
        )
    finally:
        for client in pools:
            await client.aclose()


async def live_bookings(pool: asyncpg.Pool, point_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM bookings WHERE point_id = $1 AND status IN ('booked', 'arrived')",
        point_id,
    )
    return count


async def test_100_concurrent_bookings_of_a_locker_with_7_slots_book_exactly_7(
    server: Server, staff: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    locker, next_door, far = unique("rush"), unique("next-door"), unique("far")
    await put_point(staff, locker, capacity=7)
    # About 300 m away and with room: offered instead. Another one 60 km away is not.
    await put_point(
        staff, next_door, capacity=3, position={"latitude": "52.232376", "longitude": "21.012229"}
    )
    await put_point(staff, far, capacity=3, position={"latitude": "52.769676", "longitude": "21"})
    start = await asyncio.to_thread(end_offsets, server.settings, SLOTS.name)

    orders = [unique("order") for _ in range(100)]
    responses = await rush(server, locker, orders)

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 7, statuses
    assert statuses.count(409) == 93, statuses
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"] == "urn:omnistock:problem:no-free-slot"
        assert (problem["point_id"], problem["capacity"], problem["free"]) == (locker, 7, 0)
        assert problem["errors"] == [{"field": "point_id", "message": "no free slot"}]
        assert [(a["point_id"], a["free"]) for a in problem["alternatives"]] == [(next_door, 3)]
        assert 250 < problem["alternatives"][0]["distance_m"] < 350
    booked_orders = {r.json()["order_id"] for r in responses if r.status_code == 201}
    assert len(booked_orders) == 7
    point = (await staff.get(f"/v1/points/{locker}")).json()
    assert (point["occupied"], point["free"], point["slots_version"]) == (7, 0, 7)
    assert await live_bookings(pool, locker) == 7
    assert await pool.fetchval(
        "SELECT occupied FROM points WHERE point_id = $1", locker
    ) == await live_bookings(pool, locker)

    async def slot_events() -> list[events.Event[Any]] | None:
        messages = await asyncio.to_thread(
            read_topic_to_end, server.settings, SLOTS.name, 20, start
        )
        found = [events.decode(m.value()) for m in messages if m.key() == locker.encode()]
        booked = [e for e in found if e is not None]
        return booked if len(booked) >= 7 else None

    sent = await wait_for(slot_events, 30, what="seven slot-booked events")
    assert len(sent) == 7
    assert sorted(e.aggregate_version for e in sent) == list(range(1, 8))
    assert sorted(e.data.occupied for e in sent) == list(range(1, 8))
    assert {e.data.order_id for e in sent} == booked_orders
    assert {e.type for e in sent} == {"omnistock.collection-points.slot-booked.v1"}

    # Once answered no transaction is left open and no lock held, but the relay's leadership.
    leader = OutboxRelay(server.settings, server.schema).lock_key
    leaked = await pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity a LEFT JOIN pg_locks l USING (pid)
           WHERE a.application_name = $2 AND a.pid <> pg_backend_pid()
             AND (a.state = 'idle in transaction'
                  OR (l.locktype = 'advisory' AND l.objid::bigint <> $1))""",
        leader,
        f"omnistock-{server.schema}",
    )
    assert leaked == 0


async def test_slots_freed_during_a_rush_are_taken_once_each_and_never_beyond_capacity(
    server: Server, staff: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    locker = unique("churn")
    await put_point(staff, locker, capacity=5)
    first = await rush(server, locker, [unique("order") for _ in range(5)])
    assert [r.status_code for r in first] == [201] * 5
    async with server.client(BOOK, subject="orders") as orders:

        async def release(booking_id: str) -> httpx.Response:
            return await orders.post(
                f"/v1/bookings/{booking_id}/release", headers={"Idempotency-Key": unique("key")}
            )

        releases = asyncio.gather(*(release(r.json()["booking_id"]) for r in first[:3]))
        bookings = rush(server, locker, [unique("order") for _ in range(60)])
        released, booked = await asyncio.gather(releases, bookings)
    assert [r.status_code for r in released] == [200] * 3
    won = sum(1 for r in booked if r.status_code == 201)
    assert sum(1 for r in booked if r.status_code == 409) == 60 - won
    assert won <= 3
    point = (await staff.get(f"/v1/points/{locker}")).json()
    assert point["occupied"] == 2 + won <= 5
    assert await live_bookings(pool, locker) == point["occupied"]

    last = await rush(server, locker, [unique("order") for _ in range(40)])
    assert sum(1 for r in last if r.status_code == 201) == 3 - won
    assert await live_bookings(pool, locker) == 5
    assert (await staff.get(f"/v1/points/{locker}")).json()["free"] == 0


async def test_one_order_booked_at_once_at_many_points_holds_exactly_one_slot(
    server: Server, staff: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lockers = [unique("spread") for _ in range(5)]
    for locker in lockers:
        await put_point(staff, locker, capacity=10)
    order = unique("order")
    async with server.client(BOOK, subject="orders") as orders:
        answers = await asyncio.gather(
            *(
                orders.post(
                    f"/v1/points/{lockers[n % 5]}/bookings",
                    json={"order_id": order, "customer_id": "alice"},
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
                for n in range(30)
            )
        )
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 29, statuses
    assert {a.json()["type"] for a in answers if a.status_code == 409} == {
        "urn:omnistock:problem:order-has-booking"
    }
    taken = await pool.fetchval(
        "SELECT sum(occupied) FROM points WHERE point_id = ANY($1::text[])", lockers
    )
    assert taken == 1
