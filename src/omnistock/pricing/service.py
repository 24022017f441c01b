"""Pricing use cases: each one transaction that changes state and records its events.

The published price of a (channel, SKU) and the moment it next changes live in
``published_prices``. Whoever changes a SKU's prices refreshes that row under the SKU's lock;
the scheduler (``publish_due``) refreshes rows whose moment has come. Both publish through the
outbox in the same transaction as the row, so every transition goes out exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from omnistock.contracts.pricing import PriceChanged
from omnistock.platform.clock import Clock, ensure_utc
from omnistock.platform.outbox import OutboxMessage, add_to_outbox
from omnistock.pricing.domain import (
    BasePrice,
    PricingError,
    Quote,
    Sale,
    Timeline,
    check_sale,
    minor_units,
)

SOURCE = "/omnistock/pricing"


class NotFound(Exception):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} not found")
        self.what, self.key = what, key


async def put_price_list(
    conn: asyncpg.Connection, channel_id: str, currency: str, vat_rate_basis_points: int
) -> None:
    minor_units(currency)  # refuses an unknown currency, naming the field
    if not 0 <= vat_rate_basis_points <= 10_000:
        raise PricingError("vat_rate_basis_points", "between 0 and 10000 (0 % to 100 %)")
    await conn.execute(
        """INSERT INTO price_lists (channel_id, currency, vat_rate_basis_points) VALUES ($1, $2, $3)
           ON CONFLICT (channel_id) DO UPDATE SET currency = EXCLUDED.currency,
               vat_rate_basis_points = EXCLUDED.vat_rate_basis_points,
               version = price_lists.version + 1""",
        channel_id,
        currency,
        vat_rate_basis_points,
    )


async def _lock(conn: asyncpg.Connection, channel_id: str, sku: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('omnistock.pricing:' || $1, 0))",
        f"{channel_id}:{sku}",
    )


async def _currency(conn: asyncpg.Connection, channel_id: str) -> str:
    currency: str | None = await conn.fetchval(
        "SELECT currency FROM price_lists WHERE channel_id = $1", channel_id
    )
    if currency is None:
        raise NotFound("price list", channel_id)
    return currency


async def set_base_price(
    conn: asyncpg.Connection,
    clock: Clock,
    *,
    channel_id: str,
    sku: str,
    amount: int,
    valid_from: datetime | None = None,
) -> Quote | None:
    """A regular price from ``valid_from`` (now, by default) on."""
    if amount < 0:
        raise PricingError("amount", "must be at least 0")
    await _currency(conn, channel_id)
    await _lock(conn, channel_id, sku)
    now = clock.now()
    await conn.execute(
        """INSERT INTO base_prices (channel_id, sku, valid_from, amount, recorded_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (channel_id, sku, valid_from) DO UPDATE SET amount = EXCLUDED.amount,
               recorded_at = EXCLUDED.recorded_at""",
        channel_id,
        sku,
        ensure_utc(valid_from) if valid_from else now,
        amount,
        now,
    )
    return await refresh(conn, clock, channel_id, sku)


async def schedule_sale(
    conn: asyncpg.Connection,
    clock: Clock,
    *,
    channel_id: str,
    sku: str,
    amount: int,
    starts_at: datetime,
    ends_at: datetime,
) -> str:
    """A reduced price within [starts_at, ends_at); times in any timezone, stored in UTC."""
    await _currency(conn, channel_id)
    await _lock(conn, channel_id, sku)
    timeline = await load_timeline(conn, channel_id, sku)
    sale = Sale(ensure_utc(starts_at), ensure_utc(ends_at), amount)
    check_sale(sale, timeline.sales)
    sale_id = str(uuid.uuid4())
    await conn.execute(
        """INSERT INTO sales (sale_id, channel_id, sku, starts_at, ends_at, amount, recorded_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        sale_id,
        channel_id,
        sku,
        sale.start,
        sale.end,
        amount,
        clock.now(),
    )
    await refresh(conn, clock, channel_id, sku)
    return sale_id


async def load_timeline(conn: asyncpg.Connection, channel_id: str, sku: str) -> Timeline:
    bases = await conn.fetch(
        "SELECT valid_from, amount FROM base_prices WHERE channel_id = $1 AND sku = $2",
        channel_id,
        sku,
    )
    sales = await conn.fetch(
        "SELECT starts_at, ends_at, amount FROM sales WHERE channel_id = $1 AND sku = $2",
        channel_id,
        sku,
    )
    return Timeline.of(
        [BasePrice(b["valid_from"], b["amount"]) for b in bases],
        [Sale(s["starts_at"], s["ends_at"], s["amount"]) for s in sales],
    )


async def refresh(
    conn: asyncpg.Connection, clock: Clock, channel_id: str, sku: str
) -> Quote | None:
    """Publish the SKU's price as of now if it differs from what was published; always
    remember when it next changes. The caller holds the SKU's lock."""
    now = clock.now()
    quote = (await load_timeline(conn, channel_id, sku)).quote(now)
    if quote is None:
        return None  # no base price in force yet: nothing to sell at
    published = await conn.fetchrow(
        """SELECT effective, regular, lowest_30d, version FROM published_prices
           WHERE channel_id = $1 AND sku = $2""",
        channel_id,
        sku,
    )
    figures = (quote.effective, quote.regular, quote.lowest_30d)
    if published is not None and tuple(published.values())[:3] == figures:
        await conn.execute(
            "UPDATE published_prices SET next_change = $3 WHERE channel_id = $1 AND sku = $2",
            channel_id,
            sku,
            quote.valid_until,
        )
        return quote
    version = await conn.fetchval(
        """INSERT INTO published_prices AS p
               (channel_id, sku, effective, regular, lowest_30d, next_change, version)
           VALUES ($1, $2, $3, $4, $5, $6, 1)
           ON CONFLICT (channel_id, sku) DO UPDATE SET effective = EXCLUDED.effective,
               regular = EXCLUDED.regular, lowest_30d = EXCLUDED.lowest_30d,
               next_change = EXCLUDED.next_change, version = p.version + 1
           RETURNING version""",
        channel_id,
        sku,
        *figures,
        quote.valid_until,
    )
    changed = PriceChanged(
        channel_id=channel_id,
        sku=sku,
        version=version,
        effective=quote.effective,
        regular=quote.regular,
        currency=await _currency(conn, channel_id),
        reduced=quote.reduced,
        lowest_30d=quote.lowest_30d,
        valid_until=quote.valid_until.isoformat() if quote.valid_until else None,
    )
    await add_to_outbox(
        conn,
        SOURCE,
        [OutboxMessage(changed, aggregate_id=f"{channel_id}:{sku}", aggregate_version=version)],
        clock,
    )
    return quote


async def publish_due(conn: asyncpg.Connection, clock: Clock, limit: int = 500) -> int:
    """The scheduler's step: publish every price whose next change has come; a restart after a
    missed moment publishes it at once. A SKU whose lock is busy (a writer, another replica)
    is left to whoever holds it; under the lock the row is read again, so it is published once."""
    now = clock.now()
    due = await conn.fetch(
        """SELECT channel_id, sku FROM published_prices
           WHERE next_change <= $1 ORDER BY next_change LIMIT $2""",
        now,
        limit,
    )
    published = 0
    for row in due:
        channel_id, sku = row["channel_id"], row["sku"]
        if not await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('omnistock.pricing:' || $1, 0))",
            f"{channel_id}:{sku}",
        ):
            continue
        still_due = await conn.fetchval(
            """SELECT next_change <= $3 FROM published_prices
               WHERE channel_id = $1 AND sku = $2""",
            channel_id,
            sku,
            now,
        )
        if still_due:
            await refresh(conn, clock, channel_id, sku)
            published += 1
    return published


async def quotes(
    conn: asyncpg.Connection, channel_id: str, skus: Sequence[str], at: datetime
) -> dict[str, Any]:
    """The price of each SKU at ``at`` (any instant, past or future)."""
    currency = await _currency(conn, channel_id)
    found: dict[str, Any] = {}
    for sku in skus:
        quote = (await load_timeline(conn, channel_id, sku)).quote(ensure_utc(at))
        found[sku] = (
            None
            if quote is None
            else {
                "effective": quote.effective,
                "regular": quote.regular,
                "reduced": quote.reduced,
                "lowest_30d": quote.lowest_30d,
                "valid_until": quote.valid_until.isoformat() if quote.valid_until else None,
                "currency": currency,
            }
        )
    return found
