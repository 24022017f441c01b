"""The order saga end to end: inventory, pricing, payments and the PSP simulator as processes
of their own, each on its own schema; orders in this process (so that one test can move its
clock), talking to them over HTTP only. The service processes are shared by the module."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from omnistock.contracts import collection_points as places
from omnistock.contracts import inventory, orders, payments, pricing
from omnistock.orders import consumers
from omnistock.orders.api import build_app
from omnistock.orders.settings import OrdersSettings
from omnistock.payments.psp import DEVELOPMENT_PSP_API_KEY
from omnistock.platform import db, events, kafka
from omnistock.platform.clock import ManualClock, SystemClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    end_offsets,
    free_port,
    read_topic_to_end,
    served,
    start_group_at_end,
    stocked_channel,
    unique,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.integration

STAFF = ["orders:write", "orders:read"]
PRICE = 2_500  # minor units


@dataclass
class Stack:
    settings: Settings
    inventory_url: str
    pricing_url: str
    payments_url: str
    psp_url: str
    loyalty_url: str

    def orders_settings(self, **changes: Any) -> OrdersSettings:
        defaults: dict[str, Any] = {
            "inventory_url": self.inventory_url,
            "pricing_url": self.pricing_url,
            "payments_url": self.payments_url,
            "loyalty_url": self.loyalty_url,
            "worker_interval_s": 0.05,
            "payments_group": unique("orders-payment-decisions"),
            "fulfilment_group": unique("orders-fulfilment"),
        }
        return OrdersSettings(**{**defaults, **changes})


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    topics = [*inventory.TOPICS, *pricing.TOPICS, *payments.TOPICS, *orders.TOPICS, *places.TOPICS]
    await asyncio.to_thread(kafka.ensure_topics, settings, topics)
    schemas = {
        name: await create_service_schema(settings, name, f"omnistock.{name}")
        for name in ("inventory", "pricing", "payments", "loyalty")
    }
    ports = {name: free_port() for name in ("inventory", "pricing", "payments", "psp", "loyalty")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    loyalty_group = unique("orders-e2e-loyalty")
    await asyncio.to_thread(start_group_at_end, settings, loyalty_group, orders.ORDERS.name)
    env = {
        **os.environ,
        "OMNISTOCK_LOG_LEVEL": "WARNING",
        "OMNISTOCK_PAYMENTS_PSP_URL": urls["psp"],
        "OMNISTOCK_PAYMENTS_PSP_TIMEOUT_S": "2",
        # `tok_async` authorizations stay pending for the whole module: an order waiting on
        # one times out.
        "OMNISTOCK_PSP_SIM_ASYNC_DECISION_MS": "600000",
        # Points are earned as soon as an order completes, so that one order can pay with the
        # points of the one before; a group of its own reads only this module's orders.
        "OMNISTOCK_LOYALTY_RETURN_WINDOW_DAYS": "0",
        "OMNISTOCK_LOYALTY_JOB_INTERVAL_S": "0.2",
        "OMNISTOCK_LOYALTY_ORDERS_GROUP": loyalty_group,
    }
    command = [sys.executable, "-m", "omnistock.cli"]
    started = [
        await asyncio.to_thread(
            subprocess.Popen,
            [
                *command,
                "payments",
                "psp-sim",
                "--port",
                str(ports["psp"]),
                "--webhook-url",
                f"{urls['payments']}/v1/psp/webhooks",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    ]
    for name, schema in schemas.items():
        started.append(
            await asyncio.to_thread(
                subprocess.Popen,
                [*command, "serve", name, "--port", str(ports[name]), "--schema", schema],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
    try:
        await asyncio.gather(*(wait_ready(urls[name]) for name in schemas))
        # Each answer came from the process meant to give it, not from another on its port.
        assert all(process.poll() is None for process in started), "a service did not start"
        yield Stack(
            settings,
            urls["inventory"],
            urls["pricing"],
            urls["payments"],
            urls["psp"],
            urls["loyalty"],
        )
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        for schema in schemas.values():
            await drop_schema(settings, schema)


@dataclass
class Orders:
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    schema: str


@asynccontextmanager
async def orders_service(stack: Stack, **app: Any) -> AsyncIterator[Orders]:
    """The orders service in this process; ``own`` names consumer groups new to the broker."""
    settings = stack.settings
    if "own" in app:
        await _from_now_on(settings, app["own"])
    schema = await create_service_schema(settings, "orders", "omnistock.orders")
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=2)
    try:
        async with served(
            build_app(settings, schema=schema, **app), bearer(settings, "callcentre", STAFF)
        ) as client:
            yield Orders(client, pool, schema)
    finally:
        await pool.close()
        await drop_schema(settings, schema)


async def _from_now_on(settings: Settings, own: OrdersSettings) -> None:
    """The service's groups read what comes next: the shared topics' history is no concern of
    a service with a new schema. On a developer's broker it runs to millions of events, which
    a new group read from the start, and on a busy machine took longer than a test waits."""
    clock = SystemClock()
    for subscription in (
        consumers.subscription(clock, own.payments_group),
        consumers.fulfilment_subscription(clock, own.fulfilment_group),
    ):
        for topic in subscription.topics:
            await asyncio.to_thread(start_group_at_end, settings, subscription.group, topic)


@pytest.fixture(scope="module")
async def service(stack: Stack) -> AsyncIterator[Orders]:
    """The orders service on the system clock, shared by the module's tests."""
    async with orders_service(stack, clock=SystemClock(), own=stack.orders_settings()) as running:
        yield running


@pytest.fixture(scope="module")
async def inventory_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    scopes = ["inventory:admin", "inventory:write", "inventory:read", "inventory:reserve"]
    headers = bearer(stack.settings, "web-storefront", scopes)
    async with httpx.AsyncClient(base_url=stack.inventory_url, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
async def payments_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = bearer(stack.settings, "finance", ["payments:read"])
    async with httpx.AsyncClient(base_url=stack.payments_url, headers=headers) as client:
        yield client


@dataclass
class Shop:
    """A channel selling one SKU: 10 units in stock, priced in pricing."""

    channel: str
    sku: str
    on_hand: int = 10


@pytest.fixture
async def shop(stack: Stack, inventory_client: httpx.AsyncClient) -> Shop:
    sku = unique("SKU")
    channel = await stocked_channel(inventory_client, sku, 10)
    headers = bearer(stack.settings, "erp", ["pricing:admin", "pricing:write"])
    async with httpx.AsyncClient(base_url=stack.pricing_url, headers=headers) as client:
        listed = await client.put(
            f"/v1/price-lists/{channel}", json={"currency": "PLN", "vat_rate_basis_points": 2300}
        )
        assert listed.status_code == 200, listed.text
        priced = await client.post(
            f"/v1/price-lists/{channel}/prices",
            json={"prices": [{"sku": sku, "amount": PRICE}]},
            headers={"Idempotency-Key": unique("k")},
        )
        assert priced.status_code == 200, priced.text
    return Shop(channel, sku)


async def checkout(
    inventory_client: httpx.AsyncClient,
    shop: Shop,
    quantity: int,
    customer: str,
    more: dict[str, int] | None = None,
) -> str:
    """A checkout reservation of ``quantity`` of the shop's SKU and ``more`` (SKU: units)."""
    units = {shop.sku: quantity, **(more or {})} if quantity else dict(more or {})
    response = await inventory_client.post(
        "/v1/reservations",
        json={
            "channel_id": shop.channel,
            "lines": [{"sku": sku, "quantity": n} for sku, n in units.items()],
            "customer_id": customer,
        },
        headers={"Idempotency-Key": unique("k")},
    )
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["reservation_id"]
    return reservation_id


def order_body(
    shop: Shop,
    reservation_id: str,
    quantity: int = 2,
    instrument: str = "tok_visa",
    customer: str | None = None,
    unit_price: int = PRICE,
    method: str = "card",
    points: int = 0,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel_id": shop.channel,
        "platform": "ios",
        "currency": "PLN",
        "reservation_id": reservation_id,
        "lines": [{"sku": shop.sku, "quantity": quantity, "unit_price": unit_price}],
        "delivery": {"kind": "locker", "collection_point_id": "locker-waw-17"},
        "payment": {"method": method, "token": instrument},
        "loyalty_points": points,
    }
    if customer is not None:
        body["customer_id"] = customer
    return body


def as_customer(stack: Stack, customer: str) -> dict[str, str]:
    return bearer(stack.settings, customer, ["customer"])


def keyed(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "Idempotency-Key": unique("k")}


async def stock(inventory_client: httpx.AsyncClient, shop: Shop) -> tuple[int, int, int]:
    """(reserved, allocated, available in the channel)."""
    locations = (await inventory_client.get(f"/v1/stock/{shop.sku}")).json()["locations"]
    available = await inventory_client.get(
        f"/v1/channels/{shop.channel}/availability", params={"skus": shop.sku}
    )
    return (
        sum(x["reserved"] for x in locations),
        sum(x["allocated"] for x in locations),
        available.json()["available"][shop.sku],
    )


async def reaches(orders_: Orders, order_id: str, status: str, timeout_s: float = 30) -> Any:
    async def read() -> Any:
        body = (await orders_.client.get(f"/v1/orders/{order_id}")).json()
        return body if body["status"] == status else None

    return await wait_for(read, timeout_s, what=f"order {order_id} to be {status}")


async def payments_of(payments_client: httpx.AsyncClient, order_id: str) -> list[Any]:
    response = await payments_client.get("/v1/payments", params={"order_id": order_id})
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["payments"]
    return found


async def test_a_card_order_is_confirmed_with_its_stock_allocated_and_payment_authorized(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    start = await asyncio.to_thread(end_offsets, stack.settings, orders.ORDERS.name)
    reservation = await checkout(inventory_client, shop, 2, "anna")
    placed = await service.client.post(
        "/v1/orders", json=order_body(shop, reservation, customer="anna"), headers=keyed()
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert (order["status"], order["version"], order["total"]) == ("placed", 1, 2 * PRICE)
    assert order["delivery"] == {"kind": "locker", "collection_point_id": "locker-waw-17"}

    confirmed = await reaches(service, order["order_id"], "confirmed")
    assert [h["status"] for h in confirmed["history"]] == [
        "placed",
        "allocated",
        "authorized",
        "confirmed",
    ]
    assert [h["version"] for h in confirmed["history"]] == [1, 2, 3, 4]
    assert await stock(inventory_client, shop) == (0, 2, 8)
    (payment,) = await payments_of(payments_client, order["order_id"])
    assert (payment["status"], payment["authorized"], payment["customer_id"]) == (
        "authorized",
        2 * PRICE,
        "anna",
    )
    assert confirmed["payment"]["payment_id"] == payment["payment_id"]

    # One event per version, keyed by the order id, in order.
    await wait_for(
        lambda: service.pool.fetchval("SELECT NOT EXISTS (SELECT FROM outbox)"), 20, what="relay"
    )
    messages = await asyncio.to_thread(
        read_topic_to_end, stack.settings, orders.ORDERS.name, 20.0, start
    )
    mine = [events.decode(m.value()) for m in messages if m.key() == order["order_id"].encode()]
    assert [(e.aggregate_version, e.data.status) for e in mine if e] == [
        (1, "placed"),
        (2, "allocated"),
        (3, "authorized"),
        (4, "confirmed"),
    ]


async def test_a_declined_payment_cancels_the_order_and_frees_its_stock(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    reservation = await checkout(inventory_client, shop, 3, "bea")
    placed = await service.client.post(
        "/v1/orders",
        json=order_body(shop, reservation, 3, instrument="tok_declined", customer="bea"),
        headers=keyed(),
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]

    cancelled = await reaches(service, order_id, "cancelled")
    assert cancelled["cancel_reason"] == "payment_declined"
    assert [h["status"] for h in cancelled["history"]] == [
        "placed",
        "allocated",
        "cancelling",
        "cancelled",
    ]
    assert cancelled["history"][2]["reason"] == "payment_declined"
    assert await stock(inventory_client, shop) == (0, 0, shop.on_hand)
    (payment,) = await payments_of(payments_client, order_id)
    assert payment["status"] == "declined"


async def test_a_price_changed_beyond_the_tolerance_refuses_the_order_and_writes_nothing(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    reservation = await checkout(inventory_client, shop, 1, "carl")
    customer = as_customer(stack, "carl")
    refused = await service.client.post(
        "/v1/orders",
        json=order_body(shop, reservation, 1, unit_price=PRICE - 100),
        headers=keyed(customer),
    )
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert problem["errors"] == [
        {
            "field": "lines[0].unit_price",
            "sku": shop.sku,
            "seen": PRICE - 100,
            "current": PRICE,
            "message": "price changed",
        }
    ]
    assert (
        await service.pool.fetchval("SELECT count(*) FROM orders WHERE customer_id = 'carl'") == 0
    )
    kept = "SELECT count(*) FROM idempotency_keys WHERE principal = 'carl'"
    assert await service.pool.fetchval(kept) == 0  # corrected, the request may come again
    assert await stock(inventory_client, shop) == (1, 0, shop.on_hand - 1)  # still held


async def test_a_repeated_idempotency_key_returns_the_first_answer_and_places_one_order(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    reservation = await checkout(inventory_client, shop, 1, "dora")
    headers = keyed(as_customer(stack, "dora"))
    body = order_body(shop, reservation, 1, method="try_before_you_buy", instrument="tok_tbyb")
    first, second = await asyncio.gather(
        service.client.post("/v1/orders", json=body, headers=headers),
        service.client.post("/v1/orders", json=body, headers=headers),
    )
    third = await service.client.post("/v1/orders", json=body, headers=headers)
    assert first.status_code == second.status_code == third.status_code == 201
    assert first.json() == second.json() == third.json()
    assert third.headers["Idempotent-Replayed"] == "true"
    assert (
        await service.pool.fetchval("SELECT count(*) FROM orders WHERE customer_id = 'dora'") == 1
    )
    await reaches(service, first.json()["order_id"], "confirmed")
    # Its reservation is the order's now, no longer one to place an order on: a repeat still
    # gets the first answer, not that refusal.
    late = await service.client.post("/v1/orders", json=body, headers=headers)
    assert late.status_code == 201, late.text
    assert late.json() == first.json()
    assert late.headers["Idempotent-Replayed"] == "true"


async def test_a_customer_sees_lists_and_cancels_only_its_own_orders(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    reservation = await checkout(inventory_client, shop, 1, "erin")
    erin, frank = as_customer(stack, "erin"), as_customer(stack, "frank")
    for_someone_else = await service.client.post(
        "/v1/orders", json=order_body(shop, reservation, 1, customer="frank"), headers=keyed(erin)
    )
    assert for_someone_else.status_code == 403, for_someone_else.text
    # Frank holds erin's reservation id: to him it does not exist.
    not_his = await service.client.post(
        "/v1/orders", json=order_body(shop, reservation, 1), headers=keyed(frank)
    )
    assert not_his.status_code == 422, not_his.text
    assert not_his.json()["errors"][0]["field"] == "reservation_id"
    assert (await service.client.get("/v1/orders", headers=frank)).json()["orders"] == []
    placed = await service.client.post(
        "/v1/orders", json=order_body(shop, reservation, 1), headers=keyed(erin)
    )
    assert placed.status_code == 201, placed.text
    assert placed.json()["customer_id"] == "erin"
    order_id = placed.json()["order_id"]

    read = await service.client.get(f"/v1/orders/{order_id}", headers=frank)
    cancel = await service.client.post(f"/v1/orders/{order_id}/cancel", headers=keyed(frank))
    unknown = await service.client.get(f"/v1/orders/{uuid.uuid4()}", headers=erin)
    assert (read.status_code, cancel.status_code, unknown.status_code) == (404, 404, 404)
    # Someone else's order and no order at all look the same: ids cannot be probed.
    assert read.json()["type"] == unknown.json()["type"] == "urn:omnistock:problem:not-found"
    own = await service.client.get(f"/v1/orders/{order_id}", headers=erin)
    assert own.status_code == 200
    no_scope = bearer(stack.settings, "someone", ["inventory:read"])
    assert (await service.client.get(f"/v1/orders/{order_id}", headers=no_scope)).status_code == 403
    await reaches(service, order_id, "confirmed")

    listed = await service.client.get("/v1/orders", headers=erin)
    assert [o["order_id"] for o in listed.json()["orders"]] == [order_id]
    assert (await service.client.get("/v1/orders", headers=frank)).json()["orders"] == []
    peeking = await service.client.get("/v1/orders", params={"customer_id": "erin"}, headers=frank)
    assert peeking.status_code == 403, peeking.text
    by_staff = await service.client.get("/v1/orders", params={"customer_id": "erin"})
    assert [(o["order_id"], o["status"]) for o in by_staff.json()["orders"]] == [
        (order_id, "confirmed")
    ]


async def test_a_customer_pages_through_its_orders_newest_first_each_once(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    customer, other = unique("gail"), unique("frank")
    gail, frank = as_customer(stack, customer), as_customer(stack, other)
    before = await service.client.post(
        "/v1/orders",
        json=order_body(shop, await checkout(inventory_client, shop, 1, other), 1),
        headers=keyed(frank),
    )
    assert before.status_code == 201, before.text
    placed = []
    for _ in range(5):
        reservation = await checkout(inventory_client, shop, 1, customer)
        answer = await service.client.post(
            "/v1/orders", json=order_body(shop, reservation, 1), headers=keyed(gail)
        )
        assert answer.status_code == 201, answer.text
        placed.append(answer.json()["order_id"])

    pages, after = [], None
    while True:
        params = {"limit": 2} if after is None else {"limit": 2, "after": after}
        page = await service.client.get("/v1/orders", params=params, headers=gail)
        assert page.status_code == 200, page.text
        pages.append([o["order_id"] for o in page.json()["orders"]])
        after = page.json()["next"]
        if after is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [o for p in pages for o in p] == placed[::-1]

    # A cursor only says where a page ends: another customer reading from it reads its own.
    first = await service.client.get("/v1/orders", params={"limit": 2}, headers=gail)
    theirs = await service.client.get(
        "/v1/orders", params={"after": first.json()["next"]}, headers=frank
    )
    assert theirs.status_code == 200, theirs.text
    assert [o["order_id"] for o in theirs.json()["orders"]] == [before.json()["order_id"]]
    for forged in ("nonsense", "MjAyNi0xMS0zMA", "bm90LWEtdGltZXxub3QtYW4taWQ"):
        refused = await service.client.get("/v1/orders", params={"after": forged}, headers=gail)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "after"


# A valid body for every endpoint on one order, so that what answers is the access check.
ORDER_ENDPOINT_BODIES: dict[tuple[str, str], Any] = {
    ("GET", "/v1/orders/{order_id}"): None,
    ("GET", "/v1/orders/{order_id}/history"): None,
    ("POST", "/v1/orders/{order_id}/cancel"): None,
    ("POST", "/v1/orders/{order_id}/trial-decisions"): {
        "lines": [{"sku": "SKU-1", "decision": "keep"}]
    },
    ("POST", "/v1/orders/{order_id}/returns"): {"lines": [{"sku": "SKU-1", "quantity": 1}]},
    ("POST", "/v1/orders/{order_id}/shipments/{shipment_id}/delivered"): None,
    ("POST", "/v1/orders/{order_id}/ready-for-pickup"): {},
    ("POST", "/v1/orders/{order_id}/collect"): {"pickup_code": "12345678"},
    ("POST", "/v1/orders/{order_id}/returns/{return_id}/receive"): {
        "location_id": "wh-1",
        "sellable": True,
    },
}


async def test_every_endpoint_on_an_order_hides_it_from_another_customer_and_changes_nothing(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    paths = build_app(stack.settings, own=stack.orders_settings()).openapi()["paths"]
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        if "{order_id}" in path
        for method in operations
    }
    # A new endpoint must be added here, so that it is checked too.
    assert routes == set(ORDER_ENDPOINT_BODIES)
    reservation = await checkout(inventory_client, shop, 1, "ivy")
    placed = await service.client.post(
        "/v1/orders",
        json=order_body(shop, reservation, 1),
        headers=keyed(as_customer(stack, "ivy")),
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    confirmed = await reaches(service, order_id, "confirmed")
    mallory = as_customer(stack, "mallory")
    for (method, template), body in ORDER_ENDPOINT_BODIES.items():
        path = template.format(order_id=order_id, shipment_id="parcel-1", return_id=uuid.uuid4())
        answer = await service.client.request(method, path, json=body, headers=keyed(mallory))
        # Customer endpoints: 404 (someone else's order does not exist); staff ones: 403.
        assert answer.status_code in (403, 404), (method, template, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    after = (await service.client.get(f"/v1/orders/{order_id}")).json()
    assert (after["status"], after["version"]) == ("confirmed", confirmed["version"])


async def test_cancelling_a_confirmed_order_frees_its_stock_and_voids_its_payment(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    reservation = await checkout(inventory_client, shop, 4, "gus")
    gus = as_customer(stack, "gus")
    placed = await service.client.post(
        "/v1/orders",
        json=order_body(shop, reservation, 4, method="pay_later", instrument="tok_klarna"),
        headers=keyed(gus),
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    await reaches(service, order_id, "confirmed")
    assert await stock(inventory_client, shop) == (0, 4, 6)

    cancel_key = keyed(gus)
    cancelling = await service.client.post(f"/v1/orders/{order_id}/cancel", headers=cancel_key)
    assert cancelling.status_code == 200, cancelling.text
    assert cancelling.json()["status"] == "cancelling"
    cancelled = await reaches(service, order_id, "cancelled")
    assert cancelled["cancel_reason"] == "cancelled_by_customer"
    assert await stock(inventory_client, shop) == (0, 0, shop.on_hand)
    (payment,) = await payments_of(payments_client, order_id)
    assert (payment["method"], payment["status"]) == ("pay_later", "voided")

    again = await service.client.post(f"/v1/orders/{order_id}/cancel", headers=keyed(gus))
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")
    assert (
        cancelled["version"] == 6
    )  # placed, allocated, authorized, confirmed, cancelling, cancelled


async def test_an_order_not_confirmed_in_time_cancels_itself_and_is_listed_as_stuck_until_then(
    stack: Stack,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    clock = ManualClock(SystemClock().now())
    own = stack.orders_settings(confirm_within_s=600)
    async with orders_service(stack, clock=clock, own=own) as running:
        reservation = await checkout(inventory_client, shop, 1, "hana")
        placed = await running.client.post(
            "/v1/orders",
            json=order_body(shop, reservation, 1, instrument="tok_async", customer="hana"),
            headers=keyed(),
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]

        async def waiting_for_the_payment() -> bool:
            row = await running.pool.fetchrow(
                "SELECT step, last_error FROM orders WHERE order_id = $1", uuid.UUID(order_id)
            )
            return bool(row["step"] == "authorize_payment" and row["last_error"])

        await wait_for(waiting_for_the_payment, 30, what="the pending authorization")
        listed = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "omnistock.cli",
                "orders",
                "stuck",
                "--older-than",
                "0",
                "--schema",
                running.schema,
            ],
            capture_output=True,
            check=True,
            text=True,
        )
        assert f'"order_id":"{order_id}"' in listed.stdout
        assert '"step":"authorize_payment"' in listed.stdout

        clock.advance(timedelta(seconds=601))
        cancelled = await reaches(running, order_id, "cancelled")
        assert cancelled["cancel_reason"] == "confirmation_timed_out"
        assert await stock(inventory_client, shop) == (0, 0, shop.on_hand)
        (payment,) = await payments_of(payments_client, order_id)
        assert payment["void_requested"] is not None  # carried out once the PSP decides


async def test_a_pending_authorization_goes_on_as_soon_as_payments_announces_the_decision(
    stack: Stack, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    # The clock stands still: the order is never asked about again by the poll, only
    # woken by the payment-authorized event on Kafka.
    clock = ManualClock(SystemClock().now())
    async with orders_service(stack, clock=clock, own=stack.orders_settings()) as running:
        reservation = await checkout(inventory_client, shop, 1, "ida")
        placed = await running.client.post(
            "/v1/orders",
            json=order_body(shop, reservation, 1, instrument="tok_async", customer="ida"),
            headers=keyed(),
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]

        async def pending() -> bool:
            row = await running.pool.fetchrow(
                "SELECT step, last_error FROM orders WHERE order_id = $1", uuid.UUID(order_id)
            )
            return bool(row["step"] == "authorize_payment" and row["last_error"])

        await wait_for(pending, 30, what="the pending authorization")
        psp = {"Authorization": f"Bearer {DEVELOPMENT_PSP_API_KEY}"}
        async with httpx.AsyncClient(base_url=stack.psp_url, headers=psp) as client:
            assert (await client.post("/sim/decide")).status_code == 200
        confirmed = await reaches(running, order_id, "confirmed", 60)
        assert confirmed["payment"]["payment_id"] is not None
        assert await stock(inventory_client, shop) == (0, 1, shop.on_hand - 1)


async def test_orders_that_do_not_match_their_reservation_or_are_malformed_are_4xx_naming_the_field(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    reservation = await checkout(inventory_client, shop, 2, "jan")
    jan = as_customer(stack, "jan")

    async def refused(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, list[Any]]:
        response = await service.client.post("/v1/orders", json=body, headers=headers)
        return response.status_code, [e["field"] for e in response.json().get("errors", [])]

    assert await refused(order_body(shop, reservation, 3), keyed(jan)) == (
        409,
        ["lines[0].quantity"],
    )
    assert await refused(order_body(shop, str(uuid.uuid4()), 2), keyed(jan)) == (
        422,
        ["reservation_id"],
    )
    assert await refused(order_body(shop, reservation, 2), jan) == (
        400,
        ["header.Idempotency-Key"],
    )
    assert await refused(order_body(shop, reservation, 2), keyed()) == (422, ["customer_id"])
    fractional = order_body(shop, reservation, 2)
    fractional["lines"][0]["unit_price"] = 2500.5
    assert await refused(fractional, keyed(jan)) == (422, ["lines[0].unit_price"])
    assert await service.pool.fetchval("SELECT count(*) FROM orders WHERE customer_id = 'jan'") == 0
    assert await stock(inventory_client, shop) == (2, 0, shop.on_hand - 2)

    # One order per reservation: a second one would release the first one's stock.
    first = await service.client.post(
        "/v1/orders", json=order_body(shop, reservation, 2), headers=keyed(jan)
    )
    assert first.status_code == 201, first.text
    # Refused by the database's unique key, or by inventory once the first order committed it.
    assert await refused(order_body(shop, reservation, 2), keyed(jan)) == (409, ["reservation_id"])
    await reaches(service, first.json()["order_id"], "confirmed")
    assert await service.pool.fetchval("SELECT count(*) FROM orders WHERE customer_id = 'jan'") == 1


async def test_a_participant_that_does_not_answer_fails_the_step_and_compensation_keeps_trying(
    stack: Stack, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    clock = ManualClock(SystemClock().now())
    nobody = f"http://127.0.0.1:{free_port()}"  # payments down
    own = stack.orders_settings(payments_url=nobody, max_attempts=1, step_timeout_s=1)
    async with orders_service(stack, clock=clock, own=own) as running:
        reservation = await checkout(inventory_client, shop, 1, "kai")
        placed = await running.client.post(
            "/v1/orders", json=order_body(shop, reservation, 1, customer="kai"), headers=keyed()
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]
        cancelling = await reaches(running, order_id, "cancelling")
        assert cancelling["cancel_reason"] == "step_failed"
        assert cancelling["cancel_detail"].startswith("authorize_payment: ConnectError")

        async def compensation_tried() -> bool:
            row = await running.pool.fetchrow(
                "SELECT step, step_attempts FROM orders WHERE order_id = $1", uuid.UUID(order_id)
            )
            return bool(row["step"] == "undo:authorize_payment" and row["step_attempts"] >= 1)

        # Whether a payment holds money cannot be known while payments is down: the order
        # waits in `cancelling`, its stock still allocated, and is retried, never given up.
        await wait_for(compensation_tried, 20, what="a compensation attempt")
        assert await stock(inventory_client, shop) == (0, 1, shop.on_hand - 1)
        assert (await running.client.get(f"/v1/orders/{order_id}")).json()["status"] == (
            "cancelling"
        )


# -- after confirmation: shipment, delivery or collection, trial, settlement, returns --

FULFIL = ["orders:fulfil"]
HOME = {
    "kind": "home",
    "address": {
        "name": "Ola Nowak",
        "street": "Prosta 1",
        "city": "Warszawa",
        "postal_code": "00-001",
        "country": "PL",
    },
}


async def more_skus(
    stack: Stack, inventory_client: httpx.AsyncClient, shop: Shop, prices: list[int]
) -> list[str]:
    """SKUs stocked (10 each) at the shop's warehouse and priced in its channel."""
    location = (await inventory_client.get(f"/v1/stock/{shop.sku}")).json()["locations"][0]
    skus = [unique("SKU") for _ in prices]
    for sku in skus:
        stocked = await inventory_client.put(
            f"/v1/stock/{location['location_id']}/{sku}",
            json={"on_hand": 10, "source": "wms", "sequence": 1},
        )
        assert stocked.status_code == 200, stocked.text
    headers = bearer(stack.settings, "erp", ["pricing:write"])
    async with httpx.AsyncClient(base_url=stack.pricing_url, headers=headers) as client:
        priced = await client.post(
            f"/v1/price-lists/{shop.channel}/prices",
            json={"prices": [{"sku": s, "amount": p} for s, p in zip(skus, prices, strict=True)]},
            headers={"Idempotency-Key": unique("k")},
        )
        assert priced.status_code == 200, priced.text
    return skus


async def ship_everything(stack: Stack, order: dict[str, Any], parcels: int = 1) -> list[str]:
    """The warehouse ships the order's allocations at inventory, spread over ``parcels``."""
    headers = bearer(stack.settings, "wms", ["inventory:fulfil"])
    shipment_ids = [unique("parcel") for _ in range(parcels)]
    async with httpx.AsyncClient(base_url=stack.inventory_url, headers=headers) as client:
        for number, allocation in enumerate(order["allocations"]):
            shipped = await client.post(
                f"/v1/orders/{order['order_id']}/allocations/{allocation['allocation_id']}/ship",
                json={"shipment_id": shipment_ids[number % parcels]},
            )
            assert shipped.status_code == 200, shipped.text
    return shipment_ids


async def on_hand(inventory_client: httpx.AsyncClient, sku: str) -> int:
    locations = (await inventory_client.get(f"/v1/stock/{sku}")).json()["locations"]
    return sum(x["on_hand"] for x in locations)


async def settled(payments_client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    (payment,) = await payments_of(payments_client, order_id)
    return payment


async def test_a_card_order_goes_from_placed_to_completed_and_a_return_is_restocked_and_refunded(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    (second,) = await more_skus(stack, inventory_client, shop, [4_000])
    ola = as_customer(stack, "ola")
    reservation = await checkout(inventory_client, shop, 2, "ola", {second: 1})
    body = order_body(shop, reservation)
    body["lines"].append({"sku": second, "quantity": 1, "unit_price": 4_000})
    body["delivery"] = HOME
    placed = await service.client.post("/v1/orders", json=body, headers=keyed(ola))
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    total = 2 * PRICE + 4_000
    confirmed = await reaches(service, order_id, "confirmed")
    assert sorted((a["sku"], a["quantity"]) for a in confirmed["allocations"]) == sorted(
        [(shop.sku, 2), (second, 1)]
    )

    # Two parcels; the order is shipped once both have left, delivered once both arrived.
    first_parcel, second_parcel = await ship_everything(stack, confirmed, parcels=2)
    shipped = await reaches(service, order_id, "shipped")
    assert {s["shipment_id"] for s in shipped["shipments"]} == {first_parcel, second_parcel}
    assert await on_hand(inventory_client, shop.sku) == shop.on_hand - 2
    carrier = bearer(stack.settings, "carrier", FULFIL)
    path = f"/v1/orders/{order_id}/shipments"
    one = await service.client.post(f"{path}/{first_parcel}/delivered", headers=keyed(carrier))
    assert (one.status_code, one.json()["status"]) == (200, "shipped")
    unknown = await service.client.post(f"{path}/nope/delivered", headers=keyed(carrier))
    assert unknown.status_code == 404, unknown.text
    two = await service.client.post(f"{path}/{second_parcel}/delivered", headers=keyed(carrier))
    assert two.status_code == 200, two.text
    completed = await reaches(service, order_id, "completed")
    statuses = [h["status"] for h in completed["history"] if h["previous_status"] != h["status"]]
    assert statuses == [
        "placed",
        "allocated",
        "authorized",
        "confirmed",
        "shipped",
        "delivered",
        "completed",
    ]
    assert [h["version"] for h in completed["history"]] == list(range(1, completed["version"] + 1))
    payment = await settled(payments_client, order_id)
    assert (payment["status"], payment["captured"], payment["refunded"]) == (
        "settled",
        total,
        0,
    )

    # A customer token cannot report a delivery; the fulfilment scope is needed.
    assert (
        await service.client.post(f"{path}/{first_parcel}/delivered", headers=keyed(ola))
    ).status_code == 403

    # Return one unit of the first line: refunded at the price paid, restocked where received.
    too_many = await service.client.post(
        f"/v1/orders/{order_id}/returns",
        json={"lines": [{"sku": shop.sku, "quantity": 3}]},
        headers=keyed(ola),
    )
    assert too_many.status_code == 409, too_many.text
    assert too_many.json()["errors"][0]["field"] == f"lines.{shop.sku}.quantity"
    asked = await service.client.post(
        f"/v1/orders/{order_id}/returns",
        json={"lines": [{"sku": shop.sku, "quantity": 1}], "reason": "too small"},
        headers=keyed(ola),
    )
    assert asked.status_code == 201, asked.text
    assert (asked.json()["refund_amount"], asked.json()["status"]) == (PRICE, "requested")
    return_id = asked.json()["return_id"]
    location = confirmed["allocations"][0]["location_id"]
    desk = keyed(bearer(stack.settings, "returns-desk", FULFIL))
    received = await service.client.post(
        f"/v1/orders/{order_id}/returns/{return_id}/receive",
        json={"location_id": location, "sellable": True},
        headers=desk,
    )
    assert received.status_code == 200, received.text
    again = await service.client.post(
        f"/v1/orders/{order_id}/returns/{return_id}/receive",
        json={"location_id": location, "sellable": True},
        headers=desk,
    )
    assert again.headers.get("Idempotent-Replayed") == "true"

    async def refunded() -> Any:
        view = (await service.client.get(f"/v1/orders/{order_id}")).json()
        return view if view["returns"][0]["status"] == "settled" else None

    await wait_for(refunded, 30, what="the return to be settled")
    payment = await settled(payments_client, order_id)
    assert (payment["captured"], payment["refunded"]) == (total, PRICE)
    assert await on_hand(inventory_client, shop.sku) == shop.on_hand - 1
    history = await service.client.get(f"/v1/orders/{order_id}/history", headers=ola)
    assert [h["reason"] for h in history.json()["history"]][-3:] == [
        "return_requested",
        "return_received",
        "return_settled",
    ]


async def test_try_before_you_buy_with_two_of_three_lines_sent_back_captures_only_the_kept_line(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    kept_sku, *sent_back = await more_skus(stack, inventory_client, shop, [3_000, 5_000, 7_000])
    prices = dict(zip([kept_sku, *sent_back], [3_000, 5_000, 7_000], strict=True))
    pia = as_customer(stack, "pia")
    reservation = await checkout(inventory_client, shop, 0, "pia", dict.fromkeys(prices, 1))
    body = order_body(shop, reservation, method="try_before_you_buy", instrument="tok_tbyb")
    body["lines"] = [{"sku": s, "quantity": 1, "unit_price": p} for s, p in prices.items()]
    placed = await service.client.post("/v1/orders", json=body, headers=keyed(pia))
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    confirmed = await reaches(service, order_id, "confirmed")
    await ship_everything(stack, confirmed)
    await reaches(service, order_id, "shipped")

    store = bearer(stack.settings, "locker-network", FULFIL)
    ready = await service.client.post(
        f"/v1/orders/{order_id}/ready-for-pickup", json={}, headers=keyed(store)
    )
    assert ready.status_code == 200, ready.text
    code = ready.json()["pickup_code"]
    assert (ready.json()["status"], len(code)) == ("ready_for_pickup", 8)
    wrong = await service.client.post(
        f"/v1/orders/{order_id}/collect", json={"pickup_code": "00000000"}, headers=keyed(store)
    )
    assert wrong.status_code == 409
    assert wrong.json()["errors"][0]["field"] == "pickup_code"
    collected = await service.client.post(
        f"/v1/orders/{order_id}/collect", json={"pickup_code": code}, headers=keyed(store)
    )
    assert collected.status_code == 200, collected.text
    in_trial = collected.json()
    assert in_trial["status"] == "in_trial"
    assert in_trial["trial_ends_at"]

    async def window_opened() -> Any:
        payment = await settled(payments_client, order_id)
        return payment if payment["trial_ends_at"] else None

    payment = await wait_for(window_opened, 30, what="payments to hold for the trial")
    assert payment["trial_ends_at"][:16] == in_trial["trial_ends_at"][:16]

    # Another customer cannot answer the trial; an unknown line is named.
    other = await service.client.post(
        f"/v1/orders/{order_id}/trial-decisions",
        json={"lines": [{"sku": kept_sku, "decision": "keep"}]},
        headers=keyed(as_customer(stack, "mallory")),
    )
    assert other.status_code == 404, other.text
    unknown = await service.client.post(
        f"/v1/orders/{order_id}/trial-decisions",
        json={"lines": [{"sku": "NOT-MINE", "decision": "keep"}]},
        headers=keyed(pia),
    )
    assert (unknown.status_code, unknown.json()["errors"][0]["field"]) == (409, "lines.NOT-MINE")

    back = await service.client.post(
        f"/v1/orders/{order_id}/trial-decisions",
        json={"lines": [{"sku": sku, "decision": "return"} for sku in sent_back]},
        headers=keyed(pia),
    )
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "in_trial"  # one line is still undecided
    changed_mind = await service.client.post(
        f"/v1/orders/{order_id}/trial-decisions",
        json={"lines": [{"sku": sent_back[0], "decision": "keep"}]},
        headers=keyed(pia),
    )
    assert changed_mind.status_code == 409, changed_mind.text
    keep = await service.client.post(
        f"/v1/orders/{order_id}/trial-decisions",
        json={"lines": [{"sku": kept_sku, "decision": "keep"}]},
        headers=keyed(pia),
    )
    assert keep.status_code == 200, keep.text

    completed = await reaches(service, order_id, "completed")
    payment = await settled(payments_client, order_id)
    assert (payment["captured"], payment["refunded"], payment["capturable"]) == (3_000, 0, 0)
    assert {x["sku"]: x["decision"] for x in completed["lines"]} == {
        kept_sku: "keep",
        **dict.fromkeys(sent_back, "return"),
    }

    # The two lines come back to the warehouse: restocked, nothing refunded (never charged).
    (trial_return,) = completed["returns"]
    assert (trial_return["kind"], trial_return["refund_amount"]) == ("trial", 0)
    location = confirmed["allocations"][0]["location_id"]
    received = await service.client.post(
        f"/v1/orders/{order_id}/returns/{trial_return['return_id']}/receive",
        json={"location_id": location, "sellable": True},
        headers=keyed(bearer(stack.settings, "returns-desk", FULFIL)),
    )
    assert received.status_code == 200, received.text

    async def restocked() -> bool:
        counts = [await on_hand(inventory_client, sku) for sku in sent_back]
        return counts == [10, 10]

    await wait_for(restocked, 30, what="the trial return to be restocked")
    assert await on_hand(inventory_client, kept_sku) == 9
    payment = await settled(payments_client, order_id)
    assert (payment["captured"], payment["refunded"]) == (3_000, 0)


async def test_a_trial_window_that_closes_unanswered_charges_every_line_not_sent_back(
    stack: Stack,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    clock = ManualClock(SystemClock().now())
    # The shop's channel ends in a random suffix: this market gets a 30-day trial.
    own = stack.orders_settings(trial_days=14, trial_days_by_market={shop.channel[-8:]: 30})
    async with orders_service(stack, clock=clock, own=own) as running:
        undecided, sent_back = await more_skus(stack, inventory_client, shop, [2_000, 9_000])
        reservation = await checkout(
            inventory_client, shop, 0, "quinn", {undecided: 2, sent_back: 1}
        )
        body = order_body(shop, reservation, method="try_before_you_buy", instrument="tok_tbyb")
        body["lines"] = [
            {"sku": undecided, "quantity": 2, "unit_price": 2_000},
            {"sku": sent_back, "quantity": 1, "unit_price": 9_000},
        ]
        body["delivery"] = HOME
        quinn = as_customer(stack, "quinn")
        placed = await running.client.post("/v1/orders", json=body, headers=keyed(quinn))
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]

        async def moving(status: str) -> Any:
            # Retries and polls are due on the order's clock: it moves on while we wait.
            clock.advance(timedelta(seconds=2))
            view = (await running.client.get(f"/v1/orders/{order_id}")).json()
            return view if view["status"] == status else None

        confirmed = await wait_for(lambda: moving("confirmed"), 30, what="confirmed")
        (parcel,) = await ship_everything(stack, confirmed)
        await wait_for(lambda: moving("shipped"), 30, what="shipped")
        carrier = keyed(bearer(stack.settings, "carrier", FULFIL))
        delivered = await running.client.post(
            f"/v1/orders/{order_id}/shipments/{parcel}/delivered", headers=carrier
        )
        assert delivered.status_code == 200, delivered.text
        trial = delivered.json()
        assert trial["status"] == "in_trial"
        ends = datetime.fromisoformat(trial["trial_ends_at"])
        assert ends - clock.now() == timedelta(days=30)

        answered = await running.client.post(
            f"/v1/orders/{order_id}/trial-decisions",
            json={"lines": [{"sku": sent_back, "decision": "return"}]},
            headers=keyed(quinn),
        )
        assert answered.status_code == 200, answered.text
        clock.advance(timedelta(days=29))
        await asyncio.sleep(0)  # nothing is due before the window closes
        assert (await running.client.get(f"/v1/orders/{order_id}")).json()["status"] == "in_trial"
        clock.advance(timedelta(days=1))
        late = await running.client.post(
            f"/v1/orders/{order_id}/trial-decisions",
            json={"lines": [{"sku": undecided, "decision": "return"}]},
            headers=keyed(quinn),
        )
        assert late.status_code == 409, late.text

        completed = await wait_for(lambda: moving("completed"), 30, what="completed")
        assert {x["sku"]: x["decision"] for x in completed["lines"]} == {
            undecided: "keep",
            sent_back: "return",
        }
        payment = await settled(payments_client, order_id)
        assert (payment["captured"], payment["refunded"], payment["capturable"]) == (4_000, 0, 0)


async def test_redeemed_points_are_held_committed_on_completion_released_on_cancel_or_refused(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    lena = as_customer(stack, "lena")
    loyalty = httpx.AsyncClient(
        base_url=stack.loyalty_url, headers=bearer(stack.settings, "crm", ["loyalty:read"])
    )

    async def place(quantity: int, points: int) -> str:
        reservation = await checkout(inventory_client, shop, quantity, "lena")
        body = order_body(shop, reservation, quantity, points=points)
        body["delivery"] = HOME
        placed = await service.client.post("/v1/orders", json=body, headers=keyed(lena))
        assert placed.status_code == 201, placed.text
        order_id: str = placed.json()["order_id"]
        return order_id

    async def complete(order_id: str) -> Any:
        confirmed = await reaches(service, order_id, "confirmed")
        (parcel,) = await ship_everything(stack, confirmed)
        await reaches(service, order_id, "shipped")
        carrier = keyed(bearer(stack.settings, "carrier", FULFIL))
        delivered = await service.client.post(
            f"/v1/orders/{order_id}/shipments/{parcel}/delivered", headers=carrier
        )
        assert delivered.status_code == 200, delivered.text
        return await reaches(service, order_id, "completed")

    async def balance() -> int:
        members = (await loyalty.get("/v1/members", params={"customer_id": "lena"})).json()
        return sum(m["balance"] for m in members["members"])

    async with loyalty:
        # A first order earns its points (the window is 0 days here): 2 × 25.00 → 50 points.
        await complete(await place(2, 0))

        async def earned() -> int | None:
            found = await balance()
            return found if found > 0 else None

        points = await wait_for(earned, 30, what="points earned")
        assert points == 2 * PRICE // 100

        # More than the balance: refused, and the order is compensated and cancelled.
        too_many = await place(1, points + 1)
        cancelled = await reaches(service, too_many, "cancelled")
        assert cancelled["cancel_reason"] == "loyalty_points_refused"
        assert (await settled(payments_client, too_many))["status"] == "voided"

        # Held while the order is under way, spent when it completes.
        paid_with_points = await place(1, 30)
        await reaches(service, paid_with_points, "confirmed")
        hold = (await loyalty.get(f"/v1/holds/{paid_with_points}")).json()
        assert (hold["status"], hold["points"]) == ("held", 30)
        assert await balance() == points - 30

        # A cancelled order gives its held points back.
        cancelled_later = await place(1, 10)
        await reaches(service, cancelled_later, "confirmed")
        cancel = await service.client.post(
            f"/v1/orders/{cancelled_later}/cancel", headers=keyed(lena)
        )
        assert cancel.status_code == 200, cancel.text
        await reaches(service, cancelled_later, "cancelled")
        released = (await loyalty.get(f"/v1/holds/{cancelled_later}")).json()
        assert released["status"] == "released"

        await complete(paid_with_points)

        async def spent() -> bool:
            view = (await service.client.get(f"/v1/orders/{paid_with_points}")).json()
            return bool(view["points_status"] == "committed")

        # Spending the points is the step after completion.
        await wait_for(spent, 30, what="the held points spent")
        committed = (await loyalty.get(f"/v1/holds/{paid_with_points}")).json()
        assert committed["status"] == "committed"


async def test_a_parcel_nobody_collects_goes_back_cancels_the_order_and_is_restocked(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    payments_client: httpx.AsyncClient,
) -> None:
    reservation = await checkout(inventory_client, shop, 2, "uma")
    placed = await service.client.post(
        "/v1/orders",
        json=order_body(shop, reservation, 2),
        headers=keyed(as_customer(stack, "uma")),
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    confirmed = await reaches(service, order_id, "confirmed")
    await ship_everything(stack, confirmed)
    await reaches(service, order_id, "shipped")
    ready = await service.client.post(
        f"/v1/orders/{order_id}/ready-for-pickup",
        json={},
        headers=keyed(bearer(stack.settings, "locker-network", FULFIL)),
    )
    assert ready.status_code == 200, ready.text
    assert await on_hand(inventory_client, shop.sku) == shop.on_hand - 2

    # As collection points announce it after the parcel waited its days, twice.
    expired = places.ParcelExpired(
        booking_id=str(uuid.uuid4()),
        order_id=order_id,
        customer_id="uma",
        point_id="locker-waw-17",
        version=2,
        status="expired",
        arrived_at=SystemClock().now().isoformat(),
        collect_by=SystemClock().now().isoformat(),
        expired_at=SystemClock().now().isoformat(),
        disposition="return_to_sender",
    )
    _, value = events.encode(
        expired,
        source="collection-points",
        subject=order_id,
        time=SystemClock().now(),
        aggregate_version=2,
    )
    producer = kafka.create_producer(stack.settings)
    for _ in range(2):
        producer.produce(places.PARCELS.name, key=order_id.encode(), value=value)
    assert producer.flush(20) == 0

    cancelled = await reaches(service, order_id, "cancelled")
    assert cancelled["cancel_reason"] == "not_collected"
    assert (await settled(payments_client, order_id))["status"] == "voided"
    (back,) = cancelled["returns"]
    assert (back["kind"], back["status"], back["refund_amount"]) == ("uncollected", "requested", 0)
    assert [(x["sku"], x["quantity"]) for x in back["lines"]] == [(shop.sku, 2)]

    received = await service.client.post(
        f"/v1/orders/{order_id}/returns/{back['return_id']}/receive",
        json={"location_id": confirmed["allocations"][0]["location_id"], "sellable": True},
        headers=keyed(bearer(stack.settings, "returns-desk", FULFIL)),
    )
    assert received.status_code == 200, received.text

    async def restocked() -> bool:
        return await on_hand(inventory_client, shop.sku) == shop.on_hand

    await wait_for(restocked, 30, what="the parcel's units back on hand")

    async def return_settled() -> bool:
        # Inventory restocks before orders records the return settled: the two are a moment
        # apart, and nothing else is left to do then.
        final = (await service.client.get(f"/v1/orders/{order_id}")).json()
        return (final["status"], final["returns"][0]["status"], final["step"]) == (
            "cancelled",
            "settled",
            None,
        )

    await wait_for(return_settled, 30, what="the return settled and the order at rest")
