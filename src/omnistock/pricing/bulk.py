"""Bulk import of base prices into one channel's price list, streamed.

The file: CSV with the header ``sku,price`` and optionally ``valid_from`` (in any order), or
JSON lines of ``{"sku", "price", "valid_from"}`` (``valid_from`` optional). A price is in major
units of the price list's currency, as a decimal string or a JSON number, read exactly as
written (never through a float) and rounded half to even at the currency's precision.
``valid_from`` is ISO 8601 with a timezone; a row without one applies from the import's start.

Each row is checked on its own; a bad row is reported with its line number and not applied, the
good ones are. Rows are applied in chunks, one transaction each, under the SKUs' locks: the
chunk's base prices in one statement, then ``service.refresh_many`` for the SKUs they changed,
which publishes each new price through the outbox. A row whose amount is already in force from
its instant on is left out: importing the same file again, or the same prices from a later
start, writes nothing and publishes nothing instead of piling up rows that change no price. A
crash loses at most the chunk in flight.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
import msgspec

from omnistock.contracts.identifiers import SKU_PATTERN
from omnistock.platform import imports
from omnistock.platform.clock import Clock, ensure_utc
from omnistock.platform.imports import (
    MAX_ERRORS,
    BadRow,
    Columns,
    Fields,
    Format,
    RowChecker,
    RowError,
)
from omnistock.pricing import service
from omnistock.pricing.domain import (
    BasePrice,
    PricingError,
    format_minor,
    minor_units,
    to_minor,
)

COLUMNS = Columns(("sku", "price"), ("valid_from",))
CHUNK_ROWS = 5_000  # and at most imports.MAX_CHUNK_KEYS SKUs, for their locks
# Minor units in a bigint; as in the API, a price above 10^15 minor units is a typo.
MAX_AMOUNT = 10**15

_SKU = re.compile(SKU_PATTERN)
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# A JSON number with a fraction or an exponent becomes a Decimal of its very digits.
_decode_json = msgspec.json.Decoder(float_hook=Decimal).decode


@dataclass(frozen=True, slots=True)
class PriceRow:
    line: int
    sku: str
    amount: int  # minor units
    valid_from: datetime  # UTC


@dataclass(slots=True, kw_only=True)
class PriceImportReport(imports.ImportReport):
    """``rows`` = ``applied`` + ``unchanged`` + ``rejected``: an applied row changed a base
    price, an unchanged one was in force already. ``published`` counts the SKUs whose price
    changed now, one event each; a price from a later instant is published when it comes."""

    channel_id: str
    applied: int = 0
    unchanged: int = 0
    published: int = 0


async def import_prices(
    pool: asyncpg.Pool,
    clock: Clock,
    channel_id: str,
    lines: AsyncIterator[bytes],
    fmt: Format,
    *,
    chunk_rows: int = CHUNK_ROWS,
    max_errors: int = MAX_ERRORS,
) -> PriceImportReport:
    """Apply a price file given as its physical lines (terminators allowed). Raises
    ``service.NotFound`` for an unknown price list and ``imports.ImportRefused`` when the file
    cannot be read, both before anything is applied."""
    started = time.perf_counter()
    report = PriceImportReport(channel_id=channel_id, max_errors=max_errors)
    async with pool.acquire() as conn:
        currency = await service.currency_of(conn, channel_id)
        async with imports.SeenKeys(conn) as seen:
            job = _Job(conn, clock, channel_id, report, seen)
            rows = read_prices(lines, fmt, currency, clock.now())
            async for chunk in imports.chunks(
                rows, report, max_rows=chunk_rows, lock_key=lambda row: row.sku
            ):
                await job.apply_chunk(chunk)
        await imports.refresh_statistics(conn, ["base_prices"], report.applied)
    report.finish(started)
    return report


# Reading.


def read_prices(
    lines: AsyncIterator[bytes], fmt: Format, currency: str, default_from: datetime
) -> AsyncIterator[PriceRow | RowError]:
    """One row or one error per non-blank line after the header; a row without a
    ``valid_from`` applies from ``default_from``."""
    check = price_checker(currency, default_from)
    return imports.read_rows(lines, fmt, COLUMNS, check, decode_json=_decode_json)


def price_checker(currency: str, default_from: datetime) -> RowChecker[PriceRow]:
    def check(line: int, fields: Fields) -> PriceRow:
        sku = fields["sku"]
        if not isinstance(sku, str) or not _SKU.fullmatch(sku):
            raise BadRow(f"sku {sku!r} is not a SKU (letters, digits, '.', '_', '-'; at most 64)")
        amount = to_amount(fields["price"], currency)
        valid_from = to_instant(fields.get("valid_from"), default_from)
        return PriceRow(line, sku, amount, valid_from)

    return check


def to_amount(price: object, currency: str) -> int:
    """Minor units of a price in major units, given as text or as a JSON number."""
    if isinstance(price, int | Decimal) and not isinstance(price, bool):
        number, shown = Decimal(price), str(price)
    elif isinstance(price, str) and _DECIMAL.fullmatch(price):
        number, shown = Decimal(price), repr(price)
    else:
        raise BadRow(f"price {price!r} is not a decimal number (like 129.99)")
    if number < 0:
        raise BadRow(f"price {shown} is negative")
    # Checked before rounding, which an absurd exponent would overflow.
    if number > Decimal(MAX_AMOUNT).scaleb(-minor_units(currency)):
        raise BadRow(f"price {shown} is above the limit of {format_minor(MAX_AMOUNT, currency)}")
    try:
        return to_minor(str(number), currency)
    except PricingError as exc:
        raise BadRow(f"price {shown}: {exc.message}") from None


def to_instant(value: object, default: datetime) -> datetime:
    """An ISO 8601 time with a timezone, in UTC; ``default`` when left out or empty."""
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise _not_a_time(value)
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise _not_a_time(value) from None
    if instant.utcoffset() is None:
        raise BadRow(f"valid_from {value!r} has no timezone")
    try:
        return ensure_utc(instant)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC instant
        raise BadRow(f"valid_from {value!r} is out of range") from None


def _not_a_time(value: object) -> BadRow:
    return BadRow(f"valid_from {value!r} is not a time (ISO 8601 with a timezone)")


# Applying.


@dataclass(frozen=True, slots=True)
class Stored:
    """What the price list holds around an incoming row: the amount stored at its very
    instant, and the latest base price before it."""

    at: int | None = None
    before: BasePrice | None = None


def prices_to_write(rows: Sequence[PriceRow], stored: Mapping[int, Stored]) -> list[PriceRow]:
    """The rows that change a SKU's base prices (``stored`` is by line). A row changes nothing
    when its amount is the one stored at its instant or, with none stored there, the one in
    force just before it, counting the SKU's earlier rows in ``rows``: they replace whatever
    is stored at their instants."""
    changing: list[PriceRow] = []
    previous: dict[str, PriceRow] = {}
    for row in sorted(rows, key=lambda r: (r.sku, r.valid_from)):
        around = stored.get(row.line, Stored())
        earlier = previous.get(row.sku)
        in_force: int | None
        if around.at is not None:
            in_force = around.at
        elif earlier is not None and (
            around.before is None or earlier.valid_from >= around.before.valid_from
        ):
            in_force = earlier.amount
        else:
            in_force = around.before.amount if around.before is not None else None
        if row.amount != in_force:
            changing.append(row)
        previous[row.sku] = row
    return changing


class _Job:
    """One import's connection, clock, price list and report, and the rows it has seen."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        clock: Clock,
        channel_id: str,
        report: PriceImportReport,
        seen: imports.SeenKeys,
    ) -> None:
        self.conn, self.clock, self.channel_id = conn, clock, channel_id
        self.report, self.seen = report, seen

    async def apply_chunk(self, chunk: list[PriceRow]) -> None:
        """One transaction: the rows that change a price, and the prices published."""
        async with self.conn.transaction():
            rows, repeats = await self.seen.first_occurrences(chunk, _row_key)
            for row, earlier_line in repeats:
                self.report.reject(row.line, _repeat_message(row, earlier_line))
            await service._lock(self.conn, self.channel_id, {r.sku for r in rows})
            changing = prices_to_write(rows, await self._stored(rows))
            published = await self._write(changing)
        self.report.applied += len(changing)
        self.report.unchanged += len(rows) - len(changing)
        self.report.published += published

    async def _stored(self, rows: list[PriceRow]) -> dict[int, Stored]:
        found = await self.conn.fetch(
            """SELECT i.line, same.amount AS at, prior.valid_from, prior.amount
               FROM unnest($2::text[], $3::timestamptz[], $4::int[]) AS i(sku, valid_from, line)
               LEFT JOIN base_prices AS same ON same.channel_id = $1 AND same.sku = i.sku
                   AND same.valid_from = i.valid_from
               LEFT JOIN LATERAL (
                   SELECT b.valid_from, b.amount FROM base_prices AS b
                   WHERE b.channel_id = $1 AND b.sku = i.sku AND b.valid_from < i.valid_from
                   ORDER BY b.valid_from DESC LIMIT 1) AS prior ON true
               WHERE same.amount IS NOT NULL OR prior.amount IS NOT NULL""",
            self.channel_id,
            [r.sku for r in rows],
            [r.valid_from for r in rows],
            [r.line for r in rows],
        )
        return {
            r["line"]: Stored(
                r["at"],
                None if r["amount"] is None else BasePrice(r["valid_from"], r["amount"]),
            )
            for r in found
        }

    async def _write(self, rows: list[PriceRow]) -> int:
        """Store the rows and publish their SKUs' prices; returns how many of those changed,
        each of which ``refresh_many`` published."""
        if not rows:
            return 0
        await self.conn.execute(
            """INSERT INTO base_prices (channel_id, sku, valid_from, amount, recorded_at)
               SELECT $1, sku, valid_from, amount, $5
               FROM unnest($2::text[], $3::timestamptz[], $4::bigint[])
                   AS p(sku, valid_from, amount)
               ON CONFLICT (channel_id, sku, valid_from) DO UPDATE SET amount = EXCLUDED.amount,
                   recorded_at = EXCLUDED.recorded_at""",
            self.channel_id,
            [r.sku for r in rows],
            [r.valid_from for r in rows],
            [r.amount for r in rows],
            self.clock.now(),
        )
        skus = sorted({r.sku for r in rows})
        refreshed = await service.refresh_many(self.conn, self.clock, self.channel_id, skus)
        return len(refreshed.published)


def _row_key(row: PriceRow) -> str:
    return f"{row.sku} {row.valid_from.isoformat()}"  # a SKU has no space


def _repeat_message(row: PriceRow, earlier_line: int) -> str:
    return f"sku {row.sku!r} from {row.valid_from.isoformat()} repeats line {earlier_line}"
