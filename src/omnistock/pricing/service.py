"""Pricing use cases: each one transaction that changes state and records its events.

The published price of a (channel, SKU) and the moment it next changes live in
``published_prices``. Whoever changes a SKU's prices refreshes that row under the SKU's lock;
the scheduler (``publish_due``) refreshes rows whose moment has come. Both publish through the
outbox in the same transaction as the row, so every transition goes out exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from omnistock.contracts.pricing import PriceChanged
from omnistock.platform import db
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


LOCKS = "omnistock.pricing"


def _key(channel_id: str, sku: str) -> str:
    return f"{channel_id}:{sku}"


async def _lock(conn: asyncpg.Connection, channel_id: str, skus: Iterable[str]) -> None:
    await db.lock_keys(conn, LOCKS, (_key(channel_id, sku) for sku in skus))


async def currency_of(conn: asyncpg.Connection, channel_id: str) -> str:
    currency: str | None = await conn.fetchval(
        "SELECT currency FROM price_lists WHERE channel_id = $1", channel_id
    )
    if currency is None:
        raise NotFound("price list", channel_id)
    return currency


class PriceListInUse(Exception):
    """A price list's currency cannot change under prices set in the old one."""


async def put_price_list(
    conn: asyncpg.Connection, channel_id: str, currency: str, vat_rate_basis_points: int
) -> dict[str, Any]:
    minor_units(currency)  # refuses an unknown currency, naming the field
    if not 0 <= vat_rate_basis_points <= 10_000:
        raise PricingError("vat_rate_basis_points", "between 0 and 10000 (0 % to 100 %)")
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{LOCKS}.list:{channel_id}"
    )
    old = await conn.fetchval("SELECT currency FROM price_lists WHERE channel_id = $1", channel_id)
    if (
        old is not None
        and old != currency
        and await conn.fetchval(
            "SELECT EXISTS (SELECT FROM base_prices WHERE channel_id = $1)", channel_id
        )
    ):
        raise PriceListInUse(
            f"price list {channel_id!r} has prices in {old}; make a new one for {currency}"
        )
    row = await conn.fetchrow(
        """INSERT INTO price_lists AS l (channel_id, currency, vat_rate_basis_points)
           VALUES ($1, $2, $3)
           ON CONFLICT (channel_id) DO UPDATE SET currency = EXCLUDED.currency,
               vat_rate_basis_points = EXCLUDED.vat_rate_basis_points,
               version = l.version + CASE WHEN (l.currency, l.vat_rate_basis_points)
                   = (EXCLUDED.currency, EXCLUDED.vat_rate_basis_points) THEN 0 ELSE 1 END
           RETURNING channel_id, currency, vat_rate_basis_points, version""",
        channel_id,
        currency,
        vat_rate_basis_points,
    )
    return dict(row)


async def price_list(conn: asyncpg.Connection, channel_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        """SELECT channel_id, currency, vat_rate_basis_points, version FROM price_lists
           WHERE channel_id = $1""",
        channel_id,
    )
    if row is None:
        raise NotFound("price list", channel_id)
    return dict(row)


class NewBasePrice(NamedTuple):
    sku: str
    amount: int
    valid_from: datetime | None = None  # now, by default


async def set_base_prices(
    conn: asyncpg.Connection, clock: Clock, channel_id: str, prices: Sequence[NewBasePrice]
) -> dict[str, Quote]:
    """Regular prices, each from its ``valid_from`` on; all or none. Returns the price now of
    each SKU that has one."""
    for i, price in enumerate(prices):
        if price.amount < 0:
            raise PricingError(f"prices[{i}].amount", "must be at least 0", price.sku)
    await currency_of(conn, channel_id)
    skus = list(dict.fromkeys(p.sku for p in prices))
    await _lock(conn, channel_id, skus)
    now = clock.now()
    await conn.execute(
        """INSERT INTO base_prices (channel_id, sku, valid_from, amount, recorded_at)
           SELECT $1, sku, valid_from, amount, $5
           FROM unnest($2::text[], $3::timestamptz[], $4::bigint[]) AS p(sku, valid_from, amount)
           ON CONFLICT (channel_id, sku, valid_from) DO UPDATE SET amount = EXCLUDED.amount,
               recorded_at = EXCLUDED.recorded_at""",
        channel_id,
        [p.sku for p in prices],
        [ensure_utc(p.valid_from) if p.valid_from else now for p in prices],
        [p.amount for p in prices],
        now,
    )
    return (await refresh_many(conn, clock, channel_id, skus)).quotes


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
    found = await set_base_prices(conn, clock, channel_id, [NewBasePrice(sku, amount, valid_from)])
    return found.get(sku)


class SaleLine(NamedTuple):
    sku: str
    amount: int


async def schedule_sales(
    conn: asyncpg.Connection,
    clock: Clock,
    channel_id: str,
    starts_at: datetime,
    ends_at: datetime,
    lines: Sequence[SaleLine],
) -> dict[str, str]:
    """One reduced price per SKU within [starts_at, ends_at), times in any timezone, stored in
    UTC; all lines or none. Returns each SKU's sale id."""
    skus = [line.sku for line in lines]
    await _lock(conn, channel_id, skus)
    _, timelines = await priced(conn, channel_id, skus)  # NotFound without a price list
    start, end = ensure_utc(starts_at), ensure_utc(ends_at)
    ids: dict[str, str] = {}
    for i, line in enumerate(lines):
        if line.sku in ids:
            raise PricingError(f"lines[{i}].sku", "appears twice in the sale", line.sku)
        sale = Sale(start, end, line.amount)
        try:
            check_sale(sale, timelines[line.sku].sales)
        except PricingError as exc:
            if exc.field in {"starts_at", "ends_at"}:  # about the sale as a whole
                raise PricingError(exc.field, exc.message, line.sku) from None
            raise exc.at(f"lines[{i}]", line.sku) from None
        ids[line.sku] = str(uuid.uuid4())
    await conn.execute(
        """INSERT INTO sales (sale_id, channel_id, sku, starts_at, ends_at, amount, recorded_at)
           SELECT sale_id, $2, sku, $3, $4, amount, $5
           FROM unnest($1::uuid[], $6::text[], $7::bigint[]) AS l(sale_id, sku, amount)""",
        list(ids.values()),
        channel_id,
        start,
        end,
        clock.now(),
        [line.sku for line in lines],
        [line.amount for line in lines],
    )
    await refresh_many(conn, clock, channel_id, skus)
    return ids


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
    """A reduced price for one SKU within [starts_at, ends_at)."""
    try:
        ids = await schedule_sales(
            conn, clock, channel_id, starts_at, ends_at, [SaleLine(sku, amount)]
        )
    except PricingError as exc:
        raise PricingError(exc.field.removeprefix("lines[0]."), exc.message, sku) from None
    return ids[sku]


class SaleOver(Exception):
    """A sale that has already ended cannot be called off."""


async def cancel_sale(
    conn: asyncpg.Connection, clock: Clock, channel_id: str, sale_id: str
) -> dict[str, Any]:
    """Call a sale off: one yet to start never applies, a running one ends now. Calling off a
    sale already called off answers the same again."""
    sku = await conn.fetchval(
        "SELECT sku FROM sales WHERE channel_id = $1 AND sale_id = $2::uuid", channel_id, sale_id
    )
    if sku is None:
        raise NotFound("sale", sale_id)
    await _lock(conn, channel_id, [sku])
    now = clock.now()
    sale = await conn.fetchrow(
        "SELECT starts_at, ends_at, cancelled_at FROM sales WHERE sale_id = $1::uuid", sale_id
    )
    if sale["cancelled_at"] is None:
        if sale["ends_at"] <= now:
            raise SaleOver(f"sale {sale_id} ended at {sale['ends_at'].isoformat()}")
        sale = await conn.fetchrow(
            """UPDATE sales SET cancelled_at = $2,
                   ends_at = CASE WHEN starts_at < $2 THEN $2 ELSE ends_at END
               WHERE sale_id = $1::uuid RETURNING starts_at, ends_at, cancelled_at""",
            sale_id,
            now,
        )
        await refresh(conn, clock, channel_id, sku)
    applied = sale["cancelled_at"] > sale["starts_at"]
    return {
        "sale_id": sale_id,
        "sku": sku,
        "starts_at": sale["starts_at"].isoformat(),
        "ends_at": sale["ends_at"].isoformat() if applied else None,
        "cancelled_at": sale["cancelled_at"].isoformat(),
        "applied": applied,  # whether it ran for a while (and so counts in the price history)
    }


async def history(conn: asyncpg.Connection, channel_id: str, sku: str) -> dict[str, Any]:
    """Every base price and sale of the SKU as recorded, and what is published now."""
    await currency_of(conn, channel_id)
    bases = await conn.fetch(
        """SELECT valid_from, amount, recorded_at FROM base_prices
           WHERE channel_id = $1 AND sku = $2 ORDER BY valid_from""",
        channel_id,
        sku,
    )
    sales = await conn.fetch(
        """SELECT sale_id::text, starts_at, ends_at, amount, recorded_at, cancelled_at FROM sales
           WHERE channel_id = $1 AND sku = $2 ORDER BY starts_at""",
        channel_id,
        sku,
    )
    published = await conn.fetchrow(
        """SELECT effective, regular, lowest_30d, next_change, version FROM published_prices
           WHERE channel_id = $1 AND sku = $2""",
        channel_id,
        sku,
    )
    if not bases and not sales:
        raise NotFound("SKU", f"{channel_id}:{sku}")
    return {
        "base_prices": [dict(r) for r in bases],
        "sales": [dict(r) for r in sales],
        "published": dict(published) if published and published["version"] > 0 else None,
    }


async def priced(
    conn: asyncpg.Connection, channel_id: str, skus: Sequence[str]
) -> tuple[str, dict[str, Timeline]]:
    """The price list's currency (NotFound without one) and each SKU's timeline (an empty one
    for a SKU without prices), in one statement: one snapshot, needing no transaction, and one
    round trip where a quote took five with its BEGIN and COMMIT."""
    currency: str | None = None
    bases: dict[str, list[BasePrice]] = {sku: [] for sku in skus}
    sales: dict[str, list[Sale]] = {sku: [] for sku in skus}
    for kind, sku, starts, ends, amount, listed in await conn.fetch(
        """SELECT 0, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::bigint, currency
           FROM price_lists WHERE channel_id = $1
           UNION ALL
           SELECT 1, sku, valid_from, NULL, amount, NULL FROM base_prices
           WHERE channel_id = $1 AND sku = ANY($2::text[])
           UNION ALL
           SELECT 2, sku, starts_at, ends_at, amount, NULL FROM sales
           WHERE channel_id = $1 AND sku = ANY($2::text[])
             AND (cancelled_at IS NULL OR cancelled_at > starts_at)""",
        channel_id,
        list(skus),
    ):
        if kind == 0:
            currency = listed
        elif kind == 1:
            bases[sku].append(BasePrice(starts, amount))
        else:
            sales[sku].append(Sale(starts, ends, amount))
    if currency is None:
        raise NotFound("price list", channel_id)
    return currency, {sku: Timeline.of(bases[sku], sales[sku]) for sku in skus}


async def refresh(
    conn: asyncpg.Connection, clock: Clock, channel_id: str, sku: str
) -> Quote | None:
    """``refresh_many`` for one SKU: its price as of now, or None before its first base price."""
    return (await refresh_many(conn, clock, channel_id, [sku])).quotes.get(sku)


class Refreshed(NamedTuple):
    quotes: dict[str, Quote]  # the price now of each SKU that has one
    published: list[str]  # the SKUs whose price changed, one event each


async def refresh_many(
    conn: asyncpg.Connection, clock: Clock, channel_id: str, skus: Sequence[str]
) -> Refreshed:
    """Publish each SKU's price as of now where it differs from what was published, and
    remember when each next changes. The caller holds the SKUs' locks. SKUs without a base
    price in force have nothing to sell at and are left out."""
    now = clock.now()
    currency, timelines = await priced(conn, channel_id, skus)
    found = {sku: q for sku, t in timelines.items() if (q := t.quote(now)) is not None}
    await _remember_first_prices(conn, channel_id, now, timelines, found)
    if not found:
        return Refreshed(found, [])
    before = {
        r["sku"]: (r["effective"], r["regular"], r["lowest_30d"])
        for r in await conn.fetch(
            """SELECT sku, effective, regular, lowest_30d FROM published_prices
               WHERE channel_id = $1 AND sku = ANY($2::text[])""",
            channel_id,
            list(found),
        )
    }
    changed = [
        sku for sku, q in found.items() if before.get(sku) != (q.effective, q.regular, q.lowest_30d)
    ]
    quotes = list(found.values())
    versions = await conn.fetch(
        """INSERT INTO published_prices AS p
               (channel_id, sku, effective, regular, lowest_30d, next_change, version)
           SELECT $1, * , 1 FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                                        $6::timestamptz[])
           ON CONFLICT (channel_id, sku) DO UPDATE SET next_change = EXCLUDED.next_change,
               effective = EXCLUDED.effective, regular = EXCLUDED.regular,
               lowest_30d = EXCLUDED.lowest_30d,
               version = p.version + CASE WHEN (p.effective, p.regular, p.lowest_30d)
                   IS DISTINCT FROM (EXCLUDED.effective, EXCLUDED.regular, EXCLUDED.lowest_30d)
                   THEN 1 ELSE 0 END
           RETURNING sku, version""",
        channel_id,
        list(found),
        [q.effective for q in quotes],
        [q.regular for q in quotes],
        [q.lowest_30d for q in quotes],
        [q.valid_until for q in quotes],
    )
    version_of = {r["sku"]: r["version"] for r in versions}
    await add_to_outbox(
        conn,
        SOURCE,
        [
            OutboxMessage(
                price_changed(channel_id, sku, found[sku], version_of[sku], currency),
                aggregate_id=_key(channel_id, sku),
                aggregate_version=version_of[sku],
            )
            for sku in changed
        ],
        clock,
    )
    return Refreshed(found, changed)


async def _remember_first_prices(
    conn: asyncpg.Connection,
    channel_id: str,
    now: datetime,
    timelines: dict[str, Timeline],
    priced: dict[str, Quote],
) -> None:
    """SKUs with no price yet but one to come: the scheduler publishes it when it starts."""
    pending = {
        sku: upcoming[0]
        for sku, timeline in timelines.items()
        if sku not in priced and (upcoming := [m for m in timeline.changes() if m > now])
    }
    if pending:
        await conn.execute(
            """INSERT INTO published_prices AS p
                   (channel_id, sku, effective, regular, lowest_30d, next_change, version)
               SELECT $1, sku, NULL, NULL, NULL, next_change, 0
               FROM unnest($2::text[], $3::timestamptz[]) AS n(sku, next_change)
               ON CONFLICT (channel_id, sku) DO UPDATE SET next_change = EXCLUDED.next_change""",
            channel_id,
            list(pending),
            list(pending.values()),
        )


def price_changed(
    channel_id: str, sku: str, quote: Quote, version: int, currency: str
) -> PriceChanged:
    return PriceChanged(
        channel_id=channel_id,
        sku=sku,
        version=version,
        effective=quote.effective,
        regular=quote.regular,
        currency=currency,
        reduced=quote.reduced,
        lowest_30d=quote.lowest_30d,
        valid_until=quote.valid_until.isoformat() if quote.valid_until else None,
    )


async def publish_due(conn: asyncpg.Connection, clock: Clock, limit: int = 500) -> int:
    """The scheduler's step: publish every price whose next change has come; a restart after a
    missed moment publishes it at once. A SKU whose lock is busy (a writer, another replica)
    is left to whoever holds it; under the lock the row is read again, so it is published once.
    Returns how many due rows were handled."""
    now = clock.now()
    due = await conn.fetch(
        """SELECT channel_id, sku FROM published_prices
           WHERE next_change <= $1 ORDER BY next_change LIMIT $2""",
        now,
        limit,
    )
    per_channel: dict[str, list[str]] = {}
    for row in due:
        per_channel.setdefault(row["channel_id"], []).append(row["sku"])
    handled = 0
    for channel_id, skus in per_channel.items():
        got = await db.try_lock_keys(conn, LOCKS, (_key(channel_id, sku) for sku in skus))
        still_due = await conn.fetch(
            """SELECT sku FROM published_prices
               WHERE channel_id = $1 AND sku = ANY($2::text[]) AND next_change <= $3""",
            channel_id,
            [key.split(":", 1)[1] for key in got],
            now,
        )
        skus_due = [r["sku"] for r in still_due]
        if skus_due:
            await refresh_many(conn, clock, channel_id, skus_due)
            handled += len(skus_due)
    return handled


async def quotes(
    conn: asyncpg.Connection, channel_id: str, skus: Sequence[str], at: datetime
) -> tuple[str, dict[str, Quote | None]]:
    """The currency and the price of each SKU at ``at`` (any instant, past or future); None for
    a SKU without a base price in force then."""
    currency, timelines = await priced(conn, channel_id, skus)
    moment = ensure_utc(at)
    return currency, {sku: timeline.quote(moment) for sku, timeline in timelines.items()}
