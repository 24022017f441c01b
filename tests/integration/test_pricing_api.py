"""The pricing API over HTTP on the real database and broker, driven by a manual clock: price
lists, base prices, sales, quotes, history, the scheduler across a restart, and bad input."""

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

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.contracts.pricing import PRICES, PriceChanged
from omnistock.platform import db, events
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from omnistock.pricing.api import build_app
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
SCOPES = ["pricing:admin", "pricing:write", "pricing:read"]


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    schema = await create_service_schema(settings, "pricing", "omnistock.pricing")
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
    # Read by build_app: the scheduler looks for due prices every 50 ms.
    monkeypatch.setenv("OMNISTOCK_PRICING_SCHEDULER_INTERVAL_S", "0.05")
    return ManualClock(T0)


def pricing(
    settings: Settings, clock: ManualClock, schema: str, scopes: list[str] = SCOPES
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The pricing app, served in this process until the block ends."""
    return served(build_app(settings, clock, schema=schema), bearer(settings, "erp", scopes))


def key() -> dict[str, str]:
    return {"Idempotency-Key": unique("key")}


async def price_list(client: httpx.AsyncClient, currency: str = "PLN") -> str:
    channel = unique("brand-pl")
    response = await client.put(
        f"/v1/price-lists/{channel}",
        json={"currency": currency, "vat_rate_basis_points": 2300},
    )
    assert response.status_code == 200, response.text
    return channel


async def set_prices(client: httpx.AsyncClient, channel: str, *prices: dict[str, Any]) -> Any:
    response = await client.post(
        f"/v1/price-lists/{channel}/prices", json={"prices": list(prices)}, headers=key()
    )
    assert response.status_code == 200, response.text
    return response.json()


async def price_events(
    settings: Settings, pool: asyncpg.Pool, channel: str, start: dict[int, int]
) -> list[PriceChanged]:
    """What reached the topic for ``channel``, once the relay has sent everything."""
    await wait_for(
        lambda: pool.fetchval("SELECT NOT EXISTS (SELECT FROM outbox)"), 20, what="the relay"
    )
    messages = await asyncio.to_thread(read_topic_to_end, settings, PRICES.name, 20, start)
    found = [events.decode(m.value()) for m in messages]
    return [e.data for e in found if e is not None and e.data.channel_id == channel]  # type: ignore[attr-defined]


async def test_prices_sales_quotes_and_history_over_http(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    start = await asyncio.to_thread(end_offsets, settings, PRICES.name)
    async with pricing(settings, clock, schema) as client:
        channel = await price_list(client)
        await set_prices(
            client,
            channel,
            {"sku": "A", "amount": 9_999, "valid_from": (T0 - timedelta(days=60)).isoformat()},
            {"sku": "A", "amount": 12_999, "valid_from": (T0 - timedelta(days=10)).isoformat()},
            {"sku": "B", "amount": 5_000},
        )
        # A sale right after a price increase: the lowest price of the 30 days before it began
        # is the price before the increase.
        sale = await client.post(
            f"/v1/price-lists/{channel}/sales",
            json={
                "starts_at": "2026-11-28T00:00:00+01:00",
                "ends_at": "2026-12-02T00:00:00+01:00",
                "lines": [{"sku": "A", "amount": 8_999}, {"sku": "B", "amount": 4_000}],
            },
            headers=key(),
        )
        assert sale.status_code == 201, sale.text
        assert [s["sku"] for s in sale.json()["sales"]] == ["A", "B"]

        during = await client.post(
            f"/v1/price-lists/{channel}/quotes",
            json={"skus": ["A", "B", "C"], "at": "2026-11-29T12:00:00Z"},
        )
        assert during.status_code == 200, during.text
        prices = during.json()["prices"]
        assert prices["A"] == {
            "effective": 8_999,
            "regular": 12_999,
            "reduced": True,
            "lowest_price_30d": 9_999,
            "currency": "PLN",
            "valid_until": "2026-12-01T23:00:00+00:00",
        }
        assert prices["B"]["lowest_price_30d"] == 5_000
        assert prices["C"] is None  # no price: null, not an error

        now = await client.get(f"/v1/price-lists/{channel}/skus/A")
        assert (now.json()["effective"], now.json()["reduced"]) == (12_999, False)
        missing = await client.get(f"/v1/price-lists/{channel}/skus/C")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

        history = (await client.get(f"/v1/price-lists/{channel}/skus/A/history")).json()
        assert [b["amount"] for b in history["base_prices"]] == [9_999, 12_999]
        assert [s["amount"] for s in history["sales"]] == [8_999]
        assert history["published"]["effective"] == 12_999

        # The scheduler publishes the start of the sale when the clock reaches it.
        clock.set(datetime(2026, 11, 28, 1, tzinfo=UTC))
        await wait_for(
            lambda: _published(pool, channel, "A", 8_999), 10, what="the sale price published"
        )
        published = await price_events(settings, pool, channel, start)
    figures = sorted((e.sku, e.version, e.effective, e.lowest_30d) for e in published)
    assert figures == [
        ("A", 1, 12_999, None),
        ("A", 2, 8_999, 9_999),
        ("B", 1, 5_000, None),
        ("B", 2, 4_000, 5_000),
    ]


async def _published(pool: asyncpg.Pool, channel: str, sku: str, effective: int) -> bool:
    found = await pool.fetchval(
        "SELECT effective FROM published_prices WHERE channel_id = $1 AND sku = $2",
        channel,
        sku,
    )
    return bool(found == effective)


async def test_a_restart_in_the_middle_of_a_sale_publishes_each_transition_once(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    start = await asyncio.to_thread(end_offsets, settings, PRICES.name)
    async with pricing(settings, clock, schema) as client:
        channel = await price_list(client, "HUF")
        await set_prices(
            client,
            channel,
            {"sku": "S", "amount": 1_999_900, "valid_from": (T0 - timedelta(days=40)).isoformat()},
        )
        sale = await client.post(
            f"/v1/price-lists/{channel}/sales",
            json={
                "starts_at": (T0 + timedelta(hours=1)).isoformat(),
                "ends_at": (T0 + timedelta(hours=5)).isoformat(),
                "lines": [{"sku": "S", "amount": 1_499_900}],
            },
            headers=key(),
        )
        assert sale.status_code == 201, sale.text
        clock.set(T0 + timedelta(hours=2))  # in the window
        await wait_for(lambda: _published(pool, channel, "S", 1_499_900), 10, what="sale start")
    # Down through the end of the sale; the next replica publishes the missed end at once.
    clock.set(T0 + timedelta(hours=9))
    async with pricing(settings, clock, schema):
        await wait_for(lambda: _published(pool, channel, "S", 1_999_900), 10, what="sale end")
        published = await price_events(settings, pool, channel, start)
    # Restarting again with nothing due publishes nothing more.
    async with pricing(settings, clock, schema):
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert [(e.version, e.effective, e.reduced, e.lowest_30d) for e in published] == [
        (1, 1_999_900, False, None),
        (2, 1_499_900, True, 1_999_900),
        (3, 1_999_900, False, None),
    ]


async def _row_counts(pool: asyncpg.Pool) -> tuple[int, ...]:
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM price_lists), (SELECT count(*) FROM base_prices),
                  (SELECT count(*) FROM sales), (SELECT count(*) FROM published_prices),
                  (SELECT count(*) FROM idempotency_keys)"""
    )
    return tuple(row.values())


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("", {"currency": "XYZ", "vat_rate_basis_points": 2300}, 422, "currency"),
        ("", {"currency": "EUR", "vat_rate_basis_points": 2300}, 409, "currency"),
        ("", {"currency": "PLN", "vat_rate_basis_points": -1}, 422, "vat_rate_basis_points"),
        ("/prices", {"prices": [{"sku": "A", "amount": -1}]}, 422, "prices[0].amount"),
        ("/prices", {"prices": [{"sku": "A", "amount": 1.5}]}, 422, "prices[0].amount"),
        (
            "/prices",
            {"prices": [{"sku": "A", "amount": 1, "valid_from": "2026-12-01T00:00:00"}]},
            422,
            "prices[0].valid_from",
        ),
        ("/prices", {"prices": [{"sku": "A", "amount": 1}] * 2}, 422, "prices[1].sku"),
        (
            "/sales",
            {
                "starts_at": "2026-12-05T00:00:00Z",
                "ends_at": "2026-12-04T00:00:00Z",
                "lines": [{"sku": "A", "amount": 1}],
            },
            422,
            "ends_at",
        ),
        (
            "/sales",
            {
                "starts_at": "2026-12-02T00:00:00Z",
                "ends_at": "2026-12-04T00:00:00Z",
                "lines": [{"sku": "B", "amount": 1}, {"sku": "A", "amount": 1}],
            },
            422,
            "starts_at",
        ),
        (
            "/sales",
            {
                "starts_at": "2026-12-10T00:00:00Z",
                "ends_at": "2026-12-11T00:00:00Z",
                "lines": [{"sku": "A", "amount": -3}],
            },
            422,
            "lines[0].amount",
        ),
        ("/quotes", {"skus": [f"S{i}" for i in range(501)]}, 422, "skus"),
    ],
)
async def test_bad_input_is_a_problem_naming_the_field_and_writes_nothing(
    settings: Settings,
    clock: ManualClock,
    schema: str,
    pool: asyncpg.Pool,
    path: str,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    async with pricing(settings, clock, schema) as client:
        channel = await price_list(client)
        await set_prices(client, channel, {"sku": "A", "amount": 100})
        existing = await client.post(
            f"/v1/price-lists/{channel}/sales",
            json={
                "starts_at": "2026-12-01T00:00:00Z",
                "ends_at": "2026-12-03T00:00:00Z",
                "lines": [{"sku": "A", "amount": 80}],
            },
            headers=key(),
        )
        assert existing.status_code == 201
        before = await _row_counts(pool)
        url = f"/v1/price-lists/{channel}{path}"
        if path:
            response = await client.post(url, json=body, headers=key())
        else:
            response = await client.put(url, json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], response.json()
        if path == "/sales" and field == "starts_at":
            assert response.json()["errors"][0]["sku"] == "A"
        assert await _row_counts(pool) == before
        listed = (await client.get(f"/v1/price-lists/{channel}")).json()
        assert (listed["currency"], listed["vat_rate_basis_points"]) == ("PLN", 2300)


async def test_a_repeated_idempotency_key_answers_the_same_and_schedules_one_sale(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    async with pricing(settings, clock, schema) as client:
        channel = await price_list(client, "JPY")
        await set_prices(client, channel, {"sku": "J", "amount": 12_800})
        body = {
            "starts_at": "2026-12-01T00:00:00+09:00",
            "ends_at": "2026-12-08T00:00:00+09:00",
            "lines": [{"sku": "J", "amount": 9_800}],
        }
        headers = key()
        first = await client.post(f"/v1/price-lists/{channel}/sales", json=body, headers=headers)
        again = await client.post(f"/v1/price-lists/{channel}/sales", json=body, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert await pool.fetchval("SELECT count(*) FROM sales") == 1
        stored = await pool.fetchval("SELECT starts_at FROM sales")
        assert stored == datetime(2026, 11, 30, 15, tzinfo=UTC)  # stored in UTC
        unkeyed = await client.post(f"/v1/price-lists/{channel}/sales", json=body)
        assert unkeyed.status_code == 400
        assert unkeyed.json()["errors"][0]["field"] == "header.Idempotency-Key"


async def test_scopes_are_enforced(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    async with pricing(settings, clock, schema) as admin:
        channel = await price_list(admin)
    async with pricing(settings, clock, schema, ["pricing:read"]) as reader:
        refused = await reader.post(
            f"/v1/price-lists/{channel}/prices",
            json={"prices": [{"sku": "A", "amount": 1}]},
            headers=key(),
        )
        assert refused.status_code == 403
        assert (await reader.get(f"/v1/price-lists/{channel}")).status_code == 200
    assert await pool.fetchval("SELECT count(*) FROM base_prices") == 0


async def test_a_sale_called_off_before_it_starts_never_applies_and_a_running_one_ends_now(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    async with pricing(settings, clock, schema) as client:
        channel = await price_list(client)
        await set_prices(
            client,
            channel,
            {"sku": "A", "amount": 10_000, "valid_from": (T0 - timedelta(days=40)).isoformat()},
        )
        window = {
            "starts_at": (T0 + timedelta(days=1)).isoformat(),
            "ends_at": (T0 + timedelta(days=3)).isoformat(),
        }

        async def sale(amount: int) -> str:
            answer = await client.post(
                f"/v1/price-lists/{channel}/sales",
                json={**window, "lines": [{"sku": "A", "amount": amount}]},
                headers=key(),
            )
            assert answer.status_code == 201, answer.text
            sale_id: str = answer.json()["sales"][0]["sale_id"]
            return sale_id

        async def price_at(at: datetime) -> Any:
            answer = await client.get(
                f"/v1/price-lists/{channel}/skus/A", params={"at": at.isoformat()}
            )
            return answer.json()

        future = await sale(8_000)
        off = await client.delete(f"/v1/price-lists/{channel}/sales/{future}")
        assert off.status_code == 200, off.text
        assert (off.json()["applied"], off.json()["ends_at"]) == (False, None)
        assert (await price_at(T0 + timedelta(days=2)))["effective"] == 10_000
        again = await client.delete(f"/v1/price-lists/{channel}/sales/{future}")
        assert again.json() == off.json()
        # Its window is free again.
        running = await sale(7_000)
        clock.set(T0 + timedelta(days=2))
        await wait_for(lambda: _published(pool, channel, "A", 7_000), 10, what="sale start")
        stopped = await client.delete(f"/v1/price-lists/{channel}/sales/{running}")
        assert stopped.json()["applied"] is True
        assert stopped.json()["ends_at"] == (T0 + timedelta(days=2)).isoformat()
        assert await _published(pool, channel, "A", 10_000)  # at once, in the same transaction
        # It applied from its start until it was called off, and stays in the history.
        assert (await price_at(T0 + timedelta(days=1, hours=12)))["effective"] == 7_000
        assert (await price_at(T0 + timedelta(days=2, hours=12)))["effective"] == 10_000
        history = (await client.get(f"/v1/price-lists/{channel}/skus/A/history")).json()
        assert [s["cancelled_at"] is not None for s in history["sales"]] == [True, True]
        # So a reduction within 30 days shows its price as the lowest of the period before.
        window = {
            "starts_at": (T0 + timedelta(days=5)).isoformat(),
            "ends_at": (T0 + timedelta(days=6)).isoformat(),
        }
        later = await sale(9_000)
        assert (await price_at(T0 + timedelta(days=5, hours=1)))["lowest_price_30d"] == 7_000
        clock.set(T0 + timedelta(days=7))
        over = await client.delete(f"/v1/price-lists/{channel}/sales/{later}")
        assert over.status_code == 409
        assert over.headers["content-type"] == "application/problem+json"
        unknown = await client.delete(f"/v1/price-lists/{channel}/sales/{uuid.uuid4()}")
        assert unknown.status_code == 404
