"""The storefront against the real services: a count committed in inventory and a price set in
pricing go through their outboxes, relays and the real topics into the storefront's read
model, and come out of its API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from omnistock.inventory.api import build_app as inventory_app
from omnistock.platform.settings import Settings
from omnistock.pricing.api import build_app as pricing_app
from omnistock.storefront.api import build_app as storefront_app
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    served,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def schemas(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    inventory = await create_service_schema(settings, "inventory", "omnistock.inventory")
    pricing = await create_service_schema(settings, "pricing", "omnistock.pricing")
    yield inventory, pricing
    await drop_schema(settings, inventory)
    await drop_schema(settings, pricing)


async def figures(client: httpx.AsyncClient, channel: str, sku: str) -> dict[str, Any] | None:
    answer = await client.get(f"/v1/channels/{channel}/skus/{sku}")
    return answer.json() if answer.status_code == 200 else None


async def test_stock_and_price_changes_reach_the_storefront(
    settings: Settings, schemas: tuple[str, str]
) -> None:
    inventory_schema, pricing_schema = schemas
    channel, warehouse, sku = unique("brand-pl"), unique("wh"), unique("SKU")
    internal = bearer(settings, "web-backend", ["storefront:quantities", "metrics:read"])
    async with (
        served(
            inventory_app(settings, schema=inventory_schema),
            bearer(settings, "wms", ["inventory:admin", "inventory:write"]),
        ) as inventory,
        served(
            pricing_app(settings, schema=pricing_schema),
            bearer(settings, "erp", ["pricing:admin", "pricing:write"]),
        ) as pricing,
        served(storefront_app(settings), internal) as storefront,
    ):
        # Ready only once it holds what the topics held when it started.
        await wait_for(
            lambda: _ready(storefront), 120, what="the storefront to catch up with the topics"
        )
        for path, body in (
            (f"/v1/locations/{warehouse}", {"kind": "warehouse", "country": "PL", "name": "w"}),
            (
                f"/v1/channels/{channel}",
                {
                    "brand": "b",
                    "market": "PL",
                    "sourcing": [{"location_id": warehouse, "priority": 1}],
                },
            ),
            (f"/v1/stock/{warehouse}/{sku}", {"on_hand": 40, "source": "wms", "sequence": 1}),
        ):
            assert (await inventory.put(path, json=body)).status_code == 200
        answer = await pricing.put(
            f"/v1/price-lists/{channel}", json={"currency": "PLN", "vat_rate_basis_points": 2300}
        )
        assert answer.status_code == 200, answer.text
        answer = await pricing.post(
            f"/v1/price-lists/{channel}/prices",
            json={"prices": [{"sku": sku, "amount": 12_999}]},
            headers={"Idempotency-Key": unique("key")},
        )
        assert answer.status_code == 200, answer.text

        async def both_arrived() -> dict[str, Any] | None:
            found = await figures(storefront, channel, sku)
            return found if found and found["available"] == 40 and found["price"] else None

        shown = await wait_for(both_arrived, 30, what="stock and price in the storefront")
        assert shown["status"] == "in_stock"
        assert (shown["price"], shown["regular_price"], shown["currency"]) == (
            12_999,
            12_999,
            "PLN",
        )
        assert shown["reduced"] is False
        assert shown["versions"]["availability"] >= 1
        assert shown["versions"]["price"] >= 1

        # A count down to the low-stock threshold (5 by default) and a new price.
        answer = await inventory.put(
            f"/v1/stock/{warehouse}/{sku}", json={"on_hand": 3, "source": "wms", "sequence": 2}
        )
        assert answer.status_code == 200
        answer = await pricing.post(
            f"/v1/price-lists/{channel}/prices",
            json={"prices": [{"sku": sku, "amount": 9_999}]},
            headers={"Idempotency-Key": unique("key")},
        )
        assert answer.status_code == 200

        async def changed() -> dict[str, Any] | None:
            found = await figures(storefront, channel, sku)
            return found if found and (found["available"], found["price"]) == (3, 9_999) else None

        now = await wait_for(changed, 30, what="the new stock and price in the storefront")
        assert now["status"] == "low_stock"
        assert now["versions"]["availability"] > shown["versions"]["availability"]
        assert now["versions"]["price"] > shown["versions"]["price"]

        customer = await storefront.get(
            f"/v1/channels/{channel}/skus/{sku}", headers=bearer(settings, "c-1", ["customer"])
        )
        assert customer.status_code == 200
        assert "available" not in customer.json()
        assert customer.json()["status"] == "low_stock"

        listing = await storefront.get(
            f"/v1/channels/{channel}/skus", params={"skus": f"{sku},NOT-SOLD-HERE"}
        )
        assert listing.json()["skus"] == {
            sku: {k: v for k, v in now.items() if k not in {"channel", "sku", "staleness_ms"}},
            "NOT-SOLD-HERE": None,
        }
        metrics = (await storefront.get("/metrics")).text
        assert "omnistock_storefront_lag_messages{" in metrics
        assert "omnistock_storefront_ready 1.0" in metrics


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
