"""Reading a price file: amounts exact to the digit, times with their timezone, and which rows
change a price at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from omnistock.platform.imports import BadRow, Format, RowError, split_lines
from omnistock.pricing.bulk import (
    PriceRow,
    Stored,
    prices_to_write,
    read_prices,
    to_amount,
    to_instant,
)
from omnistock.pricing.domain import BasePrice

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("price", "currency", "amount"),
    [
        ("129.99", "PLN", 12_999),
        ("129.995", "PLN", 13_000),  # half to even: 12999.5 → 13000
        ("129.985", "PLN", 12_998),  # 12998.5 → 12998
        ("7", "EUR", 700),
        (".5", "EUR", 50),
        ("0", "EUR", 0),
        ("129.5", "JPY", 130),
        ("130.5", "JPY", 130),
        ("1.2345", "KWD", 1_234),
        (Decimal("129.990"), "PLN", 12_999),
        (Decimal("1E+2"), "PLN", 10_000),
        (12, "PLN", 1_200),
        ("100000000000.00", "KWD", 10**14),
    ],
)
def test_a_price_becomes_minor_units_rounded_half_to_even(
    price: object, currency: str, amount: int
) -> None:
    assert to_amount(price, currency) == amount


@pytest.mark.parametrize(
    ("price", "error"),
    [
        ("12,50", "price '12,50' is not a decimal number (like 129.99)"),
        ("", "price '' is not a decimal number (like 129.99)"),
        ("1e5", "price '1e5' is not a decimal number (like 129.99)"),
        ("NaN", "price 'NaN' is not a decimal number (like 129.99)"),
        ("١٢", "price '١٢' is not a decimal number (like 129.99)"),
        (True, "price True is not a decimal number (like 129.99)"),
        (None, "price None is not a decimal number (like 129.99)"),
        ("-1.00", "price '-1.00' is negative"),
        (Decimal("-0.5"), "price -0.5 is negative"),
        ("10000000000000.01", "price '10000000000000.01' is above the limit of 10000000000000.00"),
        (Decimal("1E+999999"), "price 1E+999999 is above the limit of 10000000000000.00"),
    ],
)
def test_a_bad_price_says_what_is_wrong(price: object, error: str) -> None:
    with pytest.raises(BadRow) as bad:
        to_amount(price, "PLN")
    assert str(bad.value) == error


def test_a_time_is_stored_in_utc_and_must_carry_its_timezone() -> None:
    warsaw = datetime(2026, 11, 30, 23, tzinfo=UTC)
    assert to_instant("2026-12-01T00:00:00+01:00", NOW) == warsaw
    assert to_instant("2026-11-30T23:00:00Z", NOW) == warsaw
    assert to_instant(None, NOW) == NOW
    assert to_instant("", NOW) == NOW
    for value, error in (
        ("2026-12-01T00:00:00", "has no timezone"),
        ("2026-12-01", "has no timezone"),
        ("2026-13-01T00:00:00Z", "is not a time (ISO 8601 with a timezone)"),
        ("tomorrow", "is not a time (ISO 8601 with a timezone)"),
        (1_764_547_200, "is not a time (ISO 8601 with a timezone)"),
        ("0001-01-01T00:00:00+01:00", "is out of range"),
    ):
        with pytest.raises(BadRow) as bad:
            to_instant(value, NOW)
        assert str(bad.value) == f"valid_from {value!r} {error}", value


def rows_of(body: bytes, fmt: Format) -> list[PriceRow | RowError]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    async def collect() -> list[PriceRow | RowError]:
        return [r async for r in read_prices(split_lines(stream()), fmt, "PLN", NOW)]

    return asyncio.run(collect())


def test_a_json_number_is_read_from_its_digits_not_through_a_float() -> None:
    # As a float, 0.12500000000000000001 is 0.125: 12.5 groszy, rounded to even, 12.
    body = b'{"sku": "A", "price": 0.12500000000000000001}\n{"sku": "B", "price": 1e2}\n'
    assert rows_of(body, "jsonl") == [PriceRow(1, "A", 13, NOW), PriceRow(2, "B", 10_000, NOW)]


def test_rows_are_checked_sku_first_then_price_then_time() -> None:
    body = (
        b"valid_from,price,sku\n"
        b"2026-12-01T00:00:00+01:00,129.99,A-1\n"
        b",1,bad sku\n"
        b"2026-12-01T00:00:00,x,B\n"
        b"2026-12-01T00:00:00,1,B\n"
    )
    assert rows_of(body, "csv") == [
        PriceRow(2, "A-1", 12_999, datetime(2026, 11, 30, 23, tzinfo=UTC)),
        RowError(3, "sku 'bad sku' is not a SKU (letters, digits, '.', '_', '-'; at most 64)"),
        RowError(4, "price 'x' is not a decimal number (like 129.99)"),
        RowError(5, "valid_from '2026-12-01T00:00:00' has no timezone"),
    ]


JAN, FEB, MAR = (datetime(2026, month, 1, tzinfo=UTC) for month in (1, 2, 3))


def lines_to_write(rows: list[PriceRow], stored: dict[int, Stored]) -> list[int]:
    return sorted(row.line for row in prices_to_write(rows, stored))


def test_a_row_already_in_force_from_its_instant_changes_nothing() -> None:
    rows = [
        PriceRow(1, "A", 100, FEB),  # stored at that instant, the same: nothing to do
        PriceRow(2, "B", 100, FEB),  # stored at that instant, another amount: replaced
        PriceRow(3, "C", 100, FEB),  # 100 in force since January: nothing to do
        PriceRow(4, "D", 100, FEB),  # 90 in force since January: a change
        PriceRow(5, "E", 100, FEB),  # the first price of E
    ]
    stored = {
        1: Stored(at=100, before=BasePrice(JAN, 90)),
        2: Stored(at=90),
        3: Stored(before=BasePrice(JAN, 100)),
        4: Stored(before=BasePrice(JAN, 90)),
    }
    assert lines_to_write(rows, stored) == [2, 4, 5]


def test_earlier_rows_of_the_same_file_count_as_in_force() -> None:
    rows = [
        PriceRow(1, "A", 100, JAN),  # a change from the stored 90
        PriceRow(2, "A", 100, FEB),  # the row above is in force then: nothing to do
        PriceRow(3, "A", 120, MAR),  # a change
        PriceRow(4, "B", 100, FEB),  # stored 90 in March, but nothing before February
        PriceRow(5, "B", 90, MAR + timedelta(days=1)),  # 90 stored in March is later than row 4
        PriceRow(6, "C", 100, JAN),  # replaces the stored 90 at that very instant
        PriceRow(7, "C", 90, FEB),  # so February's 90 is a change
    ]
    stored = {
        1: Stored(at=90),
        2: Stored(before=BasePrice(JAN, 90)),
        3: Stored(before=BasePrice(JAN, 90)),
        5: Stored(before=BasePrice(MAR, 90)),
        6: Stored(at=90),
        7: Stored(before=BasePrice(JAN, 90)),
    }
    assert lines_to_write(rows, stored) == [1, 3, 4, 6, 7]
