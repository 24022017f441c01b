"""Inventory over HTTP against a real server process, PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from omnistock.platform import db
from omnistock.platform.auth import mint_token
from omnistock.platform.outbox import OutboxRelay
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    create_service_schema,
    drop_schema,
    free_port,
    read_topic,
    serve,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.integration

ADMIN = [
    "inventory:admin",
    "inventory:read",
    "inventory:write",
    "inventory:reserve",
    "inventory:allocate",
    "inventory:fulfil",
]


@dataclass
class Server:
    settings: Settings
    schema: str
    base_url: str

    def token(self, *scopes: str, subject: str = "storefront") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {mint_token(self.settings, subject, list(scopes or ADMIN))}"
        }


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[Server]:
    schema = asyncio.run(create_service_schema(settings, "inventory", "omnistock.inventory"))
    port = free_port()
    process = serve("inventory", schema, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(base_url))
        yield Server(settings, schema, base_url)
    finally:
        process.terminate()
        process.wait(30)
        asyncio.run(drop_schema(settings, schema))


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.token(), timeout=30) as c:
        yield c


@pytest.fixture
async def pool(server: Server) -> AsyncIterator[Any]:
    pool = await db.create_pool(server.settings.database_url, server.schema, min_size=1, max_size=2)
    yield pool
    await pool.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def setup_network(client: httpx.AsyncClient, channels: int = 1) -> dict[str, Any]:
    """A Polish warehouse and store, feeding ``channels`` channels of one brand."""
    wh, store = unique("wh"), unique("store")
    for location, kind, caps in (
        (wh, "warehouse", ["ship"]),
        (store, "store", ["ship", "click_and_collect"]),
    ):
        response = await client.put(
            f"/v1/locations/{location}",
            json={"kind": kind, "country": "PL", "capabilities": caps, "name": location},
        )
        assert response.status_code == 200, response.text
    names = []
    for market in ["PL", "CZ", "SK"][:channels]:
        channel = unique(f"brand-{market.lower()}")
        response = await client.put(
            f"/v1/channels/{channel}",
            json={
                "brand": "brand",
                "market": market,
                "sourcing": [
                    {"location_id": wh, "priority": 1},
                    {"location_id": store, "priority": 2},
                ],
            },
        )
        assert response.status_code == 200, response.text
        names.append(channel)
    return {"warehouse": wh, "store": store, "channels": names}


async def count(
    client: httpx.AsyncClient, location: str, sku: str, on_hand: int, sequence: int = 1
) -> dict[str, Any]:
    response = await client.put(
        f"/v1/stock/{location}/{sku}",
        json={"on_hand": on_hand, "source": "wms-test", "sequence": sequence},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def available(client: httpx.AsyncClient, channel: str, sku: str) -> int:
    """What the channel can sell of the SKU, as computed from stock now."""
    body = (await client.get(f"/v1/channels/{channel}/availability", params={"skus": sku})).json()
    figure: int = body["available"][sku]
    return figure


async def reserve(
    client: httpx.AsyncClient, channel: str, lines: list[tuple[str, int]], **extra: Any
) -> httpx.Response:
    return await client.post(
        "/v1/reservations",
        json={
            "channel_id": channel,
            "lines": [{"sku": s, "quantity": q} for s, q in lines],
            **extra,
        },
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )


async def test_200_concurrent_reservations_for_37_units_from_3_channels_reserve_exactly_37(
    server: Server, client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client, channels=3)
    sku = unique("FLASH")
    await count(client, net["warehouse"], sku, 30)
    await count(client, net["store"], sku, 7)
    clients = [
        httpx.AsyncClient(
            base_url=server.base_url,
            headers=server.token("inventory:reserve", subject=f"platform-{n}"),
            timeout=60,
        )
        for n in range(3)
    ]
    rng = random.Random(37)
    try:
        responses = await asyncio.gather(
            *(reserve(clients[n % 3], rng.choice(net["channels"]), [(sku, 1)]) for n in range(200))
        )
    finally:
        for c in clients:
            await c.aclose()
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 37
    assert statuses.count(409) == 163
    for refused in (r for r in responses if r.status_code == 409):
        problem = refused.json()
        assert refused.headers["content-type"] == "application/problem+json"
        assert problem["errors"][0]["sku"] == sku
        assert problem["errors"][0]["available"] == 0
    reserved = await pool.fetchval("SELECT sum(reserved) FROM stock WHERE sku = $1", sku)
    assert reserved == 37
    assert await pool.fetchval("SELECT sum(on_hand) FROM stock WHERE sku = $1", sku) == 37
    lines = await pool.fetchval("SELECT sum(quantity) FROM reservation_lines WHERE sku = $1", sku)
    assert lines == 37
    for channel in net["channels"]:
        body = (
            await client.get(f"/v1/channels/{channel}/availability", params={"skus": sku})
        ).json()
        assert body["available"][sku] == 0
    # Once the requests are answered no transaction is left open and no lock is held, but
    # the outbox relay's leadership (a session lock by design).
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


async def test_two_lines_for_one_sku_count_together(client: httpx.AsyncClient) -> None:
    net = await setup_network(client)
    sku = unique("BUNDLE")
    await count(client, net["warehouse"], sku, 5)
    response = await reserve(client, net["channels"][0], [(sku, 3), (sku, 3)])
    assert response.status_code == 409
    assert response.json()["errors"][0] == {
        "field": "lines",
        "sku": sku,
        "requested": 6,
        "available": 5,
        "message": "6 requested, 5 available",
    }


async def test_a_reservation_draws_on_several_locations(client: httpx.AsyncClient) -> None:
    net = await setup_network(client)
    sku = unique("SPLIT")
    await count(client, net["warehouse"], sku, 2)
    await count(client, net["store"], sku, 3)
    response = await reserve(client, net["channels"][0], [(sku, 5)])
    assert response.status_code == 201, response.text
    taken = {line["location_id"]: line["quantity"] for line in response.json()["lines"]}
    assert taken == {net["warehouse"]: 2, net["store"]: 3}


async def test_fulfilment_consumes_stock_where_it_was_allocated(
    client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    sku = unique("SHIP")
    await count(client, net["warehouse"], sku, 10)
    await count(client, net["store"], sku, 4)
    reservation = (
        await reserve(client, net["channels"][0], [(sku, 4)], pickup_location=net["store"])
    ).json()
    assert reservation["lines"] == [{"sku": sku, "location_id": net["store"], "quantity": 4}]
    order = unique("order")
    committed = await client.post(
        f"/v1/reservations/{reservation['reservation_id']}/commit", json={"order_id": order}
    )
    assert committed.status_code == 200, committed.text
    (allocation,) = committed.json()["allocations"]
    assert allocation["location_id"] == net["store"]
    shipped = await client.post(
        f"/v1/orders/{order}/allocations/{allocation['allocation_id']}/ship",
        json={"shipment_id": "parcel-1"},
    )
    assert shipped.status_code == 200, shipped.text
    stock = {
        r["location_id"]: r for r in (await client.get(f"/v1/stock/{sku}")).json()["locations"]
    }
    assert stock[net["store"]]["on_hand"] == 0
    assert stock[net["store"]]["allocated"] == 0
    assert stock[net["warehouse"]]["on_hand"] == 10
    ledger = await pool.fetch(
        """SELECT location_id, quantity, reason FROM stock_movements
           WHERE sku = $1 AND reason = 'shipment'""",
        sku,
    )
    assert [(r["location_id"], r["quantity"]) for r in ledger] == [(net["store"], -4)]
    again = await client.post(
        f"/v1/orders/{order}/allocations/{allocation['allocation_id']}/ship",
        json={"shipment_id": "parcel-1"},
    )
    assert again.status_code == 200
    # A redelivered shipment changes nothing.
    assert await pool.fetchval("SELECT sum(on_hand) FROM stock WHERE sku = $1", sku) == 10
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM stock_movements WHERE sku = $1 AND reason = 'shipment'", sku
        )
        == 1
    )


async def test_availability_accounts_for_reserved_and_allocated_units(
    client: httpx.AsyncClient,
) -> None:
    net = await setup_network(client)
    channel, sku = net["channels"][0], unique("AVAIL")
    await count(client, net["warehouse"], sku, 10)

    assert await available(client, channel, sku) == 10
    first = (await reserve(client, channel, [(sku, 3)])).json()
    assert await available(client, channel, sku) == 7
    await client.post(
        f"/v1/reservations/{first['reservation_id']}/commit", json={"order_id": unique("o")}
    )
    assert (
        await available(client, channel, sku) == 7
    )  # allocated units are as unavailable as reserved ones
    second = (await reserve(client, channel, [(sku, 2)])).json()
    assert await available(client, channel, sku) == 5
    assert (await client.delete(f"/v1/reservations/{second['reservation_id']}")).status_code == 204
    assert await available(client, channel, sku) == 7


async def test_a_stale_absolute_update_changes_nothing(
    client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    sku = unique("STALE")
    assert (await count(client, net["warehouse"], sku, 8, sequence=5))["status"] == "applied"
    older = await count(client, net["warehouse"], sku, 3, sequence=4)
    assert older == {"status": "stale", "last_sequence": 5, "on_hand": 8}
    assert (await count(client, net["warehouse"], sku, 3, sequence=5))["status"] == "stale"
    assert (await count(client, net["warehouse"], sku, 6, sequence=6))["status"] == "applied"
    movements = await pool.fetch(
        "SELECT quantity FROM stock_movements WHERE sku = $1 ORDER BY movement_id", sku
    )
    assert [m["quantity"] for m in movements] == [8, -2]


async def test_a_repeated_idempotency_key_returns_the_first_answer_and_reserves_nothing_more(
    client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    sku = unique("IDEM")
    await count(client, net["warehouse"], sku, 10)
    body = {"channel_id": net["channels"][0], "lines": [{"sku": sku, "quantity": 2}]}
    headers = {"Idempotency-Key": unique("key")}
    first = await client.post("/v1/reservations", json=body, headers=headers)
    second = await client.post("/v1/reservations", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await pool.fetchval("SELECT reserved FROM stock WHERE sku = $1", sku) == 2


async def test_a_count_below_held_stock_releases_holds_and_reports_a_shortage(
    server: Server, client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    sku = unique("SHORT")
    await count(client, net["warehouse"], sku, 5, sequence=1)
    older = (await reserve(client, net["channels"][0], [(sku, 2)])).json()
    newer = (await reserve(client, net["channels"][0], [(sku, 2)])).json()
    assert (await count(client, net["warehouse"], sku, 2, sequence=2))["status"] == "applied"
    statuses = dict(
        await pool.fetch(
            """SELECT reservation_id::text, status FROM reservations
               WHERE reservation_id = ANY($1::uuid[])""",
            [older["reservation_id"], newer["reservation_id"]],
        )
    )
    assert statuses == {older["reservation_id"]: "active", newer["reservation_id"]: "released"}
    level = await pool.fetchrow("SELECT on_hand, reserved FROM stock WHERE sku = $1", sku)
    assert (level["on_hand"], level["reserved"]) == (2, 2)

    async def shortage() -> bool:
        messages = await asyncio.to_thread(
            read_topic, server.settings, "omnistock.inventory.shortages.v1", 5
        )
        return any(m.key() == f"{sku}@{net['warehouse']}".encode() for m in messages)

    await wait_for(shortage, what="the shortage event on its topic")


async def test_adjustments_refused_below_held_stock_change_nothing(
    client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    sku = unique("ADJ")
    await count(client, net["warehouse"], sku, 4)
    await reserve(client, net["channels"][0], [(sku, 3)])
    response = await client.post(
        f"/v1/stock/{net['warehouse']}/{sku}/adjustments",
        json={"quantity": -2, "reason": "damage"},
        headers={"Idempotency-Key": unique("k")},
    )
    assert response.status_code == 409
    assert response.json()["type"].endswith("insufficient-stock")
    assert await pool.fetchval("SELECT on_hand FROM stock WHERE sku = $1", sku) == 4
    bad = await client.post(
        f"/v1/stock/{net['warehouse']}/{sku}/adjustments",
        json={"quantity": 0, "reason": "gift"},
        headers={"Idempotency-Key": unique("k")},
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"quantity", "reason"}


async def test_the_ledger_sums_to_on_hand(client: httpx.AsyncClient, pool: Any) -> None:
    net = await setup_network(client)
    sku = unique("LEDGER")
    await count(client, net["warehouse"], sku, 12)
    for quantity, reason in (
        (5, "receipt"),
        (-1, "store_sale"),
        (-2, "damage"),
        (3, "transfer_in"),
    ):
        response = await client.post(
            f"/v1/stock/{net['warehouse']}/{sku}/adjustments",
            json={"quantity": quantity, "reason": reason},
            headers={"Idempotency-Key": unique("k")},
        )
        assert response.status_code == 201, response.text
    returned = await client.post(
        "/v1/returns",
        json={
            "sku": sku,
            "location_id": net["store"],
            "quantity": 1,
            "sellable": False,
            "reference": "rma-1",
        },
        headers={"Idempotency-Key": unique("k")},
    )
    assert returned.status_code == 201
    rows = await pool.fetch(
        """SELECT s.location_id, s.on_hand, coalesce(sum(m.quantity), 0) AS ledger FROM stock s
           LEFT JOIN stock_movements m USING (sku, location_id) WHERE s.sku = $1 GROUP BY 1, 2""",
        sku,
    )
    assert {r["location_id"]: (r["on_hand"], r["ledger"]) for r in rows} == {
        net["warehouse"]: (17, 17),
        net["store"]: (0, 0),
    }


async def test_a_channel_that_drops_a_location_republishes_what_it_can_sell(
    client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    channel, sku = net["channels"][0], unique("DROP")
    await count(client, net["store"], sku, 4)

    assert await available(client, channel, sku) == 4
    response = await client.put(
        f"/v1/channels/{channel}",
        json={
            "brand": "brand",
            "market": "PL",
            "sourcing": [{"location_id": net["warehouse"], "priority": 1}],
        },
    )
    assert response.status_code == 200
    assert await available(client, channel, sku) == 0
    published = await pool.fetchrow(
        "SELECT available, version FROM availability WHERE channel_id = $1 AND sku = $2",
        channel,
        sku,
    )
    assert (published["available"], published["version"]) == (0, 2)


async def test_a_reservation_is_only_its_clients_and_customers_business(
    server: Server, client: httpx.AsyncClient
) -> None:
    net = await setup_network(client)
    sku = unique("MINE")
    await count(client, net["warehouse"], sku, 10)
    alice = server.token("inventory:reserve", "customer", subject="alice")
    async with httpx.AsyncClient(base_url=server.base_url, headers=alice) as as_alice:
        # A customer reserves for itself, whatever the body names.
        impostor = await reserve(as_alice, net["channels"][0], [(sku, 1)], customer_id="bob")
        assert impostor.status_code == 403
        mine = await reserve(as_alice, net["channels"][0], [(sku, 1)])
        assert mine.status_code == 201, mine.text
        reservation = mine.json()["reservation_id"]
        assert (await as_alice.get(f"/v1/reservations/{reservation}")).status_code == 200
    others = [
        server.token("inventory:reserve", "customer", subject="bob"),
        server.token("inventory:reserve", subject="another-platform"),
    ]
    for headers in others:
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as stranger:
            assert (await stranger.get(f"/v1/reservations/{reservation}")).status_code == 404
            extended = await stranger.post(
                f"/v1/reservations/{reservation}/extend", json={"ttl_seconds": 600}
            )
            assert extended.status_code == 404
            assert (await stranger.delete(f"/v1/reservations/{reservation}")).status_code == 404
    status = (await client.get(f"/v1/reservations/{reservation}")).json()["status"]
    assert status == "active"  # staff (inventory:admin) may look; nothing was released
    # The order system (inventory:allocate) reads and releases it, staff scope or not.
    orders = server.token("inventory:allocate", "inventory:reserve", subject="orders")
    async with httpx.AsyncClient(base_url=server.base_url, headers=orders) as as_orders:
        seen = await as_orders.get(f"/v1/reservations/{reservation}")
        assert (seen.status_code, seen.json()["customer_id"]) == (200, "alice")
        assert (await as_orders.delete(f"/v1/reservations/{reservation}")).status_code == 204


async def test_input_past_what_the_database_holds_is_a_4xx_naming_the_field(
    client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    sku = unique("BIG")
    huge = await client.put(
        f"/v1/stock/{net['warehouse']}/{sku}",
        json={"on_hand": 3_000_000_000, "source": "wms", "sequence": 2**64},
    )
    assert huge.status_code == 422
    assert {e["field"] for e in huge.json()["errors"]} == {"on_hand", "sequence"}
    twice = await client.put(
        f"/v1/channels/{unique('dup')}",
        json={
            "brand": "b",
            "market": "PL",
            "sourcing": [
                {"location_id": net["warehouse"], "priority": 1},
                {"location_id": net["warehouse"], "priority": 2},
            ],
        },
    )
    assert twice.status_code == 422
    assert twice.json()["errors"][0]["field"] == "sourcing"
    assert await pool.fetchval("SELECT count(*) FROM stock WHERE sku = $1", sku) == 0


async def test_writes_safe_to_repeat_take_an_idempotency_key_and_replay_the_first_answer(
    client: httpx.AsyncClient, pool: Any
) -> None:
    net = await setup_network(client)
    channel, sku = net["channels"][0], unique("KEYED")
    await count(client, net["warehouse"], sku, 10)

    def key(name: str) -> dict[str, str]:
        return {"Idempotency-Key": f"{name}-{sku}"}

    # Release: the repeat under the key is the first answer (204), not a refusal.
    held = (await reserve(client, channel, [(sku, 2)])).json()["reservation_id"]
    path = f"/v1/reservations/{held}"
    first = await client.delete(path, headers=key("release"))
    again = await client.delete(path, headers=key("release"))
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == b""
    assert (await client.delete(path)).status_code == 409  # without a key: computed afresh
    empty = await client.delete(path, headers={"Idempotency-Key": ""})
    assert empty.status_code == 409  # an empty key is no key

    # Extend: the repeat does not push the expiry further; the key reused for another TTL is
    # refused and changes nothing.
    held = (await reserve(client, channel, [(sku, 2)])).json()["reservation_id"]
    path = f"/v1/reservations/{held}/extend"
    extended = await client.post(path, json={"ttl_seconds": 600}, headers=key("extend"))
    replayed = await client.post(path, json={"ttl_seconds": 600}, headers=key("extend"))
    assert extended.status_code == 200, extended.text
    assert replayed.json() == extended.json()
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    reused = await client.post(path, json={"ttl_seconds": 900}, headers=key("extend"))
    assert reused.status_code == 422
    assert reused.json()["errors"][0]["field"] == "header.Idempotency-Key"
    expires_at = await pool.fetchval(
        "SELECT expires_at FROM reservations WHERE reservation_id = $1::uuid", held
    )
    assert expires_at.isoformat() == extended.json()["expires_at"]

    # Commit, then cancel: the repeated cancellation still names the one allocation released,
    # where one without a key finds nothing left to release.
    order = unique("order")
    path = f"/v1/reservations/{held}/commit"
    committed = await client.post(path, json={"order_id": order}, headers=key("commit"))
    assert committed.status_code == 200, committed.text
    recommitted = await client.post(path, json={"order_id": order}, headers=key("commit"))
    assert recommitted.json() == committed.json()
    assert recommitted.headers.get("Idempotent-Replayed") == "true"
    path = f"/v1/orders/{order}/cancel"
    cancelled = await client.post(path, json={"reason": "customer"}, headers=key("cancel"))
    assert cancelled.json() == {"order_id": order, "released": 1}
    recancelled = await client.post(path, json={"reason": "customer"}, headers=key("cancel"))
    assert recancelled.json() == {"order_id": order, "released": 1}
    assert (await client.post(path, json={"reason": "customer"})).json()["released"] == 0
    assert await available(client, channel, sku) == 10
