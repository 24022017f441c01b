"""Orders placed without a checkout reservation: the intake reserves their lines itself at
inventory, all or nothing, once per Idempotency-Key. Over the real services of the orders
end-to-end stack (inventory, pricing, payments and the PSP simulator as processes of their
own; orders in this process)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from omnistock.orders import service as orders_service
from omnistock.orders.api import intake
from omnistock.orders.api.schemas import OrderIn
from omnistock.orders.participants import Participants
from tests.integration import test_orders_e2e as e2e
from tests.integration.test_orders_e2e import (
    PRICE,
    Orders,
    Shop,
    Stack,
    as_customer,
    inventory_client,
    keyed,
    order_body,
    reaches,
    service,
    shop,
    stack,
    stock,
)

pytestmark = pytest.mark.integration

# The end-to-end module's fixtures, shared with this module's tests (pytest finds them here).
__all__ = ["inventory_client", "service", "shop", "stack"]


def unreserved(shop: Shop, quantity: int, **changes: Any) -> dict[str, Any]:
    body = order_body(shop, "", quantity, **changes)
    del body["reservation_id"]
    return body


async def orders_of(service: Orders, customer: str) -> int:
    count: int = await service.pool.fetchval(
        "SELECT count(*) FROM orders WHERE customer_id = $1", customer
    )
    return count


async def reservation(inventory_client: httpx.AsyncClient, reservation_id: str) -> Any:
    response = await inventory_client.get(f"/v1/reservations/{reservation_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_order_without_a_reservation_reserves_its_lines_and_is_confirmed(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    placed = await service.client.post(
        "/v1/orders", json=unreserved(shop, 2), headers=keyed(as_customer(stack, "lena"))
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert (order["status"], order["customer_id"], order["total"]) == ("placed", "lena", 2 * PRICE)
    held = await reservation(inventory_client, order["reservation_id"])
    assert (held["channel_id"], held["customer_id"]) == (shop.channel, "lena")
    assert [(line["sku"], line["quantity"]) for line in held["lines"]] == [(shop.sku, 2)]

    confirmed = await reaches(service, order["order_id"], "confirmed")
    assert [h["status"] for h in confirmed["history"]] == [
        "placed",
        "allocated",
        "authorized",
        "confirmed",
    ]
    assert (await reservation(inventory_client, order["reservation_id"]))["status"] == "committed"
    assert await stock(inventory_client, shop) == (0, 2, shop.on_hand - 2)


async def test_an_order_for_more_than_the_stock_is_a_409_naming_the_sku_and_reserves_nothing(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    refused = await service.client.post(
        "/v1/orders",
        json=unreserved(shop, shop.on_hand + 1),
        headers=keyed(as_customer(stack, "mila")),
    )
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"] == "urn:omnistock:problem:out-of-stock"
    assert shop.sku in problem["detail"]
    assert problem["errors"] == [
        {
            "field": "lines[0].quantity",
            "sku": shop.sku,
            "requested": shop.on_hand + 1,
            "available": shop.on_hand,
            "message": f"{shop.on_hand + 1} requested, {shop.on_hand} available",
        }
    ]
    assert await stock(inventory_client, shop) == (0, 0, shop.on_hand)
    assert await orders_of(service, "mila") == 0
    kept = "SELECT count(*) FROM idempotency_keys WHERE principal = 'mila'"
    assert await service.pool.fetchval(kept) == 0  # once stock comes, the request may come again


async def test_a_price_refusal_reserves_nothing(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    refused = await service.client.post(
        "/v1/orders",
        json=unreserved(shop, 1, unit_price=PRICE + 1),
        headers=keyed(as_customer(stack, "nina")),
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "urn:omnistock:problem:price-changed"
    assert await stock(inventory_client, shop) == (0, 0, shop.on_hand)


async def test_a_repeated_idempotency_key_reserves_once_and_places_one_order(
    stack: Stack, service: Orders, shop: Shop, inventory_client: httpx.AsyncClient
) -> None:
    headers = keyed(as_customer(stack, "olga"))
    body = unreserved(shop, 3)
    first, second = await asyncio.gather(
        service.client.post("/v1/orders", json=body, headers=headers),
        service.client.post("/v1/orders", json=body, headers=headers),
    )
    third = await service.client.post("/v1/orders", json=body, headers=headers)
    assert first.status_code == second.status_code == third.status_code == 201, first.text
    assert first.json() == second.json() == third.json()
    assert third.headers["Idempotent-Replayed"] == "true"
    assert await orders_of(service, "olga") == 1
    reserved, allocated, available = await stock(inventory_client, shop)
    assert (reserved + allocated, available) == (3, shop.on_hand - 3)
    await reaches(service, first.json()["order_id"], "confirmed")
    assert await stock(inventory_client, shop) == (0, 3, shop.on_hand - 3)


async def test_an_order_not_written_gives_back_its_reservation_and_a_retry_reserves_again(
    stack: Stack,
    service: Orders,
    shop: Shop,
    inventory_client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def database_away(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(orders_service, "placed_order", database_away)
    headers = keyed(as_customer(stack, "pia"))
    body = unreserved(shop, 4)
    # In process the app's error reaches the client as it is (a server answers 500).
    with pytest.raises(ConnectionResetError):
        await service.client.post("/v1/orders", json=body, headers=headers)
    assert await stock(inventory_client, shop) == (0, 0, shop.on_hand)
    assert await orders_of(service, "pia") == 0

    monkeypatch.undo()
    # The same request again: the first reservation is released, so it reserves anew.
    placed = await service.client.post("/v1/orders", json=body, headers=headers)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    uuid.UUID(order["reservation_id"])
    assert (await reservation(inventory_client, order["reservation_id"]))["status"] in (
        "active",
        "committed",
    )
    await reaches(service, order["order_id"], "confirmed")
    assert await stock(inventory_client, shop) == (0, 4, shop.on_hand - 4)
    assert await orders_of(service, "pia") == 1


async def test_beyond_the_orders_being_placed_at_once_a_placement_is_a_503_to_retry(
    stack: Stack, shop: Shop, inventory_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    priced, go_on = asyncio.Event(), asyncio.Event()
    check_prices = intake.check_prices

    async def slow_pricing(participants: Participants, order: OrderIn, tolerance: int) -> None:
        priced.set()
        await go_on.wait()
        await check_prices(participants, order, tolerance)

    monkeypatch.setattr(intake, "check_prices", slow_pricing)
    own = stack.orders_settings(placements_in_flight=1)
    async with e2e.orders_service(stack, own=own) as running:
        headers = keyed(as_customer(stack, "rita"))
        first = asyncio.create_task(
            running.client.post("/v1/orders", json=unreserved(shop, 1), headers=headers)
        )
        await asyncio.wait_for(priced.wait(), 10)
        turned_away = await running.client.post(
            "/v1/orders", json=unreserved(shop, 2), headers=keyed(as_customer(stack, "rita"))
        )
        assert turned_away.status_code == 503, turned_away.text
        assert turned_away.headers["content-type"].startswith("application/problem+json")
        assert turned_away.headers["Retry-After"] == "1"
        assert turned_away.json()["type"] == "urn:omnistock:problem:busy"
        go_on.set()
        assert (await first).status_code == 201
        assert await orders_of(running, "rita") == 1
        assert await stock(inventory_client, shop) in (
            (0, 1, shop.on_hand - 1),
            (1, 0, shop.on_hand - 1),
        )
        again = await running.client.post(
            "/v1/orders", json=unreserved(shop, 2), headers=keyed(as_customer(stack, "rita"))
        )
        assert again.status_code == 201, again.text
