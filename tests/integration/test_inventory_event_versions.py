"""Versions of the inventory events keyed by an aggregate that several kinds of event share:
each event one more than the last of its key, whatever wrote it, so that a reader dropping
stale events by version drops none of these."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from omnistock.platform.settings import Settings
from tests.integration.inventory_in_process import Inventory, inventory_in_process

pytestmark = pytest.mark.integration


@pytest.fixture
async def inventory(settings: Settings) -> AsyncIterator[Inventory]:
    async with inventory_in_process(settings) as inventory:
        yield inventory


async def count(inventory: Inventory, sku: str, on_hand: int, source: str, sequence: int) -> None:
    response = await inventory.client.put(
        f"/v1/stock/wh-1/{sku}",
        json={"on_hand": on_hand, "source": source, "sequence": sequence},
        headers=inventory.token("inventory:write"),
    )
    assert response.json()["status"] == "applied", response.text


async def reserve(inventory: Inventory, key: str, *lines: tuple[str, int]) -> str:
    response = await inventory.client.post(
        "/v1/reservations",
        json={"channel_id": "brand-pl", "lines": [{"sku": s, "quantity": q} for s, q in lines]},
        headers={**inventory.token("inventory:reserve"), "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["reservation_id"]
    return reservation_id


async def allocate(inventory: Inventory, reservation_id: str, order_id: str) -> dict[str, str]:
    """The order's allocation ids by SKU."""
    response = await inventory.client.post(
        f"/v1/reservations/{reservation_id}/commit",
        json={"order_id": order_id},
        headers=inventory.token("inventory:allocate"),
    )
    assert response.status_code == 200, response.text
    return {a["sku"]: a["allocation_id"] for a in response.json()["allocations"]}


def versions(events: list[dict[str, Any]], subject: str) -> list[tuple[str, int]]:
    return [
        (e["type"].split(".")[2], e["aggregateversion"]) for e in events if e["subject"] == subject
    ]


async def test_an_orders_allocation_events_count_up_through_shipment_and_release(
    inventory: Inventory,
) -> None:
    await count(inventory, "S-1", 10, "till", 1)
    await count(inventory, "T-1", 10, "till", 1)
    first = await allocate(
        inventory, await reserve(inventory, "r-1", ("S-1", 3), ("T-1", 2)), "o-1"
    )
    await allocate(inventory, await reserve(inventory, "r-2", ("S-1", 1)), "o-2")
    shipped = await inventory.client.post(
        f"/v1/orders/o-1/allocations/{first['S-1']}/ship",
        json={"shipment_id": "parcel-1"},
        headers=inventory.token("inventory:fulfil"),
    )
    assert shipped.status_code == 200, shipped.text
    for order in ("o-1", "o-2"):
        cancelled = await inventory.client.post(
            f"/v1/orders/{order}/cancel", json={}, headers=inventory.token("inventory:allocate")
        )
        assert cancelled.json()["released"] == 1, cancelled.text

    events = [
        *await inventory.events("stock-allocated"),
        *await inventory.events("allocation-shipped"),
        *await inventory.events("allocation-released"),
    ]
    assert sorted(versions(events, "o-1"), key=lambda e: e[1]) == [
        ("stock-allocated", 1),
        ("allocation-shipped", 2),
        ("allocation-released", 3),
    ]
    assert sorted(versions(events, "o-2"), key=lambda e: e[1]) == [
        ("stock-allocated", 1),
        ("allocation-released", 2),
    ]


async def test_shortages_of_an_item_count_up_whichever_source_counted(
    inventory: Inventory,
) -> None:
    await count(inventory, "S-2", 5, "till", 100)
    await reserve(inventory, "r-3", ("S-2", 4))
    await count(inventory, "S-2", 2, "till", 101)  # below the 4 held: a shortage
    await count(inventory, "S-2", 5, "till", 102)
    await reserve(inventory, "r-4", ("S-2", 4))
    await count(inventory, "S-2", 1, "wms", 1)  # another source, its own small sequence

    shortages = await inventory.events("stock-shortage")
    found = [e["aggregateversion"] for e in shortages if e["subject"] == "S-2@wh-1"]
    counts = await inventory.pool.fetch(
        """SELECT movement_id FROM stock_movements
           WHERE sku = 'S-2' AND reason = 'count' AND quantity < 0 ORDER BY movement_id"""
    )
    assert found == [r["movement_id"] for r in counts]
    assert len(found) == 2
    assert found[0] < found[1]


async def test_an_order_allocated_before_versions_were_kept_ships_past_its_version_one(
    inventory: Inventory,
) -> None:
    await count(inventory, "S-3", 10, "till", 1)
    allocations = await allocate(inventory, await reserve(inventory, "r-5", ("S-3", 2)), "o-3")
    # As an instance still on the code of before: its allocated event went out as version 1
    # and it kept no version row.
    await inventory.pool.execute("DELETE FROM allocation_versions WHERE order_id = 'o-3'")
    shipped = await inventory.client.post(
        f"/v1/orders/o-3/allocations/{allocations['S-3']}/ship",
        json={"shipment_id": "parcel-3"},
        headers=inventory.token("inventory:fulfil"),
    )
    assert shipped.status_code == 200, shipped.text
    assert versions(await inventory.events("allocation-shipped"), "o-3") == [
        ("allocation-shipped", 2)
    ]
