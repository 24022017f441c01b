"""Abuse of the reservation flow (OWASP API6, unrestricted access to a sensitive business flow):
a flash-sale limit per customer, and a rate limit per client. The app is served in this process
against the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from omnistock.inventory.api import build_app
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    reserved_units,
    served,
    stocked_channel,
    unique,
)

pytestmark = pytest.mark.integration

ADMIN = ["inventory:admin", "inventory:read", "inventory:write", "inventory:reserve"]
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    schema = await create_service_schema(settings, "inventory", "omnistock.inventory")
    yield schema
    await drop_schema(settings, schema)


async def reserve(
    client: httpx.AsyncClient, channel: str, sku: str, quantity: int, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/v1/reservations",
        json={"channel_id": channel, "lines": [{"sku": sku, "quantity": quantity}], **extra},
        headers={"Idempotency-Key": unique("key")},
    )


def assert_customer_limit(response: httpx.Response, sku: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"].endswith("customer-limit")
    assert [error["sku"] for error in problem["errors"]] == [sku]


async def test_a_customer_gets_at_most_the_channels_units_per_customer(
    settings: Settings, schema: str
) -> None:
    app = build_app(settings, schema=schema)
    async with served(app, bearer(settings, "storefront", ADMIN)) as client:
        sku = unique("SNEAKER")
        channel = await stocked_channel(client, sku, on_hand=20, max_units_per_customer=2)
        alice, bob = unique("alice"), unique("bob")

        first = await reserve(client, channel, sku, 1, customer_id=alice)
        assert first.status_code == 201, first.text
        assert_customer_limit(await reserve(client, channel, sku, 2, customer_id=alice), sku)
        second = await reserve(client, channel, sku, 1, customer_id=alice)
        assert second.status_code == 201, second.text
        # A third unit across two reservations is one too many, however it is asked for.
        assert_customer_limit(await reserve(client, channel, sku, 1, customer_id=alice), sku)
        assert_customer_limit(
            await reserve(client, channel, sku, 1, customer_id=alice, mode="per_line"), sku
        )
        # Someone else still gets units, and the refusals held nothing.
        other = await reserve(client, channel, sku, 2, customer_id=bob)
        assert other.status_code == 201, other.text
        assert await reserved_units(client, sku) == 4

        # Units given back count no more: the limit is on what a customer holds.
        released = await client.delete(f"/v1/reservations/{first.json()['reservation_id']}")
        assert released.status_code == 204, released.text
        again = await reserve(client, channel, sku, 1, customer_id=alice)
        assert again.status_code == 201, again.text


async def test_concurrent_reservations_of_one_customer_stay_within_the_limit(
    settings: Settings, schema: str
) -> None:
    """A bot firing in parallel gets no more than a patient customer."""
    app = build_app(settings, schema=schema)
    async with served(app, bearer(settings, "storefront", ADMIN)) as client:
        sku = unique("CONSOLE")
        channel = await stocked_channel(client, sku, on_hand=50, max_units_per_customer=2)
        bot = unique("bot")
        answers = await asyncio.gather(
            *(reserve(client, channel, sku, 1, customer_id=bot) for _ in range(12))
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] * 2 + [409] * 10
        for refused in (a for a in answers if a.status_code == 409):
            assert_customer_limit(refused, sku)
        assert await reserved_units(client, sku) == 2


async def test_a_client_over_its_burst_gets_429_with_retry_after_and_others_are_unaffected(
    settings: Settings, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNISTOCK_INVENTORY_RESERVATIONS_PER_CLIENT_PER_S", "1")
    monkeypatch.setenv("OMNISTOCK_INVENTORY_RESERVATION_BURST", "3")
    app = build_app(settings, schema=schema)
    async with served(app, bearer(settings, "admin", ADMIN)) as admin:
        sku = unique("GPU")
        channel = await stocked_channel(
            client=admin, sku=sku, on_hand=50, max_units_per_customer=None
        )
        greedy, polite = (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=admin.base_url,
                headers=bearer(settings, subject, ["inventory:reserve"]),
            )
            for subject in ("greedy-platform", "polite-platform")
        )
        async with greedy, polite:
            for _ in range(3):
                granted = await reserve(greedy, channel, sku, 1)
                assert granted.status_code == 201, granted.text
            limited = await reserve(greedy, channel, sku, 1)
            assert limited.status_code == 429, limited.text
            assert limited.headers["content-type"] == PROBLEM_JSON
            assert limited.json()["type"].endswith("rate-limited")
            retry_after = int(limited.headers["Retry-After"])
            assert retry_after >= 1

            unaffected = await reserve(polite, channel, sku, 1)
            assert unaffected.status_code == 201, unaffected.text
            assert await reserved_units(admin, sku) == 4  # the refused request held nothing

            await asyncio.sleep(retry_after + 0.1)  # the bucket refills at 1 per second
            later = await reserve(greedy, channel, sku, 1)
            assert later.status_code == 201, later.text


async def test_ordering_does_not_reset_the_limit_and_anonymous_reservations_are_refused(
    settings: Settings, schema: str
) -> None:
    app = build_app(settings, schema=schema)
    scopes = [*ADMIN, "inventory:allocate"]
    async with served(app, bearer(settings, "storefront", scopes)) as client:
        sku = unique("DROP")
        channel = await stocked_channel(client, sku, on_hand=20, max_units_per_customer=2)
        first = await reserve(client, channel, sku, 2, customer_id="c-1")
        assert first.status_code == 201, first.text
        committed = await client.post(
            f"/v1/reservations/{first.json()['reservation_id']}/commit", json={"order_id": "o-1"}
        )
        assert committed.status_code == 200, committed.text
        # Reserve, order, repeat: the ordered units still count.
        assert_customer_limit(await reserve(client, channel, sku, 1, customer_id="c-1"), sku)
        anonymous = await reserve(client, channel, sku, 1)
        assert anonymous.status_code == 422
        assert anonymous.json()["errors"] == [
            {"field": "customer_id", "message": "required in this channel"}
        ]
        assert await reserved_units(client, sku) == 0
