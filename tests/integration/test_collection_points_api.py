"""Collection points over HTTP on the real database and broker, the app served in this process
with a manual clock: nearest-first search, opening hours in each point's own time zone, bad
input, a parcel's life and its events, and customers kept apart."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from omnistock.collection_points.api import build_app
from omnistock.collection_points.domain import DAYS, Position, distance_m
from omnistock.collection_points.settings import CollectionPointsSettings
from omnistock.contracts.collection_points import PARCELS, PICKUP_CODES, SLOTS, TOPICS
from omnistock.platform import db, events, kafka
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    end_offsets,
    read_topic_to_end,
    served,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
ADMIN, READ = "collection-points:admin", "collection-points:read"
BOOK, PARCELS_SCOPE = "collection-points:book", "collection-points:parcels"
STAFF = [ADMIN, READ, BOOK, PARCELS_SCOPE]
CENTER = ("52.229676", "21.012229")  # Warsaw, Palace of Culture
ALWAYS = {day: [{"opens": "00:00", "closes": "24:00"}] for day in DAYS}


# -- fixtures and helpers, shared by the other collection-points test modules --


@asynccontextmanager
async def fresh_schema(settings: Settings) -> AsyncIterator[str]:
    """A schema with the service's tables, and its topics (which nothing else creates when the
    tests run on a fresh broker)."""
    await asyncio.to_thread(kafka.ensure_topics, settings, TOPICS)
    schema = await create_service_schema(
        settings, "collection-points", "omnistock.collection_points"
    )
    try:
        yield schema
    finally:
        await drop_schema(settings, schema)


@asynccontextmanager
async def look_at(settings: Settings, schema: str) -> AsyncIterator[asyncpg.Pool]:
    """Our own look at the service's tables."""
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


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


def service(
    settings: Settings,
    clock: ManualClock,
    schema: str,
    scopes: list[str] = STAFF,
    subject: str = "staff-1",
    own: CollectionPointsSettings | None = None,
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The service, served in this process (pool, relay, expiry job) until the block ends."""
    app = build_app(settings, clock, schema=schema, own=own or CollectionPointsSettings())
    return served(app, bearer(settings, subject, scopes))


def key() -> dict[str, str]:
    return {"Idempotency-Key": unique("key")}


def point_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "locker",
        "market": "PL",
        "name": "Locker",
        "address": {"street": "Marszałkowska 1", "postcode": "00-001", "city": "Warszawa"},
        "position": {"latitude": CENTER[0], "longitude": CENTER[1]},
        "time_zone": "Europe/Warsaw",
        "opening_hours": {"weekly": ALWAYS},
        "capabilities": ["pickup"],
        "capacity": 10,
    }
    body.update(changes)
    return body


async def put_point(client: httpx.AsyncClient, point_id: str, **changes: Any) -> dict[str, Any]:
    response = await client.put(f"/v1/points/{point_id}", json=point_body(**changes), headers=key())
    assert response.status_code in (200, 201), response.text
    point: dict[str, Any] = response.json()
    return point


async def book(
    client: httpx.AsyncClient, point_id: str, order_id: str | None = None, customer: str = "alice"
) -> httpx.Response:
    return await client.post(
        f"/v1/points/{point_id}/bookings",
        json={"order_id": order_id or unique("order"), "customer_id": customer},
        headers=key(),
    )


async def booked(
    client: httpx.AsyncClient, point_id: str, customer: str = "alice"
) -> dict[str, Any]:
    response = await book(client, point_id, customer=customer)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def arrive(client: httpx.AsyncClient, booking_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/bookings/{booking_id}/arrive", json=body, headers=key())
    assert response.status_code == 200, response.text
    arrived: dict[str, Any] = response.json()
    return arrived


async def published(
    settings: Settings, pool: asyncpg.Pool, topic: str, start: dict[int, int]
) -> list[tuple[bytes, events.Event[Any]]]:
    """(key, event) of what reached ``topic`` since ``start``, once the outbox is empty."""
    await wait_for(
        lambda: pool.fetchval("SELECT NOT EXISTS (SELECT FROM outbox)"), 20, what="the relay"
    )
    messages = await asyncio.to_thread(read_topic_to_end, settings, topic, 20, start)
    decoded = [(m.key(), events.decode(m.value())) for m in messages]
    return [(k, e) for k, e in decoded if e is not None]


async def offsets(settings: Settings) -> dict[str, dict[int, int]]:
    return {spec.name: await asyncio.to_thread(end_offsets, settings, spec.name) for spec in TOPICS}


# -- search --


async def test_search_is_nearest_first_with_distances_and_pages_without_repeats(
    settings: Settings, clock: ManualClock, schema: str
) -> None:
    rng = random.Random(52)
    center = Position.from_degrees(Decimal(CENTER[0]), Decimal(CENTER[1]))
    expected: dict[str, float] = {}
    async with service(settings, clock, schema) as client:
        for n in range(24):
            latitude = Decimal(center.latitude_e6 + rng.randint(-60_000, 60_000)).scaleb(-6)
            longitude = Decimal(center.longitude_e6 + rng.randint(-90_000, 90_000)).scaleb(-6)
            point_id = f"waw-{n:02d}"
            kind = "store" if n % 4 == 0 else "locker"
            await put_point(
                client,
                point_id,
                kind=kind,
                capacity=None if kind == "store" else 5,
                position={"latitude": str(latitude), "longitude": str(longitude)},
            )
            expected[point_id] = distance_m(center, Position.from_degrees(latitude, longitude))
        # Near, but not to be found: another market, withdrawn, beyond the radius.
        await put_point(client, "cz-near", market="CZ")
        await put_point(client, "withdrawn", active=False)
        await put_point(client, "krakow", position={"latitude": 50.06465, "longitude": 19.94498})

        radius = 6_000
        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {
                "market": "PL",
                "latitude": CENTER[0],
                "longitude": CENTER[1],
                "radius_m": radius,
                "limit": 4,
            }
            if cursor:
                params["cursor"] = cursor
            response = await client.get("/v1/points", params=params)
            assert response.status_code == 200, response.text
            pages.append(response.json()["points"])
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
        found = [p for page in pages for p in page]
        within = {k: v for k, v in expected.items() if round(v) <= radius}
        assert 8 < len(within) < len(expected), "the random layout should straddle the radius"
        assert [p["point_id"] for p in found] == sorted(within, key=lambda k: (round(within[k]), k))
        for point in found:
            assert abs(point["distance_m"] - within[point["point_id"]]) <= 1
        assert all(len(page) == 4 for page in pages[:-1])
        assert {p["market"] for p in found} == {"PL"}

        stores = await client.get(
            "/v1/points",
            params={
                "market": "PL",
                "latitude": CENTER[0],
                "longitude": CENTER[1],
                "radius_m": radius,
                "kind": "store",
                "limit": 50,
            },
        )
        near_stores = [k for k in within if int(k[-2:]) % 4 == 0]
        assert [p["point_id"] for p in stores.json()["points"]] == sorted(
            near_stores, key=lambda k: (round(within[k]), k)
        )
        # Without a position: the whole market by id, page after page.
        ids, cursor = [], None
        while True:
            params = {"market": "PL", "limit": 5, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/points", params=params)).json()
            assert all("distance_m" not in p for p in page["points"])
            ids += [p["point_id"] for p in page["points"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert ids == sorted([*expected, "krakow"])


async def test_full_lockers_drop_out_of_a_search_for_free_slots(
    settings: Settings, clock: ManualClock, schema: str
) -> None:
    async with service(settings, clock, schema) as client:
        await put_point(client, "tiny", capacity=1)
        await put_point(
            client, "roomy", capacity=3, position={"latitude": "52.23", "longitude": "21.02"}
        )
        await booked(client, "tiny")
        params = {"market": "PL", "latitude": CENTER[0], "longitude": CENTER[1]}
        everything = (await client.get("/v1/points", params=params)).json()["points"]
        assert [(p["point_id"], p["free"]) for p in everything] == [("tiny", 0), ("roomy", 3)]
        free = (
            await client.get("/v1/points", params={**params, "with_free_slots": "true"})
        ).json()["points"]
        assert [p["point_id"] for p in free] == ["roomy"]


# -- opening hours --


async def test_open_now_is_computed_in_each_points_own_time_zone(
    settings: Settings, clock: ManualClock, schema: str
) -> None:
    """Two stores open 09:00-17:00 every day but Sunday, one in Warsaw, one in Lisbon, asked at
    the same instants: in winter, across the spring change of 29 March 2026, in summer."""
    nine_to_five = {
        "weekly": {day: [{"opens": "09:00", "closes": "17:00"}] for day in DAYS if day != "sun"}
    }
    async with service(settings, clock, schema) as client:
        await put_point(client, "warsaw", kind="store", opening_hours=nine_to_five)
        await put_point(
            client,
            "lisbon",
            kind="store",
            market="PT",
            time_zone="Europe/Lisbon",
            position={"latitude": "38.722252", "longitude": "-9.139337"},
            opening_hours=nine_to_five,
        )

        async def open_now(point_id: str) -> bool:
            response = await client.get(f"/v1/points/{point_id}")
            assert response.status_code == 200, response.text
            flag: bool = response.json()["open_now"]
            return flag

        cases = [
            ("2026-01-14T08:30", True, False),  # Warsaw 09:30 CET, Lisbon 08:30 WET
            ("2026-01-14T16:30", False, True),  # 17:30 / 16:30
            ("2026-03-27T07:30", False, False),  # Friday before the change: 08:30 / 07:30
            ("2026-03-28T16:30", False, True),  # Saturday: 17:30 CET / 16:30 WET
            ("2026-03-29T10:00", False, False),  # the Sunday of the change: closed
            ("2026-03-30T07:30", True, False),  # Monday after: 09:30 CEST / 08:30 WEST
            ("2026-03-30T15:30", False, True),  # 17:30 CEST / 16:30 WEST
            ("2026-07-01T14:59", True, True),  # summer: 16:59 CEST / 15:59 WEST
        ]
        for instant, in_warsaw, in_lisbon in cases:
            clock.set(datetime.fromisoformat(instant).replace(tzinfo=UTC))
            assert (await open_now("warsaw"), await open_now("lisbon")) == (in_warsaw, in_lisbon), (
                instant
            )
        clock.set(datetime(2026, 1, 14, 8, 30, tzinfo=UTC))
        listed = await client.get(
            "/v1/points", params={"market": "PT", "latitude": "38.72", "longitude": "-9.14"}
        )
        assert [(p["point_id"], p["open_now"]) for p in listed.json()["points"]] == [
            ("lisbon", False)
        ]


# -- bad input --


async def snapshot(pool: asyncpg.Pool) -> list[Any]:
    """Every row the service keeps, as it stands once the relay has sent what it had."""
    await wait_for(
        lambda: pool.fetchval("SELECT NOT EXISTS (SELECT FROM outbox)"), 20, what="the relay"
    )
    return [
        [dict(r) for r in await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
        for table in ("points", "bookings", "idempotency_keys")
    ]


async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    point_id = unique("p")
    async with service(settings, clock, schema) as client:
        refusals = [
            (point_body(time_zone="Europe/Atlantis"), "time_zone"),
            (point_body(capacity=None), "capacity"),
            (point_body(capacity=0), "capacity"),
            (point_body(capacity="7"), "capacity"),
            (point_body(market="Poland"), "market"),
            (point_body(kind="kiosk"), "kind"),
            (point_body(pickup_days=31), "pickup_days"),
            (point_body(capabilities=["pickup", "pickup"]), "capabilities"),
            (point_body(name=""), "name"),
            (point_body(surprise=1), "surprise"),
            (
                point_body(position={"latitude": "52.2296761", "longitude": "21"}),
                "position.latitude",
            ),
            (point_body(position={"latitude": 52, "longitude": 181}), "position.longitude"),
            (
                point_body(
                    opening_hours={"weekly": {"mon": [{"opens": "18:00", "closes": "09:00"}]}}
                ),
                "opening_hours.weekly.mon[0].closes",
            ),
            (
                point_body(
                    opening_hours={"weekly": {"mon": [{"opens": "9:00", "closes": "17:00"}]}}
                ),
                "opening_hours.weekly.mon[0].opens",
            ),
            (point_body(opening_hours={"weekly": {"monday": []}}), "opening_hours.weekly.monday"),
            (
                point_body(
                    opening_hours={
                        "weekly": ALWAYS,
                        "exceptions": [{"date": "2026-12-24", "hours": []}] * 2,
                    }
                ),
                "opening_hours.exceptions[1].date",
            ),
        ]

        async def refuse_all() -> None:
            for body, field in refusals:
                response = await client.put(f"/v1/points/{point_id}", json=body, headers=key())
                assert response.status_code == 422, (field, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert field in {e["field"] for e in response.json()["errors"]}, response.json()

        await refuse_all()
        no_key = await client.put(f"/v1/points/{point_id}", json=point_body())
        assert no_key.status_code == 400
        assert no_key.json()["errors"][0]["field"] == "header.Idempotency-Key"
        assert (await client.get(f"/v1/points/{point_id}")).status_code == 404
        assert await snapshot(pool) == [[], [], []]

        await put_point(client, point_id, capacity=2)
        first = await booked(client, point_id)
        second = await booked(client, point_id)
        await arrive(client, first["booking_id"], pickup_code="4711")
        before = await snapshot(pool)
        start = await offsets(settings)

        await refuse_all()
        shrink = await client.put(
            f"/v1/points/{point_id}", json=point_body(capacity=1), headers=key()
        )
        assert shrink.status_code == 409
        assert shrink.json()["errors"][0]["field"] == "capacity"
        full = await book(client, point_id)
        assert full.status_code == 409
        assert full.json()["errors"][0]["field"] == "point_id"
        search_refusals = [
            ({"market": "pl"}, "query.market"),
            ({"market": "PL", "latitude": "52.1"}, "query.longitude"),
            ({"market": "PL", "longitude": "21.1"}, "query.latitude"),
            ({"market": "PL", "latitude": "91", "longitude": "21"}, "query.latitude"),
            (
                {"market": "PL", "latitude": "52", "longitude": "21", "radius_m": 50_001},
                "query.radius_m",
            ),
            ({"market": "PL", "limit": 51}, "query.limit"),
            ({"market": "PL", "cursor": "not-a-cursor"}, "query.cursor"),
            ({"market": "PL", "kind": "kiosk"}, "query.kind"),
        ]
        for params, field in search_refusals:
            response = await client.get("/v1/points", params=params)
            assert response.status_code == 422, (field, response.text)
            assert response.json()["errors"][0]["field"] == field
        booking_refusals = [
            ({"order_id": "", "customer_id": "alice"}, "order_id"),
            ({"order_id": "o 1", "customer_id": "alice"}, "order_id"),
            ({"order_id": "o-1"}, "customer_id"),
        ]
        for body, field in booking_refusals:
            response = await client.post(
                f"/v1/points/{point_id}/bookings", json=body, headers=key()
            )
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["field"] == field
        unknown = await book(client, "nowhere")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        not_a_booking = await client.post("/v1/bookings/42/arrive", json={}, headers=key())
        assert not_a_booking.status_code == 422
        assert not_a_booking.json()["errors"][0]["field"] == "path.booking_id"
        wrong = await client.post(
            f"/v1/bookings/{first['booking_id']}/collect",
            json={"pickup_code": "4712"},
            headers=key(),
        )
        assert wrong.status_code == 422
        assert wrong.json()["errors"] == [{"field": "pickup_code", "message": "does not match"}]
        short = await client.post(
            f"/v1/bookings/{first['booking_id']}/collect", json={"pickup_code": "47"}, headers=key()
        )
        assert short.json()["errors"][0]["field"] == "pickup_code"
        release_arrived = await client.post(
            f"/v1/bookings/{first['booking_id']}/release", headers=key()
        )
        assert release_arrived.status_code == 409
        assert release_arrived.json()["errors"][0]["field"] == "status"
        assert await snapshot(pool) == before
        ours = {point_id.encode(), first["order_id"].encode(), second["order_id"].encode()}
        for spec in TOPICS:
            sent = await published(settings, pool, spec.name, start[spec.name])
            assert [e.type for k, e in sent if k in ours] == [], "a refusal publishes nothing"


# -- a parcel's life --


async def test_a_parcel_arrives_is_collected_and_its_events_carry_no_code_but_to_customer_sync(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    start = await offsets(settings)
    point_id = unique("locker")
    async with service(settings, clock, schema) as client:
        await put_point(client, point_id, capacity=3, pickup_days=2)
        booking = await booked(client, point_id, customer="alice")
        assert booking["status"] == "booked"
        assert "pickup_code" not in booking
        arrived = await arrive(client, booking["booking_id"])
        code = arrived["pickup_code"]
        assert len(code) == 8
        assert code.isdigit()
        assert arrived["collect_by"] == "2026-11-29T12:00:00+00:00"
        collect = await client.post(
            f"/v1/bookings/{booking['booking_id']}/collect",
            json={"pickup_code": code},
            headers=key(),
        )
        assert collect.status_code == 200, collect.text
        assert collect.json()["status"] == "collected"
        again = await client.post(
            f"/v1/bookings/{booking['booking_id']}/collect",
            json={"pickup_code": code},
            headers=key(),
        )
        assert again.status_code == 409
        assert (await client.get(f"/v1/points/{point_id}")).json()["free"] == 3
        slots = await published(settings, pool, SLOTS.name, start[SLOTS.name])
        parcels = await published(settings, pool, PARCELS.name, start[PARCELS.name])
        codes = await published(settings, pool, PICKUP_CODES.name, start[PICKUP_CODES.name])

    order = booking["order_id"]
    mine = [(k, e) for k, e in slots if e.subject == point_id]
    assert {k for k, _ in mine} == {point_id.encode()}
    assert [(e.type.split(".")[2], e.aggregate_version, e.data.free) for _, e in mine] == [
        ("slot-booked", 1, 2),
        ("slot-released", 2, 3),
    ]
    assert mine[1][1].data.reason == "collected"
    ours = [(k, e) for k, e in parcels if e.correlation_id == order]
    assert {k for k, _ in ours} == {order.encode()}
    assert [(e.type.split(".")[2], e.aggregate_version) for _, e in ours] == [
        ("parcel-arrived", 2),
        ("parcel-collected", 3),
    ]
    arrived_event = ours[0][1]
    assert arrived_event.data.customer_id == "alice"
    assert arrived_event.data.collect_by == "2026-11-29T12:00:00+00:00"
    assert code not in str(arrived_event.data), "the parcels topic carries no pickup code"
    (issued,) = [e for k, e in codes if e.correlation_id == order]
    assert issued.data.pickup_code == code
    assert issued.data.customer_id == "alice"


async def test_a_repeated_booking_is_done_once_and_an_order_holds_one_slot(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    async with service(settings, clock, schema) as client:
        await put_point(client, "a", capacity=5)
        await put_point(client, "b", capacity=5)
        body = {"order_id": "order-1", "customer_id": "alice"}
        same_key = key()
        first = await client.post("/v1/points/a/bookings", json=body, headers=same_key)
        repeat = await client.post("/v1/points/a/bookings", json=body, headers=same_key)
        assert first.status_code == repeat.status_code == 201
        assert repeat.json() == first.json()
        assert repeat.headers["idempotent-replayed"] == "true"
        assert (await client.get("/v1/points/a")).json()["occupied"] == 1

        elsewhere = await client.post("/v1/points/b/bookings", json=body, headers=key())
        assert elsewhere.status_code == 409
        assert elsewhere.json()["type"].endswith("order-has-booking")
        assert elsewhere.json()["booking_id"] == first.json()["booking_id"]
        assert elsewhere.json()["errors"][0]["field"] == "order_id"
        assert (await client.get("/v1/points/b")).json()["occupied"] == 0

        released = await client.post(
            f"/v1/bookings/{first.json()['booking_id']}/release", headers=key()
        )
        assert released.status_code == 200, released.text
        assert released.json()["status"] == "released"
        moved = await client.post("/v1/points/b/bookings", json=body, headers=key())
        assert moved.status_code == 201, moved.text
        assert (await client.get("/v1/points/a")).json()["occupied"] == 0
        assert (await client.get("/v1/points/b")).json()["occupied"] == 1
        live = await pool.fetchval(
            "SELECT count(*) FROM bookings WHERE status IN ('booked', 'arrived')"
        )
        assert live == 1


# -- customers --


async def test_a_customer_reads_only_its_own_parcel_and_code(
    settings: Settings, clock: ManualClock, schema: str
) -> None:
    async with service(settings, clock, schema) as staff:
        await put_point(staff, "l-1")
        alices = await booked(staff, "l-1", customer="alice")
        bobs = await booked(staff, "l-1", customer="bob")
        code = (await arrive(staff, alices["booking_id"]))["pickup_code"]
        await arrive(staff, bobs["booking_id"])
        as_staff = (await staff.get(f"/v1/bookings/{alices['booking_id']}")).json()
        assert "pickup_code" not in as_staff, "only the customer reads its code back"

        alice = bearer(settings, "alice", ["customer"])
        mine = await staff.get(f"/v1/bookings/{alices['booking_id']}", headers=alice)
        assert mine.status_code == 200, mine.text
        assert mine.json()["pickup_code"] == code
        theirs = await staff.get(f"/v1/bookings/{bobs['booking_id']}", headers=alice)
        nobodys = await staff.get(
            "/v1/bookings/00000000-0000-4000-8000-000000000000", headers=alice
        )
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json()["title"] == nobodys.json()["title"]
        assert bobs["order_id"] not in theirs.text
        listed = await staff.get(
            "/v1/bookings", params={"order_id": bobs["order_id"]}, headers=alice
        )
        assert listed.status_code == 200
        assert listed.json()["bookings"] == []
        own_list = await staff.get("/v1/bookings", params={"point_id": "l-1"}, headers=alice)
        assert [(b["booking_id"], b["pickup_code"]) for b in own_list.json()["bookings"]] == [
            (alices["booking_id"], code)
        ]
        for method, path, body in [
            ("POST", "/v1/points/l-1/bookings", {"order_id": "o-9", "customer_id": "alice"}),
            ("POST", f"/v1/bookings/{alices['booking_id']}/collect", {"pickup_code": code}),
            ("POST", f"/v1/bookings/{bobs['booking_id']}/release", None),
            ("PUT", "/v1/points/l-1", point_body()),
        ]:
            refused = await staff.request(method, path, json=body, headers={**alice, **key()})
            assert refused.status_code == 403, (method, path)
        assert (await staff.get(f"/v1/bookings/{alices['booking_id']}")).json()["status"] == (
            "arrived"
        )
